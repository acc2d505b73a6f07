//! connectTimeout, perConnectionBufferLimitBytes, tcpKeepalive.

use api::backend_config_policy::BackendConfigPolicySpec;
use snapshot::TcpKeepalive;

use super::{count, duration};

pub(super) fn connect_timeout(spec: &BackendConfigPolicySpec) -> Option<std::time::Duration> {
    duration(spec.connect_timeout.as_deref())
}

pub(super) fn buffer_limit(spec: &BackendConfigPolicySpec) -> Option<u32> {
    count(spec.per_connection_buffer_limit_bytes)
}

pub(super) fn tcp_keepalive(spec: &BackendConfigPolicySpec) -> Option<TcpKeepalive> {
    spec.tcp_keepalive.as_ref().map(keepalive)
}

/// The API's tcpKeepalive (upstream here; downstream in a ListenerPolicy) in the Snapshot's units.
pub(crate) fn keepalive(k: &api::backend_config_policy::TcpKeepalive) -> TcpKeepalive {
    TcpKeepalive {
        probes: count(k.keep_alive_probes),
        time: k.keep_alive_time.as_deref().and_then(whole_seconds),
        interval: k.keep_alive_interval.as_deref().and_then(whole_seconds),
    }
}

/// Durations become whole seconds, fraction dropped, as kgateway does (`1m30s` -> 90).
fn whole_seconds(text: &str) -> Option<u32> {
    let nanos = api::duration::parse_go_duration(text)?;
    u32::try_from(nanos / 1_000_000_000).ok()
}
