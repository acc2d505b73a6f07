//! A Service port's or a Backend's `appProtocol` -> the protocol its cluster speaks, read as
//! kgateway reads it (`ir.ParseAppProtocol`: Istio's protocol names and GEP-1911's).
//!
//! Only `appProtocol` chooses HTTP/2, as in kgateway: a BackendConfigPolicy's TLS
//! `alpnProtocols` is what the TLS handshake offers, not what the cluster speaks (kgateway
//! copies it into the TLS context and leaves the cluster's protocol alone), and a GRPCRoute
//! does not change its backends' protocol either: a gRPC Service says `kubernetes.io/h2c`
//! (or `grpc`) on its port. `kubernetes.io/ws` leaves the cluster on HTTP/1.1 (kgateway turns
//! it into a WebSocket upgrade on the routes to it, not a cluster setting).

use api::{Kind, Object, ObjectKey};
use snapshot::UpstreamProtocol;

/// The values that make a cluster speak HTTP/2.
pub const HTTP2_APP_PROTOCOLS: &[&str] = &["http2", "grpc", "grpc-web", "kubernetes.io/h2c"];

pub(crate) fn upstream_protocol(app_protocol: Option<&str>) -> UpstreamProtocol {
    match app_protocol {
        Some(p) if HTTP2_APP_PROTOCOLS.contains(&p) => UpstreamProtocol::Http2,
        _ => UpstreamProtocol::Http1,
    }
}

/// Whether a route's backend (a Service port, or a Backend) says `kubernetes.io/ws`.
pub(crate) fn is_websocket(
    resources: &crate::Resources,
    kind: &str,
    namespace: &str,
    name: &str,
    port: Option<i32>,
) -> bool {
    let kind = match kind {
        "Service" => Kind::Service,
        "Backend" => Kind::Backend,
        _ => return false,
    };
    let key = ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let app_protocol = match resources.get(&key).map(|o| &**o) {
        Some(Object::Service(s)) => s
            .spec
            .iter()
            .flat_map(|spec| spec.ports.iter().flatten())
            .find(|p| Some(p.port) == port)
            .and_then(|p| p.app_protocol.as_deref()),
        Some(Object::Backend(b)) => b.spec.r#static.as_ref().and_then(|s| s.app_protocol.as_deref()),
        _ => None,
    };
    app_protocol == Some(WEBSOCKET_APP_PROTOCOL)
}

const WEBSOCKET_APP_PROTOCOL: &str = "kubernetes.io/ws";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_grpc_and_h2c_speak_http2_everything_else_http1() {
        for p in ["http2", "grpc", "grpc-web", "kubernetes.io/h2c"] {
            assert_eq!(upstream_protocol(Some(p)), UpstreamProtocol::Http2, "{p}");
        }
        // Exact names, as kgateway compares them: `HTTP2` and `h2c` are not its values.
        for p in [
            "kubernetes.io/ws",
            "http",
            "https",
            "HTTP2",
            "h2c",
            "kubernetes.io/wss",
        ] {
            assert_eq!(upstream_protocol(Some(p)), UpstreamProtocol::Http1, "{p}");
        }
        assert_eq!(upstream_protocol(None), UpstreamProtocol::Http1);
    }
}
