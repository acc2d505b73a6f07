//! Validation of the kinds that come from the ecosystem crates. BackendConfigPolicy's own checks
//! live beside its types; what the data plane does not implement yet is in `unsupported.rs`.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::backend_config_policy;
use crate::error::FieldError;
use crate::objects::Object;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What the API server would refuse: schema and semantic checks.
pub fn validate(object: &Object) -> Vec<FieldError> {
    let mut errors = validate_meta(object);
    match object {
        Object::BackendConfigPolicy(p) => errors.extend(backend_config_policy::validate(p)),
        Object::Backend(b) => errors.extend(crate::backend::validate(b)),
        Object::ListenerPolicy(p) => errors.extend(crate::listener_policy::validate(p)),
        Object::Secret(s) => errors.extend(secret(s)),
        Object::ConfigMap(c) => {
            if let Some(ca) = c.data.as_ref().and_then(|d| d.get(CA_CRT)) {
                errors.extend(ca_bundle("data[ca.crt]", ca.as_bytes()));
            }
        }
        Object::ReferenceGrant(g) => {
            if g.spec.from.is_empty() {
                errors.push(FieldError::required(
                    "spec.from",
                    "list at least one kind and namespace to grant",
                ));
            }
            if g.spec.to.is_empty() {
                errors.push(FieldError::required(
                    "spec.to",
                    "list at least one kind that may be referred to",
                ));
            }
        }
        Object::BackendTLSPolicy(p) => errors.extend(backend_tls_policy(p)),
        Object::GatewayClass(c) => {
            // The CRD's pattern: a domain-prefixed path, e.g. kgateway.dev/kgateway.
            if !c
                .spec
                .controller_name
                .split_once('/')
                .is_some_and(|(domain, path)| is_dns_subdomain(domain) && !path.is_empty())
            {
                errors.push(FieldError::invalid(
                    "spec.controllerName",
                    &c.spec.controller_name,
                    "a domain-prefixed path is required, e.g. kgateway.dev/kgateway (kgw serves the classes \
                     of that controller)",
                ));
            }
        }
        Object::Namespace(n) => {
            let name = n.metadata.name.as_deref().unwrap_or_default();
            if !name.is_empty() && (name.len() > 63 || name.contains('.')) {
                errors.push(FieldError::invalid(
                    "metadata.name",
                    &name,
                    "a Namespace's name is a DNS-1123 label: at most 63 lower case alphanumeric \
                     characters or '-', without dots; rename the Namespace",
                ));
            }
        }
        Object::Gateway(g) => {
            if g.spec.gateway_class_name.is_empty() {
                errors.push(FieldError::required(
                    "spec.gatewayClassName",
                    "set the GatewayClass, e.g. kgateway",
                ));
            }
            if g.spec.listeners.is_empty() || g.spec.listeners.len() > 64 {
                errors.push(FieldError::invalid(
                    "spec.listeners",
                    &g.spec.listeners.len(),
                    "a Gateway needs between 1 and 64 listeners",
                ));
            }
            let mut names = HashSet::new();
            for (i, l) in g.spec.listeners.iter().enumerate() {
                let at = format!("spec.listeners[{i}]");
                if !is_section_name(&l.name) {
                    errors.push(FieldError::invalid(
                        format!("{at}.name"),
                        &l.name,
                        section_name_rule(&format!("{at}.name")),
                    ));
                }
                if let Some(h) = &l.hostname
                    && !is_gateway_hostname(h)
                {
                    errors.push(FieldError::invalid(
                        format!("{at}.hostname"),
                        h,
                        hostname_rule(&format!("{at}.hostname")),
                    ));
                }
                if !names.insert(l.name.as_str()) {
                    errors.push(FieldError::invalid(
                        format!("{at}.name"),
                        &l.name,
                        "listener names must be unique within a Gateway",
                    ));
                }
                if !(1..=65535).contains(&l.port) {
                    errors.push(FieldError::invalid(
                        format!("{at}.port"),
                        &l.port,
                        "port must be between 1 and 65535",
                    ));
                }
                if !["HTTP", "HTTPS", "TLS", "TCP", "UDP"].contains(&l.protocol.as_str())
                    && !l.protocol.contains('/')
                {
                    errors.push(FieldError::unsupported(
                        format!("{at}.protocol"),
                        &l.protocol,
                        &["HTTP", "HTTPS", "TLS", "TCP", "UDP"],
                    ));
                }
            }
            for (i, a) in g.spec.addresses.iter().flatten().enumerate() {
                let ty = a.r#type.as_deref().unwrap_or("IPAddress");
                // Without a value, the implementation picks the address (GatewayAddressEmpty).
                if ty == "IPAddress"
                    && let Some(v) = a.value.as_deref()
                    && v.parse::<IpAddr>().is_err()
                {
                    errors.push(FieldError::invalid(
                        format!("spec.addresses[{i}].value"),
                        &v,
                        "an IPAddress address must be an IPv4 or IPv6 address, e.g. 127.0.0.1",
                    ));
                }
            }
        }
        Object::GRPCRoute(r) => errors.extend(crate::grpc_route::validate(r)),
        Object::HTTPRoute(r) => {
            check_route_attachment(
                r.spec.hostnames.as_deref(),
                r.spec
                    .parent_refs
                    .iter()
                    .flatten()
                    .map(|p| p.section_name.as_ref()),
                &mut errors,
            );
            for (i, rule) in r.spec.rules.iter().flatten().enumerate() {
                errors.extend(crate::route_filters::validate_rule(i, rule));
                for (j, m) in rule.matches.iter().flatten().enumerate() {
                    if let Some(p) = &m.path {
                        let v = p.value.as_deref().unwrap_or("/");
                        if !v.starts_with('/') {
                            errors.push(FieldError::invalid(
                                format!("spec.rules[{i}].matches[{j}].path.value"),
                                &v,
                                "must be an absolute path (start with /)",
                            ));
                        }
                    }
                }
                for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
                    if let Some(w) = b.weight
                        && !(0..=1_000_000).contains(&w)
                    {
                        errors.push(FieldError::invalid(
                            format!("spec.rules[{i}].backendRefs[{j}].weight"),
                            &w,
                            "weight must be between 0 and 1000000",
                        ));
                    }
                    let is_service = b.group.as_deref().unwrap_or("").is_empty()
                        && b.kind.as_deref().unwrap_or("Service") == "Service";
                    if is_service && b.port.is_none() {
                        errors.push(FieldError::required(
                            format!("spec.rules[{i}].backendRefs[{j}].port"),
                            "must be specified when referencing a Service",
                        ));
                    }
                }
            }
        }
        Object::Service(s) => {
            let ports: Vec<_> = s.spec.iter().flat_map(|s| s.ports.iter().flatten()).collect();
            let mut port_names = HashSet::new();
            for (i, p) in ports.iter().enumerate() {
                let at = format!("spec.ports[{i}]");
                match p.name.as_deref().unwrap_or("") {
                    "" if ports.len() > 1 => errors.push(FieldError::required(
                        format!("{at}.name"),
                        "a Service with more than one port must name each port, e.g. name: http",
                    )),
                    "" => {}
                    name if !is_dns_label(name) => {
                        errors.push(FieldError::invalid(format!("{at}.name"), &name, DNS_LABEL_RULE))
                    }
                    name if !port_names.insert(name) => errors.push(FieldError::invalid(
                        format!("{at}.name"),
                        &name,
                        "Duplicate value: port names must be unique within a Service; rename one",
                    )),
                    _ => {}
                }
                if let Some(IntOrString::String(target)) = &p.target_port
                    && !is_iana_service_name(target)
                {
                    errors.push(FieldError::invalid(
                        format!("{at}.targetPort"),
                        target,
                        "must be a port number or a port name of at most 15 lower case alphanumeric characters or '-', \
                         with at least one letter and no '--' or '-' at either end (an IANA service name, e.g. http)",
                    ));
                }
                if !(1..=65535).contains(&p.port) {
                    errors.push(FieldError::invalid(
                        format!("spec.ports[{i}].port"),
                        &p.port,
                        "port must be between 1 and 65535",
                    ));
                }
            }
        }
        Object::EndpointSlice(e) => {
            if !["IPv4", "IPv6", "FQDN"].contains(&e.address_type.as_str()) {
                errors.push(FieldError::unsupported(
                    "addressType",
                    &e.address_type,
                    &["IPv4", "IPv6", "FQDN"],
                ));
            }
            for (i, p) in e.ports.iter().flatten().enumerate() {
                if let Some(name) = p.name.as_deref()
                    && !name.is_empty()
                    && !is_dns_label(name)
                {
                    errors.push(FieldError::invalid(
                        format!("ports[{i}].name"),
                        &name,
                        DNS_LABEL_RULE,
                    ));
                }
            }
            for (i, ep) in e.endpoints.iter().flatten().enumerate() {
                if ep.addresses.is_empty() || ep.addresses.len() > 100 {
                    errors.push(FieldError::invalid(
                        format!("endpoints[{i}].addresses"),
                        &ep.addresses,
                        "must contain at least 1 address and at most 100: list the endpoint's IP, e.g. \
                         addresses: [\"10.0.0.1\"], or remove the endpoint",
                    ));
                }
                for (j, a) in ep.addresses.iter().enumerate() {
                    let ok = match e.address_type.as_str() {
                        "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                        "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                        _ => true,
                    };
                    if !ok {
                        errors.push(FieldError::invalid(
                            format!("endpoints[{i}].addresses[{j}]"),
                            a,
                            format!("must be a valid {} address", e.address_type),
                        ));
                    }
                }
            }
        }
    }
    errors
}

