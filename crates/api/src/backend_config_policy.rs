//! `gateway.kgateway.dev/v1alpha1` BackendConfigPolicy: the whole schema of kgateway's CRD as
//! Rust types, and [`validate`], which gives the verdicts and messages of the API server for
//! that CRD (its OpenAPI schema and its CEL `x-kubernetes-validations` rules).
//!
//! How the API server validates, and so how [`validate`] does:
//! 1. The OpenAPI schema: required fields, enums, bounds, lengths, patterns, item counts.
//!    Required fields are plain (non-`Option`) fields here, so a missing one is already a
//!    deserialization error with its path; everything else is checked by [`validate`].
//! 2. The CEL rules, only when step 1 found no "blocking" error (an enum value, a too long
//!    string, too many items): then the API server skips every rule and says so with
//!    `<nil>: Invalid value: "null": some validation rules were not checked ...`.
//!
//! Messages use kubectl's shape. One deliberate difference: a CEL rule on a scalar field shows
//! the field's value (`Invalid value: "500ms"`), where the API server shows the field's type
//! (`Invalid value: "string"`); rules on objects and lists show `"object"` / `"array"` as it
//! does. Fields are kept as written: defaults of the CRD (`outlierDetection.interval: 10s`,
//! ...) are not filled in by deserialization.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::{NANOS_PER_MILLI, NANOS_PER_SECOND, matches_kube_duration_pattern, parse_go_duration};
use crate::error::{FieldError, FieldErrorKind};

pub const API_VERSION: &str = "gateway.kgateway.dev/v1alpha1";
pub const KIND: &str = "BackendConfigPolicy";

// ------------------------------------------------------------------------------------------
// Types. Field order follows the CRD's spec, with the targets first.
// Lists are `Vec`s: an empty list and an absent one are the same thing here.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BackendConfigPolicy {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BackendConfigPolicySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PolicyStatus>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendConfigPolicySpec {
    /// The objects to attach to, in the policy's namespace (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<LocalPolicyTargetReference>,
    /// The objects to attach to, chosen by labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_selectors: Vec<LocalPolicyTargetSelector>,
    /// Timeout for new upstream connections (a duration such as `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub connect_timeout: Option<String>,
    /// Soft limit on each connection's read and write buffers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("format" = "int32"))]
    pub per_connection_buffer_limit_bytes: Option<i64>,
    /// OS-level TCP keepalive on upstream connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_protocol_options: Option<Http1ProtocolOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitBreakers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_proxy_protocol: Option<UpstreamProxyProtocol>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalPolicyTargetReference {
    /// `""` for a Service, `gateway.kgateway.dev` for a Backend.
    #[schemars(length(max = 253), pattern(DNS_SUBDOMAIN_OR_EMPTY))]
    pub group: String,
    #[schemars(length(min = 1, max = 63), pattern(KIND_PATTERN))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalPolicyTargetSelector {
    #[schemars(length(max = 253), pattern(DNS_SUBDOMAIN_OR_EMPTY))]
    pub group: String,
    #[schemars(length(min = 1, max = 63), pattern(KIND_PATTERN))]
    pub kind: String,
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpKeepalive {
    /// TCP_KEEPCNT: unanswered probes before the connection is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("format" = "int32"))]
    pub keep_alive_probes: Option<i64>,
    /// TCP_KEEPIDLE: idle time before the first probe (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub keep_alive_time: Option<String>,
    /// TCP_KEEPINTVL: time between probes (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub keep_alive_interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonHttpProtocolOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("format" = "int32"))]
    pub max_headers_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("format" = "int32"))]
    pub max_requests_per_connection: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub max_stream_duration: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Http1ProtocolOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_trailers: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_stream_error_on_invalid_http_message: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_http1_header_case: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Http2ProtocolOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_keepalive: Option<Http2ConnectionKeepalive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::int_or_string", extend("pattern" = QUANTITY_PATTERN))]
    pub initial_connection_window_size: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::int_or_string", extend("pattern" = QUANTITY_PATTERN))]
    pub initial_stream_window_size: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647), extend("format" = "int32"))]
    pub max_concurrent_streams: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_stream_error_on_invalid_http_message: Option<bool>,
}

/// HTTP/2 PING keepalive.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Http2ConnectionKeepalive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub connection_idle_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub interval: Option<String>,
    #[schemars(length(max = 32))]
    pub timeout: String,
}

/// `x-kubernetes-int-or-string`. Not k8s-openapi's `IntOrString`, whose integer is an `i32`:
/// the API server reads any 64-bit integer here and its CEL rule reports the out-of-range
/// ones (`initialStreamWindowSize: 2147483648`), so a 64-bit integer must deserialize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => serializer.serialize_i64(*i),
            IntOrString::String(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IntOrString;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v).map(IntOrString::Int).map_err(|_| {
                    E::invalid_value(
                        serde::de::Unexpected::Unsigned(v),
                        &"an integer that fits in 64 bits",
                    )
                })
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_renegotiation: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn_protocols: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<TlsFiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<TlsParameters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    #[serde(rename = "simpleTLS", default, skip_serializing_if = "Option::is_none")]
    pub simple_tls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_subject_alt_names: Vec<String>,
    #[serde(
        rename = "wellKnownCACertificates",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1, max = 253), pattern(WELL_KNOWN_CA_PATTERN))]
    pub well_known_ca_certificates: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsFiles {
    #[serde(rename = "rootCA", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub root_ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tls_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tls_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsParameters {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = TLS_VERSIONS))]
    pub max_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = TLS_VERSIONS))]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signature_algorithms: Vec<String>,
}

/// A Secret in the policy's namespace. The CRD defaults `name` to `""`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_connections_on_host_set_change: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100), extend("format" = "int32"))]
    pub healthy_panic_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least_request: Option<LeastRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = LOCALITY_TYPES))]
    pub locality_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomLoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin: Option<RoundRobin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub update_merge_window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware: Option<ZoneAware>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeastRequest {
    /// The CRD defaults it to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 2, "format" = "int32"))]
    pub choice_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoundRobin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlowStart {
    /// A decimal number greater than 0, as a string (`"1.5"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100), extend("format" = "int32"))]
    pub min_weight_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub window: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Maglev {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 16))]
    pub hash_policies: Vec<HashPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_hostname_for_hashing: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingHash {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 16))]
    pub hash_policies: Vec<HashPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub maximum_ring_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub minimum_ring_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_hostname_for_hashing: Option<bool>,
}

/// `random: {}`: the random load balancer has no options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct RandomLoadBalancer {}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HashPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieHashPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderHashPolicy>,
    #[serde(rename = "sourceIP", default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<SourceIpHashPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CookieHashPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = SAME_SITE))]
    pub same_site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub ttl: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderHashPolicy {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// `sourceIP: {}`: hash on the client's address; no options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct SourceIpHashPolicy {}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneAware {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_local: Option<PreferLocal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferLocal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<ForceLocalZone>,
    /// The CRD defaults it to 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 6))]
    pub min_endpoints_threshold: Option<i64>,
    /// The CRD defaults it to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100), extend("default" = 100, "format" = "int32"))]
    pub routing_enabled: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForceLocalZone {
    /// The CRD defaults it to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 1, "format" = "int32"))]
    pub min_endpoints_in_zone_threshold: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheck>,
    #[schemars(range(min = 0), extend("format" = "int32"))]
    pub healthy_threshold: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
    #[schemars(length(max = 32))]
    pub interval: String,
    #[schemars(length(max = 32))]
    pub timeout: String,
    #[schemars(range(min = 0), extend("format" = "int32"))]
    pub unhealthy_threshold: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = HTTP_METHODS))]
    pub method: Option<String>,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// The CRD defaults it to `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), extend("default" = "30s"))]
    pub base_ejection_time: Option<String>,
    /// The CRD defaults it to 5.
    #[serde(rename = "consecutive5xx", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 5, "format" = "int32"))]
    pub consecutive_5xx: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("format" = "int32"))]
    pub consecutive_local_origin_failure: Option<i64>,
    #[serde(
        rename = "enforcingConsecutive5xx",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 100), extend("format" = "int32"))]
    pub enforcing_consecutive_5xx: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100), extend("format" = "int32"))]
    pub enforcing_consecutive_local_origin_failure: Option<i64>,
    /// The CRD defaults it to `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), extend("default" = "10s"))]
    pub interval: Option<String>,
    /// The CRD defaults it to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100), extend("default" = 10, "format" = "int32"))]
    pub max_ejection_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("format" = "int32"))]
    pub max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("format" = "int32"))]
    pub max_pending_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("format" = "int32"))]
    pub max_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("format" = "int32"))]
    pub max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_remaining: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub jitter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub refresh_rate: Option<String>,
    #[serde(rename = "respectTTL", default, skip_serializing_if = "Option::is_none")]
    pub respect_ttl: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamProxyProtocol {
    /// `V1` (the CRD's default) or `V2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = PROXY_PROTOCOL_VERSIONS, "default" = "V1"))]
    pub version: Option<String>,
}

