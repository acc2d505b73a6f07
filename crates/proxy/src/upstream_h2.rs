//! HTTP/2 to an endpoint: the endpoint's pool of multiplexed connections, used when the
//! cluster's protocol is HTTP/2 (`snapshot::UpstreamProtocol::Http2`, kgateway's
//! `appProtocol: kubernetes.io/h2c`, `http2`, `grpc`).
//!
//! The API, for every path that sends a request to an HTTP/2 upstream (an HTTP/1.1 client:
//! `h1_to_h2.rs`; an HTTP/2 client stream):
//! `open_stream(cluster, endpoint, request, end_of_stream, wait, proxied)` gives an
//! `UpstreamStream`: the response future, the `SendStream` for the request body (send it with
//! `h2_body::send_data`/`relay`), and the `StreamLease`, which holds the stream's slot on its
//! connection and its circuit breaker request until it drops (drop it when the stream is done
//! both ways). A failure before the stream opens is the `LocalReply` to send (503 UF when the
//! connection could not be opened, 503 UO over a circuit breaker, 504 UT when no stream slot
//! came within `wait`, 503 UC when the connection died). The caller counts
//! `upstream_rq_active` and the response status, as for HTTP/1.1.
//!
//! A connection: the transport (`upstream::open_transport`: socket options, PROXY header, TLS
//! with ALPN h2), the h2 client handshake with the cluster's `Http2Options` (initial windows,
//! max concurrent streams), driven by a task of its own, which also runs its keepalive
//! (`h2_keepalive.rs`) and closes it when it idles past the idle timeout with no stream. A
//! request takes a stream slot on a connection that has one (up to min(`maxConcurrentStreams`,
//! the peer's SETTINGS_MAX_CONCURRENT_STREAMS); a connection still connecting offers its
//! configured streams, so that a burst opens ceil(burst / streams) connections, as Envoy's
//! pool attaches pending streams to connecting clients), and opens another when all are full.
//! Circuit breakers as Envoy counts them for HTTP/2: connections against `max_connections`,
//! streams against `max_requests`, requests waiting for a slot against
//! `max_pending_requests`. Endings: the peer closing (`upstream_cx_destroy_remote`), a GOAWAY
//! (`upstream_cx_close_notify`), the idle timeout (`upstream_cx_idle_timeout`), the
//! keepalive (`http2.keepalive_timeout`, closed locally), `maxRequestsPerConnection` (the
//! connection takes no new stream, and closes when its last ends).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::SendStream;
use h2::client::{ResponseFuture, SendRequest};
use snapshot::{Http2Keepalive, Http2Options};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::circuit_breakers::RequestGuard;
use crate::cluster::{ClusterRuntime, Endpoint};
use crate::h2_keepalive::{self, Activity, Dead, Watched};
use crate::local_reply::LocalReply;
use crate::outlier_detection::Report;
use crate::proxy_protocol::ProxyAddresses;
use crate::stats;
use crate::upstream::{self, ConnectionSlot, End};

/// Envoy's default `max_concurrent_streams` for upstream HTTP/2 (2^31 - 1).
const DEFAULT_MAX_STREAMS: u32 = i32::MAX as u32;
/// The receive windows when the policy sets none. Envoy's are 256 MiB, bounded in practice by
/// its 1 MiB buffer watermarks; kgw takes from a stream only as fast as its client reads, so
/// the window itself bounds what a fast upstream can leave in memory: 1 MiB a stream (Envoy's
/// per-connection buffer limit), 16 MiB a connection (well above a stream's, so that one slow
/// reader cannot use up the connection's window). The h2 crate's 64 KiB default stalls a
/// download on every window's round trip.
const DEFAULT_STREAM_WINDOW: u32 = 1024 * 1024;
const DEFAULT_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// An endpoint's HTTP/2 connections.
#[derive(Default)]
pub(crate) struct EndpointPool {
    connections: Mutex<Vec<Arc<H2Connection>>>,
    /// Woken when a stream slot frees or a connection closes, while requests wait for one.
    freed: Notify,
    /// Requests waiting for a slot (so that a freed slot costs no wake-up when none waits).
    waiting: AtomicU64,
    /// The endpoint left its cluster: a connection opened from here on (by a request that
    /// picked it just before) serves that request and closes, rather than stay unseen.
    /// Under the connections' lock, with `close_for_good`.
    closed: AtomicBool,
}

