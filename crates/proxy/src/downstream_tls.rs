//! HTTPS ports: TLS termination for client connections. Each Gateway listener of a port (an
//! Envoy filter chain) has its own rustls `ServerConfig`: its certificate and, with Gateway
//! API's `spec.tls.frontend`, its client certificate validation. The handshake reads the
//! ClientHello first and takes the chain its SNI picks from the port's current set. A new
//! Snapshot swaps that set (arc-swap): the next handshake sees the new chains at once, and
//! connections already open keep theirs (no re-bind, nothing dropped). PEM is parsed and the
//! configurations made when the data plane takes the Snapshot (`DataPlane::update`), never per
//! handshake.
//!
//! Defaults: TLS 1.2 and 1.3 only, rustls's cipher suites (all AEAD with forward secrecy),
//! ALPN `h2` then `http/1.1` (`negotiated_http2`: such a connection goes to `h2_server.rs`).
//! A ClientHello that no certificate serves (its SNI names none and there is no
//! catch-all) is closed and counted in `no_filter_chain_match`, as Envoy closes a connection no
//! filter chain matched. Client certificates: AllowValidOnly requires one that chains to the
//! CAs (rustls's WebPkiClientVerifier); AllowInsecureFallback asks for one and takes whatever
//! comes, as Envoy's `trust_chain_verification: ACCEPT_UNTRUSTED`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{Acceptor, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CipherSuite, DistinguishedName, ProtocolVersion, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use snapshot::{ClientValidation, ListenerTls};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::stats::{Metric, MetricKind, Scope};

/// A port's filter chains, parsed.
pub(crate) struct Certificates {
    /// As the Snapshot gave them, to tell whether a new one changed them.
    source: ListenerTls,
    /// Those that parsed, in match order, and their configurations, index for index.
    tls: ListenerTls,
    configs: Vec<Arc<ServerConfig>>,
}

impl Certificates {
    /// Parses each certificate, key and CA bundle. A chain that does not parse (translation
    /// checks them, so this is an object that changed under it) is left out and logged; the
    /// others serve.
    pub(crate) fn parse(listener: &str, tls: &ListenerTls) -> Certificates {
        let provider = provider();
        let mut kept = ListenerTls {
            certificates: Vec::with_capacity(tls.certificates.len()),
        };
        let mut configs = Vec::with_capacity(tls.certificates.len());
        for c in &tls.certificates {
            let config = certified_key(&c.certificate_chain, &c.private_key, &provider)
                .and_then(|key| server_config(key, c.client_validation.as_ref()));
            match config {
                Ok(config) => {
                    kept.certificates.push(c.clone());
                    configs.push(Arc::new(config));
                }
                Err(e) => tracing::error!(
                    listener,
                    certificate = c.name,
                    "this Gateway listener is not served: {e}; fix the certificateRefs Secret (tls.crt, tls.key) or the \
                     caCertificateRefs ConfigMap (ca.crt)"
                ),
            }
        }
        Certificates {
            source: tls.clone(),
            tls: kept,
            configs,
        }
    }

    /// The configuration of the chain a ClientHello's SNI picks.
    fn select(&self, sni: Option<&str>) -> Option<&Arc<ServerConfig>> {
        let picked = self.tls.select(sni)?;
        let index = self
            .tls
            .certificates
            .iter()
            .position(|c| std::ptr::eq(c, picked))?;
        self.configs.get(index)
    }
}

/// One chain's TLS configuration: TLS 1.3 and 1.2, its certificate, ALPN h2 then http/1.1,
/// and client certificates as `validation` says.
fn server_config(key: CertifiedKey, validation: Option<&ClientValidation>) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let builder = match validation {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(client_verifier(v)?),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    // HTTP/2 first, as Envoy's HTTP connection manager offers them (a client that offers
    // neither gets no_application_protocol; one that offers no ALPN speaks HTTP/1.1).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn client_verifier(v: &ClientValidation) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(v.ca_bundle.as_bytes()) {
        let cert = cert.map_err(|e| format!("CA bundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("CA bundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("CA bundle: no PEM certificate".into());
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider()));
    if v.allow_insecure_fallback {
        let inner = builder
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("CA bundle: {e}"))?;
        Ok(Arc::new(InsecureFallback(inner)))
    } else {
        builder.build().map_err(|e| format!("CA bundle: {e}"))
    }
}

