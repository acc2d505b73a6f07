//! Ours, not the CRD's: values the API server accepts but the data plane cannot honour, refused
//! at apply time rather than turned into failing connects or a configuration Envoy would refuse.
//! Each is checked only once the CRD's own checks on the field pass, and each message names
//! the limit, where it comes from, and the fix.
//!
//! What is left out on purpose, because it can be served as Envoy serves it: `0` for
//! `perConnectionBufferLimitBytes` (no limit), `maxRequestsPerConnection` (unlimited),
//! `idleTimeout` and `maxStreamDuration` (disabled), a health check threshold of 0 (acts as 1),
//! `minimumRingSize: 0`, a cookie `ttl` of 0 (a session cookie). Durations cannot overflow: the
//! CRD's pattern allows at most four parts of 99999 units (under 46 years).

use super::schema::Checker;
use super::types::*;
use crate::duration::{NANOS_PER_SECOND, matches_kube_duration_pattern, parse_go_duration};

// Linux: TCP_KEEPCNT 1..=127 (MAX_TCP_KEEPCNT), TCP_KEEPIDLE and TCP_KEEPINTVL 1..=32767 s
// (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL); setsockopt refuses more with EINVAL.
pub(super) const LINUX_MAX_KEEPCNT: i64 = 127;
pub(super) const LINUX_MAX_KEEP_SECS: i128 = 32767;
pub(super) const KEEPALIVE_PROBES_LINUX: &str = "keepAliveProbes must be between 1 and 127 (the Linux TCP_KEEPCNT \
                                                 range): set a value in that range, or remove the field to keep the \
                                                 kernel default (9)";
pub(super) const KEEPALIVE_TIME_LINUX: &str = "keepAliveTime must be at most 32767s (9h6m7s, the Linux TCP_KEEPIDLE \
                                               limit): set a shorter duration, or remove the field to keep the \
                                               kernel default (7200s)";
pub(super) const KEEPALIVE_INTERVAL_LINUX: &str = "keepAliveInterval must be at most 32767s (9h6m7s, the Linux \
                                                   TCP_KEEPINTVL limit): set a shorter duration, or remove the \
                                                   field to keep the kernel default (75s)";

// Envoy's own limits (its proto validation and cluster setup refuse these; checked with
// `envoy --mode validate`).
pub(super) const CONNECT_TIMEOUT_ZERO: &str = "connectTimeout must be greater than 0 (Envoy refuses a zero connect \
                                               timeout): set a duration such as 5s, or remove the field to keep the \
                                               default (5s)";
pub(super) const HEALTH_CHECK_INTERVAL_ZERO: &str = "interval must be greater than 0 (a health check needs time \
                                                     between probes; Envoy refuses 0): set a duration such as 5s";
pub(super) const HEALTH_CHECK_TIMEOUT_ZERO: &str = "timeout must be greater than 0 (Envoy refuses 0): set how long a \
                                                    probe may take, such as 1s";
pub(super) const HEALTH_CHECK_PATH_EMPTY: &str = "path must not be empty (Envoy refuses it): set the path to probe, \
                                                  such as /healthz";
pub(super) const HEADER_VALUE_CONTROL: &str = "must not contain NUL, CR or LF (it is sent in a request header; \
                                               Envoy refuses it): remove those characters";
pub(super) const HEADER_NAME_CONTROL: &str = "must not contain NUL, CR or LF (it names a request header; Envoy \
                                              refuses it): remove those characters";
pub(super) const COOKIE_NAME_TOKEN: &str = "cookie name must be a token (letters, digits and !#$%&'*+-.^_`|~; \
                                            RFC 6265), as it is sent in a Set-Cookie header: rename the cookie, \
                                            such as session-id";
pub(super) const COOKIE_PATH_CHARS: &str = "cookie path must not contain control characters or ';' (it is sent \
                                            in a Set-Cookie header): use a plain path such as /";
pub(super) const MAX_HEADERS_COUNT_ZERO: &str = "maxHeadersCount must be at least 1 (Envoy refuses 0; every HTTP \
                                                 response has at least one header): set a limit such as 100, or \
                                                 remove the field to keep the default (100)";
pub(super) const MAX_HEADERS_COUNT_CAP: &str = "maxHeadersCount must be at most 100 (kgw reads at most 100 header \
                                                lines of a response head, Envoy's default): set 100 or less, or \
                                                remove the field to keep the default (100)";
pub(super) const CHOICE_COUNT_MIN: &str = "choiceCount must be at least 2 (least request compares that many \
                                           random endpoints; Envoy refuses fewer): set 2 or more, or remove the \
                                           field to keep the default (2)";
