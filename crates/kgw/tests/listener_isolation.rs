//! Listener isolation (Gateway API GatewayHTTPListenerIsolation) through the real kgw: four
//! HTTP listeners on one port, from the catch-all to `abc.foo.example.com`, each with a route
//! that names every hostname; curl's request is served only by the routes of the most specific
//! listener for its Host, and a listener without routes answers 404 for its names.

mod common;

use std::time::Duration;

use common::*;

const NS: &str = "isolation";

fn manifests(port: u16, backend: u16) -> String {
    let listener = |name: &str, hostname: Option<&str>| {
        let hostname = hostname
            .map(|h| format!("    hostname: \"{h}\"\n"))
            .unwrap_or_default();
        format!("  - name: {name}\n    port: {port}\n    protocol: HTTP\n{hostname}")
    };
    let route = |section: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {section}\n  namespace: {NS}\nspec:\n  \
             parentRefs:\n  - name: gw\n    sectionName: {section}\n  hostnames: [bar.com, \"*.example.com\", \"*.foo.example.com\", \
             abc.foo.example.com]\n  rules:\n  - matches:\n    - path:\n        type: PathPrefix\n        value: /{section}\n    \
             filters:\n    - type: URLRewrite\n      urlRewrite:\n        path:\n          type: ReplacePrefixMatch\n          \
             replacePrefixMatch: /headers\n    backendRefs:\n    - name: echo\n      port: 80\n"
        )
    };
    [
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {NS}\nspec:\n  \
             gatewayClassName: kgateway\n  listeners:\n{}{}{}{}{}",
            listener("empty-hostname", None),
            listener("wildcard-example-com", Some("*.example.com")),
            listener("wildcard-foo-example-com", Some("*.foo.example.com")),
            listener("abc-foo-example-com", Some("abc.foo.example.com")),
            listener("www-example-com", Some("www.example.com")),
        ),
        route("empty-hostname"),
        route("wildcard-example-com"),
        route("wildcard-foo-example-com"),
        route("abc-foo-example-com"),
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: {NS}\nspec:\n  ports:\n  - port: 80\n"),
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-1\n  namespace: {NS}\n  labels:\n    \
             kubernetes.io/service-name: echo\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {backend}\n"
        ),
    ]
    .join("---\n")
}

#[test]
fn each_request_is_routed_by_its_most_specific_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let backend_port = free_port();
    let _backend = sample_backend_on(backend_port, dir.path().join("backend.log"));
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), free_port()).start();
    let out = gw.kgw(&["apply", "-f", "-"], &manifests(port, backend_port));
    assert!(
        out.status.success(),
        "kgw apply: {}{}",
        stdout(&out),
        stderr(&out)
    );
    wait_for("the listeners", Duration::from_secs(15), || {
        (curl(port, "bar.com", "/empty-hostname").0 == 200).then_some(())
    });

    // (Host, the one listener whose route serves it; None: 404 for every path).
    let table = [
        ("bar.com", Some("empty-hostname")),
        ("bar.example.com", Some("wildcard-example-com")),
        ("bar.foo.example.com", Some("wildcard-foo-example-com")),
        ("abc.foo.example.com", Some("abc-foo-example-com")),
        ("www.example.com", None),
    ];
    let paths = [
        "empty-hostname",
        "wildcard-example-com",
        "wildcard-foo-example-com",
        "abc-foo-example-com",
    ];
    for (host, owner) in table {
        for path in paths {
            let want = if owner == Some(path) { 200 } else { 404 };
            let (status, body) = curl(port, host, &format!("/{path}"));
            assert_eq!(status, want, "{host}/{path}: {body}");
        }
    }
}
