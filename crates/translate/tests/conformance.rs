//! Conformance with upstream kgateway: every case of `../shared/conformance/kgateway/` (read in
//! place, never copied) goes through `translate`, and the clusters of our Envoy `/config_dump`
//! are compared with the expected outputs WHOLE: every field, defaults included.
//!
//! A case that needs a feature we do not have is listed in `tests/known-gaps.txt` with that
//! feature. The list is checked both ways: a case not listed must pass, and a listed case must
//! still fail, so a gap that gets fixed has to leave the list (no silent skip).
//!
//! Expected outputs are protobuf JSON in camelCase; the dump uses the proto field names in
//! snake_case. Our side is converted to the JSON names before comparing (snake_case -> camelCase
//! is what protobuf does and cannot be ambiguous: `consecutive_5xx` -> `consecutive5xx`).

mod support;
use support::without_transition_times;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use api::{Kind, ObjectKey};
use serde_json::Value;
use snapshot::DumpOptions;
use translate::{Resources, Statuses, translate};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/kgateway"
);
const KNOWN_GAPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/known-gaps.txt");

/// Clusters made by the upstream test harness, not by the input.
fn from_harness(cluster: &str) -> bool {
    cluster == "kube_default_kubernetes_443" || cluster.starts_with("test-backend-plugin_")
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

/// One input and its expected output.
struct Case {
    /// The input's file name without `.yaml`; unique over the corpus.
    name: String,
    input: PathBuf,
    output: PathBuf,
}

fn corpus() -> PathBuf {
    let dir = PathBuf::from(CORPUS);
    assert!(
        dir.is_dir(),
        "the conformance corpus is not at {} (expected ../shared/conformance/kgateway beside the \
         workspace)",
        dir.display()
    );
    dir
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .expect("UTF-8 file name")
        .to_string()
}

/// Every golden input, and every `setup/standard__*` input (not `dr__*`: Istio aliases are not
/// in scope), each with its expected output.
fn cases() -> Vec<Case> {
    let root = corpus();
    let mut out = Vec::new();
    for input in yaml_files(&root.join("golden-inputs")) {
        let name = stem(&input);
        let output = root.join("golden-outputs").join(format!("{name}.yaml"));
        out.push(Case { name, input, output });
    }
    for input in yaml_files(&root.join("setup")) {
        let name = stem(&input);
        if !name.starts_with("standard__") || name.ends_with("-out") {
            continue;
        }
        let output = root.join("setup").join(format!("{name}-out.yaml"));
        out.push(Case { name, input, output });
    }
    let names: BTreeSet<&str> = out.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), out.len(), "case names must be unique");
    for case in &out {
        assert!(
            case.output.is_file(),
            "{}: no expected output at {}",
            case.name,
            case.output.display()
        );
    }
    out
}

fn case(name: &str) -> Case {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no conformance case {name}"))
}

// ---------------------------------------------------------------------------------------------
// Our side: input -> translate -> config_dump
// ---------------------------------------------------------------------------------------------

/// The input as we read it, and the kinds of the documents we had to leave out.
struct Loaded {
    resources: Resources,
    skipped_kinds: BTreeSet<String>,
}

/// Reads a multi-document input. Documents of kinds we do not serve (Secret, Backend,
/// BackendTLSPolicy, ...) are left out before parsing (`parse_manifests` refuses the whole file
/// otherwise); whatever depends on them then differs, and that case is a known gap.
fn load(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let served: BTreeSet<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let mut kept = Vec::new();
    let mut skipped_kinds = BTreeSet::new();
    for document in split_documents(&text) {
        let kind = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&document)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string));
        match kind {
            Some(kind) if !served.contains(kind.as_str()) => {
                skipped_kinds.insert(kind);
            }
            // Our kinds, and anything we cannot read (parse_manifests reports it).
            _ => kept.push(document),
        }
    }
    let objects = api::parse_manifests(&kept.join("\n---\n"), &path.display().to_string())
        .map_err(|e| format!("parse_manifests refused the input: {e}"))?;
    let mut resources = Resources::new();
    for object in objects {
        if let Some(old) = resources.insert(object.key(), object.into()) {
            return Err(format!("{} appears twice", old.key()));
        }
    }
    Ok(Loaded {
        resources,
        skipped_kinds,
    })
}

