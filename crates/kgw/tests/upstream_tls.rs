//! Upstream TLS with kgw: a BackendConfigPolicy's `tls` in front of nginx serving TLS with a
//! certificate from a test CA (made with the openssl CLI), asking for a client certificate
//! (`ssl_verify_client optional`) and answering with what the handshake told it: the SNI, the
//! client certificate's verification and subject, the protocol version and its connection
//! serial number (one serial for many requests: one upstream connection, one handshake).

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::{CertFiles, Pki, secret_yaml};
use common::*;

const NS: &str = "tls-test";
const SERVICE: &str = "secure";
const CLUSTER: &str = "kube_tls-test_secure_80";

/// nginx on 127.0.0.1:`port` serving TLS with `server`, asking clients for a certificate
/// signed by `client_ca` (optional), answering
/// `<sni>|<client verify>|<client subject>|<protocol>|<connection serial>`.
fn nginx_tls(dir: &Path, port: u16, server: &CertFiles, client_ca: &Path) -> Proc {
    common::nginx::start(
        dir,
        &format!("nginx-{port}"),
        port,
        "",
        &format!(
            "server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    \
             ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_client_certificate {ca};\n    ssl_verify_client optional;\n    \
             location / {{ return 200 \"$ssl_server_name|$ssl_client_verify|$ssl_client_s_dn|$ssl_protocol|$connection\\n\"; }}\n  }}",
            cert = server.cert.display(),
            key = server.key.display(),
            ca = client_ca.display(),
        ),
    )
}

/// The BackendConfigPolicy with `tls` (YAML lines under `tls:`, indented by 4) and TCP
/// keepalive, targeting the Service.
fn policy(tls: &str) -> String {
    format!(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: backend-tls\n  \
         namespace: {NS}\nspec:\n  targetRefs:\n  - name: {SERVICE}\n    group: \"\"\n    kind: Service\n  \
         tcpKeepalive:\n    keepAliveProbes: 4\n    keepAliveTime: 40s\n    keepAliveInterval: 7s\n  tls:\n{tls}"
    )
}

fn apply(gw: &Gateway, yaml: &str) {
    let out = gw.kgw(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A gateway routing everything to the Service whose endpoint is 127.0.0.1:`backend`, with
/// `extra` (Secrets, the policy) applied; returns once the dump shows the cluster's TLS.
fn gateway(dir: &Path, backend: u16, extra: &str, env: &[(&str, &str)]) -> Gateway {
    let mut builder = GatewayBuilder::run(dir, free_port());
    builder.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let gw = builder.start();
    apply(
        &gw,
        &format!("{}---\n{extra}", route_all_to(NS, SERVICE, gw.port, backend)),
    );
    wait_for("the cluster's TLS in the dump", Duration::from_secs(10), || {
        gw.cluster(CLUSTER)
            .filter(|c| c["transport_socket"]["name"] == "envoy.transport_sockets.tls")
            .map(|_| ())
    });
    gw
}

fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.stat(&format!("cluster.{CLUSTER}.{name}")).unwrap_or(0)
}

/// The answer's fields: sni, client verify, client subject, protocol, connection serial.
fn fields(body: &str) -> Vec<String> {
    body.trim().split('|').map(str::to_string).collect()
}

/// The first request through a new policy: routes settle in a moment after the apply.
fn first_answer(gw: &Gateway, status: u16) -> String {
    let mut last = (0, String::new());
    let found = wait_for_or_none(Duration::from_secs(10), || {
        last = gw.curl("example.com", "/");
        (last.0 == status).then(|| last.1.clone())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no {status} within 10 s; last answer {last:?}; kgw's log:\n{}",
            gw.proc.log_text()
        )
    })
}

/// Polls `check` until it gives a value or `limit` passes.
fn wait_for_or_none<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) for a line of kgw's log holding every one of `needles`.
fn log_line(gw: &Gateway, needles: &[&str]) -> String {
    wait_for("the log line", Duration::from_secs(5), || {
        gw.proc
            .log_text()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    })
}

struct Setup {
    dir: tempfile::TempDir,
    pki: Pki,
    backend: u16,
    _nginx: Proc,
}

/// A CA, nginx with its certificate for backend.example.com, and a Secret `client-tls` holding
/// a client certificate the CA signed and the CA as ca.crt.
fn setup(tag: &str) -> (Setup, String) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join(format!("pki-{tag}")));
    let server = pki.leaf("backend", &["backend.example.com"]);
    let client = pki.leaf("gateway-client", &["gateway.example.com"]);
    let backend = free_port();
    let nginx = nginx_tls(dir.path(), backend, &server, &pki.ca.cert);
    let secret = secret_yaml(NS, "client-tls", &client, Some(&pki.ca.cert));
    (
        Setup {
            dir,
            pki,
            backend,
            _nginx: nginx,
        },
        secret,
    )
}

