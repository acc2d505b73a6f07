//! The data plane. It knows the Snapshot, nothing else: a new Snapshot is swapped in atomically
//! and requests in flight finish on the one they started with. Follow one request:
//! `listener.rs` (accept, HTTP/1.1) -> `router.rs` (virtual host, route) -> `cluster.rs`
//! (endpoint pick, pool) -> `upstream.rs` (connect, socket options, the upstream exchange).

mod access_log;
mod cluster;
mod fd_limit;
mod h1;
mod listener;
mod recycle;
mod router;
mod stats;
mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use snapshot::Snapshot;

pub use access_log::AccessLog;
pub use cluster::{ClusterRuntime, ConnectionInfo, EndpointInfo};
pub use fd_limit::{FdLimit, raise_fd_limit};
pub use stats::{ClusterManagerStats, ClusterStats, ListenerStats, Metric, MetricKind, Scope};

/// Settings of the data plane that do not come from the Snapshot.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// How long a request may wait for the upstream's response headers (Envoy's route default).
    pub route_timeout: Duration,
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
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            route_timeout: Duration::from_secs(15),
            upstream_idle_timeout: Duration::from_secs(3600),
            tcp_user_timeout: true,
            retry_on_reused_connection: true,
            max_downstream_connections: u64::MAX,
            connection_descriptor_budget: u64::MAX,
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
        })
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
        let clusters = snapshot
            .clusters
            .iter()
            .map(|c| match by_name.get(c.name.as_str()) {
                Some(existing) => {
                    existing.update(c);
                    Arc::clone(existing)
                }
                None => Arc::new(ClusterRuntime::new(c, self.options.tcp_user_timeout)),
            })
            .collect();
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