/// Envoy's cap on either ring size (`lte: 8388608` in its proto).
pub(super) const MAX_RING_SIZE: i64 = 8_388_608;
/// Envoy's defaults, used when a ring size is not set.
pub(super) const DEFAULT_MIN_RING_SIZE: i64 = 1024;
pub(super) const DEFAULT_MAX_RING_SIZE: i64 = MAX_RING_SIZE;
pub(super) const RING_SIZE_CAP: &str =
    "must be at most 8388608 (8M, Envoy's largest ring): set a smaller size";
pub(super) const INT32_MAX: &str = "must be at most 2147483647 (kgateway reads this field as a 32-bit integer): \
                                    set a smaller value";

pub(super) fn ring_min_above_max(min: i64, max: i64) -> String {
    format!(
        "minimumRingSize ({min}) must not be greater than maximumRingSize ({max}) (Envoy refuses such a ring; an unset \
         minimumRingSize is 1024, an unset maximumRingSize 8388608): raise maximumRingSize or lower minimumRingSize"
    )
}

/// A duration that passed the CRD's checks (length and pattern), in nanoseconds.
fn crd_valid_duration(value: Option<&str>) -> Option<i128> {
    let v = value?;
    if v.len() > 32 || !matches_kube_duration_pattern(v) {
        return None;
    }
    parse_go_duration(v)
}

fn has_header_control(s: &str) -> bool {
    s.contains(['\0', '\r', '\n'])
}

/// Fields of `format: int32` whose only CRD bound is a minimum.
fn at_most_int32(c: &mut Checker, path: &str, value: Option<i64>) {
    if let Some(v) = value
        && v > i64::from(i32::MAX)
    {
        c.rule_failed(path, &v, INT32_MAX);
    }
}

/// Every limit of the data plane, in the CRD's (alphabetical) field order.
pub(super) fn check(c: &mut Checker, s: &BackendConfigPolicySpec) {
    if let Some(cb) = &s.circuit_breakers {
        let at = "spec.circuitBreakers";
        at_most_int32(c, &format!("{at}.maxConnections"), cb.max_connections);
        at_most_int32(c, &format!("{at}.maxPendingRequests"), cb.max_pending_requests);
        at_most_int32(c, &format!("{at}.maxRequests"), cb.max_requests);
        at_most_int32(c, &format!("{at}.maxRetries"), cb.max_retries);
    }
    if let Some(o) = &s.common_http_protocol_options {
        let at = "spec.commonHttpProtocolOptions";
        if o.max_headers_count == Some(0) {
            c.rule_failed(&format!("{at}.maxHeadersCount"), &0, MAX_HEADERS_COUNT_ZERO);
        }
        if let Some(n) = o
            .max_headers_count
            .filter(|n| (101..=i64::from(i32::MAX)).contains(n))
        {
            c.rule_failed(&format!("{at}.maxHeadersCount"), &n, MAX_HEADERS_COUNT_CAP);
        }
        at_most_int32(c, &format!("{at}.maxHeadersCount"), o.max_headers_count);
        at_most_int32(
            c,
            &format!("{at}.maxRequestsPerConnection"),
            o.max_requests_per_connection,
        );
    }
    if crd_valid_duration(s.connect_timeout.as_deref()) == Some(0) {
        c.rule_failed("spec.connectTimeout", &s.connect_timeout, CONNECT_TIMEOUT_ZERO);
    }
    if let Some(hc) = &s.health_check {
        check_health_check(c, hc);
    }
    if let Some(t) = &s.tls {
        check_tls(c, t);
    }
    if let Some(lb) = &s.load_balancer {
        check_load_balancer(c, lb);
    }
    if let Some(od) = &s.outlier_detection {
        let at = "spec.outlierDetection";
        at_most_int32(c, &format!("{at}.consecutive5xx"), od.consecutive_5xx);
        at_most_int32(
            c,
            &format!("{at}.consecutiveLocalOriginFailure"),
            od.consecutive_local_origin_failure,
        );
    }
    at_most_int32(
        c,
        "spec.perConnectionBufferLimitBytes",
        s.per_connection_buffer_limit_bytes,
    );
    if let Some(k) = &s.tcp_keepalive {
        check_tcp_keepalive(c, "spec.tcpKeepalive", k);
    }
}

