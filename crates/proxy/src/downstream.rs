//! A client connection: one task reads each request head, routes it, and proxies it (the
//! HTTP/1.1 exchange itself is in `http1_exchange.rs`) or answers it locally; then the next
//! request, until the connection ends. Heads are parsed in place (see `h1.rs` for why not hyper).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use snapshot::RouteAction;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::access_log::Entry;
use crate::cluster::{ClusterRuntime, Endpoint};
use crate::h1::{self, Framing, HeadError, RequestHead};
use crate::http_protocol::{HttpOptions, read_bounded};
use crate::http1_exchange::{Exchange, HEAD_EDITS};
use crate::load_balancing;
use crate::local_reply::{self, LocalReply, ResponseFlag};
use crate::proxy_protocol::ProxyAddresses;
use crate::recycle::{self, read_some};
use crate::router::{self, RequestView};
use crate::stats;
use crate::{DataPlane, Runtime};

/// A client connection's bytes: plain TCP, or TLS over it (HTTPS ports). An enum, as the
/// upstream `Transport`: a match per read or write, no dynamic call; the TLS state is boxed
/// so that a plain connection's task stays as small as before.
pub(crate) enum ClientStream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// The TCP socket under it (socket options, addresses, the client-left check).
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Tcp(s) => s,
            ClientStream::Tls(s) => s.get_ref().0,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// The SNI the client's TLS handshake named (misdirected-request detection).
    pub(crate) fn server_name(&self) -> Option<Box<str>> {
        match self {
            ClientStream::Tls(s) => s.get_ref().1.server_name().map(Box::from),
            ClientStream::Tcp(_) => None,
        }
    }

    /// Writes all of `bytes` to the client, and on TLS flushes them: rustls keeps what the
    /// socket did not take until a flush, and the proxy writes nothing more before it waits for
    /// the client (or the upstream).
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes).await?;
        if self.is_tls() {
            self.flush().await?;
        }
        Ok(())
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Tcp(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The next bytes of a request head from the client. Plain TCP takes the fast path
/// (`read_when_ready`); TLS reads through rustls, which may hold bytes already decrypted, so it
/// cannot wait on the socket first; a listener buffer limit bounds each read.
async fn read_head_bytes(
    stream: &mut ClientStream,
    buf: &mut Vec<u8>,
    limit: Option<usize>,
) -> std::io::Result<usize> {
    match (stream, limit) {
        (ClientStream::Tcp(tcp), None) => read_when_ready(tcp, buf).await,
        (stream, limit) => read_bounded(stream, buf, limit).await,
    }
}

/// Like `read_some`, but a connection with no buffer waits for bytes before it takes one: an
/// idle keep-alive client then holds no buffer at all (4 KiB each; 36 MB at 9,000 clients).
/// Cancel-safe.
async fn read_when_ready(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() != 0 {
        return read_some(stream, buf).await;
    }
    loop {
        stream.readable().await?;
        let mut fresh = recycle::bytes();
        let room = fresh.capacity();
        match stream.try_read_buf(&mut fresh) {
            Ok(n) => {
                if 0 < n && n < room {
                    // A short read drained the socket: tell tokio, as its own reads do, so the
                    // next wait does not begin with a recv that finds nothing (measured: one
                    // more system call per request without this).
                    let drained = || Err::<(), _>(std::io::Error::from(std::io::ErrorKind::WouldBlock));
                    let _ = stream.try_io(tokio::io::Interest::READABLE, drained);
                }
                *buf = fresh;
                return Ok(n);
            }
            Err(e) => {
                recycle::give_bytes(fresh);
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    return Err(e);
                }
            }
        }
    }
}

