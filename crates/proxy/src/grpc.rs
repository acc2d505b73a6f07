//! gRPC's view of a local reply: a gRPC request (content-type `application/grpc[+...]`) that the
//! proxy answers itself (no route, no healthy upstream, a timeout, ...) is answered as Envoy's
//! `sendLocalReply` answers it: HTTP 200, `content-type: application/grpc`, `grpc-status` from
//! the HTTP status (Envoy's `Grpc::Utility::httpToGrpcStatus`, itself gRPC's
//! http-grpc-status-mapping.md), `grpc-message` the reply's body, and no body (a trailers-only
//! response: one HEADERS frame with END_STREAM over HTTP/2). Shared by both client protocols.

/// Is this request gRPC? As Envoy decides it (`Grpc::Common::hasGrpcContentType`, checked
/// against Envoy 1.40): the content-type is exactly `application/grpc` or starts
/// `application/grpc+` (`+proto`, `+json`); not gRPC-Web (`application/grpc-web*`, Envoy's
/// grpc_web filter's business), not with parameters, not in another case.
pub(crate) fn is_grpc(content_type: Option<&[u8]>) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    content_type
        .is_some_and(|ct| ct == GRPC || ct.strip_prefix(GRPC).is_some_and(|rest| rest.starts_with(b"+")))
}

/// The gRPC status for an HTTP status, as Envoy maps it (`httpToGrpcStatus`). Envoy maps 504
/// to UNAVAILABLE (14), not DEADLINE_EXCEEDED: gRPC's table says so, for a status an
/// intermediary gave.
pub(crate) fn status_for_http(status: u16) -> u8 {
    match status {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// `grpc-message` as gRPC wants it: percent-encoded outside printable ASCII, and `%` itself
/// (Envoy encodes the local reply's body so).
pub(crate) fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The headers of a trailers-only gRPC answer for a local reply of `status` with `body`:
/// (name, value) pairs after `:status 200`.
pub(crate) fn local_reply_headers(status: u16, body: &str) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("content-type", "application/grpc".to_string()),
        ("grpc-status", status_for_http(status).to_string()),
    ];
    if !body.is_empty() {
        headers.push(("grpc-message", encode_message(body)));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised_as_envoy_recognises_them() {
        assert!(is_grpc(Some(b"application/grpc")));
        assert!(is_grpc(Some(b"application/grpc+proto")));
        assert!(!is_grpc(Some(b"application/grpc-web")));
        assert!(!is_grpc(Some(b"application/grpc-web+proto")));
        assert!(!is_grpc(Some(b"application/grpc;foo=bar")));
        assert!(!is_grpc(Some(b"Application/GRPC")));
        assert!(!is_grpc(Some(b"application/grpcx")));
        assert!(!is_grpc(Some(b"application/json")));
        assert!(!is_grpc(None));
    }

    #[test]
    fn http_statuses_map_as_envoy_maps_them() {
        let cases = [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (502, 14),
            (503, 14),
            (504, 14),
            (500, 2),
            (408, 2),
        ];
        for (http, grpc) in cases {
            assert_eq!(status_for_http(http), grpc, "HTTP {http}");
        }
    }

    #[test]
    fn the_message_is_percent_encoded() {
        assert_eq!(encode_message("no healthy upstream"), "no healthy upstream");
        assert_eq!(encode_message("100% é\n"), "100%25 %C3%A9%0A");
        let headers = local_reply_headers(503, "no healthy upstream");
        assert_eq!(headers[1], ("grpc-status", "14".to_string()));
        assert_eq!(headers[2], ("grpc-message", "no healthy upstream".to_string()));
        assert_eq!(local_reply_headers(404, "").len(), 2);
    }

    #[test]
    fn an_http1_local_reply_to_grpc_is_a_200_with_the_status_in_headers() {
        let reply = crate::local_reply::LocalReply::no_healthy_upstream().for_grpc(true);
        assert_eq!(reply.sent_status(), 200);
        assert_eq!(
            reply.to_http1(false, false),
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\ncontent-type: application/grpc\r\n\
             grpc-status: 14\r\ngrpc-message: no healthy upstream\r\n\r\n"
        );
        let plain = crate::local_reply::LocalReply::no_healthy_upstream().for_grpc(false);
        assert_eq!(plain.sent_status(), 503);
    }
}
