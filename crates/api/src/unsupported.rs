//! The one "not supported yet" gate: input that is valid (the API server would take it) but that
//! the data plane does not implement, refused at apply time so that nothing ever claims an
//! effect that does not happen. One function per kind; [`unsupported`] is the only entry point
//! (the store calls it on what `kgw apply` admits and on what the Kubernetes watch reads).
//!
//! Every refusal is a Forbidden error on the field, saying what to do instead.

use gateway_api::grpcroutes::{GrpcRoute, GrpcRouteRulesMatchesHeadersType, GrpcRouteRulesMatchesMethodType};
use gateway_api::httproutes::{
    HttpRoute, HttpRouteRulesBackendRefsFiltersType, HttpRouteRulesFiltersType,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::Gateway;
use crate::backend_config_policy::BackendConfigPolicySpec;
use crate::error::FieldError;
use crate::objects::Object;

const NOT_YET: &str = "not supported yet by kgateway-rs: remove the field (the data plane does not implement it, \
                       so it would have no effect)";

/// What `object` asks that the data plane cannot do yet, one Forbidden error per field.
pub fn unsupported(object: &Object) -> Vec<FieldError> {
    match object {
        Object::BackendConfigPolicy(p) => backend_config_policy(&p.spec),
        Object::Gateway(g) => gateway(g),
        Object::HTTPRoute(r) => http_route(r),
        Object::GRPCRoute(r) => grpc_route(r),
        Object::EndpointSlice(e) => endpoint_slice(e),
        Object::Backend(b) => backend(&b.spec),
        Object::BackendTLSPolicy(p) => backend_tls_policy(p),
        Object::ListenerPolicy(p) => listener_policy(&p.spec),
        Object::GatewayClass(c) => gateway_class(c),
        Object::Service(_)
        | Object::Secret(_)
        | Object::ConfigMap(_)
        | Object::ReferenceGrant(_)
        | Object::Namespace(_) => Vec::new(),
    }
}

/// A class of ours with parameters (kgateway's GatewayParameters): kgw provisions nothing, so
/// they would have no effect. Other controllers' classes are theirs to judge.
fn gateway_class(class: &crate::GatewayClass) -> Vec<FieldError> {
    if class.spec.controller_name == crate::CONTROLLER_NAME && class.spec.parameters_ref.is_some() {
        vec![FieldError::forbidden("spec.parametersRef", NOT_YET)]
    } else {
        Vec::new()
    }
}

/// The Backend types other than Static.
pub fn backend(spec: &crate::backend::BackendSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (field, set) in [
        ("aws", spec.aws.is_some()),
        ("dynamicForwardProxy", spec.dynamic_forward_proxy.is_some()),
        ("gcp", spec.gcp.is_some()),
    ] {
        if set {
            out.push(FieldError::forbidden(
                format!("spec.{field}"),
                format!(
                    "this Backend type is {NOT_YET}; kgateway-rs serves Backends of type Static (spec.static)"
                ),
            ));
        }
    }
    if let Some(s) = &spec.r#static {
        for (i, h) in s.hosts.iter().enumerate() {
            if h.insecure_skip_verify.is_some() {
                out.push(FieldError::forbidden(
                    format!("spec.static.hosts[{i}].insecureSkipVerify"),
                    format!("{NOT_YET}; use a BackendConfigPolicy with tls.insecureSkipVerify"),
                ));
            }
        }
    }
    out
}