/// Gateway API's PolicyStatus: one entry per ancestor the policy is relevant for.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("required" = ["ancestors"]))]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    #[serde(default)]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "atomic"), transform = crate::crd::without_default)]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: ParentReference,
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$")
    )]
    pub controller_name: String,
    #[schemars(
        with = "Vec<crate::crd::ConditionSchema>",
        length(min = 1, max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
}

/// Gateway API's ParentReference, as the status's `ancestorRef`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// Absent means `gateway.networking.k8s.io`; `""` is the core group (a Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), pattern(DNS_SUBDOMAIN_OR_EMPTY), extend("default" = "gateway.networking.k8s.io"))]
    pub group: Option<String>,
    /// Absent means `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(KIND_PATTERN), extend("default" = "Gateway"))]
    pub kind: Option<String>,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub section_name: Option<String>,
}

// ------------------------------------------------------------------------------------------
// What the data plane implements.
// ------------------------------------------------------------------------------------------

const NOT_YET: &str = "not supported yet by kgateway-rs: remove the field (the data plane does not implement it, \
                       so it would have no effect)";

/// The spec fields that are valid but that the data plane does not implement yet (everything
/// but targetRefs, targetSelectors, connectTimeout and tcpKeepalive), one Forbidden error each.
pub fn unsupported_fields(spec: &BackendConfigPolicySpec) -> Vec<FieldError> {
    let set = [
        ("circuitBreakers", spec.circuit_breakers.is_some()),
        (
            "commonHttpProtocolOptions",
            spec.common_http_protocol_options.is_some(),
        ),
        ("dns", spec.dns.is_some()),
        ("healthCheck", spec.health_check.is_some()),
        ("http1ProtocolOptions", spec.http1_protocol_options.is_some()),
        ("http2ProtocolOptions", spec.http2_protocol_options.is_some()),
        ("loadBalancer", spec.load_balancer.is_some()),
        ("outlierDetection", spec.outlier_detection.is_some()),
        (
            "perConnectionBufferLimitBytes",
            spec.per_connection_buffer_limit_bytes.is_some(),
        ),
        ("tls", spec.tls.is_some()),
        ("upstreamProxyProtocol", spec.upstream_proxy_protocol.is_some()),
    ];
    set.into_iter()
        .filter(|(_, is_set)| *is_set)
        .map(|(field, _)| FieldError::forbidden(format!("spec.{field}"), NOT_YET))
        .collect()
}

// ------------------------------------------------------------------------------------------
// Validation.
// ------------------------------------------------------------------------------------------

// CEL messages, word for word from the CRD (a test checks that each of the CRD's messages
// appears in this file).
/// The CRD's message, with how to write one: the pattern takes integers with a unit, no fractions.
const INVALID_DURATION: &str =
    "invalid duration value (write whole numbers with a unit, up to 4 parts: 30s, 1m30s, 500ms, 1h)";
const AT_MOST_ONE_HTTP: &str =
    "at most one of the fields in [http1ProtocolOptions http2ProtocolOptions] may be set";
const TARGET_REFS_KINDS: &str =
    "TargetRefs must reference either a Kubernetes Service, a Backend, or an Istio Hostname";
const TARGET_SELECTORS_KINDS: &str =
    "TargetSelectors must reference either a Kubernetes Service, a Backend, or an Istio Hostname";
const CIRCUIT_BREAKERS_ONE: &str =
    "at least one of the fields in [maxConnections maxPendingRequests maxRequests maxRetries] must be set";
const JITTER_LE_REFRESH: &str = "jitter must be less than or equal to refreshRate";
const REFRESH_RATE_MIN: &str = "refreshRate must be at least 1ms";
const HTTP_OR_GRPC: &str = "exactly one of http or grpc must be set";
const CONNECTION_IDLE_INTERVAL_MIN: &str = "connectionIdleInterval must be at least 1ms";
const H2_INTERVAL_MIN: &str = "interval must be at least 1ms";
const H2_TIMEOUT_MIN: &str = "timeout must be at least 1ms";
const CONNECTION_WINDOW: &str =
    "InitialConnectionWindowSize must be between 65535 and 2147483647 bytes (inclusive)";
const STREAM_WINDOW: &str = "InitialStreamWindowSize must be between 65535 and 2147483647 bytes (inclusive)";
const AGGRESSION: &str = "Aggression, if specified, must be a string representing a number greater than 0.0";
const HASH_POLICY_ONE: &str = "exactly one of the fields in [header cookie sourceIP] must be set";
const PREFER_LOCAL_SET: &str = "at least one of the fields in [preferLocal] must be set";
const LOCALITY_XOR_ZONE: &str = "localityType and zoneAware are mutually exclusive";
const ZONE_AWARE_HASHING: &str = "zoneAware is not supported with ringHash or maglev load balancers";
const ONE_LB_TYPE: &str =
    "exactly one of the fields in [leastRequest roundRobin ringHash maglev random] must be set";
const BASE_EJECTION_MIN: &str = "baseEjectionTime must be at least 1ms";
const OUTLIER_INTERVAL_MIN: &str = "interval must be at least 1ms";
const KEEPALIVE_INTERVAL_MIN: &str = "keepAliveInterval must be at least 1 second";
const KEEPALIVE_TIME_MIN: &str = "keepAliveTime must be at least 1 second";
const TLS_FILES_ONE: &str = "At least one of tlsCertificate, tlsKey, or rootCA must be set in TLSFiles";
const TLS_ONE_SOURCE: &str =
    "exactly one of the fields in [secretRef files insecureSkipVerify wellKnownCACertificates] must be set";

// Errors of CEL evaluation, as cel-go words them.
const TO_DURATION_FAILED: &str = "type conversion error from 'string' to 'google.protobuf.Duration'";
const TO_DOUBLE_FAILED: &str = "type conversion error from 'string' to 'double'";

const SKIPPED_RULES: &str = "some validation rules were not checked because the object was invalid; correct the \
                             existing errors to complete validation";

// Ours, not the CRD's: the kernel refuses these at setsockopt time (EINVAL), which would turn
// a valid-looking policy into failing connects. Linux: TCP_KEEPCNT 1..=127 (MAX_TCP_KEEPCNT),
// TCP_KEEPIDLE and TCP_KEEPINTVL 1..=32767 s (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL).
const LINUX_MAX_KEEPCNT: i64 = 127;
const LINUX_MAX_KEEP_SECS: i128 = 32767;
const KEEPALIVE_PROBES_LINUX: &str = "keepAliveProbes must be between 1 and 127 (the Linux TCP_KEEPCNT range): \
                                      set a value in that range, or remove the field to keep the kernel \
                                      default (9)";
const KEEPALIVE_TIME_LINUX: &str = "keepAliveTime must be at most 32767s (9h6m7s, the Linux TCP_KEEPIDLE \
                                    limit): set a shorter duration, or remove the field to keep the kernel \
                                    default (7200s)";
const KEEPALIVE_INTERVAL_LINUX: &str = "keepAliveInterval must be at most 32767s (9h6m7s, the Linux \
                                        TCP_KEEPINTVL limit): set a shorter duration, or remove the field \
                                        to keep the kernel default (75s)";

const DNS_SUBDOMAIN_OR_EMPTY: &str = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const KIND_PATTERN: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
const WELL_KNOWN_CA_PATTERN: &str = r"^(System|([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]))$";
const AGGRESSION_PATTERN: &str = r"^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$";

static GROUP_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(DNS_SUBDOMAIN_OR_EMPTY).expect("pattern"));
static KIND_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(KIND_PATTERN).expect("pattern"));
static QUANTITY_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(QUANTITY_PATTERN).expect("pattern"));
static WELL_KNOWN_CA_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(WELL_KNOWN_CA_PATTERN).expect("pattern"));
static AGGRESSION_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(AGGRESSION_PATTERN).expect("pattern"));

