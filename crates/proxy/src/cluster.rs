//! A cluster's live state: its upstream policy, endpoints with their idle connection pools, every
//! open connection's socket (so new socket options reach them), and its counters.
//! Pools are per cluster and per endpoint, so two clusters never share a socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use snapshot::{Cluster, Discovery, UpstreamPolicy, UpstreamProtocol, UpstreamTls};

use crate::circuit_breakers::CircuitBreaker;
use crate::dns::ClusterDns;
use crate::endpoint_health::EndpointHealth;
use crate::health_check::ClusterHealthChecking;
use crate::http_protocol::HttpOptions;
use crate::load_balancing::{Balancer, Host, Member, PickContext};
use crate::outlier_detection::ClusterOutlierDetection;
use crate::pool::Pool;
use crate::proxy_protocol::ProxyAddresses;
use crate::socket_options::SocketOptions;
use crate::stats::{self, ClusterStats, Http2Stats};
use crate::upstream::{Connection, End};
use crate::upstream_h2;
use crate::upstream_tls::ClusterTls;

pub struct ClusterRuntime {
    name: String,
    /// The cluster's upstream settings from the Snapshot, as they are.
    policy: ArcSwap<UpstreamPolicy>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Rebuilt when the endpoints or the load balancing policy change, never per request.
    balancer: ArcSwap<Balancer<Endpoint>>,
    /// The proxy's own zone (`kgw run --zone`), for zone-aware balancing.
    local_zone: Option<String>,
    /// With `closeConnectionsOnHostSetChange`: connections with an id up to this one were
    /// open when the host set last changed, and are not pooled again.
    unpooled_up_to: AtomicU64,
    stats: ClusterStats,
    breaker: Arc<CircuitBreaker>,
    /// Every open connection's socket, by connection id.
    live: Mutex<HashMap<u64, Live>>,
    ids: AtomicU64,
    /// Set TCP_USER_TIMEOUT along with keepalive (our addition; `kgw run --no-tcp-user-timeout`).
    tcp_user_timeout: bool,
    /// Active health checks of its endpoints (health_check.rs).
    pub(crate) health_checks: ClusterHealthChecking,
    /// Outlier detection of its endpoints (outlier_detection.rs).
    pub(crate) outlier: ClusterOutlierDetection,
    /// The resolver of a DNS cluster's host names (dns.rs); idle for other clusters.
    pub(crate) dns: ClusterDns,
    /// TLS to its endpoints and its `ssl.*` counters (upstream_tls.rs).
    pub(crate) tls: ClusterTls,
    /// Its requests go upstream in HTTP/2 (`Cluster::protocol`; upstream_h2.rs).
    http2: AtomicBool,
    http2_stats: Http2Stats,
}

struct Live {
    endpoint: SocketAddr,
    socket: socket2::Socket,
    /// The options last set on it.
    applied: SocketOptions,
}

/// One upstream address and its idle connections (most recently used last).
pub struct Endpoint {
    pub address: SocketAddr,
    /// The zone its EndpointSlice gives, for zone-aware balancing.
    pub zone: Option<String>,
    /// The Backend host it comes from (a DNS name, or an IP as written): Envoy's endpoint
    /// hostname, the Host of its health checks and its key with `useHostnameForHashing`.
    pub hostname: Option<String>,
    pub(crate) health: EndpointHealth,
    idle: Pool<Connection>,
    /// Its HTTP/2 connections, when the cluster speaks HTTP/2.
    pub(crate) h2: upstream_h2::EndpointPool,
    pub(crate) active_requests: AtomicU64,
    /// Connections open or opening to it from the request path (the circuit breaker lets an
    /// endpoint with none open one even at the limit).
    pub(crate) open_connections: Arc<AtomicU64>,
    /// When it joined a cluster that already existed (slow start); None for the first ones.
    added: Option<Instant>,
    /// It left the cluster (requests in flight may still hold it).
    removed: AtomicBool,
}

impl Endpoint {
    /// Has it left its cluster's endpoint set?
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }
}

impl Host for Endpoint {
    fn address(&self) -> SocketAddr {
        self.address
    }
    fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }
    fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }
    fn is_healthy(&self) -> bool {
        self.health.is_healthy()
    }
    fn active_requests(&self) -> u64 {
        self.active_requests.load(Ordering::Relaxed)
    }
}