/// AllowInsecureFallback: asks for a client certificate and checks it, but lets the client
/// through whatever the answer (the proof of the key is still checked, as TLS requires).
#[derive(Debug)]
struct InsecureFallback(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for InsecureFallback {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(e) = self.0.verify_client_cert(end_entity, intermediates, now) {
            tracing::debug!("client certificate not valid, let through (AllowInsecureFallback): {e}");
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn certified_key(chain: &str, key: &str, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("certificate chain: no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("private key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| format!("private key: {e}"))
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The cipher suites rustls may negotiate, with Envoy's (OpenSSL's) names for the
/// `ssl.ciphers.<name>` counters.
const CIPHERS: [(CipherSuite, &str); 9] = [
    (CipherSuite::TLS13_AES_256_GCM_SHA384, "TLS_AES_256_GCM_SHA384"),
    (CipherSuite::TLS13_AES_128_GCM_SHA256, "TLS_AES_128_GCM_SHA256"),
    (
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_CHACHA20_POLY1305_SHA256",
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
];

/// Envoy's names for the `ssl.versions.<name>` counters.
const VERSIONS: [(ProtocolVersion, &str); 2] = [
    (ProtocolVersion::TLSv1_2, "TLSv1.2"),
    (ProtocolVersion::TLSv1_3, "TLSv1.3"),
];

/// Envoy's TLS counters of a listener (`listener.<address>.ssl.*`) and its
/// `no_filter_chain_match`.
#[derive(Debug, Default)]
pub(crate) struct SslStats {
    pub handshake: AtomicU64,
    pub connection_error: AtomicU64,
    /// Handshakes that resumed an earlier session.
    pub session_reused: AtomicU64,
    /// Handshakes done without a client certificate.
    pub no_certificate: AtomicU64,
    pub no_filter_chain_match: AtomicU64,
    /// Handshakes refused for want of a client certificate (AllowValidOnly).
    pub fail_verify_no_cert: AtomicU64,
    /// Handshakes refused because the client certificate does not chain to the CAs.
    pub fail_verify_error: AtomicU64,
    versions: [AtomicU64; VERSIONS.len()],
    ciphers: [AtomicU64; CIPHERS.len()],
}

impl SslStats {
    fn count_handshake(&self, connection: &rustls::ServerConnection) {
        let version = connection.protocol_version();
        let suite = connection.negotiated_cipher_suite().map(|s| s.suite());
        crate::stats::inc(&self.handshake);
        if connection.peer_certificates().is_none() {
            crate::stats::inc(&self.no_certificate);
        }
        if connection.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            crate::stats::inc(&self.session_reused);
        }
        if let Some(i) = VERSIONS.iter().position(|(v, _)| Some(*v) == version) {
            crate::stats::inc(&self.versions[i]);
        }
        if let Some(i) = CIPHERS.iter().position(|(s, _)| Some(*s) == suite) {
            crate::stats::inc(&self.ciphers[i]);
        }
    }

    /// The counters under `listener.<address>.` (`address` as Envoy writes it: `[__]_8443`);
    /// per version and cipher only those used, as Envoy creates them on first use.
    pub(crate) fn metrics(&self, address: &str, out: &mut Vec<Metric>) {
        let scope = |tag| Scope::Listener {
            address: address.to_string(),
            tag,
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let fixed = [
            ("ssl.handshake", "ssl_handshake", &self.handshake),
            (
                "ssl.connection_error",
                "ssl_connection_error",
                &self.connection_error,
            ),
            ("ssl.no_certificate", "ssl_no_certificate", &self.no_certificate),
            ("ssl.session_reused", "ssl_session_reused", &self.session_reused),
            (
                "ssl.fail_verify_no_cert",
                "ssl_fail_verify_no_cert",
                &self.fail_verify_no_cert,
            ),
            (
                "ssl.fail_verify_error",
                "ssl_fail_verify_error",
                &self.fail_verify_error,
            ),
            (
                "no_filter_chain_match",
                "no_filter_chain_match",
                &self.no_filter_chain_match,
            ),
        ];
        for (name, family, counter) in fixed {
            out.push(Metric {
                name: format!("listener.{address}.{name}"),
                kind: MetricKind::Counter,
                value: load(counter),
                family,
                scope: scope(None),
            });
        }
        let tagged = VERSIONS
            .iter()
            .zip(&self.versions)
            .map(|((_, name), c)| ("ssl.versions", "ssl_versions", "envoy_ssl_version", *name, c))
            .chain(
                CIPHERS
                    .iter()
                    .zip(&self.ciphers)
                    .map(|((_, name), c)| ("ssl.ciphers", "ssl_ciphers", "envoy_ssl_cipher", *name, c)),
            );
        for (prefix, family, label, value_name, counter) in tagged {
            let value = load(counter);
            if value == 0 {
                continue;
            }
            out.push(Metric {
                name: format!("listener.{address}.{prefix}.{value_name}"),
                kind: MetricKind::Counter,
                value,
                family,
                scope: scope(Some((label, value_name))),
            });
        }
    }
}

/// One bound HTTPS address: its filter chains and counters.
pub(crate) struct HttpsPort {
    current: ArcSwap<Certificates>,
    pub(crate) stats: Arc<SslStats>,
}

/// Why a handshake did not finish.
enum Failure {
    /// No filter chain for the ClientHello's SNI.
    NoChain,
    Tls(std::io::Error),
}

impl HttpsPort {
    /// `stats`: the address's counters, kept while it stays bound.
    pub(crate) fn new(certificates: Certificates, stats: Arc<SslStats>) -> Result<HttpsPort, String> {
        Ok(HttpsPort {
            current: ArcSwap::from_pointee(certificates),
            stats,
        })
    }

    /// Does the port serve these chains already (no need to parse them again)?
    pub(crate) fn serves(&self, tls: &ListenerTls) -> bool {
        self.current.load().source == *tls
    }

    /// From the next handshake on, `certificates` are served.
    pub(crate) fn replace(&self, certificates: Certificates) {
        self.current.store(Arc::new(certificates));
    }

    /// The TLS handshake on an accepted connection, within `timeout` (a client that never
    /// finishes it does not hold its task): the ClientHello, then the rest with the
    /// configuration of the chain its SNI picks. None when it failed, counted.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let handshake = async {
            let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
                .await
                .map_err(Failure::Tls)?;
            let config = self
                .current
                .load()
                .select(start.client_hello().server_name())
                .cloned();
            let config = config.ok_or(Failure::NoChain)?;
            start.into_stream(config).await.map_err(Failure::Tls)
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(tls)) => {
                self.stats.count_handshake(tls.get_ref().1);
                Some(tls)
            }
            Ok(Err(Failure::NoChain)) => {
                crate::stats::inc(&self.stats.no_filter_chain_match);
                tracing::debug!("TLS handshake: no filter chain for the ClientHello's SNI");
                None
            }
            Ok(Err(Failure::Tls(e))) => {
                crate::stats::inc(&self.stats.connection_error);
                // Client certificate refusals also count apart, as Envoy counts them.
                match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    Some(rustls::Error::NoCertificatesPresented) => {
                        crate::stats::inc(&self.stats.fail_verify_no_cert)
                    }
                    Some(rustls::Error::InvalidCertificate(_)) => {
                        crate::stats::inc(&self.stats.fail_verify_error)
                    }
                    _ => {}
                }
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                crate::stats::inc(&self.stats.connection_error);
                tracing::debug!("TLS handshake not finished within {timeout:?}");
                None
            }
        }
    }
}