const TLS_VERSIONS: &[&str] = &["AUTO", "1.0", "1.1", "1.2", "1.3"];
const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
];
const SAME_SITE: &[&str] = &["Strict", "Lax", "None"];
const PROXY_PROTOCOL_VERSIONS: &[&str] = &["V1", "V2"];
const LOCALITY_TYPES: &[&str] = &["WeightedLb"];

/// The type names the API server shows as the value of a failed rule on an object or a list.
const OBJECT: &str = "object";
const ARRAY: &str = "array";

/// Every check the API server makes for the CRD, plus the Linux keepalive limits (ours).
/// Only the spec is checked: the API server ignores `status` on create and update (it has a
/// status subresource).
pub fn validate(policy: &BackendConfigPolicy) -> Vec<FieldError> {
    let mut c = Checker::default();
    check_spec(&mut c, &policy.spec);
    c.finish()
}

/// Errors of the two phases: the OpenAPI schema first, then the CEL rules (and ours), which
/// are dropped when the schema phase found a blocking error, as the API server does.
#[derive(Default)]
struct Checker {
    schema: Vec<FieldError>,
    rules: Vec<FieldError>,
    blocking: bool,
}

/// A `duration(self) >= duration('<min>')` rule.
struct AtLeast {
    nanos: i128,
    message: &'static str,
}

impl Checker {
    fn finish(self) -> Vec<FieldError> {
        let mut out = self.schema;
        if self.blocking {
            // kubectl prints the nil path and value of the API server's error as is.
            out.push(FieldError {
                path: "<nil>".into(),
                kind: FieldErrorKind::Invalid,
                value: Some("\"null\"".into()),
                detail: SKIPPED_RULES.into(),
            });
        } else {
            out.extend(self.rules);
        }
        out
    }

    // ---- OpenAPI keywords, worded as kube-openapi and the API server word them.

    fn minimum(&mut self, path: &str, value: Option<i64>, min: i64) -> bool {
        match value {
            Some(v) if v < min => {
                let detail = format!("{path} in body should be greater than or equal to {min}");
                self.schema.push(FieldError::invalid(path, &v, detail));
                false
            }
            _ => true,
        }
    }

    fn maximum(&mut self, path: &str, value: Option<i64>, max: i64) -> bool {
        match value {
            Some(v) if v > max => {
                let detail = format!("{path} in body should be less than or equal to {max}");
                self.schema.push(FieldError::invalid(path, &v, detail));
                false
            }
            _ => true,
        }
    }

    fn range(&mut self, path: &str, value: Option<i64>, min: i64, max: i64) {
        if self.minimum(path, value, min) {
            self.maximum(path, value, max);
        }
    }

    fn min_length(&mut self, path: &str, value: &str, min: usize) {
        if value.chars().count() < min {
            let detail = format!("{path} in body should be at least {min} chars long");
            self.schema.push(FieldError::invalid(path, &value, detail));
        }
    }

    /// The API server's "Too long" error, which blocks the CEL rules.
    fn max_length(&mut self, path: &str, value: &str, max: usize) -> bool {
        if value.chars().count() <= max {
            return true;
        }
        self.blocking = true;
        self.schema.push(FieldError::invalid(
            path,
            &value,
            format!("may not be more than {max} bytes"),
        ));
        false
    }

    fn pattern(&mut self, path: &str, value: &str, re: &Regex) {
        if !re.is_match(value) {
            let detail = format!("{path} in body should match '{}'", re.as_str());
            self.schema.push(FieldError::invalid(path, &value, detail));
        }
    }

    /// An enum: kubectl's "Unsupported value", which blocks the CEL rules.
    fn one_of(&mut self, path: &str, value: Option<&str>, allowed: &[&str]) {
        if let Some(v) = value
            && !allowed.contains(&v)
        {
            self.blocking = true;
            self.schema.push(FieldError::unsupported(path, &v, allowed));
        }
    }

    /// The API server's "Too many" error, which blocks the CEL rules.
    fn max_items(&mut self, path: &str, len: usize, max: usize) {
        if len > max {
            self.blocking = true;
            self.schema.push(FieldError::invalid(
                path,
                &len,
                format!("must have at most {max} items"),
            ));
        }
    }

    // ---- CEL rules.

    fn rule_failed(&mut self, path: &str, value: &impl Serialize, message: &str) {
        self.rules.push(FieldError::invalid(path, value, message));
    }

    /// A rule whose evaluation failed: the API server reports the error and the rule.
    fn rule_error(&mut self, path: &str, value: &impl Serialize, error: &str, message: &str) {
        self.rules.push(FieldError::invalid(
            path,
            value,
            format!("{error} evaluating rule: {message}"),
        ));
    }

    /// A duration field: `maxLength: 32`, the pattern rule and, when given, the minimum rule.
    /// Returns the duration in nanoseconds when every check passed.
    fn duration(&mut self, path: &str, value: Option<&str>, at_least: Option<AtLeast>) -> Option<i128> {
        let v = value?;
        let mut ok = self.max_length(path, v, 32);
        if !matches_kube_duration_pattern(v) {
            self.rule_failed(path, &v, INVALID_DURATION);
            ok = false;
        }
        let parsed = parse_go_duration(v);
        if let Some(min) = at_least {
            match parsed {
                None => {
                    self.rule_error(path, &v, TO_DURATION_FAILED, min.message);
                    ok = false;
                }
                Some(n) if n < min.nanos => {
                    self.rule_failed(path, &v, min.message);
                    ok = false;
                }
                Some(_) => {}
            }
        }
        if ok { parsed } else { None }
    }
}

fn at_least_1ms(message: &'static str) -> Option<AtLeast> {
    Some(AtLeast {
        nanos: NANOS_PER_MILLI,
        message,
    })
}

fn at_least_1s(message: &'static str) -> Option<AtLeast> {
    Some(AtLeast {
        nanos: NANOS_PER_SECOND,
        message,
    })
}

fn count_set(flags: &[bool]) -> usize {
    flags.iter().filter(|f| **f).count()
}

/// The properties are visited in the CRD's (alphabetical) order, each object's own rules first.
fn check_spec(c: &mut Checker, s: &BackendConfigPolicySpec) {
    if s.http1_protocol_options.is_some() && s.http2_protocol_options.is_some() {
        c.rule_failed("spec", &OBJECT, AT_MOST_ONE_HTTP);
    }
    if let Some(cb) = &s.circuit_breakers {
        check_circuit_breakers(c, cb);
    }
    if let Some(o) = &s.common_http_protocol_options {
        let at = "spec.commonHttpProtocolOptions";
        c.duration(&format!("{at}.idleTimeout"), o.idle_timeout.as_deref(), None);
        c.minimum(&format!("{at}.maxHeadersCount"), o.max_headers_count, 0);
        c.minimum(
            &format!("{at}.maxRequestsPerConnection"),
            o.max_requests_per_connection,
            0,
        );
        c.duration(
            &format!("{at}.maxStreamDuration"),
            o.max_stream_duration.as_deref(),
            None,
        );
    }
    c.duration("spec.connectTimeout", s.connect_timeout.as_deref(), None);
    if let Some(dns) = &s.dns {
        check_dns(c, dns);
    }
    if let Some(hc) = &s.health_check {
        check_health_check(c, hc);
    }
    if let Some(h2) = &s.http2_protocol_options {
        check_http2(c, h2);
    }
    if let Some(lb) = &s.load_balancer {
        check_load_balancer(c, lb);
    }
    if let Some(od) = &s.outlier_detection {
        check_outlier_detection(c, od);
    }
    c.minimum(
        "spec.perConnectionBufferLimitBytes",
        s.per_connection_buffer_limit_bytes,
        0,
    );
    check_targets(c, s);
    if let Some(k) = &s.tcp_keepalive {
        check_tcp_keepalive(c, k);
    }
    if let Some(tls) = &s.tls {
        check_tls(c, tls);
    }
    if let Some(p) = &s.upstream_proxy_protocol {
        c.one_of(
            "spec.upstreamProxyProtocol.version",
            p.version.as_deref(),
            PROXY_PROTOCOL_VERSIONS,
        );
    }
}

