//! HTTPS listeners (Gateway API `protocol: HTTPS`, `tls.mode: Terminate`, `certificateRefs` to
//! `kubernetes.io/tls` Secrets) and kgateway's ListenerPolicy on the accepted sockets, through
//! the real kgw: curl and a rustls client over TLS, certificates made by the openssl CLI, a TLS
//! scanner from the Debian archive (sslscan), the gateway's accepted socket read from outside.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::pki::Pki;
use common::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

const NS: &str = "web";

/// A certificate and its key, PEM.
#[derive(Clone)]
struct Pem {
    cert: String,
    key: String,
}

/// The shared test PKI (common/pki.rs), with what these tests need of it.
trait ListenerPki {
    fn ca_path(&self) -> PathBuf;
    /// A new certificate for `host` (its own key and serial each time), signed by the CA.
    fn issue(&self, host: &str, file: &str) -> Pem;
    /// A rustls client that trusts the CA only (names are checked).
    fn client(&self) -> Arc<rustls::ClientConfig>;
}

impl ListenerPki for Pki {
    fn ca_path(&self) -> PathBuf {
        self.ca.cert.clone()
    }

    fn issue(&self, host: &str, file: &str) -> Pem {
        let files = self.leaf(file, &[host]);
        Pem {
            cert: files.cert_pem(),
            key: files.key_pem(),
        }
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca_path()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

fn base64(text: &str) -> String {
    let mut child = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("base64 (coreutils)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

fn tls_secret(namespace: &str, name: &str, pem: &Pem) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: kubernetes.io/tls\ndata:\n  \
         tls.crt: {}\n  tls.key: {}\n",
        base64(&pem.cert),
        base64(&pem.key)
    )
}

/// One HTTPS listener of Gateway `gw`.
struct Https<'a> {
    name: &'a str,
    port: u16,
    hostname: Option<&'a str>,
    /// (namespace, Secret name); namespace None: the Gateway's.
    secret: (Option<&'a str>, &'a str),
}

/// Gateway `gw` in NS with an HTTP listener on `http_port` and `https` listeners, one
/// HTTPRoute for all of them to Service `echo` (the sample backend on `backend`).
fn gateway(http_port: u16, https: &[Https<'_>], backend: u16) -> String {
    let mut listeners = format!("  - name: http\n    protocol: HTTP\n    port: {http_port}\n");
    for l in https {
        listeners += &format!(
            "  - name: {}\n    protocol: HTTPS\n    port: {}\n",
            l.name, l.port
        );
        if let Some(h) = l.hostname {
            listeners += &format!("    hostname: {h}\n");
        }
        listeners += "    tls:\n      mode: Terminate\n      certificateRefs:\n      - kind: Secret\n        group: \"\"\n";
        listeners += &format!("        name: {}\n", l.secret.1);
        if let Some(ns) = l.secret.0 {
            listeners += &format!("        namespace: {ns}\n");
        }
    }
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {NS}\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n{listeners}---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: {NS}\nspec:\n  ports:\n  - port: 80\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-1\n  namespace: {NS}\n  labels:\n    \
         kubernetes.io/service-name: echo\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {backend}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: echo\n  namespace: {NS}\nspec:\n  \
         parentRefs:\n  - name: gw\n  rules:\n  - backendRefs:\n    - name: echo\n      port: 80\n"
    )
}

type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to 127.0.0.1:`port` with SNI `host`, the handshake done; Err when refused.
fn connect(pki: &Pki, host: &str, port: u16) -> Result<Client, std::io::Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from(host.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(pki.client(), name).unwrap();
    let mut client = rustls::StreamOwned::new(conn, tcp);
    while client.conn.is_handshaking() {
        client.conn.complete_io(&mut client.sock)?;
    }
    Ok(client)
}

fn leaf(client: &Client) -> Vec<u8> {
    client.conn.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &Pem) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.cert.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// One keep-alive request on an open connection: the status.
fn get(client: &mut Client, host: &str, path: &str) -> u16 {
    write!(client, "GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n").unwrap();
    client.flush().unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).expect("the response");
        assert!(n > 0, "closed after: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse().ok())
            .expect("a content-length");
        if body.len() >= length {
            return head.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
}

/// A Gateway listener's condition of `kind` (status, reason, message).
fn listener_condition(gw: &Gateway, listener: &str, kind: &str) -> Option<(String, String, String)> {
    let out = gw.kgw(&["get", "gateway", "gw", "-n", NS, "-o", "json"], "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let l = v["status"]["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == listener)?
        .clone();
    let c = l["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?
        .clone();
    let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
    Some((text("status"), text("reason"), text("message")))
}

struct Setup {
    gw: Gateway,
    pki: Pki,
    https_port: u16,
    _backend: Proc,
}

/// kgw with the sample backend behind Gateway `gw`: HTTPS listeners `www` and `api` on one
/// port, each with its own Secret, and an HTTP listener; returns once both names are served.
fn setup(dir: &Path) -> (Setup, Pem, Pem) {
    let pki = Pki::new(&dir.join("pki"));
    let www = pki.issue("www.example.com", "www");
    let api = pki.issue("api.example.com", "api");
    let backend_port = free_port();
    let backend = sample_backend_on(backend_port, dir.join("backend.log"));
    let http_port = free_port();
    let https_port = free_port();
    let gw = GatewayBuilder::run(dir, http_port).start();
    let yaml = [
        tls_secret(NS, "www-cert", &www),
        tls_secret(NS, "api-cert", &api),
        gateway(
            http_port,
            &[
                Https {
                    name: "www",
                    port: https_port,
                    hostname: Some("www.example.com"),
                    secret: (None, "www-cert"),
                },
                Https {
                    name: "api",
                    port: https_port,
                    hostname: Some("api.example.com"),
                    secret: (None, "api-cert"),
                },
            ],
            backend_port,
        ),
    ]
    .join("---\n");
    gw.apply(&yaml);
    let ca = pki.ca_path();
    for host in ["www.example.com", "api.example.com"] {
        wait_for(&format!("https://{host}"), Duration::from_secs(15), || {
            (curl_https(&ca, host, https_port, "/get", &[]).0 == 200).then_some(())
        });
    }
    (
        Setup {
            gw,
            pki,
            https_port,
            _backend: backend,
        },
        www,
        api,
    )
}

#[test]
fn https_with_curl_two_hostnames_by_sni_and_envoys_ssl_stats() {
    let dir = tempfile::tempdir().unwrap();
    let (s, www, api) = setup(dir.path());
    let ca = s.pki.ca_path();

    // curl verifies the chain and the name; the upstream is told the request came over TLS.
    let (status, body) = curl_https(&ca, "www.example.com", s.https_port, "/headers", &[]);
    assert_eq!(status, 200, "{body}");
    let headers: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(headers["headers"]["X-Forwarded-Proto"], "https", "{body}");

    // Each name gets its own certificate on the one port.
    let client = connect(&s.pki, "www.example.com", s.https_port).unwrap();
    assert_eq!(leaf(&client), der(&www));
    let client = connect(&s.pki, "api.example.com", s.https_port).unwrap();
    assert_eq!(leaf(&client), der(&api));

    // A name no listener has: the handshake is refused, counted as Envoy counts it.
    let refused = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-k", "--resolve"])
        .arg(format!("other.example.com:{}:127.0.0.1", s.https_port))
        .arg(format!("https://other.example.com:{}/", s.https_port))
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{}", stdout(&refused));
    // Plain HTTP to the HTTPS port fails the handshake.
    assert_eq!(curl(s.https_port, "www.example.com", "/get").0, 0);

    let scope = format!("listener.[__]_{}", s.https_port);
    let stat = |name: &str| s.gw.stat(&format!("{scope}.{name}")).unwrap_or(0);
    assert!(stat("ssl.handshake") >= 4, "{}", stat("ssl.handshake"));
    assert_eq!(stat("ssl.handshake"), stat("ssl.no_certificate"));
    assert!(stat("ssl.versions.TLSv1.3") >= 4);
    assert_eq!(stat("no_filter_chain_match"), 1);
    assert_eq!(stat("ssl.connection_error"), 1);

    // Prometheus: Envoy's families, the address and the version as labels.
    let (_, prometheus) = http(s.gw.admin, "GET", "/stats/prometheus", "");
    let address = format!("envoy_listener_address=\"[__]_{}\"", s.https_port);
    assert!(
        prometheus.contains(&format!(
            "envoy_listener_ssl_handshake{{{address}}} {}",
            stat("ssl.handshake")
        )),
        "{prometheus}"
    );
    assert!(
        prometheus.contains(&format!(
            "envoy_listener_ssl_versions{{envoy_ssl_version=\"TLSv1.3\",{address}}}"
        )),
        "{prometheus}"
    );

    // The dump: one filter chain per Gateway listener, chosen by SNI, the key redacted.
    let dump = s.gw.dump("GET", "?resource=dynamic_listeners");
    let listeners = dump["configs"].as_array().unwrap();
    let https = listeners
        .iter()
        .map(|c| &c["active_state"]["listener"])
        .find(|l| l["name"] == format!("listener~{}", s.https_port))
        .unwrap();
    assert_eq!(
        https["listener_filters"][0]["name"],
        "envoy.filters.listener.tls_inspector"
    );
    let chains = https["filter_chains"].as_array().unwrap();
    let names: Vec<&str> = chains.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!dump.to_string().contains("PRIVATE KEY"));
}

#[test]
fn a_rotated_secret_reaches_the_next_handshake_and_an_open_connection_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let (s, www, _) = setup(dir.path());
    let mut open = connect(&s.pki, "www.example.com", s.https_port).unwrap();
    assert_eq!(leaf(&open), der(&www));
    assert_eq!(get(&mut open, "www.example.com", "/get"), 200);
    let socket = open.sock.local_addr().unwrap();

    let rotated = s.pki.issue("www.example.com", "www-2");
    s.gw.apply(&tls_secret(NS, "www-cert", &rotated));
    wait_for("the rotated certificate", Duration::from_secs(15), || {
        let client = connect(&s.pki, "www.example.com", s.https_port).ok()?;
        (leaf(&client) == der(&rotated)).then_some(())
    });
    // The connection opened before goes on: same socket, next request answered.
    assert_eq!(get(&mut open, "www.example.com", "/get"), 200);
    assert_eq!(open.sock.local_addr().unwrap(), socket);
    assert_eq!(leaf(&open), der(&www));
}

#[test]
fn a_missing_or_not_permitted_secret_leaves_its_listener_unprogrammed_and_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let www = pki.issue("www.example.com", "www");
    let shared = pki.issue("shared.example.com", "shared");
    let expired = pki.expired("old.example.com", &["old.example.com"]);
    let expired = Pem {
        cert: expired.cert_pem(),
        key: expired.key_pem(),
    };
    let backend_port = free_port();
    let _backend = sample_backend_on(backend_port, dir.path().join("backend.log"));
    let (http_port, https_port) = (free_port(), free_port());
    let gw = GatewayBuilder::run(dir.path(), http_port).start();
    let yaml = [
        tls_secret(NS, "www-cert", &www),
        tls_secret("certs", "shared-cert", &shared),
        tls_secret(NS, "old-cert", &expired),
        gateway(
            http_port,
            &[
                Https {
                    name: "www",
                    port: https_port,
                    hostname: Some("www.example.com"),
                    secret: (None, "www-cert"),
                },
                Https {
                    name: "missing",
                    port: https_port,
                    hostname: Some("missing.example.com"),
                    secret: (None, "no-such-secret"),
                },
                Https {
                    name: "shared",
                    port: https_port,
                    hostname: Some("shared.example.com"),
                    secret: (Some("certs"), "shared-cert"),
                },
                Https {
                    name: "expired",
                    port: https_port,
                    hostname: Some("old.example.com"),
                    secret: (None, "old-cert"),
                },
            ],
            backend_port,
        ),
    ]
    .join("---\n");
    gw.apply(&yaml);
    let ca = pki.ca_path();
    wait_for("https://www.example.com", Duration::from_secs(15), || {
        (curl_https(&ca, "www.example.com", https_port, "/get", &[]).0 == 200).then_some(())
    });
    assert_eq!(curl(http_port, "www.example.com", "/get").0, 200);

