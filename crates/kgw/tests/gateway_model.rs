//! The Gateway API object model as `kgw` keeps it: GatewayClasses (cluster-scoped, with the
//! status our controller gives its classes), Namespaces (their labels), what kgw does not serve,
//! where each Gateway listens (`--gateway-address-pool`, status.addresses).

mod common;
#[path = "common/controlled_backend.rs"]
mod controlled_backend;

use std::process::Command;
use std::time::Duration;

use common::*;
use controlled_backend::ControlledBackend;
use serde_json::Value;

const CLASSES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: kgateway
spec:
  controllerName: kgateway.dev/kgateway
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: other
spec:
  controllerName: example.com/other
---
apiVersion: v1
kind: Namespace
metadata:
  name: apps
  labels:
    team: a
";

fn get_json(gw: &Gateway, args: &[&str]) -> Value {
    let out = gw.kgw(&[&["get"][..], args, &["-o", "json"]].concat(), "");
    assert!(out.status.success(), "kgw get {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("kgw get -o json prints JSON")
}

#[test]
fn gateway_classes_are_cluster_scoped_and_ours_say_what_they_support() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::run(dir.path(), 0).start();
    let out = gw.kgw(&["apply", "-f", "-"], CLASSES);
    assert!(out.status.success(), "{}", stderr(&out));

    // No namespace, whatever -n says.
    let class = get_json(&gw, &["gatewayclass", "kgateway", "-n", "elsewhere"]);
    assert_eq!(class["metadata"].get("namespace"), None, "{class}");
    let conditions = class["status"]["conditions"].as_array().expect("conditions");
    for (kind, reason) in [("Accepted", "Accepted"), ("SupportedVersion", "SupportedVersion")] {
        let c = conditions
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {class}"));
        assert_eq!(c["status"], "True", "{c}");
        assert_eq!(c["reason"], reason, "{c}");
    }
    let features: Vec<&str> = class["status"]["supportedFeatures"]
        .as_array()
        .expect("supportedFeatures")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    for core in ["Gateway", "HTTPRoute", "ReferenceGrant"] {
        assert!(features.contains(&core), "{features:?}");
    }
    let mut sorted = features.clone();
    sorted.sort();
    assert_eq!(features, sorted, "sorted by name");

    // Another controller's class gets no status from us.
    let other = get_json(&gw, &["gatewayclass", "other"]);
    assert_eq!(other.get("status"), None, "{other}");

    // The table, and YAML by name.
    let out = gw.kgw(&["get", "gc"], "");
    let table = stdout(&out);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("kgateway") && l.contains("kgateway.dev/kgateway") && l.contains("True")),
        "{table}"
    );
    let out = gw.kgw(&["get", "gatewayclass", "kgateway", "-o", "yaml"], "");
    assert!(stdout(&out).contains("kind: GatewayClass"), "{}", stdout(&out));

    // Namespaces keep their labels, plus the one the API server gives every Namespace.
    let ns = get_json(&gw, &["namespace", "apps"]);
    assert_eq!(ns["metadata"]["labels"]["team"], "a", "{ns}");
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "apps",
        "{ns}"
    );

    let out = gw.kgw(&["delete", "gatewayclass", "other"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gw.kgw(&["get", "gatewayclass", "other"], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("gatewayclasses.gateway.networking.k8s.io \"other\" not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_kind_kgw_does_not_serve_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::run(dir.path(), 0).start();
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: echo\n  namespace: apps\n";
    let out = gw.kgw(&["apply", "-f", "-"], &format!("{CLASSES}---\n{deployment}"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no matches for kind \"Deployment\" in version \"apps/v1\""),
        "{}",
        stderr(&out)
    );
    // All or nothing: the valid documents beside it were not applied either.
    let out = gw.kgw(&["get", "gatewayclass", "kgateway"], "");
    assert!(!out.status.success(), "{}", stdout(&out));
}

/// A Gateway `name` on `port` with an HTTPRoute to Service `name`, whose endpoint is `backend`.
fn gateway_to(name: &str, port: u16, backend: std::net::SocketAddr) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: {port}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: 80\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  labels:\n    \
         kubernetes.io/service-name: {name}\naddressType: IPv4\nendpoints:\n- addresses: [\"{ip}\"]\nports:\n\
         - port: {backend_port}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  \
         name: {name}\nspec:\n  parentRefs:\n  - name: {name}\n  rules:\n  - backendRefs:\n    - name: {name}\n      \
         port: 80\n",
        ip = backend.ip(),
        backend_port = backend.port(),
    )
}

/// A Gateway's status.addresses values, once it has any.
fn addresses_of(gw: &Gateway, name: &str) -> Vec<String> {
    wait_for(
        &format!("status.addresses of Gateway {name}"),
        Duration::from_secs(10),
        || {
            let v = get_json(gw, &["gateway", name]);
            let values: Vec<String> = v["status"]["addresses"]
                .as_array()?
                .iter()
                .map(|a| {
                    assert_eq!(a["type"], "IPAddress", "{a}");
                    a["value"].as_str().expect("value").to_string()
                })
                .collect();
            (!values.is_empty()).then_some(values)
        },
    )
}

/// `curl http://IP:PORT/`: status and body.
fn curl_at(ip: &str, port: u16) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://{ip}:{port}/"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn gateways_on_one_port_get_their_own_pool_address_and_route_apart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port)
        .arg("--gateway-address-pool")
        .arg("127.0.30.0/29")
        .start();
    let blue = ControlledBackend::start("127.0.0.1:0", "blue");
    let green = ControlledBackend::start("127.0.0.1:0", "green");
    let manifests = gateway_to("blue", port, blue.addr);
    let out = gw.kgw(&["apply", "-f", "-"], &manifests);
    assert!(out.status.success(), "{}", stderr(&out));
    // green comes later: blue, the older, took the pool's first address.
    let out = gw.kgw(&["apply", "-f", "-"], &gateway_to("green", port, green.addr));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(addresses_of(&gw, "blue"), ["127.0.30.1"]);
    assert_eq!(addresses_of(&gw, "green"), ["127.0.30.2"]);

    // Same port, two addresses, two backends.
    assert_eq!(curl_at("127.0.30.1", port), (200, "blue".into()));
    assert_eq!(curl_at("127.0.30.2", port), (200, "green".into()));
    // An address no Gateway has: nothing listens there.
    assert_eq!(curl_at("127.0.30.3", port).0, 0);
    let out = gw.kgw(&["get", "gateway"], "");
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("blue") && l.contains("127.0.30.1")),
        "the ADDRESS column: {}",
        stdout(&out)
    );

    // blue goes: green keeps its address, and a new Gateway takes the freed one.
    let out = gw.kgw(&["delete", "gateway", "blue"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gw.kgw(&["apply", "-f", "-"], &gateway_to("blue-again", port, blue.addr));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(addresses_of(&gw, "blue-again"), ["127.0.30.1"]);
    assert_eq!(addresses_of(&gw, "green"), ["127.0.30.2"]);
    assert_eq!(curl_at("127.0.30.1", port), (200, "blue".into()));
    assert_eq!(curl_at("127.0.30.2", port), (200, "green".into()));
}

#[test]
fn without_a_pool_a_gateway_binds_every_interface_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    let backend = ControlledBackend::start("127.0.0.1:0", "any");
    let out = gw.kgw(&["apply", "-f", "-"], &gateway_to("any", port, backend.addr));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(addresses_of(&gw, "any"), ["0.0.0.0", "::"]);
    assert_eq!(curl_at("127.0.0.1", port), (200, "any".into()));
    assert_eq!(curl_at("127.0.30.5", port), (200, "any".into()));
}

