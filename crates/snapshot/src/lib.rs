//! The Snapshot: what the gateway runs, as one immutable value. The data plane serves from it
//! and the admin API renders it as Envoy's `/config_dump`, so the dump cannot claim anything the
//! proxy does not do.

mod envoy;
mod hostnames;
mod listener_tls;
mod misdirected;
mod route_cors;
mod route_filters;
mod route_mirror;
mod route_query;
mod route_timeout;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

pub use envoy::{DumpError, DumpOptions, config_dump, format_duration};
pub use hostnames::{hostname_matches, sort_virtual_hosts, split_port};
pub use listener_tls::{ClientValidation, ListenerConnection, ListenerTls, ServerCertificate};
pub use misdirected::{RouteTable, chain_route_name, misdirected_route, route_tables};
pub use route_cors::CorsPolicy;
pub use route_filters::{CONNECTION_SPECIFIC_HEADERS, HeaderEdits, PathRewrite, Redirect, RouteFilters};
pub use route_mirror::{MirrorShare, RequestMirror};
pub use route_query::QueryParamMatch;
pub use upstream::*;

/// Everything the data plane needs, computed once per configuration change.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Increases with every translation; shown as `version_info`.
    pub version: u64,
    /// When this snapshot was made; shown as `last_updated`.
    pub created: SystemTime,
    pub listeners: Vec<Listener>,
    /// Sorted by name; routes refer to them by index.
    pub clusters: Vec<Cluster>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot {
            version: 0,
            created: SystemTime::UNIX_EPOCH,
            listeners: Vec::new(),
            clusters: Vec::new(),
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.clusters[i])
    }
}

/// One port the gateway listens on, with the routes of every Gateway listener on that port.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Envoy-style `listener~<port>`; also the name of its route configuration.
    pub name: String,
    pub port: u16,
    /// Addresses to bind; empty means every address (`[::]` dual stack), as Envoy does.
    pub addresses: Vec<IpAddr>,
    /// In match order: exact hostnames first, then wildcards by length, then `*`.
    pub virtual_hosts: Vec<VirtualHost>,
    /// HTTPS: the certificates, by SNI; None: plain HTTP.
    pub tls: Option<ListenerTls>,
    /// What a ListenerPolicy sets on accepted connections.
    pub connection: ListenerConnection,
}