/// ListenerPolicy: `tcpKeepalive` and `perConnectionBufferLimitBytes` are served; targets
/// chosen by labels, and every other listener setting, are not yet.
pub fn listener_policy(spec: &crate::listener_policy::ListenerPolicySpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    if !spec.target_selectors.is_empty() {
        out.push(FieldError::forbidden(
            "spec.targetSelectors",
            format!("{NOT_YET}; name the Gateway in targetRefs"),
        ));
    }
    for (i, r) in spec.target_refs.iter().enumerate() {
        if r.section_name.is_some() {
            out.push(FieldError::forbidden(
                format!("spec.targetRefs[{i}].sectionName"),
                format!("{NOT_YET}; target the whole Gateway and use perPort for one port"),
            ));
        }
    }
    let configs = spec
        .default
        .iter()
        .map(|c| ("spec.default".to_string(), c))
        .chain(
            spec.per_port
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("spec.perPort[{i}].listener"), &p.listener)),
        );
    for (at, c) in configs {
        for (field, set) in [
            ("proxyProtocol", c.proxy_protocol.is_some()),
            ("httpSettings", c.http_settings.is_some()),
            ("rbac", c.rbac.is_some()),
            (
                "clientCertificateValidation",
                c.client_certificate_validation.is_some(),
            ),
        ] {
            if set {
                out.push(FieldError::forbidden(format!("{at}.{field}"), NOT_YET));
            }
        }
    }
    out
}

/// BackendTLSPolicy `options` are implementation-specific settings; none is implemented.
pub fn backend_tls_policy(p: &crate::BackendTlsPolicy) -> Vec<FieldError> {
    let mut out = Vec::new();
    if p.spec.options.as_ref().is_some_and(|o| !o.is_empty()) {
        out.push(FieldError::forbidden(
            "spec.options",
            format!("{NOT_YET}; set TLS parameters with a BackendConfigPolicy's tls.parameters"),
        ));
    }
    for (i, r) in p.spec.target_refs.iter().enumerate() {
        if r.section_name.is_some() {
            out.push(FieldError::forbidden(
                format!("spec.targetRefs[{i}].sectionName"),
                format!(
                    "{NOT_YET}: the policy would reach every port of the target; remove sectionName, or give the \
                     TLS port a Service of its own"
                ),
            ));
        }
    }
    out
}

/// Fields issue 14 makes real, refused until their data-plane module lands (each leaves the
/// list with the commit that makes it work, so the dump never shows a setting nobody applies).
const WITH_THIS_ISSUE: &str = "its data-plane module, issue 14";
const PENDING: &[&str] = &[];

/// NOT_YET, saying which feature will bring the field.
fn not_yet_until(feature: &str) -> String {
    format!(
        "not supported yet by kgateway-rs (it comes with {feature}): remove the field (the data plane does not \
         implement it, so it would have no effect)"
    )
}

/// The spec fields that are valid but that the data plane does not implement yet (none now:
/// `healthCheck.grpc` is probed by the data plane's gRPC health check). `useHostnameForHashing`
/// is accepted: a policy
/// targets Services, whose (EDS) clusters have no hostnames, and kgateway ignores it there
/// too (rendering an empty `consistent_hashing_lb_config`); the Backend kind (issue 15) brings
/// hostnames to hash.
pub fn backend_config_policy(spec: &BackendConfigPolicySpec) -> Vec<FieldError> {
    let set = [
        (
            "circuitBreakers",
            spec.circuit_breakers.is_some(),
            WITH_THIS_ISSUE,
        ),
        (
            "commonHttpProtocolOptions",
            spec.common_http_protocol_options.is_some(),
            WITH_THIS_ISSUE,
        ),
        ("healthCheck", spec.health_check.is_some(), WITH_THIS_ISSUE),
        (
            "http1ProtocolOptions",
            spec.http1_protocol_options.is_some(),
            WITH_THIS_ISSUE,
        ),
        ("loadBalancer", spec.load_balancer.is_some(), WITH_THIS_ISSUE),
        (
            "outlierDetection",
            spec.outlier_detection.is_some(),
            WITH_THIS_ISSUE,
        ),
        (
            "perConnectionBufferLimitBytes",
            spec.per_connection_buffer_limit_bytes.is_some(),
            WITH_THIS_ISSUE,
        ),
        (
            "upstreamProxyProtocol",
            spec.upstream_proxy_protocol.is_some(),
            WITH_THIS_ISSUE,
        ),
    ];
    set.into_iter()
        .filter(|(field, is_set, feature)| {
            *is_set && (*feature != WITH_THIS_ISSUE || PENDING.contains(field))
        })
        .map(|(field, _, feature)| FieldError::forbidden(format!("spec.{field}"), not_yet_until(feature)))
        .collect()
}