/// Every `observedGeneration` in `value`'s conditions, at any depth.
fn observed_generations(value: &Value, out: &mut Vec<i64>) {
    match value {
        Value::Object(map) => {
            for (field, v) in map {
                if field == "conditions" {
                    for c in v.as_array().into_iter().flatten() {
                        out.push(c["observedGeneration"].as_i64().unwrap_or(-1));
                    }
                } else {
                    observed_generations(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| observed_generations(v, out)),
        _ => {}
    }
}

/// Waits until every condition of `kind/name` observed its current generation; returns it.
fn observed(gw: &Gateway, kind: &str, name: &str) -> i64 {
    wait_for(
        &format!("every condition of {kind} {name} to observe its generation"),
        Duration::from_secs(10),
        || {
            let v = get_json(gw, &[kind, name]);
            let generation = v["metadata"]["generation"].as_i64()?;
            let mut seen = Vec::new();
            observed_generations(&v["status"], &mut seen);
            (!seen.is_empty() && seen.iter().all(|g| *g == generation)).then_some(generation)
        },
    )
}

#[test]
fn generation_counts_spec_changes_and_every_condition_observes_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    let backend = ControlledBackend::start("127.0.0.1:0", "one");
    let manifests = format!("{CLASSES}{}", gateway_to("one", port, backend.addr));
    let out = gw.kgw(&["apply", "-f", "-"], &manifests);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(observed(&gw, "gateway", "one"), 1);
    assert_eq!(observed(&gw, "httproute", "one"), 1);
    assert_eq!(observed(&gw, "gatewayclass", "kgateway"), 1);

    // The same manifest again: no change, no new generation.
    let out = gw.kgw(&["apply", "-f", "-"], &manifests);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(observed(&gw, "gateway", "one"), 1);

    // Metadata is not spec: a label keeps the generation.
    let patch = |args: &[&str]| {
        let out = gw.kgw(&[&["patch"][..], args].concat(), "");
        assert!(out.status.success(), "{}", stderr(&out));
    };
    patch(&[
        "gateway",
        "one",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"a":"b"}}}"#,
    ]);
    assert_eq!(observed(&gw, "gateway", "one"), 1);

    // A spec change: one more, and every condition (Gateway's, its listeners') says so.
    let added = format!(
        r#"[{{"op":"add","path":"/spec/listeners/-","value":{{"name":"alt","port":{},"protocol":"HTTP"}}}}]"#,
        free_port()
    );
    patch(&["gateway", "one", "--type", "json", "-p", &added]);
    assert_eq!(observed(&gw, "gateway", "one"), 2);
    patch(&[
        "httproute",
        "one",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"hostnames":["one.example"]}}"#,
    ]);
    assert_eq!(observed(&gw, "httproute", "one"), 2);
    patch(&[
        "gatewayclass",
        "kgateway",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"description":"new"}}"#,
    ]);
    assert_eq!(observed(&gw, "gatewayclass", "kgateway"), 2);
}

