//! Listeners: bind what the Snapshot asks for, accept, speak HTTP/1.1 downstream, and proxy
//! each request to its route's cluster. Local replies follow Envoy (status, body, flag).
//!
//! One task per downstream connection reads a request head, routes it, and drives the upstream
//! exchange itself on a pooled connection: heads are parsed in place and forwarded with the
//! proxy's edits (see `h1.rs` for why not hyper), bodies pass through framed as they came.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use snapshot::{RouteAction, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::DataPlane;
use crate::access_log::Entry;
use crate::cluster::{ClusterRuntime, Endpoint};
use crate::h1::{self, Framing, HeadError, RequestHead, ResponseHead};
use crate::load_balancing;
use crate::local_reply::{self, LocalReply, ResponseFlag};
use crate::recycle::{self, READ_CHUNK};
use crate::router::RequestView;
use crate::stats;
use crate::upstream::{self, Connection, End};

/// A bound listener address; dropping it stops accepting.
pub(crate) struct Bound {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the Snapshot's listener addresses that are not bound yet and closes the others.
pub(crate) fn reconcile(dp: &Arc<DataPlane>, snapshot: &Snapshot) -> Vec<(SocketAddr, String)> {
    let want: BTreeSet<SocketAddr> = snapshot
        .listeners
        .iter()
        .flat_map(|l| l.bind_addresses())
        .collect();
    let mut bound = dp.listeners.lock().unwrap_or_else(|e| e.into_inner());
    if dp.is_draining() {
        // Closed for good: a Snapshot that arrives during the drain binds nothing. (Read under
        // the lock: `drain` sets the flag, then empties the map under it.)
        return Vec::new();
    }
    bound.retain(|addr, _| want.contains(addr));
    let mut failed = Vec::new();
    for addr in want {
        if bound.contains_key(&addr) {
            continue;
        }
        match bind(addr) {
            Ok(listener) => {
                tracing::info!(%addr, "listening");
                let task = tokio::spawn(accept_loop(dp.clone(), listener, addr.port()));
                bound.insert(addr, Bound { task });
            }
            Err(e) => {
                tracing::error!(%addr, "cannot listen: {e}");
                failed.push((addr, e.to_string()));
            }
        }
    }
    failed
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    // As Envoy's enable_reuse_port (its default on Linux): several kgw processes (replicas on one
    // host, or an old and a new one during a restart) can serve the same port.
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `[::]` with IPv4 mapped in, as Envoy's `::` listener with ipv4_compat.
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    tokio::net::TcpListener::from_std(socket.into())
}

async fn accept_loop(dp: Arc<DataPlane>, listener: tokio::net::TcpListener, port: u16) {
    // Set while connections are being refused, so the warning is logged once per episode.
    let mut refusing = false;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !dp.admits_connection() {
            // As Envoy at its connection limit: accepted and closed at once, so the client sees
            // a close now rather than waiting in the listen backlog.
            stats::inc(&dp.downstream.downstream_global_cx_overflow);
            if !refusing {
                tracing::warn!(
                    active = dp
                        .downstream
                        .downstream_cx_active
                        .load(std::sync::atomic::Ordering::Relaxed),
                    "refusing new client connections: at the connection limit (--max-downstream-connections, or the open files limit less its reserve)"
                );
                refusing = true;
            }
            drop(stream);
            continue;
        }
        refusing = false;
        let _ = stream.set_nodelay(true);
        // Counted here, before the next accept, so that a burst cannot overshoot the cap.
        stats::inc(&dp.downstream.downstream_cx_total);
        stats::inc(&dp.downstream.downstream_cx_active);
        let dp = dp.clone();
        tokio::spawn(async move {
            let mut downstream = Downstream {
                stream,
                buf: Vec::new(),
                client: client_address(peer),
            };
            if let Err(e) = downstream.serve(&dp, port).await {
                tracing::debug!(%peer, "downstream connection: {e}");
            }
            stats::dec(&dp.downstream.downstream_cx_active);
        });
    }
}

/// A response rest this small is read to its end when the client leaves early, so that its
/// connection goes back to the pool instead of being closed (a new connection costs the backend
/// a handshake, and the next request a round trip).
const DRAIN_LIMIT: u64 = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Room for what the proxy adds to a head (x-forwarded-*, connection).
const HEAD_EDITS: usize = 128;

