//! HTTPRoute filters: the rules Gateway API's CRD states in CEL, checked on what `kgw apply`
//! admits, so that a rule whose filters cannot mean anything is refused with the field and the fix.

use gateway_api::httproutes::{
    HttpRouteRules, HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersType as FilterType, HttpRouteRulesFiltersUrlRewritePathType as RewritePathType,
    HttpRouteRulesMatchesPathType,
};

use crate::error::FieldError;

/// A header modifier's `set`, `add` (name, value) and `remove` (name) lists; the rule's and
/// the backendRef's modifiers are distinct types with the same fields.
macro_rules! edits {
    ($m:expr) => {
        HeaderEditLists {
            set: $m
                .set
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str()))
                .collect(),
            add: $m
                .add
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str()))
                .collect(),
            remove: $m.remove.iter().flatten().map(String::as_str).collect(),
        }
    };
}

struct HeaderEditLists<'a> {
    set: Vec<(&'a str, &'a str)>,
    add: Vec<(&'a str, &'a str)>,
    remove: Vec<&'a str>,
}

/// Header names a modifier may not touch: the CRD's token pattern (so no `:authority` or other
/// pseudo-header), `host` (Envoy refuses it in header mutations; an added one would send two
/// Host lines), and, set or added, a header that describes one HTTP/1.1 connection (an HTTP/2
/// peer resets a stream whose head carries one; `te: trailers` is the exception).
fn header_edit_errors(at: &str, lists: HeaderEditLists<'_>) -> Vec<FieldError> {
    let mut out = Vec::new();
    let named = |verb: &str, k: usize, name: &str, value: Option<&str>| -> Option<FieldError> {
        let path = match value {
            Some(_) => format!("{at}.{verb}[{k}].name"),
            None => format!("{at}.{verb}[{k}]"),
        };
        if !crate::grpc_route::is_header_name(name) {
            return Some(FieldError::invalid(
                path,
                &name,
                "a header name is a token ('^[A-Za-z0-9!#$%&'*+\\-.^_\\x60|~]+$'), so no pseudo-header \
                 such as :authority or :path: use URLRewrite for the host or the path",
            ));
        }
        let lower = name.to_ascii_lowercase();
        if lower == "host" {
            return Some(FieldError::invalid(
                path,
                &name,
                "the Host header cannot be edited by a header modifier: use a URLRewrite filter's \
                 hostname",
            ));
        }
        let connection_specific = snapshot::CONNECTION_SPECIFIC_HEADERS.contains(&lower.as_str())
            && !(lower == "te" && value.is_some_and(|v| v.trim().eq_ignore_ascii_case("trailers")));
        if value.is_some() && connection_specific {
            return Some(FieldError::invalid(
                path,
                &name,
                "a connection-specific header cannot be set or added (HTTP/2 forbids it, so HTTP/2 \
                 clients and backends would get their streams reset; only `te: trailers` is \
                 allowed): remove this entry",
            ));
        }
        None
    };
    for (k, (name, value)) in lists.set.iter().enumerate() {
        out.extend(named("set", k, name, Some(value)));
    }
    for (k, (name, value)) in lists.add.iter().enumerate() {
        out.extend(named("add", k, name, Some(value)));
    }
    for (k, name) in lists.remove.iter().enumerate() {
        out.extend(named("remove", k, name, None));
    }
    out
}

