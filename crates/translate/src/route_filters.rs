//! HTTPRoute filters -> `snapshot::RouteFilters`: a rule's filters on each of its routes (one
//! per match: ReplacePrefixMatch replaces that match's prefix), a backendRef's header edits on
//! its weighted cluster. Filters the API refuses (`api::unsupported`) never get here.

use std::sync::Arc;

use api::HttpRoute;
use api::gateway_api::httproutes::{
    HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme as Scheme, HttpRouteRulesFiltersType as FilterType,
    HttpRouteRulesFiltersUrlRewritePathType as RewritePathType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesPathType,
};
use snapshot::{HeaderEdits, Listener, PathRewrite, Redirect, RouteAction, RouteFilters};

use crate::routes::RuleAction;

/// The filters of `rule` for its match `m`, on a listener of `listener_port`.
pub(crate) fn for_match(
    rule: &HttpRouteRules,
    m: &HttpRouteRulesMatches,
    listener_port: u16,
) -> Option<Arc<RouteFilters>> {
    let filters = rule.filters.as_deref().filter(|f| !f.is_empty())?;
    // ReplacePrefixMatch needs the match's PathPrefix (the API refuses it with any other match).
    let matched_prefix = match m.path.as_ref() {
        None => Some("/"),
        Some(p) => match p.r#type {
            None | Some(HttpRouteRulesMatchesPathType::PathPrefix) => Some(p.value.as_deref().unwrap_or("/")),
            _ => None,
        },
    };
    let out = collect(filters, matched_prefix, listener_port);
    (!out.is_empty()).then(|| Arc::new(out))
}

/// Puts each backendRef's filters on its weighted cluster. `rule_actions` lists a rule's
/// backendRefs of weight > 0, in order, as its weighted clusters: the same walk pairs them.
pub(crate) fn with_backend_filters(route: &HttpRoute, mut actions: Vec<RuleAction>) -> Vec<RuleAction> {
    for (rule, action) in route.spec.rules.iter().flatten().zip(actions.iter_mut()) {
        let RouteAction::Forward(targets) = &mut action.action else {
            continue;
        };
        let refs = rule
            .backend_refs
            .iter()
            .flatten()
            .filter(|b| b.weight.unwrap_or(1) > 0);
        for (b, target) in refs.zip(targets.iter_mut()) {
            // The backendRef's filter type is the rule's, field for field.
            let filters: Vec<HttpRouteRulesFilters> = b
                .filters
                .iter()
                .flatten()
                .filter_map(|f| serde_json::to_value(f).ok())
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect();
            let out = collect(&filters, None, 0);
            if !out.is_empty() {
                target.filters = Some(Arc::new(out));
            }
        }
    }
    actions
}

