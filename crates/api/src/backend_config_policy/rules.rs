//! [`validate`]: the verdicts and messages of the API server for kgateway's BackendConfigPolicy
//! CRD (its OpenAPI schema and its CEL `x-kubernetes-validations` rules).
//!
//! How the API server validates, and so how [`validate`] does:
//! 1. The OpenAPI schema: required fields, enums, bounds, lengths, patterns, item counts.
//!    Required fields are plain (non-`Option`) fields here, so a missing one is already a
//!    deserialization error with its path; everything else is checked by [`validate`].
//! 2. The CEL rules, only when step 1 found no "blocking" error (an enum value, a too long
//!    string, too many items): then the API server skips every rule and says so with
//!    `<nil>: Invalid value: "null": some validation rules were not checked ...`.
//!
//! Messages use kubectl's shape. One deliberate difference: a CEL rule on a scalar field shows
//! the field's value (`Invalid value: "500ms"`), where the API server shows the field's type
//! (`Invalid value: "string"`); rules on objects and lists show `"object"` / `"array"` as it
//! does. Fields are kept as written: defaults of the CRD (`outlierDetection.interval: 10s`,
//! ...) are not filled in by deserialization.

use super::limits;
use super::quantity::Quantity;
use super::schema::{
    AGGRESSION_RE, ARRAY, Checker, GROUP_RE, HTTP_METHODS, KIND_RE, LOCALITY_TYPES, OBJECT,
    PROXY_PROTOCOL_VERSIONS, QUANTITY_RE, SAME_SITE, TLS_VERSIONS, WELL_KNOWN_CA_RE,
};
use super::types::*;
use crate::duration::{NANOS_PER_MILLI, NANOS_PER_SECOND, matches_kube_duration_pattern, parse_go_duration};
use crate::error::FieldError;

// CEL messages, word for word from the CRD (the test `every_cel_message_of_the_crd_is_implemented`
// checks that each of the CRD's messages is one of these).
/// The CRD's message, with how to write one: the pattern takes integers with a unit, no fractions.
pub(super) const INVALID_DURATION: &str =
    "invalid duration value (write whole numbers with a unit, up to 4 parts: 30s, 1m30s, 500ms, 1h)";
pub(super) const AT_MOST_ONE_HTTP: &str =
    "at most one of the fields in [http1ProtocolOptions http2ProtocolOptions] may be set";
pub(super) const TARGET_REFS_KINDS: &str =
    "TargetRefs must reference either a Kubernetes Service, a Backend, or an Istio Hostname";
pub(super) const TARGET_SELECTORS_KINDS: &str =
    "TargetSelectors must reference either a Kubernetes Service, a Backend, or an Istio Hostname";
pub(super) const CIRCUIT_BREAKERS_ONE: &str =
    "at least one of the fields in [maxConnections maxPendingRequests maxRequests maxRetries] must be set";
pub(super) const JITTER_LE_REFRESH: &str = "jitter must be less than or equal to refreshRate";
pub(super) const REFRESH_RATE_MIN: &str = "refreshRate must be at least 1ms";
pub(super) const HTTP_OR_GRPC: &str = "exactly one of http or grpc must be set";
pub(super) const CONNECTION_IDLE_INTERVAL_MIN: &str = "connectionIdleInterval must be at least 1ms";
pub(super) const H2_INTERVAL_MIN: &str = "interval must be at least 1ms";
pub(super) const H2_TIMEOUT_MIN: &str = "timeout must be at least 1ms";
pub(super) const CONNECTION_WINDOW: &str =
    "InitialConnectionWindowSize must be between 65535 and 2147483647 bytes (inclusive)";
pub(super) const STREAM_WINDOW: &str =
    "InitialStreamWindowSize must be between 65535 and 2147483647 bytes (inclusive)";
pub(super) const AGGRESSION: &str =
    "Aggression, if specified, must be a string representing a number greater than 0.0";
pub(super) const HASH_POLICY_ONE: &str = "exactly one of the fields in [header cookie sourceIP] must be set";
pub(super) const PREFER_LOCAL_SET: &str = "at least one of the fields in [preferLocal] must be set";
pub(super) const LOCALITY_XOR_ZONE: &str = "localityType and zoneAware are mutually exclusive";
pub(super) const ZONE_AWARE_HASHING: &str =
    "zoneAware is not supported with ringHash or maglev load balancers";
