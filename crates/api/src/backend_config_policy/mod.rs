//! `gateway.kgateway.dev/v1alpha1` BackendConfigPolicy: the whole schema of kgateway's CRD as
//! Rust types (`types.rs`), and [`validate`], which gives the verdicts and messages of the API
//! server for that CRD (`rules.rs`, on the checker of `schema.rs`, with `quantity.rs` for CEL's
//! `quantity()`). Tests in `tests.rs`.

mod quantity;
mod rules;
mod schema;
#[cfg(test)]
mod tests;
mod types;

pub use rules::validate;
pub use types::*;

use crate::error::FieldError;

pub const API_VERSION: &str = "gateway.kgateway.dev/v1alpha1";
pub const KIND: &str = "BackendConfigPolicy";

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
