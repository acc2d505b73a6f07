//! Upstream PROXY protocol: a header with the client's addresses first on every connection.

use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    /// The text header (`PROXY TCP4 ...\r\n`), Envoy's default.
    V1,
    /// The binary header.
    V2,
}

/// The PROXY protocol socket, around `inner` (TLS) or the raw socket.
pub(super) fn render(version: ProxyProtocolVersion, inner: Option<Value>, cluster: &mut Map<String, Value>) {
    let inner = inner.unwrap_or_else(|| {
        json!({
            "name": "envoy.transport_sockets.raw_buffer",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}
        })
    });
    let config = match version {
        ProxyProtocolVersion::V1 => json!({}),
        ProxyProtocolVersion::V2 => json!({"version": "V2"}),
    };
    cluster.insert(
        "transport_socket".into(),
        json!({
            "name": "envoy.transport_sockets.upstream_proxy_protocol",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport",
                "config": config,
                "transport_socket": inner
            }
        }),
    );
}
