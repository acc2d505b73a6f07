//! The data plane. It knows the Snapshot, nothing else: a new Snapshot is swapped in atomically
//! and requests in flight finish on the one they started with. Follow one request:
//! `listener.rs` (bind, accept) -> `downstream.rs` (the client connection: read a head, route
//! it) -> `router.rs` (virtual host, route) -> `load_balancing.rs` (the cluster by weight, its
//! endpoint) -> `http1_exchange.rs` (the request upstream, the response back, under the
//! cluster's `http_protocol.rs` options) on a connection (`upstream.rs`) that
//! `circuit_breakers.rs` gives: from the endpoint's `pool.rs`, a new one, or one waited for;
//! `transport.rs` connects with `socket_options.rs`, writes the `proxy_protocol.rs` header and
//! runs the `upstream_tls.rs` handshake; `cluster.rs` holds each cluster's policy, endpoints and
//! counters (`dns.rs` resolves a DNS cluster's names into its endpoints). When no upstream answers,
//! `local_reply.rs` does (status, body, response flag). A cluster that speaks HTTP/2 takes
//! streams on multiplexed connections instead (`upstream_h2.rs`, with `h2_keepalive.rs`; an
//! HTTP/1.1 client's request is converted by `h1_to_h2.rs`). A WebSocket upgrade the upstream
//! accepts (101) turns both connections into one tunnel (`upgrade.rs`). An HTTP/2 client
//! connection (ALPN h2, or the preface on a plain port) is served by `h2_server.rs`, each stream
//! to an HTTP/1.1 upstream (`h2_to_h1.rs`) or an HTTP/2 one (`h2_to_h2.rs`, on `upstream_h2.rs`).

mod access_log;
mod circuit_breakers;
mod cluster;
mod cors;
mod dns;
mod downstream;
mod downstream_tls;
mod endpoint_health;
mod fd_limit;
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod grpc_health;
mod h1;
mod h1_to_h2;
#[allow(dead_code)] // Used by the HTTP/2 paths as they land.
mod h2_body;
mod h2_keepalive;
mod h2_server;
mod h2_to_h1;
mod h2_to_h2;
mod health_check;
mod http1_exchange;
mod http_protocol;
mod listener;
mod load_balancing;
mod local_reply;
mod mirror;
mod outlier_detection;
mod pool;
mod proxy_protocol;
mod query_match;
mod recycle;
mod route_filters;
mod route_timeout;
mod router;
mod socket_options;
mod stats;
#[cfg(test)]
mod test_pki;
mod transport;
mod upgrade;
mod upstream;
mod upstream_h2;
pub mod upstream_tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use snapshot::Snapshot;

pub use access_log::AccessLog;
pub use cluster::{ClusterRuntime, ConnectionInfo, EndpointInfo};
pub use endpoint_health::EndpointHealth;
pub use fd_limit::{FdLimit, raise_fd_limit};
pub use stats::{ClusterManagerStats, ClusterStats, ListenerStats, Metric, MetricKind, Scope};

/// Settings of the data plane that do not come from the Snapshot.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// How long a request may wait for the upstream's response headers, counted from the end of
    /// the request (Envoy's route timeout and default).
    pub route_timeout: Duration,
    /// How long a client has to send a whole request head, from its first byte (nginx's
    /// client_header_timeout and default; Envoy's request_headers_timeout, off by default).
    pub request_headers_timeout: Duration,
    /// How long a request may move no byte: its body from the client while it is uploaded, its
    /// response either way once its head is in (Envoy's stream_idle_timeout and default).
    pub stream_idle_timeout: Duration,
    /// How long a client connection may wait without a request, from the end of its last one
    /// (Envoy's common_http_protocol_options.idle_timeout and default, 1 hour).
    pub idle_timeout: Duration,
    /// How long an upstream connection may sit idle in its pool (Envoy's default: 1 hour).
    pub upstream_idle_timeout: Duration,
    /// Set TCP_USER_TIMEOUT with TCP keepalive (our addition).
    pub tcp_user_timeout: bool,
    /// Send a request again, once, when a reused pooled connection fails before the response
    /// began and that is safe (the request was never written, or it is idempotent with no body).
    pub retry_on_reused_connection: bool,
    /// Client connections beyond this many are accepted and closed at once (Envoy's
    /// global_downstream_max_connections), counted in `downstream_global_cx_overflow`.
    pub max_downstream_connections: u64,
    /// Descriptors client and upstream connections may hold together (the fd limit less a
    /// reserve for kgw's own files); near it, new client connections are refused the same way.
    pub connection_descriptor_budget: u64,
    /// The proxy's own zone (`kgw run --zone`), for zone-aware load balancing.
    pub zone: Option<String>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            route_timeout: Duration::from_secs(15),
            request_headers_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(3600),
            upstream_idle_timeout: Duration::from_secs(3600),
            tcp_user_timeout: true,
            retry_on_reused_connection: true,
            max_downstream_connections: u64::MAX,
            connection_descriptor_budget: u64::MAX,
            zone: None,
        }
    }
}

