//! Circuit breakers: the default-priority thresholds of a cluster.

use serde_json::{Map, Value, json};

use super::put;

/// Envoy's `circuit_breakers.thresholds[0]` (priority DEFAULT). None: Envoy's default (1024 for
/// connections, pending and requests, 3 for retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CircuitBreakers {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
    /// Publish `circuit_breakers.default.remaining_*` gauges.
    pub track_remaining: bool,
}

impl CircuitBreakers {
    pub const DEFAULT_LIMIT: u32 = 1024;
    pub const DEFAULT_RETRIES: u32 = 3;

    pub fn max_connections(&self) -> u32 {
        self.max_connections.unwrap_or(Self::DEFAULT_LIMIT)
    }
    pub fn max_pending_requests(&self) -> u32 {
        self.max_pending_requests.unwrap_or(Self::DEFAULT_LIMIT)
    }
    pub fn max_requests(&self) -> u32 {
        self.max_requests.unwrap_or(Self::DEFAULT_LIMIT)
    }
    pub fn max_retries(&self) -> u32 {
        self.max_retries.unwrap_or(Self::DEFAULT_RETRIES)
    }
}

pub(super) fn render(c: &CircuitBreakers, cluster: &mut Map<String, Value>) {
    let mut t = Map::new();
    put(&mut t, "max_connections", c.max_connections);
    put(&mut t, "max_pending_requests", c.max_pending_requests);
    put(&mut t, "max_requests", c.max_requests);
    put(&mut t, "max_retries", c.max_retries);
    if c.track_remaining {
        t.insert("track_remaining".into(), true.into());
    }
    cluster.insert("circuit_breakers".into(), json!({"thresholds": [t]}));
}
