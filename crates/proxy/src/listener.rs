//! Listeners: bind what the Snapshot asks for, accept, speak HTTP/1.1 downstream, and proxy
//! each request to its route's cluster. Local replies follow Envoy (status, body, flag).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use snapshot::{RouteAction, Snapshot};

use crate::DataPlane;
use crate::access_log::Entry;
use crate::cluster::{ClusterRuntime, Endpoint};
use crate::stats::{self};
use crate::upstream::{self, ConnectError, Connection, UpstreamBody};

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
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let dp = dp.clone();
        tokio::spawn(async move {
            stats::inc(&dp.downstream.downstream_cx_total);
            stats::inc(&dp.downstream.downstream_cx_active);
            // The client's address as x-forwarded-for carries it, made once per connection.
            let client = client_address(peer);
            let service = {
                let dp = dp.clone();
                service_fn(move |req| {
                    let dp = dp.clone();
                    let client = client.clone();
                    async move { Ok::<_, Infallible>(handle(dp, port, client, req).await) }
                })
            };
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = result {
                tracing::debug!(%peer, "downstream connection: {e}");
            }
            stats::dec(&dp.downstream.downstream_cx_active);
        });
    }
}

type ProxyBody = Either<Full<Bytes>, PooledBody>;

/// Why a request did not get an upstream response (Envoy's response flags).
struct LocalReply {
    status: StatusCode,
    flag: &'static str,
    body: String,
}

/// Request fields the access log needs, copied before the request moves upstream.
struct Logged {
    start: jiff::Timestamp,
    method: http::Method,
    path: String,
    version: http::Version,
    forwarded_for: String,
    user_agent: String,
    authority: String,
}

/// `peer`'s IP as a header value (IPv4-mapped IPv6 addresses shown as IPv4).
fn client_address(peer: SocketAddr) -> HeaderValue {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

async fn handle(
    dp: Arc<DataPlane>,
    port: u16,
    client: HeaderValue,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let runtime = dp.runtime();
    let (mut parts, body) = req.into_parts();
    let header_text = |h: &HeaderMap, name: &HeaderName| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let logged = dp.access_log.is_enabled().then(|| Logged {
        start: jiff::Timestamp::now(),
        method: parts.method.clone(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string(),
        version: parts.version,
        forwarded_for: header_text(&parts.headers, &X_FORWARDED_FOR),
        user_agent: header_text(&parts.headers, &header::USER_AGENT),
        authority: header_text(&parts.headers, &header::HOST),
    });

    let mut upstream_host = None;
    let mut cluster_name = "";
    let result: Result<Response<ProxyBody>, LocalReply> = 'proxy: {
        let Some(route) = crate::router::find_listener(&runtime.snapshot.listeners, port)
            .and_then(|l| crate::router::route(l, &parts))
        else {
            break 'proxy Err(LocalReply {
                status: StatusCode::NOT_FOUND,
                flag: "NR",
                body: String::new(),
            });
        };
        let targets = match &route.action {
            RouteAction::Forward(t) => t,
            RouteAction::Direct { status, body } => {
                break 'proxy Err(LocalReply {
                    status: StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    flag: "",
                    body: body.clone(),
                });
            }
        };
        let target = pick_weighted(targets);
        let Some(index) = target.index else {
            break 'proxy Err(LocalReply {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                flag: "NC",
                body: String::new(),
            });
        };
        let cluster = &runtime.clusters[index];
        cluster_name = &target.name;
        stats::inc(&cluster.stats().upstream_rq_total);
        let Some(endpoint) = cluster.pick() else {
            stats::inc(&cluster.stats().upstream_cx_none_healthy);
            break 'proxy Err(LocalReply {
                status: StatusCode::SERVICE_UNAVAILABLE,
                flag: "UH",
                body: "no healthy upstream".into(),
            });
        };
        upstream_host = Some(endpoint.address);
        prepare_upstream_request(&mut parts, client);
        let upstream_req = Request::from_parts(parts, body);
        stats::inc(&cluster.stats().upstream_rq_active);
        stats::inc(&endpoint.active_requests);
        let outcome = exchange(&dp, cluster, &endpoint, upstream_req).await;
        stats::dec(&cluster.stats().upstream_rq_active);
        stats::dec(&endpoint.active_requests);
        match outcome {
            Ok(resp) => {
                cluster.stats().count_status(resp.status().as_u16());
                Ok(resp)
            }
            Err(reply) => {
                if reply.flag == "UT" {
                    stats::inc(&cluster.stats().upstream_rq_timeout);
                }
                cluster.stats().count_status(reply.status.as_u16());
                Err(reply)
            }
        }
    };

    let (response, flag) = match result {
        Ok(r) => (r, ""),
        Err(reply) => {
            let has_body = !reply.body.is_empty();
            let mut r = Response::new(Either::Left(Full::new(Bytes::from(reply.body))));
            *r.status_mut() = reply.status;
            if has_body {
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            (r, reply.flag)
        }
    };
    let status = response.status().as_u16();
    dp.downstream.count_status(status);
    if let Some(l) = logged {
        dp.access_log.log(&Entry {
            start: l.start,
            method: l.method.as_str(),
            path: &l.path,
            protocol: version_name(l.version),
            status,
            flags: flag,
            duration_ms: start.elapsed().as_millis(),
            forwarded_for: &l.forwarded_for,
            user_agent: &l.user_agent,
            authority: &l.authority,
            upstream: upstream_host,
            cluster: cluster_name,
        });
    }
    response
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        _ => "HTTP",
    }
}

