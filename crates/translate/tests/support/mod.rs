//! Helpers shared by the translate tests.

use serde_json::Value;

/// Drops every condition's `lastTransitionTime`: it is the clock's, not the translation's
/// (upstream's expected outputs write `null`, "not compared").
pub fn without_transition_times(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| k != "lastTransitionTime")
                .map(|(k, v)| (k, without_transition_times(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_transition_times).collect()),
        other => other,
    }
}