/// Did the client's handshake pick HTTP/2 (ALPN `h2`)?
pub(crate) fn negotiated_http2(stream: &crate::downstream::ClientStream) -> bool {
    match stream {
        crate::downstream::ClientStream::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        crate::downstream::ClientStream::Tcp(_) => false,
    }
}

/// `address` as Envoy names a listener's stats scope (`[::]:8443` -> `[__]_8443`).
pub(crate) fn stats_address(address: &std::net::SocketAddr) -> String {
    address.to_string().replace(':', "_")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use snapshot::ServerCertificate;

    pub(crate) use crate::test_pki::self_signed;

    pub(crate) fn certificate(
        name: &str,
        server_names: &[&str],
        pem: &(String, String),
    ) -> ServerCertificate {
        ServerCertificate {
            name: name.into(),
            server_names: server_names.iter().map(|s| s.to_string()).collect(),
            certificate_chain: pem.0.clone(),
            private_key: pem.1.clone(),
            client_validation: None,
        }
    }

    /// The leaf certificate (DER) a handshake with `sni` is given, or None if refused.
    async fn served(port: &HttpsPort, sni: &str) -> Option<Vec<u8>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn({
            let sni = sni.to_string();
            async move {
                let connector = tokio_rustls::TlsConnector::from(client_config());
                let tcp = TcpStream::connect(address).await.unwrap();
                let name = rustls_pki_types::ServerName::try_from(sni).unwrap();
                let tls = connector.connect(name, tcp).await.ok()?;
                let leaf = tls.get_ref().1.peer_certificates()?.first()?.to_vec();
                Some(leaf)
            }
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = port.handshake(tcp, Duration::from_secs(5)).await;
        client.await.unwrap()
    }

    pub(crate) fn der(pem: &str) -> Vec<u8> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    /// A client that takes any server certificate (the tests look at which one it got).
    pub(crate) fn client_config() -> Arc<rustls::ClientConfig> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth();
        Arc::new(config)
    }

    #[derive(Debug)]
    struct AcceptAny;

    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &provider().signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &provider().signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            provider().signature_verification_algorithms.supported_schemes()
        }
    }

    #[tokio::test]
    async fn sni_picks_the_certificate_and_unknown_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let www = self_signed(dir.path(), &["www.example.com"]);
        let api = self_signed(dir.path(), &["api.example.com"]);
        let tls = ListenerTls {
            certificates: vec![
                certificate("www", &["www.example.com"], &www),
                certificate("api", &["api.example.com"], &api),
            ],
        };
        let port = HttpsPort::new(Certificates::parse("listener~443", &tls), Default::default()).unwrap();
        assert_eq!(served(&port, "www.example.com").await, Some(der(&www.0)));
        assert_eq!(served(&port, "API.example.com").await, Some(der(&api.0)));
        assert_eq!(served(&port, "other.example.com").await, None);
        assert_eq!(port.stats.handshake.load(Ordering::Relaxed), 2);
        assert_eq!(port.stats.no_filter_chain_match.load(Ordering::Relaxed), 1);
        assert_eq!(port.stats.connection_error.load(Ordering::Relaxed), 0);
        let mut metrics = Vec::new();
        port.stats.metrics("[__]_443", &mut metrics);
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert!(
            names.contains(&"listener.[__]_443.ssl.versions.TLSv1.3"),
            "{names:?}"
        );
        assert!(names.contains(&"listener.[__]_443.ssl.handshake"), "{names:?}");
    }

    #[tokio::test]
    async fn a_new_certificate_set_reaches_the_next_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let old = self_signed(dir.path(), &["www.example.com"]);
        let new_dir = tempfile::tempdir().unwrap();
        let new = self_signed(new_dir.path(), &["www.example.com"]);
        let with = |pem| ListenerTls {
            certificates: vec![certificate("https", &[], pem)],
        };
        let port = HttpsPort::new(Certificates::parse("l", &with(&old)), Default::default()).unwrap();
        assert_eq!(served(&port, "www.example.com").await, Some(der(&old.0)));
        assert!(port.serves(&with(&old)));
        assert!(!port.serves(&with(&new)));
        port.replace(Certificates::parse("l", &with(&new)));
        assert_eq!(served(&port, "www.example.com").await, Some(der(&new.0)));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(dir.path(), &["a.example.com"]);
        let b = self_signed(dir.path(), &["b.example.com"]);
        let tls = ListenerTls {
            certificates: vec![
                certificate("mismatched", &["a.example.com"], &(a.0.clone(), b.1.clone())),
                certificate("good", &[], &b),
            ],
        };
        let parsed = Certificates::parse("l", &tls);
        assert_eq!(parsed.configs.len(), 1);
        assert_eq!(parsed.tls.certificates[0].name, "good");
        // The SNI of the refused one falls to the catch-all.
        assert!(parsed.select(Some("a.example.com")).is_some());
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_the_handshake_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let pem = self_signed(dir.path(), &["www.example.com"]);
        let tls = ListenerTls {
            certificates: vec![certificate("https", &[], &pem)],
        };
        let port = HttpsPort::new(Certificates::parse("l", &tls), Default::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _silent = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let started = std::time::Instant::now();
        assert!(port.handshake(tcp, Duration::from_millis(200)).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(port.stats.connection_error.load(Ordering::Relaxed), 1);
    }
}