impl Listener {
    pub fn bind_addresses(&self) -> Vec<SocketAddr> {
        if self.addresses.is_empty() {
            vec![SocketAddr::new(
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                self.port,
            )]
        } else {
            self.addresses
                .iter()
                .map(|a| SocketAddr::new(*a, self.port))
                .collect()
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHost {
    pub name: String,
    /// Lower-case hostnames: `www.example.com`, `*.example.com`, or `*`.
    pub domains: Vec<String>,
    /// In Gateway API precedence order; the first that matches wins.
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub method: Option<http::Method>,
    /// Exact header matches; names are lower case.
    pub headers: Vec<(http::HeaderName, String)>,
    pub action: RouteAction,
    /// WebSocket upgrades enabled on this route (Envoy's route-level `upgrade_configs`):
    /// kgateway sets it when a backend of the route says `appProtocol: kubernetes.io/ws`.
    pub websocket_upgrade: bool,
    /// Exact query parameter matches, all of which must hold.
    pub query_params: Vec<QueryParamMatch>,
    /// The rule's HTTPRoute filters (`route_filters.rs`); None: none.
    pub filters: Option<std::sync::Arc<RouteFilters>>,
    /// The rule's timeout (Envoy's route `timeout`): how long a request may wait for its
    /// response head, from the end of the request; zero is no limit. None: the proxy's default.
    pub timeout: Option<std::time::Duration>,
    /// Clusters that get a copy of each request (`route_mirror.rs`).
    pub mirrors: Vec<RequestMirror>,
    /// The rule's CORS filter (`route_cors.rs`).
    pub cors: Option<std::sync::Arc<CorsPolicy>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Gateway API PathPrefix: matches whole path segments (`/foo` matches `/foo/bar`, not `/foobar`).
    Prefix(String),
    /// GRPCRoute's service match without a method: every call of the service, `/<service>/...`
    /// (Envoy's `prefix: /<service>/`).
    GrpcService(String),
    /// GRPCRoute's method match without a service: `/<any service>/<method>` (Envoy's
    /// `safe_regex`); the API admits only `[A-Za-z_][A-Za-z_0-9]*` as a method.
    GrpcMethod(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                let p = p.trim_end_matches('/');
                p.is_empty()
                    || (path.starts_with(p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            PathMatch::GrpcService(service) => path
                .strip_prefix('/')
                .and_then(|rest| rest.strip_prefix(service.as_str()))
                .is_some_and(|rest| rest.starts_with('/')),
            PathMatch::GrpcMethod(method) => path
                .strip_prefix('/')
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(service, m)| !service.is_empty() && m == method),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Forward to clusters, picked by weight.
    Forward(Vec<WeightedCluster>),
    /// No usable backend (none given, all weights 0, or a reference that does not resolve):
    /// answer with this status directly, as Envoy's direct_response.
    Direct { status: u16, body: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WeightedCluster {
    pub name: String,
    /// Index into `Snapshot::clusters`; None when the backend does not resolve, so its share of
    /// the traffic is answered with 500.
    pub index: Option<usize>,
    pub weight: u32,
    /// The backendRef's own filters (header edits, applied when this cluster is picked).
    pub filters: Option<std::sync::Arc<RouteFilters>>,
}

/// An upstream: a Service port (`kube_<ns>_<svc>_<port>`) or a Backend
/// (`backend_<ns>_<name>_0`) with its endpoints and policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    /// Where the endpoints come from.
    pub discovery: Discovery,
    /// The addresses to send to: a Service's ready endpoints, or a Backend's IP hosts. A DNS
    /// cluster's names are resolved by the data plane and are not listed here.
    pub endpoints: Vec<Endpoint>,
    /// HTTP/1.1 or HTTP/2 to the endpoints (from `appProtocol`).
    pub protocol: UpstreamProtocol,
    /// Every upstream setting the cluster's policies give it.
    pub upstream: UpstreamPolicy,
}

/// Where a cluster's endpoints come from, which is also its Envoy cluster type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Discovery {
    /// A Service's EndpointSlices, sent apart from the cluster (EDS).
    #[default]
    Eds,
    /// A Backend whose hosts are all IP addresses (STATIC): `Cluster::endpoints`.
    Static { hosts: Vec<BackendHost> },
    /// A Backend with at least one DNS name (`envoy.clusters.dns`): the data plane resolves
    /// every host, again at the policy's refresh rate.
    Dns { hosts: Vec<BackendHost> },
}

impl Discovery {
    /// The hosts a Backend lists, in order; none for a Service.
    pub fn hosts(&self) -> &[BackendHost] {
        match self {
            Discovery::Eds => &[],
            Discovery::Static { hosts } | Discovery::Dns { hosts } => hosts,
        }
    }
}

/// One host of a Backend, as written: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendHost {
    pub host: String,
    pub port: u16,
}

/// One address of a cluster, with the zone it runs in when the EndpointSlice says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub zone: Option<String>,
}

impl Endpoint {
    pub fn new(address: SocketAddr) -> Endpoint {
        Endpoint { address, zone: None }
    }
}

#[cfg(test)]
mod path_match_tests {
    use super::PathMatch;

    #[test]
    fn grpc_service_and_method_matches() {
        let service = PathMatch::GrpcService("helloworld.Greeter".into());
        assert!(service.matches("/helloworld.Greeter/SayHello"));
        assert!(!service.matches("/helloworld.Greeter"));
        assert!(!service.matches("/helloworld.GreeterX/SayHello"));
        assert!(!service.matches("/other.Greeter/SayHello"));
        let method = PathMatch::GrpcMethod("SayHello".into());
        assert!(method.matches("/helloworld.Greeter/SayHello"));
        assert!(method.matches("/x/SayHello"));
        assert!(!method.matches("//SayHello"));
        assert!(!method.matches("/a/b/SayHello"));
        assert!(!method.matches("/helloworld.Greeter/SayHelloAgain"));
    }
}
