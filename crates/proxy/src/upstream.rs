//! Upstream connections and their counters: opened by the connector (`transport.rs`) with the
//! cluster's connect timeout, socket options and TLS (`upstream_tls.rs`). A connection is a transport and its read
//! buffer, driven by the request that uses it (no task of its own); idle in its pool
//! (`pool.rs`), a sweep of socket readiness finds the ones that ended. Each ending is counted
//! by reason, once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::cluster::{ClusterRuntime, Endpoint};
use crate::http_protocol::HttpOptions;
use crate::pool::Pooled;
use crate::proxy_protocol::ProxyAddresses;
use crate::stats;
use crate::transport::{ConnectError, Connector, Transport};
use crate::upstream_tls::HandshakeFailure;

/// How a connection ended, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// We closed it (the default: dropped without another reason).
    Local,
    /// The peer closed or reset it.
    Remote,
    /// The kernel gave up on the peer (keepalive probes, or TCP_USER_TIMEOUT): ETIMEDOUT.
    TimedOut,
    /// It sat idle past the cluster's `idleTimeout` (else `--upstream-idle-timeout`).
    IdleTimeout,
    /// It served the cluster's `maxRequestsPerConnection`.
    MaxRequests,
}

/// A pooled HTTP/1.1 connection to one endpoint of one cluster.
pub(crate) struct Connection {
    pub id: u64,
    pub transport: Transport,
    /// Bytes read from the upstream and not used yet.
    pub buf: Vec<u8>,
    pub idle_since: Instant,
    /// It served a request before: a failure on it may be the close race.
    pub reused: bool,
    /// A request is using it (for the destroy counters).
    pub busy: bool,
    pub end: End,
    /// Requests it was given.
    pub requests: u32,
    /// The client whose PROXY protocol header it carried: it serves no other.
    pub proxied: Option<ProxyAddresses>,
    /// Its circuit breaker slot (the request path's connections; a health check's holds none),
    /// released when it drops (held for that alone).
    _slot: Option<ConnectionSlot>,
    cluster: Arc<ClusterRuntime>,
}

impl Connection {
    /// Counts a request given to it; at the cluster's maxRequestsPerConnection it is its last: it
    /// closes once the request is done (Envoy counts it then). For HTTP/1.1 and HTTP/2 clients
    /// alike; counted on the request's `cluster` (the runtime that routed it).
    pub(crate) fn given_request(&mut self, options: &HttpOptions, cluster: &ClusterRuntime) {
        self.requests += 1;
        if options
            .max_requests_per_connection
            .is_some_and(|max| self.requests >= max.get())
        {
            stats::inc(&cluster.stats().upstream_cx_max_requests);
            self.end = End::MaxRequests;
        }
    }
}

impl Pooled for Connection {
    fn ended_while_idle(&mut self) -> bool {
        match self.transport.ended_while_idle() {
            None => false,
            Some(end) => {
                // Counted as it drops.
                self.end = end;
                true
            }
        }
    }

    fn idle_since(&self) -> Instant {
        self.idle_since
    }
}

/// The end an I/O error means.
pub(crate) fn end_of(error: &std::io::Error) -> End {
    if error.kind() == std::io::ErrorKind::TimedOut {
        End::TimedOut
    } else {
        End::Remote
    }
}

/// Descriptors held by upstream connections in this process, for the accept path's descriptor
/// budget (the open files limit is per process, so one gauge for every cluster and data plane).
static UPSTREAM_DESCRIPTORS: AtomicU64 = AtomicU64::new(0);

/// Each upstream connection holds two: its stream, and the handle its cluster keeps to retune
/// keepalive on it.
const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// Descriptors upstream connections hold now.
pub(crate) fn descriptors_open() -> u64 {
    UPSTREAM_DESCRIPTORS.load(Ordering::Relaxed)
}

impl Drop for Connection {
    fn drop(&mut self) {
        count_closed(&self.cluster, self.id, self.end, self.busy);
    }
}

/// Counts a request-path connection that closed (`busy`: requests were on it), by how it
/// ended, and forgets its socket: one home for HTTP/1.1 connections and HTTP/2 ones
/// (`upstream_h2.rs`).
pub(crate) fn count_closed(cluster: &ClusterRuntime, id: u64, end: End, busy: bool) {
    UPSTREAM_DESCRIPTORS.fetch_sub(DESCRIPTORS_PER_CONNECTION, Ordering::Relaxed);
    let s = cluster.stats();
    stats::dec(&s.upstream_cx_active);
    stats::inc(&s.upstream_cx_destroy);
    if busy {
        stats::inc(&s.upstream_cx_destroy_with_active_rq);
    }
    match (end, busy) {
        // The keepalive probes went unanswered on an idle pooled connection.
        (End::TimedOut, false) => stats::inc(&s.upstream_cx_destroy_keepalive_timeout),
        (End::IdleTimeout, _) => {
            stats::inc(&s.upstream_cx_idle_timeout);
            stats::inc(&s.upstream_cx_destroy_local);
        }
        // (A connection that reached maxRequestsPerConnection was counted in
        // upstream_cx_max_requests when its last request was given to it.)
        (End::Local | End::MaxRequests, busy) => {
            stats::inc(&s.upstream_cx_destroy_local);
            if busy {
                stats::inc(&s.upstream_cx_destroy_local_with_active_rq);
            }
        }
        (End::Remote | End::TimedOut, busy) => {
            stats::inc(&s.upstream_cx_destroy_remote);
            if busy {
                stats::inc(&s.upstream_cx_destroy_remote_with_active_rq);
            }
        }
    }
    tracing::debug!(cluster = cluster.name(), id, ?end, "upstream connection closed");
    cluster.forget(id);
}