fn validate_meta(object: &Object) -> Vec<FieldError> {
    let meta = object.meta();
    let mut errors = Vec::new();
    match meta.name.as_deref() {
        None | Some("") => errors.push(FieldError::required("metadata.name", "name is required")),
        // A Service's name becomes a DNS label (service.namespace.svc): Kubernetes holds it to
        // RFC 1035, which also forbids a leading digit.
        Some(name) if matches!(object, Object::Service(_)) && !is_dns1035_label(name) => {
            errors.push(FieldError::invalid(
                "metadata.name",
                &name,
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an \
                 alphabetic character, and end with an alphanumeric character (e.g. 'my-name', or 'abc-123', \
                 regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?'); rename the Service",
            ))
        }
        Some(name) if !is_dns_subdomain(name) => errors.push(FieldError::invalid(
            "metadata.name",
            &name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'); rename the object",
        )),
        Some(_) => {}
    }
    if let Some(ns) = meta.namespace.as_deref()
        && !ns.is_empty()
        && !(ns.len() <= 63 && is_dns_subdomain(ns) && !ns.contains('.'))
    {
        errors.push(FieldError::invalid(
            "metadata.namespace",
            &ns,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
        ));
    }
    errors
}

fn is_dns_subdomain(s: &str) -> bool {
    // The whole name is at most 253 characters, so no label can be longer.
    s.len() <= 253 && s.split('.').all(|label| is_lowercase_alnum_dash(label, 253))
}

const DNS_LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and \
                              must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc', regex \
                              used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?'); rename it";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` of 1 to `max` characters.