fn collect(
    filters: &[HttpRouteRulesFilters],
    matched_prefix: Option<&str>,
    listener_port: u16,
) -> RouteFilters {
    let mut out = RouteFilters::default();
    for f in filters {
        match f.r#type {
            FilterType::RequestHeaderModifier => {
                if let Some(h) = &f.request_header_modifier {
                    add_edits(
                        &mut out.request_headers,
                        h.set.iter().flatten().map(|x| (&x.name, &x.value)),
                        h.add.iter().flatten().map(|x| (&x.name, &x.value)),
                        h.remove.iter().flatten(),
                    );
                }
            }
            FilterType::ResponseHeaderModifier => {
                if let Some(h) = &f.response_header_modifier {
                    add_edits(
                        &mut out.response_headers,
                        h.set.iter().flatten().map(|x| (&x.name, &x.value)),
                        h.add.iter().flatten().map(|x| (&x.name, &x.value)),
                        h.remove.iter().flatten(),
                    );
                }
            }
            FilterType::RequestRedirect => {
                if let Some(r) = &f.request_redirect {
                    let scheme = r.scheme.as_ref().map(|s| match s {
                        Scheme::Http => "http".to_string(),
                        Scheme::Https => "https".to_string(),
                    });
                    // Gateway API: no port given -> the scheme's well-known port when a scheme
                    // is given, else the listener's (`settle_redirect_ports` leaves out what
                    // the Location need not say).
                    let port = match (r.port, scheme.as_deref()) {
                        (Some(p), _) => u16::try_from(p).ok(),
                        (None, Some("https")) => Some(443),
                        (None, Some(_)) => Some(80),
                        (None, None) => Some(listener_port),
                    };
                    let path = r.path.as_ref().and_then(|p| match p.r#type {
                        RedirectPathType::ReplaceFullPath => {
                            p.replace_full_path.clone().map(PathRewrite::Full)
                        }
                        RedirectPathType::ReplacePrefixMatch => {
                            prefix_rewrite(matched_prefix, &p.replace_prefix_match)
                        }
                    });
                    out.redirect = Some(Redirect {
                        scheme,
                        host: r.hostname.clone(),
                        port,
                        path,
                        status: r.status_code.and_then(|s| u16::try_from(s).ok()).unwrap_or(302),
                    });
                }
            }
            FilterType::UrlRewrite => {
                if let Some(r) = &f.url_rewrite {
                    if let Some(host) = &r.hostname {
                        out.host_rewrite = Some(host.clone());
                    }
                    if let Some(p) = &r.path {
                        out.path_rewrite = match p.r#type {
                            RewritePathType::ReplaceFullPath => {
                                p.replace_full_path.clone().map(PathRewrite::Full)
                            }
                            RewritePathType::ReplacePrefixMatch => {
                                prefix_rewrite(matched_prefix, &p.replace_prefix_match)
                            }
                        };
                    }
                }
            }
            // Refused by `api::unsupported` (or owned by another module).
            _ => {}
        }
    }
    out
}

fn prefix_rewrite(matched_prefix: Option<&str>, with: &Option<String>) -> Option<PathRewrite> {
    Some(PathRewrite::Prefix {
        matched: matched_prefix?.to_string(),
        with: with.clone()?,
    })
}

fn add_edits<'a>(
    edits: &mut HeaderEdits,
    set: impl Iterator<Item = (&'a String, &'a String)>,
    add: impl Iterator<Item = (&'a String, &'a String)>,
    remove: impl Iterator<Item = &'a String>,
) {
    // The API's patterns admit only valid header names and values; anything else is skipped.
    let pair = |(name, value): (&String, &String)| {
        Some((
            http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?,
            http::HeaderValue::from_str(value).ok()?,
        ))
    };
    edits.set.extend(set.filter_map(pair));
    edits.add.extend(add.filter_map(pair));
    edits.remove.extend(
        remove.filter_map(|name| http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()),
    );
}

/// Envoy writes `port_redirect` into the Location even when it is the scheme's default, and
/// with none keeps the port of the request's Host. So a redirect's port is left out only where
/// the Location then says what Gateway API wants: the default port of the Location's scheme,
/// with a hostname given (no request port can show) or the listener's own port and scheme
/// (the request's Host has that port or none). Elsewhere a default port shows as `:80`/`:443`,
/// which Gateway API's conformance takes.
pub(crate) fn settle_redirect_ports(listeners: &mut [Listener]) {
    for l in listeners {
        let listener_scheme = if l.tls.is_some() { "https" } else { "http" };
        for route in l.virtual_hosts.iter_mut().flat_map(|vh| vh.routes.iter_mut()) {
            let Some(filters) = &mut route.filters else {
                continue;
            };
            let Some(redirect) = &filters.redirect else {
                continue;
            };
            let scheme = redirect.scheme.as_deref().unwrap_or(listener_scheme);
            let default_port = if scheme == "https" { 443 } else { 80 };
            let leave_out = redirect.port == Some(default_port)
                && (redirect.host.is_some() || (redirect.scheme.is_none() && default_port == l.port));
            if leave_out && let Some(redirect) = &mut Arc::make_mut(filters).redirect {
                redirect.port = None;
            }
        }
    }
}
