//! A route's query parameter matches (Gateway API HTTPRouteQueryParamMatching), rendered as
//! Envoy's `match.query_parameters`.

use serde_json::{Map, Value, json};

/// One exact query parameter match: the name is case-sensitive, the value compared after
/// percent-decoding (as Envoy decodes the query before matching).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParamMatch {
    pub name: String,
    pub value: String,
}

/// Adds `query_parameters` to a route's `match` when it has any.
pub(crate) fn render(params: &[QueryParamMatch], route_match: &mut Map<String, Value>) {
    if params.is_empty() {
        return;
    }
    let list: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p.name, "string_match": {"exact": p.value}}))
        .collect();
    route_match.insert("query_parameters".into(), Value::Array(list));
}