/// Splits a YAML stream at its `---` document markers, keeping each document's text as written.
fn split_documents(text: &str) -> Vec<String> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        let is_marker = line.strip_prefix("---").is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(char::is_whitespace) || rest.starts_with('#')
        });
        if is_marker {
            documents.push(String::new());
        } else {
            let current = documents.last_mut().expect("at least one document");
            current.push_str(line);
            current.push('\n');
        }
    }
    documents.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    documents
}

/// What a user sees: our `/config_dump?include_eds`, by cluster name, plus the statuses.
struct Ours {
    clusters: BTreeMap<String, Value>,
    /// cluster name -> `address:port` of every endpoint in its ClusterLoadAssignment.
    endpoints: BTreeMap<String, BTreeSet<String>>,
    statuses: Statuses,
}

fn run(resources: &Resources) -> Ours {
    let (snapshot, statuses) = translate(resources, 1, now());
    let dump = snapshot::config_dump(
        &snapshot,
        &DumpOptions {
            include_eds: true,
            // kgateway's expected output is xDS, keys included; the admin dump redacts them.
            reveal_private_keys: true,
            ..Default::default()
        },
    )
    .expect("config_dump without filters cannot fail");
    let configs = dump["configs"].as_array().expect("configs is a list");
    let section = |dump_type: &str| -> &Value {
        configs
            .iter()
            .find(|c| c["@type"] == format!("type.googleapis.com/envoy.admin.v3.{dump_type}"))
            .unwrap_or_else(|| panic!("no {dump_type} in the dump"))
    };
    let mut clusters = BTreeMap::new();
    for item in items(section("ClustersConfigDump"), "dynamic_active_clusters") {
        let cluster = item["cluster"].clone();
        let name = cluster["name"].as_str().expect("cluster name").to_string();
        assert!(
            clusters.insert(name.clone(), cluster).is_none(),
            "cluster {name} twice"
        );
    }
    let mut endpoints = BTreeMap::new();
    for item in items(section("EndpointsConfigDump"), "dynamic_endpoint_configs") {
        let config = &item["endpoint_config"];
        let name = config["cluster_name"].as_str().expect("cluster_name").to_string();
        endpoints.insert(name, endpoint_addresses(config));
    }
    Ours {
        clusters,
        endpoints,
        statuses,
    }
}

fn items<'a>(section: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    section.get(field).and_then(Value::as_array).into_iter().flatten()
}