#[test]
fn a_namespace_label_lets_a_route_attach_through_a_selector_and_its_removal_detaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    let backend = ControlledBackend::start("127.0.0.1:0", "apps");
    let manifests = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: infra\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: {port}\n    \
         allowedRoutes:\n      namespaces:\n        from: Selector\n        selector:\n          matchLabels:\n            \
         gateway-access: granted\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  ports:\n  - port: 80\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: apps\n  labels:\n    \
         kubernetes.io/service-name: web\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  \
         parentRefs:\n  - name: gw\n    namespace: infra\n  rules:\n  - backendRefs:\n    - name: web\n      port: 80\n",
        backend.addr.port()
    );
    let out = gw.kgw(&["apply", "-f", "-"], &manifests);
    assert!(out.status.success(), "{}", stderr(&out));
    let accepted = |gw: &Gateway| {
        let route = get_json(gw, &["httproute", "web", "-n", "apps"]);
        route["status"]["parents"][0]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Accepted")
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or("").to_string(),
                    c["reason"].as_str().unwrap_or("").to_string(),
                )
            })
    };
    assert_eq!(
        accepted(&gw),
        Some(("False".into(), "NotAllowedByListeners".into()))
    );
    assert_eq!(curl_at("127.0.0.1", port).0, 404);

    let label = |value: &str| {
        let out = gw.kgw(
            &[
                "patch",
                "namespace",
                "apps",
                "--type",
                "merge",
                "-p",
                &format!(r#"{{"metadata":{{"labels":{{"gateway-access":{value}}}}}}}"#),
            ],
            "",
        );
        assert!(out.status.success(), "{}", stderr(&out));
    };
    label("\"granted\"");
    assert_eq!(accepted(&gw), Some(("True".into(), "Accepted".into())));
    assert_eq!(curl_at("127.0.0.1", port), (200, "apps".into()));

    label("null");
    assert_eq!(
        accepted(&gw),
        Some(("False".into(), "NotAllowedByListeners".into()))
    );
    assert_eq!(curl_at("127.0.0.1", port).0, 404);
}

#[test]
fn an_address_the_host_cannot_bind_is_address_not_usable_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    // 198.51.100.1 (TEST-NET-2) is no address of this host.
    let gateway = |addresses: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: fixed\nspec:\n  \
             gatewayClassName: kgateway\n  addresses:\n{addresses}  listeners:\n  - name: http\n    protocol: HTTP\n    \
             port: {port}\n"
        )
    };
    let programmed = |gw: &Gateway| {
        let v = get_json(gw, &["gateway", "fixed"]);
        v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Programmed")
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or("").to_string(),
                    c["reason"].as_str().unwrap_or("").to_string(),
                )
            })
    };
    let out = gw.kgw(
        &["apply", "-f", "-"],
        &gateway("  - value: 198.51.100.1\n  - value: 127.0.30.9\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(programmed(&gw), Some(("False".into(), "AddressNotUsable".into())));
    let out = gw.kgw(&["apply", "-f", "-"], &gateway("  - value: 127.0.30.9\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(programmed(&gw), Some(("True".into(), "Programmed".into())));
    assert_eq!(addresses_of(&gw, "fixed"), ["127.0.30.9"]);
    // Nothing routes there, but the address listens: 404, not a refused connection.
    assert_eq!(curl_at("127.0.30.9", port).0, 404);
}
