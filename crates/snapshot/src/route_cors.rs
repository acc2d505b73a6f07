//! A rule's CORS filter (Gateway API HTTPRouteCORS), rendered as kgateway renders it: the
//! route's `typed_per_filter_config` for `envoy.filters.http.cors` (a CorsPolicy), and the
//! CORS HTTP filter, before the router, in the connection manager of a listener with such a
//! route.

use serde_json::{Map, Value, json};

use crate::Listener;

pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// The CORS answer of a route: origins as written (`*`, an exact origin, or one with `*` for
/// any labels of its host), `*` in methods or headers for any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CorsPolicy {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    /// Seconds a preflight's answer may be cached.
    pub max_age: Option<u32>,
    pub allow_credentials: bool,
}

impl CorsPolicy {
    /// Whether `origin` (as the request's Origin header says it) is allowed.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .any(|allowed| origin_matches(allowed, origin))
    }
}

/// `*` matches any origin; `https://*.bar.com` any origin of that scheme whose host ends with
/// `.bar.com` (one label or more); anything else only itself (without regard to case).
fn origin_matches(allowed: &str, origin: &str) -> bool {
    if allowed == "*" {
        return true;
    }
    match allowed.split_once('*') {
        None => allowed.eq_ignore_ascii_case(origin),
        Some((before, after)) => {
            origin.len() > before.len() + after.len()
                && origin[..before.len()].eq_ignore_ascii_case(before)
                && origin.is_char_boundary(origin.len() - after.len())
                && origin[origin.len() - after.len()..].eq_ignore_ascii_case(after)
        }
    }
}

/// Adds the route's CorsPolicy to its `typed_per_filter_config`.
pub(crate) fn render(cors: Option<&CorsPolicy>, route: &mut Map<String, Value>) {
    let Some(c) = cors else { return };
    let origins: Vec<Value> = c
        .allow_origins
        .iter()
        .map(|o| match o.split_once('*') {
            None => json!({"exact": o}),
            Some((before, after)) => {
                json!({"safe_regex": {"regex": format!("{}[^/]+{}", regex_literal(before), regex_literal(after))}})
            }
        })
        .collect();
    let mut policy = Map::new();
    policy.insert(
        "@type".into(),
        "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy".into(),
    );
    policy.insert("allow_origin_string_match".into(), Value::Array(origins));
    for (field, list) in [
        ("allow_methods", &c.allow_methods),
        ("allow_headers", &c.allow_headers),
        ("expose_headers", &c.expose_headers),
    ] {
        if !list.is_empty() {
            policy.insert(field.into(), list.join(",").into());
        }
    }
    if let Some(age) = c.max_age {
        policy.insert("max_age".into(), age.to_string().into());
    }
    if c.allow_credentials {
        policy.insert("allow_credentials".into(), true.into());
    }
    // A preflight from an origin not allowed is answered by the gateway, not the backend.
    policy.insert("forward_not_matching_preflights".into(), false.into());
    route.insert("typed_per_filter_config".into(), json!({ CORS_FILTER: policy }));
}

fn regex_literal(s: &str) -> String {
    s.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '/' || ch == ':' {
                ch.to_string()
            } else {
                format!("\\{ch}")
            }
        })
        .collect()
}

/// The connection manager's HTTP filters: CORS first when a route of `l` has a CORS policy.
pub(crate) fn http_filters(l: &Listener, router: Value) -> Value {
    let any = l
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .any(|r| r.cors.is_some());
    let mut filters = Vec::new();
    if any {
        filters.push(json!({"name": CORS_FILTER, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}));
    }
    filters.push(router);
    Value::Array(filters)
}

#[cfg(test)]
mod tests {
    use super::origin_matches;

    #[test]
    fn origins_match_exactly_or_by_wildcard_labels() {
        assert!(origin_matches("https://www.foo.com", "https://www.foo.com"));
        assert!(!origin_matches("https://www.foo.com", "https://foobar.com"));
        assert!(origin_matches("https://*.bar.com", "https://www.bar.com"));
        assert!(origin_matches("https://*.bar.com", "https://xpto.www.bar.com"));
        assert!(!origin_matches("https://*.bar.com", "https://bar.com"));
        assert!(!origin_matches("https://*.bar.com", "http://www.bar.com"));
        assert!(origin_matches("*", "https://foobar.com:12345"));
    }
}
