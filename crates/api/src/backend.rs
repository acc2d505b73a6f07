//! kgateway's `Backend` kind (`gateway.kgateway.dev/v1alpha1`): an upstream that is not a
//! Service. Type `Static` (fixed hosts, by IP or DNS name) is served; the other types are
//! accepted by the schema and refused as "not supported yet" in `unsupported.rs`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::FieldError;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Backend {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BackendSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BackendStatus>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// `Static`, `AWS`, `DynamicForwardProxy` or `GCP` (deprecated upstream: the type follows
    /// from the one field that is set); when given, it must name that field.
    #[serde(rename = "type", default)]
    pub backend_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#static: Option<StaticBackend>,
    // The other types' settings are kept as written: they are refused as not supported yet, so
    // their inner schema never matters here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_forward_proxy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticBackend {
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// The protocol the hosts speak: one of [`APP_PROTOCOLS`] (HTTP/2 for all but
    /// `kubernetes.io/ws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// An IP address or a DNS name.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

pub const BACKEND_TYPES: &[&str] = &["AWS", "Static", "DynamicForwardProxy", "GCP"];

/// The CRD's enum for `spec.static.appProtocol` (kgateway's `AppProtocol`).
pub const APP_PROTOCOLS: &[&str] = &[
    "http2",
    "grpc",
    "grpc-web",
    "kubernetes.io/h2c",
    "kubernetes.io/ws",
];

impl BackendSpec {
    /// The fields that name a type, with the type each stands for, and whether it is set.
    fn type_fields(&self) -> [(&'static str, &'static str, bool); 4] {
        [
            ("Static", "static", self.r#static.is_some()),
            ("AWS", "aws", self.aws.is_some()),
            (
                "DynamicForwardProxy",
                "dynamicForwardProxy",
                self.dynamic_forward_proxy.is_some(),
            ),
            ("GCP", "gcp", self.gcp.is_some()),
        ]
    }
}

/// The CRD's schema and CEL rules: exactly one of the type fields, and `type`, when given,
/// naming it.
pub fn validate(b: &Backend) -> Vec<FieldError> {
    let spec = &b.spec;
    let mut errors = Vec::new();
    let set: Vec<(&str, &str)> = spec
        .type_fields()
        .into_iter()
        .filter(|(_, _, is_set)| *is_set)
        .map(|(ty, field, _)| (ty, field))
        .collect();
    if set.len() != 1 {
        errors.push(FieldError::invalid(
            "spec",
            &set.iter().map(|(_, f)| *f).collect::<Vec<_>>(),
            "exactly one of the fields in [aws static dynamicForwardProxy gcp] must be set, e.g. \
             static: {hosts: [{host: example.com, port: 80}]}",
        ));
    }
    if !spec.backend_type.is_empty() {
        if !BACKEND_TYPES.contains(&spec.backend_type.as_str()) {
            errors.push(FieldError::unsupported(
                "spec.type",
                &spec.backend_type,
                BACKEND_TYPES,
            ));
        } else if let Some((_, field)) = set.iter().find(|(ty, _)| *ty != spec.backend_type) {
            errors.push(FieldError::invalid(
                "spec.type",
                &spec.backend_type,
                format!(
                    "type {} does not match spec.{field}; remove type (it is deprecated and follows from the field \
                     that is set) or make them agree",
                    spec.backend_type
                ),
            ));
        }
    }
    if let Some(s) = &spec.r#static {
        if let Some(p) = &s.app_protocol
            && !APP_PROTOCOLS.contains(&p.as_str())
        {
            errors.push(FieldError::unsupported(
                "spec.static.appProtocol",
                p,
                APP_PROTOCOLS,
            ));
        }
        if s.hosts.is_empty() {
            errors.push(FieldError::required(
                "spec.static.hosts",
                "list at least one host, e.g. hosts: [{host: example.com, port: 80}]",
            ));
        }
        for (i, h) in s.hosts.iter().enumerate() {
            let at = format!("spec.static.hosts[{i}]");
            if h.host.is_empty() {
                errors.push(FieldError::required(
                    format!("{at}.host"),
                    "give an IP address or a DNS name",
                ));
            } else if h.host.parse::<std::net::IpAddr>().is_err() && !is_dns_name(&h.host) {
                errors.push(FieldError::invalid(
                    format!("{at}.host"),
                    &h.host,
                    "must be an IP address or a DNS name (letters, digits, '-' and '.'), without port or scheme",
                ));
            }
            if !(1..=65535).contains(&h.port) {
                errors.push(FieldError::invalid(
                    format!("{at}.port"),
                    &h.port,
                    "port must be between 1 and 65535",
                ));
            }
        }
    }
    errors
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    fn errors(app_protocol: &str) -> Vec<String> {
        let doc = format!(
            "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: Backend\nmetadata:\n  name: b\n  namespace: default\n\
             spec:\n  static:\n    hosts: [{{host: 10.0.0.1, port: 9000}}]\n    appProtocol: {app_protocol}\n"
        );
        let objects = crate::parse_manifests(&doc, "test");
        match objects {
            Ok(o) => o
                .iter()
                .flat_map(crate::unsupported)
                .map(|e| e.to_string())
                .collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn app_protocol_takes_the_crds_values() {
        for p in super::APP_PROTOCOLS {
            assert_eq!(errors(p), Vec::<String>::new(), "{p}");
        }
        let got = errors("h2c");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains(
                "Backend \"default/b\" is invalid: spec.static.appProtocol: Unsupported value: \"h2c\": supported \
                 values: \"http2\", \"grpc\", \"grpc-web\", \"kubernetes.io/h2c\", \"kubernetes.io/ws\""
            ),
            "{got:?}"
        );
    }
}
