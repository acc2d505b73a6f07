//! The admin API cannot be driven by a web page (writes need what a browser cannot send
//! cross-site), refuses what Kubernetes refuses, and bounds what one apply may send.

mod common;

use std::process::Command;

use common::*;

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: csrf\n  namespace: default\nspec:\n  ports:\n  - port: 80\n";

const JSON_SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "json", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}"#;

/// `curl -X POST --data-binary @- URL` with extra headers: status and body.
fn curl_admin(method: &str, url: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    if !body.is_empty() {
        cmd.arg("--data-binary").arg(body);
    }
    let out = cmd.arg(url).output().expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn a_web_page_cannot_write_to_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let apply = format!("http://{}/apis/apply", gw.admin);
    let port = gw.admin.port();

    // The issue's request: text/plain from another site, under its own Host (DNS rebinding).
    let (status, body) = curl_admin(
        "POST",
        &apply,
        &[
            "Content-Type: text/plain",
            "Origin: http://evil.example",
            "Host: evil.example",
        ],
        SERVICE,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Host") && body.contains("evil.example"), "{body}");
    // Each guard alone: a simple content type (or none), a foreign Host, a foreign Origin.
    for content_type in [
        "Content-Type: text/plain",
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Type:",
    ] {
        let (status, body) = curl_admin("POST", &apply, &[content_type], SERVICE);
        assert_eq!(status, 415, "{content_type}: {body}");
        assert!(body.contains("Content-Type application/yaml"), "{body}");
    }
    let yaml = "Content-Type: application/yaml";
    let (status, body) = curl_admin("POST", &apply, &[yaml, "Host: evil.example:19000"], SERVICE);
    assert_eq!(status, 403, "{body}");
    let (status, body) = curl_admin("POST", &apply, &[yaml, "Origin: http://evil.example"], SERVICE);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("origin \"http://evil.example\""), "{body}");
    let other_port = format!("Origin: http://127.0.0.1:{}", port.wrapping_add(1));
    let (status, body) = curl_admin("POST", &apply, &[yaml, &other_port], SERVICE);
    assert_eq!(status, 403, "another loopback site: {body}");
    let delete = format!("http://{}/apis/services/httpbin/httpbin", gw.admin);
    let (status, body) = curl_admin("DELETE", &delete, &["Host: evil.example"], "");
    assert_eq!(status, 403, "{body}");
    assert_eq!(gw.curl("www.example.com", "/get").0, 200, "nothing was deleted");
    let out = gw.kgw(&["get", "service", "csrf"], "");
    assert!(!out.status.success(), "nothing was applied: {}", stdout(&out));

    // What users and tools send keeps working: curl with a YAML type, under every own Host...
    for host in [
        format!("Host: localhost:{port}"),
        format!("Host: 127.0.0.1:{port}"),
        "Host: [::1]".to_string(),
        "Host: LOCALHOST".to_string(),
    ] {
        let (status, body) = curl_admin("POST", &apply, &[yaml, &host], SERVICE);
        assert_eq!(status, 200, "{host}: {body}");
    }
    let own_origin = format!("Origin: http://127.0.0.1:{port}");
    let (status, body) = curl_admin(
        "POST",
        &apply,
        &["Content-Type: application/json", &own_origin],
        JSON_SERVICE,
    );
    assert_eq!(status, 200, "{body}");
    // ... kgw apply and delete ...
    let out = gw.kgw(&["apply", "-f", "-"], &SERVICE.replace("csrf", "by-kgw"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gw.kgw(&["delete", "service", "by-kgw", "-n", "default"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    // ... and Envoy's POST /config_dump from the README.
    let (status, body) = curl_admin(
        "POST",
        &format!("http://{}/config_dump?include_eds", gw.admin),
        &[],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("dynamic_active_clusters"));
}

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: g\n  namespace: default\nspec:\n  \
                       gatewayClassName: kgateway\n  listeners:\n  - name: LISTENER\n    protocol: HTTP\n    port: 8080\n    hostname: HOST\n";
const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  namespace: default\nspec:\n  \
                     parentRefs:\n  - name: g\n    sectionName: SECTION\n  hostnames: [\"HOST\"]\n";
const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s-1\n  namespace: default\n  labels:\n    \
                     kubernetes.io/service-name: s\naddressType: IPv4\nendpoints:\n- addresses: ADDRESSES\nports:\n- name: PORT\n  port: 80\n";
const NAMED_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: NAME\n  namespace: default\nspec:\n  ports:\n  - name: PORT\n    port: 80\n";

#[test]
fn names_kubernetes_refuses_are_refused_at_apply_with_field_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let good_gateway = GATEWAY
        .replace("LISTENER", "http")
        .replace("HOST", "www.example.com");
    let good_route = ROUTE
        .replace("SECTION", "http")
        .replace("HOST", "www.example.com");
    let good_slice = SLICE
        .replace("ADDRESSES", "[\"127.0.0.1\"]")
        .replace("PORT", "http");
    let good_service = NAMED_SERVICE.replace("NAME", "s").replace("PORT", "http");
    for good in [&good_gateway, &good_route, &good_slice, &good_service] {
        let out = gw.kgw(&["apply", "-f", "-"], good);
        assert!(out.status.success(), "{good}\n{}", stderr(&out));
    }
    // (document, resource, field, words of the fix)
    let cases = [
        (
            GATEWAY
                .replace("LISTENER", "http")
                .replace("HOST", "Raw.E*xample.COM"),
            "Gateway \"default/g\" is invalid",
            "spec.listeners[0].hostname: Invalid value: \"Raw.E*xample.COM\"",
            "in lower case",
        ),
        (
            GATEWAY
                .replace("LISTENER", "a..b")
                .replace("HOST", "www.example.com"),
            "Gateway \"default/g\" is invalid",
            "spec.listeners[0].name: Invalid value: \"a..b\"",
            "e.g. http",
        ),
        (
            ROUTE.replace("SECTION", "http").replace("HOST", "../../etc"),
            "HTTPRoute \"default/r\" is invalid",
            "spec.hostnames[0]: Invalid value: \"../../etc\"",
            "e.g. www.example.com",
        ),
        (
            ROUTE
                .replace("SECTION", "Http")
                .replace("HOST", "www.example.com"),
            "HTTPRoute \"default/r\" is invalid",
            "spec.parentRefs[0].sectionName: Invalid value: \"Http\"",
            "lower case",
        ),
        (
            NAMED_SERVICE.replace("NAME", "1st").replace("PORT", "http"),
            "Service \"default/1st\" is invalid",
            "metadata.name: Invalid value: \"1st\": a DNS-1035 label",
            "rename the Service",
        ),
        (
            NAMED_SERVICE
                .replace("NAME", "\"bad\\u0007name\"")
                .replace("PORT", "http"),
            "Service \"default/bad\u{7}name\" is invalid",
            "metadata.name: Invalid value: \"bad\\u0007name\"",
            "rename the Service",
        ),
        (
            NAMED_SERVICE.replace("NAME", "s").replace("PORT", "a..b"),
            "Service \"default/s\" is invalid",
            "spec.ports[0].name: Invalid value: \"a..b\"",
            "rename it",
        ),
        (
            SLICE.replace("ADDRESSES", "[]").replace("PORT", "http"),
            "EndpointSlice \"default/s-1\" is invalid",
            "endpoints[0].addresses: Invalid value: []",
            "list the endpoint's IP",
        ),
        (
            SLICE
                .replace("ADDRESSES", "[\"127.0.0.1\"]")
                .replace("PORT", "HTTP_1"),
            "EndpointSlice \"default/s-1\" is invalid",
            "ports[0].name: Invalid value: \"HTTP_1\"",
            "rename it",
        ),
    ];
    for (doc, resource, field, fix) in &cases {
        let out = gw.kgw(&["apply", "-f", "-"], doc);
        let err = stderr(&out);
        assert!(!out.status.success(), "accepted but should not be:\n{doc}");
        assert!(err.contains(resource), "names the resource {resource}: {err}");
        assert!(err.contains(field), "names the field {field}: {err}");
        assert!(err.contains(fix), "says the fix {fix:?}: {err}");
    }
}

#[test]
fn a_manifest_over_8_mib_is_refused_with_the_limit_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let line = format!("# {}\n", "x".repeat(1022));
    let big = format!("{SERVICE}{}", line.repeat(9 * 1024));
    let out = gw.kgw(&["apply", "-f", "-"], &big);
    assert!(!out.status.success(), "a 9 MiB manifest was accepted");
    let err = stderr(&out);
    assert!(err.contains("at most 8 MiB") && err.contains("split it"), "{err}");
    let out = gw.kgw(&["get", "service", "csrf"], "");
    assert!(!out.status.success(), "nothing was applied");
}