#[test]
fn a_verified_backend_gets_the_sni_and_client_certificate_and_one_handshake_serves_many_requests() {
    let (s, secret) = setup("verified");
    let tls = "    secretRef:\n      name: client-tls\n    sni: backend.example.com\n    \
               verifySubjectAltNames: [backend.example.com]\n";
    let gw = gateway(
        s.dir.path(),
        s.backend,
        &format!("{secret}---\n{}", policy(tls)),
        &[],
    );
    let first = fields(&first_answer(&gw, 200));
    assert_eq!(
        first[..4],
        [
            "backend.example.com",
            "SUCCESS",
            "CN=gateway-client",
            // Envoy's client default: TLS 1.2 at most.
            "TLSv1.2"
        ]
    );
    for _ in 0..9 {
        let (status, body) = gw.curl("example.com", "/");
        assert_eq!(status, 200, "{body}");
        assert_eq!(fields(&body)[4], first[4], "the same upstream connection");
    }
    assert_eq!(stat(&gw, "ssl.handshake"), 1);
    assert_eq!(stat(&gw, "ssl.connection_error"), 0);
    assert_eq!(stat(&gw, "upstream_rq_2xx"), 10);

    // The dump shows the client certificate, and its key as Envoy's admin shows one.
    let dump = serde_json::to_string(&gw.dump("POST", "?include_eds")).unwrap();
    let cluster = gw.cluster(CLUSTER).unwrap();
    let certificate =
        &cluster["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"][0];
    assert!(
        certificate["certificate_chain"]["inline_string"]
            .as_str()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE")),
        "{certificate}"
    );
    assert_eq!(
        certificate["private_key"],
        serde_json::json!({"inline_string": "[redacted]"})
    );
    assert!(
        !dump.contains("PRIVATE KEY"),
        "no private key anywhere in the dump"
    );

    // The policy's keepalive is on the TLS connection's socket, read from the kernel.
    let sockets = upstream_keepalive(gw.pid(), s.backend);
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let k = &sockets[0];
    assert!(k.enabled);
    assert_eq!((k.idle_secs, k.interval_secs, k.probes), (40, 7, 4));

    // maxVersion 1.3: new settings, a new connection (the pooled one closes), TLS 1.3.
    let tls13 = format!("{tls}    parameters:\n      maxVersion: \"1.3\"\n");
    apply(&gw, &policy(&tls13));
    let answer = wait_for("TLS 1.3", Duration::from_secs(10), || {
        let (status, body) = gw.curl("example.com", "/");
        (status == 200 && body.contains("|TLSv1.3|")).then_some(body)
    });
    assert_ne!(fields(&answer)[4], first[4]);
    assert_eq!(stat(&gw, "ssl.handshake"), 2);
}

#[test]
fn a_certificate_without_the_wanted_san_is_a_503_uf_with_one_warn_line_and_its_counters() {
    let (s, secret) = setup("wrong-san");
    let tls = "    secretRef:\n      name: client-tls\n    sni: backend.example.com\n    \
               verifySubjectAltNames: [api.example.com, www.example.com]\n";
    let gw = gateway(
        s.dir.path(),
        s.backend,
        &format!("{secret}---\n{}", policy(tls)),
        &[],
    );
    // The client learns the category (as Envoy's CERTIFICATE_VERIFY_FAILED), the log the SANs.
    let body = first_answer(&gw, 503);
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, \
         transport failure reason: TLS handshake failed: certificate verify failed"
    );
    log_line(&gw, &["\" 503 UF ", CLUSTER]);
    let warn = log_line(&gw, &["WARN", "upstream TLS handshake failed"]);
    assert!(warn.contains(CLUSTER), "{warn}");
    assert!(warn.contains(&format!("127.0.0.1:{}", s.backend)), "{warn}");
    assert!(
        warn.contains("certificate SAN does not match any of [api.example.com, www.example.com] (the certificate has [backend.example.com])"),
        "{warn}"
    );
    // Envoy counts a verification failure there, not in connection_error.
    assert_eq!(stat(&gw, "ssl.fail_verify_san"), 1);
    assert_eq!(stat(&gw, "ssl.connection_error"), 0);
    assert_eq!(stat(&gw, "ssl.fail_verify_error"), 0);
    assert_eq!(stat(&gw, "ssl.handshake"), 0);
    assert_eq!(stat(&gw, "upstream_cx_connect_fail"), 1);

    // Without a SAN list, Envoy checks no name (not even the SNI): the chain alone decides.
    let tls = "    secretRef:\n      name: client-tls\n    sni: not-the-backend.example.org\n";
    apply(&gw, &policy(tls));
    let answer = fields(&first_answer(&gw, 200));
    assert_eq!(answer[0], "not-the-backend.example.org");
}