pub(crate) struct Downstream {
    pub(crate) stream: ClientStream,
    /// Bytes read from the client and not used yet.
    pub(crate) buf: Vec<u8>,
    /// The client's address as x-forwarded-for carries it.
    client: String,
    /// The client's address and port (hash policies: source IP, generated cookies).
    peer: SocketAddr,
    /// The client's address and the one it connected to, once a PROXY protocol header needed
    /// them (the latter asked of the socket once per connection; boxed, so that a connection
    /// that never needs them keeps one word for them).
    proxied: Option<Box<ProxyAddresses>>,
    /// The listener's `perConnectionBufferLimitBytes` as a bound on each read (None: no bound
    /// below kgw's read chunk), from the settings the connection was accepted with.
    pub(crate) read_limit: Option<usize>,
    /// The connection opened with the HTTP/2 preface (a plain port): `serve` returned at once,
    /// and the connection goes to `h2_server.rs` with the bytes in `buf`.
    pub(crate) http2_preface: bool,
    /// The SNI of a TLS connection.
    server_name: Option<Box<str>>,
}

/// How an exchange ended, for the downstream connection.
pub(crate) enum Next {
    /// Ready for the client's next request.
    KeepAlive,
    /// The connection ends (the client asked, the response is close-delimited, or an error
    /// left the stream in an unknown state).
    Close,
    /// The response was cut part-way: the connection ends with a reset, not a FIN, so that the
    /// client cannot take the cut for the end (a close-delimited body ends at a FIN), as Envoy
    /// resets such a stream.
    Reset,
}

/// What the access log and the counters say of one request.
pub(crate) struct Outcome {
    pub status: u16,
    pub flag: Option<ResponseFlag>,
    pub upstream: Option<SocketAddr>,
    pub next: Next,
}

impl Downstream {
    pub(crate) fn new(stream: ClientStream, peer: SocketAddr, read_limit: Option<usize>) -> Downstream {
        Downstream {
            server_name: stream.server_name(),
            stream,
            buf: Vec::new(),
            client: client_address(peer),
            peer,
            proxied: None,
            read_limit,
            http2_preface: false,
        }
    }