/// One HTTP/2 connection of the pool.
struct H2Connection {
    /// Its id with the cluster once its transport is open (0 before).
    id: AtomicU64,
    phase: watch::Sender<Phase>,
    /// Streams on it, or promised to requests waiting for it to connect.
    streams: AtomicU32,
    /// The configured limit on its concurrent streams (`maxConcurrentStreams`).
    max_streams: u32,
    /// Streams it was ever given (for `maxRequestsPerConnection`).
    given: AtomicU32,
    /// It takes no new stream (GOAWAY, maxRequestsPerConnection, closing).
    draining: AtomicBool,
    /// When its last stream ended (for the idle timeout).
    idle_since_ms: AtomicU64,
    /// Wakes its task: a stream ended, or it should close.
    wake: Notify,
    /// Why it should close, once decided here rather than by its task.
    close_as: Mutex<Option<End>>,
    activity: Arc<Activity>,
    keepalive: Option<Http2Keepalive>,
    /// The client whose PROXY protocol header it carried: it serves no other.
    proxied: Option<ProxyAddresses>,
    /// `overrideStreamErrorOnInvalidHttpMessage`: an invalid message from the upstream resets
    /// only its stream; otherwise (Envoy's default) it ends the connection too.
    invalid_message_resets_stream_only: bool,
    born: Instant,
}

#[derive(Clone)]
enum Phase {
    Connecting,
    Ready(SendRequest<Bytes>),
    /// It could not be opened: the answer for the requests that waited on it.
    Failed(LocalReply),
    Closed,
}

/// A stream slot on a connection, and the request's place in the circuit breaker; both freed
/// as it drops.
pub(crate) struct StreamLease {
    connection: Arc<H2Connection>,
    pool: Arc<Endpoint>,
    _request: Option<RequestGuard>,
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        let c = &self.connection;
        if c.streams.fetch_sub(1, Ordering::SeqCst) == 1 {
            c.idle_since_ms
                .store(c.born.elapsed().as_millis() as u64, Ordering::Relaxed);
            c.wake.notify_one();
        }
        if self.pool.h2.waiting.load(Ordering::SeqCst) > 0 {
            self.pool.h2.freed.notify_waiters();
        }
    }
}

impl StreamLease {
    /// The answer for this stream's failure before its response head (`stream_failed`). When
    /// the failure is an invalid message from the upstream (h2 found its response malformed
    /// and reset the stream with PROTOCOL_ERROR), the connection goes too, as Envoy's HTTP/2
    /// codec ends it, unless the cluster's `overrideStreamErrorOnInvalidHttpMessage` keeps the
    /// error to the stream: it takes no new stream and closes once its other streams end.
    /// Counted in `upstream_cx_protocol_error`, answered 502 UPE as Envoy answers it.
    pub(crate) fn failed(&self, cluster: &ClusterRuntime, error: &h2::Error) -> LocalReply {
        if !is_invalid_message(error) {
            return stream_failed(error);
        }
        stats::inc(&cluster.stats().upstream_cx_protocol_error);
        if !self.connection.invalid_message_resets_stream_only {
            self.connection.close_when_idle(End::Local);
        }
        LocalReply::upstream_protocol_error()
    }
}

/// h2 refused the upstream's message on this stream (a malformed response head, a
/// content-length its body did not keep, ...): a stream reset it made itself, PROTOCOL_ERROR.
fn is_invalid_message(error: &h2::Error) -> bool {
    error.is_reset() && error.is_library() && error.reason() == Some(h2::Reason::PROTOCOL_ERROR)
}

/// An open stream to the upstream (see the module doc).
pub(crate) struct UpstreamStream {
    pub response: ResponseFuture,
    pub body: SendStream<Bytes>,
    pub lease: StreamLease,
}

/// Opens a stream for `request` on a connection to `endpoint` (see the module doc); a
/// connection found dead as the stream opens (a GOAWAY, say) is left for another, once.
pub(crate) async fn open_stream(
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Arc<Endpoint>,
    request: http::Request<()>,
    end_of_stream: bool,
    wait: Duration,
    proxied: Option<ProxyAddresses>,
) -> Result<UpstreamStream, LocalReply> {
    let deadline = Instant::now() + wait;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let lease = take_stream(cluster, endpoint, deadline, proxied).await?;
        let send = ready_connection(&lease.connection, deadline).await?;
        match send.ready().await {
            Ok(mut send) => {
                return match send.send_request(request, end_of_stream) {
                    Ok((response, body)) => Ok(UpstreamStream {
                        response,
                        body,
                        lease,
                    }),
                    Err(e) => Err(stream_failed(&e)),
                };
            }
            Err(e) => {
                // It cannot take a stream any more: no other request is given to it.
                lease.connection.draining.store(true, Ordering::SeqCst);
                if attempts >= 2 {
                    return Err(stream_failed(&e));
                }
            }
        }
    }
}

/// The answer for a stream that failed before its response head, as Envoy words it and flags
/// it (UR for the upstream's RST_STREAM, UC for a connection that ended).
pub(crate) fn stream_failed(error: &h2::Error) -> LocalReply {
    if reset_by_upstream(error) {
        LocalReply::upstream_reset(error.reason() == Some(h2::Reason::REFUSED_STREAM))
    } else {
        LocalReply::upstream_terminated()
    }
}

/// Did the upstream reset the stream (RST_STREAM), rather than the connection end?
pub(crate) fn reset_by_upstream(error: &h2::Error) -> bool {
    error.is_reset() && error.is_remote()
}

