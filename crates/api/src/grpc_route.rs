//! GRPCRoute (Gateway API v1): the schema and CEL rules of its CRD that the types do not carry.
//! Statuses and translation are translate's (`grpc_routes.rs`); what the data plane does not do
//! yet is refused in `unsupported.rs`.

use gateway_api::grpcroutes::{GrpcRoute, GrpcRouteRulesMatchesMethod, GrpcRouteRulesMatchesMethodType};

use crate::error::FieldError;

/// The CRD's bounds.
const MAX_SERVICE_OR_METHOD: usize = 1024;
const MAX_HEADER_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 4096;

pub fn validate(r: &GrpcRoute) -> Vec<FieldError> {
    let mut errors = Vec::new();
    crate::validate::check_route_attachment(
        r.spec.hostnames.as_deref(),
        r.spec
            .parent_refs
            .iter()
            .flatten()
            .map(|p| p.section_name.as_ref()),
        &mut errors,
    );
    for (i, rule) in r.spec.rules.iter().flatten().enumerate() {
        for (j, m) in rule.matches.iter().flatten().enumerate() {
            let at = format!("spec.rules[{i}].matches[{j}]");
            if let Some(method) = &m.method {
                errors.extend(method_match(&format!("{at}.method"), method));
            }
            let mut names = std::collections::HashSet::new();
            for (k, h) in m.headers.iter().flatten().enumerate() {
                let at = format!("{at}.headers[{k}]");
                if !is_header_name(&h.name) {
                    errors.push(FieldError::invalid(
                        format!("{at}.name"),
                        &h.name,
                        format!(
                            "{at}.name in body should match '^[A-Za-z0-9!#$%&'*+\\-.^_\\x60|~]+$' and be at most \
                             {MAX_HEADER_NAME} characters: write an HTTP header name, e.g. x-tenant"
                        ),
                    ));
                } else if !names.insert(h.name.to_ascii_lowercase()) {
                    errors.push(FieldError::invalid(
                        format!("{at}.name"),
                        &h.name,
                        "Duplicate value: a header is matched once per match (names are case-insensitive); merge \
                         the two entries",
                    ));
                }
                if h.value.is_empty() || h.value.len() > MAX_HEADER_VALUE {
                    errors.push(FieldError::invalid(
                        format!("{at}.value"),
                        &h.value,
                        format!("value must be between 1 and {MAX_HEADER_VALUE} characters"),
                    ));
                }
            }
        }
        for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
            let at = format!("spec.rules[{i}].backendRefs[{j}]");
            if let Some(w) = b.weight
                && !(0..=1_000_000).contains(&w)
            {
                errors.push(FieldError::invalid(
                    format!("{at}.weight"),
                    &w,
                    "weight must be between 0 and 1000000",
                ));
            }
            let is_service = b.group.as_deref().unwrap_or("").is_empty()
                && b.kind.as_deref().unwrap_or("Service") == "Service";
            if is_service && b.port.is_none() {
                errors.push(FieldError::required(
                    format!("{at}.port"),
                    "must be specified when referencing a Service",
                ));
            }
        }
    }
    errors
}

/// GRPCMethodMatch's CEL rules: something to match, and with type Exact, names a gRPC service
/// or method can have.
fn method_match(at: &str, m: &GrpcRouteRulesMatchesMethod) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let exact = !matches!(m.r#type, Some(GrpcRouteRulesMatchesMethodType::RegularExpression));
    if m.service.is_none() && m.method.is_none() {
        errors.push(FieldError::invalid(
            at,
            m,
            "One or both of 'service' or 'method' must be specified, e.g. service: echo.Echo, method: Say \
             (or remove method to match every call)",
        ));
    }
    for (field, value, valid, pattern) in [
        (
            "service",
            &m.service,
            is_grpc_service as fn(&str) -> bool,
            "^(?i)\\.?[a-z_][a-z_0-9]*(\\.[a-z_][a-z_0-9]*)*$",
        ),
        ("method", &m.method, is_grpc_method, "^[A-Za-z_][A-Za-z_0-9]*$"),
    ] {
        let Some(v) = value else { continue };
        if v.len() > MAX_SERVICE_OR_METHOD {
            errors.push(FieldError::invalid(
                format!("{at}.{field}"),
                v,
                format!("may not be longer than {MAX_SERVICE_OR_METHOD}"),
            ));
        } else if exact && !valid(v) {
            errors.push(FieldError::invalid(
                at,
                &serde_json::json!({ field: v }),
                format!(
                    "{field} must only contain valid characters (matching {pattern}): the fully qualified \
                     name as in the .proto, e.g. service: helloworld.Greeter, method: SayHello"
                ),
            ));
        }
    }
    errors
}