    /// Serves the connection's requests one after the other, until it ends.
    pub(crate) async fn serve(&mut self, dp: &Arc<DataPlane>, bound: SocketAddr) -> std::io::Result<()> {
        // One timer of each kind per connection, moved on for each wait, instead of a new timer
        // per request (which showed in profiles): moving a pending timer later is an atomic
        // store; the wheel re-files it only when its old slot comes due, and one that fired
        // (the route timer, some 15 s after a connection's last request) registers again.
        // The idle timer also bounds a request head once its first bytes are in: a connection
        // waits for the next request for `idle_timeout` from the end of the last one
        // (Envoy's idle_timeout), then has `request_headers_timeout` to send the whole head
        // (nginx's client_header_timeout); a byte at a time no longer holds it for ever.
        let idle = tokio::time::sleep(dp.options.idle_timeout);
        let route = tokio::time::sleep(dp.options.route_timeout);
        tokio::pin!(idle, route);
        let mut drain_started = dp.drain_started.subscribe();
        // Only a connection's first bytes may be the HTTP/2 preface.
        let mut first = true;
        loop {
            let mut idle_armed = false;
            let mut head_started = false;
            let head = loop {
                if !self.buf.is_empty() {
                    match h1::parse_request(&self.buf) {
                        Ok(Some(head)) => break head,
                        Ok(None) if !head_started => {
                            head_started = true;
                            idle.as_mut()
                                .reset(tokio::time::Instant::now() + dp.options.request_headers_timeout);
                        }
                        Ok(None) => {}
                        Err(_)
                            if first && !self.stream.is_tls() && crate::h2_server::is_preface(&self.buf) =>
                        {
                            // Prior-knowledge HTTP/2 (HTTP/1.1 refused the version 2.0 line).
                            self.http2_preface = true;
                            return Ok(());
                        }
                        Err(e) => {
                            let (status, reason) = match e {
                                HeadError::TooLarge => (431, "Request Header Fields Too Large"),
                                HeadError::Malformed(_) => (400, "Bad Request"),
                                HeadError::NotImplemented => (501, "Not Implemented"),
                            };
                            self.refuse_head(dp, status, reason, Duration::ZERO).await;
                            return Ok(());
                        }
                    }
                } else if dp.is_draining() {
                    // Between requests while draining: nothing is cut by closing now.
                    return Ok(());
                } else if !idle_armed {
                    idle_armed = true;
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + dp.options.idle_timeout);
                }
                let read = tokio::select! {
                    biased;
                    r = read_head_bytes(&mut self.stream, &mut self.buf, self.read_limit) => r,
                    () = idle.as_mut() => {
                        if head_started {
                            let timeout = dp.options.request_headers_timeout;
                            self.refuse_head(dp, 408, "Request Timeout", timeout).await;
                        }
                        return Ok(());
                    }
                    // Wakes an idle connection when the drain begins (the loop then closes it).
                    _ = drain_started.changed(), if !head_started => continue,
                };
                match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            };
            // The request's state lives outside the task while the connection idles (see
            // `Recycled`).
            first = false;
            let outcome = self
                .recycled_request(dp, bound, &head, route.as_mut(), idle.as_mut())
                .await?;
            if matches!(outcome, Next::Reset) {
                let _ = self.stream.tcp().set_zero_linger();
                return Ok(());
            }
            if matches!(outcome, Next::Close) {
                // Over TLS the close_notify must be written: a client that reads nothing (a zero
                // window) would hold the task forever, so it gets as long as a request head.
                let _ =
                    tokio::time::timeout(dp.options.request_headers_timeout, self.stream.shutdown()).await;
                return Ok(());
            }
            if self.buf.is_empty() {
                // An idle keep-alive connection keeps no buffer.
                recycle::give_bytes(std::mem::take(&mut self.buf));
            }
        }
    }

    /// Answers a request head that cannot be served (malformed, too large, too slow) and logs
    /// it; the connection then closes. `waited`: how long the head took, for the log.
    async fn refuse_head(&mut self, dp: &DataPlane, status: u16, reason: &str, waited: Duration) {
        dp.downstream.count_status(status);
        // What the head says is not to be trusted (or not all there): the log shows dashes for
        // it, as Envoy's does for a request it could not decode.
        if let Some(request) = dp.access_log.capture(b"-", b"-", "-", None, None, b"") {
            dp.access_log.log(Entry {
                request: request.began_earlier(waited),
                status,
                flag: (status != 408).then_some(ResponseFlag::DownstreamProtocolError),
                upstream: None,
                cluster: "",
            });
        }
        let reply = local_reply::refused_head(status, reason);
        let _ = self.stream.send(reply.as_bytes()).await;
    }

    /// `one_request` in a recycled block. Not an async fn: the request's future is built and
    /// moved into its block in this frame, so `serve`'s own state (what an idle connection's
    /// task keeps) has no room for it.
    fn recycled_request<'a>(
        &'a mut self,
        dp: &'a Arc<DataPlane>,
        bound: SocketAddr,
        head: &'a RequestHead,
        route_timer: Pin<&'a mut Sleep>,
        idle_timer: Pin<&'a mut Sleep>,
    ) -> recycle::Recycled<impl Future<Output = std::io::Result<Next>> + Send + 'a> {
        recycle::Recycled::new(|| self.one_request(dp, bound, head, route_timer, idle_timer))
    }

    /// Routes and proxies one request whose head is at the start of `buf`; the head and its
    /// body are consumed from `buf`. The steps: read what routing and the log need from the
    /// head, route it to an endpoint, proxy it there (or answer locally), count and log it.
    async fn one_request(
        &mut self,
        dp: &Arc<DataPlane>,
        bound: SocketAddr,
        head: &RequestHead,
        route_timer: Pin<&mut Sleep>,
        idle_timer: Pin<&mut Sleep>,
    ) -> std::io::Result<Next> {
        let runtime = dp.runtime();
        let buf = std::mem::take(&mut self.buf);
        let line = RequestLine::read(&buf, head);
        let header = |name: &str| -> Option<&[u8]> {
            head.headers
                .iter()
                .find(|h| buf[h.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
                .map(|h| &buf[h.value.clone()])
        };
        let logged = dp.access_log.capture(
            line.method.as_bytes(),
            line.path_and_query.as_bytes(),
            match head.version {
                h1::Version::Http10 => "HTTP/1.0",
                h1::Version::Http11 => "HTTP/1.1",
            },
            header("x-forwarded-for"),
            header("user-agent"),
            line.host.as_bytes(),
        );
        let view = RequestView {
            method: line.method,
            path: line.path,
            query: line.path_and_query.split_once('?').map_or("", |(_, q)| q),
            host: line.host,
            header: &header,
            server_name: self.server_name.as_deref(),
            scheme: if self.stream.is_tls() { "https" } else { "http" },
        };
        let mut cluster_name = String::new();
        let request_headers = load_balancing::Http1Headers { buf: &buf, head };
        let mut pick = load_balancing::PickContext::new(&request_headers, self.peer);
        let refused_upgrade = match head.upgrade {
            h1::Upgrade::None => false,
            h1::Upgrade::Other => true,
            h1::Upgrade::WebSocket => !crate::upgrade::route_allows_websocket(&runtime, bound, &view),
        };
        let routed = if refused_upgrade {
            Err(crate::upgrade::refused(dp))
        } else {
            route_to_endpoint(
                &runtime,
                bound,
                &view,
                &mut pick,
                logged.is_some().then_some(&mut cluster_name),
            )
        };
        // A request that asked for an upgrade ends its connection unless it is upgraded (what
        // the client sends next may be the new protocol's), as Envoy closes it.
        let upgrading = head.upgrade != h1::Upgrade::None;
        let set_cookies = pick.set_cookies;
        let route_filters = pick.route_filters;
        let is_head = line.method.eq_ignore_ascii_case("HEAD");
        let is_connect = line.method == "CONNECT";
        let replayable = dp.options.retry_on_reused_connection
            && head.framing == Framing::Empty
            && is_idempotent(line.method);

        if let Ok((_, _, route)) = &routed {
            crate::mirror::from_http1(
                &runtime,
                route,
                &buf,
                head,
                self.client_address(),
                self.stream.is_tls(),
            );
        }
        let outcome = match routed {
            Err(reply) => {
                // A gRPC request gets gRPC's answer (looked for only here, off the proxied path).
                let reply = reply.for_grpc(crate::grpc::is_grpc(header("content-type")));
                self.buf = buf;
                let keep_alive = head.keep_alive && !is_connect && !upgrading && !dp.is_draining();
                self.buf.drain(..head.len);
                self.local_reply_after_head(head.framing, keep_alive, is_head, reply, None)
                    .await?
            }
            // An HTTP/2 upstream (h1_to_h2.rs): one flag read, the HTTP/1.1 path untouched.
            Ok((cluster, endpoint, route)) if cluster.speaks_http2() => {
                let request = crate::h1_to_h2::H1Request {
                    cluster: &cluster,
                    endpoint: &endpoint,
                    buf,
                    head,
                    is_head,
                    set_cookies,
                    route_filters,
                    route_timeout: crate::route_timeout::of(route, dp.options.route_timeout),
                };
                Box::pin(self.forward_to_h2(dp, request)).await?
            }
            Ok((cluster, endpoint, route)) => {
                // One look at the policy for the request.
                let (mut options, proxy_protocol) = {
                    let policy = cluster.policy_ref();
                    (HttpOptions::of(&policy), policy.proxy_protocol.is_some())
                };
                // Each read, of the upload from the client or of the response for it, within
                // both the cluster's and the listener's buffer limits.
                if let Some(limit) = self.read_limit {
                    options.read_limit = Some(options.read_limit.map_or(limit, |l| l.min(limit)));
                }
                let proxied = proxy_protocol.then(|| self.proxied()).flatten();
                let mut request = self
                    .upstream_head(buf, head, options.preserve_header_case)
                    .await?;
                route_filters.edit_http1_request(&mut request);
                let exchange = Exchange {
                    cluster: &cluster,
                    endpoint: &endpoint,
                    request,
                    framing: head.framing,
                    is_head,
                    replayable,
                    keep_alive: head.keep_alive && !upgrading,
                    client_version: head.version,
                    set_cookies,
                    proxied,
                    options,
                    response_status: std::sync::atomic::AtomicU16::new(0),
                    upgrade: upgrading,
                    route_filters,
                    route_timeout: crate::route_timeout::of(route, dp.options.route_timeout),
                };
                self.proxy(dp, exchange, route_timer, idle_timer).await?
            }
        };
        dp.downstream.count_status(outcome.status);
        if let Some(request) = logged {
            dp.access_log.log(Entry {
                request,
                status: outcome.status,
                flag: outcome.flag,
                upstream: outcome.upstream,
                cluster: &cluster_name,
            });
        }
        Ok(outcome.next)
    }

    /// The request head as it goes upstream, with the proxy's edits; the client's head is
    /// consumed from `buf` (given back to the connection). A client that waits for leave to
    /// send its body gets it here (as Envoy does), so the body does not wait for the upstream's
    /// own 100 Continue.
    /// Header names go lower-cased, as Envoy's HTTP/1 codec writes them, unless the cluster
    /// preserves their case (`preserveHttp1HeaderCase`; see `http_protocol.rs`).
    async fn upstream_head(
        &mut self,
        mut buf: Vec<u8>,
        head: &RequestHead,
        preserve_case: bool,
    ) -> std::io::Result<Vec<u8>> {
        if !preserve_case {
            // In place: the client's head is not read again.
            for h in head.headers.iter() {
                buf[h.name.clone()].make_ascii_lowercase();
            }
        }
        // Sized to the head (glibc's per-thread cache serves these small blocks fast; a pooled
        // 4 KiB buffer per in-flight head cost memory under many clients).
        let mut request = Vec::with_capacity(head.len + HEAD_EDITS);
        let scheme: &[u8] = if self.stream.is_tls() { b"https" } else { b"http" };
        h1::write_request_head(&mut request, &buf, head, self.client.as_bytes(), scheme);
        let continue_body = h1::expects_continue(&buf, head);
        self.buf = buf;
        self.buf.drain(..head.len);
        if continue_body && self.buf.is_empty() && head.version == h1::Version::Http11 {
            self.stream.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        Ok(request)
    }

    /// Proxies a routed request (its exchange, counted as active while it runs); a failure
    /// before the response began is answered locally and counted.
    async fn proxy(
        &mut self,
        dp: &DataPlane,
        exchange: Exchange<'_>,
        route_timer: Pin<&mut Sleep>,
        idle_timer: Pin<&mut Sleep>,
    ) -> std::io::Result<Outcome> {
        let cluster = exchange.cluster;
        let endpoint = exchange.endpoint;
        let (framing, keep_alive, is_head) = (exchange.framing, exchange.keep_alive, exchange.is_head);
        stats::inc(&cluster.stats().upstream_rq_active);
        stats::inc(&endpoint.active_requests);
        let result = self.exchange(dp, &exchange, route_timer, idle_timer).await;
        stats::dec(&cluster.stats().upstream_rq_active);
        stats::dec(&endpoint.active_requests);
        match result {
            Ok(outcome) => {
                cluster.stats().count_status(outcome.status);
                Ok(outcome)
            }
            Err(reply) => {
                if reply.flag == Some(ResponseFlag::UpstreamRequestTimeout) {
                    stats::inc(&cluster.stats().upstream_rq_timeout);
                }
                if reply.flag == Some(ResponseFlag::StreamIdleTimeout) {
                    stats::inc(&dp.downstream.downstream_rq_idle_timeout);
                }
                cluster.stats().count_status(reply.status);
                self.local_reply_after_head(
                    framing,
                    keep_alive && !dp.is_draining(),
                    is_head,
                    reply,
                    Some(endpoint.address),
                )
                .await
            }
        }
    }

    /// Answers with a local reply once the request head is consumed. A request body not read
    /// yet ends the connection after the reply (it cannot be told from the next request).
    pub(crate) async fn local_reply_after_head(
        &mut self,
        framing: Framing,
        keep_alive: bool,
        is_head: bool,
        reply: LocalReply,
        upstream: Option<SocketAddr>,
    ) -> std::io::Result<Outcome> {
        let close = !keep_alive || framing != Framing::Empty;
        let out = reply.to_http1(close, is_head);
        self.stream.send(out.as_bytes()).await?;
        Ok(Outcome {
            status: reply.sent_status(),
            flag: reply.flag,
            upstream,
            next: if close { Next::Close } else { Next::KeepAlive },
        })
    }
}

impl Downstream {
    /// The client's address as x-forwarded-for carries it.
    pub(crate) fn client_address(&self) -> &str {
        &self.client
    }

    /// The client's addresses for a PROXY protocol header.
    pub(crate) fn proxied(&mut self) -> Option<ProxyAddresses> {
        if self.proxied.is_none() {
            let addresses = ProxyAddresses {
                source: self.peer,
                destination: self.stream.tcp().local_addr().ok()?,
            };
            self.proxied = Some(Box::new(addresses));
        }
        self.proxied.as_deref().copied()
    }
}

/// What routing and the access log read from a request head.
struct RequestLine<'a> {
    method: &'a str,
    /// The target in origin form (an absolute-form target's authority is already the host).
    path_and_query: &'a str,
    /// The path, without the query ("/" when empty).
    path: &'a str,
    /// The Host header, or the absolute-form target's authority.
    host: &'a str,
}

impl<'a> RequestLine<'a> {
    fn read(buf: &'a [u8], head: &RequestHead) -> RequestLine<'a> {
        let text = |r: &std::ops::Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap_or("");
        let target = text(&head.target);
        let path_and_query = if target.starts_with('/') {
            target
        } else {
            let (_, origin_form) = h1::split_absolute_form(target.as_bytes());
            std::str::from_utf8(origin_form).unwrap_or("")
        };
        let path = match path_and_query.split('?').next().unwrap_or("") {
            "" => "/",
            p => p,
        };
        RequestLine {
            method: text(&head.method),
            path_and_query,
            path,
            host: head.host.as_ref().map(text).unwrap_or(""),
        }
    }
}

/// Where a request goes: its route's cluster (picked by weight) and that cluster's endpoint,
/// with the route (for its policies), or the local reply when there is none. `cluster_name`
/// gets the picked cluster's name, for the access log.
pub(crate) fn route_to_endpoint<'r>(
    runtime: &'r Runtime,
    bound: SocketAddr,
    view: &RequestView<'_>,
    pick: &mut load_balancing::PickContext<'_>,
    cluster_name: Option<&mut String>,
) -> Result<(Arc<ClusterRuntime>, Arc<Endpoint>, &'r snapshot::Route), LocalReply> {
    if view.method == "CONNECT" {
        // No tunnels yet: refused, and the connection closes (what follows may be tunnel
        // bytes, not a request).
        return Err(LocalReply::connect_refused());
    }
    let Some(route) =
        router::find_listener(&runtime.snapshot.listeners, bound).and_then(|l| router::route(l, view))
    else {
        return Err(LocalReply::no_route());
    };
    if let Some(preflight) = crate::cors::preflight(route, view) {
        return Err(preflight);
    }
    if let Some(redirect) = crate::route_filters::redirect(route, view) {
        return Err(redirect.with_response_edits(crate::route_filters::Picked::of_route(route)));
    }
    let targets = match &route.action {
        RouteAction::Forward(t) => t,
        RouteAction::Direct { status, body } => {
            let edits = crate::route_filters::Picked::of_route(route);
            return Err(LocalReply::direct(*status, body).with_response_edits(edits));
        }
    };
    let target = load_balancing::pick_weighted(targets);
    pick.route_filters = crate::route_filters::Picked::of(route, target);
    pick.route_filters.cors = crate::cors::response_headers(route, view);
    let Some(index) = target.index else {
        return Err(LocalReply::no_cluster().with_response_edits(pick.route_filters.clone()));
    };
    let cluster = &runtime.clusters[index];
    if let Some(name) = cluster_name {
        *name = target.name.clone();
    }
    stats::inc(&cluster.stats().upstream_rq_total);
    let Some(endpoint) = cluster.pick(pick) else {
        stats::inc(&cluster.stats().upstream_cx_none_healthy);
        return Err(LocalReply::no_healthy_upstream().with_response_edits(pick.route_filters.clone()));
    };
    Ok((cluster.clone(), endpoint, route))
}

/// `peer`'s IP as x-forwarded-for carries it (IPv4-mapped IPv6 addresses shown as IPv4).
pub(crate) fn client_address(peer: SocketAddr) -> String {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
    .to_string()
}

pub(crate) fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE")
}
