//! tls: TLS to the cluster's endpoints, as kgateway builds its UpstreamTlsContext. One trust
//! source at most: `insecureSkipVerify` (nothing verified, no client certificate), `secretRef`
//! (tls.crt/tls.key as the client certificate unless `simpleTLS`, ca.crt as the trust anchor),
//! `files`, or `wellKnownCACertificates: System`; with none of them, the system's CAs, as the
//! newest kgateway does. A Secret with a certificate and no ca.crt verifies nothing, as Envoy
//! without a validation context (kgateway renders none).

use std::time::SystemTime;

use api::backend_config_policy::{BackendConfigPolicySpec, Tls};
use snapshot::{
    CertificateKey, PemSource, SanMatch, SanType, ServerValidation, TlsParameters, TlsVersion, UpstreamTls,
};

use crate::Resources;
use crate::tls_objects::{CA_CRT, TLS_CRT, TLS_KEY, key_pair, secret, unexpired};

/// The policy's TLS, or why it cannot be applied (the clusters it targets then answer 503).
pub(super) fn tls(
    resources: &Resources,
    namespace: &str,
    spec: &BackendConfigPolicySpec,
    now: SystemTime,
) -> Result<Option<UpstreamTls>, String> {
    let Some(t) = &spec.tls else {
        return Ok(None);
    };
    let sans: Vec<SanMatch> = t
        .verify_subject_alt_names
        .iter()
        .map(|s| SanMatch {
            san_type: SanType::Dns,
            value: s.clone(),
        })
        .collect();
    let mut out = UpstreamTls {
        sni: t.sni.clone(),
        client_certificate: None,
        validation: ServerValidation::System {
            subject_alt_names: sans.clone(),
        },
        alpn_protocols: t.alpn_protocols.clone(),
        parameters: parameters(t),
    };
    if t.insecure_skip_verify == Some(true) {
        out.validation = ServerValidation::InsecureSkipVerify;
        return Ok(Some(out));
    }
    let client =
        |chain: Option<PemSource>, key: Option<PemSource>| -> Result<Option<CertificateKey>, String> {
            match (chain, key) {
                (Some(certificate_chain), Some(private_key)) if t.simple_tls != Some(true) => {
                    Ok(Some(CertificateKey {
                        certificate_chain,
                        private_key,
                    }))
                }
                (Some(_), None) | (None, Some(_)) if t.simple_tls != Some(true) => Err(
                    "spec.tls: a client certificate needs both the certificate chain and the private key"
                        .to_string(),
                ),
                _ => Ok(None),
            }
        };
    let with_ca = |ca: Option<PemSource>| -> Result<ServerValidation, String> {
        match ca {
            Some(ca) => Ok(ServerValidation::TrustedCa {
                ca,
                subject_alt_names: sans.clone(),
            }),
            None if !sans.is_empty() => Err(
                "spec.tls.verifySubjectAltNames needs a root CA to verify against: add ca.crt to the Secret, \
                 or files.rootCA"
                    .to_string(),
            ),
            None => Ok(ServerValidation::None),
        }
    };
    if let Some(r) = &t.secret_ref {
        let s = secret(resources, namespace, &r.name).map_err(|e| format!("spec.tls.secretRef: {e}"))?;
        let text = |key: &str| {
            s.get(key)
                .transpose()
                .map_err(|e| format!("spec.tls.secretRef: {e}"))
        };
        let chain = text(TLS_CRT)?;
        if let Some(chain) = &chain
            && t.simple_tls != Some(true)
        {
            unexpired(
                chain,
                &format!("spec.tls.secretRef: Secret {namespace}/{} {TLS_CRT}", r.name),
                now,
            )?;
        }
        let key = text(TLS_KEY)?;
        if let (Some(chain), Some(key)) = (&chain, &key)
            && t.simple_tls != Some(true)
        {
            key_pair(
                chain,
                key,
                &format!("spec.tls.secretRef: Secret {namespace}/{}", r.name),
            )?;
        }
        out.client_certificate = client(chain.map(PemSource::Inline), key.map(PemSource::Inline))?;
        out.validation = with_ca(text(CA_CRT)?.map(PemSource::Inline))?;
    } else if let Some(f) = &t.files {
        let file = |p: &Option<String>| p.as_ref().map(|p| PemSource::File(p.into()));
        out.client_certificate = client(file(&f.tls_certificate), file(&f.tls_key))?;
        out.validation = with_ca(file(&f.root_ca))?;
    }
    // wellKnownCACertificates: System, or no trust source at all: the system's CAs (set above).
    Ok(Some(out))
}

fn parameters(t: &Tls) -> TlsParameters {
    let version = |v: &Option<String>| match v.as_deref() {
        Some("1.2") => Some(TlsVersion::V1_2),
        Some("1.3") => Some(TlsVersion::V1_3),
        // AUTO: the library's range. 1.0 and 1.1 are refused at apply time.
        _ => None,
    };
    match &t.parameters {
        None => TlsParameters::default(),
        Some(p) => TlsParameters {
            min_version: version(&p.min_version),
            max_version: version(&p.max_version),
            cipher_suites: p.cipher_suites.clone(),
            ecdh_curves: p.ecdh_curves.clone(),
            signature_algorithms: p.signature_algorithms.clone(),
        },
    }
}
