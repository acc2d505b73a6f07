//! HTTPS listeners: a Gateway listener with `protocol: HTTPS` terminates TLS with the
//! certificate its `tls.certificateRefs` name (a `kubernetes.io/tls` Secret, in the Gateway's
//! namespace or, with a ReferenceGrant, another one). A listener whose certificate is missing,
//! refused, or unusable is not programmed; the others on the port keep serving.

use std::time::SystemTime;

use api::gateway_api::gateways::{GatewayListeners, GatewayListenersTlsMode};
use api::{Kind, Object, ObjectKey};
use snapshot::ServerCertificate;

use crate::Resources;
use crate::reference_grant::gateway_may_refer;
use crate::tls_objects::{TLS_CRT, TLS_KEY, key_pair, unexpired};

/// Why a listener has no certificate: Gateway API's listener condition reason and a message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RefProblem {
    pub reason: &'static str,
    pub message: String,
    /// The listener's Accepted=False reason when the problem also keeps it from being accepted.
    pub not_accepted: Option<&'static str>,
}

fn invalid(message: String) -> RefProblem {
    RefProblem {
        reason: "InvalidCertificateRef",
        message,
        not_accepted: None,
    }
}

/// The certificate of an HTTPS listener (None for other protocols).
pub(crate) fn certificate(
    resources: &Resources,
    gateway: &ObjectKey,
    listener: &GatewayListeners,
    now: SystemTime,
) -> Option<Result<ServerCertificate, RefProblem>> {
    if listener.protocol != "HTTPS" {
        return None;
    }
    Some(resolve(resources, gateway, listener, now))
}

fn resolve(
    resources: &Resources,
    gateway: &ObjectKey,
    listener: &GatewayListeners,
    now: SystemTime,
) -> Result<ServerCertificate, RefProblem> {
    let tls = listener.tls.as_ref();
    if matches!(
        tls.and_then(|t| t.mode.as_ref()),
        Some(GatewayListenersTlsMode::Passthrough)
    ) {
        return Err(RefProblem {
            reason: "UnsupportedValue",
            message: "tls.mode Passthrough is not supported with protocol HTTPS; use Terminate".into(),
            not_accepted: None,
        });
    }
    // Gateway API allows several (one per key type); the first usable one serves.
    let Some(r) = tls
        .and_then(|t| t.certificate_refs.as_ref())
        .and_then(|refs| refs.first())
    else {
        return Err(invalid(
            "an HTTPS listener needs tls.certificateRefs naming a kubernetes.io/tls Secret".into(),
        ));
    };
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    let namespace = r.namespace.as_deref().unwrap_or(&gateway.namespace);
    if !(group.is_empty() && kind == "Secret") {
        return Err(invalid(format!(
            "tls.certificateRefs[0] is {kind} in group \"{group}\": refer to a Secret (group \"\", kind Secret) of \
             type kubernetes.io/tls"
        )));
    }
    if !gateway_may_refer(resources, &gateway.namespace, "Secret", namespace, &r.name) {
        return Err(RefProblem {
            reason: "RefNotPermitted",
            message: format!(
                "Secret {namespace}/{} is in another namespace and no ReferenceGrant in {namespace} allows Gateways \
                 from {} to refer to it: create one",
                r.name, gateway.namespace
            ),
            not_accepted: None,
        });
    }
    let key = ObjectKey {
        kind: Kind::Secret,
        namespace: namespace.to_string(),
        name: r.name.clone(),
    };
    let Some(Object::Secret(secret)) = resources.get(&key).map(|o| &**o) else {
        return Err(invalid(format!(
            "tls.certificateRefs[0]: Secret {namespace}/{} not found: create it (type kubernetes.io/tls, with \
             tls.crt and tls.key) or fix the reference",
            r.name
        )));
    };
    let text = |k: &str| -> Result<String, RefProblem> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .ok_or_else(|| invalid(format!("invalid TLS secret {namespace}/{}: no {k}", r.name)))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| {
            invalid(format!(
                "invalid TLS secret {namespace}/{}: {k} is not PEM text",
                r.name
            ))
        })
    };
    let (chain, key_pem) = (text(TLS_CRT)?, text(TLS_KEY)?);
    key_pair(&chain, &key_pem, &format!("Secret {namespace}/{}", r.name)).map_err(invalid)?;
    unexpired(&chain, &format!("Secret {namespace}/{} {TLS_CRT}", r.name), now).map_err(invalid)?;
    Ok(ServerCertificate {
        name: listener.name.clone(),
        server_names: listener.hostname.iter().map(|h| h.to_ascii_lowercase()).collect(),
        certificate_chain: chain,
        private_key: key_pem,
        client_validation: None,
    })
}

/// Match order: exact names first, then wildcards (longest first), then the catch-all.
pub(crate) fn sort(certificates: &mut [ServerCertificate]) {
    certificates.sort_by_key(|c| match c.server_names.first() {
        None => (2, 0),
        Some(n) if n.starts_with('*') => (1, usize::MAX - n.len()),
        Some(_) => (0, 0),
    });
}
