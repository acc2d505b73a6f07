//! Answers the proxy gives itself, as Envoy's: the status, the body, and the response flag the
//! access log shows for why no upstream answered.

use crate::transport::ConnectError;

/// Envoy's response flags: why a request did not get (all of) an upstream response. The access
/// log shows the short code (`%RESPONSE_FLAGS%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseFlag {
    /// UH: the cluster has no endpoint to send to.
    NoHealthyUpstream,
    /// UF: connecting to the upstream failed or timed out.
    UpstreamConnectionFailure,
    /// UT: no response head within the route timeout.
    UpstreamRequestTimeout,
    /// UC: the upstream connection ended before the response did.
    UpstreamConnectionTermination,
    /// UR: the upstream reset the stream (HTTP/2 RST_STREAM).
    UpstreamRemoteReset,
    /// URX: the retry limit was reached.
    #[expect(dead_code, reason = "retries with a limit come with the retry policy")]
    UpstreamRetryLimitExceeded,
    /// UO: a circuit breaker refused the request.
    UpstreamOverflow,
    /// UPE: the upstream's answer is not HTTP we can forward.
    UpstreamProtocolError,
    /// DC: the client went away before the response was complete.
    DownstreamConnectionTermination,
    /// DPE: the client's request does not follow HTTP/1.1.
    DownstreamProtocolError,
    /// SI: the stream moved no byte for the stream idle timeout.
    StreamIdleTimeout,
    /// NR: no route matches the request.
    NoRouteFound,
    /// NC: the route's cluster does not exist.
    NoClusterFound,
    /// UMSDR: the request ran past the cluster's max stream duration.
    UpstreamMaxStreamDurationReached,
    /// LR: the proxy reset the stream itself.
    #[expect(dead_code, reason = "no local reset path is flagged yet")]
    LocalReset,
}

impl ResponseFlag {
    /// Envoy's short code, as the access log writes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamProtocolError => "UPE",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::StreamIdleTimeout => "SI",
            ResponseFlag::NoRouteFound => "NR",
            ResponseFlag::NoClusterFound => "NC",
            ResponseFlag::UpstreamMaxStreamDurationReached => "UMSDR",
            ResponseFlag::LocalReset => "LR",
        }
    }
}

/// An answer the proxy gives instead of an upstream's.
#[derive(Clone)]
pub(crate) struct LocalReply {
    pub status: u16,
    pub flag: Option<ResponseFlag>,
    pub body: String,
    /// A circuit breaker refused it: `x-envoy-overloaded: true`, as Envoy says it.
    pub overloaded: bool,
    /// The request is gRPC: the answer is gRPC's (`grpc.rs`: 200, grpc-status, grpc-message).
    pub grpc: bool,
    /// A redirect's Location header (`route_filters.rs`).
    pub location: Option<String>,
    /// The response header edits of the route (and backend) that answered locally: Envoy
    /// applies them to its redirect, direct_response and cluster-not-found/no-healthy replies.
    pub response_edits: crate::route_filters::Picked,
    /// More headers of the answer: a CORS preflight's (`cors.rs`).
    pub headers: Vec<(String, String)>,
}

/// The start of Envoy's body for a request that got no response head.
const RESET_BEFORE_HEADERS: &str = "upstream connect error or disconnect/reset before headers. reset reason:";

impl LocalReply {
    fn new(status: u16, flag: Option<ResponseFlag>, body: impl Into<String>) -> LocalReply {
        LocalReply {
            status,
            flag,
            body: body.into(),
            overloaded: false,
            grpc: false,
            location: None,
            response_edits: crate::route_filters::Picked::default(),
            headers: Vec::new(),
        }
    }

    /// The same reply with the response header edits of the route that gave it.
    pub(crate) fn with_response_edits(mut self, edits: crate::route_filters::Picked) -> LocalReply {
        self.response_edits = edits;
        self
    }

    /// The same reply for a gRPC request (`grpc::is_grpc`), as Envoy sends it.
    pub(crate) fn for_grpc(mut self, is_grpc: bool) -> LocalReply {
        self.grpc = is_grpc;
        self
    }

    /// The HTTP status the client gets (200 for gRPC: the error is in grpc-status), which the
    /// access log and the downstream counters show, as Envoy's do.
    pub(crate) fn sent_status(&self) -> u16 {
        if self.grpc { 200 } else { self.status }
    }

    /// A circuit breaker refused the request (Envoy's answer to a pool overflow).
    pub(crate) fn overflow() -> LocalReply {
        LocalReply {
            overloaded: true,
            ..LocalReply::new(
                503,
                Some(ResponseFlag::UpstreamOverflow),
                format!("{RESET_BEFORE_HEADERS} overflow"),
            )
        }
    }

    /// The request ran past the cluster's maxStreamDuration before the response head.
    pub(crate) fn max_stream_duration() -> LocalReply {
        LocalReply::new(
            504,
            Some(ResponseFlag::UpstreamMaxStreamDurationReached),
            "upstream max stream duration reached",
        )
    }

    /// A WebSocket upgrade routed to a cluster that speaks HTTP/2 (no extended CONNECT yet).
    pub(crate) fn websocket_to_http2() -> LocalReply {
        LocalReply::new(
            501,
            None,
            "WebSocket to an HTTP/2 backend is not supported: serve WebSocket from a Service port \
             without an HTTP/2 appProtocol (kubernetes.io/h2c, http2, grpc)",
        )
    }

