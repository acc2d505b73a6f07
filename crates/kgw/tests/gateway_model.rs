//! The Gateway API object model as `kgw` keeps it: GatewayClasses (cluster-scoped, with the
//! status our controller gives its classes), Namespaces (their labels), what kgw does not serve.

mod common;

use common::*;
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