/// Opens a new connection for a request to `endpoint`, in the circuit breaker slot the caller
/// reserved (released when the connection closes, or here if it fails to open); with PROXY
/// protocol, its header carries `proxied`, the client's addresses.
pub(crate) async fn connect_for_request(
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Endpoint,
    proxied: Option<ProxyAddresses>,
) -> Result<Connection, ConnectError> {
    // Held before the first await: a connect that fails, or that is abandoned when its request
    // is cancelled (a timeout around it), gives the slot back as the guard drops.
    let slot = ConnectionSlot::new(cluster, endpoint);
    connect_with(cluster, endpoint.address, proxied, Some(slot)).await
}

/// A circuit breaker connection slot and its endpoint's count of open connections: released
/// when dropped, on every path (a failed connect, an abandoned one, a connection that closes).
pub(crate) struct ConnectionSlot {
    endpoint_open: Arc<AtomicU64>,
    cluster: Arc<ClusterRuntime>,
}

impl ConnectionSlot {
    /// Takes the slot the caller reserved in the circuit breaker, counting it as open to
    /// `endpoint`.
    pub(crate) fn new(cluster: &Arc<ClusterRuntime>, endpoint: &Endpoint) -> ConnectionSlot {
        endpoint.open_connections.fetch_add(1, Ordering::SeqCst);
        ConnectionSlot {
            endpoint_open: endpoint.open_connections.clone(),
            cluster: cluster.clone(),
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.endpoint_open.fetch_sub(1, Ordering::SeqCst);
        self.cluster.breaker().release_connection();
    }
}

async fn connect_with(
    cluster: &Arc<ClusterRuntime>,
    address: SocketAddr,
    proxied: Option<ProxyAddresses>,
    slot: Option<ConnectionSlot>,
) -> Result<Connection, ConnectError> {
    let (id, transport) = open_transport(cluster, address, proxied).await?;
    let policy = cluster.policy_ref();
    Ok(Connection {
        id,
        transport,
        buf: Vec::new(),
        idle_since: Instant::now(),
        reused: false,
        busy: true,
        end: End::Local,
        requests: 0,
        // Only a connection that carried a client's header is that client's.
        proxied: proxied.filter(|_| policy.proxy_protocol.is_some()),
        _slot: slot,
        cluster: cluster.clone(),
    })
}

/// Opens a transport to `address` with the cluster's socket options, PROXY protocol header and
/// TLS, within its connect timeout; once open it is registered (its id, for `count_closed`)
/// and counted active. What an HTTP/1.1 `Connection` and an HTTP/2 connection are built on.
pub(crate) async fn open_transport(
    cluster: &Arc<ClusterRuntime>,
    address: SocketAddr,
    proxied: Option<ProxyAddresses>,
) -> Result<(u64, Transport), ConnectError> {
    // Before the settings are read: a change after this closes this connection too.
    let id = cluster.reserve_id();
    let policy = cluster.policy();
    let options = cluster.socket_options(&policy);
    let (connector, kept) = Connector::new(address, &options).map_err(ConnectError::Failed)?;
    stats::inc(&cluster.stats().upstream_cx_total);
    let proxy = policy.proxy_protocol.map(|version| (version, proxied));
    let tls = cluster.tls.client();
    let transport = match connector.connect(policy.connect_timeout(), proxy, tls).await {
        Ok(t) => t,
        Err(e) => {
            stats::inc(&cluster.stats().upstream_cx_connect_fail);
            match &e {
                ConnectError::Timeout => stats::inc(&cluster.stats().upstream_cx_connect_timeout),
                ConnectError::Failed(io) => {
                    // The one line that says why TLS to this endpoint fails (the client gets
                    // 503 UF; the counters are in cluster.<name>.ssl.*).
                    if let Some(failure) = HandshakeFailure::of(io) {
                        tracing::warn!(
                            cluster = cluster.name(),
                            endpoint = %address,
                            "upstream TLS handshake failed: {}",
                            failure.reason
                        );
                    }
                }
            }
            return Err(e);
        }
    };
    let mut transport = transport;
    if !cluster.speaks_http2() && transport.negotiated_h2() {
        // The server took the offer of h2 (alpnProtocols lists it) on a cluster that speaks
        // HTTP/1.1: HTTP/1.1 bytes on it would be a protocol error there, so none are sent.
        stats::inc(&cluster.stats().upstream_cx_connect_fail);
        tracing::warn!(
            cluster = cluster.name(),
            endpoint = %address,
            "upstream TLS negotiated ALPN h2 on a cluster that speaks HTTP/1.1: connection closed; \
             list only http/1.1 in the BackendConfigPolicy's tls.alpnProtocols, or give the Service \
             port appProtocol kubernetes.io/h2c (or http2) so that the cluster speaks HTTP/2"
        );
        return Err(ConnectError::Failed(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "ALPN h2 negotiated for an HTTP/1.1 cluster",
        )));
    }
    let id = cluster.register(id, address, kept, options);
    stats::inc(&cluster.stats().upstream_cx_active);
    UPSTREAM_DESCRIPTORS.fetch_add(DESCRIPTORS_PER_CONNECTION, Ordering::Relaxed);
    Ok((id, transport))
}
