//! Client certificate validation on HTTPS listeners (Gateway API `spec.tls.frontend`) through
//! the real kgw, with curl and openssl as clients: the default validation (AllowValidOnly)
//! takes a client certificate from the ConfigMap's CA and refuses another CA's or none; a
//! perPort AllowInsecureFallback takes all three. The dump says it as Envoy does
//! (`require_client_certificate`, `validation_context`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pki::{CertFiles, Pki, ca_config_map_yaml, secret_yaml};
use common::*;

const NS: &str = "mtls";

fn manifests(strict_port: u16, fallback_port: u16, backend: u16) -> String {
    let listener = |name: &str, port: u16| {
        format!(
            "  - name: {name}\n    port: {port}\n    protocol: HTTPS\n    tls:\n      certificateRefs:\n      - name: server\n"
        )
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {NS}\nspec:\n  \
         gatewayClassName: kgateway\n  tls:\n    frontend:\n      default:\n        validation:\n          caCertificateRefs:\n          \
         - {{kind: ConfigMap, group: \"\", name: client-ca}}\n      perPort:\n      - port: {fallback_port}\n        tls:\n          \
         validation:\n            mode: AllowInsecureFallback\n            caCertificateRefs:\n            \
         - {{kind: ConfigMap, group: \"\", name: client-ca}}\n  listeners:\n{}{}---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: {NS}\nspec:\n  ports:\n  - port: 80\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-1\n  namespace: {NS}\n  labels:\n    \
         kubernetes.io/service-name: echo\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {backend}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: echo\n  namespace: {NS}\nspec:\n  \
         parentRefs:\n  - name: gw\n  rules:\n  - backendRefs:\n    - name: echo\n      port: 80\n",
        listener("strict", strict_port),
        listener("fallback", fallback_port),
    )
}

/// `curl https://example.org:PORT/headers` with an optional client certificate: the status,
/// 0 when the handshake failed.
fn curl(ca: &Path, port: u16, client: Option<&CertFiles>) -> u16 {
    let client_args = client.map(|c| {
        [
            "--cert",
            c.cert.to_str().unwrap(),
            "--key",
            c.key.to_str().unwrap(),
        ]
    });
    curl_https(
        ca,
        "example.org",
        port,
        "/headers",
        client_args.as_ref().map_or(&[], |a| a),
    )
    .0
}

/// Does the server ask for a client certificate (a CertificateRequest in the handshake)?
fn asks_for_a_certificate(ca: &Path, port: u16) -> bool {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "example.org",
            "-CAfile",
        ])
        .arg(ca)
        .args(["-msg"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    String::from_utf8_lossy(&out.stdout).contains("CertificateRequest")
}

#[test]
fn client_certificates_are_required_or_let_through_as_the_gateway_says() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let other = Pki::new(&dir.path().join("other-pki"));
    let server = pki.leaf("server", &["example.org"]);
    let trusted = pki.leaf("trusted-client", &["client.example.org"]);
    let untrusted = other.leaf("untrusted-client", &["client.example.org"]);
    let backend_port = free_port();
    let _backend = sample_backend_on(backend_port, dir.path().join("backend.log"));
    let (strict, fallback) = (free_port(), free_port());
    let gw = GatewayBuilder::run(dir.path(), free_port()).start();
    let yaml = [
        secret_yaml(NS, "server", &server, None),
        ca_config_map_yaml(NS, "client-ca", &pki.ca.cert),
        manifests(strict, fallback, backend_port),
    ]
    .join("---\n");
    gw.apply(&yaml);
    let ca = pki.ca.cert.clone();
    wait_for("the HTTPS listeners", Duration::from_secs(15), || {
        (curl(&ca, strict, Some(&trusted)) == 200 && curl(&ca, fallback, None) == 200).then_some(())
    });

    // AllowValidOnly: only a certificate from the ConfigMap's CA.
    assert_eq!(curl(&ca, strict, Some(&trusted)), 200);
    assert_eq!(curl(&ca, strict, Some(&untrusted)), 0);
    assert_eq!(curl(&ca, strict, None), 0);
    // AllowInsecureFallback: asked for, and let through whatever comes.
    assert_eq!(curl(&ca, fallback, Some(&trusted)), 200);
    assert_eq!(curl(&ca, fallback, Some(&untrusted)), 200);
    assert_eq!(curl(&ca, fallback, None), 200);
    assert!(asks_for_a_certificate(&ca, strict));
    assert!(asks_for_a_certificate(&ca, fallback));
    // Envoy's counters of the refusals (the wait above may have seen more than these).
    let stat = |port: u16, name: &str| gw.stat(&format!("listener.[__]_{port}.ssl.{name}")).unwrap_or(0);
    assert!(stat(strict, "fail_verify_no_cert") >= 1);
    assert!(stat(strict, "fail_verify_error") >= 1);
    assert_eq!(stat(fallback, "fail_verify_no_cert"), 0);
    assert_eq!(stat(fallback, "fail_verify_error"), 0);
    assert!(stat(fallback, "no_certificate") >= 1);

    // The Gateway says the fallback is on.
    let out = gw.kgw(&["get", "gateway", "gw", "-n", NS, "-o", "json"], "");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kgw get gateway -o json");
    let insecure = status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "InsecureFrontendValidationMode")
        .unwrap_or_else(|| panic!("no InsecureFrontendValidationMode: {status}"));
    assert_eq!(insecure["status"], "True");
    assert_eq!(insecure["reason"], "ConfigurationChanged");

    // The dump: Envoy's fields on each filter chain's DownstreamTlsContext.
    let dump = gw.dump("GET", "?resource=dynamic_listeners");
    let context = |port: u16| {
        dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == format!("listener~{port}"))
            .unwrap_or_else(|| panic!("listener~{port}: {dump}"))["active_state"]["listener"]["filter_chains"]
            [0]["transport_socket"]["typed_config"]
            .clone()
    };
    let strict_context = context(strict);
    assert_eq!(strict_context["require_client_certificate"], true);
    let validation = &strict_context["common_tls_context"]["validation_context"];
    assert!(
        validation["trusted_ca"]["inline_string"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(validation.get("trust_chain_verification").is_none());
    let fallback_context = context(fallback);
    assert!(fallback_context.get("require_client_certificate").is_none());
    assert_eq!(
        fallback_context["common_tls_context"]["validation_context"]["trust_chain_verification"],
        "ACCEPT_UNTRUSTED"
    );
}
