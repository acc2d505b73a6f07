//! Reading certificates out of Secrets and ConfigMaps for translation: the PEM text, or a
//! message that names the object, the key and the fix. Validation already refused a CA bundle
//! that does not parse; what is left here is what only the whole configuration shows (an object
//! that does not exist, a key that is not there, a certificate that expired since) and a
//! Secret's certificate and key, which are taken at apply as the API server takes them.

use std::time::SystemTime;

use api::{Kind, Object, ObjectKey};

use crate::Resources;

pub(crate) const TLS_CRT: &str = "tls.crt";
pub(crate) const TLS_KEY: &str = "tls.key";
pub(crate) const CA_CRT: &str = "ca.crt";

/// A Secret's data, by key, as text.
pub(crate) struct SecretData<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    secret: &'a api::Secret,
}

impl SecretData<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<Result<String, String>> {
        let bytes = self.secret.data.as_ref()?.get(key)?;
        Some(String::from_utf8(bytes.0.clone()).map_err(|_| {
            format!(
                "Secret {}/{} key {key} is not PEM text (not UTF-8)",
                self.namespace, self.name
            )
        }))
    }
}

pub(crate) fn secret<'a>(
    resources: &'a Resources,
    namespace: &'a str,
    name: &'a str,
) -> Result<SecretData<'a>, String> {
    let key = ObjectKey {
        kind: Kind::Secret,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    match resources.get(&key).map(|o| &**o) {
        Some(Object::Secret(secret)) => Ok(SecretData {
            namespace,
            name,
            secret,
        }),
        _ => Err(format!("Secret {namespace}/{name} not found")),
    }
}

/// The `ca.crt` of a ConfigMap.
pub(crate) fn config_map_ca(resources: &Resources, namespace: &str, name: &str) -> Result<String, String> {
    let key = ObjectKey {
        kind: Kind::ConfigMap,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    match resources.get(&key).map(|o| &**o) {
        Some(Object::ConfigMap(cm)) => cm.data.as_ref().and_then(|d| d.get(CA_CRT)).cloned().ok_or_else(
            || {
                format!(
                    "ConfigMap {namespace}/{name} has no {CA_CRT}: put the PEM CA bundle under data.{CA_CRT}"
                )
            },
        ),
        _ => Err(format!("ConfigMap {namespace}/{name} not found")),
    }
}

/// A certificate chain that has not expired at `now`.
pub(crate) fn unexpired(pem: &str, what: &str, now: SystemTime) -> Result<(), String> {
    let info = api::tls_material::chain_info(pem.as_bytes()).map_err(|e| format!("{what}: {e}"))?;
    if info.not_after < now {
        let expired = jiff::Timestamp::try_from(info.not_after)
            .map(|t| t.to_string())
            .unwrap_or_default();
        return Err(format!(
            "{what}: the certificate ({}) expired at {expired}; renew it",
            info.subject
        ));
    }
    Ok(())
}

/// A certificate chain and private key the data plane can serve: both parse, and the key is the
/// certificate's. `what` names where they come from (e.g. `Secret ns/name`).
pub(crate) fn key_pair(chain: &str, key: &str, what: &str) -> Result<(), String> {
    use api::tls_material::KeyPairError;
    api::tls_material::key_pair(chain.as_bytes(), key.as_bytes()).map_err(|e| match e {
        KeyPairError::Certificate(e) => {
            format!("{what} {TLS_CRT}: {e}; put the PEM certificate chain (leaf first) in {TLS_CRT}")
        }
        KeyPairError::Key(e) => {
            format!("{what} {TLS_KEY}: {e}; put the PEM private key of {TLS_CRT}'s certificate in {TLS_KEY}")
        }
    })
}