fn is_policy_target(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Service") | ("gateway.kgateway.dev", "Backend") | ("networking.istio.io", "Hostname")
    )
}

fn check_group_kind(c: &mut Checker, at: &str, group: &str, kind: &str) {
    let group_path = format!("{at}.group");
    c.max_length(&group_path, group, 253);
    c.pattern(&group_path, group, &GROUP_RE);
    let kind_path = format!("{at}.kind");
    c.max_length(&kind_path, kind, 63);
    c.min_length(&kind_path, kind, 1);
    c.pattern(&kind_path, kind, &KIND_RE);
}

fn check_targets(c: &mut Checker, s: &BackendConfigPolicySpec) {
    // `targetRefs: []` reads as absent here, so the CRD's minItems: 1 cannot fail.
    if !s.target_refs.is_empty() {
        c.max_items("spec.targetRefs", s.target_refs.len(), 16);
        if !s.target_refs.iter().all(|r| is_policy_target(&r.group, &r.kind)) {
            c.rule_failed("spec.targetRefs", &ARRAY, TARGET_REFS_KINDS);
        }
        for (i, r) in s.target_refs.iter().enumerate() {
            let at = format!("spec.targetRefs[{i}]");
            check_group_kind(c, &at, &r.group, &r.kind);
            let name_path = format!("{at}.name");
            c.max_length(&name_path, &r.name, 253);
            c.min_length(&name_path, &r.name, 1);
        }
    }
    if !s.target_selectors.is_empty() {
        if !s
            .target_selectors
            .iter()
            .all(|r| is_policy_target(&r.group, &r.kind))
        {
            c.rule_failed("spec.targetSelectors", &ARRAY, TARGET_SELECTORS_KINDS);
        }
        for (i, r) in s.target_selectors.iter().enumerate() {
            check_group_kind(c, &format!("spec.targetSelectors[{i}]"), &r.group, &r.kind);
        }
    }
}

fn check_tcp_keepalive(c: &mut Checker, k: &TcpKeepalive) {
    let at = "spec.tcpKeepalive";
    let interval_path = format!("{at}.keepAliveInterval");
    let interval = c.duration(
        &interval_path,
        k.keep_alive_interval.as_deref(),
        at_least_1s(KEEPALIVE_INTERVAL_MIN),
    );
    let probes_path = format!("{at}.keepAliveProbes");
    let probes_ok = c.minimum(&probes_path, k.keep_alive_probes, 0);
    let time_path = format!("{at}.keepAliveTime");
    let time = c.duration(
        &time_path,
        k.keep_alive_time.as_deref(),
        at_least_1s(KEEPALIVE_TIME_MIN),
    );

    // Ours: what the CRD accepts but Linux refuses, reported only once the CRD's own checks
    // on the field pass.
    if let Some(n) = interval
        && n / NANOS_PER_SECOND > LINUX_MAX_KEEP_SECS
    {
        c.rule_failed(&interval_path, &k.keep_alive_interval, KEEPALIVE_INTERVAL_LINUX);
    }
    if let Some(p) = k.keep_alive_probes
        && probes_ok
        && !(1..=LINUX_MAX_KEEPCNT).contains(&p)
    {
        c.rule_failed(&probes_path, &p, KEEPALIVE_PROBES_LINUX);
    }
    if let Some(n) = time
        && n / NANOS_PER_SECOND > LINUX_MAX_KEEP_SECS
    {
        c.rule_failed(&time_path, &k.keep_alive_time, KEEPALIVE_TIME_LINUX);
    }
}

fn check_circuit_breakers(c: &mut Checker, cb: &CircuitBreakers) {
    let at = "spec.circuitBreakers";
    let any = [
        cb.max_connections,
        cb.max_pending_requests,
        cb.max_requests,
        cb.max_retries,
    ];
    if any.iter().all(Option::is_none) {
        c.rule_failed(at, &OBJECT, CIRCUIT_BREAKERS_ONE);
    }
    c.minimum(&format!("{at}.maxConnections"), cb.max_connections, 1);
    c.minimum(&format!("{at}.maxPendingRequests"), cb.max_pending_requests, 1);
    c.minimum(&format!("{at}.maxRequests"), cb.max_requests, 1);
    c.minimum(&format!("{at}.maxRetries"), cb.max_retries, 0);
}

fn check_dns(c: &mut Checker, dns: &Dns) {
    let at = "spec.dns";
    // !(has(self.jitter) && has(self.refreshRate)) || duration(self.jitter) <= duration(self.refreshRate)
    if let (Some(jitter), Some(refresh)) = (&dns.jitter, &dns.refresh_rate) {
        match (parse_go_duration(jitter), parse_go_duration(refresh)) {
            (Some(j), Some(r)) => {
                if j > r {
                    c.rule_failed(at, &OBJECT, JITTER_LE_REFRESH);
                }
            }
            _ => c.rule_error(at, &OBJECT, TO_DURATION_FAILED, JITTER_LE_REFRESH),
        }
    }
    c.duration(&format!("{at}.jitter"), dns.jitter.as_deref(), None);
    c.duration(
        &format!("{at}.refreshRate"),
        dns.refresh_rate.as_deref(),
        at_least_1ms(REFRESH_RATE_MIN),
    );
}

fn check_health_check(c: &mut Checker, hc: &HealthCheck) {
    let at = "spec.healthCheck";
    if hc.http.is_some() == hc.grpc.is_some() {
        c.rule_failed(at, &OBJECT, HTTP_OR_GRPC);
    }
    c.minimum(&format!("{at}.healthyThreshold"), Some(hc.healthy_threshold), 0);
    if let Some(http) = &hc.http {
        c.one_of(&format!("{at}.http.method"), http.method.as_deref(), HTTP_METHODS);
    }
    c.duration(&format!("{at}.interval"), Some(&hc.interval), None);
    c.duration(&format!("{at}.timeout"), Some(&hc.timeout), None);
    c.minimum(
        &format!("{at}.unhealthyThreshold"),
        Some(hc.unhealthy_threshold),
        0,
    );
}

fn check_http2(c: &mut Checker, h2: &Http2ProtocolOptions) {
    let at = "spec.http2ProtocolOptions";
    if let Some(k) = &h2.connection_keepalive {
        let at = format!("{at}.connectionKeepalive");
        c.duration(
            &format!("{at}.connectionIdleInterval"),
            k.connection_idle_interval.as_deref(),
            at_least_1ms(CONNECTION_IDLE_INTERVAL_MIN),
        );
        c.duration(
            &format!("{at}.interval"),
            k.interval.as_deref(),
            at_least_1ms(H2_INTERVAL_MIN),
        );
        c.duration(
            &format!("{at}.timeout"),
            Some(&k.timeout),
            at_least_1ms(H2_TIMEOUT_MIN),
        );
    }
    check_window_size(
        c,
        &format!("{at}.initialConnectionWindowSize"),
        h2.initial_connection_window_size.as_ref(),
        CONNECTION_WINDOW,
    );
    check_window_size(
        c,
        &format!("{at}.initialStreamWindowSize"),
        h2.initial_stream_window_size.as_ref(),
        STREAM_WINDOW,
    );
    c.range(
        &format!("{at}.maxConcurrentStreams"),
        h2.max_concurrent_streams,
        1,
        2147483647,
    );
}

/// `(type(self) == int && int(self) >= 65535 && int(self) <= 2147483647) || (type(self) == string
/// && quantity(self).isGreaterThan(quantity('65534')) && quantity(self).isLessThan(quantity('2147483648')))`,
/// plus the schema's pattern, which applies to strings only.
fn check_window_size(c: &mut Checker, path: &str, value: Option<&IntOrString>, message: &str) {
    match value {
        None => {}
        Some(IntOrString::Int(i)) => {
            let in_range = (65535..=2147483647).contains(i);
            if !in_range {
                c.rule_failed(path, &i, message);
            }
        }
        Some(IntOrString::String(s)) => {
            c.pattern(path, s, &QUANTITY_RE);
            match Quantity::parse(s) {
                Err(e) => c.rule_error(path, &s, e, message),
                Ok(q) if !(q.is_greater_than(65534) && q.is_less_than(2147483648)) => {
                    c.rule_failed(path, &s, message)
                }
                Ok(_) => {}
            }
        }
    }
}