    let (status, reason, message) = listener_condition(&gw, "missing", "ResolvedRefs").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidCertificateRef"),
        "{message}"
    );
    assert!(message.contains("no-such-secret"), "{message}");
    let (status, _, _) = listener_condition(&gw, "missing", "Programmed").unwrap();
    assert_eq!(status, "False");
    let (status, reason, message) = listener_condition(&gw, "shared", "ResolvedRefs").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RefNotPermitted"),
        "{message}"
    );
    // An expired certificate is not served either, and the status says when it expired.
    let (status, reason, message) = listener_condition(&gw, "expired", "ResolvedRefs").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidCertificateRef"),
        "{message}"
    );
    assert!(message.contains("expired at 2021-01-01"), "{message}");
    assert!(connect(&pki, "old.example.com", https_port).is_err());
    let (status, _, _) = listener_condition(&gw, "www", "Programmed").unwrap();
    assert_eq!(status, "True");
    // Their names are not served: no certificate for them, no catch-all.
    assert!(connect(&pki, "missing.example.com", https_port).is_err());
    assert!(connect(&pki, "shared.example.com", https_port).is_err());

    // The ReferenceGrant lets the Gateway use the other namespace's Secret.
    gw.apply(&format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata:\n  name: gateways-in-web\n  \
             namespace: certs\nspec:\n  from:\n  - group: gateway.networking.k8s.io\n    kind: Gateway\n    namespace: {NS}\n  \
             to:\n  - group: \"\"\n    kind: Secret\n"
        ),
    );
    wait_for("https://shared.example.com", Duration::from_secs(15), || {
        (curl_https(&ca, "shared.example.com", https_port, "/get", &[]).0 == 200).then_some(())
    });
    let (status, _, _) = listener_condition(&gw, "shared", "ResolvedRefs").unwrap();
    assert_eq!(status, "True");
}

