//! Connection settings: connect timeout, TCP keepalive, the per-connection buffer limit.

use serde_json::{Map, Value, json};

use super::{UpstreamPolicy, put};

/// TCP keepalive for every upstream socket of a cluster. `None` fields keep the kernel default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    /// Seconds idle before the first probe (TCP_KEEPIDLE).
    pub time: Option<u32>,
    /// Seconds between probes (TCP_KEEPINTVL).
    pub interval: Option<u32>,
}

pub(super) fn render(p: &UpstreamPolicy, cluster: &mut Map<String, Value>) {
    cluster.insert(
        "connect_timeout".into(),
        crate::format_duration(p.connect_timeout()).into(),
    );
    put(
        cluster,
        "per_connection_buffer_limit_bytes",
        p.per_connection_buffer_limit_bytes,
    );
    if let Some(k) = &p.tcp_keepalive {
        let mut ka = Map::new();
        put(&mut ka, "keepalive_probes", k.probes);
        put(&mut ka, "keepalive_time", k.time);
        put(&mut ka, "keepalive_interval", k.interval);
        cluster.insert("upstream_connection_options".into(), json!({"tcp_keepalive": ka}));
    }
}