/// The connection's request handle once it is connected.
async fn ready_connection(
    connection: &H2Connection,
    deadline: Instant,
) -> Result<SendRequest<Bytes>, LocalReply> {
    let mut phase = connection.phase.subscribe();
    let waited = tokio::time::timeout_at(deadline, phase.wait_for(|p| !matches!(p, Phase::Connecting))).await;
    let Ok(Ok(phase)) = waited else {
        return Err(LocalReply::upstream_timeout());
    };
    match &*phase {
        Phase::Ready(send) => Ok(send.clone()),
        Phase::Failed(reply) => Err(reply.clone()),
        Phase::Connecting | Phase::Closed => Err(LocalReply::upstream_terminated()),
    }
}

/// A stream slot: on a connection that has one, on a new connection within `max_connections`,
/// or one that frees while the request waits, pending, until `deadline`.
async fn take_stream(
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Arc<Endpoint>,
    deadline: Instant,
    proxied: Option<ProxyAddresses>,
) -> Result<StreamLease, LocalReply> {
    let breaker = cluster.breaker();
    let pool = &endpoint.h2;
    // Counted as pending (circuit breaker) and waiting (this pool) while it waits.
    let mut pending = None;
    loop {
        // Registered before looking, so a slot freed after the look wakes it.
        let freed = pool.freed.notified();
        let returned = breaker.returned();
        tokio::pin!(freed, returned);
        freed.as_mut().enable();
        returned.as_mut().enable();
        // Counted against max_requests from here until the lease drops; checked before a
        // slot is taken, so that a request over the limit opens no connection.
        let Some(request) = breaker.start_request() else {
            stats::inc(&cluster.stats().upstream_rq_active_overflow);
            return Err(LocalReply::overflow());
        };
        if let Some(connection) = take_slot(cluster, endpoint, proxied) {
            return Ok(StreamLease {
                connection,
                pool: endpoint.clone(),
                _request: Some(request),
            });
        }
        drop(request);
        if pending.is_none() {
            let entered = breaker.enter_pending(cluster)?;
            pool.waiting.fetch_add(1, Ordering::SeqCst);
            pending = Some((entered, Waiting(pool)));
            // Look again now that those who free slots see this request waiting.
            continue;
        }
        tokio::select! {
            () = freed => {}
            () = returned => {}
            () = tokio::time::sleep_until(deadline) => return Err(LocalReply::upstream_timeout()),
        }
    }
}

/// A request waiting for a slot, counted in its pool's `waiting` while it lives.
struct Waiting<'a>(&'a EndpointPool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Under the pool's lock: a slot on a connection that has one, else a new connection (its
/// first slot taken) when the circuit breaker allows one.
fn take_slot(
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Arc<Endpoint>,
    proxied: Option<ProxyAddresses>,
) -> Option<Arc<H2Connection>> {
    let policy = cluster.policy_ref();
    let max_requests = policy
        .common_http
        .and_then(|c| c.max_requests_per_connection)
        .filter(|n| *n > 0);
    let mut connections = endpoint.h2.lock();
    // The most recent first: older ones may reach their idle timeout.
    for c in connections.iter().rev() {
        if c.proxied == proxied && c.try_take(max_requests, cluster) {
            return Some(c.clone());
        }
    }
    if !cluster.breaker().reserve_connection(&endpoint.open_connections) {
        return None;
    }
    let slot = ConnectionSlot::new(cluster, endpoint);
    let options = policy.http2.unwrap_or_default();
    let connection = Arc::new(H2Connection {
        id: AtomicU64::new(0),
        phase: watch::Sender::new(Phase::Connecting),
        streams: AtomicU32::new(0),
        max_streams: options
            .max_concurrent_streams
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_MAX_STREAMS),
        given: AtomicU32::new(0),
        draining: AtomicBool::new(false),
        invalid_message_resets_stream_only: options.override_stream_error_on_invalid_http_message
            == Some(true),
        idle_since_ms: AtomicU64::new(0),
        wake: Notify::new(),
        close_as: Mutex::new(None),
        activity: Activity::new(),
        keepalive: options.connection_keepalive,
        proxied: proxied.filter(|_| policy.proxy_protocol.is_some()),
        born: Instant::now(),
    });
    let took = connection.try_take(max_requests, cluster);
    debug_assert!(took, "a new connection has a free slot");
    if endpoint.h2.closed.load(Ordering::SeqCst) {
        connection.close_when_idle(End::Local);
    }
    connections.push(connection.clone());
    tokio::spawn(drive(
        cluster.clone(),
        endpoint.clone(),
        connection.clone(),
        options,
        slot,
    ));
    Some(connection)
}