fn check_load_balancer(c: &mut Checker, lb: &LoadBalancer) {
    let at = "spec.loadBalancer";
    if lb.locality_type.is_some() && lb.zone_aware.is_some() {
        c.rule_failed(at, &OBJECT, LOCALITY_XOR_ZONE);
    }
    if (lb.ring_hash.is_some() || lb.maglev.is_some()) && lb.zone_aware.is_some() {
        c.rule_failed(at, &OBJECT, ZONE_AWARE_HASHING);
    }
    let types = [
        lb.least_request.is_some(),
        lb.round_robin.is_some(),
        lb.ring_hash.is_some(),
        lb.maglev.is_some(),
        lb.random.is_some(),
    ];
    if count_set(&types) != 1 {
        c.rule_failed(at, &OBJECT, ONE_LB_TYPE);
    }
    c.range(
        &format!("{at}.healthyPanicThreshold"),
        lb.healthy_panic_threshold,
        0,
        100,
    );
    if let Some(lr) = &lb.least_request
        && let Some(ss) = &lr.slow_start
    {
        check_slow_start(c, &format!("{at}.leastRequest.slowStart"), ss);
    }
    c.one_of(
        &format!("{at}.localityType"),
        lb.locality_type.as_deref(),
        LOCALITY_TYPES,
    );
    if let Some(m) = &lb.maglev {
        check_hash_policies(c, &format!("{at}.maglev.hashPolicies"), &m.hash_policies);
    }
    if let Some(rh) = &lb.ring_hash {
        check_hash_policies(c, &format!("{at}.ringHash.hashPolicies"), &rh.hash_policies);
        c.minimum(&format!("{at}.ringHash.maximumRingSize"), rh.maximum_ring_size, 0);
        c.minimum(&format!("{at}.ringHash.minimumRingSize"), rh.minimum_ring_size, 0);
    }
    if let Some(rr) = &lb.round_robin
        && let Some(ss) = &rr.slow_start
    {
        check_slow_start(c, &format!("{at}.roundRobin.slowStart"), ss);
    }
    c.duration(
        &format!("{at}.updateMergeWindow"),
        lb.update_merge_window.as_deref(),
        None,
    );
    if let Some(za) = &lb.zone_aware {
        let at = format!("{at}.zoneAware");
        match &za.prefer_local {
            None => c.rule_failed(&at, &OBJECT, PREFER_LOCAL_SET),
            Some(pl) => {
                let at = format!("{at}.preferLocal");
                if let Some(force) = &pl.force {
                    c.minimum(
                        &format!("{at}.force.minEndpointsInZoneThreshold"),
                        force.min_endpoints_in_zone_threshold,
                        1,
                    );
                }
                c.minimum(
                    &format!("{at}.minEndpointsThreshold"),
                    pl.min_endpoints_threshold,
                    1,
                );
                c.range(&format!("{at}.routingEnabled"), pl.routing_enabled, 0, 100);
            }
        }
    }
}

fn check_slow_start(c: &mut Checker, at: &str, ss: &SlowStart) {
    if let Some(a) = &ss.aggression {
        let path = format!("{at}.aggression");
        // self.matches('^-?(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)$') && double(self) > 0.0
        if !AGGRESSION_RE.is_match(a) {
            c.rule_failed(&path, a, AGGRESSION);
        } else {
            match a.parse::<f64>() {
                // Go's ParseFloat refuses what overflows a float64, so CEL's double() fails.
                Ok(x) if x.is_finite() => {
                    if x <= 0.0 {
                        c.rule_failed(&path, a, AGGRESSION);
                    }
                }
                _ => c.rule_error(&path, a, TO_DOUBLE_FAILED, AGGRESSION),
            }
        }
    }
    c.range(&format!("{at}.minWeightPercent"), ss.min_weight_percent, 0, 100);
    c.duration(&format!("{at}.window"), ss.window.as_deref(), None);
}

fn check_hash_policies(c: &mut Checker, at: &str, policies: &[HashPolicy]) {
    // As for targetRefs, an empty list reads as absent, so minItems: 1 cannot fail.
    c.max_items(at, policies.len(), 16);
    for (i, p) in policies.iter().enumerate() {
        let at = format!("{at}[{i}]");
        if count_set(&[p.header.is_some(), p.cookie.is_some(), p.source_ip.is_some()]) != 1 {
            c.rule_failed(&at, &OBJECT, HASH_POLICY_ONE);
        }
        if let Some(cookie) = &p.cookie {
            c.min_length(&format!("{at}.cookie.name"), &cookie.name, 1);
            c.one_of(
                &format!("{at}.cookie.sameSite"),
                cookie.same_site.as_deref(),
                SAME_SITE,
            );
            c.duration(&format!("{at}.cookie.ttl"), cookie.ttl.as_deref(), None);
        }
        if let Some(header) = &p.header {
            c.min_length(&format!("{at}.header.name"), &header.name, 1);
        }
    }
}

fn check_outlier_detection(c: &mut Checker, od: &OutlierDetection) {
    let at = "spec.outlierDetection";
    c.duration(
        &format!("{at}.baseEjectionTime"),
        od.base_ejection_time.as_deref(),
        at_least_1ms(BASE_EJECTION_MIN),
    );
    c.minimum(&format!("{at}.consecutive5xx"), od.consecutive_5xx, 0);
    c.minimum(
        &format!("{at}.consecutiveLocalOriginFailure"),
        od.consecutive_local_origin_failure,
        0,
    );
    c.range(
        &format!("{at}.enforcingConsecutive5xx"),
        od.enforcing_consecutive_5xx,
        0,
        100,
    );
    c.range(
        &format!("{at}.enforcingConsecutiveLocalOriginFailure"),
        od.enforcing_consecutive_local_origin_failure,
        0,
        100,
    );
    c.duration(
        &format!("{at}.interval"),
        od.interval.as_deref(),
        at_least_1ms(OUTLIER_INTERVAL_MIN),
    );
    c.range(
        &format!("{at}.maxEjectionPercent"),
        od.max_ejection_percent,
        0,
        100,
    );
}

fn check_tls(c: &mut Checker, tls: &Tls) {
    let at = "spec.tls";
    let sources = [
        tls.secret_ref.is_some(),
        tls.files.is_some(),
        tls.insecure_skip_verify.is_some(),
        tls.well_known_ca_certificates.is_some(),
    ];
    if count_set(&sources) != 1 {
        c.rule_failed(at, &OBJECT, TLS_ONE_SOURCE);
    }
    if let Some(files) = &tls.files {
        let at = format!("{at}.files");
        if files.tls_certificate.is_none() && files.tls_key.is_none() && files.root_ca.is_none() {
            c.rule_failed(&at, &OBJECT, TLS_FILES_ONE);
        }
        for (name, value) in [
            ("rootCA", &files.root_ca),
            ("tlsCertificate", &files.tls_certificate),
            ("tlsKey", &files.tls_key),
        ] {
            if let Some(v) = value {
                c.min_length(&format!("{at}.{name}"), v, 1);
            }
        }
    }
    if let Some(p) = &tls.parameters {
        c.one_of(
            &format!("{at}.parameters.maxVersion"),
            p.max_version.as_deref(),
            TLS_VERSIONS,
        );
        c.one_of(
            &format!("{at}.parameters.minVersion"),
            p.min_version.as_deref(),
            TLS_VERSIONS,
        );
    }
    if let Some(sni) = &tls.sni {
        c.min_length(&format!("{at}.sni"), sni, 1);
    }
    if let Some(ca) = &tls.well_known_ca_certificates {
        let path = format!("{at}.wellKnownCACertificates");
        c.max_length(&path, ca, 253);
        c.min_length(&path, ca, 1);
        c.pattern(&path, ca, &WELL_KNOWN_CA_RE);
    }
}

// ------------------------------------------------------------------------------------------
// Kubernetes quantities, for CEL's quantity(): exact, so that the bounds are exact.
// ------------------------------------------------------------------------------------------

const QUANTITY_FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const QUANTITY_SUFFIX_ERROR: &str = "unable to parse quantity's suffix";

/// `±digits × 10^exp10 × 2^exp2`, read the way `resource.ParseQuantity` reads a string.
#[derive(Debug, PartialEq)]
struct Quantity {
    negative: bool,
    /// Decimal digits, most significant first, without leading zeros (empty for zero).
    digits: Vec<u8>,
    exp10: i64,
    exp2: u32,
}

