//! HTTPRoute query parameter matches -> the route's exact query parameter matches.

use api::gateway_api::httproutes::HttpRouteRulesMatches;
use snapshot::QueryParamMatch;

/// The match's query parameters; of entries with the same name only the first counts (Gateway
/// API: later ones MUST be ignored). RegularExpression is refused at apply time
/// (`api::unsupported`), so every one left is Exact.
pub(crate) fn query_params(m: &HttpRouteRulesMatches) -> Vec<QueryParamMatch> {
    let mut out: Vec<QueryParamMatch> = Vec::new();
    for q in m.query_params.iter().flatten() {
        if out.iter().all(|seen| seen.name != q.name) {
            out.push(QueryParamMatch {
                name: q.name.clone(),
                value: q.value.clone(),
            });
        }
    }
    out
}