/// `address:port` of every lb endpoint of a ClusterLoadAssignment (snake_case keys).
fn endpoint_addresses(assignment: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for locality in items(assignment, "endpoints") {
        for lb in items(locality, "lb_endpoints") {
            let socket = &lb["endpoint"]["address"]["socket_address"];
            out.insert(format!("{}:{}", socket["address"], socket["port_value"]).replace('"', ""));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The expected side
// ---------------------------------------------------------------------------------------------

/// An expected output.
struct Expected {
    /// Clusters derived from the input (the harness's left out), by name, as written (camelCase).
    clusters: BTreeMap<String, Value>,
    /// Only the `setup/` outputs list endpoints.
    endpoints: Option<BTreeMap<String, BTreeSet<String>>>,
    /// `Statuses.policies` of the golden outputs, as written (camelCase, like our statuses).
    policy_statuses: Option<serde_json::Map<String, Value>>,
}

fn expected(case: &Case) -> Expected {
    let text = std::fs::read_to_string(&case.output)
        .unwrap_or_else(|e| panic!("reading {}: {e}", case.output.display()));
    let raw: Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", case.output.display()));
    // golden-outputs say `Clusters`, setup outputs `clusters`.
    let field = |name: &str| {
        raw.get(name)
            .or_else(|| raw.get(name.to_ascii_lowercase()))
            .cloned()
    };
    let mut clusters = BTreeMap::new();
    for cluster in field("Clusters")
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let cluster = cluster.clone();
        let name = cluster["name"]
            .as_str()
            .expect("expected cluster name")
            .to_string();
        if !from_harness(&name) {
            clusters.insert(name, cluster);
        }
    }
    let endpoints = field("Endpoints").map(|list| {
        let mut out = BTreeMap::new();
        for assignment in list.as_array().into_iter().flatten() {
            let assignment = snake_keys(assignment.clone());
            let name = assignment["cluster_name"]
                .as_str()
                .expect("clusterName")
                .to_string();
            if !from_harness(&name) {
                out.insert(name, endpoint_addresses(&assignment));
            }
        }
        out
    });
    let policy_statuses = raw
        .get("Statuses")
        .and_then(|s| s.get("policies"))
        .and_then(Value::as_object)
        .cloned();
    Expected {
        clusters,
        endpoints,
        policy_statuses,
    }
}

/// Proto field names (`connect_timeout`, `consecutive_5xx`) -> their JSON names
/// (`connectTimeout`, `consecutive5xx`), at every depth except inside `typed_extension_protocol_options`
/// (a map: its keys are extension names, not fields).
fn json_names(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if k == "typed_extension_protocol_options" {
                        match v {
                            Value::Object(m) => {
                                Value::Object(m.into_iter().map(|(ek, ev)| (ek, json_names(ev))).collect())
                            }
                            other => other,
                        }
                    } else {
                        json_names(v)
                    };
                    (snake_to_camel(&k), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(json_names).collect()),
        other => other,
    }
}

fn snake_to_camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Our cluster as the expected outputs spell one: JSON names, no `@type` of its own.
fn as_expected(cluster: &Value) -> Value {
    let mut c = json_names(cluster.clone());
    if let Value::Object(m) = &mut c {
        m.remove("@type");
    }
    c
}

/// Proto JSON names (`connectTimeout`) -> proto field names (`connect_timeout`), for every key
/// at every depth except `@type` and other non-field keys that hold no upper case.
fn snake_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (camel_to_snake(&k), snake_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(snake_keys).collect()),
        other => other,
    }
}