fn check_health_check(c: &mut Checker, hc: &HealthCheck) {
    let at = "spec.healthCheck";
    at_most_int32(c, &format!("{at}.healthyThreshold"), Some(hc.healthy_threshold));
    if let Some(http) = &hc.http {
        if let Some(host) = &http.host
            && has_header_control(host)
        {
            c.rule_failed(
                &format!("{at}.http.host"),
                host,
                &format!("host {HEADER_VALUE_CONTROL}"),
            );
        }
        if http.path.is_empty() {
            c.rule_failed(&format!("{at}.http.path"), &http.path, HEALTH_CHECK_PATH_EMPTY);
        } else if has_header_control(&http.path) {
            c.rule_failed(
                &format!("{at}.http.path"),
                &http.path,
                &format!("path {HEADER_VALUE_CONTROL}"),
            );
        }
    }
    if crd_valid_duration(Some(&hc.interval)) == Some(0) {
        c.rule_failed(
            &format!("{at}.interval"),
            &hc.interval,
            HEALTH_CHECK_INTERVAL_ZERO,
        );
    }
    if crd_valid_duration(Some(&hc.timeout)) == Some(0) {
        c.rule_failed(&format!("{at}.timeout"), &hc.timeout, HEALTH_CHECK_TIMEOUT_ZERO);
    }
    at_most_int32(
        c,
        &format!("{at}.unhealthyThreshold"),
        Some(hc.unhealthy_threshold),
    );
}

fn check_load_balancer(c: &mut Checker, lb: &LoadBalancer) {
    let at = "spec.loadBalancer";
    if let Some(lr) = &lb.least_request
        && let Some(n) = lr.choice_count
    {
        let path = format!("{at}.leastRequest.choiceCount");
        if n < 2 {
            c.rule_failed(&path, &n, CHOICE_COUNT_MIN);
        }
        at_most_int32(c, &path, Some(n));
    }
    if let Some(m) = &lb.maglev {
        check_hash_header_names(c, &format!("{at}.maglev.hashPolicies"), &m.hash_policies);
    }
    if let Some(rh) = &lb.ring_hash {
        let at = format!("{at}.ringHash");
        check_hash_header_names(c, &format!("{at}.hashPolicies"), &rh.hash_policies);
        let mut sizes_ok = true;
        for (name, size) in [
            ("maximumRingSize", rh.maximum_ring_size),
            ("minimumRingSize", rh.minimum_ring_size),
        ] {
            match size {
                // Negative sizes are the CRD's minimum: 0 error.
                Some(n) if n < 0 => sizes_ok = false,
                Some(n) if n > MAX_RING_SIZE => {
                    c.rule_failed(&format!("{at}.{name}"), &n, RING_SIZE_CAP);
                    sizes_ok = false;
                }
                _ => {}
            }
        }
        let min = rh.minimum_ring_size.unwrap_or(DEFAULT_MIN_RING_SIZE);
        let max = rh.maximum_ring_size.unwrap_or(DEFAULT_MAX_RING_SIZE);
        if sizes_ok && min > max {
            c.rule_failed(&at, &"object", &ring_min_above_max(min, max));
        }
    }
    if let Some(za) = &lb.zone_aware
        && let Some(force) = za.prefer_local.as_ref().and_then(|p| p.force.as_ref())
    {
        at_most_int32(
            c,
            &format!("{at}.zoneAware.preferLocal.force.minEndpointsInZoneThreshold"),
            force.min_endpoints_in_zone_threshold,
        );
    }
}

fn check_hash_header_names(c: &mut Checker, at: &str, policies: &[HashPolicy]) {
    for (i, p) in policies.iter().enumerate() {
        if let Some(h) = &p.header
            && has_header_control(&h.name)
        {
            c.rule_failed(
                &format!("{at}[{i}].header.name"),
                &h.name,
                &format!("name {HEADER_NAME_CONTROL}"),
            );
        }
        // A generated cookie is written into a Set-Cookie header: its name and path must not
        // be able to end that header or add attributes.
        if let Some(cookie) = &p.cookie {
            if !cookie.name.is_empty() && !cookie.name.bytes().all(is_token_byte) {
                c.rule_failed(&format!("{at}[{i}].cookie.name"), &cookie.name, COOKIE_NAME_TOKEN);
            }
            if let Some(path) = &cookie.path
                && path.bytes().any(|b| b.is_ascii_control() || b == b';')
            {
                c.rule_failed(&format!("{at}[{i}].cookie.path"), path, COOKIE_PATH_CHARS);
            }
        }
    }
}

