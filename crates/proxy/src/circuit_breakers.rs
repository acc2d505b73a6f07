//! A cluster's circuit breaker, as Envoy's default-priority thresholds: open connections,
//! pending requests (waiting for a connection), active requests and active retries, each with
//! its limit from the policy (Envoy's defaults 1024/1024/1024/3 when unset: the breaker always
//! exists). Far from its limits a request costs an atomic add and subtract on the breaker's
//! request count: the limits are atomics set when the policy changes, and the pending queue (a
//! `Notify`) is touched only when a request must wait. As in Envoy (measured: 1 connection,
//! `max_requests` 2, 4 slow requests: 4 x 200), a request counts against `max_requests` once it
//! has a connection; one waiting for a connection counts as pending only.
//!
//! HTTP/1.1: a request needs a connection of its own. With `max_connections` open and none idle
//! it waits, pending, for one to come back to the pool or to close (Envoy's
//! `upstream_cx_overflow`); beyond `max_pending_requests` it is answered 503 `UO`
//! (`upstream_rq_pending_overflow`). As Envoy's pool, an endpoint with no connection at all
//! gets one even at the limit, or its requests would wait for nothing.
//!
//! HTTP/2 (`upstream_h2.rs`): connections still count against `max_connections`, but a request
//! needs a stream slot, not a connection: it counts against `max_requests` once it has a slot,
//! and waits as pending (`max_pending_requests`) only when every connection is full and no
//! new one may open, as Envoy's HTTP/2 pool counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use snapshot::UpstreamPolicy;
use tokio::sync::Notify;

use crate::cluster::{ClusterRuntime, Endpoint};
use crate::local_reply::LocalReply;
use crate::outlier_detection::Report;
use crate::proxy_protocol::ProxyAddresses;
use crate::stats::{self, MetricKind};
use crate::upstream::{self, Connection};

/// Envoy's default for `max_connection_pools`: unlimited, u64::MAX (kgw has one pool per
/// endpoint: `remaining_cx_pools` is this less the endpoints, as Envoy shows it with one worker).
const UNLIMITED_POOLS: u64 = u64::MAX;

pub(crate) struct CircuitBreaker {
    max_connections: AtomicU32,
    max_pending: AtomicU32,
    max_requests: AtomicU32,
    max_retries: AtomicU32,
    track_remaining: AtomicBool,
    /// Connections open or being opened.
    connections: AtomicU64,
    /// Requests waiting for a connection.
    pending: AtomicU64,
    /// Requests that have a connection.
    requests: AtomicU64,
    /// Replays in flight.
    retries: AtomicU64,
    /// Woken when a connection goes back to a pool or closes, while requests are pending.
    returned: Notify,
}

impl CircuitBreaker {
    pub(crate) fn new(policy: &UpstreamPolicy) -> CircuitBreaker {
        let breaker = CircuitBreaker {
            max_connections: AtomicU32::new(0),
            max_pending: AtomicU32::new(0),
            max_requests: AtomicU32::new(0),
            max_retries: AtomicU32::new(0),
            track_remaining: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            returned: Notify::new(),
        };
        breaker.set_limits(policy);
        breaker
    }

    /// Takes the limits of a new policy; what is open stays open.
    pub(crate) fn set_limits(&self, policy: &UpstreamPolicy) {
        let limits = policy.circuit_breakers.unwrap_or_default();
        self.max_connections
            .store(limits.max_connections(), Ordering::Relaxed);
        self.max_pending
            .store(limits.max_pending_requests(), Ordering::Relaxed);
        self.max_requests.store(limits.max_requests(), Ordering::Relaxed);
        self.max_retries.store(limits.max_retries(), Ordering::Relaxed);
        self.track_remaining
            .store(limits.track_remaining, Ordering::Relaxed);
        // Higher limits may let waiting requests go.
        self.wake_pending();
    }