pub fn gateway(g: &Gateway) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, l) in g.spec.listeners.iter().enumerate() {
        let https = l.protocol == "HTTPS";
        if l.protocol != "HTTP" && !https {
            out.push(FieldError::forbidden(
                format!("spec.listeners[{i}].protocol"),
                format!("protocol {} is {NOT_YET}; use HTTP or HTTPS", l.protocol),
            ));
        }
        match &l.tls {
            Some(_) if !https => {
                out.push(FieldError::forbidden(
                    format!("spec.listeners[{i}].tls"),
                    "tls is for HTTPS listeners; remove it, or set protocol: HTTPS",
                ));
            }
            Some(tls) => {
                if tls.options.as_ref().is_some_and(|o| !o.is_empty()) {
                    out.push(FieldError::forbidden(
                        format!("spec.listeners[{i}].tls.options"),
                        NOT_YET,
                    ));
                }
                if tls.mode == Some(gateway_api::gateways::GatewayListenersTlsMode::Passthrough) {
                    out.push(FieldError::forbidden(
                        format!("spec.listeners[{i}].tls.mode"),
                        format!("Passthrough is {NOT_YET}; use Terminate"),
                    ));
                }
            }
            None => {}
        }
    }
    // spec.tls.frontend (client certificate validation) is served; a client certificate
    // for backends is not yet.
    if g.spec.tls.as_ref().is_some_and(|t| t.backend.is_some()) {
        out.push(FieldError::forbidden("spec.tls.backend", NOT_YET));
    }
    if g.spec.infrastructure.is_some() {
        out.push(FieldError::forbidden("spec.infrastructure", NOT_YET));
    }
    out
}

pub fn http_route(r: &HttpRoute) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, rule) in r.spec.rules.iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        for (k, f) in rule.filters.iter().flatten().enumerate() {
            if !http_route_filter_served(&f.r#type) {
                out.push(FieldError::forbidden(format!("{at}.filters[{k}].type"), NOT_YET));
            }
        }
        for (j, m) in rule.matches.iter().flatten().enumerate() {
            if matches!(
                m.path.as_ref().and_then(|p| p.r#type.as_ref()),
                Some(HttpRouteRulesMatchesPathType::RegularExpression)
            ) {
                out.push(FieldError::forbidden(
                    format!("{at}.matches[{j}].path.type"),
                    format!("RegularExpression is {NOT_YET}; use Exact or PathPrefix"),
                ));
            }
            for (k, h) in m.headers.iter().flatten().enumerate() {
                if matches!(
                    h.r#type,
                    Some(HttpRouteRulesMatchesHeadersType::RegularExpression)
                ) {
                    out.push(FieldError::forbidden(
                        format!("{at}.matches[{j}].headers[{k}].type"),
                        format!("RegularExpression is {NOT_YET}; use Exact"),
                    ));
                }
            }
            for (k, q) in m.query_params.iter().flatten().enumerate() {
                if matches!(
                    q.r#type,
                    Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression)
                ) {
                    out.push(FieldError::forbidden(
                        format!("{at}.matches[{j}].queryParams[{k}].type"),
                        format!("RegularExpression is {NOT_YET}; use Exact"),
                    ));
                }
            }
        }
        for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
            out.extend(backend_ref(
                &format!("{at}.backendRefs[{j}]"),
                b.filters.iter().flatten().any(|f| {
                    !matches!(
                        f.r#type,
                        HttpRouteRulesBackendRefsFiltersType::RequestHeaderModifier
                            | HttpRouteRulesBackendRefsFiltersType::ResponseHeaderModifier
                    )
                }),
            ));
        }
    }
    out
}