/// Picks a cluster by weight (one target: no randomness needed).
fn pick_weighted(targets: &[snapshot::WeightedCluster]) -> &snapshot::WeightedCluster {
    if targets.len() == 1 {
        return &targets[0];
    }
    let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    let mut roll = fast_random() % total.max(1);
    for t in targets {
        if roll < u64::from(t.weight) {
            return t;
        }
        roll -= u64::from(t.weight);
    }
    &targets[targets.len() - 1]
}

/// A per-thread xorshift: weighted picks need spread, not cryptographic randomness.
fn fast_random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Hop-by-hop headers go no further (RFC 9110 7.6.1); the client's address is appended to
/// x-forwarded-for, as Envoy does with use_remote_address.
fn prepare_upstream_request(parts: &mut http::request::Parts, client: HeaderValue) {
    let headers = &mut parts.headers;
    // Most requests carry none of these: one pass over the names avoids a hash lookup per
    // hop-by-hop header on every request.
    if headers.keys().any(is_hop_by_hop) {
        if let Some(listed) = headers.get(header::CONNECTION).cloned()
            && let Ok(listed) = listed.to_str()
        {
            for name in listed.split(',') {
                let name = name.trim();
                if !name.is_empty()
                    && !name.eq_ignore_ascii_case("close")
                    && !name.eq_ignore_ascii_case("keep-alive")
                {
                    headers.remove(name);
                }
            }
        }
        let hop: Vec<HeaderName> = headers.keys().filter(|k| is_hop_by_hop(k)).cloned().collect();
        for name in hop {
            headers.remove(name);
        }
    }
    match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            let joined = format!("{prev}, {}", client.to_str().unwrap_or(""));
            if let Ok(v) = HeaderValue::from_str(&joined) {
                headers.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        None => {
            headers.insert(X_FORWARDED_FOR.clone(), client);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    // origin-form towards the upstream; the Host header carries the authority
    if parts.uri.authority().is_some() {
        if !headers.contains_key(header::HOST)
            && let Some(a) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            headers.insert(header::HOST, v);
        }
        let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if let Ok(uri) = pq.parse() {
            parts.uri = uri;
        }
    }
    parts.version = http::Version::HTTP_11;
}

/// Why one attempt on one connection did not give response headers.
enum Failure {
    Timeout,
    /// The connection closed before the request was written: it can go again as it is.
    NotSent(Box<Request<UpstreamBody>>),
    Failed(hyper::Error),
}

/// One attempt: waits for the connection, writes the request, reads the response headers.
async fn attempt(
    conn: &mut Connection,
    req: Request<UpstreamBody>,
    deadline: tokio::time::Instant,
) -> Result<Response<Incoming>, Failure> {
    if conn.sender.ready().await.is_err() {
        return Err(Failure::NotSent(Box::new(req)));
    }
    match tokio::time::timeout_at(deadline, conn.sender.try_send_request(req)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(mut e)) => match e.take_message() {
            Some(req) => Err(Failure::NotSent(Box::new(req))),
            None => Err(Failure::Failed(e.into_error())),
        },
    }
}

/// Idle time after which a reused connection may be closing under us (see `exchange`).
const REPLAY_AFTER_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

