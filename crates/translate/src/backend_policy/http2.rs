//! http2ProtocolOptions -> the Snapshot's `Http2Options`. The options reach every cluster the
//! policy targets; the rendering and the data plane apply them only where the cluster speaks
//! HTTP/2 (`Cluster::protocol`), as kgateway does (its `http2` golden case).

use api::backend_config_policy::{BackendConfigPolicySpec, Http2ConnectionKeepalive, IntOrString};
use snapshot::{Http2Keepalive, Http2Options};

use super::{count, duration};

pub(super) fn http2(spec: &BackendConfigPolicySpec) -> Option<Http2Options> {
    let h = spec.http2_protocol_options.as_ref()?;
    Some(Http2Options {
        initial_stream_window_size: window(h.initial_stream_window_size.as_ref()),
        initial_connection_window_size: window(h.initial_connection_window_size.as_ref()),
        max_concurrent_streams: count(h.max_concurrent_streams),
        override_stream_error_on_invalid_http_message: h.override_stream_error_on_invalid_http_message,
        connection_keepalive: h.connection_keepalive.as_ref().and_then(keepalive),
    })
}

/// A window size in bytes: `64Ki` is 65536, as kgateway reads it (`Quantity.Value()`). The
/// API bounds it to 65535..=2^31-1.
fn window(value: Option<&IntOrString>) -> Option<u32> {
    value
        .and_then(IntOrString::whole_value)
        .and_then(|v| u32::try_from(v).ok())
}

/// Envoy's KeepaliveSettings; the API requires `timeout`.
fn keepalive(k: &Http2ConnectionKeepalive) -> Option<Http2Keepalive> {
    Some(Http2Keepalive {
        interval: duration(k.interval.as_deref()),
        timeout: duration(Some(&k.timeout))?,
        connection_idle_interval: duration(k.connection_idle_interval.as_deref()),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(yaml: &str) -> BackendConfigPolicySpec {
        serde_yaml_ng::from_str(yaml).expect("test spec parses")
    }

    #[test]
    fn quantities_become_bytes_and_keepalive_durations() {
        let got = http2(&spec(
            "targetRefs: []\nhttp2ProtocolOptions:\n  initialStreamWindowSize: 64Ki\n  \
             initialConnectionWindowSize: 1048576\n  maxConcurrentStreams: 100\n  \
             overrideStreamErrorOnInvalidHttpMessage: true\n  connectionKeepalive:\n    interval: 30s\n    \
             timeout: 5s\n    connectionIdleInterval: 1m\n",
        ));
        assert_eq!(
            got,
            Some(Http2Options {
                initial_stream_window_size: Some(65536),
                initial_connection_window_size: Some(1_048_576),
                max_concurrent_streams: Some(100),
                override_stream_error_on_invalid_http_message: Some(true),
                connection_keepalive: Some(Http2Keepalive {
                    interval: Some(Duration::from_secs(30)),
                    timeout: Duration::from_secs(5),
                    connection_idle_interval: Some(Duration::from_secs(60)),
                }),
            })
        );
        assert_eq!(window(Some(&IntOrString::String("1.5k".into()))), Some(1500));
        assert_eq!(http2(&spec("targetRefs: []\n")), None);
    }
}
