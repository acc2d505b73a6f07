//! kgateway's backend TLS e2e manifests, read in place from `../shared/conformance/kgateway/e2e`
//! and applied verbatim (the kinds kgw serves; nginx's Pod and ConfigMap become a local nginx
//! serving the ConfigMap's certificate): `simple-tls.yaml` (the Secret's CA verifies nginx),
//! `tls-insecure.yaml` (nothing verified), `system-ca.yaml` (the system's CAs, which do not
//! vouch for nginx's self-signed certificate: 503 UF). Each is checked in the dump and in the
//! traffic.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const NS: &str = "kgateway-base";
const CLUSTER: &str = "kube_kgateway-base_nginx_8443";

fn e2e(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/kgateway/e2e")
        .join(name)
}

/// The documents of a manifest whose kind kgw serves, as written.
fn served_documents(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split("\n---")
        .filter(|doc| {
            doc.lines().any(|l| {
                ["HTTPRoute", "Service", "Secret", "BackendConfigPolicy", "Backend"]
                    .iter()
                    .any(|k| l.trim() == format!("kind: {k}"))
            })
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// nginx.yaml's ConfigMap: nginx's certificate and key, written to files.
fn nginx_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(e2e("nginx.yaml")).unwrap();
    let config_map = text
        .split("\n---")
        .find(|d| d.contains("kind: ConfigMap"))
        .expect("nginx.yaml has the ConfigMap");
    let value: serde_json::Value = serde_yaml_ng::from_str(config_map).expect("the ConfigMap is YAML");
    let (cert, key) = (dir.join("example.crt"), dir.join("example.key"));
    std::fs::write(&cert, value["data"]["example.crt"].as_str().unwrap()).unwrap();
    std::fs::write(&key, value["data"]["example.key"].as_str().unwrap()).unwrap();
    (cert, key)
}

fn apply(gw: &Gateway, yaml: &str) {
    let out = gw.kgw(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}\n{yaml}", stderr(&out));
}

/// The policy's transport socket in the dump, once it is there.
fn transport_socket(gw: &Gateway) -> serde_json::Value {
    wait_for("the policy's TLS in the dump", Duration::from_secs(10), || {
        gw.cluster(CLUSTER).and_then(|c| {
            let ts = c["transport_socket"]["typed_config"].clone();
            (!ts.is_null()).then_some(ts)
        })
    })
}

#[test]
fn kgateways_backend_tls_manifests_verbatim_in_the_dump_and_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = nginx_certificate(dir.path());
    let https = free_port();
    let _nginx = common::nginx::start(
        dir.path(),
        "nginx",
        https,
        "",
        &format!(
            "server {{ listen 127.0.0.1:{https} ssl; server_name example.com; ssl_certificate {}; \
             ssl_certificate_key {}; location / {{ return 200 \"nginx over TLS: $ssl_protocol\\n\"; }} }}",
            cert.display(),
            key.display()
        ),
    );
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    // The e2e suite's Gateway (`gateway` in kgateway-base), nginx.yaml's HTTPRoute and Service as
    // written, and the EndpointSlice a cluster would make for the Service's https port.
    apply(
        &gw,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gateway, namespace: {NS}}}\n\
             spec:\n  gatewayClassName: kgateway\n  listeners: [{{name: http, protocol: HTTP, port: {port}}}]\n---\n{}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: nginx-1\n  namespace: {NS}\n  \
             labels: {{kubernetes.io/service-name: nginx}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\n\
             ports: [{{name: https, port: {https}}}]\n",
            served_documents(&e2e("nginx.yaml"))
        ),
    );
    // Without a policy kgw speaks plain HTTP to nginx's TLS port: nginx answers 400.
    let (status, _) = gw.curl("example.com", "/");
    assert_eq!(status, 400, "plain HTTP to a TLS port");

    // simple-tls.yaml: the Secret's ca.crt verifies nginx; simpleTLS sends no client certificate.
    apply(&gw, &served_documents(&e2e("simple-tls.yaml")));
    let ts = transport_socket(&gw);
    assert!(
        ts["common_tls_context"]["validation_context"]["trusted_ca"]["inline_string"]
            .as_str()
            .is_some_and(|ca| ca.contains("BEGIN CERTIFICATE")),
        "{ts}"
    );
    assert!(
        ts["common_tls_context"]["tls_certificates"].is_null(),
        "simpleTLS: {ts}"
    );
    let (status, body) = wait_for("200 over TLS", Duration::from_secs(10), || {
        let (status, body) = gw.curl("example.com", "/");
        (status == 200).then_some((status, body))
    });
    assert_eq!(status, 200);
    assert!(body.starts_with("nginx over TLS: TLSv1."), "{body}");
    for _ in 0..4 {
        assert_eq!(gw.curl("example.com", "/").0, 200);
    }
    assert_eq!(
        gw.stat(&format!("cluster.{CLUSTER}.ssl.handshake")),
        Some(1),
        "five requests, one pooled connection, one handshake"
    );
    let out = gw.kgw(
        &["delete", "backendconfigpolicy", "backend-tls-policy", "-n", NS],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // tls-insecure.yaml: nothing verified.
    apply(&gw, &served_documents(&e2e("tls-insecure.yaml")));
    let ts = transport_socket(&gw);
    assert_eq!(
        ts["common_tls_context"]["validation_context"],
        serde_json::json!({}),
        "{ts}"
    );
    wait_for("200 with insecureSkipVerify", Duration::from_secs(10), || {
        (gw.curl("example.com", "/").0 == 200).then_some(())
    });
    let out = gw.kgw(
        &["delete", "backendconfigpolicy", "backend-tls-policy", "-n", NS],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // system-ca.yaml: the system's CAs do not vouch for nginx's self-signed certificate, so the
    // handshake fails: 503 with UF, as Envoy answers it, and the failure is counted.
    apply(&gw, &served_documents(&e2e("system-ca.yaml")));
    let ts = transport_socket(&gw);
    assert_eq!(
        ts["common_tls_context"]["combined_validation_context"]["validation_context_sds_secret_config"]["name"],
        "SYSTEM_CA_CERT",
        "{ts}"
    );
    let body = wait_for("503 from an untrusted server", Duration::from_secs(10), || {
        let (status, body) = gw.curl("example.com", "/");
        (status == 503).then_some(body)
    });
    assert!(body.contains("upstream connect error"), "{body}");
    assert!(
        gw.stat(&format!("cluster.{CLUSTER}.ssl.fail_verify_error"))
            .unwrap_or(0)
            >= 1
    );
}
