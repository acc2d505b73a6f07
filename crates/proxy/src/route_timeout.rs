//! A route's timeout (HTTPRoute `timeouts`, Envoy's route `timeout`): how long a request may
//! wait for its whole response once it is sent (504 before the head, a cut response after), in
//! place of the proxy's default.

use std::time::Duration;

use snapshot::Route;

/// What "no timeout" (`0s`) waits: long enough never to come, short enough that adding it to
/// an `Instant` cannot overflow. The stream idle timeout still ends a silent upstream.
const NONE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The route's timeout, or `default` when the route sets none.
pub(crate) fn of(route: &Route, default: Duration) -> Duration {
    match route.timeout {
        Some(t) if t.is_zero() => NONE,
        Some(t) => t,
        None => default,
    }
}
