//! Active health checking: probes per endpoint; hosts that fail them are not picked.

use std::time::Duration;

use serde_json::{Map, Value};

use super::put;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub timeout: Duration,
    pub interval: Duration,
    /// Failed probes in a row that mark a healthy host unhealthy.
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that mark an unhealthy host healthy.
    pub healthy_threshold: u32,
    /// The HTTP probe; not used when `grpc` is set.
    pub http: HttpHealthCheck,
    /// gRPC probes instead of HTTP ones: `grpc.health.v1.Health/Check` over HTTP/2 (whatever
    /// the cluster's protocol, as Envoy's gRPC health checker always speaks HTTP/2), healthy
    /// when it answers SERVING (Envoy's `grpc_health_check`).
    pub grpc: Option<GrpcHealthCheck>,
}

/// Envoy's `GrpcHealthCheck`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrpcHealthCheck {
    /// The `service` of the HealthCheckRequest; None: the server's overall health ("").
    pub service_name: Option<String>,
    /// The `:authority` of the probes; None: the cluster's name, as Envoy does.
    pub authority: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpHealthCheck {
    /// The Host header; None: the cluster's name, as Envoy does.
    pub host: Option<String>,
    pub path: String,
    /// None: GET.
    pub method: Option<String>,
}

impl HealthCheck {
    /// Whether probes carry a Host (HTTP) or an authority (gRPC) of their own (otherwise a
    /// Backend host's name, or the cluster's name).
    pub fn sets_host(&self) -> bool {
        match &self.grpc {
            Some(g) => g.authority.is_some(),
            None => self.http.host.is_some(),
        }
    }
}

pub(super) fn render(h: &HealthCheck, cluster: &mut Map<String, Value>) {
    let mut check = Map::new();
    check.insert("timeout".into(), crate::format_duration(h.timeout).into());
    check.insert("interval".into(), crate::format_duration(h.interval).into());
    check.insert("unhealthy_threshold".into(), h.unhealthy_threshold.into());
    check.insert("healthy_threshold".into(), h.healthy_threshold.into());
    if let Some(g) = &h.grpc {
        let mut grpc = Map::new();
        put(&mut grpc, "service_name", g.service_name.clone());
        put(&mut grpc, "authority", g.authority.clone());
        check.insert("grpc_health_check".into(), Value::Object(grpc));
    } else {
        let mut http = Map::new();
        put(&mut http, "host", h.http.host.clone());
        http.insert("path".into(), h.http.path.clone().into());
        put(&mut http, "method", h.http.method.clone());
        check.insert("http_health_check".into(), Value::Object(http));
    }
    cluster.insert("health_checks".into(), Value::Array(vec![Value::Object(check)]));
}