impl Quantity {
    fn parse(s: &str) -> Result<Quantity, &'static str> {
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(QUANTITY_FORMAT_ERROR);
        }
        let mut i = 0;
        let negative = match b[0] {
            b'-' => {
                i = 1;
                true
            }
            b'+' => {
                i = 1;
                false
            }
            _ => false,
        };
        let digits_len = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let int_part = &b[i..i + digits_len(i)];
        i += int_part.len();
        let mut frac_part: &[u8] = &[];
        if b.get(i) == Some(&b'.') {
            i += 1;
            frac_part = &b[i..i + digits_len(i)];
            i += frac_part.len();
        }
        // The suffix: letters of "eEinumkKMGTP", an optional sign, digits, and nothing else.
        let suffix_start = i;
        i += b[i..].iter().take_while(|c| b"eEinumkKMGTP".contains(c)).count();
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        i += digits_len(i);
        if i != b.len() {
            return Err(QUANTITY_FORMAT_ERROR);
        }
        let (exp10, exp2): (i64, u32) = match &s[suffix_start..] {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            other => match other.strip_prefix(['e', 'E']).map(str::parse::<i64>) {
                Some(Ok(e)) => (e, 0),
                _ => return Err(QUANTITY_SUFFIX_ERROR),
            },
        };
        let digits: Vec<u8> = int_part
            .iter()
            .chain(frac_part)
            .map(|d| d - b'0')
            .skip_while(|d| *d == 0)
            .collect();
        let exp10 = exp10.saturating_sub(frac_part.len() as i64);
        Ok(Quantity {
            negative,
            digits,
            exp10,
            exp2,
        })
    }

    /// `isGreaterThan(quantity('<n>'))`.
    fn is_greater_than(&self, n: u64) -> bool {
        // Rounding up to the nanounit, as ParseQuantity does, cannot cross an integer.
        !self.negative && self.cmp_nanounits(u128::from(n) * 1_000_000_000) == Ordering::Greater
    }

    /// `isLessThan(quantity('<n>'))`, n > 0: ParseQuantity rounds a positive value up to
    /// the next nanounit, so `2147483647.9999999999` is not less than 2147483648.
    fn is_less_than(&self, n: u64) -> bool {
        self.negative
            || self.digits.is_empty()
            || self.cmp_nanounits(u128::from(n) * 1_000_000_000 - 1) != Ordering::Greater
    }

    /// Compares |self| × 10^9 with `k`, exactly.
    fn cmp_nanounits(&self, k: u128) -> Ordering {
        if self.digits.is_empty() {
            return 0.cmp(&k);
        }
        let e = self.exp10.saturating_add(9);
        // The leading digit's power of ten: the value is in [10^lead, 10^(lead+1) × 2^60).
        let lead = (self.digits.len() as i64 - 1).saturating_add(e);
        if lead > 40 {
            return Ordering::Greater; // beyond any u128
        }
        if lead < -20 {
            return if k == 0 { Ordering::Greater } else { Ordering::Less }; // below 1
        }
        let mut left = self.digits.clone();
        left.resize(left.len() + e.max(0) as usize, 0);
        for _ in 0..self.exp2 {
            double_decimal(&mut left);
        }
        let mut right: Vec<u8> = k.to_string().bytes().map(|d| d - b'0').collect();
        right.resize(right.len() + (-e).max(0) as usize, 0);
        cmp_decimal(&left, &right)
    }
}

fn double_decimal(digits: &mut Vec<u8>) {
    let mut carry = 0;
    for d in digits.iter_mut().rev() {
        let v = *d * 2 + carry;
        *d = v % 10;
        carry = v / 10;
    }
    if carry > 0 {
        digits.insert(0, carry);
    }
}

