//! kgateway's `ListenerPolicy` (`gateway.kgateway.dev/v1alpha1`): settings of a Gateway's
//! listeners (the accepted client connections), for every port (`default`) or one port
//! (`perPort`, which replaces `default` whole for that port). `tcpKeepalive` and
//! `perConnectionBufferLimitBytes` are served; the other fields are refused as "not supported
//! yet" in `unsupported.rs`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend_config_policy::{PolicyStatus, TcpKeepalive, tcp_keepalive_errors};
use crate::error::FieldError;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListenerPolicy {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ListenerPolicySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PolicyStatus>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<GatewayTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_selectors: Vec<GatewayTargetSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ListenerConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_port: Vec<ListenerPortConfig>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTargetReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTargetSelector {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerPortConfig {
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub listener: ListenerConfig,
}

/// One listener's settings. The fields kgw does not serve are kept as written, to be refused
/// by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_connection_buffer_limit_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_settings: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<Value>,
    /// Only under `default`, per the CRD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_validation: Option<Value>,
}

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The CRD's schema and CEL rules.
pub fn validate(p: &ListenerPolicy) -> Vec<FieldError> {
    let s = &p.spec;
    let mut errors = Vec::new();
    if s.target_refs.is_empty() && s.target_selectors.is_empty() {
        errors.push(FieldError::required(
            "spec.targetRefs",
            "name the Gateway to attach to, e.g. targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: http}]",
        ));
    }
    if s.target_refs.len() > 16 {
        errors.push(FieldError::invalid(
            "spec.targetRefs",
            &s.target_refs.len(),
            "must have at most 16 items",
        ));
    }
    let only_gateways =
        |group: &str, kind: &str| kind == "Gateway" && (group.is_empty() || group == GATEWAY_GROUP);
    if !s.target_refs.iter().all(|r| only_gateways(&r.group, &r.kind)) {
        errors.push(FieldError::invalid(
            "spec.targetRefs",
            &"",
            "targetRefs may only reference Gateway resource",
        ));
    }
    if !s
        .target_selectors
        .iter()
        .all(|r| only_gateways(&r.group, &r.kind))
    {
        errors.push(FieldError::invalid(
            "spec.targetSelectors",
            &"",
            "targetSelectors may only reference Gateway resource",
        ));
    }
    for (i, r) in s.target_refs.iter().enumerate() {
        if r.name.is_empty() {
            errors.push(FieldError::required(
                format!("spec.targetRefs[{i}].name"),
                "name the Gateway",
            ));
        }
    }
    if let Some(d) = &s.default {
        errors.extend(listener_config("spec.default", d));
    }
    if s.per_port.len() > 64 {
        errors.push(FieldError::invalid(
            "spec.perPort",
            &s.per_port.len(),
            "must have at most 64 items",
        ));
    }
    let mut ports = BTreeSet::new();
    for (i, pp) in s.per_port.iter().enumerate() {
        let at = format!("spec.perPort[{i}]");
        if !(1..=65535).contains(&pp.port) {
            errors.push(FieldError::invalid(
                format!("{at}.port"),
                &pp.port,
                "port must be between 1 and 65535",
            ));
        }
        if !ports.insert(pp.port) {
            errors.push(FieldError::invalid(
                "spec.perPort",
                &pp.port,
                "Port for listener configuration must be unique within the Gateway",
            ));
        }
        errors.extend(listener_config(&format!("{at}.listener"), &pp.listener));
        if pp.listener.client_certificate_validation.is_some() {
            errors.push(FieldError::unknown(format!(
                "{at}.listener.clientCertificateValidation"
            )));
        }
    }
    errors
}

fn listener_config(at: &str, c: &ListenerConfig) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(k) = &c.tcp_keepalive {
        errors.extend(tcp_keepalive_errors(&format!("{at}.tcpKeepalive"), k));
    }
    if let Some(b) = c.per_connection_buffer_limit_bytes
        && !(0..=i64::from(i32::MAX)).contains(&b)
    {
        errors.push(FieldError::invalid(
            format!("{at}.perConnectionBufferLimitBytes"),
            &b,
            format!("{at}.perConnectionBufferLimitBytes in body should be greater than or equal to 0 (and fit in int32)"),
        ));
    }
    errors
}