/// An open upstream connection, for `/clusters` and tests.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub id: u64,
    pub endpoint: SocketAddr,
    pub local: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct EndpointInfo {
    pub address: SocketAddr,
    /// Envoy's host `hostname` (empty in Envoy's output when None).
    pub hostname: Option<String>,
    pub idle: usize,
    pub active_requests: u64,
    /// Envoy's `health_flags`: `healthy`, `/failed_active_hc`, `/failed_outlier_check`.
    pub health_flags: String,
}

impl ClusterRuntime {
    pub fn new(cluster: &Cluster, tcp_user_timeout: bool, local_zone: Option<String>) -> ClusterRuntime {
        let rt = ClusterRuntime {
            name: cluster.name.clone(),
            policy: ArcSwap::from_pointee(cluster.upstream.clone()),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            balancer: ArcSwap::from_pointee(Balancer::new(None, Vec::new(), None)),
            local_zone,
            unpooled_up_to: AtomicU64::new(0),
            stats: ClusterStats::default(),
            breaker: Arc::new(CircuitBreaker::new(&cluster.upstream)),
            live: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(0),
            tcp_user_timeout,
            health_checks: ClusterHealthChecking::default(),
            outlier: ClusterOutlierDetection::default(),
            dns: ClusterDns::default(),
            tls: ClusterTls::default(),
            http2: AtomicBool::new(cluster.protocol == UpstreamProtocol::Http2),
            http2_stats: Http2Stats::default(),
        };
        rt.tls.configure(&cluster.name, tls_of(cluster).as_ref());
        rt.set_endpoints(snapshot_endpoints(cluster), None);
        rt
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// What its upstream sockets are set to under `policy`.
    pub(crate) fn socket_options(&self, policy: &UpstreamPolicy) -> SocketOptions {
        SocketOptions::of(policy, self.tcp_user_timeout)
    }

    pub(crate) fn policy(&self) -> Arc<UpstreamPolicy> {
        self.policy.load_full()
    }

    /// Its policy, for a look within a request (no reference count taken).
    pub(crate) fn policy_ref(&self) -> arc_swap::Guard<Arc<UpstreamPolicy>> {
        self.policy.load()
    }

    /// Do its requests go upstream in HTTP/2 (upstream_h2.rs)? Follows each Snapshot.
    pub(crate) fn speaks_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// Its `http2.*` counters.
    pub(crate) fn http2_stats(&self) -> &Http2Stats {
        &self.http2_stats
    }

    pub(crate) fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// Its HTTP protocol options, as a request reads them (no reference count taken).
    pub(crate) fn http_options(&self) -> HttpOptions {
        HttpOptions::of(&self.policy.load())
    }

    /// Takes a new version of the cluster from a Snapshot.
    pub(crate) fn update(&self, cluster: &Cluster) {
        // New TLS settings (or a changed file): pooled connections made with the old ones close,
        // and those in use are not pooled again, as Envoy drains a cluster that changed.
        let was_http2 = self
            .http2
            .swap(cluster.protocol == UpstreamProtocol::Http2, Ordering::Relaxed);
        // Another protocol, or other HTTP/2 settings (windows, streams, keepalive): the
        // connections made for the old ones close, as Envoy drains a cluster that changed (the
        // keepalive guide's cleanup leaves no HTTP/2 connection behind).
        let protocol_changed = was_http2 != (cluster.protocol == UpstreamProtocol::Http2)
            || self.policy.load().http2 != cluster.upstream.http2;
        if self.tls.configure(&self.name, tls_of(cluster).as_ref()) || protocol_changed {
            self.close_connections();
        }
        if !matches!(cluster.discovery, Discovery::Dns { .. }) {
            // No longer a DNS cluster: its resolver stops before the Snapshot's endpoints are
            // set, so that a late answer cannot replace them.
            self.dns.stop();
        }
        let balancing_changed = self.policy.load().load_balancer != cluster.upstream.load_balancer;
        if **self.policy.load() != cluster.upstream {
            self.policy.store(Arc::new(cluster.upstream.clone()));
            self.breaker.set_limits(&cluster.upstream);
            // Idle pooled connections and those in use get the new options now.
            let wanted = self.socket_options(&cluster.upstream);
            let mut live = self.lock_live();
            for (id, conn) in live.iter_mut() {
                if conn.applied != wanted {
                    if let Err(e) = wanted.retune(&conn.socket, &conn.applied) {
                        tracing::warn!(cluster = %self.name, id, "cannot update socket options on a live socket: {e}");
                    }
                    conn.applied = wanted;
                }
            }
        }
        // A DNS cluster's endpoints are its resolver's (dns.rs), not the Snapshot's.
        let wanted = snapshot_endpoints(cluster);
        let changed = !matches!(cluster.discovery, Discovery::Dns { .. }) && {
            let current = self.endpoints.load();
            current.len() != wanted.len() || current.iter().zip(&wanted).any(|(have, want)| !want.is(have))
        };
        if changed {
            self.set_endpoints(wanted, Some(Instant::now()));
            self.close_connections_if_asked(&cluster.upstream);
        } else if balancing_changed {
            self.rebuild_balancer();
        }
    }

    /// Envoy's `close_connections_on_host_set_change`, when the policy sets it.
    fn close_connections_if_asked(&self, policy: &UpstreamPolicy) {
        if policy
            .load_balancer
            .as_ref()
            .is_some_and(|lb| lb.close_connections_on_host_set_change)
        {
            self.close_connections();
        }
    }

    /// A new endpoint set found at runtime (a DNS cluster's resolver): as a new Snapshot's
    /// endpoints are taken (`update`), endpoints that stay keep their pooled connections, health
    /// and outlier state; the balancer is rebuilt; health checks start on the new endpoints and
    /// stop on those gone, outlier detection forgets them. Unchanged: nothing happens.
    pub(crate) fn replace_endpoints(self: &Arc<Self>, wanted: Vec<NewEndpoint>) -> bool {
        let unchanged = {
            let current = self.endpoints.load();
            current.len() == wanted.len() && current.iter().zip(&wanted).all(|(have, want)| want.is(have))
        };
        if unchanged {
            return false;
        }
        self.set_endpoints(wanted, Some(Instant::now()));
        let policy = self.policy();
        self.close_connections_if_asked(&policy);
        ClusterHealthChecking::configure(self, policy.health_check.as_ref());
        ClusterOutlierDetection::configure(self, policy.outlier_detection.as_ref());
        true
    }

    /// Envoy's `close_connections_on_host_set_change`: every pooled connection of the cluster
    /// closes, and those in use are not pooled again.
    fn close_connections(&self) {
        self.unpooled_up_to
            .store(self.ids.load(Ordering::SeqCst), Ordering::SeqCst);
        for endpoint in self.endpoints.load().iter() {
            for conn in endpoint.idle.expire(Duration::ZERO) {
                stats::dec(&self.stats.upstream_cx_pool_idle);
                drop(conn); // counted as it drops
            }
            endpoint.h2.close_all();
        }
    }

    /// A new balancer over the current endpoints and policy (rings and tables built here).
    fn rebuild_balancer(&self) {
        let members = self
            .endpoints
            .load()
            .iter()
            .map(|e| Member {
                host: e.clone(),
                added: e.added,
            })
            .collect();
        let policy = self.policy.load();
        self.balancer.store(Arc::new(Balancer::new(
            policy.load_balancer.as_ref(),
            members,
            self.local_zone.as_deref(),
        )));
    }

    /// The cluster left the Snapshot: its idle connections close, and none is pooled again.
    /// (Pooled connections hold their cluster: without this they would keep each other.)
    pub(crate) fn retire(&self) {
        self.dns.stop();
        self.health_checks.stop();
        self.outlier.stop();
        self.set_endpoints(Vec::new(), None);
    }

    /// The endpoints now.
    pub(crate) fn endpoint_list(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    pub(crate) fn endpoint_count(&self) -> usize {
        self.endpoints.load().len()
    }

    /// Has the cluster ever opened a connection for traffic (Envoy's test for the health
    /// checks' no-traffic interval)?
    pub(crate) fn has_had_traffic(&self) -> bool {
        self.stats.upstream_cx_total.load(Ordering::Relaxed) > 0
    }

    /// `now`: when endpoints new to the set joined it (None when the cluster is created).
    fn set_endpoints(&self, wanted: Vec<NewEndpoint>, now: Option<Instant>) {
        let old = self.endpoints.load_full();
        let health_checked = self.policy.load().health_check.is_some();
        let new: Vec<Arc<Endpoint>> = wanted
            .into_iter()
            .map(|w| match old.iter().find(|e| w.is(e)) {
                Some(e) => e.clone(),
                None => Arc::new(Endpoint {
                    address: w.address,
                    zone: w.zone,
                    hostname: w.hostname,
                    // Envoy: a new host of a health-checked cluster starts
                    // /failed_active_hc, so it takes no traffic until its first check
                    // (run at once) passes.
                    health: EndpointHealth::new(health_checked),
                    idle: Pool::new(),
                    h2: upstream_h2::EndpointPool::default(),
                    active_requests: AtomicU64::new(0),
                    open_connections: Arc::new(AtomicU64::new(0)),
                    added: now,
                    removed: AtomicBool::new(false),
                }),
            })
            .collect();
        // Endpoints that left: their idle connections close now, and leave the gauge.
        for gone in old.iter().filter(|e| !new.iter().any(|n| Arc::ptr_eq(n, e))) {
            gone.removed.store(true, Ordering::Relaxed);
            let idle = gone.idle.close();
            for _ in &idle {
                stats::dec(&self.stats.upstream_cx_pool_idle);
            }
            gone.h2.close_for_good();
        }
        self.endpoints.store(Arc::new(new));
        self.rebuild_balancer();
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An endpoint's health mark changed: the balancer's tables over the healthy hosts are
    /// rebuilt, off the request path.
    pub(crate) fn health_changed(&self) {
        self.balancer.load().health_changed();
    }

    /// The endpoint for a request, by the cluster's load balancing; None when none can take
    /// it. A hash policy may leave a `Set-Cookie` for the response in `context`.
    pub(crate) fn pick(&self, context: &mut PickContext<'_>) -> Option<Arc<Endpoint>> {
        self.balancer.load().pick(context, &self.stats)
    }

    /// An idle pooled connection to this endpoint that is still open, if any (see
    /// `Pool::take`), and with PROXY protocol one that carried the header of the same client
    /// (`proxied`); those found ended are counted as they drop.
    pub(crate) fn take_idle(
        &self,
        endpoint: &Endpoint,
        proxied: Option<ProxyAddresses>,
    ) -> Option<Connection> {
        let taken = endpoint.idle.take_matching(|c| c.proxied == proxied);
        for _ in 0..taken.left {
            stats::dec(&self.stats.upstream_cx_pool_idle);
        }
        let mut conn = taken.connection?;
        conn.reused = true;
        conn.busy = true;
        Some(conn)
    }

    /// At the connection limit with PROXY protocol: an idle connection that carried another
    /// client's header can serve no one else, yet holds a slot. Closes one, so the slot goes to
    /// this client instead of the request waiting for a connection it can never use. True when
    /// one was closed.
    pub(crate) fn close_idle_of_another_client(
        &self,
        endpoint: &Endpoint,
        proxied: Option<ProxyAddresses>,
    ) -> bool {
        let taken = endpoint.idle.take_matching(|c| c.proxied != proxied);
        for _ in 0..taken.left {
            stats::dec(&self.stats.upstream_cx_pool_idle);
        }
        // Counted (destroy_local) as it drops, which frees its slot.
        taken.connection.is_some()
    }

    /// A connection whose exchange completed goes back to its endpoint's pool (or closes, when
    /// the endpoint is gone).
    pub(crate) fn put_idle(&self, endpoint: &Endpoint, mut conn: Connection) {
        conn.busy = false;
        conn.idle_since = Instant::now();
        // Open when the host set changed: not pooled, closed as it drops. Decided under the
        // pool's lock, which `close_connections` takes after raising the bound: a connection
        // finishing as the host set changes is refused here or taken out there.
        let opened_before_the_change = |c: &Connection| c.id <= self.unpooled_up_to.load(Ordering::Relaxed);
        if endpoint.idle.put_unless(conn, opened_before_the_change).is_ok() {
            stats::inc(&self.stats.upstream_cx_pool_idle);
            self.breaker.wake_pending();
        }
    }

    /// Pooled connections that ended (peer closed, keepalive gave up) leave the pool and are
    /// counted. Run often: it is what makes a dead idle connection leave at once.
    pub(crate) fn sweep_idle(&self) {
        for endpoint in self.endpoints.load().iter() {
            for _ in 0..endpoint.idle.sweep() {
                stats::dec(&self.stats.upstream_cx_pool_idle);
            }
        }
    }

    /// Closes pooled connections idle for longer than the cluster's `idleTimeout`, else
    /// `default_max_idle` (`--upstream-idle-timeout`).
    pub(crate) fn expire_idle(&self, default_max_idle: Duration) {
        let Some(max_idle) = self.http_options().pooled_idle_timeout(default_max_idle) else {
            return;
        };
        for endpoint in self.endpoints.load().iter() {
            for mut conn in endpoint.idle.expire(max_idle) {
                stats::dec(&self.stats.upstream_cx_pool_idle);
                conn.end = End::IdleTimeout;
                drop(conn); // counted as it drops
            }
            endpoint.h2.expire(max_idle);
        }
    }

    /// An id for a connection about to be opened. Taken before the connect (and its TLS
    /// handshake) so that a change that closes the cluster's connections meanwhile (new TLS
    /// settings, say) also covers this one: it serves its request and is never pooled.
    pub(crate) fn reserve_id(&self) -> u64 {
        // SeqCst, with the bound's store in `close_connections`: a change that swapped the
        // settings after this id was taken raises the bound over it.
        self.ids.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Registers a new connection's socket under its reserved id; the id is released by `forget`.
    pub(crate) fn register(
        &self,
        id: u64,
        endpoint: SocketAddr,
        socket: socket2::Socket,
        applied: SocketOptions,
    ) -> u64 {
        self.lock_live().insert(
            id,
            Live {
                endpoint,
                socket,
                applied,
            },
        );
        // A policy change may have landed between reading the policy and registering.
        let now = self.socket_options(&self.policy.load());
        if now != applied {
            let mut live = self.lock_live();
            if let Some(l) = live.get_mut(&id) {
                let _ = now.retune(&l.socket, &l.applied);
                l.applied = now;
            }
        }
        id
    }

    pub(crate) fn forget(&self, id: u64) {
        self.lock_live().remove(&id);
    }

    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let live = self.lock_live();
        let mut out: Vec<ConnectionInfo> = live
            .iter()
            .map(|(id, l)| ConnectionInfo {
                id: *id,
                endpoint: l.endpoint,
                local: l.socket.local_addr().ok().and_then(|a| a.as_socket()),
            })
            .collect();
        out.sort_by_key(|c| c.id);
        out
    }

    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        self.endpoints
            .load()
            .iter()
            .map(|e| EndpointInfo {
                address: e.address,
                hostname: e.hostname.clone(),
                idle: e.idle.len(),
                active_requests: e.active_requests.load(Ordering::Relaxed),
                health_flags: e.health.flags(),
            })
            .collect()
    }
}

/// An endpoint the cluster should have: from the Snapshot, or resolved from a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewEndpoint {
    pub address: SocketAddr,
    pub zone: Option<String>,
    pub hostname: Option<String>,
}

impl NewEndpoint {
    /// Is `have` this endpoint (so it keeps its pool, health and counters)?
    fn is(&self, have: &Endpoint) -> bool {
        have.address == self.address && have.zone == self.zone && have.hostname == self.hostname
    }
}

/// The cluster's upstream TLS as its connections use it: an HTTP/2 cluster that names no ALPN
/// protocol offers `h2` (without it a TLS server would take the connection for HTTP/1.1).
fn tls_of(cluster: &Cluster) -> Option<UpstreamTls> {
    let mut tls = cluster.upstream.tls.clone()?;
    if cluster.protocol == UpstreamProtocol::Http2 && tls.alpn_protocols.is_empty() {
        tls.alpn_protocols = vec!["h2".into()];
    }
    Some(tls)
}

/// A cluster's endpoints as the Snapshot lists them; a static Backend's carry the host as
/// written (kgateway gives every Backend endpoint its `hostname`).
fn snapshot_endpoints(cluster: &Cluster) -> Vec<NewEndpoint> {
    let hostname_of = |address: SocketAddr| match &cluster.discovery {
        Discovery::Static { hosts } => hosts
            .iter()
            .find(|h| {
                h.port == address.port() && h.host.parse::<std::net::IpAddr>().ok() == Some(address.ip())
            })
            .map(|h| h.host.clone()),
        Discovery::Eds | Discovery::Dns { .. } => None,
    };
    cluster
        .endpoints
        .iter()
        .map(|e| NewEndpoint {
            address: e.address,
            zone: e.zone.clone(),
            hostname: hostname_of(e.address),
        })
        .collect()
}

#[cfg(test)]
impl Endpoint {
    pub(crate) fn for_test(address: SocketAddr) -> Endpoint {
        Endpoint {
            address,
            zone: None,
            hostname: None,
            health: EndpointHealth::default(),
            idle: Pool::new(),
            h2: upstream_h2::EndpointPool::default(),
            active_requests: AtomicU64::new(0),
            open_connections: Arc::new(AtomicU64::new(0)),
            added: None,
            removed: AtomicBool::new(false),
        }
    }
}
