//! What Gateway API specifies for references and listeners that are not valid, as a user sees it
//! through `kgw get` and curl: a backendRef that does not resolve (unknown kind, missing Service,
//! cross-namespace without a ReferenceGrant) leaves the route Accepted with ResolvedRefs=False
//! and answers its share of the traffic with 500, while the valid rules keep serving; two
//! listeners of one Gateway with one port and hostname both get HostnameConflict and neither is
//! served, while a distinct listener on the same port is.

mod common;

use std::time::Duration;

use common::*;

const NS: &str = "infra";

fn status(gw: &Gateway, kind: &str, name: &str) -> serde_json::Value {
    let out = gw.kgw(&["get", kind, name, "-n", NS, "-o", "json"], "");
    assert!(out.status.success(), "kgw get {kind} {name}: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kgw get -o json prints JSON");
    v["status"].clone()
}

/// (status, reason) of condition `kind` in `conditions`.
fn condition(conditions: &serde_json::Value, kind: &str) -> (String, String) {
    let c = conditions
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions}"));
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
    )
}

/// Gateway `gw` on `port`, Service `app` (port 80) at 127.0.0.1:`backend`, Service `web` in
/// namespace `web` at the same backend, and `routes`.
fn setup(port: u16, backend: u16, listeners: &str, routes: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {NS}}}\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n{listeners}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: {NS}}}\nspec:\n  ports: [{{port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: app-1\n  namespace: {NS}\n  labels: \
         {{kubernetes.io/service-name: app}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\n\
         ports: [{{port: {backend}}}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: web}}\nspec:\n  ports: [{{port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: web\n  labels: \
         {{kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\n\
         ports: [{{port: {backend}}}]\n---\n{routes}",
        listeners = listeners.replace("{port}", &port.to_string()),
    )
}

fn route(name: &str, host: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{host}]\n  rules:\n{rules}\n---\n"
    )
}

#[test]
fn invalid_backend_refs_answer_500_for_their_share_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let backend_port = free_port();
    let _backend = sample_backend_on(backend_port, dir.path().join("backend.log"));
    let gw = GatewayBuilder::run(dir.path(), free_port()).start();
    let routes = [
        route(
            "unknown-kind",
            "unknown.example.com",
            "  - backendRefs: [{group: unknownkind.example.com, kind: NonExistent, name: app, port: 80}]",
        ),
        route(
            "partly",
            "partly.example.com",
            "  - matches: [{path: {type: PathPrefix, value: /get}}]\n    backendRefs: [{name: web, namespace: web, port: 80}]\n  \
             - backendRefs: [{name: app, port: 80}]",
        ),
        route(
            "half",
            "half.example.com",
            "  - backendRefs: [{name: app, port: 80, weight: 1}, {name: missing, port: 80, weight: 1}]",
        ),
    ]
    .concat();
    gw.apply(&setup(
        gw.port,
        backend_port,
        "  - {name: http, port: {port}, protocol: HTTP}",
        &routes,
    ));
    wait_for("partly.example.com served", Duration::from_secs(15), || {
        (curl(gw.port, "partly.example.com", "/").0 == 200).then_some(())
    });
    assert_eq!(curl(gw.port, "partly.example.com", "/get").0, 500);
    assert_eq!(curl(gw.port, "unknown.example.com", "/").0, 500);
    assert_eq!(curl(gw.port, "nothing.example.com", "/").0, 404);
    // Half the weight goes to a backend that does not exist: both answers show up (all 40 the
    // same has a chance of 2^-39).
    let answers: std::collections::BTreeSet<u16> = (0..40)
        .map(|_| curl(gw.port, "half.example.com", "/").0)
        .collect();
    assert_eq!(answers, [200, 500].into(), "half.example.com's answers");

    for (name, reason) in [
        ("unknown-kind", "InvalidKind"),
        ("partly", "RefNotPermitted"),
        ("half", "BackendNotFound"),
    ] {
        let parent = &status(&gw, "httproute", name)["parents"][0];
        assert_eq!(
            condition(&parent["conditions"], "Accepted"),
            ("True".into(), "Accepted".into()),
            "{name}"
        );
        assert_eq!(
            condition(&parent["conditions"], "ResolvedRefs"),
            ("False".into(), reason.into()),
            "{name}"
        );
    }

    // A ReferenceGrant in `web` lets the route reach Service web: /get is served, the route resolves.
    gw.apply("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: routes-from-infra, \
         namespace: web}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]\n  \
         to: [{group: \"\", kind: Service}]\n",
    );
    wait_for("partly.example.com/get served", Duration::from_secs(15), || {
        (curl(gw.port, "partly.example.com", "/get").0 == 200).then_some(())
    });
    let parent = &status(&gw, "httproute", "partly")["parents"][0];
    assert_eq!(
        condition(&parent["conditions"], "ResolvedRefs"),
        ("True".into(), "ResolvedRefs".into())
    );
}

#[test]
fn listeners_with_one_port_and_hostname_conflict_and_neither_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let backend_port = free_port();
    let _backend = sample_backend_on(backend_port, dir.path().join("backend.log"));
    let gw = GatewayBuilder::run(dir.path(), free_port()).start();
    let listeners = "  - {name: first, port: {port}, protocol: HTTP, hostname: same.example.com}\n  \
                     - {name: second, port: {port}, protocol: HTTP, hostname: same.example.com}\n  \
                     - {name: distinct, port: {port}, protocol: HTTP, hostname: other.example.com}";
    let routes = route(
        "both",
        "same.example.com, other.example.com",
        "  - backendRefs: [{name: app, port: 80}]",
    );
    gw.apply(&setup(gw.port, backend_port, listeners, &routes));
    wait_for("other.example.com served", Duration::from_secs(15), || {
        (curl(gw.port, "other.example.com", "/").0 == 200).then_some(())
    });
    assert_eq!(curl(gw.port, "same.example.com", "/").0, 404);

    let gateway = status(&gw, "gateway", "gw");
    assert_eq!(
        condition(&gateway["conditions"], "Accepted"),
        ("True".into(), "ListenersNotValid".into())
    );
    assert_eq!(
        condition(&gateway["conditions"], "Programmed"),
        ("True".into(), "Programmed".into())
    );
    let listener = |name: &str| {
        gateway["listeners"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["name"] == name))
            .unwrap_or_else(|| panic!("listener {name} in {gateway}"))
            .clone()
    };
    for name in ["first", "second"] {
        let l = listener(name);
        assert_eq!(
            condition(&l["conditions"], "Conflicted"),
            ("True".into(), "HostnameConflict".into()),
            "{name}"
        );
        assert_eq!(
            condition(&l["conditions"], "Accepted"),
            ("False".into(), "HostnameConflict".into()),
            "{name}"
        );
        assert_eq!(condition(&l["conditions"], "Programmed").0, "False", "{name}");
    }
    let distinct = listener("distinct");
    assert_eq!(
        condition(&distinct["conditions"], "Conflicted"),
        ("False".into(), "NoConflicts".into())
    );
    assert_eq!(distinct["attachedRoutes"], 1);
}
