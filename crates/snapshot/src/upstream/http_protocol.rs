//! HTTP protocol options of upstream connections: Envoy's `HttpProtocolOptions` extension.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Http2Options, UpstreamProtocol, put, put_duration};

/// Envoy's `common_http_protocol_options`, upstream side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommonHttpOptions {
    /// A pooled connection with no request for this long is closed (`upstream_cx_idle_timeout`).
    pub idle_timeout: Option<Duration>,
    /// A response with more headers than this is refused: 502, flag UPE.
    pub max_headers_count: Option<u32>,
    /// A connection is closed after serving this many requests (`upstream_cx_max_requests`).
    pub max_requests_per_connection: Option<u32>,
    /// An upstream request running longer is ended (flag UMSDR).
    pub max_stream_duration: Option<Duration>,
}

/// Envoy's `Http1ProtocolOptions` for upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Http1Options {
    /// Forward chunked trailers (otherwise they are dropped, as Envoy does).
    pub enable_trailers: Option<bool>,
    /// Keep header names' case as the client sent them (otherwise lower case, as Envoy does).
    pub preserve_header_case: Option<bool>,
    pub override_stream_error_on_invalid_http_message: Option<bool>,
}

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const PRESERVE_CASE: &str = "envoy.http.stateful_header_formatters.preserve_case";

/// Envoy's `HttpProtocolOptions` extension of a cluster. An HTTP/2 cluster always has one
/// (its `explicit_http_config` is what makes Envoy speak HTTP/2), with its HTTP/2 options; an
/// HTTP/1.1 cluster has one only when a policy sets common or HTTP/1 options, and never shows
/// HTTP/2 options.
pub(super) fn render(
    common: Option<&CommonHttpOptions>,
    http1: Option<&Http1Options>,
    http2: Option<&Http2Options>,
    protocol: UpstreamProtocol,
    cluster: &mut Map<String, Value>,
) {
    if protocol == UpstreamProtocol::Http1 && common.is_none() && http1.is_none() {
        return;
    }
    let mut options = Map::new();
    options.insert(
        "@type".into(),
        format!("type.googleapis.com/{HTTP_OPTIONS}").into(),
    );
    if let Some(c) = common {
        let mut m = Map::new();
        put_duration(&mut m, "idle_timeout", c.idle_timeout);
        put(&mut m, "max_headers_count", c.max_headers_count);
        put(
            &mut m,
            "max_requests_per_connection",
            c.max_requests_per_connection,
        );
        put_duration(&mut m, "max_stream_duration", c.max_stream_duration);
        options.insert("common_http_protocol_options".into(), Value::Object(m));
    }
    let explicit = match protocol {
        UpstreamProtocol::Http2 => {
            json!({"http2_protocol_options": http2.map(Http2Options::render).unwrap_or_default()})
        }
        UpstreamProtocol::Http1 => json!({"http_protocol_options": http1_fields(http1)}),
    };
    options.insert("explicit_http_config".into(), explicit);
    cluster.insert(
        "typed_extension_protocol_options".into(),
        json!({ HTTP_OPTIONS: options }),
    );
}

fn http1_fields(http1: Option<&Http1Options>) -> Map<String, Value> {
    let mut h1 = Map::new();
    if let Some(o) = http1 {
        if o.enable_trailers == Some(true) {
            h1.insert("enable_trailers".into(), true.into());
        }
        if o.preserve_header_case == Some(true) {
            h1.insert(
                "header_key_format".into(),
                json!({"stateful_formatter": {"name": PRESERVE_CASE, "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.header_formatters.preserve_case.v3.PreserveCaseFormatterConfig"}}}),
            );
        }
        put(
            &mut h1,
            "override_stream_error_on_invalid_http_message",
            o.override_stream_error_on_invalid_http_message,
        );
    }
    h1
}
