//! Upstream TLS: how the connector wraps each connection to the cluster's endpoints (after the
//! PROXY protocol header, when there is one), and Envoy's `UpstreamTlsContext` for the dump.
//! From a BackendConfigPolicy's `tls`, or a BackendTLSPolicy, which replaces it.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent in the ClientHello; none: no SNI.
    pub sni: Option<String>,
    /// A client certificate for mutual TLS.
    pub client_certificate: Option<CertificateKey>,
    pub validation: ServerValidation,
    /// ALPN names offered, in order; empty: none offered.
    pub alpn_protocols: Vec<String>,
    pub parameters: TlsParameters,
}

/// PEM text, given inline (from a Secret or ConfigMap) or as a file the data plane reads when it
/// takes the snapshot (and again when the file changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    Inline(String),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateKey {
    pub certificate_chain: PemSource,
    pub private_key: PemSource,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerValidation {
    /// No trust anchor given: Envoy (and so kgateway) does not verify the server's certificate
    /// without a validation context. Rendered without one.
    None,
    /// `insecureSkipVerify`: rendered as an empty validation context, which verifies nothing.
    InsecureSkipVerify,
    /// Chains to these CAs, and (when the list is not empty) carries one of these SANs.
    TrustedCa {
        ca: PemSource,
        subject_alt_names: Vec<SanMatch>,
    },
    /// Chains to the system's trust store (`wellKnownCACertificates: System`).
    System { subject_alt_names: Vec<SanMatch> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanMatch {
    pub san_type: SanType,
    /// Compared exactly.
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    Dns,
    Uri,
}

/// Protocol versions and algorithms, by their Envoy (OpenSSL) names; empty lists mean the
/// defaults. Translation only lets through what the data plane's TLS library supports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsParameters {
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    pub cipher_suites: Vec<String>,
    pub ecdh_curves: Vec<String>,
    pub signature_algorithms: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    fn envoy_name(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "TLSv1_2",
            TlsVersion::V1_3 => "TLSv1_3",
        }
    }
}

/// The name Envoy gives the system trust store's SDS secret, as kgateway renders it.
pub const SYSTEM_CA_SECRET: &str = "SYSTEM_CA_CERT";

fn data_source(p: &PemSource) -> Value {
    match p {
        PemSource::Inline(text) => json!({ "inline_string": text }),
        PemSource::File(path) => json!({ "filename": path.to_string_lossy() }),
    }
}

fn san_matchers(sans: &[SanMatch]) -> Vec<Value> {
    sans.iter()
        .map(|s| {
            json!({
                "san_type": match s.san_type { SanType::Dns => "DNS", SanType::Uri => "URI" },
                "matcher": { "exact": s.value },
            })
        })
        .collect()
}

impl UpstreamTls {
    /// Envoy's `transport_socket` for this context.
    pub(crate) fn transport_socket(&self) -> Value {
        let mut common = Map::new();
        if let Some(c) = &self.client_certificate {
            common.insert(
                "tls_certificates".into(),
                json!([{
                    "certificate_chain": data_source(&c.certificate_chain),
                    "private_key": data_source(&c.private_key),
                }]),
            );
        }
        let p = &self.parameters;
        if *p != TlsParameters::default() {
            let mut params = Map::new();
            if let Some(v) = p.min_version {
                params.insert("tls_minimum_protocol_version".into(), v.envoy_name().into());
            }
            if let Some(v) = p.max_version {
                params.insert("tls_maximum_protocol_version".into(), v.envoy_name().into());
            }
            for (key, list) in [
                ("cipher_suites", &p.cipher_suites),
                ("ecdh_curves", &p.ecdh_curves),
                ("signature_algorithms", &p.signature_algorithms),
            ] {
                if !list.is_empty() {
                    params.insert(key.into(), json!(list));
                }
            }
            common.insert("tls_params".into(), Value::Object(params));
        }
        match &self.validation {
            ServerValidation::None => {}
            ServerValidation::InsecureSkipVerify => {
                common.insert("validation_context".into(), json!({}));
            }
            ServerValidation::TrustedCa {
                ca,
                subject_alt_names,
            } => {
                let mut v = Map::new();
                v.insert("trusted_ca".into(), data_source(ca));
                if !subject_alt_names.is_empty() {
                    v.insert(
                        "match_typed_subject_alt_names".into(),
                        Value::Array(san_matchers(subject_alt_names)),
                    );
                }
                common.insert("validation_context".into(), Value::Object(v));
            }
            ServerValidation::System { subject_alt_names } => {
                let mut default = Map::new();
                if !subject_alt_names.is_empty() {
                    default.insert(
                        "match_typed_subject_alt_names".into(),
                        Value::Array(san_matchers(subject_alt_names)),
                    );
                }
                common.insert(
                    "combined_validation_context".into(),
                    json!({
                        "default_validation_context": default,
                        "validation_context_sds_secret_config": { "name": SYSTEM_CA_SECRET },
                    }),
                );
            }
        }
        if !self.alpn_protocols.is_empty() {
            common.insert("alpn_protocols".into(), json!(self.alpn_protocols));
        }
        let mut context = Map::new();
        context.insert(
            "@type".into(),
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext".into(),
        );
        context.insert("common_tls_context".into(), Value::Object(common));
        if let Some(sni) = &self.sni {
            context.insert("sni".into(), sni.clone().into());
        }
        json!({ "name": "envoy.transport_sockets.tls", "typed_config": context })
    }
}