fn camel_to_snake(key: &str) -> String {
    if key.starts_with('@') {
        return key.to_string();
    }
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

/// Runs one case; `Err` lists every difference found.
fn check(case: &Case) -> Result<(), Vec<String>> {
    let loaded = load(&case.input).map_err(|e| vec![e])?;
    let ours = run(&loaded.resources);
    let expected = expected(case);
    let mut problems = compare_clusters(&ours, &expected);
    if !problems.is_empty() && !loaded.skipped_kinds.is_empty() {
        problems.push(format!(
            "(documents of kinds we do not serve were left out: {})",
            loaded
                .skipped_kinds
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn compare_clusters(ours: &Ours, expected: &Expected) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, want) in &expected.clusters {
        let Some(got) = ours.clusters.get(name) else {
            problems.push(format!(
                "cluster {name}: expected, but we have none (ours: {:?})",
                ours.clusters.keys().collect::<Vec<_>>()
            ));
            continue;
        };
        let got = as_expected(got);
        let empty = serde_json::Map::new();
        let (want_fields, got_fields) = (
            want.as_object().unwrap_or(&empty),
            got.as_object().unwrap_or(&empty),
        );
        let fields: BTreeSet<&String> = want_fields.keys().chain(got_fields.keys()).collect();
        for field in fields {
            if want_fields.get(field) != got_fields.get(field) {
                problems.push(format!(
                    "cluster {name}: {field}: expected {}, ours {}",
                    show(want_fields.get(field)),
                    show(got_fields.get(field))
                ));
            }
        }
    }
    for name in ours.clusters.keys() {
        if !expected.clusters.contains_key(name) {
            problems.push(format!("cluster {name}: ours, but the expected output has none"));
        }
    }
    if let Some(want_endpoints) = &expected.endpoints {
        let empty = BTreeSet::new();
        let names: BTreeSet<&String> = want_endpoints
            .keys()
            .chain(
                ours.endpoints
                    .iter()
                    .filter(|(_, e)| !e.is_empty())
                    .map(|(n, _)| n),
            )
            .collect();
        for name in names {
            let want = want_endpoints.get(name).unwrap_or(&empty);
            let got = ours.endpoints.get(name).unwrap_or(&empty);
            if want != got {
                problems.push(format!("endpoints of {name}: expected {want:?}, ours {got:?}"));
            }
        }
    }
    problems
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(unset)".to_string(), Value::to_string)
}

/// `case-name: feature` lines; `#` comments and blank lines are allowed.
fn known_gaps() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(KNOWN_GAPS).unwrap_or_else(|e| panic!("reading {KNOWN_GAPS}: {e}"));
    let mut gaps = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (name, feature) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("known-gaps.txt line {}: expected `case-name: feature`", n + 1));
        let (name, feature) = (name.trim(), feature.trim());
        assert!(
            !feature.is_empty(),
            "known-gaps.txt line {}: say which feature {name} needs",
            n + 1
        );
        assert!(
            gaps.insert(name.to_string(), feature.to_string()).is_none(),
            "known-gaps.txt line {}: {name} is listed twice",
            n + 1
        );
    }
    gaps
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The acceptance case: the keepalive policy of upstream's `standard` setup test.
#[test]
fn standard_backendconfigpolicy() {
    let case = case("standard__backendconfigpolicy");
    let loaded = load(&case.input).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        loaded.skipped_kinds.is_empty(),
        "every document is of a kind we serve"
    );
    let ours = run(&loaded.resources);
    let expected = expected(&case);

    let name = "kube_gwtest_httpbin_8080";
    let want = &expected.clusters[name];
    let got = ours
        .clusters
        .get(name)
        .unwrap_or_else(|| panic!("no cluster {name} in our dump"));
    assert_eq!(&as_expected(got), want, "{name}, the whole cluster");
    // The values themselves, in the dump's spelling, so that a change on both sides shows.
    assert_eq!(got["connect_timeout"], "5s");
    assert_eq!(
        got["upstream_connection_options"],
        serde_json::json!({"tcp_keepalive": {
            "keepalive_probes": 3, "keepalive_time": 30, "keepalive_interval": 5}})
    );
    assert_eq!(got["per_connection_buffer_limit_bytes"], 1024);

    let endpoints = ours
        .endpoints
        .get(name)
        .unwrap_or_else(|| panic!("no ClusterLoadAssignment for {name} in our EndpointsConfigDump"));
    assert!(
        endpoints.contains("10.244.1.11:8080"),
        "10.244.1.11:8080 missing from {name}: {endpoints:?}"
    );
    assert_eq!(
        Some(endpoints),
        expected.endpoints.as_ref().and_then(|e| e.get(name))
    );
    assert_eq!(check(&case), Ok(()));
}

/// Every case passes, or is a known gap that still fails.
#[test]
fn every_case_passes_or_is_a_known_gap() {
    let cases = cases();
    let mut gaps = known_gaps();
    let mut unexpected_failures = Vec::new();
    let mut fixed_gaps = Vec::new();
    let mut report = Vec::new();
    for case in &cases {
        let result = check(case);
        match (gaps.remove(&case.name), result) {
            (None, Ok(())) => report.push(format!("pass       {}", case.name)),
            (Some(feature), Err(problems)) => {
                report.push(format!("known gap  {} ({feature})", case.name));
                for p in problems {
                    report.push(format!("             {p}"));
                }
            }
            (None, Err(problems)) => {
                unexpected_failures.push(format!("{}:\n    {}", case.name, problems.join("\n    ")));
            }
            (Some(feature), Ok(())) => fixed_gaps.push(format!("{} (was: {feature})", case.name)),
        }
    }
    eprintln!("{}", report.join("\n"));
    let mut message = String::new();
    if !unexpected_failures.is_empty() {
        message += &format!(
            "\nthese cases fail; fix translate, or list them in tests/known-gaps.txt with the feature \
             they need:\n{}\n",
            unexpected_failures.join("\n")
        );
    }
    if !fixed_gaps.is_empty() {
        message += &format!(
            "\nthese known gaps pass now; remove them from tests/known-gaps.txt:\n    {}\n",
            fixed_gaps.join("\n    ")
        );
    }
    if !gaps.is_empty() {
        message += &format!(
            "\ntests/known-gaps.txt names cases that do not exist: {:?}\n",
            gaps.keys().collect::<Vec<_>>()
        );
    }
    assert!(message.is_empty(), "{message}");
}