/// What the data plane runs: the Snapshot and, index for index, each cluster's live state.
pub struct Runtime {
    pub snapshot: Arc<Snapshot>,
    pub clusters: Vec<Arc<ClusterRuntime>>,
}

pub struct DataPlane {
    runtime: ArcSwap<Runtime>,
    options: ProxyOptions,
    access_log: AccessLog,
    listeners: Mutex<BTreeMap<SocketAddr, listener::Bound>>,
    pub(crate) downstream: ListenerStats,
    pub(crate) cluster_manager: ClusterManagerStats,
    /// Set once the data plane drains (see `drain`): read where a connection decides to stay
    /// open, and `drain_started` wakes the idle ones.
    draining: std::sync::atomic::AtomicBool,
    drain_started: tokio::sync::watch::Sender<()>,
}

impl DataPlane {
    pub fn new(options: ProxyOptions, access_log: AccessLog) -> Arc<DataPlane> {
        Arc::new(DataPlane {
            runtime: ArcSwap::from_pointee(Runtime {
                snapshot: Arc::new(Snapshot::empty()),
                clusters: Vec::new(),
            }),
            options,
            access_log,
            listeners: Mutex::new(BTreeMap::new()),
            downstream: ListenerStats::default(),
            cluster_manager: ClusterManagerStats::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            drain_started: tokio::sync::watch::Sender::new(()),
        })
    }

    /// Starts a graceful drain (on SIGTERM): listeners close, so new connections are refused;
    /// idle keep-alive connections close; a request in flight finishes and its response says
    /// `connection: close`. Returns when no downstream connection is left, or after `period`
    /// (Envoy's --drain-time-s), whichever is first; true if none was left.
    pub async fn drain(self: &Arc<Self>, period: Duration) -> bool {
        self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
        self.drain_started.send_replace(());
        // Dropping a listener stops its accept loop and closes its socket.
        std::mem::take(&mut *self.listeners.lock().unwrap_or_else(|e| e.into_inner()));
        let active = || {
            self.downstream
                .downstream_cx_active
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let deadline = tokio::time::Instant::now() + period;
        // A poll, not an event: it runs once per process, for at most `period`.
        while active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = active();
        if left > 0 {
            tracing::warn!(
                connections = left,
                "drain period over; closing the connections left"
            );
        }
        left == 0
    }

    /// True once `drain` began: `/ready` fails, so load balancers stop sending traffic.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The Snapshot being served, for the admin API.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Serves a new Snapshot: cluster state (pools, counters) carries over by cluster name, new
    /// keepalive settings reach every live socket of the cluster, and listeners are bound or
    /// closed to match. Returns the listener addresses that could not be bound, with why.
    pub fn update(self: &Arc<Self>, snapshot: Arc<Snapshot>) -> Vec<(SocketAddr, String)> {
        let old = self.runtime.load_full();
        // By name: thousands of clusters make a linear search per cluster quadratic.
        let by_name: std::collections::HashMap<&str, &Arc<ClusterRuntime>> =
            old.clusters.iter().map(|c| (c.name(), c)).collect();
        let clusters: Vec<Arc<ClusterRuntime>> = snapshot
            .clusters
            .iter()
            .map(|c| match by_name.get(c.name.as_str()) {
                Some(existing) => {
                    existing.update(c);
                    Arc::clone(existing)
                }
                None => Arc::new(ClusterRuntime::new(
                    c,
                    self.options.tcp_user_timeout,
                    self.options.zone.clone(),
                )),
            })
            .collect();
        // Health checks and outlier detection follow each cluster's policy and endpoints.
        for (c, runtime) in snapshot.clusters.iter().zip(&clusters) {
            // A DNS cluster's resolver (started, kept, restarted or stopped) fills its endpoints.
            dns::ClusterDns::configure(runtime, &c.discovery, c.upstream.dns.as_ref());
            health_check::ClusterHealthChecking::configure(runtime, c.upstream.health_check.as_ref());
            outlier_detection::ClusterOutlierDetection::configure(
                runtime,
                c.upstream.outlier_detection.as_ref(),
            );
        }
        let kept: std::collections::HashSet<&str> =
            snapshot.clusters.iter().map(|c| c.name.as_str()).collect();
        for gone in old.clusters.iter().filter(|c| !kept.contains(c.name())) {
            // Its pooled connections close now; those in use close when their request ends.
            gone.retire();
        }
        self.runtime.store(Arc::new(Runtime {
            snapshot: snapshot.clone(),
            clusters,
        }));
        self.cluster_manager
            .cds_update_success
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        listener::reconcile(self, &snapshot)
    }

    /// Until the data plane is dropped: every 100 ms, pooled connections that ended leave their
    /// pool (a sweep of socket readiness, no system call for the live ones), and those past
    /// their idle timeout are closed.
    pub fn spawn_maintenance(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(dp) = weak.upgrade() else { return };
                for cluster in &dp.runtime().clusters {
                    cluster.sweep_idle();
                    cluster.expire_idle(dp.options.upstream_idle_timeout);
                }
            }
        });
    }

    pub fn listener_stats(&self) -> &ListenerStats {
        &self.downstream
    }
}