    /// A request that got its connection starts, if under `max_requests`; it counts until the
    /// guard drops. None: refused, counted in `upstream_rq_active_overflow` by the caller (what
    /// Envoy 1.40 counts, measured).
    pub(crate) fn start_request(self: &Arc<Self>) -> Option<RequestGuard> {
        let max = u64::from(self.max_requests.load(Ordering::Relaxed));
        self.requests
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| RequestGuard(self.clone()))
    }

    /// Takes a connection slot if under `max_connections`, or if the endpoint has no
    /// connection at all (see the module doc).
    pub(crate) fn reserve_connection(&self, endpoint_open: &AtomicU64) -> bool {
        let max = u64::from(self.max_connections.load(Ordering::Relaxed));
        let under = self
            .connections
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .is_ok();
        if under {
            return true;
        }
        if endpoint_open.load(Ordering::SeqCst) == 0 {
            self.connections.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// A connection closed (or failed to open): its slot is free.
    pub(crate) fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::SeqCst);
        self.wake_pending();
    }

    /// A request starts waiting for a connection (or, on HTTP/2, a stream), if under
    /// `max_pending_requests`; it counts as pending until the guard drops. Refused: Envoy's
    /// 503 `UO`, counted in `upstream_rq_pending_overflow`.
    pub(crate) fn enter_pending<'a>(
        &'a self,
        cluster: &'a ClusterRuntime,
    ) -> Result<Pending<'a>, LocalReply> {
        let max = u64::from(self.max_pending.load(Ordering::Relaxed));
        let entered = self
            .pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .is_ok();
        if !entered {
            stats::inc(&cluster.stats().upstream_rq_pending_overflow);
            return Err(LocalReply::overflow());
        }
        stats::inc(&cluster.stats().upstream_cx_overflow);
        stats::inc(&cluster.stats().upstream_rq_pending_total);
        stats::inc(&cluster.stats().upstream_rq_pending_active);
        Ok(Pending(self, cluster))
    }

    /// Resolves when a connection goes back to a pool or closes while requests are pending
    /// (register it, `enable`, before looking for one).
    pub(crate) fn returned(&self) -> tokio::sync::futures::Notified<'_> {
        self.returned.notified()
    }

    /// A connection went back to its pool.
    pub(crate) fn wake_pending(&self) {
        if self.pending.load(Ordering::SeqCst) > 0 {
            self.returned.notify_waiters();
        }
    }

    /// Starts a replay if under `max_retries`; the replay counts until the guard drops.
    pub(crate) fn start_retry(self: &Arc<Self>) -> Option<RetryGuard> {
        let max = u64::from(self.max_retries.load(Ordering::Relaxed));
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| RetryGuard(self.clone()))
    }

    /// Envoy's `circuit_breakers.default.*` gauges: `*_open` (1 when that limit is reached)
    /// always, `remaining_*` with `track_remaining`.
    pub(crate) fn gauges(&self, pools: u64) -> Vec<(&'static str, &'static str, MetricKind, u64)> {
        let active_requests = self.requests.load(Ordering::Relaxed);
        let limit = |a: &AtomicU32| u64::from(a.load(Ordering::Relaxed));
        let connections = self.connections.load(Ordering::Relaxed);
        let pending = self.pending.load(Ordering::Relaxed);
        let retries = self.retries.load(Ordering::Relaxed);
        let rows = [
            ("cx", connections, limit(&self.max_connections)),
            ("cx_pool", pools, UNLIMITED_POOLS),
            ("rq", active_requests, limit(&self.max_requests)),
            ("rq_pending", pending, limit(&self.max_pending)),
            ("rq_retry", retries, limit(&self.max_retries)),
        ];
        let open = |name: &str| -> (&'static str, &'static str) {
            match name {
                "cx" => (
                    "circuit_breakers.default.cx_open",
                    "circuit_breakers_default_cx_open",
                ),
                "cx_pool" => (
                    "circuit_breakers.default.cx_pool_open",
                    "circuit_breakers_default_cx_pool_open",
                ),
                "rq" => (
                    "circuit_breakers.default.rq_open",
                    "circuit_breakers_default_rq_open",
                ),
                "rq_pending" => (
                    "circuit_breakers.default.rq_pending_open",
                    "circuit_breakers_default_rq_pending_open",
                ),
                _ => (
                    "circuit_breakers.default.rq_retry_open",
                    "circuit_breakers_default_rq_retry_open",
                ),
            }
        };
        let mut out: Vec<_> = rows
            .iter()
            .map(|(name, used, max)| {
                let (full, family) = open(name);
                (full, family, MetricKind::Gauge, u64::from(used >= max))
            })
            .collect();
        if self.track_remaining.load(Ordering::Relaxed) {
            let remaining = [
                (
                    "circuit_breakers.default.remaining_cx",
                    "circuit_breakers_default_remaining_cx",
                    0,
                ),
                (
                    "circuit_breakers.default.remaining_cx_pools",
                    "circuit_breakers_default_remaining_cx_pools",
                    1,
                ),
                (
                    "circuit_breakers.default.remaining_rq",
                    "circuit_breakers_default_remaining_rq",
                    2,
                ),
                (
                    "circuit_breakers.default.remaining_pending",
                    "circuit_breakers_default_remaining_pending",
                    3,
                ),
                (
                    "circuit_breakers.default.remaining_retries",
                    "circuit_breakers_default_remaining_retries",
                    4,
                ),
            ];
            for (full, family, row) in remaining {
                let (_, used, max) = rows[row];
                out.push((full, family, MetricKind::Gauge, max.saturating_sub(used)));
            }
        }
        out
    }
}

