//! Everything a cluster's upstream connections and requests are run with: one value per
//! cluster, one `Option` per policy concern (None: Envoy's default). Each concern lives in its
//! own file with its Envoy rendering, so the dump and the data plane read the same field.

mod circuit_breakers;
mod connection;
mod dns;
mod health_check;
mod http2;
mod http_protocol;
mod load_balancing;
mod outlier_detection;
mod proxy_protocol;
mod tls;

use std::time::Duration;

use serde_json::{Map, Value};

pub use circuit_breakers::CircuitBreakers;
pub use connection::TcpKeepalive;
pub use dns::{DEFAULT_DNS_REFRESH, DnsSettings};
pub use health_check::{GrpcHealthCheck, HealthCheck, HttpHealthCheck};
pub use http_protocol::{CommonHttpOptions, Http1Options};
pub use http2::{Http2Keepalive, Http2Options, UpstreamProtocol};
pub use load_balancing::{
    CookieHash, HashPolicy, HashSource, LbAlgorithm, LoadBalancer, SlowStart, ZoneAware,
};
pub use outlier_detection::OutlierDetection;
pub use proxy_protocol::ProxyProtocolVersion;
pub use tls::{
    CertificateKey, PemSource, SYSTEM_CA_SECRET, SanMatch, SanType, ServerValidation, TlsParameters,
    TlsVersion, UpstreamTls,
};

/// Envoy's and kgateway's connect timeout when no policy sets one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A cluster's upstream settings. Policies merge into it per top-level field: the oldest
/// policy that sets a field wins it (see `fill_from`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamPolicy {
    pub connect_timeout: Option<Duration>,
    /// Bytes buffered per upstream connection, each way (Envoy's per_connection_buffer_limit_bytes).
    pub per_connection_buffer_limit_bytes: Option<u32>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub common_http: Option<CommonHttpOptions>,
    pub http1: Option<Http1Options>,
    /// Applied only when the cluster speaks HTTP/2 (`Cluster::protocol`).
    pub http2: Option<Http2Options>,
    pub load_balancer: Option<LoadBalancer>,
    pub health_check: Option<HealthCheck>,
    pub outlier_detection: Option<OutlierDetection>,
    pub circuit_breakers: Option<CircuitBreakers>,
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// TLS to the endpoints (inside the PROXY protocol header when both are set).
    pub tls: Option<UpstreamTls>,
    /// How a DNS cluster resolves its names (no effect on other clusters).
    pub dns: Option<DnsSettings>,
}

impl UpstreamPolicy {
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// Takes every field this value leaves unset from `newer` (a policy attached after the
    /// ones already merged in). The one place that lists the fields for merging.
    pub fn fill_from(&mut self, newer: &UpstreamPolicy) {
        fn fill<T: Clone>(mine: &mut Option<T>, theirs: &Option<T>) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        let UpstreamPolicy {
            connect_timeout,
            per_connection_buffer_limit_bytes,
            tcp_keepalive,
            common_http,
            http1,
            http2,
            load_balancer,
            health_check,
            outlier_detection,
            circuit_breakers,
            proxy_protocol,
            tls,
            dns,
        } = newer;
        fill(&mut self.connect_timeout, connect_timeout);
        fill(
            &mut self.per_connection_buffer_limit_bytes,
            per_connection_buffer_limit_bytes,
        );
        fill(&mut self.tcp_keepalive, tcp_keepalive);
        fill(&mut self.common_http, common_http);
        fill(&mut self.http1, http1);
        fill(&mut self.http2, http2);
        fill(&mut self.load_balancer, load_balancer);
        fill(&mut self.health_check, health_check);
        fill(&mut self.outlier_detection, outlier_detection);
        fill(&mut self.circuit_breakers, circuit_breakers);
        fill(&mut self.proxy_protocol, proxy_protocol);
        fill(&mut self.tls, tls);
        fill(&mut self.dns, dns);
    }

    /// Writes this policy's fields into an Envoy Cluster's JSON, defaults included as kgateway
    /// renders them on every cluster.
    /// kgateway sets its defaults on a Service's (EDS) clusters only, and only a DNS cluster's
    /// hosts have names to hash.
    pub(crate) fn render(
        &self,
        cluster: &mut Map<String, Value>,
        discovery: &crate::Discovery,
        protocol: UpstreamProtocol,
    ) {
        connection::render(self, cluster);
        load_balancing::render(self.load_balancer.as_ref(), cluster, discovery);
        http_protocol::render(
            self.common_http.as_ref(),
            self.http1.as_ref(),
            self.http2.as_ref(),
            protocol,
            cluster,
        );
        if let Some(h) = &self.health_check {
            health_check::render(h, cluster);
        }
        if let Some(o) = &self.outlier_detection {
            outlier_detection::render(o, cluster);
        }
        if let Some(c) = &self.circuit_breakers {
            circuit_breakers::render(c, cluster);
        }
        let tls = self.tls.as_ref().map(UpstreamTls::transport_socket);
        match (self.proxy_protocol, tls) {
            (Some(v), inner) => proxy_protocol::render(v, inner, cluster),
            (None, Some(tls)) => {
                cluster.insert("transport_socket".into(), tls);
            }
            (None, None) => {}
        }
    }

    /// The route's `hash_policy` for requests sent to this cluster (Envoy hashes on the route).
    pub(crate) fn route_hash_policy(&self) -> Option<Value> {
        self.load_balancer
            .as_ref()
            .and_then(load_balancing::route_hash_policy)
    }
}

/// An optional wrapped value (UInt32Value and friends): bare in proto3 JSON.
pub(crate) fn put<T: Into<Value>>(m: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(v) = value {
        m.insert(key.into(), v.into());
    }
}

pub(crate) fn put_duration(m: &mut Map<String, Value>, key: &str, value: Option<Duration>) {
    if let Some(d) = value {
        m.insert(key.into(), crate::format_duration(d).into());
    }
}