/// Idle time after which a reused connection may be closing under us (see `exchange`).
const REPLAY_AFTER_IDLE: Duration = Duration::from_millis(100);

/// Appends what one read gives; Ok(0) at end of stream. Cancel-safe (it is raced against other
/// reads and writes): bytes land in the spare capacity and count only once read.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    if buf.capacity() == 0 {
        *buf = recycle::bytes();
    } else {
        buf.reserve(READ_CHUNK);
    }
    stream.read_buf(buf).await
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

struct Downstream {
    stream: TcpStream,
    /// Bytes read from the client and not used yet.
    buf: Vec<u8>,
    /// The client's address as x-forwarded-for carries it.
    client: String,
}

/// How an exchange ended, for the downstream connection.
enum Next {
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
struct Outcome {
    status: u16,
    flag: Option<ResponseFlag>,
    upstream: Option<SocketAddr>,
    next: Next,
}

impl Downstream {
    async fn serve(&mut self, dp: &Arc<DataPlane>, port: u16) -> std::io::Result<()> {
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
                    r = read_when_ready(&mut self.stream, &mut self.buf) => r,
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
            let outcome = self
                .recycled_request(dp, port, &head, route.as_mut(), idle.as_mut())
                .await?;
            if matches!(outcome, Next::Reset) {
                let _ = self.stream.set_zero_linger();
                return Ok(());
            }
            if matches!(outcome, Next::Close) {
                let _ = self.stream.shutdown().await;
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
        let _ = self.stream.write_all(reply.as_bytes()).await;
    }

    /// `one_request` in a recycled block. Not an async fn: the request's future is built and
    /// moved into its block in this frame, so `serve`'s own state (what an idle connection's
    /// task keeps) has no room for it.
    fn recycled_request<'a>(
        &'a mut self,
        dp: &'a Arc<DataPlane>,
        port: u16,
        head: &'a RequestHead,
        route_timer: Pin<&'a mut Sleep>,
        idle_timer: Pin<&'a mut Sleep>,
    ) -> recycle::Recycled<impl Future<Output = std::io::Result<Next>> + Send + 'a> {
        recycle::Recycled::new(self.one_request(dp, port, head, route_timer, idle_timer))
    }

