//! HTTP/2 clients: a TLS connection that negotiated `h2` by ALPN, or a plain one that opened
//! with the HTTP/2 connection preface (prior knowledge, as Envoy's codec AUTO detects it; no
//! h2c Upgrade from HTTP/1.1, which Envoy does not do by default either). One task drives the
//! connection (h2's server, under the limits below); each stream is served in its own task:
//! routed and balanced as an HTTP/1.1 request is, proxied (`h2_to_h1.rs` to an HTTP/1.1
//! upstream, `h2_to_h2.rs` to an HTTP/2 one) or answered locally (as gRPC when the request is gRPC: `grpc.rs`), counted and
//! logged (`HTTP/2`). The connection ends with a GOAWAY when it idled (the listener's idle
//! timeout, with no stream open) or when the data plane drains; streams in flight finish.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::access_log::Entry;
use crate::cluster::{ClusterRuntime, Endpoint};
use crate::downstream::{self, ClientStream};
use crate::h2_to_h1::{self, StreamRequest};
use crate::h2_to_h2;
use crate::local_reply::{LocalReply, ResponseFlag};
use crate::proxy_protocol::ProxyAddresses;
use crate::router::RequestView;
use crate::{DataPlane, grpc, h2_body, load_balancing, stats};

/// The limits an HTTP/2 client connection is held to, in one place: each says what it defends
/// against. Values are Envoy's edge best practice where it has one
/// (https://www.envoyproxy.io/docs/envoy/latest/configuration/best_practices/edge).
pub(crate) mod limits {
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; more are
    /// refused with REFUSED_STREAM): one connection cannot hold unbounded tasks and upstream
    /// requests. Envoy's edge value.
    pub const MAX_CONCURRENT_STREAMS: u32 = 100;
    /// The largest header list (SETTINGS_MAX_HEADER_LIST_SIZE, HPACK-decoded size): a head as
    /// large as the HTTP/1.1 path takes (`h1::MAX_HEAD_BYTES`, Envoy's 60 KiB default); larger
    /// ones are refused, so a client cannot make the proxy hold huge heads.
    pub const MAX_HEADER_LIST_SIZE: u32 = crate::h1::MAX_HEAD_BYTES as u32;
    /// Each stream's receive window: what a client may send ahead on one stream before the
    /// proxy reads it (Envoy's edge value, 64 KiB): memory per stream stays bounded.
    pub const INITIAL_STREAM_WINDOW: u32 = 64 * 1024;
    /// The connection's receive window, shared by its streams (Envoy's edge value, 1 MiB).
    pub const INITIAL_CONNECTION_WINDOW: u32 = 1024 * 1024;
    /// Rapid reset (CVE-2023-44487): streams a client opened and reset before the proxy
    /// accepted them, pending at once; beyond this the connection gets GOAWAY
    /// (ENHANCE_YOUR_CALM). h2's and hyper's value.
    pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
    /// "MadeYouReset" (CVE-2025-8671): streams the proxy had to reset because the client broke
    /// the protocol on them (a bad frame on an open stream); beyond this, GOAWAY. h2's and
    /// hyper's value.
    pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
    /// Bytes queued to send on one stream beyond what the client's window takes: the proxy
    /// reads no more from the upstream until the client reads, so a slow reader cannot make it
    /// buffer a whole response.
    pub const MAX_SEND_BUFFER_SIZE: usize = 64 * 1024;
    /// Rapid reset paced to the proxy's speed (CVE-2023-44487 when every stream is accepted
    /// before its reset arrives, so the pending-accept cap above never fills; each stream still
    /// costs an upstream request): as Envoy (overload.premature_reset_total_stream_count and
    /// premature_reset_min_stream_lifetime_seconds), a connection that has opened this many
    /// streams, more than half of them reset within PREMATURE_RESET_LIFETIME, gets GOAWAY
    /// (ENHANCE_YOUR_CALM) and ends.
    pub const PREMATURE_RESET_MIN_STREAMS: u64 = 500;
    pub const PREMATURE_RESET_LIFETIME: std::time::Duration = std::time::Duration::from_secs(1);
}