pub(super) const ONE_LB_TYPE: &str =
    "exactly one of the fields in [leastRequest roundRobin ringHash maglev random] must be set";
pub(super) const BASE_EJECTION_MIN: &str = "baseEjectionTime must be at least 1ms";
pub(super) const OUTLIER_INTERVAL_MIN: &str = "interval must be at least 1ms";
pub(super) const KEEPALIVE_INTERVAL_MIN: &str = "keepAliveInterval must be at least 1 second";
pub(super) const KEEPALIVE_TIME_MIN: &str = "keepAliveTime must be at least 1 second";
pub(super) const TLS_FILES_ONE: &str =
    "At least one of tlsCertificate, tlsKey, or rootCA must be set in TLSFiles";
pub(super) const TLS_ONE_SOURCE: &str =
    "exactly one of the fields in [secretRef files insecureSkipVerify wellKnownCACertificates] must be set";

// Errors of CEL evaluation, as cel-go words them.
pub(super) const TO_DURATION_FAILED: &str =
    "type conversion error from 'string' to 'google.protobuf.Duration'";
pub(super) const TO_DOUBLE_FAILED: &str = "type conversion error from 'string' to 'double'";

/// Every check the API server makes for the CRD, then the limits of the data plane (ours, in
/// `limits.rs`), which are dropped with the CEL rules when the schema phase blocks.
/// Only the spec is checked: the API server ignores `status` on create and update (it has a
/// status subresource).
pub fn validate(policy: &BackendConfigPolicy) -> Vec<FieldError> {
    let mut c = Checker::default();
    check_spec(&mut c, &policy.spec);
    limits::check(&mut c, &policy.spec);
    c.finish()
}

/// A `duration(self) >= duration('<min>')` rule.
struct AtLeast {
    nanos: i128,
    message: &'static str,
}

impl Checker {
    /// A duration field: `maxLength: 32`, the pattern rule and, when given, the minimum rule.
    /// Returns the duration in nanoseconds when every check passed.
    fn duration(&mut self, path: &str, value: Option<&str>, at_least: Option<AtLeast>) -> Option<i128> {
        let v = value?;
        let mut ok = self.max_length(path, v, 32);
        if !matches_kube_duration_pattern(v) {
            self.rule_failed(path, &v, INVALID_DURATION);
            ok = false;
        }
        let parsed = parse_go_duration(v);
        if let Some(min) = at_least {
            match parsed {
                None => {
                    self.rule_error(path, &v, TO_DURATION_FAILED, min.message);
                    ok = false;
                }
                Some(n) if n < min.nanos => {
                    self.rule_failed(path, &v, min.message);
                    ok = false;
                }
                Some(_) => {}
            }
        }
        if ok { parsed } else { None }
    }
}

fn at_least_1ms(message: &'static str) -> Option<AtLeast> {
    Some(AtLeast {
        nanos: NANOS_PER_MILLI,
        message,
    })
}

fn at_least_1s(message: &'static str) -> Option<AtLeast> {
    Some(AtLeast {
        nanos: NANOS_PER_SECOND,
        message,
    })
}

fn count_set(flags: &[bool]) -> usize {
    flags.iter().filter(|f| **f).count()
}

