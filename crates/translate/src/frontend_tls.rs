//! Client certificate validation on HTTPS listeners (Gateway API `spec.tls.frontend`): the
//! `perPort` entry of a listener's port, or else `default`, names CA bundles (ConfigMaps with
//! `ca.crt`) that client certificates must chain to. `AllowValidOnly` (the default) refuses a
//! handshake without a valid one; `AllowInsecureFallback` asks for one and takes the
//! connection whatever comes (Envoy: `trust_chain_verification: ACCEPT_UNTRUSTED`), and the
//! Gateway says so in its `InsecureFrontendValidationMode` condition.
//!
//! A reference that does not resolve makes the listener's ResolvedRefs False with Gateway API's
//! reason (InvalidCACertificateRef, InvalidCACertificateKind, RefNotPermitted) and, since kgw
//! will not serve it with fewer CAs than asked for, leaves it unprogrammed: Accepted False with
//! NoValidCACertificate when none is usable (Gateway API), Accepted True otherwise.

use std::collections::BTreeSet;

use api::gateway_api::gateways::{
    GatewayListeners, GatewayTlsFrontendDefaultValidationMode, GatewayTlsFrontendPerPortTlsValidationMode,
};
use api::{Gateway, ObjectKey};
use serde_json::Value;
use snapshot::{ClientValidation, ServerCertificate};

use crate::Resources;
use crate::listener_tls::RefProblem;
use crate::reference_grant::gateway_may_refer;
use crate::tls_objects::config_map_ca;

/// One CA reference, whichever of default and perPort it comes from.
struct CaRef<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
}

/// The validation a listener's port gets: its CA references and whether invalid or missing
/// client certificates are let through.
struct Validation<'a> {
    field: String,
    refs: Vec<CaRef<'a>>,
    insecure_fallback: bool,
}

/// A `Validation` from the default's or a perPort entry's validation: distinct generated types
/// with the same fields.
macro_rules! validation_of {
    ($v:expr, $field:expr, $fallback:expr) => {
        Validation {
            field: $field,
            refs: $v
                .ca_certificate_refs
                .iter()
                .map(|r| CaRef {
                    group: &r.group,
                    kind: &r.kind,
                    name: &r.name,
                    namespace: r.namespace.as_deref(),
                })
                .collect(),
            insecure_fallback: $v.mode == Some($fallback),
        }
    };
}

fn validation(gw: &Gateway, port: i32) -> Option<Validation<'_>> {
    let frontend = gw.spec.tls.as_ref()?.frontend.as_ref()?;
    // A perPort entry replaces the default for its port, even when it sets no validation.
    if let Some((i, per_port)) = frontend
        .per_port
        .iter()
        .flatten()
        .enumerate()
        .find(|(_, p)| p.port == port)
    {
        let v = per_port.tls.validation.as_ref()?;
        return Some(validation_of!(
            v,
            format!("spec.tls.frontend.perPort[{i}].tls.validation"),
            GatewayTlsFrontendPerPortTlsValidationMode::AllowInsecureFallback
        ));
    }
    let v = frontend.default.validation.as_ref()?;
    Some(validation_of!(
        v,
        "spec.tls.frontend.default.validation".into(),
        GatewayTlsFrontendDefaultValidationMode::AllowInsecureFallback
    ))
}

/// An HTTPS listener's certificate with its port's client validation added, or the problem
/// that keeps it from being served (a certificate problem stays first).
pub(crate) fn with_client_validation(
    resources: &Resources,
    gateway: &ObjectKey,
    gw: &Gateway,
    listener: &GatewayListeners,
    certificate: Option<Result<ServerCertificate, RefProblem>>,
) -> Option<Result<ServerCertificate, RefProblem>> {
    let Some(Ok(mut served)) = certificate else {
        return certificate;
    };
    let Some(v) = validation(gw, listener.port) else {
        return Some(Ok(served));
    };
    match ca_bundle(resources, gateway, &v) {
        Ok(ca_bundle) => {
            served.client_validation = Some(ClientValidation {
                ca_bundle,
                allow_insecure_fallback: v.insecure_fallback,
            });
            Some(Ok(served))
        }
        Err(problem) => Some(Err(problem)),
    }
}

