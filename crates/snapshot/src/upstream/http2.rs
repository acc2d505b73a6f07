//! HTTP/2 to the endpoints: which clusters speak it, and the options their connections run
//! with (kgateway's `http2ProtocolOptions`, Envoy's `Http2ProtocolOptions`). kgateway applies
//! the options only to a cluster that speaks HTTP/2; on any other they are left out of the
//! dump, as its `http2` golden case shows.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{put, put_duration};

/// The protocol a cluster's requests go upstream in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2: prior knowledge (h2c) on plain connections, ALPN `h2` over TLS. Chosen as
    /// kgateway does, from the Service port's or the Backend's `appProtocol`.
    Http2,
}

/// Envoy's `Http2ProtocolOptions` for upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Http2Options {
    /// Bytes a stream may receive before it is given more (our SETTINGS_INITIAL_WINDOW_SIZE).
    pub initial_stream_window_size: Option<u32>,
    /// The same, for the whole connection.
    pub initial_connection_window_size: Option<u32>,
    /// Streams one connection carries at once (the pool opens another when all are busy).
    pub max_concurrent_streams: Option<u32>,
    /// An invalid message resets its stream only, not the connection.
    pub override_stream_error_on_invalid_http_message: Option<bool>,
    /// PINGs that find a connection whose peer stopped answering.
    pub connection_keepalive: Option<Http2Keepalive>,
}

/// Envoy's `KeepaliveSettings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Http2Keepalive {
    /// A PING this often (None: only before reusing a connection idle for
    /// `connection_idle_interval`).
    pub interval: Option<Duration>,
    /// A PING unanswered this long (no frame at all arrived) closes the connection.
    pub timeout: Duration,
    /// A connection idle this long gets a PING before it is given a new stream.
    pub connection_idle_interval: Option<Duration>,
}

impl Http2Options {
    /// The fields of Envoy's `http2_protocol_options` (inside `explicit_http_config`).
    pub(super) fn render(&self) -> Map<String, Value> {
        let mut m = Map::new();
        put(
            &mut m,
            "initial_connection_window_size",
            self.initial_connection_window_size,
        );
        put(
            &mut m,
            "initial_stream_window_size",
            self.initial_stream_window_size,
        );
        put(&mut m, "max_concurrent_streams", self.max_concurrent_streams);
        put(
            &mut m,
            "override_stream_error_on_invalid_http_message",
            self.override_stream_error_on_invalid_http_message,
        );
        if let Some(k) = &self.connection_keepalive {
            let mut keepalive = Map::new();
            put_duration(&mut keepalive, "interval", k.interval);
            put_duration(&mut keepalive, "timeout", Some(k.timeout));
            put_duration(
                &mut keepalive,
                "connection_idle_interval",
                k.connection_idle_interval,
            );
            m.insert("connection_keepalive".into(), Value::Object(keepalive));
        }
        m
    }
}
