//! Text renderings of the data plane's state in Envoy's and Prometheus' formats.

use std::fmt::Write;

use proxy::{Metric, MetricKind, Runtime, Scope};
use serde_json::{Value, json};

/// Envoy's `/clusters`: `cluster::host::stat::value` lines.
pub(crate) fn clusters_text(runtime: &Runtime) -> String {
    let mut out = String::new();
    for (cluster, c) in runtime.snapshot.clusters.iter().zip(&runtime.clusters) {
        let name = &cluster.name;
        let _ = writeln!(out, "{name}::observability_name::{name}");
        let s = c.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "{name}::default_priority::max_connections::1024");
        let _ = writeln!(out, "{name}::added_via_api::true");
        let connections = c.connections();
        for e in c.endpoints() {
            let h = e.address;
            let open = connections.iter().filter(|x| x.endpoint == h).count();
            let _ = writeln!(out, "{name}::{h}::cx_active::{open}");
            let _ = writeln!(out, "{name}::{h}::cx_idle::{}", e.idle);
            let _ = writeln!(out, "{name}::{h}::rq_active::{}", e.active_requests);
            // Envoy prints the line for every host, empty without a hostname.
            let _ = writeln!(
                out,
                "{name}::{h}::hostname::{}",
                e.hostname.as_deref().unwrap_or("")
            );
            let _ = writeln!(out, "{name}::{h}::health_flags::{}", e.health_flags);
            let _ = writeln!(out, "{name}::{h}::weight::1");
        }
        let _ = writeln!(out, "{name}::cx_total::{}", load(&s.upstream_cx_total));
    }
    out
}

pub(crate) fn clusters_json(runtime: &Runtime) -> Value {
    let statuses: Vec<Value> = runtime
        .snapshot
        .clusters
        .iter()
        .zip(&runtime.clusters)
        .map(|(cluster, c)| {
            let connections = c.connections();
            let hosts: Vec<Value> = c
                .endpoints()
                .iter()
                .map(|e| {
                    let open: Vec<Value> = connections
                        .iter()
                        .filter(|x| x.endpoint == e.address)
                        .map(|x| json!({"id": x.id, "local_address": x.local.map(|a| a.to_string())}))
                        .collect();
                    let mut host = json!({
                        "address": {"socket_address": {"address": e.address.ip().to_string(), "port_value": e.address.port()}},
                        "stats": [
                            {"name": "cx_active", "value": open.len().to_string(), "type": "GAUGE"},
                            {"name": "cx_idle", "value": e.idle.to_string(), "type": "GAUGE"},
                            {"name": "rq_active", "value": e.active_requests.to_string(), "type": "GAUGE"},
                        ],
                        "health_status": health_status(&e.health_flags),
                        "weight": 1,
                        "connections": open,
                    });
                    // Envoy's JSON leaves an empty hostname out.
                    if let Some(hostname) = &e.hostname {
                        host["hostname"] = hostname.clone().into();
                    }
                    host
                })
                .collect();
            json!({"name": cluster.name, "observability_name": cluster.name, "added_via_api": true, "host_statuses": hosts})
        })
        .collect();
    json!({ "cluster_statuses": statuses })
}

/// Envoy's `/stats`: `name: value` lines, optionally filtered by a regex.
pub(crate) fn stats_text(metrics: &[Metric], filter: Option<&str>) -> Result<String, String> {
    let re = match filter.filter(|f| !f.is_empty()) {
        Some(f) => Some(regex::Regex::new(f).map_err(|e| format!("Invalid regex: {e}"))?),
        None => None,
    };
    let mut out = String::new();
    for m in metrics {
        if re.as_ref().is_none_or(|r| r.is_match(&m.name)) {
            let _ = writeln!(out, "{}: {}", m.name, m.value);
        }
    }
    Ok(out)
}

/// The Prometheus text format, with Envoy's naming (`envoy_cluster_upstream_cx_total{envoy_cluster_name="..."}`).
pub(crate) fn prometheus(metrics: &[Metric]) -> String {
    let mut families: std::collections::BTreeMap<String, (MetricKind, Vec<&Metric>)> = Default::default();
    for m in metrics {
        let family = match &m.scope {
            Scope::Cluster(_) => format!("envoy_cluster_{}", m.family),
            Scope::Http => format!("envoy_http_{}", m.family),
            Scope::ClusterManager => format!("envoy_cluster_manager_{}", m.family),
            Scope::Listener { .. } => format!("envoy_listener_{}", m.family),
        };
        families
            .entry(family)
            .or_insert_with(|| (m.kind, Vec::new()))
            .1
            .push(m);
    }
    let mut out = String::new();
    for (family, (kind, items)) in families {
        let ty = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# TYPE {family} {ty}");
        for m in items {
            match &m.scope {
                Scope::Cluster(c) => {
                    let _ = writeln!(
                        out,
                        "{family}{{envoy_cluster_name=\"{}\"}} {}",
                        escape(c),
                        m.value
                    );
                }
                Scope::Http => {
                    let _ = writeln!(
                        out,
                        "{family}{{envoy_http_conn_manager_prefix=\"http\"}} {}",
                        m.value
                    );
                }
                Scope::ClusterManager => {
                    let _ = writeln!(out, "{family} {}", m.value);
                }
                Scope::Listener { address, tag } => {
                    let tag = tag
                        .map(|(label, value)| format!("{label}=\"{}\",", escape(value)))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{family}{{{tag}envoy_listener_address=\"{}\"}} {}",
                        escape(address),
                        m.value
                    );
                }
            }
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Envoy's `HostHealthStatus` JSON for the flags `/clusters` prints.
fn health_status(flags: &str) -> Value {
    let mut status = serde_json::Map::new();
    if flags.contains("/failed_active_hc") {
        status.insert("failed_active_health_check".into(), true.into());
    }
    if flags.contains("/failed_outlier_check") {
        status.insert("failed_outlier_check".into(), true.into());
    }
    status.insert("eds_health_status".into(), "HEALTHY".into());
    Value::Object(status)
}
