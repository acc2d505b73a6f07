//! `gateway.kgateway.dev/v1alpha1` BackendConfigPolicy: the whole schema of kgateway's CRD as
//! Rust types (`types.rs`), and [`validate`], which gives the verdicts and messages of the API
//! server for that CRD (`rules.rs`, on the checker of `schema.rs`, with `quantity.rs` for CEL's
//! `quantity()`), and the limits of the data plane that the CRD does not know (`limits.rs`).
//! Tests in `tests.rs`.

mod limits;
mod quantity;
mod rules;
mod schema;
#[cfg(test)]
mod tests;
mod types;

/// The fields the data plane does not implement yet; the gate of every kind is `crate::unsupported`.
pub use crate::unsupported::backend_config_policy as unsupported_fields;
pub use rules::validate;

/// The CRD's rules and the kernel's limits for a `tcpKeepalive` object at `at`: the same
/// verdicts wherever the type is used (a ListenerPolicy's downstream keepalive too).
pub fn tcp_keepalive_errors(at: &str, k: &TcpKeepalive) -> Vec<crate::FieldError> {
    let mut c = schema::Checker::default();
    rules::check_tcp_keepalive(&mut c, at, k);
    limits::check_tcp_keepalive(&mut c, at, k);
    c.finish()
}
pub use types::*;

pub const API_VERSION: &str = "gateway.kgateway.dev/v1alpha1";
pub const KIND: &str = "BackendConfigPolicy";