/// The PEM of every CA the references name, or the first problem.
fn ca_bundle(resources: &Resources, gateway: &ObjectKey, v: &Validation) -> Result<String, RefProblem> {
    let mut bundle = String::new();
    let mut first_problem = None;
    for (i, r) in v.refs.iter().enumerate() {
        let field = format!("{}.caCertificateRefs[{i}]", v.field);
        match resolve(resources, gateway, r, &field) {
            Ok(pem) => {
                bundle.push_str(pem.trim_end());
                bundle.push('\n');
            }
            Err(p) => {
                first_problem.get_or_insert(p);
            }
        }
    }
    match first_problem {
        None if !bundle.is_empty() => Ok(bundle),
        None => Err(RefProblem {
            reason: "InvalidCACertificateRef",
            message: format!(
                "{}.caCertificateRefs is empty: name a ConfigMap holding ca.crt",
                v.field
            ),
            not_accepted: Some("NoValidCACertificate"),
        }),
        Some(mut p) => {
            if !bundle.is_empty() {
                // Some usable: the listener is accepted, but not served with fewer CAs.
                p.not_accepted = None;
            }
            Err(p)
        }
    }
}

fn resolve(resources: &Resources, gateway: &ObjectKey, r: &CaRef, field: &str) -> Result<String, RefProblem> {
    let problem = |reason, message: String| RefProblem {
        reason,
        message: format!("{field}: {message}"),
        not_accepted: Some("NoValidCACertificate"),
    };
    if !(r.group.is_empty() && r.kind == "ConfigMap") {
        return Err(problem(
            "InvalidCACertificateKind",
            format!(
                "kind {} in group \"{}\" cannot hold a CA certificate: refer to a ConfigMap (group \"\") with ca.crt",
                r.kind, r.group
            ),
        ));
    }
    let namespace = r.namespace.unwrap_or(&gateway.namespace);
    if !gateway_may_refer(resources, &gateway.namespace, "ConfigMap", namespace, r.name) {
        return Err(problem(
            "RefNotPermitted",
            format!(
                "ConfigMap {namespace}/{} is in another namespace and no ReferenceGrant in {namespace} allows Gateways \
                 from {} to refer to it: create one",
                r.name, gateway.namespace
            ),
        ));
    }
    let pem = config_map_ca(resources, namespace, r.name).map_err(|e| {
        let fix = if e.ends_with("not found") {
            ": create it with the PEM CA under data.ca.crt, or fix the reference"
        } else {
            ""
        };
        problem("InvalidCACertificateRef", format!("{e}{fix}"))
    })?;
    api::tls_material::chain_info(pem.as_bytes()).map_err(|e| {
        problem(
            "InvalidCACertificateRef",
            format!("ConfigMap {namespace}/{} ca.crt: {e}", r.name),
        )
    })?;
    Ok(pem)
}

/// The Gateway's `InsecureFrontendValidationMode` condition (Gateway API): True when a port
/// of it lets clients through without a valid certificate; none otherwise.
pub(crate) fn insecure_condition(gw: &Gateway, now: &str) -> Option<Value> {
    let ports: BTreeSet<i32> = gw
        .spec
        .listeners
        .iter()
        .filter(|l| l.protocol == "HTTPS")
        .map(|l| l.port)
        .collect();
    let insecure: Vec<String> = ports
        .into_iter()
        .filter(|p| validation(gw, *p).is_some_and(|v| v.insecure_fallback))
        .map(|p| p.to_string())
        .collect();
    (!insecure.is_empty()).then(|| {
        crate::condition(
            "InsecureFrontendValidationMode",
            true,
            "ConfigurationChanged",
            &format!(
                "client certificate validation is AllowInsecureFallback on port {}: clients without a valid \
                 certificate are let through",
                insecure.join(", ")
            ),
            now,
        )
    })
}