/// The properties are visited in the CRD's (alphabetical) order, each object's own rules first.
fn check_spec(c: &mut Checker, s: &BackendConfigPolicySpec) {
    if s.http1_protocol_options.is_some() && s.http2_protocol_options.is_some() {
        c.rule_failed("spec", &OBJECT, AT_MOST_ONE_HTTP);
    }
    if let Some(cb) = &s.circuit_breakers {
        check_circuit_breakers(c, cb);
    }
    if let Some(o) = &s.common_http_protocol_options {
        let at = "spec.commonHttpProtocolOptions";
        c.duration(&format!("{at}.idleTimeout"), o.idle_timeout.as_deref(), None);
        c.minimum(&format!("{at}.maxHeadersCount"), o.max_headers_count, 0);
        c.minimum(
            &format!("{at}.maxRequestsPerConnection"),
            o.max_requests_per_connection,
            0,
        );
        c.duration(
            &format!("{at}.maxStreamDuration"),
            o.max_stream_duration.as_deref(),
            None,
        );
    }
    c.duration("spec.connectTimeout", s.connect_timeout.as_deref(), None);
    if let Some(dns) = &s.dns {
        check_dns(c, dns);
    }
    if let Some(hc) = &s.health_check {
        check_health_check(c, hc);
    }
    if let Some(h2) = &s.http2_protocol_options {
        check_http2(c, h2);
    }
    if let Some(lb) = &s.load_balancer {
        check_load_balancer(c, lb);
    }
    if let Some(od) = &s.outlier_detection {
        check_outlier_detection(c, od);
    }
    c.minimum(
        "spec.perConnectionBufferLimitBytes",
        s.per_connection_buffer_limit_bytes,
        0,
    );
    check_targets(c, s);
    if let Some(k) = &s.tcp_keepalive {
        check_tcp_keepalive(c, "spec.tcpKeepalive", k);
    }
    if let Some(tls) = &s.tls {
        check_tls(c, tls);
    }
    if let Some(p) = &s.upstream_proxy_protocol {
        c.one_of(
            "spec.upstreamProxyProtocol.version",
            p.version.as_deref(),
            PROXY_PROTOCOL_VERSIONS,
        );
    }
}

fn is_policy_target(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Service") | ("gateway.kgateway.dev", "Backend") | ("networking.istio.io", "Hostname")
    )
}

fn check_group_kind(c: &mut Checker, at: &str, group: &str, kind: &str) {
    let group_path = format!("{at}.group");
    c.max_length(&group_path, group, 253);
    c.pattern(&group_path, group, &GROUP_RE);
    let kind_path = format!("{at}.kind");
    c.max_length(&kind_path, kind, 63);
    c.min_length(&kind_path, kind, 1);
    c.pattern(&kind_path, kind, &KIND_RE);
}

fn check_targets(c: &mut Checker, s: &BackendConfigPolicySpec) {
    // `targetRefs: []` reads as absent here, so the CRD's minItems: 1 cannot fail.
    if !s.target_refs.is_empty() {
        c.max_items("spec.targetRefs", s.target_refs.len(), 16);
        if !s.target_refs.iter().all(|r| is_policy_target(&r.group, &r.kind)) {
            c.rule_failed("spec.targetRefs", &ARRAY, TARGET_REFS_KINDS);
        }
        for (i, r) in s.target_refs.iter().enumerate() {
            let at = format!("spec.targetRefs[{i}]");
            check_group_kind(c, &at, &r.group, &r.kind);
            let name_path = format!("{at}.name");
            c.max_length(&name_path, &r.name, 253);
            c.min_length(&name_path, &r.name, 1);
        }
    }
    if !s.target_selectors.is_empty() {
        if !s
            .target_selectors
            .iter()
            .all(|r| is_policy_target(&r.group, &r.kind))
        {
            c.rule_failed("spec.targetSelectors", &ARRAY, TARGET_SELECTORS_KINDS);
        }
        for (i, r) in s.target_selectors.iter().enumerate() {
            check_group_kind(c, &format!("spec.targetSelectors[{i}]"), &r.group, &r.kind);
        }
    }
}

pub(super) fn check_tcp_keepalive(c: &mut Checker, at: &str, k: &TcpKeepalive) {
    c.duration(
        &format!("{at}.keepAliveInterval"),
        k.keep_alive_interval.as_deref(),
        at_least_1s(KEEPALIVE_INTERVAL_MIN),
    );
    c.minimum(&format!("{at}.keepAliveProbes"), k.keep_alive_probes, 0);
    c.duration(
        &format!("{at}.keepAliveTime"),
        k.keep_alive_time.as_deref(),
        at_least_1s(KEEPALIVE_TIME_MIN),
    );
}

