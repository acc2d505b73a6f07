//! BackendTLSPolicy (Gateway API v1): TLS to a Service's or Backend's endpoints, verified against
//! a CA bundle (the first of `caCertificateRefs`: a ConfigMap, or a Secret, holding `ca.crt`) or
//! the system's CAs, with `hostname` as SNI and, unless `subjectAltNames` says otherwise, as the
//! name the certificate must carry. It replaces a BackendConfigPolicy's `tls` on the same
//! target (kgateway: "BackendTLSPolicy wins for TLS"), inside the PROXY protocol header when the
//! cluster sends one. Several on one target: the oldest wins; the others are Conflicted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use api::gateway_api::backendtlspolicies::BackendTlsPolicyValidationSubjectAltNamesType as SanKind;
use api::{BackendTlsPolicy, Kind, Object, ObjectKey};
use serde_json::{Value, json};
use snapshot::{PemSource, SanMatch, SanType, ServerValidation, TlsParameters, UpstreamTls};

use crate::backend_policy::clusters_of;
use crate::tls_objects::{CA_CRT, config_map_ca, secret};
use crate::{
    CONTROLLER_NAME, ClusterDraft, Resources, Statuses, condition, json_object, oldest_first, rfc3339,
};

/// Why a policy's CA reference does not resolve, in Gateway API's reasons.
enum RefError {
    InvalidKind(String),
    InvalidCaCertificateRef(String),
}

/// `errored`: the clusters whose BackendConfigPolicy could not be applied; those this policy
/// gives TLS leave the set (its TLS is the one that applies).
pub(crate) fn attach(
    resources: &Resources,
    clusters: &mut BTreeMap<String, ClusterDraft>,
    errored: &mut BTreeSet<String>,
    statuses: &mut Statuses,
    now: SystemTime,
) {
    let now_text = rfc3339(now);
    let policies = oldest_first(resources, Kind::BackendTLSPolicy, |o| match o {
        Object::BackendTLSPolicy(p) => Some(p.as_ref()),
        _ => None,
    });
    let mut taken: BTreeSet<ObjectKey> = BTreeSet::new();
    for (key, policy) in policies {
        let tls = upstream_tls(resources, &key.namespace, policy);
        let mut ancestors = Vec::new();
        for r in &policy.spec.target_refs {
            let kind = match (r.group.as_str(), r.kind.as_str()) {
                ("", "Service") => Some(Kind::Service),
                ("gateway.kgateway.dev", "Backend") => Some(Kind::Backend),
                _ => None,
            };
            let target = kind.map(|kind| ObjectKey {
                kind,
                namespace: key.namespace.clone(),
                name: r.name.clone(),
            });
            let conditions = match target {
                Some(t) if resources.contains_key(&t) => {
                    if !taken.insert(t.clone()) {
                        vec![condition(
                            "Accepted",
                            false,
                            "Conflicted",
                            "an older BackendTLSPolicy targets the same backend; it wins",
                            &now_text,
                        )]
                    } else {
                        for (name, draft) in clusters_of(clusters, &t) {
                            match &tls {
                                Ok(tls) => {
                                    draft.cluster.upstream.tls = Some(tls.clone());
                                    errored.remove(name);
                                }
                                Err(_) => {
                                    errored.insert(name.clone());
                                }
                            }
                        }
                        status_conditions(&tls, &now_text)
                    }
                }
                _ => vec![condition(
                    "Accepted",
                    false,
                    "TargetNotFound",
                    &format!(
                        "target {} {}/{} not found; the policy attaches when it exists",
                        r.kind, key.namespace, r.name
                    ),
                    &now_text,
                )],
            };
            ancestors.push(json_object([
                (
                    "ancestorRef",
                    json!({"group": r.group, "kind": r.kind, "name": r.name, "namespace": key.namespace}),
                ),
                ("controllerName", CONTROLLER_NAME.into()),
                ("conditions", Value::Array(conditions)),
            ]));
        }
        statuses.insert(key.clone(), json_object([("ancestors", Value::Array(ancestors))]));
    }
}