fn cmp_decimal(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |x: &[u8]| x.iter().position(|d| *d != 0).map_or(0, |p| x.len() - p);
    let (la, lb) = (strip(a), strip(b));
    la.cmp(&lb)
        .then_with(|| a[a.len() - la..].cmp(&b[b.len() - lb..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec_yaml: &str) -> BackendConfigPolicy {
        let doc = format!(
            "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: p\n  \
             namespace: default\nspec:\n{}",
            spec_yaml.lines().map(|l| format!("  {l}\n")).collect::<String>()
        );
        let value: serde_json::Value = serde_yaml_ng::from_str(&doc).expect("test YAML parses");
        serde_json::from_value(value).expect("test policy deserializes")
    }

    fn messages(spec_yaml: &str) -> Vec<String> {
        validate(&policy(spec_yaml))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const TARGET: &str = "targetRefs:\n- group: \"\"\n  kind: Service\n  name: httpbin\n";

    fn keepalive(fields: &str) -> Vec<String> {
        messages(&format!(
            "{TARGET}tcpKeepalive:\n{}",
            fields.lines().map(|l| format!("  {l}\n")).collect::<String>()
        ))
    }

    #[test]
    fn the_guide_policy_is_valid() {
        assert_eq!(
            keepalive("keepAliveProbes: 3\nkeepAliveTime: 30s\nkeepAliveInterval: 5s"),
            Vec::<String>::new()
        );
        assert_eq!(keepalive("keepAliveTime: 1m30s"), Vec::<String>::new());
        assert_eq!(messages("tcpKeepalive: {}"), Vec::<String>::new());
        assert_eq!(
            messages(&format!("{TARGET}connectTimeout: 5s")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn keepalive_time_below_one_second() {
        assert_eq!(
            keepalive("keepAliveTime: 500ms"),
            [
                "spec.tcpKeepalive.keepAliveTime: Invalid value: \"500ms\": keepAliveTime must be at least 1 second"
            ]
        );
        assert_eq!(
            keepalive("keepAliveInterval: 0s"),
            [
                "spec.tcpKeepalive.keepAliveInterval: Invalid value: \"0s\": keepAliveInterval must be at least 1 second"
            ]
        );
    }

    #[test]
    fn keepalive_fraction_fails_the_pattern_only() {
        // 1.5s is at least 1s for CEL's duration(), but the pattern has no fractions.
        assert_eq!(
            keepalive("keepAliveTime: 1.5s"),
            [
                "spec.tcpKeepalive.keepAliveTime: Invalid value: \"1.5s\": invalid duration value (write whole numbers with a unit, up to 4 parts: 30s, 1m30s, 500ms, 1h)"
            ]
        );
    }

    #[test]
    fn keepalive_unparsable_duration_reports_both_rules() {
        assert_eq!(
            keepalive("keepAliveTime: abc"),
            [
                "spec.tcpKeepalive.keepAliveTime: Invalid value: \"abc\": invalid duration value (write whole numbers with a unit, up to 4 parts: 30s, 1m30s, 500ms, 1h)",
                "spec.tcpKeepalive.keepAliveTime: Invalid value: \"abc\": type conversion error from 'string' to \
                 'google.protobuf.Duration' evaluating rule: keepAliveTime must be at least 1 second",
            ]
        );
    }

    #[test]
    fn keepalive_probes_bounds() {
        assert_eq!(
            keepalive("keepAliveProbes: -1"),
            [
                "spec.tcpKeepalive.keepAliveProbes: Invalid value: -1: spec.tcpKeepalive.keepAliveProbes in body \
                 should be greater than or equal to 0"
            ]
        );
        for probes in [0, 128, 200] {
            let got = keepalive(&format!("keepAliveProbes: {probes}"));
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(
                got[0].starts_with(&format!(
                    "spec.tcpKeepalive.keepAliveProbes: Invalid value: {probes}: keepAliveProbes must be between 1 \
                     and 127 (the Linux TCP_KEEPCNT range)"
                )),
                "{got:?}"
            );
        }
        assert!(keepalive("keepAliveProbes: 1").is_empty());
        assert!(keepalive("keepAliveProbes: 127").is_empty());
    }

    #[test]
    fn keepalive_linux_time_limits() {
        assert!(keepalive("keepAliveTime: 32767s\nkeepAliveInterval: 9h6m7s").is_empty());
        assert!(
            keepalive("keepAliveTime: 32767s999ms").is_empty(),
            "the fraction is dropped"
        );
        let got = keepalive("keepAliveTime: 32768s\nkeepAliveInterval: 10h");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with(
            "spec.tcpKeepalive.keepAliveInterval: Invalid value: \"10h\": keepAliveInterval must be at most 32767s"
        ));
        assert!(got[0].contains("TCP_KEEPINTVL"));
        assert!(got[1].starts_with(
            "spec.tcpKeepalive.keepAliveTime: Invalid value: \"32768s\": keepAliveTime must be at most 32767s"
        ));
        assert!(got[1].contains("TCP_KEEPIDLE"));
    }

    #[test]
    fn deployment_target_ref_is_refused() {
        let got = messages("targetRefs:\n- group: apps\n  kind: Deployment\n  name: d");
        assert_eq!(
            got,
            [
                "spec.targetRefs: Invalid value: \"array\": TargetRefs must reference either a Kubernetes Service, \
                 a Backend, or an Istio Hostname"
            ]
        );
        let got = messages("targetSelectors:\n- group: apps\n  kind: Deployment\n  matchLabels: {app: a}");
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("TargetSelectors must reference"));
    }

    #[test]
    fn target_ref_schema_checks() {
        let got = messages("targetRefs:\n- group: Bad_Group\n  kind: \"\"\n  name: \"\"");
        assert!(got.contains(
            &"spec.targetRefs[0].group: Invalid value: \"Bad_Group\": spec.targetRefs[0].group in body should match \
              '^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'"
                .to_string()
        ));
        assert!(got.contains(
            &"spec.targetRefs[0].kind: Invalid value: \"\": spec.targetRefs[0].kind in body should be at least 1 \
              chars long"
                .to_string()
        ));
        assert!(got.contains(
            &"spec.targetRefs[0].name: Invalid value: \"\": spec.targetRefs[0].name in body should be at least 1 \
              chars long"
                .to_string()
        ));
        // Pattern and length errors do not block the rules.
        assert!(got.iter().any(|m| m.contains("TargetRefs must reference")));
    }

    #[test]
    fn at_most_one_http_protocol() {
        assert_eq!(
            messages(&format!(
                "{TARGET}http1ProtocolOptions: {{}}\nhttp2ProtocolOptions: {{}}"
            )),
            [
                "spec: Invalid value: \"object\": at most one of the fields in [http1ProtocolOptions \
                 http2ProtocolOptions] may be set"
            ]
        );
        assert!(messages(&format!("{TARGET}http2ProtocolOptions: {{}}")).is_empty());
    }

    #[test]
    fn dns_jitter_and_refresh_rate() {
        assert_eq!(
            messages(&format!("{TARGET}dns:\n  refreshRate: 5s\n  jitter: 10s")),
            ["spec.dns: Invalid value: \"object\": jitter must be less than or equal to refreshRate"]
        );
        assert!(messages(&format!("{TARGET}dns:\n  refreshRate: 5s\n  jitter: 5s")).is_empty());
        assert_eq!(
            messages(&format!("{TARGET}dns:\n  refreshRate: 0s")),
            ["spec.dns.refreshRate: Invalid value: \"0s\": refreshRate must be at least 1ms"]
        );
        assert_eq!(
            messages(&format!("{TARGET}dns:\n  refreshRate: 5s\n  jitter: 1x")),
            [
                "spec.dns: Invalid value: \"object\": type conversion error from 'string' to \
                 'google.protobuf.Duration' evaluating rule: jitter must be less than or equal to refreshRate",
                "spec.dns.jitter: Invalid value: \"1x\": invalid duration value (write whole numbers with a unit, up to 4 parts: 30s, 1m30s, 500ms, 1h)",
            ]
        );
    }

    #[test]
    fn blocking_errors_skip_the_rules() {
        let got = messages(&format!(
            "{TARGET}tcpKeepalive:\n  keepAliveTime: 500ms\ntls:\n  insecureSkipVerify: true\n  parameters:\n    \
             maxVersion: \"1.4\""
        ));
        assert_eq!(
            got,
            [
                "spec.tls.parameters.maxVersion: Unsupported value: \"1.4\": supported values: \"AUTO\", \"1.0\", \
                 \"1.1\", \"1.2\", \"1.3\"",
                "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was \
                 invalid; correct the existing errors to complete validation",
            ]
        );
        let got = keepalive("keepAliveTime: 123456789012345678901234567890123s");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].ends_with("may not be more than 32 bytes"), "{got:?}");
    }

    #[test]
    fn load_balancer_rules() {
        let got = messages(&format!("{TARGET}loadBalancer:\n  healthyPanicThreshold: 101"));
        assert_eq!(
            got,
            [
                "spec.loadBalancer.healthyPanicThreshold: Invalid value: 101: spec.loadBalancer.healthyPanicThreshold \
                 in body should be less than or equal to 100",
                "spec.loadBalancer: Invalid value: \"object\": exactly one of the fields in [leastRequest roundRobin \
                 ringHash maglev random] must be set",
            ]
        );
        let got = messages(&format!(
            "{TARGET}loadBalancer:\n  ringHash:\n    hashPolicies:\n    - header: {{name: x}}\n      sourceIP: {{}}\n  \
             zoneAware: {{}}"
        ));
        assert_eq!(
            got,
            [
                "spec.loadBalancer: Invalid value: \"object\": zoneAware is not supported with ringHash or maglev \
                 load balancers",
                "spec.loadBalancer.ringHash.hashPolicies[0]: Invalid value: \"object\": exactly one of the fields in \
                 [header cookie sourceIP] must be set",
                "spec.loadBalancer.zoneAware: Invalid value: \"object\": at least one of the fields in [preferLocal] \
                 must be set",
            ]
        );
        assert!(messages(&format!("{TARGET}loadBalancer:\n  random: {{}}")).is_empty());
    }

    #[test]
    fn aggression() {
        let slow_start = |a: &str| {
            messages(&format!(
                "{TARGET}loadBalancer:\n  roundRobin:\n    slowStart:\n      aggression: {a}"
            ))
        };
        for ok in ["\"1.0\"", "\"0.5\"", "\".5\"", "\"2.\"", "\"3\""] {
            assert!(slow_start(ok).is_empty(), "{ok}");
        }
        for bad in ["\"\"", "\"0\"", "\"-1\"", "\"0.0\"", "\"1e3\"", "\"abc\""] {
            let got = slow_start(bad);
            assert_eq!(got.len(), 1, "{bad}: {got:?}");
            assert!(got[0].ends_with(AGGRESSION), "{got:?}");
        }
        let huge = format!("\"{}\"", "9".repeat(400));
        assert!(slow_start(&huge)[0].contains("type conversion error from 'string' to 'double'"));
    }

    #[test]
    fn window_sizes_as_integers_and_quantities() {
        let h2 = |v: &str| {
            messages(&format!(
                "{TARGET}http2ProtocolOptions:\n  initialStreamWindowSize: {v}"
            ))
        };
        for ok in [
            "65535",
            "2147483647",
            "\"65535\"",
            "\"64Ki\"",
            "\"2147483647\"",
            "\"65534.5\"",
            "\"1e5\"",
            "\"1.5Gi\"",
        ] {
            assert!(h2(ok).is_empty(), "{ok}: {:?}", h2(ok));
        }
        for bad in [
            "65534",
            "2147483648",
            "-1",
            "\"65534\"",
            "\"2Gi\"",
            "\"2147483647.9999999999\"",
            "\"64k\"",
            "\"-1\"",
        ] {
            let got = h2(bad);
            assert_eq!(got.len(), 1, "{bad}: {got:?}");
            assert!(got[0].ends_with(STREAM_WINDOW), "{got:?}");
        }
        let got = h2("\"64 Ki\"");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("in body should match"), "{got:?}");
        assert!(
            got[1].contains("quantities must match the regular expression"),
            "{got:?}"
        );
        let got = h2("\"1e2.5\"");
        assert_eq!(
            got.len(),
            1,
            "the pattern allows it, ParseQuantity does not: {got:?}"
        );
        assert!(got[0].contains("quantities must match"), "{got:?}");
    }

    #[test]
    fn quantity_parsing() {
        let q = Quantity::parse("-0012.50Ki").unwrap();
        assert_eq!(
            q,
            Quantity {
                negative: true,
                digits: vec![1, 2, 5, 0],
                exp10: -2,
                exp2: 10
            }
        );
        assert_eq!(Quantity::parse("1Kb"), Err(QUANTITY_FORMAT_ERROR));
        assert_eq!(Quantity::parse("1iK"), Err(QUANTITY_SUFFIX_ERROR));
        assert_eq!(Quantity::parse("1e"), Err(QUANTITY_SUFFIX_ERROR));
        assert_eq!(Quantity::parse(""), Err(QUANTITY_FORMAT_ERROR));
        assert_eq!(Quantity::parse("1x"), Err(QUANTITY_FORMAT_ERROR));
        assert!(Quantity::parse("1E3").unwrap().is_greater_than(999));
        assert!(!Quantity::parse("1E3").unwrap().is_greater_than(1000));
        assert!(Quantity::parse("1e-9999999999").unwrap().is_less_than(1));
        assert!(!Quantity::parse("1e99999").unwrap().is_less_than(1));
        assert!(Quantity::parse("0.0000000001").unwrap().is_less_than(1));
        assert!(
            !Quantity::parse("0.9999999999").unwrap().is_less_than(1),
            "rounded up to 1"
        );
    }

    #[test]
    fn health_check_and_outlier_detection() {
        let got = messages(&format!(
            "{TARGET}healthCheck:\n  timeout: 1s\n  interval: 1s\n  healthyThreshold: -1\n  unhealthyThreshold: 1"
        ));
        assert_eq!(
            got,
            [
                "spec.healthCheck.healthyThreshold: Invalid value: -1: spec.healthCheck.healthyThreshold in body \
                 should be greater than or equal to 0",
                "spec.healthCheck: Invalid value: \"object\": exactly one of http or grpc must be set",
            ]
        );
        let got = messages(&format!(
            "{TARGET}outlierDetection:\n  interval: 0ms\n  maxEjectionPercent: 100"
        ));
        assert_eq!(
            got,
            ["spec.outlierDetection.interval: Invalid value: \"0ms\": interval must be at least 1ms"]
        );
    }

    #[test]
    fn tls_rules() {
        assert_eq!(
            messages(&format!("{TARGET}tls:\n  sni: example.com")),
            [
                "spec.tls: Invalid value: \"object\": exactly one of the fields in [secretRef files insecureSkipVerify \
                 wellKnownCACertificates] must be set"
            ]
        );
        assert_eq!(
            messages(&format!("{TARGET}tls:\n  files: {{}}")),
            [
                "spec.tls.files: Invalid value: \"object\": At least one of tlsCertificate, tlsKey, or rootCA must be \
                 set in TLSFiles"
            ]
        );
        assert!(messages(&format!("{TARGET}tls:\n  wellKnownCACertificates: System")).is_empty());
        assert!(messages(&format!("{TARGET}tls:\n  secretRef:\n    name: tls")).is_empty());
    }

    #[test]
    fn circuit_breakers_and_proxy_protocol() {
        assert_eq!(
            messages(&format!("{TARGET}circuitBreakers:\n  trackRemaining: true")),
            [format!(
                "spec.circuitBreakers: Invalid value: \"object\": {CIRCUIT_BREAKERS_ONE}"
            )]
        );
        assert_eq!(
            messages(&format!("{TARGET}upstreamProxyProtocol:\n  version: V3")),
            [
                "spec.upstreamProxyProtocol.version: Unsupported value: \"V3\": supported values: \"V1\", \"V2\"",
                &format!("<nil>: Invalid value: \"null\": {SKIPPED_RULES}"),
            ]
        );
    }

    #[test]
    fn unsupported_fields_name_each_field() {
        let p = policy(&format!(
            "{TARGET}connectTimeout: 5s\ntcpKeepalive: {{}}\ndns:\n  respectTTL: true\nperConnectionBufferLimitBytes: 1"
        ));
        let got: Vec<String> = unsupported_fields(&p.spec)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                format!("spec.dns: Forbidden: {NOT_YET}"),
                format!("spec.perConnectionBufferLimitBytes: Forbidden: {NOT_YET}"),
            ]
        );
    }

    #[test]
    fn int_or_string_reads_64_bit_integers() {
        let v: IntOrString = serde_json::from_str("2147483648").unwrap();
        assert_eq!(v, IntOrString::Int(2147483648));
        let v: IntOrString = serde_json::from_str("\"64Ki\"").unwrap();
        assert_eq!(v, IntOrString::String("64Ki".into()));
        assert!(serde_json::from_str::<IntOrString>("1.5").is_err());
        assert!(serde_json::from_str::<IntOrString>("18446744073709551615").is_err());
        assert_eq!(serde_json::to_string(&IntOrString::Int(-3)).unwrap(), "-3");
    }

    // ---- The CRD itself: the types and the messages must cover all of it.

    fn crd_schema() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/conformance/kgateway/crd-backendconfigpolicies-main.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let crd: serde_json::Value = serde_yaml_ng::from_str(&text).expect("the CRD parses");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// A value that sets every property the schema declares.
    fn example(schema: &serde_json::Value) -> serde_json::Value {
        use serde_json::{Value, json};
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            return json!(65535);
        }
        if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
            return first.clone();
        }
        match schema["type"].as_str() {
            Some("object") => {
                let mut map = serde_json::Map::new();
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (name, prop) in props {
                        map.insert(name.clone(), example(prop));
                    }
                }
                if let Some(extra) = schema.get("additionalProperties") {
                    map.insert("key".into(), example(extra));
                }
                Value::Object(map)
            }
            Some("array") => json!([example(&schema["items"])]),
            Some("integer") => json!(1),
            Some("boolean") => json!(true),
            Some("string") if schema["format"] == "date-time" => json!("2026-01-02T03:04:05Z"),
            Some("string") => json!("x"),
            other => panic!("schema type {other:?} not handled: {schema}"),
        }
    }

    fn assert_round_trips<T: serde::de::DeserializeOwned + Serialize>(what: &str, value: serde_json::Value) {
        let mut ignored = Vec::new();
        let typed: T = serde_ignored::deserialize(value.clone(), |path| ignored.push(path.to_string()))
            .unwrap_or_else(|e| panic!("{what} does not deserialize: {e}"));
        assert_eq!(
            ignored,
            Vec::<String>::new(),
            "{what}: fields of the CRD that the types do not have"
        );
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(back, value, "{what}: the types lose or rename fields");
    }

    #[test]
    fn the_types_cover_every_field_of_the_crd() {
        let schema = crd_schema();
        assert_round_trips::<BackendConfigPolicySpec>("spec", example(&schema["properties"]["spec"]));
        assert_round_trips::<PolicyStatus>("status", example(&schema["properties"]["status"]));
    }

    fn collect_messages(schema: &serde_json::Value, out: &mut Vec<String>) {
        match schema {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    if key == "x-kubernetes-validations" {
                        for rule in value.as_array().into_iter().flatten() {
                            out.push(
                                rule["message"]
                                    .as_str()
                                    .expect("every rule has a message")
                                    .to_string(),
                            );
                        }
                    } else {
                        collect_messages(value, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_messages(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_cel_message_of_the_crd_is_implemented() {
        let mut all = Vec::new();
        collect_messages(&crd_schema(), &mut all);
        assert_eq!(
            all.len(),
            45,
            "the CRD's rules changed: review validate() against them"
        );
        let ours = [
            INVALID_DURATION,
            AT_MOST_ONE_HTTP,
            TARGET_REFS_KINDS,
            TARGET_SELECTORS_KINDS,
            CIRCUIT_BREAKERS_ONE,
            JITTER_LE_REFRESH,
            REFRESH_RATE_MIN,
            HTTP_OR_GRPC,
            CONNECTION_IDLE_INTERVAL_MIN,
            H2_INTERVAL_MIN,
            H2_TIMEOUT_MIN,
            CONNECTION_WINDOW,
            STREAM_WINDOW,
            AGGRESSION,
            HASH_POLICY_ONE,
            PREFER_LOCAL_SET,
            LOCALITY_XOR_ZONE,
            ZONE_AWARE_HASHING,
            ONE_LB_TYPE,
            BASE_EJECTION_MIN,
            OUTLIER_INTERVAL_MIN,
            KEEPALIVE_INTERVAL_MIN,
            KEEPALIVE_TIME_MIN,
            TLS_FILES_ONE,
            TLS_ONE_SOURCE,
        ];
        // Ours may add a hint after the CRD's words.
        let ours: Vec<&str> = ours
            .iter()
            .map(|m| m.split(" (write whole numbers").next().unwrap_or(m))
            .collect();
        for message in &all {
            assert!(
                ours.contains(&message.as_str()),
                "CRD rule message not implemented: {message:?}"
            );
        }
        for message in &ours {
            assert!(
                all.iter().any(|m| m == message),
                "message not in the CRD: {message:?}"
            );
        }
    }
}
