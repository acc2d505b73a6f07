//! Certificates, keys and CA bundles as users hand them to us (PEM in a Secret, a ConfigMap or
//! a file): parsed once, with a reason a user can act on when they are wrong. Validation uses it
//! to refuse a Secret that could never serve; translation uses it to check expiry against its
//! clock; the data plane gets the PEM text, already known to parse.

use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why PEM text is not a usable certificate chain, key or CA bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsMaterialError {
    #[error("no PEM certificate found (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    #[error("certificate {index} does not parse as X.509: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error(
        "no PEM private key found (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoKey,
    #[error("the private key does not parse: {0}")]
    BadKey(String),
    #[error("the private key is of a type that cannot sign TLS handshakes: {0}")]
    UnsupportedKey(String),
    #[error("the private key does not belong to the certificate (their public keys differ)")]
    KeyMismatch,
}

/// What translation and status need to know of a parsed certificate chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// The leaf certificate's notAfter.
    pub not_after: SystemTime,
    /// The leaf certificate's subject, for messages.
    pub subject: String,
}

/// Parses every certificate of a PEM bundle; at least one is required.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsMaterialError> {
    let mut out = Vec::new();
    for (index, item) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let der = item.map_err(|e| TlsMaterialError::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
        x509_parser::parse_x509_certificate(&der).map_err(|e| TlsMaterialError::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
        out.push(der);
    }
    if out.is_empty() {
        return Err(TlsMaterialError::NoCertificate);
    }
    Ok(out)
}

/// The leaf (first) certificate's validity and subject.
pub fn chain_info(pem: &[u8]) -> Result<ChainInfo, TlsMaterialError> {
    let chain = certificates(pem)?;
    let (_, leaf) =
        x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| TlsMaterialError::BadCertificate {
            index: 0,
            reason: e.to_string(),
        })?;
    let not_after = leaf.validity().not_after.timestamp();
    let not_after = if not_after >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(not_after as u64)
    } else {
        SystemTime::UNIX_EPOCH
    };
    Ok(ChainInfo {
        not_after,
        subject: leaf.subject().to_string(),
    })
}

/// Parses a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsMaterialError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => Ok(k),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(TlsMaterialError::NoKey),
        Err(e) => Err(TlsMaterialError::BadKey(e.to_string())),
    }
}

/// A certificate chain and its key: both parse, the key can sign, and it is the certificate's.
pub fn key_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), KeyPairError> {
    let chain = certificates(cert_pem).map_err(KeyPairError::Certificate)?;
    let key = private_key(key_pem).map_err(KeyPairError::Key)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| KeyPairError::Key(TlsMaterialError::UnsupportedKey(e.to_string())))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        // rustls cannot tell for some key types; only a definite mismatch is an error.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(_) => Err(KeyPairError::Key(TlsMaterialError::KeyMismatch)),
    }
}

/// Which half of a key pair is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPairError {
    Certificate(TlsMaterialError),
    Key(TlsMaterialError),
}

/// The TLS 1.2 cipher suites the data plane's TLS library (rustls) offers, by their OpenSSL
/// name (what Envoy takes) and their IANA name (what kgateway's examples write); either is
/// accepted. Every suite here is forward-secret AEAD: the weak ones do not exist to be named.
/// TLS 1.3 suites are not configurable, as in Envoy.
pub const CIPHER_SUITES: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// Key exchange groups, by Envoy's (BoringSSL's) names.
pub const ECDH_CURVES: &[&str] = &["X25519", "P-256", "P-384"];

/// Signature algorithms, by their TLS (RFC 8446) names, as Envoy takes them.
pub const SIGNATURE_ALGORITHMS: &[&str] = &[
    "ecdsa_secp256r1_sha256",
    "ecdsa_secp384r1_sha384",
    "rsa_pss_rsae_sha256",
    "rsa_pss_rsae_sha384",
    "rsa_pss_rsae_sha512",
    "rsa_pkcs1_sha256",
    "rsa_pkcs1_sha384",
    "rsa_pkcs1_sha512",
    "ed25519",
];

/// Is `name` one of [`CIPHER_SUITES`], in either spelling?
pub fn is_supported_cipher_suite(name: &str) -> bool {
    CIPHER_SUITES
        .iter()
        .any(|(openssl, iana)| name == *openssl || name == *iana)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(certificates(b"hello"), Err(TlsMaterialError::NoCertificate));
        assert_eq!(private_key(b"hello"), Err(TlsMaterialError::NoKey));
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            certificates(bad),
            Err(TlsMaterialError::BadCertificate { index: 0, .. })
        ));
    }
}
