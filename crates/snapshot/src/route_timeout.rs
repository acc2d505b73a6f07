//! A rule's timeouts (Gateway API HTTPRouteRequestTimeout, HTTPRouteBackendTimeout) as the
//! route's Envoy `timeout`.

use std::time::Duration;

use serde_json::{Map, Value};

/// Adds the route action's `timeout` when the rule sets one (`0s`: none at all).
pub(crate) fn render(timeout: Option<Duration>, action: &mut Map<String, Value>) {
    if let Some(t) = timeout {
        action.insert("timeout".into(), crate::format_duration(t).into());
    }
}