/// The start of the HTTP/2 connection preface (RFC 9113, 3.4). HTTP/1.1's parser refuses it
/// (version 2.0), so a plain connection is checked for it only on that refusal: the HTTP/1.1
/// path pays nothing.
const PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// Do these first bytes of a plain connection open an HTTP/2 one?
pub(crate) fn is_preface(first_bytes: &[u8]) -> bool {
    first_bytes.starts_with(PREFACE_START)
}

fn builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits::MAX_CONCURRENT_STREAMS)
        .max_header_list_size(limits::MAX_HEADER_LIST_SIZE)
        .initial_window_size(limits::INITIAL_STREAM_WINDOW)
        .initial_connection_window_size(limits::INITIAL_CONNECTION_WINDOW)
        .max_pending_accept_reset_streams(limits::MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(Some(limits::MAX_LOCAL_ERROR_RESET_STREAMS))
        .max_send_buffer_size(limits::MAX_SEND_BUFFER_SIZE);
    builder
}

/// What every stream of one client connection shares.
struct Client {
    bound: SocketAddr,
    peer: SocketAddr,
    /// The client's address as x-forwarded-for carries it.
    address: String,
    scheme: &'static str,
    /// The SNI of a TLS connection.
    server_name: Option<Box<str>>,
    /// The address the client connected to (a PROXY protocol header's destination).
    local: Option<SocketAddr>,
    /// Streams being served, and when the last one ended (for the idle timeout).
    active: AtomicUsize,
    started: tokio::time::Instant,
    last_end_ms: AtomicU64,
    /// Streams accepted, and those of them reset within `limits::PREMATURE_RESET_LIFETIME`.
    streams: AtomicU64,
    premature_resets: AtomicU64,
}

impl Client {
    /// Envoy's premature reset check: enough streams, and more than half reset early.
    fn resets_too_many(&self) -> bool {
        let streams = self.streams.load(Ordering::Relaxed);
        streams >= limits::PREMATURE_RESET_MIN_STREAMS
            && self.premature_resets.load(Ordering::Relaxed) * 2 > streams
    }
}

/// One stream being served; counts out when it ends.
struct StreamGuard(Arc<Client>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let client = &self.0;
        let ms = client.started.elapsed().as_millis() as u64;
        client.last_end_ms.store(ms, Ordering::Relaxed);
        client.active.fetch_sub(1, Ordering::Release);
    }
}

/// Serves an HTTP/2 client connection until it ends. `read`: bytes already read from it (the
/// preface, on a plain port), served first. `removed` fires when its listener closes.
pub(crate) async fn serve(
    dp: &Arc<DataPlane>,
    stream: ClientStream,
    read: Vec<u8>,
    bound: SocketAddr,
    peer: SocketAddr,
    removed: tokio::sync::watch::Receiver<bool>,
) {
    stats::inc(&dp.downstream.downstream_cx_http2_total);
    stats::inc(&dp.downstream.downstream_cx_http2_active);
    let client = Arc::new(Client {
        bound,
        peer,
        address: downstream::client_address(peer),
        scheme: if stream.is_tls() { "https" } else { "http" },
        server_name: stream.server_name(),
        local: stream.tcp().local_addr().ok(),
        active: AtomicUsize::new(0),
        started: tokio::time::Instant::now(),
        last_end_ms: AtomicU64::new(0),
        streams: AtomicU64::new(0),
        premature_resets: AtomicU64::new(0),
    });
    let io = Replayed {
        read,
        at: 0,
        io: stream,
    };
    // The preface and SETTINGS exchange, bounded as a request head is.
    let handshake = builder().handshake::<_, Bytes>(io);
    match tokio::time::timeout(dp.options.request_headers_timeout, handshake).await {
        Ok(Ok(conn)) => drive(dp, conn, client, removed).await,
        Ok(Err(e)) => tracing::debug!(%peer, "HTTP/2 handshake failed: {e}"),
        Err(_) => tracing::debug!(%peer, "HTTP/2 handshake not finished in time"),
    }
    stats::dec(&dp.downstream.downstream_cx_http2_active);
}

