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
    pub http: HttpHealthCheck,
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
    /// Whether probes carry a Host of their own (otherwise a Backend host's name, or the
    /// cluster's name).
    pub fn sets_host(&self) -> bool {
        self.http.host.is_some()
    }
}

pub(super) fn render(h: &HealthCheck, cluster: &mut Map<String, Value>) {
    let mut check = Map::new();
    check.insert("timeout".into(), crate::format_duration(h.timeout).into());
    check.insert("interval".into(), crate::format_duration(h.interval).into());
    check.insert("unhealthy_threshold".into(), h.unhealthy_threshold.into());
    check.insert("healthy_threshold".into(), h.healthy_threshold.into());
    let mut http = Map::new();
    put(&mut http, "host", h.http.host.clone());
    http.insert("path".into(), h.http.path.clone().into());
    put(&mut http, "method", h.http.method.clone());
    check.insert("http_health_check".into(), Value::Object(http));
    cluster.insert("health_checks".into(), Value::Array(vec![Value::Object(check)]));
}