fn status_conditions(tls: &Result<UpstreamTls, RefError>, now: &str) -> Vec<Value> {
    match tls {
        Ok(_) => vec![
            condition("Accepted", true, "Accepted", "Policy accepted", now),
            condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "Resolved all references",
                now,
            ),
        ],
        Err(e) => {
            let (reason, message) = match e {
                RefError::InvalidKind(m) => ("InvalidKind", m),
                RefError::InvalidCaCertificateRef(m) => ("InvalidCACertificateRef", m),
            };
            let message = format!("{message}; requests to the backend answer 503 until this is fixed");
            vec![
                condition("Accepted", false, "NoValidCACertificate", &message, now),
                condition("ResolvedRefs", false, reason, &message, now),
            ]
        }
    }
}

fn upstream_tls(
    resources: &Resources,
    namespace: &str,
    policy: &BackendTlsPolicy,
) -> Result<UpstreamTls, RefError> {
    let v = &policy.spec.validation;
    let mut sans: Vec<SanMatch> = v
        .subject_alt_names
        .iter()
        .flatten()
        .filter_map(|s| match s.r#type {
            SanKind::Hostname => s.hostname.clone().map(|value| SanMatch {
                san_type: SanType::Dns,
                value,
            }),
            SanKind::Uri => s.uri.clone().map(|value| SanMatch {
                san_type: SanType::Uri,
                value,
            }),
        })
        .collect();
    if sans.is_empty() {
        sans.push(SanMatch {
            san_type: SanType::Dns,
            value: v.hostname.clone(),
        });
    }
    let validation = if v.well_known_ca_certificates.as_deref() == Some("System") {
        ServerValidation::System {
            subject_alt_names: sans,
        }
    } else {
        // Validation requires one source; only the first reference counts, as in kgateway.
        let Some(r) = v.ca_certificate_refs.iter().flatten().next() else {
            return Err(RefError::InvalidCaCertificateRef(
                "spec.validation: no CA certificate reference".into(),
            ));
        };
        let ca = match (r.group.as_str(), r.kind.as_str()) {
            ("", "ConfigMap" | "") => config_map_ca(resources, namespace, &r.name),
            ("", "Secret") => secret(resources, namespace, &r.name).and_then(|s| {
                s.get(CA_CRT)
                    .unwrap_or_else(|| Err(format!("Secret {namespace}/{} has no {CA_CRT}", r.name)))
            }),
            (group, kind) => {
                return Err(RefError::InvalidKind(format!(
                    "spec.validation.caCertificateRefs[0]: unsupported certificate reference kind \"{kind}\"{}; \
                     refer to a ConfigMap (or a Secret) holding {CA_CRT}",
                    if group.is_empty() { String::new() } else { format!(" in group \"{group}\"") }
                )));
            }
        }
        .map_err(|e| {
            RefError::InvalidCaCertificateRef(format!(
                "invalid CA certificate ref {}/{}: {e}",
                if r.kind.is_empty() { "ConfigMap" } else { &r.kind },
                r.name
            ))
        })?;
        if let Err(e) = api::tls_material::certificates(ca.as_bytes()) {
            return Err(RefError::InvalidCaCertificateRef(format!(
                "invalid {CA_CRT} in {} {namespace}/{}: {e}",
                if r.kind.is_empty() { "ConfigMap" } else { &r.kind },
                r.name
            )));
        }
        ServerValidation::TrustedCa {
            ca: PemSource::Inline(ca),
            subject_alt_names: sans,
        }
    };
    Ok(UpstreamTls {
        sni: Some(v.hostname.clone()),
        client_certificate: None,
        validation,
        alpn_protocols: Vec::new(),
        parameters: TlsParameters::default(),
    })
}