/// The filter rules of `spec.rules[i]`.
pub(crate) fn validate_rule(i: usize, rule: &HttpRouteRules) -> Vec<FieldError> {
    let mut out = Vec::new();
    let filters = rule.filters.as_deref().unwrap_or_default();
    let at = format!("spec.rules[{i}].filters");
    for (name, t) in [
        ("RequestHeaderModifier", FilterType::RequestHeaderModifier),
        ("ResponseHeaderModifier", FilterType::ResponseHeaderModifier),
        ("RequestRedirect", FilterType::RequestRedirect),
        ("URLRewrite", FilterType::UrlRewrite),
    ] {
        if filters.iter().filter(|f| f.r#type == t).count() > 1 {
            out.push(FieldError::invalid(
                at.clone(),
                &name,
                format!("{name} filter cannot be repeated: merge them into one"),
            ));
        }
    }
    let has = |t: FilterType| filters.iter().any(|f| f.r#type == t);
    if has(FilterType::RequestRedirect) && has(FilterType::UrlRewrite) {
        out.push(FieldError::invalid(
            at.clone(),
            &"RequestRedirect, URLRewrite",
            "may specify either RequestRedirect or URLRewrite, but not both",
        ));
    }
    for (k, f) in filters.iter().enumerate() {
        if let Some(m) = &f.request_header_modifier {
            out.extend(header_edit_errors(
                &format!("{at}[{k}].requestHeaderModifier"),
                edits!(m),
            ));
        }
        if let Some(m) = &f.response_header_modifier {
            out.extend(header_edit_errors(
                &format!("{at}[{k}].responseHeaderModifier"),
                edits!(m),
            ));
        }
    }
    for (b, backend) in rule.backend_refs.iter().flatten().enumerate() {
        for (k, f) in backend.filters.iter().flatten().enumerate() {
            let at = format!("spec.rules[{i}].backendRefs[{b}].filters[{k}]");
            if let Some(m) = &f.request_header_modifier {
                out.extend(header_edit_errors(
                    &format!("{at}.requestHeaderModifier"),
                    edits!(m),
                ));
            }
            if let Some(m) = &f.response_header_modifier {
                out.extend(header_edit_errors(
                    &format!("{at}.responseHeaderModifier"),
                    edits!(m),
                ));
            }
        }
    }
    for (k, f) in filters.iter().enumerate() {
        let (field, set) = match f.r#type {
            FilterType::RequestHeaderModifier => {
                ("requestHeaderModifier", f.request_header_modifier.is_some())
            }
            FilterType::ResponseHeaderModifier => {
                ("responseHeaderModifier", f.response_header_modifier.is_some())
            }
            FilterType::RequestRedirect => ("requestRedirect", f.request_redirect.is_some()),
            FilterType::UrlRewrite => ("urlRewrite", f.url_rewrite.is_some()),
            _ => continue,
        };
        if !set {
            out.push(FieldError::required(
                format!("{at}[{k}].{field}"),
                format!("a filter of this type needs its {field} settings"),
            ));
        }
        let replaces_prefix = match f.r#type {
            FilterType::RequestRedirect => f
                .request_redirect
                .as_ref()
                .and_then(|r| r.path.as_ref())
                .is_some_and(|p| p.r#type == RedirectPathType::ReplacePrefixMatch),
            FilterType::UrlRewrite => f
                .url_rewrite
                .as_ref()
                .and_then(|r| r.path.as_ref())
                .is_some_and(|p| p.r#type == RewritePathType::ReplacePrefixMatch),
            _ => false,
        };
        // No matches at all is the default one, PathPrefix `/`.
        let one_prefix_match = match rule.matches.as_deref() {
            None | Some([]) => true,
            Some([m]) => m
                .path
                .as_ref()
                .is_none_or(|p| matches!(p.r#type, None | Some(HttpRouteRulesMatchesPathType::PathPrefix))),
            Some(_) => false,
        };
        if replaces_prefix && !one_prefix_match {
            out.push(FieldError::invalid(
                format!("{at}[{k}].{field}.path.type"),
                &"ReplacePrefixMatch",
                "ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix: \
                 use ReplaceFullPath, or give the rule one PathPrefix match",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: serde_json::Value) -> HttpRouteRules {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn replace_prefix_match_needs_one_path_prefix_match() {
        let rewrite = serde_json::json!([{"type": "URLRewrite",
            "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/x"}}}]);
        let exact = rule(serde_json::json!({
            "matches": [{"path": {"type": "Exact", "value": "/a"}}], "filters": rewrite}));
        let errors = validate_rule(0, &exact);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "spec.rules[0].filters[0].urlRewrite.path.type");
        assert!(errors[0].detail.contains("exactly one match, of type PathPrefix"));
        let prefix = rule(serde_json::json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/a"}}], "filters": rewrite}));
        assert!(validate_rule(0, &prefix).is_empty());
        assert!(validate_rule(0, &rule(serde_json::json!({"filters": rewrite}))).is_empty());
    }

    #[test]
    fn header_modifiers_cannot_touch_host_pseudo_or_connection_specific_headers() {
        let r = rule(serde_json::json!({
            "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                    "set": [{"name": "X-Ok", "value": "1"}, {"name": "Keep-Alive", "value": "5"}],
                    "add": [{"name": "host", "value": "b"}, {"name": "te", "value": "trailers"}],
                    "remove": [":authority"]}},
                {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                    "add": [{"name": "upgrade", "value": "h2c"}, {"name": "te", "value": "gzip"}]}},
            ],
            "backendRefs": [{"name": "s", "port": 80, "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                    "set": [{"name": "transfer-encoding", "value": "chunked"}],
                    "remove": ["Host", "connection"]}},
            ]}],
        }));
        let errors: Vec<(String, String)> = validate_rule(2, &r)
            .into_iter()
            .map(|e| (e.path, e.detail))
            .collect();
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.rules[2].filters[0].requestHeaderModifier.set[1].name",
                "spec.rules[2].filters[0].requestHeaderModifier.add[0].name",
                "spec.rules[2].filters[0].requestHeaderModifier.remove[0]",
                "spec.rules[2].filters[1].responseHeaderModifier.add[0].name",
                "spec.rules[2].filters[1].responseHeaderModifier.add[1].name",
                "spec.rules[2].backendRefs[0].filters[0].requestHeaderModifier.set[0].name",
                "spec.rules[2].backendRefs[0].filters[0].requestHeaderModifier.remove[0]",
            ],
            "{errors:?}"
        );
        assert!(errors[1].1.contains("URLRewrite filter's hostname"), "{errors:?}");
        assert!(errors[2].1.contains("pseudo-header"), "{errors:?}");
        assert!(errors[0].1.contains("connection-specific"), "{errors:?}");
    }

    #[test]
    fn redirect_and_rewrite_together_or_repeated_are_refused() {
        let both = rule(serde_json::json!({"filters": [
            {"type": "RequestRedirect", "requestRedirect": {"hostname": "a.example"}},
            {"type": "URLRewrite", "urlRewrite": {"hostname": "b.example"}},
            {"type": "URLRewrite", "urlRewrite": {"hostname": "c.example"}},
        ]}));
        let details: Vec<String> = validate_rule(0, &both).into_iter().map(|e| e.detail).collect();
        assert_eq!(details.len(), 2, "{details:?}");
        assert!(
            details
                .iter()
                .any(|d| d.contains("URLRewrite filter cannot be repeated"))
        );
        assert!(details.iter().any(|d| d.contains("not both")));
    }
}