/// The HTTPRoute filter types the data plane applies (`proxy/src/route_filters.rs`); a
/// backendRef's: RequestHeaderModifier and ResponseHeaderModifier.
fn http_route_filter_served(t: &HttpRouteRulesFiltersType) -> bool {
    matches!(
        t,
        HttpRouteRulesFiltersType::RequestHeaderModifier
            | HttpRouteRulesFiltersType::ResponseHeaderModifier
            | HttpRouteRulesFiltersType::RequestRedirect
            | HttpRouteRulesFiltersType::UrlRewrite
            | HttpRouteRulesFiltersType::RequestMirror
            | HttpRouteRulesFiltersType::Cors
    )
}

/// GRPCRoute: as HTTPRoute, Exact matches only and no filters.
pub fn grpc_route(r: &GrpcRoute) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, rule) in r.spec.rules.iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        if rule.filters.as_ref().is_some_and(|f| !f.is_empty()) {
            out.push(FieldError::forbidden(format!("{at}.filters"), NOT_YET));
        }
        for (j, m) in rule.matches.iter().flatten().enumerate() {
            if matches!(
                m.method.as_ref().and_then(|x| x.r#type.as_ref()),
                Some(GrpcRouteRulesMatchesMethodType::RegularExpression)
            ) {
                out.push(FieldError::forbidden(
                    format!("{at}.matches[{j}].method.type"),
                    format!("RegularExpression is {NOT_YET}; use Exact"),
                ));
            }
            for (k, h) in m.headers.iter().flatten().enumerate() {
                if matches!(
                    h.r#type,
                    Some(GrpcRouteRulesMatchesHeadersType::RegularExpression)
                ) {
                    out.push(FieldError::forbidden(
                        format!("{at}.matches[{j}].headers[{k}].type"),
                        format!("RegularExpression is {NOT_YET}; use Exact"),
                    ));
                }
            }
        }
        for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
            out.extend(backend_ref(
                &format!("{at}.backendRefs[{j}]"),
                b.filters.as_ref().is_some_and(|f| !f.is_empty()),
            ));
        }
    }
    out
}

/// A route's backendRef: refused when it has a filter kgw does not apply there
/// (`unserved_filters`; HTTPRoute's header modifiers are applied). Any kind is taken: one kgw does not serve (neither a
/// Service nor a Backend) is what Gateway API specifies for it, the route's ResolvedRefs=False
/// InvalidKind and a 500 for the rule's share of the traffic.
fn backend_ref(at: &str, unserved_filters: bool) -> Vec<FieldError> {
    let mut out = Vec::new();
    if unserved_filters {
        out.push(FieldError::forbidden(format!("{at}.filters"), NOT_YET));
    }
    out
}

