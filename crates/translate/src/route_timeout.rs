//! HTTPRoute rule `timeouts` -> the route's timeout, chosen as kgateway does for a rule without
//! retries: `backendRequest` when set (the one attempt is the whole request, and it is the
//! shorter: the API requires backendRequest <= request), else `request`. `0s` turns the
//! timeout off (Envoy's `timeout: 0s`).

use std::time::Duration;

use api::gateway_api::httproutes::HttpRouteRules;

pub(crate) fn timeout(rule: &HttpRouteRules) -> Option<Duration> {
    let timeouts = rule.timeouts.as_ref()?;
    let chosen = timeouts.backend_request.as_ref().or(timeouts.request.as_ref())?;
    // The API server admits only the Gateway API duration pattern (`500ms`, `1h30m`).
    let nanos = api::duration::parse_go_duration(chosen)?;
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}
