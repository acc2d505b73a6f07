//! HTTPRoute filters: the rules Gateway API's CRD states in CEL, checked on what `kgw apply`
//! admits, so that a rule whose filters cannot mean anything is refused with the field and the fix.

use gateway_api::httproutes::{
    HttpRouteRules, HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersType as FilterType, HttpRouteRulesFiltersUrlRewritePathType as RewritePathType,
    HttpRouteRulesMatchesPathType,
};

use crate::error::FieldError;

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
