//! Golden tests of `translate`: `tests/golden/NAME.yaml` -> `tests/golden/NAME.json`, the
//! Envoy `/config_dump?include_eds` of the Snapshot plus the status of every object (without
//! `lastTransitionTime`), as pretty JSON.
//!
//! `UPDATE_GOLDEN=1 cargo test -p translate --test golden` rewrites the expected files; read the
//! diff before committing it: every value in them has been checked by hand.

mod support;
use support::without_transition_times;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use snapshot::DumpOptions;
use translate::{Resources, translate};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");

/// What translate makes of one input, as the user sees it.
fn render(input: &Path) -> String {
    let text = std::fs::read_to_string(input).unwrap_or_else(|e| panic!("reading {}: {e}", input.display()));
    let objects = api::parse_manifests(&text, &input.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
    let mut resources = Resources::new();
    for object in objects {
        let key = object.key();
        assert!(
            resources.insert(key.clone(), object.into()).is_none(),
            "{key} twice"
        );
    }
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let (snapshot, statuses) = translate(&resources, 1, now);
    let dump = snapshot::config_dump(
        &snapshot,
        &DumpOptions {
            include_eds: true,
            ..Default::default()
        },
    )
    .expect("config_dump without filters cannot fail");
    let statuses: Map<String, Value> = statuses
        .into_iter()
        .map(|(k, v)| {
            (
                format!("{}/{}/{}", k.kind, k.namespace, k.name),
                without_transition_times(v),
            )
        })
        .collect();
    let out = serde_json::json!({ "config_dump": dump, "statuses": statuses });
    serde_json::to_string_pretty(&out).expect("JSON") + "\n"
}

fn golden(name: &str) {
    let input = PathBuf::from(DIR).join(format!("{name}.yaml"));
    let expected_path = PathBuf::from(DIR).join(format!("{name}.json"));
    let got = render(&input);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&expected_path, &got)
            .unwrap_or_else(|e| panic!("writing {}: {e}", expected_path.display()));
        return;
    }
    let want = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (create it with UPDATE_GOLDEN=1, then check it by hand)",
            expected_path.display()
        )
    });
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
        let context = |text: &str| {
            text.lines()
                .enumerate()
                .skip(line.saturating_sub(3))
                .take(7)
                .map(|(i, l)| format!("{:5} {l}", i + 1))
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "{name}: translate's output differs from {} from line {}\n--- expected\n{}\n--- got\n{}\n\
             (UPDATE_GOLDEN=1 rewrites the file: only when the new output is right)",
            expected_path.display(),
            line + 1,
            context(&want),
            context(&got)
        );
    }
}

/// One test per case, and `CASES`, which `every_input_has_a_test` compares with the folder.
macro_rules! golden_tests {
    ($($test:ident => $name:literal,)*) => {
        const CASES: &[&str] = &[$($name),*];
        $(
            #[test]
            fn $test() {
                golden($name);
            }
        )*
    };
}

golden_tests! {
    keepalive_guide => "keepalive-guide",
    keepalive_probes_only => "keepalive-probes-only",
    keepalive_empty => "keepalive-empty",
    keepalive_durations => "keepalive-durations",
    target_selectors => "target-selectors",
    merge_policies => "merge-policies",
    missing_target => "missing-target",
    routing => "routing",
    https_listeners => "https-listeners",
    backend_tls => "backend-tls",
    grpc_routes => "grpc-routes",
    websocket_app_protocol => "websocket-app-protocol",
    listener_isolation => "listener-isolation",
    frontend_client_validation => "frontend-client-validation",
    gateway_listener_status => "gateway-listener-status",
    route_parents => "route-parents",
    query_method_named => "query-method-named",
    backend_refs => "backend-refs",
    route_filters => "route-filters",
    gateway_classes => "gateway-classes",
    route_timeouts => "route-timeouts",
    gateway_addresses => "gateway-addresses",
    namespace_selector => "namespace-selector",
    route_mirrors => "route-mirrors",
    route_cors => "route-cors",
}

#[test]
fn every_input_has_a_test() {
    let mut inputs: Vec<String> = std::fs::read_dir(DIR)
        .expect("tests/golden")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.file_stem().and_then(|s| s.to_str()).expect("name").to_string())
        .collect();
    inputs.sort();
    let mut cases: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    cases.sort();
    assert_eq!(
        inputs, cases,
        "tests/golden/*.yaml and the cases of golden_tests! must match"
    );
}