/// RFC 9110's `tchar`, which RFC 6265 requires of a cookie name.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn check_tcp_keepalive(c: &mut Checker, at: &str, k: &TcpKeepalive) {
    // Durations over the limit are over the CRD's 1s minimum too, so a valid duration suffices.
    if let Some(n) = crd_valid_duration(k.keep_alive_interval.as_deref())
        && n / NANOS_PER_SECOND > LINUX_MAX_KEEP_SECS
    {
        c.rule_failed(
            &format!("{at}.keepAliveInterval"),
            &k.keep_alive_interval,
            KEEPALIVE_INTERVAL_LINUX,
        );
    }
    // Negative counts are the CRD's minimum: 0 error.
    if let Some(p) = k.keep_alive_probes
        && p >= 0
        && !(1..=LINUX_MAX_KEEPCNT).contains(&p)
    {
        c.rule_failed(&format!("{at}.keepAliveProbes"), &p, KEEPALIVE_PROBES_LINUX);
    }
    if let Some(n) = crd_valid_duration(k.keep_alive_time.as_deref())
        && n / NANOS_PER_SECOND > LINUX_MAX_KEEP_SECS
    {
        c.rule_failed(
            &format!("{at}.keepAliveTime"),
            &k.keep_alive_time,
            KEEPALIVE_TIME_LINUX,
        );
    }
}

/// The ALPN names the data plane speaks upstream (RFC 7301's registry names).
const UPSTREAM_ALPN: &[&str] = &["h2", "http/1.1"];

/// What rustls, the data plane's TLS library, cannot do: renegotiation, TLS 1.0 and 1.1 (both
/// deprecated by RFC 8996), and algorithms it does not implement.
fn check_tls(c: &mut Checker, t: &Tls) {
    use crate::tls_material::{ECDH_CURVES, SIGNATURE_ALGORITHMS, is_supported_cipher_suite};
    let at = "spec.tls";
    for (i, name) in t.alpn_protocols.iter().enumerate() {
        if !UPSTREAM_ALPN.contains(&name.as_str()) {
            c.rule_failed(
                &format!("{at}.alpnProtocols[{i}]"),
                name,
                "kgw speaks HTTP/1.1 and HTTP/2 to backends: offering another protocol would have the backend \
                 choose one kgw does not speak; list only h2 and/or http/1.1, or remove alpnProtocols",
            );
        }
    }
    if let Some(sni) = &t.sni
        && !is_sni_name(sni)
    {
        c.rule_failed(
            &format!("{at}.sni"),
            sni,
            "sni must be a DNS name (TLS sends no IP address as a server name): write the backend's host name, \
             e.g. backend.example.com, or remove sni",
        );
    }
    if t.allow_renegotiation == Some(true) {
        c.rule_failed(
            &format!("{at}.allowRenegotiation"),
            &true,
            "allowRenegotiation is not supported: kgw's TLS library (rustls) never renegotiates (renegotiation is \
             gone from TLS 1.3 and a known attack surface in 1.2); remove the field, or set it to false",
        );
    }
    if let Some(p) = &t.parameters {
        for (field, value) in [("minVersion", &p.min_version), ("maxVersion", &p.max_version)] {
            if let Some(v) = value.as_deref().filter(|v| *v == "1.0" || *v == "1.1") {
                c.rule_failed(
                    &format!("{at}.parameters.{field}"),
                    &v,
                    "TLS 1.0 and 1.1 are not supported (deprecated by RFC 8996; kgw's TLS library, rustls, does not \
                     implement them): use \"1.2\" or \"1.3\", or AUTO",
                );
            }
        }
        for (i, name) in p.cipher_suites.iter().enumerate() {
            if !is_supported_cipher_suite(name) {
                let supported: Vec<&str> = crate::tls_material::CIPHER_SUITES
                    .iter()
                    .map(|(o, _)| *o)
                    .collect();
                c.rule_failed(
                    &format!("{at}.parameters.cipherSuites[{i}]"),
                    name,
                    &format!(
                        "cipher suite not supported by kgw's TLS library (rustls), which offers only forward-secret AEAD \
                         suites: use one of {} (or its IANA name, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
                        supported.join(", ")
                    ),
                );
            }
        }
        for (field, list, supported) in [
            ("ecdhCurves", &p.ecdh_curves, ECDH_CURVES),
            (
                "signatureAlgorithms",
                &p.signature_algorithms,
                SIGNATURE_ALGORITHMS,
            ),
        ] {
            for (i, name) in list.iter().enumerate() {
                if !supported.contains(&name.as_str()) {
                    c.rule_failed(
                        &format!("{at}.parameters.{field}[{i}]"),
                        name,
                        &format!(
                            "not supported by kgw's TLS library (rustls): use one of {}",
                            supported.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

/// A host name TLS can carry as SNI: DNS labels of letters, digits, `-` (and `_`, which
/// rustls takes), not an IP address.
fn is_sni_name(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_err()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