/// A request with a connection (see `CircuitBreaker::start_request`).
pub(crate) struct RequestGuard(Arc<CircuitBreaker>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A replay in flight (see `CircuitBreaker::start_retry`).
pub(crate) struct RetryGuard(Arc<CircuitBreaker>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request waiting for a connection (counted in the pending gauge while it lives).
pub(crate) struct Pending<'a>(&'a CircuitBreaker, &'a ClusterRuntime);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
        stats::dec(&self.1.stats().upstream_rq_pending_active);
    }
}

/// A connection to `endpoint` for one request: an idle pooled one (for PROXY protocol, one that
/// carried the same client's header; not for a replay, `reuse` false), else a new one within
/// `max_connections`, else one that comes back while the request waits as pending, for at most
/// `wait` (then Envoy's 504 `UT`).
pub(crate) async fn connection_for(
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Endpoint,
    proxied: Option<ProxyAddresses>,
    wait: Duration,
    reuse: bool,
) -> Result<Connection, LocalReply> {
    let breaker = cluster.breaker();
    let take_idle = || {
        if reuse {
            cluster.take_idle(endpoint, proxied)
        } else {
            None
        }
    };
    // The common case: no lock beyond the pool's, no timer, no queue.
    if let Some(c) = take_idle() {
        return Ok(c);
    }
    if breaker.reserve_connection(&endpoint.open_connections) {
        return Box::pin(new_connection(cluster, endpoint, proxied)).await;
    }
    // With PROXY protocol, idle connections of other clients fill the slots; one of them
    // gives way rather than this request waiting for a connection it could never use.
    if proxied.is_some()
        && cluster.close_idle_of_another_client(endpoint, proxied)
        && breaker.reserve_connection(&endpoint.open_connections)
    {
        return Box::pin(new_connection(cluster, endpoint, proxied)).await;
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut pending: Option<Pending<'_>> = None;
    loop {
        // Registered before looking, so a connection returned after the look wakes it.
        let returned = breaker.returned.notified();
        tokio::pin!(returned);
        returned.as_mut().enable();
        if let Some(c) = take_idle() {
            return Ok(c);
        }
        if breaker.reserve_connection(&endpoint.open_connections) {
            return Box::pin(new_connection(cluster, endpoint, proxied)).await;
        }
        if pending.is_none() {
            pending = Some(breaker.enter_pending(cluster)?);
            // Look again now that returners see this request waiting.
            continue;
        }
        if tokio::time::timeout_at(deadline, returned).await.is_err() {
            return Err(LocalReply::upstream_timeout());
        }
    }
}

async fn new_connection(
    cluster: &Arc<ClusterRuntime>,
    endpoint: &Endpoint,
    proxied: Option<ProxyAddresses>,
) -> Result<Connection, LocalReply> {
    // The slot is the connection's from here: released when it closes or fails to open.
    let connected = upstream::connect_for_request(cluster, endpoint, proxied).await;
    // Outlier detection hears of every connect, as Envoy's does.
    let report = if connected.is_ok() {
        Report::ConnectSuccess
    } else {
        Report::ConnectFailed
    };
    cluster.outlier.report(cluster, endpoint, report);
    connected.map_err(LocalReply::connect_failed)
}
