//! HTTPRoute CORS filter -> the route's CorsPolicy (the first CORS filter of the rule; the API
//! admits one).

use std::sync::Arc;

use api::gateway_api::httproutes::{HttpRouteRules, HttpRouteRulesFiltersType};
use snapshot::CorsPolicy;

pub(crate) fn cors(rule: &HttpRouteRules) -> Option<Arc<CorsPolicy>> {
    let c = rule
        .filters
        .iter()
        .flatten()
        .filter(|f| f.r#type == HttpRouteRulesFiltersType::Cors)
        .find_map(|f| f.cors.as_ref())?;
    Some(Arc::new(CorsPolicy {
        allow_origins: c.allow_origins.clone().unwrap_or_default(),
        allow_methods: c.allow_methods.clone().unwrap_or_default(),
        allow_headers: c.allow_headers.clone().unwrap_or_default(),
        expose_headers: c.expose_headers.clone().unwrap_or_default(),
        max_age: c.max_age.and_then(|a| u32::try_from(a).ok()),
        allow_credentials: c.allow_credentials.unwrap_or(false),
    }))
}
