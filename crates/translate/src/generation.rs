//! `observedGeneration`: every condition kgw writes says which `metadata.generation` of its
//! object it was computed from, so a client that changed the spec can wait for the answer to
//! its change (Gateway API's conformance tests do: *ObservedGenerationBump).

use serde_json::Value;

use crate::{Resources, Statuses};

/// Sets `observedGeneration` on every condition of every status, to the generation of the
/// object the status belongs to (objects without one, e.g. from a golden file, get none).
pub(crate) fn stamp_all(resources: &Resources, statuses: &mut Statuses) {
    for (key, status) in statuses.iter_mut() {
        if let Some(generation) = resources.get(key).and_then(|o| o.meta().generation) {
            stamp(status, generation);
        }
    }
}

/// Sets `observedGeneration` on every condition found in `status`, at any depth (a Gateway's
/// and its listeners', a route's parents', a policy's ancestors').
pub(crate) fn stamp(status: &mut Value, generation: i64) {
    match status {
        Value::Object(map) => {
            for (field, value) in map.iter_mut() {
                match (field.as_str(), value) {
                    ("conditions", Value::Array(conditions)) => {
                        for condition in conditions.iter_mut() {
                            if let Value::Object(c) = condition {
                                c.insert("observedGeneration".into(), generation.into());
                            }
                        }
                    }
                    (_, value) => stamp(value, generation),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| stamp(v, generation)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn every_condition_at_any_depth() {
        let mut status = json!({
            "conditions": [{"type": "Accepted"}],
            "listeners": [{"name": "http", "conditions": [{"type": "Programmed"}]}],
            "parents": [{"conditions": [{"type": "ResolvedRefs"}]}],
        });
        super::stamp(&mut status, 4);
        assert_eq!(status["conditions"][0]["observedGeneration"], 4);
        assert_eq!(status["listeners"][0]["conditions"][0]["observedGeneration"], 4);
        assert_eq!(status["parents"][0]["conditions"][0]["observedGeneration"], 4);
        assert_eq!(status["listeners"][0].get("observedGeneration"), None);
    }
}