/// Accepts streams until the connection ends; a GOAWAY goes when the data plane drains, the
/// listener closes, or the connection idled with no stream open, and the connection then ends
/// once its streams did.
async fn drive(
    dp: &Arc<DataPlane>,
    mut conn: h2::server::Connection<Replayed<ClientStream>, Bytes>,
    client: Arc<Client>,
    mut removed: tokio::sync::watch::Receiver<bool>,
) {
    let idle_timeout = dp.options.idle_timeout;
    let mut drain_started = dp.drain_started.subscribe();
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    // Already closed while the connection was being set up (its TLS handshake, say): at once.
    let mut going_away = dp.is_draining() || *removed.borrow_and_update();
    if going_away {
        conn.graceful_shutdown();
    }
    // Set once the connection, going away with no stream open, was given a request head's
    // time to end: a client that does not let it end (it reads nothing, so not even the GOAWAY
    // goes out) is then dropped, as the HTTP/1.1 path bounds its close.
    let mut close_armed = false;
    loop {
        tokio::select! {
            biased;
            accepted = conn.accept() => match accepted {
                None => return,
                Some(Err(e)) => {
                    tracing::debug!(peer = %client.peer, "HTTP/2 connection: {e}");
                    return;
                }
                Some(Ok((request, respond))) => {
                    client.active.fetch_add(1, Ordering::Acquire);
                    client.streams.fetch_add(1, Ordering::Relaxed);
                    if client.resets_too_many() && !going_away {
                        stats::inc(&dp.downstream.downstream_rq_too_many_premature_resets);
                        tracing::debug!(peer = %client.peer, "HTTP/2 connection: too many premature resets");
                        going_away = true;
                        conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                    }
                    let guard = StreamGuard(client.clone());
                    let dp = dp.clone();
                    tokio::spawn(async move {
                        let opened = tokio::time::Instant::now();
                        let reset = serve_stream(&dp, &guard.0, request, respond).await;
                        if reset && opened.elapsed() < limits::PREMATURE_RESET_LIFETIME {
                            guard.0.premature_resets.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(guard);
                    });
                }
            },
            _ = drain_started.changed(), if !going_away => {
                going_away = true;
                conn.graceful_shutdown();
            }
            _ = removed.changed(), if !going_away => {
                going_away = true;
                conn.graceful_shutdown();
            }
            () = &mut idle => {
                let last_end = client.started + Duration::from_millis(client.last_end_ms.load(Ordering::Relaxed));
                let due = last_end + idle_timeout;
                let now = tokio::time::Instant::now();
                if client.active.load(Ordering::Acquire) > 0 {
                    // Streams open: look again a whole timeout later.
                    idle.as_mut().reset(now + idle_timeout);
                } else if close_armed {
                    tracing::debug!(peer = %client.peer, "HTTP/2 connection did not end after its GOAWAY; dropped");
                    return;
                } else if going_away || due <= now {
                    if !going_away {
                        going_away = true;
                        conn.graceful_shutdown();
                    }
                    close_armed = true;
                    idle.as_mut().reset(now + dp.options.request_headers_timeout);
                } else {
                    idle.as_mut().reset(due);
                }
            }
        }
    }
}

/// Routes and proxies one stream (or answers it locally), then counts and logs it. True when
/// the stream ended reset (for the premature reset check).
async fn serve_stream(
    dp: &Arc<DataPlane>,
    client: &Client,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> bool {
    stats::inc(&dp.downstream.downstream_rq_http2_total);
    let runtime = dp.runtime();
    let (parts, mut body) = request.into_parts();
    let method = parts.method.as_str();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = match parts.uri.path() {
        "" => "/",
        p => p,
    };
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("");
    let header = |name: &str| parts.headers.get(name).map(|v| v.as_bytes());
    let logged = dp.access_log.capture(
        method.as_bytes(),
        path_and_query.as_bytes(),
        "HTTP/2",
        header("x-forwarded-for"),
        header("user-agent"),
        authority.as_bytes(),
    );
    let view = RequestView {
        method,
        path,
        query: parts.uri.query().unwrap_or(""),
        host: authority,
        header: &header,
        server_name: client.server_name.as_deref(),
        scheme: client.scheme,
    };
    let mut cluster_name = String::new();
    let mut pick = load_balancing::PickContext::new(&parts.headers, client.peer);
    let routed = downstream::route_to_endpoint(
        &runtime,
        client.bound,
        &view,
        &mut pick,
        logged.is_some().then_some(&mut cluster_name),
    );
    let set_cookies = std::mem::take(&mut pick.set_cookies);
    let route_filters = std::mem::take(&mut pick.route_filters);
    let is_grpc = grpc::is_grpc(header("content-type"));
    let is_head = parts.method == http::Method::HEAD;
    let (status, flag, upstream) = match routed {
        Err(reply) => {
            let reply = reply.for_grpc(is_grpc);
            send_local_reply(&mut respond, &reply, is_head, dp.options.stream_idle_timeout).await;
            (reply.sent_status(), reply.flag, None)
        }
        Ok((cluster, endpoint, route)) => {
            let proxied = if cluster.policy_ref().proxy_protocol.is_some() {
                client.local.map(|destination| ProxyAddresses {
                    source: client.peer,
                    destination,
                })
            } else {
                None
            };
            let request = StreamRequest {
                parts: &parts,
                authority,
                path_and_query,
                client: &client.address,
                scheme: client.scheme,
                proxied,
                set_cookies: &set_cookies,
                route_filters: &route_filters,
                route_timeout: crate::route_timeout::of(route, dp.options.route_timeout),
            };
            crate::mirror::from_http2(&runtime, route, &request, body.is_end_stream());
            match forward(dp, &cluster, &endpoint, request, &mut body, &mut respond).await {
                Ok(ended) => (ended.status, ended.flag, Some(endpoint.address)),
                Err(reply) => {
                    let reply = reply.for_grpc(is_grpc);
                    send_local_reply(&mut respond, &reply, is_head, dp.options.stream_idle_timeout).await;
                    (reply.sent_status(), reply.flag, Some(endpoint.address))
                }
            }
        }
    };
    dp.downstream.count_status(status);
    discard_rest(&mut body).await;
    if let Some(request) = logged {
        dp.access_log.log(Entry {
            request,
            status,
            flag,
            upstream,
            cluster: &cluster_name,
        });
    }
    // h2 keeps the reason of a reset stream; one that ended otherwise has none (and is not
    // waited for: polled once).
    let reset = std::future::poll_fn(|cx| std::task::Poll::Ready(respond.poll_reset(cx))).await;
    matches!(reset, std::task::Poll::Ready(Ok(_)))
}

/// Proxies the stream to `endpoint` in the cluster's protocol (counted as active while it
/// runs). Err: a failure before the response head, for the caller to answer locally.
async fn forward(
    dp: &DataPlane,
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Arc<Endpoint>,
    request: StreamRequest<'_>,
    body: &mut RecvStream,
    respond: &mut SendResponse<Bytes>,
) -> Result<h2_to_h1::Ended, LocalReply> {
    stats::inc(&cluster.stats().upstream_rq_active);
    stats::inc(&endpoint.active_requests);
    let result = if cluster.speaks_http2() {
        h2_to_h2::exchange(dp, cluster, endpoint, &request, body, respond).await
    } else {
        h2_to_h1::exchange(dp, cluster, endpoint, &request, body, respond).await
    };
    stats::dec(&cluster.stats().upstream_rq_active);
    stats::dec(&endpoint.active_requests);
    match &result {
        Ok(ended) => cluster.stats().count_status(ended.status),
        Err(reply) => {
            if reply.flag == Some(ResponseFlag::UpstreamRequestTimeout) {
                stats::inc(&cluster.stats().upstream_rq_timeout);
            }
            if reply.flag == Some(ResponseFlag::StreamIdleTimeout) {
                stats::inc(&dp.downstream.downstream_rq_idle_timeout);
            }
            cluster.stats().count_status(reply.status);
        }
    }
    result
}

/// Answers a stream with a local reply: as HTTP/2 (status, body, the headers the HTTP/1.1 reply
/// has), or for a gRPC request as Envoy answers one (`grpc.rs`: 200, trailers-only).
/// A client that never opens its window for the body is let go after `idle` (the stream idle
/// timeout).
pub(crate) async fn send_local_reply(
    respond: &mut SendResponse<Bytes>,
    reply: &LocalReply,
    is_head: bool,
    idle: Duration,
) {
    let mut response = http::Response::builder();
    if reply.overloaded {
        response = response.header("x-envoy-overloaded", "true");
    }
    if reply.grpc {
        response = response.status(200);
        for (name, value) in grpc::local_reply_headers(reply.status, &reply.body) {
            response = response.header(name, value);
        }
        if let Some(headers) = response.headers_mut() {
            reply.response_edits.edit_h2_response(headers);
        }
        if let Ok(response) = response.body(()) {
            let _ = respond.send_response(response, true);
        }
        return;
    }
    response = response
        .status(reply.status)
        .header("content-length", reply.body.len());
    if !reply.body.is_empty() {
        response = response.header("content-type", "text/plain");
    }
    if let Some(location) = &reply.location {
        response = response.header("location", location);
    }
    if let Some(headers) = response.headers_mut() {
        reply.response_edits.edit_h2_response(headers);
    }
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    let Ok(response) = response.body(()) else {
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    };
    let end = reply.body.is_empty() || is_head;
    if let Ok(mut stream) = respond.send_response(response, end)
        && !end
    {
        let body = h2_body::send_data(&mut stream, Bytes::from(reply.body.clone()), true);
        if tokio::time::timeout(idle, body).await.is_err() {
            stream.send_reset(h2::Reason::CANCEL);
        }
    }
}

/// The most of a request body that the answer did not need which is read and dropped, and for
/// how long: the stream then ends cleanly (clients such as curl take a RST_STREAM after the
/// response, which RFC 9113 allows, as a failure); a larger or slower rest is reset (h2 sends
/// RST_STREAM NO_ERROR when the stream is dropped).
const DISCARD_LIMIT: usize = 64 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(1);

async fn discard_rest(body: &mut RecvStream) {
    if body.is_end_stream() {
        return;
    }
    let discard = async {
        let mut left = DISCARD_LIMIT;
        while let Some(Ok(data)) = h2_body::recv_data(body).await {
            left = left.saturating_sub(data.len());
            if left == 0 {
                return;
            }
        }
        let _ = h2_body::trailers(body).await;
    };
    let _ = tokio::time::timeout(DISCARD_TIME, discard).await;
}

/// A client connection whose first bytes were already read (the preface, on a plain port):
/// they are read again first.
struct Replayed<T> {
    read: Vec<u8>,
    at: usize,
    io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Replayed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.read.len() {
            let n = (this.read.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            if this.at == this.read.len() {
                this.read = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Replayed<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_told_from_http1() {
        assert!(is_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(is_preface(b"PRI * HTTP/2.0\r\n"));
        assert!(!is_preface(b"GET / HTTP/1.1\r\n"));
        assert!(!is_preface(b"PRI * HTTP/1.1\r\n"));
    }
}
