//! commonHttpProtocolOptions and http1ProtocolOptions.

use api::backend_config_policy::BackendConfigPolicySpec;
use snapshot::{CommonHttpOptions, Http1Options};

use super::{count, duration};

pub(super) fn common(spec: &BackendConfigPolicySpec) -> Option<CommonHttpOptions> {
    spec.common_http_protocol_options
        .as_ref()
        .map(|c| CommonHttpOptions {
            idle_timeout: duration(c.idle_timeout.as_deref()),
            max_headers_count: count(c.max_headers_count),
            max_requests_per_connection: count(c.max_requests_per_connection),
            max_stream_duration: duration(c.max_stream_duration.as_deref()),
        })
}

pub(super) fn http1(spec: &BackendConfigPolicySpec) -> Option<Http1Options> {
    spec.http1_protocol_options.as_ref().map(|h| Http1Options {
        enable_trailers: h.enable_trailers,
        preserve_header_case: h.preserve_http1_header_case,
        override_stream_error_on_invalid_http_message: h.override_stream_error_on_invalid_http_message,
    })
}