impl H2Connection {
    /// Takes a stream slot if it has one free and takes new streams.
    fn try_take(&self, max_requests: Option<u32>, cluster: &ClusterRuntime) -> bool {
        if self.draining.load(Ordering::SeqCst) {
            return false;
        }
        let limit = match &*self.phase.borrow() {
            Phase::Connecting => self.max_streams,
            Phase::Ready(send) => {
                let peer = u32::try_from(send.current_max_send_streams()).unwrap_or(u32::MAX);
                self.max_streams.min(peer)
            }
            Phase::Failed(_) | Phase::Closed => return false,
        };
        let took = self
            .streams
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if !took {
            return false;
        }
        let given = self.given.fetch_add(1, Ordering::SeqCst) + 1;
        if max_requests.is_some_and(|max| given >= max) {
            // Its last stream: it drains, and closes when that ends.
            stats::inc(&cluster.stats().upstream_cx_max_requests);
            self.draining.store(true, Ordering::SeqCst);
            self.close_when_idle(End::MaxRequests);
        }
        self.activity.before_new_stream(self.keepalive.as_ref());
        true
    }

    /// It takes no new stream and closes (as `end`) once it has none.
    fn close_when_idle(&self, end: End) {
        self.draining.store(true, Ordering::SeqCst);
        let mut close_as = self.close_as.lock().unwrap_or_else(|e| e.into_inner());
        close_as.get_or_insert(end);
        drop(close_as);
        self.wake.notify_one();
    }

    fn idle_for(&self) -> Duration {
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(since)
    }
}

impl EndpointPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<H2Connection>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, connection: &Arc<H2Connection>) {
        self.lock().retain(|c| !Arc::ptr_eq(c, connection));
        self.freed.notify_waiters();
    }

    /// Connections with no stream for `max_idle` or longer close (the idle timeout).
    pub(crate) fn expire(&self, max_idle: Duration) {
        for c in self.lock().iter() {
            if c.streams.load(Ordering::SeqCst) == 0
                && matches!(&*c.phase.borrow(), Phase::Ready(_))
                && c.idle_for() >= max_idle
            {
                c.close_when_idle(End::IdleTimeout);
            }
        }
    }

    /// Every connection takes no new stream and closes once its streams end (the endpoint
    /// left, the cluster's TLS changed, ...).
    pub(crate) fn close_all(&self) {
        for c in self.lock().iter() {
            c.close_when_idle(End::Local);
        }
    }

    /// The endpoint left: its connections close as `close_all`, and so will any opened
    /// later by a request already on its way to it.
    pub(crate) fn close_for_good(&self) {
        let connections = self.lock();
        self.closed.store(true, Ordering::SeqCst);
        for c in connections.iter() {
            c.close_when_idle(End::Local);
        }
    }

    /// Connections open or opening.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The connection's task: opens it, then drives it (with its keepalive) until it ends, and