/// Upstream main: per top-level field, the oldest policy wins; a newer one only fills fields
/// the older left unset. Both policies report Accepted and Attached on the Service.
#[test]
fn merge_multiple_bcp() {
    let case = case("merge-multiple-bcp");
    let loaded = load(&case.input).unwrap_or_else(|e| panic!("{e}"));
    let ours = run(&loaded.resources);
    let expected = expected(&case);

    let cluster = &ours.clusters["kube_default_httpbin_8080"];
    assert_eq!(
        cluster["connect_timeout"], "5s",
        "bcp-older (5s) is older than bcp-newer (99s), so it wins connectTimeout"
    );
    assert_eq!(
        as_expected(cluster),
        expected.clusters["kube_default_httpbin_8080"],
        "older fields kept, newer fill the rest (circuit breakers), on the whole cluster"
    );

    let want = expected
        .policy_statuses
        .expect("the golden output has Statuses.policies");
    let mut want_keys = BTreeSet::new();
    for (key, status) in &want {
        let mut parts = key.splitn(3, '/');
        let (Some("BackendConfigPolicy"), Some(namespace), Some(name)) =
            (parts.next(), parts.next(), parts.next())
        else {
            panic!("unexpected policy key {key}");
        };
        let object = ObjectKey {
            kind: Kind::BackendConfigPolicy,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let got = ours
            .statuses
            .get(&object)
            .unwrap_or_else(|| panic!("no status for {object}"));
        assert_eq!(
            without_transition_times(got.clone()),
            without_transition_times(status.clone()),
            "status of {object}"
        );
        want_keys.insert(object);
    }
    let got_keys: BTreeSet<ObjectKey> = ours
        .statuses
        .keys()
        .filter(|k| k.kind == Kind::BackendConfigPolicy)
        .cloned()
        .collect();
    assert_eq!(got_keys, want_keys, "policies with a status");
}

#[test]
fn camel_case_keys_become_proto_field_names() {
    assert_eq!(camel_to_snake("connectTimeout"), "connect_timeout");
    assert_eq!(camel_to_snake("keepaliveProbes"), "keepalive_probes");
    assert_eq!(camel_to_snake("ipv4Compat"), "ipv4_compat");
    assert_eq!(camel_to_snake("@type"), "@type");
    assert_eq!(snake_to_camel("consecutive_5xx"), "consecutive5xx");
    assert_eq!(snake_to_camel("ipv4_compat"), "ipv4Compat");
    assert_eq!(
        snake_to_camel("per_connection_buffer_limit_bytes"),
        "perConnectionBufferLimitBytes"
    );
    assert_eq!(
        split_documents("---\na: 1\n---\n# only a comment\n---\nb: 2\n"),
        vec!["a: 1\n".to_string(), "b: 2\n".to_string()]
    );
}

// ---------------------------------------------------------------------------------------------
// Envoy's own protos as the judge
// ---------------------------------------------------------------------------------------------

const DUMP_CHECK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/tools/envoy-dump-check"
);