fn check_circuit_breakers(c: &mut Checker, cb: &CircuitBreakers) {
    let at = "spec.circuitBreakers";
    let any = [
        cb.max_connections,
        cb.max_pending_requests,
        cb.max_requests,
        cb.max_retries,
    ];
    if any.iter().all(Option::is_none) {
        c.rule_failed(at, &OBJECT, CIRCUIT_BREAKERS_ONE);
    }
    c.minimum(&format!("{at}.maxConnections"), cb.max_connections, 1);
    c.minimum(&format!("{at}.maxPendingRequests"), cb.max_pending_requests, 1);
    c.minimum(&format!("{at}.maxRequests"), cb.max_requests, 1);
    c.minimum(&format!("{at}.maxRetries"), cb.max_retries, 0);
}

fn check_dns(c: &mut Checker, dns: &Dns) {
    let at = "spec.dns";
    // !(has(self.jitter) && has(self.refreshRate)) || duration(self.jitter) <= duration(self.refreshRate)
    if let (Some(jitter), Some(refresh)) = (&dns.jitter, &dns.refresh_rate) {
        match (parse_go_duration(jitter), parse_go_duration(refresh)) {
            (Some(j), Some(r)) => {
                if j > r {
                    c.rule_failed(at, &OBJECT, JITTER_LE_REFRESH);
                }
            }
            _ => c.rule_error(at, &OBJECT, TO_DURATION_FAILED, JITTER_LE_REFRESH),
        }
    }
    c.duration(&format!("{at}.jitter"), dns.jitter.as_deref(), None);
    c.duration(
        &format!("{at}.refreshRate"),
        dns.refresh_rate.as_deref(),
        at_least_1ms(REFRESH_RATE_MIN),
    );
}

fn check_health_check(c: &mut Checker, hc: &HealthCheck) {
    let at = "spec.healthCheck";
    if hc.http.is_some() == hc.grpc.is_some() {
        c.rule_failed(at, &OBJECT, HTTP_OR_GRPC);
    }
    c.minimum(&format!("{at}.healthyThreshold"), Some(hc.healthy_threshold), 0);
    if let Some(http) = &hc.http {
        c.one_of(&format!("{at}.http.method"), http.method.as_deref(), HTTP_METHODS);
    }
    c.duration(&format!("{at}.interval"), Some(&hc.interval), None);
    c.duration(&format!("{at}.timeout"), Some(&hc.timeout), None);
    c.minimum(
        &format!("{at}.unhealthyThreshold"),
        Some(hc.unhealthy_threshold),
        0,
    );
}

fn check_http2(c: &mut Checker, h2: &Http2ProtocolOptions) {
    let at = "spec.http2ProtocolOptions";
    if let Some(k) = &h2.connection_keepalive {
        let at = format!("{at}.connectionKeepalive");
        c.duration(
            &format!("{at}.connectionIdleInterval"),
            k.connection_idle_interval.as_deref(),
            at_least_1ms(CONNECTION_IDLE_INTERVAL_MIN),
        );
        c.duration(
            &format!("{at}.interval"),
            k.interval.as_deref(),
            at_least_1ms(H2_INTERVAL_MIN),
        );
        c.duration(
            &format!("{at}.timeout"),
            Some(&k.timeout),
            at_least_1ms(H2_TIMEOUT_MIN),
        );
    }
    check_window_size(
        c,
        &format!("{at}.initialConnectionWindowSize"),
        h2.initial_connection_window_size.as_ref(),
        CONNECTION_WINDOW,
    );
    check_window_size(
        c,
        &format!("{at}.initialStreamWindowSize"),
        h2.initial_stream_window_size.as_ref(),
        STREAM_WINDOW,
    );
    c.range(
        &format!("{at}.maxConcurrentStreams"),
        h2.max_concurrent_streams,
        1,
        2147483647,
    );
}

/// `(type(self) == int && int(self) >= 65535 && int(self) <= 2147483647) || (type(self) == string
/// && quantity(self).isGreaterThan(quantity('65534')) && quantity(self).isLessThan(quantity('2147483648')))`,
/// plus the schema's pattern, which applies to strings only.
fn check_window_size(c: &mut Checker, path: &str, value: Option<&IntOrString>, message: &str) {
    match value {
        None => {}
        Some(IntOrString::Int(i)) => {
            let in_range = (65535..=2147483647).contains(i);
            if !in_range {
                c.rule_failed(path, &i, message);
            }
        }
        Some(IntOrString::String(s)) => {
            c.pattern(path, s, &QUANTITY_RE);
            match Quantity::parse(s) {
                Err(e) => c.rule_error(path, &s, e, message),
                Ok(q) if !(q.is_greater_than(65534) && q.is_less_than(2147483648)) => {
                    c.rule_failed(path, &s, message)
                }
                Ok(_) => {}
            }
        }
    }
}