    /// Routes and proxies one request whose head is at the start of `buf`; the head and its
    /// body are consumed from `buf`.
    async fn one_request(
        &mut self,
        dp: &Arc<DataPlane>,
        port: u16,
        head: &RequestHead,
        route_timer: Pin<&mut Sleep>,
        idle_timer: Pin<&mut Sleep>,
    ) -> std::io::Result<Next> {
        let runtime = dp.runtime();
        let buf = std::mem::take(&mut self.buf);
        let text = |r: &std::ops::Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap_or("");
        let target = text(&head.target);
        // An absolute-form target's authority is already `head.host`; its path is routed.
        let path_and_query = if target.starts_with('/') {
            target
        } else {
            let (_, origin_form) = h1::split_absolute_form(target.as_bytes());
            std::str::from_utf8(origin_form).unwrap_or("")
        };
        let host = head.host.as_ref().map(text).unwrap_or("");
        let path = match path_and_query.split('?').next().unwrap_or("") {
            "" => "/",
            p => p,
        };
        let header = |name: &str| -> Option<&[u8]> {
            head.headers
                .iter()
                .find(|h| buf[h.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
                .map(|h| &buf[h.value.clone()])
        };
        let method = text(&head.method);
        let logged = dp.access_log.capture(
            method.as_bytes(),
            path_and_query.as_bytes(),
            match head.version {
                h1::Version::Http10 => "HTTP/1.0",
                h1::Version::Http11 => "HTTP/1.1",
            },
            header("x-forwarded-for"),
            header("user-agent"),
            host.as_bytes(),
        );
        let view = RequestView {
            method,
            path,
            host,
            header: &header,
        };

        let is_connect = method == "CONNECT";
        let mut cluster_name = String::new();
        let routed: Result<(Arc<ClusterRuntime>, Arc<Endpoint>), LocalReply> = 'route: {
            if is_connect {
                // No tunnels yet: refused, and the connection closes (what follows may be
                // tunnel bytes, not a request).
                break 'route Err(LocalReply::connect_refused());
            }
            let Some(route) = crate::router::find_listener(&runtime.snapshot.listeners, port)
                .and_then(|l| crate::router::route(l, &view))
            else {
                break 'route Err(LocalReply::no_route());
            };
            let targets = match &route.action {
                RouteAction::Forward(t) => t,
                RouteAction::Direct { status, body } => {
                    break 'route Err(LocalReply::direct(*status, body));
                }
            };
            let target = load_balancing::pick_weighted(targets);
            let Some(index) = target.index else {
                break 'route Err(LocalReply::no_cluster());
            };
            let cluster = &runtime.clusters[index];
            if logged.is_some() {
                cluster_name = target.name.clone();
            }
            stats::inc(&cluster.stats().upstream_rq_total);
            let Some(endpoint) = cluster.pick() else {
                stats::inc(&cluster.stats().upstream_cx_none_healthy);
                break 'route Err(LocalReply::no_healthy_upstream());
            };
            Ok((cluster.clone(), endpoint))
        };
        let is_head = method.eq_ignore_ascii_case("HEAD");
        let replayable =
            dp.options.retry_on_reused_connection && head.framing == Framing::Empty && is_idempotent(method);

        let outcome = match routed {
            Err(reply) => {
                self.buf = buf;
                let keep_alive = head.keep_alive && !is_connect && !dp.is_draining();
                self.buf.drain(..head.len);
                self.local_reply_after_head(head.framing, keep_alive, is_head, reply, None)
                    .await?
            }
            Ok((cluster, endpoint)) => {
                // Sized to the head (glibc's per-thread cache serves these small blocks fast; a
                // pooled 4 KiB buffer per in-flight head cost memory under many clients).
                let mut request = Vec::with_capacity(head.len + HEAD_EDITS);
                h1::write_request_head(&mut request, &buf, head, self.client.as_bytes());
                // The client waits for leave to send its body: the proxy gives it (as Envoy
                // does), so the body does not wait for the upstream's own 100 Continue.
                let continue_body = h1::expects_continue(&buf, head);
                self.buf = buf;
                self.buf.drain(..head.len);
                if continue_body && self.buf.is_empty() && head.version == h1::Version::Http11 {
                    self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                }
                stats::inc(&cluster.stats().upstream_rq_active);
                stats::inc(&endpoint.active_requests);
                let exchange = Exchange {
                    cluster: &cluster,
                    endpoint: &endpoint,
                    request,
                    framing: head.framing,
                    is_head,
                    replayable,
                    keep_alive: head.keep_alive,
                    client_version: head.version,
                };
                let result = self.exchange(dp, exchange, route_timer, idle_timer).await;
                stats::dec(&cluster.stats().upstream_rq_active);
                stats::dec(&endpoint.active_requests);
                match result {
                    Ok(outcome) => {
                        cluster.stats().count_status(outcome.status);
                        outcome
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
                            head.framing,
                            head.keep_alive && !dp.is_draining(),
                            is_head,
                            reply,
                            Some(endpoint.address),
                        )
                        .await?
                    }
                }
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

    /// Answers with a local reply once the request head is consumed. A request body not read
    /// yet ends the connection after the reply (it cannot be told from the next request).
    async fn local_reply_after_head(
        &mut self,
        framing: Framing,
        keep_alive: bool,
        is_head: bool,
        reply: LocalReply,
        upstream: Option<SocketAddr>,
    ) -> std::io::Result<Outcome> {
        let close = !keep_alive || framing != Framing::Empty;
        let out = reply.to_http1(close, is_head);
        self.stream.write_all(out.as_bytes()).await?;
        Ok(Outcome {
            status: reply.status,
            flag: reply.flag,
            upstream,
            next: if close { Next::Close } else { Next::KeepAlive },
        })
    }

    /// Sends the request on a pooled or new connection, and the response back. A reused
    /// connection that fails before the response began (the peer closed it as we wrote: the
    /// close race) gets the request again, once, on a new connection, when that is safe: the
    /// request is idempotent, has no body, and the connection had idled long enough to be in
    /// that race.
    ///
    /// As Envoy's: the route timeout counts from the end of the request. A request without a
    /// body ends with its head; a body is uploaded under the stream idle timeout instead (a
    /// stall, not a slow upload, ends it), and the route timeout starts when its last byte is in.
    async fn exchange(
        &mut self,
        dp: &DataPlane,
        x: Exchange<'_>,
        mut route_timer: Pin<&mut Sleep>,
        mut idle_timer: Pin<&mut Sleep>,
    ) -> Result<Outcome, LocalReply> {
        let now = tokio::time::Instant::now();
        let (head_wait, head_timeout) = response_head_wait(dp);
        if x.framing == Framing::Empty {
            route_timer.as_mut().reset(now + head_wait);
        }
        let now = now.into_std();
        let mut conn = match x.cluster.take_idle(x.endpoint) {
            Some(c) => c,
            None => new_connection(x.cluster, x.endpoint).await?,
        };
        let mut retried = false;
        let response = loop {
            let may_replay = x.replayable
                && !retried
                && conn.reused
                && now.saturating_duration_since(conn.idle_since) >= REPLAY_AFTER_IDLE;
            let sent = if x.framing == Framing::Empty {
                tokio::select! {
                    biased;
                    r = self.send_request(&mut conn, &x) => Ok(r),
                    () = route_timer.as_mut() => Err(head_timeout()),
                }
            } else {
                self.send_with_body(dp, &mut conn, &x, route_timer.as_mut(), idle_timer.as_mut())
                    .await
            };
            match sent {
                Err(reply) => {
                    // Cut mid-request: the upstream connection cannot be reused.
                    conn.end = End::Local;
                    return Err(reply);
                }
                Ok(Ok(head)) => break head,
                Ok(Err(Failure::Client)) => {
                    return Ok(Outcome {
                        status: 0,
                        flag: Some(ResponseFlag::DownstreamConnectionTermination),
                        upstream: Some(x.endpoint.address),
                        next: Next::Close,
                    });
                }
                Ok(Err(Failure::BadBody)) => {
                    conn.end = End::Local;
                    return Err(LocalReply::bad_request_body());
                }
                Ok(Err(Failure::Protocol)) => {
                    conn.end = End::Local;
                    return Err(LocalReply::upstream_protocol_error());
                }
                Ok(Err(Failure::Upstream(end))) => {
                    conn.end = end;
                    drop(conn);
                    if may_replay && end != End::TimedOut {
                        tracing::debug!(
                            cluster = x.cluster.name(),
                            "reused connection failed before the response; retrying"
                        );
                        retried = true;
                        stats::inc(&x.cluster.stats().upstream_rq_retry);
                        conn = new_connection(x.cluster, x.endpoint).await?;
                        continue;
                    }
                    return Err(LocalReply::upstream_terminated());
                }
            }
        };
        let (response, whole) = response;
        let draining = dp.is_draining();
        Ok(self
            .forward_response(dp, conn, response, whole, &x, draining, idle_timer)
            .await)
    }

    /// A request with a body: the upload, bounded by the stream idle timeout (on the idle
    /// timer, which a connection does not use during a request), then the wait for the
    /// response head, bounded by the route timeout from the end of the upload.
    async fn send_with_body(
        &mut self,
        dp: &DataPlane,
        conn: &mut Connection,
        x: &Exchange<'_>,
        mut route_timer: Pin<&mut Sleep>,
        mut idle_timer: Pin<&mut Sleep>,
    ) -> Result<Result<(ResponseHead, bool), Failure>, LocalReply> {
        let stream_idle = dp.options.stream_idle_timeout;
        // The time of the last byte from the client: the timer is moved on to it only when it
        // comes due, not on every read.
        let progress = Progress::new();
        idle_timer.as_mut().reset(progress.last() + stream_idle);
        let sent = {
            let upload = self.send_body(conn, x, Some(&progress));
            tokio::pin!(upload);
            loop {
                tokio::select! {
                    biased;
                    r = &mut upload => break r,
                    () = idle_timer.as_mut() => {
                        let due = progress.last() + stream_idle;
                        if due > tokio::time::Instant::now() {
                            idle_timer.as_mut().reset(due);
                            continue;
                        }
                        return Err(LocalReply::stream_timeout_in_request());
                    }
                }
            }
        };
        let sent = match sent {
            Ok(sent) => sent,
            Err(failure) => return Ok(Err(failure)),
        };
        let (head_wait, head_timeout) = response_head_wait(dp);
        route_timer
            .as_mut()
            .reset(tokio::time::Instant::now() + head_wait);
        tokio::select! {
            biased;
            r = self.read_response_head(conn, x, sent) => Ok(r),
            () = route_timer.as_mut() => Err(head_timeout()),
        }
    }

    /// Writes the request (head and body) and reads the response head (see `send_body` and
    /// `read_response_head`).
    async fn send_request(
        &mut self,
        conn: &mut Connection,
        x: &Exchange<'_>,
    ) -> Result<(ResponseHead, bool), Failure> {
        let sent = self.send_body(conn, x, None).await?;
        self.read_response_head(conn, x, sent).await
    }

    /// Writes the request head and body. The body goes while the upstream is watched: one that
    /// answers before it has the whole body (a 413, say) is heard, and the rest of the body is
    /// not sent (`whole` is then false: neither connection can be reused). Each read of the
    /// client's body, and each write of it upstream, sets `progress` to its time.
    async fn send_body(
        &mut self,
        conn: &mut Connection,
        x: &Exchange<'_>,
        progress: Option<&Progress>,
    ) -> Result<BodySent, Failure> {
        let upstream_failed = |e: std::io::Error| {
            tracing::debug!(
                cluster = x.cluster.name(),
                "writing or reading the upstream failed: {e}"
            );
            Failure::Upstream(upstream::end_of(&e))
        };
        // A body-less request (most of them) goes as its head alone, without a copy; a body is
        // sent after the head in the same buffer.
        let mut out = if x.framing == Framing::Empty {
            Vec::new()
        } else {
            x.request.clone()
        };
        let mut whole = true;
        // A write that fails may be the upstream closing after it answered early: its answer
        // is read before the failure counts.
        let mut write_failed: Option<Failure> = None;
        let mut scanner = h1::ChunkedScanner::default();
        let mut left = match x.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        loop {
            let take = match x.framing {
                Framing::Empty | Framing::UntilClose => 0,
                Framing::Length(_) => left.min(self.buf.len() as u64) as usize,
                Framing::Chunked => scanner.feed(&self.buf).map_err(|_| Failure::BadBody)?,
            };
            out.extend(self.buf.drain(..take));
            if let Framing::Length(_) = x.framing {
                left -= take as u64;
            }
            let finished = match x.framing {
                Framing::Empty | Framing::UntilClose => true,
                Framing::Length(_) => left == 0,
                Framing::Chunked => scanner.is_done(),
            };
            let Connection { stream, buf, .. } = &mut *conn;
            let (mut upstream_read, mut upstream_write) = stream.split();
            if finished {
                let all: &[u8] = if x.framing == Framing::Empty {
                    &x.request
                } else {
                    &out
                };
                if let Err(e) = upstream_write.write_all(all).await {
                    write_failed = Some(upstream_failed(e));
                    whole = false;
                }
                break;
            }
            // Body bytes are still to come from the client: send what we have, then read more,
            // either way listening for an early answer.
            let early = tokio::select! {
                biased;
                // The write is cancelled, maybe part-way: this body cannot go on.
                r = read_some(&mut upstream_read, buf) => Some((r, false)),
                r = upstream_write.write_all(&out) => {
                    if let Err(e) = r {
                        write_failed = Some(upstream_failed(e));
                        whole = false;
                        break;
                    }
                    out.clear();
                    // Bytes moved on count as activity too (a backend slow to read is no stall
                    // of the client's).
                    if let Some(progress) = progress {
                        progress.now();
                    }
                    tokio::select! {
                        biased;
                        r = read_some(&mut upstream_read, buf) => Some((r, true)),
                        r = read_some(&mut self.stream, &mut self.buf) => match r {
                            Ok(n) if n > 0 => {
                                if let Some(progress) = progress {
                                    progress.now();
                                }
                                None
                            }
                            _ => return Err(Failure::Client),
                        },
                    }
                }
            };
            match early {
                None => {}
                Some((Ok(n), body_intact)) if n > 0 => {
                    // What the upstream says early is judged on a whole head: a 100 Continue
                    // that arrives in pieces is not a final answer.
                    while let Ok(None) = h1::parse_response(&conn.buf, b"GET") {
                        match read_some(&mut conn.stream, &mut conn.buf).await {
                            Ok(0) => return Err(Failure::Upstream(End::Remote)),
                            Ok(_) => {}
                            Err(e) => return Err(upstream_failed(e)),
                        }
                    }
                    // An interim answer (100 Continue, unasked) is passed on and the body goes
                    // on; anything else is the final answer, early.
                    if self.pass_interim(conn, x).await? && conn.buf.is_empty() && body_intact {
                        continue;
                    }
                    whole = false;
                    break;
                }
                Some((Ok(_), _)) => return Err(Failure::Upstream(End::Remote)),
                Some((Err(e), _)) => return Err(upstream_failed(e)),
            }
        }
        Ok(BodySent { whole, write_failed })
    }

    /// Reads the response head, forwarding interim (1xx) responses to the client; the second
    /// value says whether the whole request went upstream.
    async fn read_response_head(
        &mut self,
        conn: &mut Connection,
        x: &Exchange<'_>,
        sent: BodySent,
    ) -> Result<(ResponseHead, bool), Failure> {
        let BodySent { whole, write_failed } = sent;
        let upstream_failed = |e: std::io::Error| {
            tracing::debug!(
                cluster = x.cluster.name(),
                "writing or reading the upstream failed: {e}"
            );
            Failure::Upstream(upstream::end_of(&e))
        };
        let method: &[u8] = if x.is_head { b"HEAD" } else { b"GET" };
        loop {
            // An interim head is passed on, the final one returned, from one parse each.
            match h1::parse_response(&conn.buf, method) {
                // We never ask for an upgrade (Upgrade is hop-by-hop): a 101 is a broken upstream.
                Ok(Some(head)) if head.status == 101 => return Err(Failure::Protocol),
                Ok(Some(head)) if (100..200).contains(&head.status) => {
                    self.forward_interim(conn, head.len, x).await?;
                    continue;
                }
                Ok(Some(head)) => return Ok((head, whole)),
                Ok(None) => {}
                Err(_) => return Err(Failure::Protocol),
            }
            match read_some(&mut conn.stream, &mut conn.buf).await {
                Ok(0) => return Err(write_failed.unwrap_or(Failure::Upstream(End::Remote))),
                Ok(_) => {}
                Err(e) => return Err(write_failed.unwrap_or_else(|| upstream_failed(e))),
            }
        }
    }

    /// Passes on the interim (1xx, not 101) responses at the start of the upstream's buffer: to
    /// an HTTP/1.1 client as they are; an HTTP/1.0 client cannot take them. True if any.
    async fn pass_interim(&mut self, conn: &mut Connection, x: &Exchange<'_>) -> Result<bool, Failure> {
        let mut any = false;
        while let Ok(Some(head)) = h1::parse_response(&conn.buf, b"GET") {
            if !(100..200).contains(&head.status) || head.status == 101 {
                break;
            }
            self.forward_interim(conn, head.len, x).await?;
            any = true;
        }
        Ok(any)
    }

    /// Passes on the interim response of `len` bytes at the start of the upstream's buffer.
    async fn forward_interim(
        &mut self,
        conn: &mut Connection,
        len: usize,
        x: &Exchange<'_>,
    ) -> Result<(), Failure> {
        if x.client_version == h1::Version::Http11 {
            self.stream
                .write_all(&conn.buf[..len])
                .await
                .map_err(|_| Failure::Client)?;
        }
        conn.buf.drain(..len);
        Ok(())
    }

    /// Sends the response head and body to the client, then pools the connection when the
    /// exchange left it clean. As Envoy's stream idle timeout: a response that moves no byte
    /// either way (the upstream stalls, or the client reads nothing) for `stream_idle_timeout`
    /// is reset: both connections close and the log says `SI`.
    #[allow(clippy::too_many_arguments)]
    async fn forward_response(
        &mut self,
        dp: &DataPlane,
        mut conn: Connection,
        head: ResponseHead,
        request_whole: bool,
        x: &Exchange<'_>,
        draining: bool,
        idle_timer: Pin<&mut Sleep>,
    ) -> Outcome {
        let mut stream_idle = StreamIdle::new(idle_timer, dp.options.stream_idle_timeout);
        // A request body not read to its end cannot be told from the client's next request.
        let close = !x.keep_alive || draining || head.framing == Framing::UntilClose || !request_whole;
        let mut out = Vec::with_capacity(head.len + HEAD_EDITS);
        h1::write_response_head(&mut out, &conn.buf, &head, close, x.client_version);
        conn.buf.drain(..head.len);
        let mut outcome = Outcome {
            status: head.status,
            flag: None,
            upstream: Some(x.endpoint.address),
            next: if close { Next::Close } else { Next::KeepAlive },
        };
        let mut scanner = h1::ChunkedScanner::default();
        let mut left = match head.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut client_gone = false;
        loop {
            // The body bytes we have, up to the end of this response.
            let take = match head.framing {
                Framing::Empty => 0,
                Framing::Length(_) => left.min(conn.buf.len() as u64) as usize,
                Framing::Chunked => match scanner.feed(&conn.buf) {
                    Ok(n) => n,
                    Err(_) => {
                        conn.end = End::Local;
                        outcome.flag = Some(ResponseFlag::UpstreamProtocolError);
                        outcome.next = Next::Reset;
                        return outcome;
                    }
                },
                Framing::UntilClose => conn.buf.len(),
            };
            if let Framing::Length(_) = head.framing {
                left -= take as u64;
            }
            if !client_gone {
                out.extend(conn.buf.drain(..take));
                if !out.is_empty() {
                    match stream_idle.bound(self.stream.write_all(&out)).await {
                        Some(Ok(())) => {}
                        Some(Err(_)) => {
                            client_gone = true;
                            outcome.next = Next::Close;
                        }
                        None => return stream_idle.reset(dp, &mut conn, outcome),
                    }
                }
                out.clear();
            } else {
                conn.buf.drain(..take);
            }
            let done = match head.framing {
                Framing::Empty => true,
                Framing::Length(_) => left == 0,
                Framing::Chunked => scanner.is_done(),
                Framing::UntilClose => false,
            };
            if done {
                // Complete: whatever happens to the connection now, no request was cut.
                conn.busy = false;
                break;
            }
            if client_gone
                && !(x.framing == Framing::Empty
                    && matches!(head.framing, Framing::Length(_))
                    && left <= DRAIN_LIMIT)
            {
                // The client left and the rest is not worth reading: the connection closes.
                conn.end = End::Local;
                return outcome;
            }
            let read = if client_gone {
                match tokio::time::timeout(DRAIN_TIME, read_some(&mut conn.stream, &mut conn.buf)).await {
                    Ok(r) => r,
                    Err(_) => {
                        conn.end = End::Local;
                        return outcome;
                    }
                }
            } else {
                match stream_idle
                    .bound(read_some(&mut conn.stream, &mut conn.buf))
                    .await
                {
                    Some(r) => r,
                    None => return stream_idle.reset(dp, &mut conn, outcome),
                }
            };
            match read {
                Ok(0) if head.framing == Framing::UntilClose => {
                    conn.end = End::Remote;
                    return outcome;
                }
                Ok(0) => {
                    // The upstream closed mid-body: the client's response is cut short.
                    conn.end = End::Remote;
                    outcome.flag = Some(ResponseFlag::UpstreamConnectionTermination);
                    outcome.next = Next::Reset;
                    return outcome;
                }
                Ok(_) => {}
                Err(e) => {
                    conn.end = upstream::end_of(&e);
                    outcome.flag = Some(ResponseFlag::UpstreamConnectionTermination);
                    outcome.next = Next::Reset;
                    return outcome;
                }
            }
        }
        if head.keep_alive && request_whole && conn.buf.is_empty() {
            // A pooled connection keeps no buffer while it idles.
            recycle::give_bytes(std::mem::take(&mut conn.buf));
            x.cluster.put_idle(x.endpoint, conn);
        }
        outcome
    }
}

/// One request on its way upstream.
struct Exchange<'a> {
    cluster: &'a Arc<ClusterRuntime>,
    endpoint: &'a Arc<Endpoint>,
    /// The request head as it goes upstream.
    request: Vec<u8>,
    /// How the request's body (in the client's stream) ends.
    framing: Framing,
    is_head: bool,
    /// It may go again on a new connection (idempotent, no body, retries on).
    replayable: bool,
    /// The client keeps its connection after this exchange.
    keep_alive: bool,
    client_version: h1::Version,
}

/// Why one attempt did not give a response head.
enum Failure {
    /// The upstream's answer is not HTTP/1.1 we can forward (Envoy: UPE, 502).
    Protocol,
    /// The upstream connection failed (and how it ended).
    Upstream(End),
    /// The client went away while its request was being forwarded.
    Client,
    /// The client's chunked body does not follow the grammar (400).
    BadBody,
}

/// When a stream last moved a byte: of an upload, or of a response (a `Cell` cannot cross the
/// awaits of a `Send` future; a relaxed atomic costs the same).
struct Progress {
    start: tokio::time::Instant,
    /// Milliseconds from `start`.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            start: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The stream idle timeout over a response, on the connection's idle timer (which does not run
/// during a request). Set on the response's first wait, not per response; then moved on to the
/// last byte's time only when it comes due, not on every read or write.
struct StreamIdle<'t> {
    timer: Pin<&'t mut Sleep>,
    limit: Duration,
    /// The time of the last byte read from the upstream or written to the client.
    progress: Progress,
    armed: bool,
}

impl<'t> StreamIdle<'t> {
    fn new(timer: Pin<&'t mut Sleep>, limit: Duration) -> StreamIdle<'t> {
        StreamIdle {
            timer,
            limit,
            progress: Progress::new(),
            armed: false,
        }
    }

    /// Runs `io` to its end; None if the stream idled `limit` first (`io` is then dropped).
    async fn bound<T>(&mut self, io: impl Future<Output = T>) -> Option<T> {
        let mut io = std::pin::pin!(io);
        let ended = std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = io.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if !self.armed {
                self.armed = true;
                self.timer.as_mut().reset(self.progress.last() + self.limit);
            }
            while self.timer.as_mut().poll(cx).is_ready() {
                let due = self.progress.last() + self.limit;
                if due <= tokio::time::Instant::now() {
                    return Poll::Ready(None);
                }
                self.timer.as_mut().reset(due);
            }
            Poll::Pending
        })
        .await;
        if ended.is_some() {
            self.progress.now();
        }
        ended
    }

    /// Ends a response that idled: the client's connection closes (its response is cut, as
    /// Envoy resets the stream) and the upstream's is not reused.
    fn reset(&self, dp: &DataPlane, conn: &mut Connection, mut outcome: Outcome) -> Outcome {
        stats::inc(&dp.downstream.downstream_rq_idle_timeout);
        conn.end = End::Local;
        outcome.flag = Some(ResponseFlag::StreamIdleTimeout);
        outcome.next = Next::Reset;
        outcome
    }
}

/// How the upload of a request ended, for reading the response.
struct BodySent {
    /// The whole request went upstream.
    whole: bool,
    /// Writing failed; the failure counts if no response is read either.
    write_failed: Option<Failure>,
}

/// `peer`'s IP as x-forwarded-for carries it (IPv4-mapped IPv6 addresses shown as IPv4).
fn client_address(peer: SocketAddr) -> String {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
    .to_string()
}

fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE")
}

/// How long a request waits for its response head, and the answer when that runs out: the
/// route timeout, or the stream idle timeout when it is shorter (nothing moves on the stream
/// while the upstream thinks; Envoy then answers 504 `SI`). One timer serves both.
fn response_head_wait(dp: &DataPlane) -> (Duration, fn() -> LocalReply) {
    let options = &dp.options;
    if options.stream_idle_timeout < options.route_timeout {
        (
            options.stream_idle_timeout,
            LocalReply::stream_timeout_after_request,
        )
    } else {
        (options.route_timeout, LocalReply::upstream_timeout)
    }
}

async fn new_connection(
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Endpoint,
) -> Result<Connection, LocalReply> {
    upstream::connect(cluster, endpoint.address)
        .await
        .map_err(LocalReply::connect_failed)
}