fn is_lowercase_alnum_dash(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
fn is_dns_label(s: &str) -> bool {
    is_lowercase_alnum_dash(s, 63)
}

/// RFC 1035 label: an RFC 1123 label that starts with a letter.
fn is_dns1035_label(s: &str) -> bool {
    is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Gateway API SectionName: `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, 1 to 253 characters.
pub(crate) fn is_section_name(s: &str) -> bool {
    is_lowercase_alnum_dash(s, 253)
}

pub(crate) fn section_name_rule(path: &str) -> String {
    format!(
        "{path} in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$': use lower case letters, digits and '-', \
         starting and ending with a letter or digit, e.g. http"
    )
}

/// Gateway API Hostname: `^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`,
/// 1 to 253 characters.
pub(crate) fn is_gateway_hostname(s: &str) -> bool {
    let rest = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty() && s.len() <= 253 && rest.split('.').all(|label| is_lowercase_alnum_dash(label, 253))
}

pub(crate) fn hostname_rule(path: &str) -> String {
    format!(
        "{path} in body should match '^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$': \
         write the host name in lower case, without port, e.g. www.example.com or *.example.com"
    )
}

/// Kubernetes' port name (IANA service name): at most 15 of `[a-z0-9-]`, a letter among
/// them, no `--`, no `-` at either end.
fn is_iana_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.contains("--")
        && !s.starts_with('-')
        && !s.ends_with('-')
}

const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_CRT: &str = "ca.crt";

/// What the API server checks of a `kubernetes.io/tls` Secret: both keys present. Their content
/// is not checked here, as the API server does not: a Secret is taken as a cluster would take it,
/// and what uses it (an HTTPS listener, a BackendConfigPolicy) says in its status what is wrong
/// with the pair (Gateway API's InvalidCertificateRef; the conformance test
/// GatewayInvalidTLSConfiguration applies such a Secret). A `ca.crt` (in any Secret) must be a
/// bundle of certificates.
fn secret(s: &crate::Secret) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let data = |key: &str| s.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.as_slice());
    if s.type_.as_deref() == Some("kubernetes.io/tls") {
        for name in [TLS_CRT, TLS_KEY] {
            if data(name).is_none() {
                errors.push(FieldError::required(
                    format!("data[{name}]"),
                    format!(
                        "a kubernetes.io/tls Secret needs {name} (PEM), e.g. from kubectl create secret tls"
                    ),
                ));
            }
        }
    }
    if let Some(ca) = data(CA_CRT) {
        errors.extend(ca_bundle("data[ca.crt]", ca));
    }
    errors
}

fn ca_bundle(path: &str, pem: &[u8]) -> Vec<FieldError> {
    match crate::tls_material::certificates(pem) {
        Ok(_) => Vec::new(),
        Err(e) => vec![FieldError::invalid(
            path,
            &"<CA bundle>",
            format!("{e}; a CA bundle is one or more PEM certificates"),
        )],
    }
}

/// BackendTLSPolicy's schema and CEL rules (Gateway API v1).
fn backend_tls_policy(p: &crate::BackendTlsPolicy) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if p.spec.target_refs.is_empty() || p.spec.target_refs.len() > 16 {
        errors.push(FieldError::invalid(
            "spec.targetRefs",
            &p.spec.target_refs.len(),
            "list between 1 and 16 targets",
        ));
    }
    let v = &p.spec.validation;
    if v.hostname.is_empty() {
        errors.push(FieldError::required(
            "spec.validation.hostname",
            "the name to send as SNI and to verify the backend's certificate against, e.g. backend.example.com",
        ));
    } else if !is_gateway_hostname(&v.hostname) || v.hostname.starts_with("*.") {
        let at = "spec.validation.hostname";
        errors.push(FieldError::invalid(at, &v.hostname, hostname_rule(at)));
    }
    let refs = v.ca_certificate_refs.as_ref().is_some_and(|r| !r.is_empty());
    let well_known = v
        .well_known_ca_certificates
        .as_deref()
        .is_some_and(|w| !w.is_empty());
    if refs == well_known {
        errors.push(FieldError::invalid(
            "spec.validation",
            &"",
            "must specify either caCertificateRefs or wellKnownCACertificates, but not both",
        ));
    }
    if let Some(w) = v.well_known_ca_certificates.as_deref()
        && !w.is_empty()
        && w != "System"
    {
        errors.push(FieldError::unsupported(
            "spec.validation.wellKnownCACertificates",
            &w,
            &["System"],
        ));
    }
    for (i, san) in v.subject_alt_names.iter().flatten().enumerate() {
        let at = format!("spec.validation.subjectAltNames[{i}]");
        match san.r#type {
            gateway_api::backendtlspolicies::BackendTlsPolicyValidationSubjectAltNamesType::Hostname => {
                if san.hostname.as_deref().unwrap_or("").is_empty() {
                    errors.push(FieldError::required(
                        format!("{at}.hostname"),
                        "SubjectAltName type Hostname needs hostname",
                    ));
                }
            }
            gateway_api::backendtlspolicies::BackendTlsPolicyValidationSubjectAltNamesType::Uri => {
                if san.uri.as_deref().unwrap_or("").is_empty() {
                    errors.push(FieldError::required(
                        format!("{at}.uri"),
                        "SubjectAltName type URI needs uri",
                    ));
                }
            }
        }
    }
    errors
}

/// What every route kind checks alike: its hostnames, and its parentRefs' section names.
pub(crate) fn check_route_attachment<'a>(
    hostnames: Option<&[String]>,
    section_names: impl Iterator<Item = Option<&'a String>>,
    errors: &mut Vec<FieldError>,
) {
    for (i, h) in hostnames.into_iter().flatten().enumerate() {
        if !is_gateway_hostname(h) {
            let at = format!("spec.hostnames[{i}]");
            errors.push(FieldError::invalid(&at, h, hostname_rule(&at)));
        }
    }
    for (i, section) in section_names.enumerate() {
        if let Some(section) = section
            && !is_section_name(section)
        {
            let at = format!("spec.parentRefs[{i}].sectionName");
            errors.push(FieldError::invalid(&at, section, section_name_rule(&at)));
        }
    }
}