/// Our whole `/config_dump?include_eds` for these resources, written to a file of its own.
fn dump_file(resources: &Resources, name: &str) -> PathBuf {
    let (snapshot, _) = translate(resources, 1, now());
    let dump = snapshot::config_dump(
        &snapshot,
        &DumpOptions {
            include_eds: true,
            // kgateway's expected output is xDS, keys included; the admin dump redacts them.
            reveal_private_keys: true,
            ..Default::default()
        },
    )
    .expect("config_dump without filters cannot fail");
    let dir = std::env::temp_dir().join(format!("kgw-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&dump).expect("JSON")).expect("writing the dump");
    path
}

/// Runs `envoy-dump-check ARGS`; Err with its output when it does not pass.
fn dump_check(args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = std::process::Command::new(DUMP_CHECK)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {DUMP_CHECK}: {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Every dump the corpus makes parses as Envoy's ConfigDump with proto field names and no
/// defaults written out; and for every case that passes, Envoy's protos also find our clusters
/// equal to the expected ones (a second judge, independent of our JSON comparison).
#[test]
fn every_dump_passes_envoy_dump_check() {
    let gaps = known_gaps();
    let mut failures = Vec::new();
    for case in cases() {
        let loaded = match load(&case.input) {
            Ok(l) => l,
            // A known gap may be an input we refuse on purpose (its reason says why).
            Err(_) if gaps.contains_key(&case.name) => continue,
            Err(e) => panic!("{}: {e}", case.name),
        };
        let path = dump_file(&loaded.resources, &case.name);
        if let Err(e) = dump_check(&["check".as_ref(), path.as_os_str()]) {
            failures.push(format!("{}: check: {e}", case.name));
        }
        if !gaps.contains_key(&case.name) {
            let mut args: Vec<&std::ffi::OsStr> =
                vec!["compare".as_ref(), path.as_os_str(), case.output.as_os_str()];
            let ours = run(&loaded.resources);
            let names: Vec<String> = ours.clusters.keys().cloned().collect();
            for name in &names {
                args.push("--cluster".as_ref());
                args.push(name.as_ref());
            }
            if let Err(e) = dump_check(&args) {
                failures.push(format!("{}: compare: {e}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The corpus leaves some fields out (hash policies, cookie attributes, panic threshold, merge
/// window, health check method, outlier local-origin settings): one policy with every field the
/// gateway implements, rendered and checked against Envoy's protos.
#[test]
fn a_policy_with_every_field_renders_valid_envoy() {
    let manifest = r#"
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: default}
spec:
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin-1
  namespace: default
  labels: {kubernetes.io/service-name: httpbin}
addressType: IPv4
endpoints:
- addresses: [10.0.0.1]
  zone: zone-a
- addresses: [10.0.0.2]
  zone: zone-b
ports: [{name: http, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: kgateway
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: httpbin, port: 8000}]}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: BackendConfigPolicy
metadata: {name: everything, namespace: default}
spec:
  targetRefs: [{group: "", kind: Service, name: httpbin}]
  connectTimeout: 2s
  perConnectionBufferLimitBytes: 32768
  tcpKeepalive: {keepAliveProbes: 3, keepAliveTime: 30s, keepAliveInterval: 5s}
  commonHttpProtocolOptions: {idleTimeout: 10s, maxHeadersCount: 50, maxRequestsPerConnection: 100, maxStreamDuration: 30s}
  http1ProtocolOptions: {enableTrailers: true, preserveHttp1HeaderCase: true, overrideStreamErrorOnInvalidHttpMessage: false}
  loadBalancer:
    healthyPanicThreshold: 40
    updateMergeWindow: 2s
    closeConnectionsOnHostSetChange: true
    ringHash:
      minimumRingSize: 1024
      maximumRingSize: 4096
      hashPolicies:
      - header: {name: x-user}
        terminal: true
      - cookie: {name: session, ttl: 1h, path: /, httpOnly: true, secure: true, sameSite: Strict}
      - sourceIP: {}
  healthCheck:
    timeout: 1s
    interval: 2s
    unhealthyThreshold: 3
    healthyThreshold: 2
    http: {host: example.com, path: /healthz, method: HEAD}
  outlierDetection:
    consecutive5xx: 3
    consecutiveLocalOriginFailure: 4
    enforcingConsecutive5xx: 90
    enforcingConsecutiveLocalOriginFailure: 80
    splitExternalLocalOriginErrors: true
    interval: 1s
    baseEjectionTime: 10s
    maxEjectionPercent: 50
  circuitBreakers: {maxConnections: 10, maxPendingRequests: 5, maxRequests: 20, maxRetries: 1, trackRemaining: true}
  upstreamProxyProtocol: {version: V2}
---
apiVersion: v1
kind: Service
metadata: {name: grpc, namespace: default}
spec:
  ports: [{name: grpc, port: 9000, targetPort: 9000, appProtocol: kubernetes.io/h2c}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: BackendConfigPolicy
metadata: {name: h2, namespace: default}
spec:
  targetRefs: [{group: "", kind: Service, name: grpc}]
  http2ProtocolOptions:
    initialStreamWindowSize: 64Ki
    initialConnectionWindowSize: 1Mi
    maxConcurrentStreams: 50
    overrideStreamErrorOnInvalidHttpMessage: true
    connectionKeepalive: {interval: 30s, timeout: 5s, connectionIdleInterval: 1m}
  healthCheck:
    timeout: 1s
    interval: 2s
    unhealthyThreshold: 3
    healthyThreshold: 2
    grpc: {serviceName: echo.Echo, authority: grpc.example.com}
"#;
    let mut resources = Resources::new();
    // parse_manifests validates each object as the API server would (schema and CEL rules).
    for object in api::parse_manifests(manifest, "every-field").expect("the manifest is valid") {
        resources.insert(object.key(), object.into());
    }
    let path = dump_file(&resources, "every-field");
    dump_check(&["check".as_ref(), path.as_os_str()]).unwrap_or_else(|e| panic!("{e}"));
    let ours = run(&resources);
    let cluster = &ours.clusters["kube_default_httpbin_8000"];
    assert_eq!(
        cluster["load_balancing_policy"]["policies"][0]["typed_extension_config"]["name"],
        "envoy.load_balancing_policies.ring_hash"
    );
    let dump: Value = serde_json::from_slice(&std::fs::read(&path).expect("dump")).expect("JSON");
    let text = dump.to_string();
    for wanted in [
        r#""hash_policy":[{"header":{"header_name":"x-user"},"terminal":true}"#,
        r#""attributes":[{"name":"HttpOnly"},{"name":"Secure"},{"name":"SameSite","value":"Strict"}]"#,
        r#""locality":{"zone":"zone-a"}"#,
        r#""healthy_panic_threshold":{"value":40}"#,
        r#""grpc_health_check":{"service_name":"echo.Echo","authority":"grpc.example.com"}"#,
        r#""http2_protocol_options":{"initial_connection_window_size":1048576,"initial_stream_window_size":65536,"max_concurrent_streams":50,"override_stream_error_on_invalid_http_message":true,"connection_keepalive":{"interval":"30s","timeout":"5s","connection_idle_interval":"60s"}}"#,
    ] {
        assert!(text.contains(wanted), "{wanted} not in the dump: {text}");
    }
}

/// GRPCRoute's matches (exact path, service prefix, method regex, headers) render as routes
/// Envoy's protos take.
#[test]
fn grpc_routes_render_valid_envoy() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/grpc-routes.yaml");
    let text = std::fs::read_to_string(&input).expect("the golden input");
    let mut resources = Resources::new();
    for object in api::parse_manifests(&text, "grpc-routes").expect("the manifest is valid") {
        resources.insert(object.key(), object.into());
    }
    let path = dump_file(&resources, "grpc-routes");
    dump_check(&["check".as_ref(), path.as_os_str()]).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&path).expect("dump");
    for wanted in [
        r#""prefix": "/helloworld.Greeter/""#,
        r#""regex": "^/[^/]+/Check$""#,
        r#""path": "/helloworld.Greeter/SayHello""#,
    ] {
        assert!(text.contains(wanted), "{wanted} not in the dump");
    }
}
