//! CORS (HTTPRoute CORS filter), as Envoy's CORS filter answers for a route's CorsPolicy with
//! `forward_not_matching_preflights: false`: every preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) is answered here, 200 without a body, with the CORS headers
//! only when its origin is allowed (Gateway API's conformance test wants a refused preflight
//! kept from the backend); an actual request from an allowed origin gets
//! `Access-Control-Allow-Origin` (and the credentials and exposed headers) on its response, one
//! from another origin goes on without them (the browser then refuses the answer).

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use snapshot::{CorsPolicy, Route, RouteFilters};

use crate::local_reply::LocalReply;
use crate::router::RequestView;

/// The request's Origin when the route has a policy that allows it.
fn allowed<'a>(route: &'a Route, view: &'a RequestView<'_>) -> Option<(&'a CorsPolicy, &'a str)> {
    let cors = route.cors.as_deref()?;
    let origin = std::str::from_utf8((view.header)("origin")?).ok()?;
    cors.allows_origin(origin).then_some((cors, origin))
}

/// The answer to a preflight the route's policy allows.
pub(crate) fn preflight(route: &Route, view: &RequestView<'_>) -> Option<LocalReply> {
    if view.method != "OPTIONS" {
        return None;
    }
    let requested_method = (view.header)("access-control-request-method")?;
    route.cors.as_ref()?;
    (view.header)("origin")?;
    let Some((cors, origin)) = allowed(route, view) else {
        return Some(LocalReply::direct(200, ""));
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut headers = vec![("access-control-allow-origin".to_string(), origin.to_string())];
    // `*` allows whatever is asked (a credentialed request may not be answered `*`).
    let methods = if cors.allow_methods.iter().any(|m| m == "*") {
        text(requested_method)
    } else {
        cors.allow_methods.join(", ")
    };
    if !methods.is_empty() {
        headers.push(("access-control-allow-methods".into(), methods));
    }
    let requested_headers = (view.header)("access-control-request-headers").map(text);
    let allow_headers = if cors.allow_headers.iter().any(|h| h == "*") {
        requested_headers.unwrap_or_default()
    } else {
        cors.allow_headers.join(", ")
    };
    if !allow_headers.is_empty() {
        headers.push(("access-control-allow-headers".into(), allow_headers));
    }
    if !cors.expose_headers.is_empty() {
        headers.push((
            "access-control-expose-headers".into(),
            cors.expose_headers.join(", "),
        ));
    }
    if let Some(age) = cors.max_age {
        headers.push(("access-control-max-age".into(), age.to_string()));
    }
    if cors.allow_credentials {
        headers.push(("access-control-allow-credentials".into(), "true".into()));
    }
    Some(LocalReply {
        headers,
        ..LocalReply::direct(200, "")
    })
}

/// The CORS headers an actual request's response gets, as header edits, when its origin is
/// allowed.
pub(crate) fn response_headers(route: &Route, view: &RequestView<'_>) -> Option<Arc<RouteFilters>> {
    let (cors, origin) = allowed(route, view)?;
    let mut set = vec![(
        HeaderName::from_static("access-control-allow-origin"),
        HeaderValue::from_str(origin).ok()?,
    )];
    if cors.allow_credentials {
        set.push((
            HeaderName::from_static("access-control-allow-credentials"),
            HeaderValue::from_static("true"),
        ));
    }
    if !cors.expose_headers.is_empty() {
        set.push((
            HeaderName::from_static("access-control-expose-headers"),
            HeaderValue::from_str(&cors.expose_headers.join(", ")).ok()?,
        ));
    }
    let mut filters = RouteFilters::default();
    filters.response_headers.set = set;
    Some(Arc::new(filters))
}
