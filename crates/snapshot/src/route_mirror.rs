//! A rule's RequestMirror filters (Gateway API HTTPRouteRequestMirror, ...MultipleMirrors,
//! ...PercentageMirror), rendered as Envoy's `request_mirror_policies`.

use serde_json::{Map, Value, json};

/// One mirror: a copy of each request (or of a share of them) goes to `cluster`, its answer
/// thrown away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMirror {
    pub cluster: String,
    /// Index into `Snapshot::clusters`.
    pub index: usize,
    /// The share of requests mirrored; None: every one.
    pub share: Option<MirrorShare>,
}

/// A share of requests: `numerator` out of 100 (a `percent`) or out of 1,000,000 (a
/// `fraction`, scaled), as Envoy's FractionalPercent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorShare {
    pub numerator: u32,
    pub per_million: bool,
}

impl MirrorShare {
    /// The share in millionths.
    pub fn per_million(self) -> u32 {
        if self.per_million {
            self.numerator
        } else {
            self.numerator.saturating_mul(10_000)
        }
    }
}

/// Adds `request_mirror_policies` to a route action when the route mirrors.
pub(crate) fn render(mirrors: &[RequestMirror], action: &mut Map<String, Value>) {
    if mirrors.is_empty() {
        return;
    }
    let list: Vec<Value> = mirrors
        .iter()
        .map(|m| {
            let mut policy = Map::new();
            policy.insert("cluster".into(), m.cluster.clone().into());
            if let Some(share) = m.share {
                let denominator = if share.per_million { "MILLION" } else { "HUNDRED" };
                policy.insert(
                    "runtime_fraction".into(),
                    json!({"default_value": {"numerator": share.numerator, "denominator": denominator}}),
                );
            }
            Value::Object(policy)
        })
        .collect();
    action.insert("request_mirror_policies".into(), Value::Array(list));
}