/// counts its end.
async fn drive(
    cluster: Arc<ClusterRuntime>,
    endpoint: Arc<Endpoint>,
    connection: Arc<H2Connection>,
    options: Http2Options,
    slot: ConnectionSlot,
) {
    let opened = upstream::open_transport(&cluster, endpoint.address, connection.proxied).await;
    let (id, transport) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            cluster.outlier.report(&cluster, &endpoint, Report::ConnectFailed);
            connection
                .phase
                .send_replace(Phase::Failed(LocalReply::connect_failed(e)));
            endpoint.h2.remove(&connection);
            drop(slot);
            return;
        }
    };
    cluster
        .outlier
        .report(&cluster, &endpoint, Report::ConnectSuccess);
    connection.id.store(id, Ordering::Relaxed);
    stats::inc(&cluster.stats().upstream_cx_http2_total);
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(
        options
            .initial_stream_window_size
            .unwrap_or(DEFAULT_STREAM_WINDOW),
    );
    builder.initial_connection_window_size(
        options
            .initial_connection_window_size
            .unwrap_or(DEFAULT_CONNECTION_WINDOW),
    );
    if let Some(streams) = options.max_concurrent_streams.filter(|n| *n > 0) {
        builder.max_concurrent_streams(streams);
    }
    let watched = Watched::new(transport, connection.activity.clone());
    let (send, mut h2_connection) = match builder.handshake::<_, Bytes>(watched).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(cluster = cluster.name(), id, "HTTP/2 handshake failed: {e}");
            connection
                .phase
                .send_replace(Phase::Failed(LocalReply::upstream_terminated()));
            endpoint.h2.remove(&connection);
            upstream::count_closed(&cluster, id, End::Remote, false);
            return;
        }
    };
    let keepalive = options
        .connection_keepalive
        .zip(h2_connection.ping_pong())
        .map(|(settings, ping_pong)| h2_keepalive::run(settings, ping_pong, connection.activity.clone()));
    // Kept to ask, at the end, whether the peer said GOAWAY.
    let probe = send.clone();
    connection.phase.send_replace(Phase::Ready(send));
    // Requests waiting on a full pool may now fit (the peer's limit is known).
    endpoint.h2.freed.notify_waiters();
    let keepalive = async move {
        match keepalive {
            Some(k) => k.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(keepalive);
    // How the connection's own future ended: who closed it, and a GOAWAY counted.
    let ended_as = |ended: Result<(), h2::Error>| {
        // A GOAWAY with NO_ERROR ends the connection cleanly once its streams are done: the
        // request handle says whether one came.
        let goaway = match &ended {
            Err(e) => e.is_go_away(),
            Ok(()) => said_goaway(&probe),
        };
        if goaway {
            stats::inc(&cluster.stats().upstream_cx_close_notify);
        }
        match ended {
            Ok(()) => End::Remote,
            Err(e) if e.is_go_away() => End::Remote,
            Err(e) => match e.get_io() {
                Some(io) => upstream::end_of(io),
                None if e.is_remote() => End::Remote,
                None => End::Local,
            },
        }
    };
    let end = loop {
        tokio::select! {
            ended = &mut h2_connection => break ended_as(ended),
            dead = &mut keepalive => {
                if dead == Dead::Closed {
                    // The keepalive found the connection already ending (the peer closed it,
                    // say): its own end says how, so the close is counted for what it was.
                    match tokio::time::timeout(Duration::from_secs(1), &mut h2_connection).await {
                        Ok(ended) => break ended_as(ended),
                        Err(_) => break End::Local,
                    }
                }
                tracing::debug!(cluster = cluster.name(), id, "closing an HTTP/2 connection whose PING went unanswered");
                cluster.http2_stats().keepalive_timeout.fetch_add(1, Ordering::Relaxed);
                break End::Local;
            }
            () = connection.wake.notified() => {
                let close_as = *connection.close_as.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(end) = close_as
                    && connection.streams.load(Ordering::SeqCst) == 0
                {
                    break end;
                }
            }
        }
    };
    // No new stream from here; those in flight fail as the connection drops.
    connection.draining.store(true, Ordering::SeqCst);
    let busy = connection.streams.load(Ordering::SeqCst) > 0;
    connection.phase.send_replace(Phase::Closed);
    drop(h2_connection);
    endpoint.h2.remove(&connection);
    upstream::count_closed(&cluster, id, end, busy);
    drop(slot);
}

/// Did the peer send GOAWAY (asked of a request handle without waiting)?
fn said_goaway(send: &SendRequest<Bytes>) -> bool {
    let mut ready = std::pin::pin!(send.clone().ready());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(ready.as_mut().poll(&mut cx), std::task::Poll::Ready(Err(e)) if e.is_go_away())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use snapshot::{CommonHttpOptions, UpstreamPolicy, UpstreamProtocol};
    use tokio::net::TcpListener;

    use super::*;

    /// An h2c server on loopback: each stream answers 200 "ok" after `delay`; counts the
    /// connections it accepted.
    async fn h2_server(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((_request, mut respond))) = conn.accept().await {
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let response = http::Response::new(());
                            if let Ok(mut body) = respond.send_response(response, false) {
                                let _ = body.send_data(Bytes::from_static(b"ok"), true);
                            }
                        });
                    }
                });
            }
        });
        (address, accepted)
    }

    /// An HTTP/2 cluster over `address` with `options`.
    fn cluster(
        address: SocketAddr,
        options: Http2Options,
        common: Option<CommonHttpOptions>,
    ) -> Arc<ClusterRuntime> {
        let cluster = snapshot::Cluster {
            discovery: snapshot::Discovery::Eds,
            name: "h2".into(),
            endpoints: vec![snapshot::Endpoint::new(address)],
            protocol: UpstreamProtocol::Http2,
            upstream: UpstreamPolicy {
                http2: Some(options),
                common_http: common,
                ..Default::default()
            },
        };
        Arc::new(ClusterRuntime::new(&cluster, true, None))
    }

    fn get() -> http::Request<()> {
        http::Request::get("http://backend/").body(()).unwrap()
    }

    async fn status_of(cluster: &Arc<ClusterRuntime>) -> Result<u16, LocalReply> {
        let endpoint = cluster.endpoint_list()[0].clone();
        let stream = open_stream(cluster, &endpoint, get(), true, Duration::from_secs(5), None).await?;
        let response = stream.response.await.map_err(|e| stream_failed(&e))?;
        let mut body = response.into_body();
        while let Some(data) = crate::h2_body::recv_data(&mut body).await {
            data.map_err(|e| stream_failed(&e))?;
        }
        Ok(200)
    }

    fn counter(cluster: &ClusterRuntime, name: &str) -> u64 {
        cluster
            .stats()
            .list()
            .into_iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, v)| v)
            .unwrap()
    }

    #[tokio::test]
    async fn a_burst_shares_connections_up_to_max_concurrent_streams() {
        let (address, accepted) = h2_server(Duration::from_millis(200)).await;
        let options = Http2Options {
            max_concurrent_streams: Some(10),
            ..Default::default()
        };
        let cluster = cluster(address, options, None);
        let calls: Vec<_> = (0..25)
            .map(|_| {
                let cluster = cluster.clone();
                tokio::spawn(async move { status_of(&cluster).await.map_err(|r| r.body) })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), Ok(200));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "ceil(25 / 10) connections");
        assert_eq!(counter(&cluster, "upstream_cx_http2_total"), 3);
        // The next request reuses one.
        assert_eq!(status_of(&cluster).await.map_err(|r| r.body), Ok(200));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_opened_to_a_removed_endpoint_closes_after_its_stream() {
        let (address, accepted) = h2_server(Duration::ZERO).await;
        let cluster = cluster(address, Http2Options::default(), None);
        let endpoint = cluster.endpoint_list()[0].clone();
        // The endpoint leaves; a request that picked it just before still goes.
        endpoint.h2.close_for_good();
        assert_eq!(status_of(&cluster).await.map_err(|r| r.body), Ok(200));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        tokio::time::timeout(Duration::from_secs(5), async {
            while endpoint.h2.len() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("its connection closed once its stream ended");
        assert_eq!(counter(&cluster, "upstream_cx_destroy_local"), 1);
    }

    /// An h2c server that resets every stream with `reason`.
    async fn resetting_server(reason: h2::Reason) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((_request, mut respond))) = conn.accept().await {
                        respond.send_reset(reason);
                    }
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn an_upstream_reset_is_flagged_ur_and_a_refused_stream_says_so() {
        for (reason, text) in [
            (h2::Reason::CANCEL, "remote reset"),
            (h2::Reason::REFUSED_STREAM, "remote refused stream reset"),
        ] {
            let cluster = cluster(resetting_server(reason).await, Http2Options::default(), None);
            let reply = status_of(&cluster).await.expect_err("reset");
            assert_eq!(reply.status, 503);
            assert_eq!(
                reply.body,
                format!("upstream connect error or disconnect/reset before headers. reset reason: {text}")
            );
            assert_eq!(reply.flag.map(|f| f.as_str()), Some("UR"));
        }
    }

    #[tokio::test]
    async fn max_requests_per_connection_drains_the_connection() {
        let (address, accepted) = h2_server(Duration::ZERO).await;
        let common = CommonHttpOptions {
            max_requests_per_connection: Some(2),
            ..Default::default()
        };
        let cluster = cluster(address, Http2Options::default(), Some(common));
        for _ in 0..5 {
            assert_eq!(status_of(&cluster).await.map_err(|r| r.body), Ok(200));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(
            counter(&cluster, "upstream_cx_max_requests"),
            2,
            "the third took one request"
        );
    }

    /// A peer that accepts the connection and never sends a byte (a blackholed backend, seen
    /// from the HTTP/2 layer: TCP still takes what is sent).
    async fn silent_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        address
    }

    #[tokio::test]
    async fn an_unanswered_ping_closes_the_connection_and_fails_its_streams_fast() {
        let address = silent_server().await;
        let keepalive = Http2Keepalive {
            interval: Some(Duration::from_millis(200)),
            timeout: Duration::from_millis(200),
            connection_idle_interval: None,
        };
        let options = Http2Options {
            connection_keepalive: Some(keepalive),
            ..Default::default()
        };
        let cluster = cluster(address, options, None);
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), status_of(&cluster))
            .await
            .expect("the request fails within 5 s");
        let took = started.elapsed();
        let reply = answer.expect_err("no answer from a silent peer");
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.body,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
        );
        // interval (+15% jitter) + timeout, with room for a loaded machine.
        assert!(took < Duration::from_millis(200 + 30 + 200 + 500), "{took:?}");
        assert_eq!(cluster.http2_stats().keepalive_timeout.load(Ordering::Relaxed), 1);
        assert_eq!(counter(&cluster, "upstream_cx_destroy_local_with_active_rq"), 1);
        assert_eq!(counter(&cluster, "upstream_cx_destroy_with_active_rq"), 1);
        assert_eq!(cluster.endpoint_list()[0].h2.len(), 0, "it left the pool");
    }

    #[tokio::test]
    async fn a_connection_idle_past_connection_idle_interval_is_pinged_before_a_new_stream() {
        let address = silent_server().await;
        let keepalive = Http2Keepalive {
            interval: None,
            timeout: Duration::from_millis(200),
            connection_idle_interval: Some(Duration::from_millis(100)),
        };
        let options = Http2Options {
            connection_keepalive: Some(keepalive),
            ..Default::default()
        };
        let cluster = cluster(address, options, None);
        let endpoint = cluster.endpoint_list()[0].clone();
        // The first stream: no PING (no interval), so it just waits on the silent peer.
        let first = open_stream(&cluster, &endpoint, get(), true, Duration::from_secs(5), None)
            .await
            .map_err(|r| r.body)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(cluster.http2_stats().keepalive_timeout.load(Ordering::Relaxed), 0);
        // Idle (nothing received) past 100 ms: the next stream on it sends a PING first, which
        // goes unanswered: both streams fail within the PING's timeout.
        let started = std::time::Instant::now();
        let second = tokio::time::timeout(Duration::from_secs(5), status_of(&cluster))
            .await
            .expect("the second request fails within 5 s");
        assert_eq!(second.map_err(|r| r.status), Err(503));
        assert!(first.response.await.is_err(), "the first stream failed too");
        assert!(
            started.elapsed() < Duration::from_millis(200 + 500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(cluster.http2_stats().keepalive_timeout.load(Ordering::Relaxed), 1);
        drop(first.lease);
    }

    #[tokio::test]
    async fn a_connection_with_no_stream_past_the_idle_timeout_closes() {
        let (address, accepted) = h2_server(Duration::ZERO).await;
        let common = CommonHttpOptions {
            idle_timeout: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let cluster = cluster(address, Http2Options::default(), Some(common));
        assert_eq!(status_of(&cluster).await.map_err(|r| r.body), Ok(200));
        // As the data plane's maintenance sweep does, every 100 ms.
        cluster.expire_idle(Duration::from_secs(3600));
        assert_eq!(
            counter(&cluster, "upstream_cx_idle_timeout"),
            0,
            "not idle long enough"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        cluster.expire_idle(Duration::from_secs(3600));
        let endpoint = cluster.endpoint_list()[0].clone();
        tokio::time::timeout(Duration::from_secs(2), async {
            while endpoint.h2.len() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the idle connection closes");
        assert_eq!(counter(&cluster, "upstream_cx_idle_timeout"), 1);
        assert_eq!(counter(&cluster, "upstream_cx_destroy_local"), 1);
        assert_eq!(counter(&cluster, "upstream_cx_active"), 0);
        assert_eq!(status_of(&cluster).await.map_err(|r| r.body), Ok(200));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the next request opened another"
        );
    }

    /// A server that answers one stream, then says GOAWAY and closes.
    async fn goaway_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    if let Some(Ok((_request, mut respond))) = conn.accept().await {
                        let mut body = respond.send_response(http::Response::new(()), false).unwrap();
                        body.send_data(Bytes::from_static(b"ok"), true).unwrap();
                    }
                    conn.graceful_shutdown();
                    while let Some(Ok(_)) = conn.accept().await {}
                });
            }
        });
        (address, accepted)
    }

    #[tokio::test]
    async fn after_a_goaway_the_next_request_goes_on_a_new_connection() {
        let (address, accepted) = goaway_server().await;
        let cluster = cluster(address, Http2Options::default(), None);
        for _ in 0..3 {
            assert_eq!(status_of(&cluster).await.map_err(|r| r.body), Ok(200));
            // The connection ends with the GOAWAY: wait for it to leave the pool.
            let endpoint = cluster.endpoint_list()[0].clone();
            tokio::time::timeout(Duration::from_secs(2), async {
                while endpoint.h2.len() > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the connection leaves the pool");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(counter(&cluster, "upstream_cx_destroy_remote"), 3);
        assert_eq!(counter(&cluster, "upstream_cx_close_notify"), 3);
    }

    #[tokio::test]
    async fn over_tls_the_connection_offers_alpn_h2() {
        use crate::test_pki::Pki;
        let pki = Pki::new("h2-alpn");
        pki.server("server", "DNS:backend.example.com");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.cert("server")], pki.key("server"))
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (alpn_tx, mut alpn_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tls = acceptor.accept(tcp).await.unwrap();
                let _ = alpn_tx.send(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tls).await.unwrap();
                    while let Some(Ok((_request, mut respond))) = conn.accept().await {
                        let mut body = respond.send_response(http::Response::new(()), false).unwrap();
                        body.send_data(Bytes::from_static(b"ok"), true).unwrap();
                    }
                });
            }
        });
        let tls = snapshot::UpstreamTls {
            sni: Some("backend.example.com".into()),
            client_certificate: None,
            validation: snapshot::ServerValidation::TrustedCa {
                ca: snapshot::PemSource::Inline(pki.pem("ca.crt")),
                subject_alt_names: Vec::new(),
            },
            alpn_protocols: Vec::new(),
            parameters: snapshot::TlsParameters::default(),
        };
        let cluster = Arc::new(ClusterRuntime::new(
            &snapshot::Cluster {
                discovery: snapshot::Discovery::Eds,
                name: "h2-tls".into(),
                endpoints: vec![snapshot::Endpoint::new(address)],
                protocol: UpstreamProtocol::Http2,
                upstream: UpstreamPolicy {
                    tls: Some(tls),
                    ..Default::default()
                },
            },
            true,
            None,
        ));
        assert_eq!(status_of(&cluster).await.map_err(|r| r.body), Ok(200));
        assert_eq!(alpn_rx.recv().await.unwrap().as_deref(), Some(&b"h2"[..]));
    }

    /// An HTTP/1.1 cluster that offers h2 and http/1.1 (alpnProtocols) to a server that picks
    /// h2: the connection fails before any HTTP/1.1 byte is written on it.
    #[tokio::test]
    async fn an_http1_cluster_sends_nothing_on_a_connection_that_negotiated_h2() {
        use crate::test_pki::Pki;
        use tokio::io::AsyncReadExt;
        let pki = Pki::new("h1-alpn-h2");
        pki.server("server", "DNS:backend.example.com");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.cert("server")], pki.key("server"))
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (read_tx, mut read_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut got = Vec::new();
                let _ = tls.read_to_end(&mut got).await;
                let _ = read_tx.send(got);
            }
        });
        let tls = snapshot::UpstreamTls {
            sni: Some("backend.example.com".into()),
            client_certificate: None,
            validation: snapshot::ServerValidation::TrustedCa {
                ca: snapshot::PemSource::Inline(pki.pem("ca.crt")),
                subject_alt_names: Vec::new(),
            },
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            parameters: snapshot::TlsParameters::default(),
        };
        let cluster = Arc::new(ClusterRuntime::new(
            &snapshot::Cluster {
                discovery: snapshot::Discovery::Eds,
                name: "h1-tls".into(),
                endpoints: vec![snapshot::Endpoint::new(address)],
                protocol: UpstreamProtocol::Http1,
                upstream: UpstreamPolicy {
                    tls: Some(tls),
                    ..Default::default()
                },
            },
            true,
            None,
        ));
        let failed = upstream::open_transport(&cluster, address, None).await;
        let Err(crate::transport::ConnectError::Failed(e)) = failed else {
            panic!("the connection must fail");
        };
        assert!(e.to_string().contains("ALPN h2"), "{e}");
        assert_eq!(counter(&cluster, "upstream_cx_connect_fail"), 1);
        assert_eq!(counter(&cluster, "upstream_cx_active"), 0);
        let written = tokio::time::timeout(Duration::from_secs(5), read_rx.recv())
            .await
            .expect("the server saw the connection close")
            .unwrap();
        assert!(
            written.is_empty(),
            "no HTTP/1.1 bytes: {:?}",
            String::from_utf8_lossy(&written)
        );
    }

    /// max_requests 1 with one stream a connection: a second request while the first runs is
    /// refused 503 UO before any connection is opened for it.
    #[tokio::test]
    async fn a_request_over_max_requests_opens_no_connection() {
        let (address, accepted) = h2_server(Duration::from_millis(300)).await;
        let cluster = Arc::new(ClusterRuntime::new(
            &snapshot::Cluster {
                discovery: snapshot::Discovery::Eds,
                name: "h2".into(),
                endpoints: vec![snapshot::Endpoint::new(address)],
                protocol: UpstreamProtocol::Http2,
                upstream: UpstreamPolicy {
                    http2: Some(Http2Options {
                        max_concurrent_streams: Some(1),
                        ..Default::default()
                    }),
                    circuit_breakers: Some(snapshot::CircuitBreakers {
                        max_requests: Some(1),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            },
            true,
            None,
        ));
        let first = {
            let cluster = cluster.clone();
            tokio::spawn(async move { status_of(&cluster).await.map_err(|r| r.status) })
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while counter(&cluster, "upstream_cx_http2_total") == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the first request's connection");
        assert_eq!(status_of(&cluster).await.map_err(|r| r.status), Err(503));
        assert_eq!(counter(&cluster, "upstream_rq_active_overflow"), 1);
        assert_eq!(first.await.unwrap(), Ok(200));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "no connection for the refused one"
        );
    }

    /// One connection of one stream (max_connections 1, maxConcurrentStreams 1): a second
    /// request waits as pending while the first holds the stream, and is refused 503 UO when
    /// no request may wait (max_pending_requests 0), as Envoy's HTTP/2 pool counts.
    #[tokio::test]
    async fn a_full_pool_makes_requests_wait_as_pending_within_the_circuit_breaker() {
        for (max_pending, second) in [(1, Ok(200)), (0, Err(503))] {
            let (address, accepted) = h2_server(Duration::from_millis(200)).await;
            let cluster = snapshot::Cluster {
                discovery: snapshot::Discovery::Eds,
                name: "h2".into(),
                endpoints: vec![snapshot::Endpoint::new(address)],
                protocol: UpstreamProtocol::Http2,
                upstream: UpstreamPolicy {
                    http2: Some(Http2Options {
                        max_concurrent_streams: Some(1),
                        ..Default::default()
                    }),
                    circuit_breakers: Some(snapshot::CircuitBreakers {
                        max_connections: Some(1),
                        max_pending_requests: Some(max_pending),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            };
            let cluster = Arc::new(ClusterRuntime::new(&cluster, true, None));
            let first = tokio::spawn({
                let cluster = cluster.clone();
                async move { status_of(&cluster).await.map_err(|r| r.status) }
            });
            // The first holds the only stream slot before the second asks.
            tokio::time::timeout(Duration::from_secs(2), async {
                while accepted.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap();
            let got = status_of(&cluster).await.map_err(|r| r.status);
            assert_eq!(got, second, "max_pending_requests {max_pending}");
            assert_eq!(first.await.unwrap(), Ok(200));
            assert_eq!(accepted.load(Ordering::SeqCst), 1, "never a second connection");
            let overflow = counter(&cluster, "upstream_rq_pending_overflow");
            assert_eq!(overflow, u64::from(max_pending == 0));
            assert_eq!(
                counter(&cluster, "upstream_rq_pending_total"),
                u64::from(max_pending == 1)
            );
        }
    }
}