#[test]
fn insecure_skip_verify_accepts_a_self_signed_backend_the_ca_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let stranger = pki.self_signed("stranger", &["stranger.example.com"]);
    let backend = free_port();
    let _nginx = nginx_tls(dir.path(), backend, &stranger, &pki.ca.cert);
    let gw = gateway(
        dir.path(),
        backend,
        &policy("    insecureSkipVerify: true\n"),
        &[],
    );
    let answer = fields(&first_answer(&gw, 200));
    // No SNI without `sni`, and no client certificate with insecureSkipVerify (as kgateway).
    assert_eq!(answer[..2], ["", "NONE"]);
    assert_eq!(stat(&gw, "ssl.handshake"), 1);

    // The test CA as trust anchor: the self-signed certificate (a CA certificate, as openssl
    // makes them) is refused.
    let client = pki.leaf("gateway-client", &["gateway.example.com"]);
    apply(
        &gw,
        &format!(
            "{}---\n{}",
            secret_yaml(NS, "client-tls", &client, Some(&pki.ca.cert)),
            policy("    secretRef:\n      name: client-tls\n")
        ),
    );
    let body = first_answer(&gw, 503);
    assert!(
        body.ends_with("TLS handshake failed: certificate verify failed"),
        "{body}"
    );
    log_line(
        &gw,
        &["WARN", "upstream TLS handshake failed", "is a CA certificate"],
    );
    assert_eq!(stat(&gw, "ssl.fail_verify_error"), 1);
}

#[test]
fn well_known_system_cas_are_the_processs_trust_store() {
    let (s, _) = setup("system");
    // rustls-native-certs reads SSL_CERT_FILE: the test CA is the "system" store here.
    let ca = s.pki.ca.cert.to_string_lossy().into_owned();
    let gw = gateway(
        s.dir.path(),
        s.backend,
        &policy("    wellKnownCACertificates: System\n    sni: backend.example.com\n"),
        &[("SSL_CERT_FILE", &ca)],
    );
    let answer = fields(&first_answer(&gw, 200));
    assert_eq!(answer[..2], ["backend.example.com", "NONE"]);
    assert_eq!(stat(&gw, "ssl.handshake"), 1);
}

/// What translation lets through (api's tables) the data plane can do: one table must not
/// drift from the other.
#[test]
fn every_parameter_the_api_admits_the_data_plane_supports() {
    use api::tls_material::{CIPHER_SUITES, ECDH_CURVES, SIGNATURE_ALGORITHMS};
    use proxy::upstream_tls::{TlsParameterKind, unsupported_parameter};
    for (openssl, iana) in CIPHER_SUITES {
        assert_eq!(
            unsupported_parameter(TlsParameterKind::CipherSuite, openssl),
            None
        );
        assert_eq!(unsupported_parameter(TlsParameterKind::CipherSuite, iana), None);
    }
    for curve in ECDH_CURVES {
        assert_eq!(unsupported_parameter(TlsParameterKind::EcdhCurve, curve), None);
    }
    for algorithm in SIGNATURE_ALGORITHMS {
        assert_eq!(
            unsupported_parameter(TlsParameterKind::SignatureAlgorithm, algorithm),
            None
        );
    }
}

#[test]
fn health_checks_go_through_the_clusters_tls() {
    let (s, secret) = setup("health");
    // Spec keys after the tls lines (the policy's last field) belong to the spec.
    let tls = "    secretRef:\n      name: client-tls\n    sni: backend.example.com\n  \
               healthCheck:\n    http: {path: /health}\n    interval: 1s\n    timeout: 1s\n    \
               healthyThreshold: 1\n    unhealthyThreshold: 1\n";
    let gw = gateway(
        s.dir.path(),
        s.backend,
        &format!("{secret}---\n{}", policy(tls)),
        &[],
    );
    // Plain HTTP to nginx's TLS port would be answered 400 and fail the check.
    wait_for("a passing health check", Duration::from_secs(10), || {
        (stat(&gw, "health_check.success") >= 1).then_some(())
    });
    assert_eq!(stat(&gw, "health_check.failure"), 0);
    assert!(stat(&gw, "ssl.handshake") >= 1);
    assert_eq!(
        first_answer(&gw, 200).split('|').next(),
        Some("backend.example.com")
    );
}

/// A BackendTLSPolicy on the Service, the CA from a ConfigMap.
fn backend_tls_policy(hostname: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata:\n  name: btp\n  namespace: {NS}\n\
         spec:\n  targetRefs: [{{group: \"\", kind: Service, name: {SERVICE}}}]\n  validation:\n    \
         hostname: {hostname}\n    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: backend-ca}}]\n"
    )
}

#[test]
fn a_backend_tls_policy_sends_its_hostname_as_sni_and_checks_it_as_san() {
    let (s, _) = setup("btp");
    let ca = common::pki::ca_config_map_yaml(NS, "backend-ca", &s.pki.ca.cert);
    let gw = gateway(
        s.dir.path(),
        s.backend,
        &format!("{ca}---\n{}", backend_tls_policy("backend.example.com")),
        &[],
    );
    let answer = fields(&first_answer(&gw, 200));
    assert_eq!(answer[..2], ["backend.example.com", "NONE"]);

    apply(&gw, &backend_tls_policy("api.example.com"));
    first_answer(&gw, 503);
    log_line(
        &gw,
        &["WARN", "certificate SAN does not match any of [api.example.com]"],
    );
    assert_eq!(stat(&gw, "ssl.fail_verify_san"), 1);
}