/// Sends the request on a pooled or new connection and waits for the response headers. A
/// reused connection that fails before the response began (the peer closed it as we wrote:
/// the close race) gets the request again, once, on a new connection, when that is safe.
async fn exchange(
    dp: &DataPlane,
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Arc<Endpoint>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, LocalReply> {
    let deadline = tokio::time::Instant::now() + dp.options.route_timeout;
    let (parts, body) = req.into_parts();
    let mut conn = match cluster.take_idle(endpoint) {
        Some(c) => c,
        None => new_connection(cluster, endpoint).await?,
    };
    let retry = dp.options.retry_on_reused_connection;
    // Kept only when a retry after the request was written would be safe and possible, and the
    // connection sat idle long enough for the backend's idle timeout to be closing it: a
    // connection reused within moments of its last response is not in that race, and copying
    // the headers of every request under load would cost ~4% of the request path.
    let replay = (retry
        && conn.reused
        && conn.idle_since.elapsed() >= REPLAY_AFTER_IDLE
        && body.is_end_stream()
        && is_idempotent(&parts.method))
    .then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.version,
            parts.headers.clone(),
        )
    });
    // Without a request body, the request is all written once the response begins.
    let sent_whole = body.is_end_stream();
    let req = Request::from_parts(parts, Either::Left(body));
    let failure = match attempt(&mut conn, req, deadline).await {
        Ok(resp) => return Ok(pooled(resp, conn, cluster, endpoint, sent_whole)),
        Err(f) => f,
    };
    let was_reused = conn.reused;
    drop(conn);
    let again = match failure {
        Failure::Timeout => return Err(timeout()),
        Failure::NotSent(req) if retry => *req,
        Failure::Failed(e) if was_reused && !upstream::is_timed_out(&e) && replay.is_some() => {
            tracing::debug!(
                cluster = cluster.name(),
                "reused connection failed before the response ({e}); retrying"
            );
            let (method, uri, version, headers) = replay.unwrap_or_default();
            let mut req = Request::new(Either::Right(Empty::new()));
            *req.method_mut() = method;
            *req.uri_mut() = uri;
            *req.version_mut() = version;
            *req.headers_mut() = headers;
            req
        }
        Failure::NotSent(_) => return Err(termination()),
        Failure::Failed(e) => {
            tracing::debug!(cluster = cluster.name(), "upstream request failed: {e}");
            return Err(termination());
        }
    };
    stats::inc(&cluster.stats().upstream_rq_retry);
    let mut conn = new_connection(cluster, endpoint).await?;
    let sent_whole = again.body().is_end_stream();
    match attempt(&mut conn, again, deadline).await {
        Ok(resp) => Ok(pooled(resp, conn, cluster, endpoint, sent_whole)),
        Err(Failure::Timeout) => Err(timeout()),
        Err(Failure::NotSent(_)) => Err(termination()),
        Err(Failure::Failed(e)) => {
            tracing::debug!(cluster = cluster.name(), "upstream request failed on retry: {e}");
            Err(termination())
        }
    }
}

fn pooled(
    resp: Response<Incoming>,
    conn: Connection,
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Arc<Endpoint>,
    sent_whole: bool,
) -> Response<ProxyBody> {
    let (parts, body) = resp.into_parts();
    let mut pooled = PooledBody {
        inner: Some(body),
        conn: Some(conn),
        drainable: sent_whole,
        cluster: cluster.clone(),
        endpoint: endpoint.clone(),
    };
    if pooled.is_end_stream() {
        pooled.release();
    }
    Response::from_parts(parts, Either::Right(pooled))
}

fn timeout() -> LocalReply {
    LocalReply {
        status: StatusCode::GATEWAY_TIMEOUT,
        flag: "UT",
        body: "upstream request timeout".into(),
    }
}

async fn new_connection(
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Endpoint,
) -> Result<Connection, LocalReply> {
    upstream::connect(cluster, endpoint.address).await.map_err(|e| {
        let reason = match e {
            ConnectError::Timeout => "connection timeout".to_string(),
            ConnectError::Failed(err) => {
                format!("remote connection failure, transport failure reason: {err}")
            }
        };
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            flag: "UF",
            body: format!(
                "upstream connect error or disconnect/reset before headers. reset reason: {reason}"
            ),
        }
    })
}

fn termination() -> LocalReply {
    LocalReply {
        status: StatusCode::SERVICE_UNAVAILABLE,
        flag: "UC",
        body:
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
                .into(),
    }
}

/// The upstream response body, streamed through; when it ends cleanly, its connection goes
/// back to the pool. Dropped early, the connection is closed (hyper cannot reuse it).
pub(crate) struct PooledBody {
    /// Always Some until dropped (taken out to drain the rest).
    inner: Option<Incoming>,
    /// The request had no body, so nothing of it can still be on its way when the client
    /// leaves: the connection may be drained and pooled.
    drainable: bool,
    conn: Option<Connection>,
    cluster: Arc<ClusterRuntime>,
    endpoint: Arc<Endpoint>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.cluster.put_idle(&self.endpoint, conn);
        }
    }
}

/// A response rest this small is read to its end when the client leaves early, so that its
/// connection goes back to the pool instead of being closed (a new connection costs the backend
/// a handshake, and the next request a round trip).
const DRAIN_LIMIT: u64 = 64 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

impl Drop for PooledBody {
    fn drop(&mut self) {
        let (Some(conn), Some(mut rest)) = (self.conn.take(), self.inner.take()) else {
            return;
        };
        let worth_draining = self.drainable && rest.size_hint().upper().is_some_and(|n| n <= DRAIN_LIMIT);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !worth_draining {
            return; // `conn` dropped: closed
        }
        let (cluster, endpoint) = (self.cluster.clone(), self.endpoint.clone());
        runtime.spawn(async move {
            let drained = tokio::time::timeout(DRAIN_TIME, async {
                while let Some(frame) = rest.frame().await {
                    if frame.is_err() {
                        return false;
                    }
                }
                true
            })
            .await;
            if drained == Ok(true) {
                cluster.put_idle(&endpoint, conn);
            }
        });
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => drop(this.conn.take()),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}
