//! Counters kept on the request path as plain atomics (no lock, no map lookup per request),
//! and listed as metrics with Envoy's names for `/stats` and `/stats/prometheus`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// One value, named as Envoy names it (`cluster.<name>.upstream_cx_total`).
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    pub value: u64,
    /// For Prometheus: the metric family without its scope, and the cluster as a label.
    pub family: &'static str,
    pub scope: Scope,
}

/// Where a metric belongs, as Envoy groups them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The HTTP connection manager of the listeners (`http.http.*`).
    Http,
    /// One cluster (`cluster.<name>.*`).
    Cluster(String),
    /// The cluster manager, fed by the control plane (`cluster_manager.*`).
    ClusterManager,
    /// One listener address (`listener.<address>.*`, address as Envoy writes it: `[__]_8443`),
    /// and the tag Envoy extracts from names such as `ssl.versions.TLSv1.3`
    /// (`envoy_ssl_version="TLSv1.3"`).
    Listener {
        address: String,
        tag: Option<(&'static str, &'static str)>,
    },
}

macro_rules! counters {
    ($name:ident { $($field:ident : $kind:ident),* $(,)? }) => {
        #[derive(Debug, Default)]
        pub struct $name {
            $(pub $field: AtomicU64,)*
        }
        impl $name {
            pub fn list(&self) -> Vec<(&'static str, MetricKind, u64)> {
                vec![$((stringify!($field), MetricKind::$kind, self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters!(ClusterManagerStats {
    // Snapshots the data plane took (Envoy: accepted CDS updates): with coalescing, a burst of
    // changes makes a few of them, not one per change.
    cds_update_success: Counter,
});

counters!(ClusterStats {
    upstream_cx_total: Counter,
    upstream_cx_active: Gauge,
    upstream_cx_connect_fail: Counter,
    upstream_cx_connect_timeout: Counter,
    upstream_cx_destroy: Counter,
    upstream_cx_destroy_local: Counter,
    upstream_cx_destroy_remote: Counter,
    upstream_cx_destroy_local_with_active_rq: Counter,
    upstream_cx_destroy_remote_with_active_rq: Counter,
    // Either of the two above (Envoy's total of them).
    upstream_cx_destroy_with_active_rq: Counter,
    upstream_cx_destroy_keepalive_timeout: Counter,
    upstream_cx_idle_timeout: Counter,
    upstream_cx_none_healthy: Counter,
    upstream_rq_total: Counter,
    upstream_rq_active: Gauge,
    upstream_rq_timeout: Counter,
    upstream_rq_retry: Counter,
    upstream_rq_2xx: Counter,
    upstream_rq_3xx: Counter,
    upstream_rq_4xx: Counter,
    upstream_rq_5xx: Counter,
    upstream_cx_pool_idle: Gauge,
    // HTTP/2 connections opened (upstream_h2.rs), and connections the peer closed with a
    // GOAWAY.
    upstream_cx_http2_total: Counter,
    upstream_cx_close_notify: Counter,
    // The circuit breaker (circuit_breakers.rs): a request that waited for a connection at
    // max_connections; one refused beyond max_pending_requests; one refused beyond
    // max_requests; a replay refused beyond max_retries; requests waiting for a connection.
    upstream_cx_overflow: Counter,
    upstream_rq_pending_overflow: Counter,
    upstream_rq_active_overflow: Counter,
    upstream_rq_retry_overflow: Counter,
    upstream_rq_pending_total: Counter,
    upstream_rq_pending_active: Gauge,
    // The HTTP protocol options (http_protocol.rs).
    upstream_cx_max_requests: Counter,
    upstream_cx_protocol_error: Counter,
    upstream_rq_max_duration_reached: Counter,
    // Load balancing (load_balancing.rs): picks made among all hosts because too few were
    // healthy, and zone-aware routing's decisions.
    lb_healthy_panic: Counter,
    lb_zone_cluster_too_small: Counter,
    lb_zone_routing_all_directly: Counter,
    lb_zone_routing_sampled: Counter,
    lb_zone_routing_cross_zone: Counter,
    lb_zone_no_capacity_left: Counter,
});

counters!(ListenerStats {
    downstream_cx_total: Counter,
    downstream_cx_active: Gauge,
    // Connections accepted and closed at once: the connection cap or the descriptor budget.
    downstream_global_cx_overflow: Counter,
    downstream_rq_total: Counter,
    // Requests ended by the stream idle timeout (a stalled upload, or a response that moved
    // no byte either way for that long).
    downstream_rq_idle_timeout: Counter,
    // Upgrade requests (WebSocket) sent upstream, and those still open (upgrade.rs); upgrade
    // requests refused (403) because their protocol is not WebSocket.
    downstream_cx_upgrades_total: Counter,
    downstream_cx_upgrades_active: Gauge,
    downstream_rq_ws_on_non_ws_route: Counter,
    downstream_rq_2xx: Counter,
    downstream_rq_3xx: Counter,
    downstream_rq_4xx: Counter,
    downstream_rq_5xx: Counter,
    // HTTP/2 clients (h2_server.rs): connections (ALPN h2, or the prior-knowledge preface on a
    // plain port) and the streams they opened, as Envoy's HTTP connection manager counts them.
    downstream_cx_http2_total: Counter,
    downstream_cx_http2_active: Gauge,
    downstream_rq_http2_total: Counter,
    // HTTP/2 connections ended by the premature reset check (h2_server.rs limits), Envoy's name.
    downstream_rq_too_many_premature_resets: Counter,
});

/// `cluster.<name>.ssl.*` of a cluster with upstream TLS (upstream_tls.rs), Envoy's names and
/// counting (checked against Envoy 1.40): successful handshakes, those that resumed a session,
/// handshakes that failed on a TLS error other than verification (a version or suite nobody
/// shares, say), and the certificate verification failures, each in its own counter alone: CA,
/// SAN, and no certificate (for a missing client certificate in Envoy; upstream it stays 0, an
/// empty server chain counts as a CA failure, as Envoy's DefaultCertValidator does).
#[derive(Debug, Default)]
pub struct SslStats {
    pub handshake: AtomicU64,
    pub session_reused: AtomicU64,
    pub connection_error: AtomicU64,
    pub fail_verify_error: AtomicU64,
    pub fail_verify_san: AtomicU64,
    pub fail_verify_no_cert: AtomicU64,
}

impl SslStats {
    /// (name under the cluster, Prometheus family, kind, value).
    pub fn list(&self) -> Vec<(&'static str, &'static str, MetricKind, u64)> {
        [
            ("ssl.handshake", "ssl_handshake", &self.handshake),
            ("ssl.session_reused", "ssl_session_reused", &self.session_reused),
            (
                "ssl.connection_error",
                "ssl_connection_error",
                &self.connection_error,
            ),
            (
                "ssl.fail_verify_error",
                "ssl_fail_verify_error",
                &self.fail_verify_error,
            ),
            (
                "ssl.fail_verify_san",
                "ssl_fail_verify_san",
                &self.fail_verify_san,
            ),
            (
                "ssl.fail_verify_no_cert",
                "ssl_fail_verify_no_cert",
                &self.fail_verify_no_cert,
            ),
        ]
        .into_iter()
        .map(|(name, family, value)| (name, family, MetricKind::Counter, value.load(Ordering::Relaxed)))
        .collect()
    }
}

/// `cluster.<name>.http2.*` of a cluster that speaks HTTP/2 upstream (upstream_h2.rs): the
/// connections closed because a keepalive PING went unanswered (Envoy's name).
#[derive(Debug, Default)]
pub struct Http2Stats {
    pub keepalive_timeout: AtomicU64,
}

impl Http2Stats {
    /// (name under the cluster, Prometheus family, kind, value).
    pub fn list(&self) -> Vec<(&'static str, &'static str, MetricKind, u64)> {
        vec![(
            "http2.keepalive_timeout",
            "http2_keepalive_timeout",
            MetricKind::Counter,
            self.keepalive_timeout.load(Ordering::Relaxed),
        )]
    }
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Ordering::Relaxed);
}

impl ClusterStats {
    /// Counts a response by class; 0 (no response: the client left first) counts in none.
    pub(crate) fn count_status(&self, status: u16) {
        inc(match status {
            0..=199 => return,
            200..=299 => &self.upstream_rq_2xx,
            300..=399 => &self.upstream_rq_3xx,
            400..=499 => &self.upstream_rq_4xx,
            _ => &self.upstream_rq_5xx,
        });
    }
}

impl ListenerStats {
    pub(crate) fn count_status(&self, status: u16) {
        inc(&self.downstream_rq_total);
        inc(match status {
            0..=199 => return,
            200..=299 => &self.downstream_rq_2xx,
            300..=399 => &self.downstream_rq_3xx,
            400..=499 => &self.downstream_rq_4xx,
            _ => &self.downstream_rq_5xx,
        });
    }
}

impl crate::DataPlane {
    /// Every metric, sorted by name as Envoy's `/stats` lists them.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        for (field, kind, value) in self.downstream.list() {
            out.push(Metric {
                name: format!("http.http.{field}"),
                kind,
                value,
                family: field,
                scope: Scope::Http,
            });
        }
        let runtime = self.runtime();
        for (field, kind, value) in self.cluster_manager.list() {
            out.push(Metric {
                name: format!("cluster_manager.{}", field.replacen('_', ".", 1)),
                kind,
                value,
                family: field,
                scope: Scope::ClusterManager,
            });
        }
        out.push(Metric {
            name: "cluster_manager.active_clusters".into(),
            kind: MetricKind::Gauge,
            value: runtime.clusters.len() as u64,
            family: "active_clusters",
            scope: Scope::ClusterManager,
        });
        for c in &runtime.clusters {
            for (field, kind, value) in c.stats().list() {
                out.push(Metric {
                    name: format!("cluster.{}.{field}", c.name()),
                    kind,
                    value,
                    family: field,
                    scope: Scope::Cluster(c.name().to_string()),
                });
            }
            // `health_check.*` and `outlier_detection.*`, while the cluster has them, and the
            // circuit breaker's `circuit_breakers.default.*` always.
            let pools = c.endpoints().len() as u64;
            let policy_stats = c
                .health_checks
                .list()
                .into_iter()
                .chain(c.outlier.stats().map(|s| s.list()).unwrap_or_default())
                .chain(c.dns.list())
                .chain(c.breaker().gauges(pools))
                .chain(c.tls.stats().map(|s| s.list()).unwrap_or_default())
                .chain(if c.speaks_http2() {
                    c.http2_stats().list()
                } else {
                    Vec::new()
                });
            for (field, family, kind, value) in policy_stats {
                out.push(Metric {
                    name: format!("cluster.{}.{field}", c.name()),
                    kind,
                    value,
                    family,
                    scope: Scope::Cluster(c.name().to_string()),
                });
            }
        }
        self.listener_metrics(&mut out);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