fn check_load_balancer(c: &mut Checker, lb: &LoadBalancer) {
    let at = "spec.loadBalancer";
    if lb.locality_type.is_some() && lb.zone_aware.is_some() {
        c.rule_failed(at, &OBJECT, LOCALITY_XOR_ZONE);
    }
    if (lb.ring_hash.is_some() || lb.maglev.is_some()) && lb.zone_aware.is_some() {
        c.rule_failed(at, &OBJECT, ZONE_AWARE_HASHING);
    }
    let types = [
        lb.least_request.is_some(),
        lb.round_robin.is_some(),
        lb.ring_hash.is_some(),
        lb.maglev.is_some(),
        lb.random.is_some(),
    ];
    if count_set(&types) != 1 {
        c.rule_failed(at, &OBJECT, ONE_LB_TYPE);
    }
    c.range(
        &format!("{at}.healthyPanicThreshold"),
        lb.healthy_panic_threshold,
        0,
        100,
    );
    if let Some(lr) = &lb.least_request
        && let Some(ss) = &lr.slow_start
    {
        check_slow_start(c, &format!("{at}.leastRequest.slowStart"), ss);
    }
    c.one_of(
        &format!("{at}.localityType"),
        lb.locality_type.as_deref(),
        LOCALITY_TYPES,
    );
    if let Some(m) = &lb.maglev {
        check_hash_policies(c, &format!("{at}.maglev.hashPolicies"), &m.hash_policies);
    }
    if let Some(rh) = &lb.ring_hash {
        check_hash_policies(c, &format!("{at}.ringHash.hashPolicies"), &rh.hash_policies);
        c.minimum(&format!("{at}.ringHash.maximumRingSize"), rh.maximum_ring_size, 0);
        c.minimum(&format!("{at}.ringHash.minimumRingSize"), rh.minimum_ring_size, 0);
    }
    if let Some(rr) = &lb.round_robin
        && let Some(ss) = &rr.slow_start
    {
        check_slow_start(c, &format!("{at}.roundRobin.slowStart"), ss);
    }
    c.duration(
        &format!("{at}.updateMergeWindow"),
        lb.update_merge_window.as_deref(),
        None,
    );
    if let Some(za) = &lb.zone_aware {
        let at = format!("{at}.zoneAware");
        match &za.prefer_local {
            None => c.rule_failed(&at, &OBJECT, PREFER_LOCAL_SET),
            Some(pl) => {
                let at = format!("{at}.preferLocal");
                if let Some(force) = &pl.force {
                    c.minimum(
                        &format!("{at}.force.minEndpointsInZoneThreshold"),
                        force.min_endpoints_in_zone_threshold,
                        1,
                    );
                }
                c.minimum(
                    &format!("{at}.minEndpointsThreshold"),
                    pl.min_endpoints_threshold,
                    1,
                );
                c.range(&format!("{at}.routingEnabled"), pl.routing_enabled, 0, 100);
            }
        }
    }
}

fn check_slow_start(c: &mut Checker, at: &str, ss: &SlowStart) {
    if let Some(a) = &ss.aggression {
        let path = format!("{at}.aggression");
        // self.matches('^-?(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)$') && double(self) > 0.0
        if !AGGRESSION_RE.is_match(a) {
            c.rule_failed(&path, a, AGGRESSION);
        } else {
            match a.parse::<f64>() {
                // Go's ParseFloat refuses what overflows a float64, so CEL's double() fails.
                Ok(x) if x.is_finite() => {
                    if x <= 0.0 {
                        c.rule_failed(&path, a, AGGRESSION);
                    }
                }
                _ => c.rule_error(&path, a, TO_DOUBLE_FAILED, AGGRESSION),
            }
        }
    }
    c.range(&format!("{at}.minWeightPercent"), ss.min_weight_percent, 0, 100);
    c.duration(&format!("{at}.window"), ss.window.as_deref(), None);
}