pub fn endpoint_slice(e: &EndpointSlice) -> Vec<FieldError> {
    let mut out = Vec::new();
    if e.address_type == "FQDN" {
        out.push(FieldError::forbidden(
            "addressType",
            format!("FQDN is {NOT_YET}; use IPv4 or IPv6"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(yaml: &str) -> Vec<String> {
        let objects = crate::parse_manifests(yaml, "test").expect("test manifest parses");
        assert_eq!(objects.len(), 1, "one object per test manifest");
        unsupported(&objects[0]).iter().map(ToString::to_string).collect()
    }

    fn policy(spec: &str) -> String {
        format!(
            "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: p\n  \
             namespace: default\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: httpbin\n{}",
            spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
        )
    }

    #[test]
    fn backend_config_policy_refuses_only_what_later_issues_bring() {
        let every_field_of_this_issue = "connectTimeout: 5s\ntcpKeepalive: {}\nperConnectionBufferLimitBytes: 1024\n\
            commonHttpProtocolOptions:\n  idleTimeout: 10s\n  maxRequestsPerConnection: 5\n\
            http1ProtocolOptions:\n  enableTrailers: true\n\
            loadBalancer:\n  ringHash:\n    useHostnameForHashing: false\n    hashPolicies:\n    - header: {name: x}\n\
            healthCheck:\n  http: {path: /health}\n  interval: 1s\n  timeout: 1s\n  healthyThreshold: 1\n  \
            unhealthyThreshold: 1\n\
            outlierDetection:\n  consecutive5xx: 3\n\
            circuitBreakers:\n  maxConnections: 1\n\
            upstreamProxyProtocol:\n  version: V2";
        let pending: Vec<String> = PENDING
            .iter()
            .map(|f| format!("spec.{f}: Forbidden: {}", not_yet_until(WITH_THIS_ISSUE)))
            .collect();
        assert_eq!(messages(&policy(every_field_of_this_issue)), pending);

        let later_issues = |mut got: Vec<String>| {
            got.retain(|m| !m.contains(WITH_THIS_ISSUE));
            got
        };
        let got = later_issues(messages(&policy(
            "dns:\n  refreshRate: 1s\ntls:\n  insecureSkipVerify: true\n\
             http2ProtocolOptions:\n  maxConcurrentStreams: 10\n  connectionKeepalive: {interval: 10s, timeout: 5s}\n\
             healthCheck:\n  grpc: {}\n  interval: 1s\n  timeout: 1s\n  healthyThreshold: 1\n  unhealthyThreshold: 1\n\
             loadBalancer:\n  maglev:\n    useHostnameForHashing: true\n    hashPolicies:\n    - sourceIP: {}",
        )));
        assert_eq!(got, Vec::<String>::new(), "healthCheck.grpc is served");
        // kgateway ignores it on a Service's cluster, and so do we.
        let got = later_issues(messages(&policy(
            "loadBalancer:\n  ringHash:\n    useHostnameForHashing: true",
        )));
        assert_eq!(got, Vec::<String>::new());
    }

    #[test]
    fn other_kinds_name_the_field_and_the_fix() {
        let got = messages(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: default\n\
             spec:\n  gatewayClassName: kgateway\n  listeners:\n  - name: tcp\n    port: 80\n    protocol: TCP\n",
        );
        assert_eq!(
            got,
            [format!(
                "spec.listeners[0].protocol: Forbidden: protocol TCP is {NOT_YET}; use HTTP or HTTPS"
            )]
        );
        let got = messages(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\n  namespace: default\n\
             addressType: FQDN\nendpoints: []\n",
        );
        assert_eq!(
            got,
            [format!(
                "addressType: Forbidden: FQDN is {NOT_YET}; use IPv4 or IPv6"
            )]
        );
    }

    #[test]
    fn exact_query_param_matches_are_served_regular_expressions_are_not() {
        let route = |q: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  namespace: default\n\
                 spec:\n  rules:\n  - name: named\n    matches:\n    - queryParams:\n      - {q}\n"
            )
        };
        assert_eq!(
            messages(&route("{name: animal, value: whale}")),
            Vec::<String>::new()
        );
        assert_eq!(
            messages(&route("{type: Exact, name: animal, value: whale}")),
            Vec::<String>::new()
        );
        assert_eq!(
            messages(&route("{type: RegularExpression, name: animal, value: wh.*}")),
            [format!(
                "spec.rules[0].matches[0].queryParams[0].type: Forbidden: RegularExpression is {NOT_YET}; use Exact"
            )]
        );
    }

    #[test]
    fn dns_settings_are_served_respect_ttl_included() {
        assert_eq!(
            messages(&policy("dns:\n  refreshRate: 1s\n  jitter: 100ms")),
            Vec::<String>::new()
        );
        // kgateway's `dns` case: the data plane asks the name servers for the TTL.
        assert_eq!(
            messages(&policy("dns:\n  respectTTL: true\n  refreshRate: 1h")),
            Vec::<String>::new()
        );
        assert_eq!(
            messages(&policy("dns:\n  respectTTL: false")),
            Vec::<String>::new()
        );
    }
}
