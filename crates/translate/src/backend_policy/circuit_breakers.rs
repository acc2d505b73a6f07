//! circuitBreakers: the default-priority thresholds.

use api::backend_config_policy::BackendConfigPolicySpec;
use snapshot::CircuitBreakers;

use super::count;

pub(super) fn circuit_breakers(spec: &BackendConfigPolicySpec) -> Option<CircuitBreakers> {
    spec.circuit_breakers.as_ref().map(|c| CircuitBreakers {
        max_connections: count(c.max_connections),
        max_pending_requests: count(c.max_pending_requests),
        max_requests: count(c.max_requests),
        max_retries: count(c.max_retries),
        track_remaining: c.track_remaining == Some(true),
    })
}