fn is_ident(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`.
fn is_grpc_service(s: &str) -> bool {
    s.strip_prefix('.').unwrap_or(s).split('.').all(is_ident)
}

/// `^[A-Za-z_][A-Za-z_0-9]*$`.
fn is_grpc_method(s: &str) -> bool {
    is_ident(s)
}

/// RFC 7230's token, as the CRD's pattern.
pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_HEADER_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    fn errors(spec: &str) -> Vec<String> {
        let doc = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  name: r\n  namespace: default\n\
             spec:\n{}",
            spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
        );
        match crate::parse_manifests(&doc, "test") {
            Ok(objects) => objects
                .iter()
                .flat_map(crate::unsupported)
                .map(|e| e.to_string())
                .collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn a_route_with_service_method_and_header_matches_is_valid() {
        let got = errors(
            "parentRefs: [{name: gw}]\nhostnames: [grpc.example.com]\nrules:\n- matches:\n  - method: {service: \
             helloworld.Greeter, method: SayHello}\n    headers: [{name: x-tenant, value: a}]\n  - method: {service: \
             helloworld.Greeter}\n  - method: {method: SayHello}\n  backendRefs: [{name: greeter, port: 50051, weight: \
             3}]\n",
        );
        assert_eq!(got, Vec::<String>::new());
    }

    #[test]
    fn bad_matches_name_the_field_and_the_fix() {
        let got = errors("rules:\n- matches:\n  - method: {type: Exact}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains(
                "GRPCRoute \"default/r\" is invalid: spec.rules[0].matches[0].method: Invalid value: \
                 {\"type\":\"Exact\"}: One or both of 'service' or 'method' must be specified"
            ),
            "{got:?}"
        );
        let got = errors("rules:\n- matches:\n  - method: {service: hello/world, method: Say}\n");
        assert!(
            got[0].contains("service must only contain valid characters")
                && got[0].contains("helloworld.Greeter"),
            "{got:?}"
        );
        let got = errors("rules:\n- matches:\n  - headers: [{name: \"x tenant\", value: a}]\n");
        assert!(
            got[0].contains("spec.rules[0].matches[0].headers[0].name: Invalid value: \"x tenant\""),
            "{got:?}"
        );
        let got = errors("rules:\n- backendRefs: [{name: greeter}]\n");
        assert!(
            got[0].contains("spec.rules[0].backendRefs[0].port: Required value"),
            "{got:?}"
        );
    }

    #[test]
    fn what_the_data_plane_does_not_do_yet_is_refused() {
        let got = errors(
            "rules:\n- matches:\n  - method: {type: RegularExpression, service: \"hello.*\"}\n    headers: [{type: \
             RegularExpression, name: x-a, value: \"a.*\"}]\n  filters: [{type: RequestHeaderModifier, \
             requestHeaderModifier: {set: [{name: a, value: b}]}}]\n",
        );
        assert_eq!(
            got,
            [
                "spec.rules[0].filters: Forbidden: not supported yet by kgateway-rs: remove the field (the data plane \
                 does not implement it, so it would have no effect)",
                "spec.rules[0].matches[0].method.type: Forbidden: RegularExpression is not supported yet by \
                 kgateway-rs: remove the field (the data plane does not implement it, so it would have no effect); \
                 use Exact",
                "spec.rules[0].matches[0].headers[0].type: Forbidden: RegularExpression is not supported yet by \
                 kgateway-rs: remove the field (the data plane does not implement it, so it would have no effect); \
                 use Exact",
            ]
        );
    }
}