    /// No tunnels yet: CONNECT is refused (and the connection closes).
    pub(crate) fn connect_refused() -> LocalReply {
        LocalReply::new(405, None, "")
    }

    pub(crate) fn no_route() -> LocalReply {
        LocalReply::new(404, Some(ResponseFlag::NoRouteFound), "")
    }

    /// A RequestRedirect: the status, the Location, no body (as Envoy's redirect action).
    pub(crate) fn redirect(status: u16, location: String) -> LocalReply {
        LocalReply {
            location: Some(location),
            ..LocalReply::new(status, None, "")
        }
    }

    /// The route answers itself (Envoy's direct_response).
    pub(crate) fn direct(status: u16, body: &str) -> LocalReply {
        LocalReply::new(status, None, body)
    }

    /// The picked backend does not resolve to a cluster.
    pub(crate) fn no_cluster() -> LocalReply {
        LocalReply::new(500, Some(ResponseFlag::NoClusterFound), "")
    }

    pub(crate) fn no_healthy_upstream() -> LocalReply {
        LocalReply::new(503, Some(ResponseFlag::NoHealthyUpstream), "no healthy upstream")
    }

    /// The route timeout ran out before the response head.
    pub(crate) fn upstream_timeout() -> LocalReply {
        LocalReply::new(
            504,
            Some(ResponseFlag::UpstreamRequestTimeout),
            "upstream request timeout",
        )
    }

    /// The upstream sent no response head within the stream idle timeout (Envoy: 504, SI).
    pub(crate) fn stream_timeout_after_request() -> LocalReply {
        LocalReply::new(504, Some(ResponseFlag::StreamIdleTimeout), "stream timeout")
    }

    /// The client's body stalled past the stream idle timeout (Envoy: 408, SI).
    pub(crate) fn stream_timeout_in_request() -> LocalReply {
        LocalReply::new(408, Some(ResponseFlag::StreamIdleTimeout), "stream timeout")
    }

    /// The client's chunked body does not follow the grammar.
    pub(crate) fn bad_request_body() -> LocalReply {
        LocalReply::new(400, Some(ResponseFlag::DownstreamProtocolError), "")
    }

    pub(crate) fn upstream_protocol_error() -> LocalReply {
        LocalReply::new(
            502,
            Some(ResponseFlag::UpstreamProtocolError),
            format!("{RESET_BEFORE_HEADERS} protocol error"),
        )
    }

    pub(crate) fn upstream_terminated() -> LocalReply {
        LocalReply::new(
            503,
            Some(ResponseFlag::UpstreamConnectionTermination),
            format!("{RESET_BEFORE_HEADERS} connection termination"),
        )
    }

    /// The upstream reset the stream (HTTP/2 RST_STREAM) before the response head; `refused`:
    /// with REFUSED_STREAM (Envoy's "remote refused stream reset").
    pub(crate) fn upstream_reset(refused: bool) -> LocalReply {
        let reason = if refused {
            "remote refused stream reset"
        } else {
            "remote reset"
        };
        LocalReply::new(
            503,
            Some(ResponseFlag::UpstreamRemoteReset),
            format!("{RESET_BEFORE_HEADERS} {reason}"),
        )
    }

    pub(crate) fn connect_failed(error: ConnectError) -> LocalReply {
        let reason = match error {
            ConnectError::Timeout => "connection timeout".to_string(),
            ConnectError::Failed(err) => {
                format!("remote connection failure, transport failure reason: {err}")
            }
        };
        LocalReply::new(
            503,
            Some(ResponseFlag::UpstreamConnectionFailure),
            format!("{RESET_BEFORE_HEADERS} {reason}"),
        )
    }

    /// The reply as HTTP/1.1 bytes. An answer to HEAD says how long its body would be and
    /// sends none: bytes after the head would be read as the start of the next response.
    pub(crate) fn to_http1(&self, close: bool, is_head: bool) -> String {
        let mut head = self.http1_head(close).into_bytes();
        self.response_edits.edit_http1_response(&mut head);
        let mut out =
            String::from_utf8(head).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        if !self.grpc && !is_head {
            out.push_str(&self.body);
        }
        out
    }

    /// The reply's HTTP/1.1 head, up to its empty line.
    fn http1_head(&self, close: bool) -> String {
        if self.grpc {
            let mut out = String::from("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n");
            for (name, value) in crate::grpc::local_reply_headers(self.status, &self.body) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
            if self.overloaded {
                out.push_str("x-envoy-overloaded: true\r\n");
            }
            if close {
                out.push_str("connection: close\r\n");
            }
            out.push_str("\r\n");
            return out;
        }
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-length: {}\r\n",
            self.status,
            self.body.len()
        );
        if !self.body.is_empty() {
            out.push_str("content-type: text/plain\r\n");
        }
        if let Some(location) = &self.location {
            out.push_str(&format!("location: {location}\r\n"));
        }
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.overloaded {
            out.push_str("x-envoy-overloaded: true\r\n");
        }
        if close {
            out.push_str("connection: close\r\n");
        }
        out.push_str("\r\n");
        out
    }
}

/// The answer to a request head that cannot be served (malformed, too large, too slow); the
/// connection closes after it.
pub(crate) fn refused_head(status: u16, reason: &str) -> String {
    format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
}