fn check_hash_policies(c: &mut Checker, at: &str, policies: &[HashPolicy]) {
    // As for targetRefs, an empty list reads as absent, so minItems: 1 cannot fail.
    c.max_items(at, policies.len(), 16);
    for (i, p) in policies.iter().enumerate() {
        let at = format!("{at}[{i}]");
        if count_set(&[p.header.is_some(), p.cookie.is_some(), p.source_ip.is_some()]) != 1 {
            c.rule_failed(&at, &OBJECT, HASH_POLICY_ONE);
        }
        if let Some(cookie) = &p.cookie {
            c.min_length(&format!("{at}.cookie.name"), &cookie.name, 1);
            c.one_of(
                &format!("{at}.cookie.sameSite"),
                cookie.same_site.as_deref(),
                SAME_SITE,
            );
            c.duration(&format!("{at}.cookie.ttl"), cookie.ttl.as_deref(), None);
        }
        if let Some(header) = &p.header {
            c.min_length(&format!("{at}.header.name"), &header.name, 1);
        }
    }
}

fn check_outlier_detection(c: &mut Checker, od: &OutlierDetection) {
    let at = "spec.outlierDetection";
    c.duration(
        &format!("{at}.baseEjectionTime"),
        od.base_ejection_time.as_deref(),
        at_least_1ms(BASE_EJECTION_MIN),
    );
    c.minimum(&format!("{at}.consecutive5xx"), od.consecutive_5xx, 0);
    c.minimum(
        &format!("{at}.consecutiveLocalOriginFailure"),
        od.consecutive_local_origin_failure,
        0,
    );
    c.range(
        &format!("{at}.enforcingConsecutive5xx"),
        od.enforcing_consecutive_5xx,
        0,
        100,
    );
    c.range(
        &format!("{at}.enforcingConsecutiveLocalOriginFailure"),
        od.enforcing_consecutive_local_origin_failure,
        0,
        100,
    );
    c.duration(
        &format!("{at}.interval"),
        od.interval.as_deref(),
        at_least_1ms(OUTLIER_INTERVAL_MIN),
    );
    c.range(
        &format!("{at}.maxEjectionPercent"),
        od.max_ejection_percent,
        0,
        100,
    );
}

fn check_tls(c: &mut Checker, tls: &Tls) {
    let at = "spec.tls";
    let sources = [
        tls.secret_ref.is_some(),
        tls.files.is_some(),
        tls.insecure_skip_verify.is_some(),
        tls.well_known_ca_certificates.is_some(),
    ];
    if count_set(&sources) != 1 {
        c.rule_failed(at, &OBJECT, TLS_ONE_SOURCE);
    }
    if let Some(files) = &tls.files {
        let at = format!("{at}.files");
        if files.tls_certificate.is_none() && files.tls_key.is_none() && files.root_ca.is_none() {
            c.rule_failed(&at, &OBJECT, TLS_FILES_ONE);
        }
        for (name, value) in [
            ("rootCA", &files.root_ca),
            ("tlsCertificate", &files.tls_certificate),
            ("tlsKey", &files.tls_key),
        ] {
            if let Some(v) = value {
                c.min_length(&format!("{at}.{name}"), v, 1);
            }
        }
    }
    if let Some(p) = &tls.parameters {
        c.one_of(
            &format!("{at}.parameters.maxVersion"),
            p.max_version.as_deref(),
            TLS_VERSIONS,
        );
        c.one_of(
            &format!("{at}.parameters.minVersion"),
            p.min_version.as_deref(),
            TLS_VERSIONS,
        );
    }
    if let Some(sni) = &tls.sni {
        c.min_length(&format!("{at}.sni"), sni, 1);
    }
    if let Some(ca) = &tls.well_known_ca_certificates {
        let path = format!("{at}.wellKnownCACertificates");
        c.max_length(&path, ca, 253);
        c.min_length(&path, ca, 1);
        c.pattern(&path, ca, &WELL_KNOWN_CA_RE);
    }
}
