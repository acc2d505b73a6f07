//! A cluster's HTTP protocol options (Envoy's HttpProtocolOptions on the cluster:
//! `common_http_protocol_options` and the HTTP/1 codec's options) and
//! `per_connection_buffer_limit_bytes`, as one small copy a request reads once. Where each acts:
//! - `idleTimeout`: the maintenance sweep closes pooled connections idle past it
//!   (`upstream_cx_idle_timeout`), instead of `--upstream-idle-timeout`; 0 never closes them.
//! - `maxRequestsPerConnection`: a connection given its Nth request closes after it
//!   (`upstream_cx_max_requests`); 0 or unset: unlimited.
//! - `maxHeadersCount`: a response head with more header lines is a protocol error: 502 `UPE`
//!   (`upstream_cx_protocol_error`). Unset: Envoy's 100, which is also what kgw's parser holds.
//! - `maxStreamDuration`: the exchange runs at most that long from when it starts: 504 `UMSDR`
//!   before the response head, a reset after (`upstream_rq_max_duration_reached`); 0: off.
//! - `enableTrailers`: without it, chunked trailers are dropped both ways, as Envoy's HTTP/1
//!   codec does (the last chunk and the final CRLF still go).
//! - `preserveHttp1HeaderCase`: without it, the request head goes upstream with lower-case
//!   header names, as Envoy's HTTP/1 codec writes them; with it, as the client wrote them. The
//!   response side is left as the upstream wrote it either way: in Envoy the case of what the
//!   client receives is the listener's option (its HTTP connection manager's header format),
//!   not the cluster's, and kgw passes it through unchanged.
//! - `overrideStreamErrorOnInvalidHttpMessage`: accepted, no change: on an HTTP/1.1 upstream
//!   an invalid message always ends the connection (Envoy's HTTP/1 codec resets it whatever
//!   this says; the option only matters for HTTP/2 streams).

use std::num::NonZeroU32;
use std::time::Duration;

use snapshot::UpstreamPolicy;

use crate::recycle::{READ_CHUNK, read_some};

#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpOptions {
    idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<NonZeroU32>,
    pub max_headers_count: Option<u32>,
    pub max_stream_duration: Option<Duration>,
    /// The largest read from the upstream (and of an upload's body from the client) while a
    /// request runs: `perConnectionBufferLimitBytes` when it is below kgw's read chunk.
    pub read_limit: Option<usize>,
    pub enable_trailers: bool,
    pub preserve_header_case: bool,
}

impl HttpOptions {
    pub(crate) fn of(policy: &UpstreamPolicy) -> HttpOptions {
        let common = policy.common_http.unwrap_or_default();
        let http1 = policy.http1.unwrap_or_default();
        HttpOptions {
            idle_timeout: common.idle_timeout,
            max_requests_per_connection: common.max_requests_per_connection.and_then(NonZeroU32::new),
            max_headers_count: common.max_headers_count,
            max_stream_duration: common.max_stream_duration.filter(|d| !d.is_zero()),
            // What kgw buffers per upstream connection is one read at a time (the body is
            // written on before the next read): at most READ_CHUNK (4 KiB) of body each way,
            // and a response head whole (up to 60 KiB, as Envoy also buffers headers whole).
            // Envoy's limit (default 1 MiB) is a bound on that: a lower one makes each read
            // smaller; 0 means no limit.
            read_limit: policy
                .per_connection_buffer_limit_bytes
                .map(|n| n as usize)
                .filter(|n| *n > 0 && *n < READ_CHUNK),
            enable_trailers: http1.enable_trailers == Some(true),
            preserve_header_case: http1.preserve_header_case == Some(true),
        }
    }

    /// How long a pooled connection may idle: the cluster's `idleTimeout`, else `default`;
    /// None when 0 (Envoy: no idle timeout).
    pub(crate) fn pooled_idle_timeout(&self, default: Duration) -> Option<Duration> {
        match self.idle_timeout {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(default),
        }
    }

    /// The response head has more header lines than `maxHeadersCount`.
    pub(crate) fn too_many_headers(&self, count: usize) -> bool {
        self.max_headers_count.is_some_and(|max| count > max as usize)
    }
}

/// Reads some bytes, at most `limit` when one is set (see `HttpOptions::read_limit`).
pub(crate) async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
    limit: Option<usize>,
) -> std::io::Result<usize> {
    match limit {
        None => read_some(stream, buf).await,
        Some(limit) => {
            buf.reserve(limit);
            let mut bounded = tokio::io::AsyncReadExt::take(&mut *stream, limit as u64);
            tokio::io::AsyncReadExt::read_buf(&mut bounded, buf).await
        }
    }
}
