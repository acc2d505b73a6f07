//! HTTPS misdirected requests (Gateway API GatewayHTTPSListenerDetectMisdirectedRequests)
//! through the real kgw: four HTTPS listeners on one port share one certificate (so an HTTP/2
//! client may reuse a connection for all their names), and curl sends an SNI that picks one
//! listener with a Host (HTTP/2 :authority) another listener is the most specific for: 421, and
//! a Host that only the SNI's listener covers is routed (200) or not found (404).

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::{Pki, secret_yaml};
use common::*;

const NS: &str = "misdirected";

/// The conformance test's Gateway (`same-namespace-with-https-listener`) and routes.
fn manifests(port: u16, backend: u16) -> String {
    let listener = |name: &str, hostname: Option<&str>| {
        let hostname = hostname
            .map(|h| format!("    hostname: \"{h}\"\n"))
            .unwrap_or_default();
        format!(
            "  - name: {name}\n    port: {port}\n    protocol: HTTPS\n{hostname}    tls:\n      certificateRefs:\n      - name: cert\n"
        )
    };
    let route = |name: &str, section: &str, hostnames: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  \
             parentRefs:\n  - name: gw\n    sectionName: {section}\n{hostnames}  rules:\n  - matches:\n    - path:\n        \
             type: PathPrefix\n        value: /headers\n    backendRefs:\n    - name: echo\n      port: 80\n"
        )
    };
    [
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {NS}\nspec:\n  \
             gatewayClassName: kgateway\n  listeners:\n{}{}{}{}",
            listener("https", None),
            listener("https-with-hostname", Some("second-example.org")),
            listener("https-with-wildcard-hostname", Some("*.wildcard.org")),
            listener("https-with-hostname-matching-wildcard", Some("fourth-example.wildcard.org")),
        ),
        route("test-1", "https", "  hostnames: [example.org]\n"),
        route("test-2", "https-with-hostname", ""),
        route("test-3", "https-with-wildcard-hostname", ""),
        route("test-4", "https-with-hostname-matching-wildcard", ""),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: {NS}\nspec:\n  ports:\n  - port: 80\n"
        ),
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-1\n  namespace: {NS}\n  labels:\n    \
             kubernetes.io/service-name: echo\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {backend}\n"
        ),
    ]
    .join("---\n")
}

/// curl over TLS with SNI `sni` (the URL's host, resolved to 127.0.0.1) and Host `host`:
/// the status (0 when curl failed).
fn status(ca: &Path, http: &str, port: u16, sni: &str, host: &str) -> u16 {
    curl_https(ca, sni, port, "/headers", &[http, "-H", &format!("Host: {host}")]).0
}

#[test]
fn a_host_another_https_listener_owns_gets_421_over_http2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let names = [
        "example.org",
        "second-example.org",
        "unknown-example.org",
        "*.wildcard.org",
    ];
    let cert = pki.leaf("shared", &names);
    let backend_port = free_port();
    let _backend = sample_backend_on(backend_port, dir.path().join("backend.log"));
    let https_port = free_port();
    let gw = GatewayBuilder::run(dir.path(), free_port()).start();
    let yaml = secret_yaml(NS, "cert", &cert, None) + "---\n" + &manifests(https_port, backend_port);
    gw.apply(&yaml);
    let ca = pki.ca.cert.clone();
    wait_for("the HTTPS listeners", Duration::from_secs(15), || {
        (status(&ca, "--http2", https_port, "example.org", "example.org") == 200).then_some(())
    });

    // The conformance test's table: (SNI, Host, status).
    let table = [
        ("example.org", "example.org", 200),
        ("example.org", "second-example.org", 421),
        ("example.org", "unknown-example.org", 404),
        ("second-example.org", "second-example.org", 200),
        ("second-example.org", "example.org", 421),
        ("second-example.org", "unknown-example.org", 421),
        ("third-example.wildcard.org", "third-example.wildcard.org", 200),
        ("third-example.wildcard.org", "fith-example.wildcard.org", 200),
        ("third-example.wildcard.org", "fourth-example.wildcard.org", 421),
        ("third-example.wildcard.org", "second-example.org", 421),
        ("third-example.wildcard.org", "unknown-example.org", 421),
        ("fourth-example.wildcard.org", "fourth-example.wildcard.org", 200),
        ("fourth-example.wildcard.org", "fith-example.wildcard.org", 421),
        ("unknown-example.org", "example.org", 200),
        ("unknown-example.org", "unknown-example.org", 404),
    ];
    for http in ["--http2", "--http1.1"] {
        let got: Vec<(&str, &str, u16)> = table
            .iter()
            .map(|(sni, host, _)| (*sni, *host, status(&ca, http, https_port, sni, host)))
            .collect();
        assert_eq!(got, table, "{http}");
    }

    // The dump says it as Envoy would: each filter chain has its own route configuration,
    // with a 421 virtual host for every other listener's hostname.
    let dump = gw.dump("GET", "?resource=dynamic_route_configs");
    let tables = dump["configs"].as_array().unwrap();
    let table = |name: &str| {
        tables
            .iter()
            .find(|t| t["route_config"]["name"] == format!("listener~{https_port}~{name}"))
            .unwrap_or_else(|| panic!("route configuration for {name}: {dump}"))["route_config"]
            .clone()
    };
    let second = table("https-with-hostname");
    let misdirected: Vec<&str> = second["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|vh| vh["routes"][0]["direct_response"]["status"] == 421)
        .map(|vh| vh["domains"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        misdirected,
        ["fourth-example.wildcard.org", "*.wildcard.org", "*"]
    );
}