/// The downstream half of kgateway's "TCP keepalive" guide: its ListenerPolicy, with the
/// guide's values, and a buffer limit.
fn listener_policy() -> String {
    format!(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: ListenerPolicy\nmetadata:\n  name: listener-keepalive\n  \
         namespace: {NS}\nspec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: Gateway\n    name: gw\n  \
         default:\n    tcpKeepalive:\n      keepAliveProbes: 3\n      keepAliveTime: 20m\n      keepAliveInterval: 60s\n    \
         perConnectionBufferLimitBytes: 32768\n"
    )
}

#[test]
fn listener_policy_keepalive_is_on_the_accepted_client_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, _) = setup(dir.path());
    s.gw.apply(&listener_policy());
    let name = format!("listener~{}", s.https_port);
    let listener = wait_for("the policy in the dump", Duration::from_secs(15), || {
        let dump = s.gw.dump("GET", "?resource=dynamic_listeners");
        dump["configs"]
            .as_array()?
            .iter()
            .map(|c| c["active_state"]["listener"].clone())
            .find(|l| l["name"] == name.as_str() && !l["tcp_keepalive"].is_null())
    });
    assert_eq!(
        listener["tcp_keepalive"],
        serde_json::json!({"keepalive_probes": 3, "keepalive_time": 1200, "keepalive_interval": 60})
    );
    assert_eq!(listener["per_connection_buffer_limit_bytes"], 32768);

    // Accepted after the policy: the gateway's socket for this client has the guide's values,
    // on the HTTPS port and on the plain one.
    let mut client = connect(&s.pki, "www.example.com", s.https_port).unwrap();
    assert_eq!(get(&mut client, "www.example.com", "/get"), 200);
    let mut plain = TcpStream::connect(("127.0.0.1", s.gw.port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain
        .write_all(b"GET /get HTTP/1.1\r\nhost: www.example.com\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    plain.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    for (port, local) in [
        (s.https_port, client.sock.local_addr().unwrap().port()),
        (s.gw.port, plain.local_addr().unwrap().port()),
    ] {
        let sockets = upstream_keepalive(s.gw.pid(), local);
        assert_eq!(
            sockets.len(),
            1,
            "the gateway's socket for client port {local}: {sockets:?}"
        );
        let k = &sockets[0];
        assert_eq!(k.local_port, port);
        assert!(k.enabled, "{k:?}");
        assert_eq!((k.idle_secs, k.interval_secs, k.probes), (1200, 60, 3), "{k:?}");
    }
}

#[test]
fn sslscan_finds_tls_1_2_and_1_3_only_and_no_weak_suite() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, _) = setup(dir.path());
    let out = Command::new("sslscan")
        .args(["--no-colour", "--no-heartbleed", "--sni-name=www.example.com"])
        .arg(format!("127.0.0.1:{}", s.https_port))
        .output()
        .expect("sslscan is installed (apt install sslscan)");
    let report = stdout(&out);
    let protocol = |name: &str| {
        report
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_default()
    };
    for old in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        assert_eq!(protocol(old), "disabled", "{old}:\n{report}");
    }
    for current in ["TLSv1.2", "TLSv1.3"] {
        assert_eq!(protocol(current), "enabled", "{current}:\n{report}");
    }
    let accepted: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Accepted") || l.starts_with("Preferred"))
        .collect();
    assert!(!accepted.is_empty(), "{report}");
    for line in &accepted {
        let suite = line.split_whitespace().nth(4).unwrap_or("");
        let weak = ["NULL", "RC4", "DES", "MD5", "EXP", "ADH", "AECDH", "anon", "CBC"];
        assert!(
            !weak.iter().any(|w| suite.contains(w)) && (suite.contains("GCM") || suite.contains("CHACHA20")),
            "a weak suite: {line}\n{report}"
        );
        // Forward secrecy: ECDHE for TLS 1.2 (TLS 1.3 suites always have it).
        assert!(line.contains("TLSv1.3") || suite.starts_with("ECDHE"), "{line}");
    }
    assert!(!report.contains("Insecure session renegotiation"), "{report}");
}
