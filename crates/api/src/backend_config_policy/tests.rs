use super::limits::*;
use super::quantity::*;
use super::rules::*;
use super::schema::*;
use super::*;
use serde::Serialize;

fn policy(spec_yaml: &str) -> BackendConfigPolicy {
    let doc = format!(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: p\n  \
         namespace: default\nspec:\n{}",
        spec_yaml.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    let value: serde_json::Value = serde_yaml_ng::from_str(&doc).expect("test YAML parses");
    serde_json::from_value(value).expect("test policy deserializes")
}

fn messages(spec_yaml: &str) -> Vec<String> {
    validate(&policy(spec_yaml))
        .iter()
        .map(ToString::to_string)
        .collect()
}

const TARGET: &str = "targetRefs:\n- group: \"\"\n  kind: Service\n  name: httpbin\n";

fn keepalive(fields: &str) -> Vec<String> {
    messages(&format!(
        "{TARGET}tcpKeepalive:\n{}",
        fields.lines().map(|l| format!("  {l}\n")).collect::<String>()
    ))
}

#[test]
fn the_guide_policy_is_valid() {
    assert_eq!(
        keepalive("keepAliveProbes: 3\nkeepAliveTime: 30s\nkeepAliveInterval: 5s"),
        Vec::<String>::new()
    );
    assert_eq!(keepalive("keepAliveTime: 1m30s"), Vec::<String>::new());
    assert_eq!(messages("tcpKeepalive: {}"), Vec::<String>::new());
    assert_eq!(
        messages(&format!("{TARGET}connectTimeout: 5s")),
        Vec::<String>::new()
    );
}

#[test]
fn keepalive_time_below_one_second() {
    assert_eq!(
        keepalive("keepAliveTime: 500ms"),
        [
            "spec.tcpKeepalive.keepAliveTime: Invalid value: \"500ms\": keepAliveTime must be at least 1 second"
        ]
    );
    assert_eq!(
        keepalive("keepAliveInterval: 0s"),
        [
            "spec.tcpKeepalive.keepAliveInterval: Invalid value: \"0s\": keepAliveInterval must be at least 1 second"
        ]
    );
}

#[test]
fn keepalive_fraction_fails_the_pattern_only() {
    // 1.5s is at least 1s for CEL's duration(), but the pattern has no fractions.
    assert_eq!(
        keepalive("keepAliveTime: 1.5s"),
        [
            "spec.tcpKeepalive.keepAliveTime: Invalid value: \"1.5s\": invalid duration value (write whole numbers with a unit, up to 4 parts: 30s, 1m30s, 500ms, 1h)"
        ]
    );
}

#[test]
fn keepalive_unparsable_duration_reports_both_rules() {
    assert_eq!(
        keepalive("keepAliveTime: abc"),
        [
            "spec.tcpKeepalive.keepAliveTime: Invalid value: \"abc\": invalid duration value (write whole numbers with a unit, up to 4 parts: 30s, 1m30s, 500ms, 1h)",
            "spec.tcpKeepalive.keepAliveTime: Invalid value: \"abc\": type conversion error from 'string' to \
             'google.protobuf.Duration' evaluating rule: keepAliveTime must be at least 1 second",
        ]
    );
}

#[test]
fn keepalive_probes_bounds() {
    assert_eq!(
        keepalive("keepAliveProbes: -1"),
        [
            "spec.tcpKeepalive.keepAliveProbes: Invalid value: -1: spec.tcpKeepalive.keepAliveProbes in body \
             should be greater than or equal to 0"
        ]
    );
    for probes in [0, 128, 200] {
        let got = keepalive(&format!("keepAliveProbes: {probes}"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(&format!(
                "spec.tcpKeepalive.keepAliveProbes: Invalid value: {probes}: keepAliveProbes must be between 1 \
                 and 127 (the Linux TCP_KEEPCNT range)"
            )),
            "{got:?}"
        );
    }
    assert!(keepalive("keepAliveProbes: 1").is_empty());
    assert!(keepalive("keepAliveProbes: 127").is_empty());
}

#[test]
fn keepalive_linux_time_limits() {
    assert!(keepalive("keepAliveTime: 32767s\nkeepAliveInterval: 9h6m7s").is_empty());
    assert!(
        keepalive("keepAliveTime: 32767s999ms").is_empty(),
        "the fraction is dropped"
    );
    let got = keepalive("keepAliveTime: 32768s\nkeepAliveInterval: 10h");
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with(
        "spec.tcpKeepalive.keepAliveInterval: Invalid value: \"10h\": keepAliveInterval must be at most 32767s"
    ));
    assert!(got[0].contains("TCP_KEEPINTVL"));
    assert!(got[1].starts_with(
        "spec.tcpKeepalive.keepAliveTime: Invalid value: \"32768s\": keepAliveTime must be at most 32767s"
    ));
    assert!(got[1].contains("TCP_KEEPIDLE"));
}

#[test]
fn deployment_target_ref_is_refused() {
    let got = messages("targetRefs:\n- group: apps\n  kind: Deployment\n  name: d");
    assert_eq!(
        got,
        [
            "spec.targetRefs: Invalid value: \"array\": TargetRefs must reference either a Kubernetes Service, \
             a Backend, or an Istio Hostname"
        ]
    );
    let got = messages("targetSelectors:\n- group: apps\n  kind: Deployment\n  matchLabels: {app: a}");
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("TargetSelectors must reference"));
}

#[test]
fn target_ref_schema_checks() {
    let got = messages("targetRefs:\n- group: Bad_Group\n  kind: \"\"\n  name: \"\"");
    assert!(got.contains(
        &"spec.targetRefs[0].group: Invalid value: \"Bad_Group\": spec.targetRefs[0].group in body should match \
          '^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'"
            .to_string()
    ));
    assert!(got.contains(
        &"spec.targetRefs[0].kind: Invalid value: \"\": spec.targetRefs[0].kind in body should be at least 1 \
          chars long"
            .to_string()
    ));
    assert!(got.contains(
        &"spec.targetRefs[0].name: Invalid value: \"\": spec.targetRefs[0].name in body should be at least 1 \
          chars long"
            .to_string()
    ));
    // Pattern and length errors do not block the rules.
    assert!(got.iter().any(|m| m.contains("TargetRefs must reference")));
}

#[test]
fn at_most_one_http_protocol() {
    assert_eq!(
        messages(&format!(
            "{TARGET}http1ProtocolOptions: {{}}\nhttp2ProtocolOptions: {{}}"
        )),
        [
            "spec: Invalid value: \"object\": at most one of the fields in [http1ProtocolOptions \
             http2ProtocolOptions] may be set"
        ]
    );
    assert!(messages(&format!("{TARGET}http2ProtocolOptions: {{}}")).is_empty());
}

#[test]
fn dns_jitter_and_refresh_rate() {
    assert_eq!(
        messages(&format!("{TARGET}dns:\n  refreshRate: 5s\n  jitter: 10s")),
        ["spec.dns: Invalid value: \"object\": jitter must be less than or equal to refreshRate"]
    );
    assert!(messages(&format!("{TARGET}dns:\n  refreshRate: 5s\n  jitter: 5s")).is_empty());
    assert_eq!(
        messages(&format!("{TARGET}dns:\n  refreshRate: 0s")),
        ["spec.dns.refreshRate: Invalid value: \"0s\": refreshRate must be at least 1ms"]
    );
    assert_eq!(
        messages(&format!("{TARGET}dns:\n  refreshRate: 5s\n  jitter: 1x")),
        [
            "spec.dns: Invalid value: \"object\": type conversion error from 'string' to \
             'google.protobuf.Duration' evaluating rule: jitter must be less than or equal to refreshRate",
            "spec.dns.jitter: Invalid value: \"1x\": invalid duration value (write whole numbers with a unit, up to 4 parts: 30s, 1m30s, 500ms, 1h)",
        ]
    );
}

#[test]
fn blocking_errors_skip_the_rules() {
    let got = messages(&format!(
        "{TARGET}tcpKeepalive:\n  keepAliveTime: 500ms\ntls:\n  insecureSkipVerify: true\n  parameters:\n    \
         maxVersion: \"1.4\""
    ));
    assert_eq!(
        got,
        [
            "spec.tls.parameters.maxVersion: Unsupported value: \"1.4\": supported values: \"AUTO\", \"1.0\", \
             \"1.1\", \"1.2\", \"1.3\"",
            "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was \
             invalid; correct the existing errors to complete validation",
        ]
    );
    let got = keepalive("keepAliveTime: 123456789012345678901234567890123s");
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].ends_with("may not be more than 32 bytes"), "{got:?}");
}

#[test]
fn load_balancer_rules() {
    let got = messages(&format!("{TARGET}loadBalancer:\n  healthyPanicThreshold: 101"));
    assert_eq!(
        got,
        [
            "spec.loadBalancer.healthyPanicThreshold: Invalid value: 101: spec.loadBalancer.healthyPanicThreshold \
             in body should be less than or equal to 100",
            "spec.loadBalancer: Invalid value: \"object\": exactly one of the fields in [leastRequest roundRobin \
             ringHash maglev random] must be set",
        ]
    );
    let got = messages(&format!(
        "{TARGET}loadBalancer:\n  ringHash:\n    hashPolicies:\n    - header: {{name: x}}\n      sourceIP: {{}}\n  \
         zoneAware: {{}}"
    ));
    assert_eq!(
        got,
        [
            "spec.loadBalancer: Invalid value: \"object\": zoneAware is not supported with ringHash or maglev \
             load balancers",
            "spec.loadBalancer.ringHash.hashPolicies[0]: Invalid value: \"object\": exactly one of the fields in \
             [header cookie sourceIP] must be set",
            "spec.loadBalancer.zoneAware: Invalid value: \"object\": at least one of the fields in [preferLocal] \
             must be set",
        ]
    );
    assert!(messages(&format!("{TARGET}loadBalancer:\n  random: {{}}")).is_empty());
}

#[test]
fn aggression() {
    let slow_start = |a: &str| {
        messages(&format!(
            "{TARGET}loadBalancer:\n  roundRobin:\n    slowStart:\n      aggression: {a}"
        ))
    };
    for ok in ["\"1.0\"", "\"0.5\"", "\".5\"", "\"2.\"", "\"3\""] {
        assert!(slow_start(ok).is_empty(), "{ok}");
    }
    for bad in ["\"\"", "\"0\"", "\"-1\"", "\"0.0\"", "\"1e3\"", "\"abc\""] {
        let got = slow_start(bad);
        assert_eq!(got.len(), 1, "{bad}: {got:?}");
        assert!(got[0].ends_with(AGGRESSION), "{got:?}");
    }
    let huge = format!("\"{}\"", "9".repeat(400));
    assert!(slow_start(&huge)[0].contains("type conversion error from 'string' to 'double'"));
}

#[test]
fn window_sizes_as_integers_and_quantities() {
    let h2 = |v: &str| {
        messages(&format!(
            "{TARGET}http2ProtocolOptions:\n  initialStreamWindowSize: {v}"
        ))
    };
    for ok in [
        "65535",
        "2147483647",
        "\"65535\"",
        "\"64Ki\"",
        "\"2147483647\"",
        "\"65534.5\"",
        "\"1e5\"",
        "\"1.5Gi\"",
    ] {
        assert!(h2(ok).is_empty(), "{ok}: {:?}", h2(ok));
    }
    for bad in [
        "65534",
        "2147483648",
        "-1",
        "\"65534\"",
        "\"2Gi\"",
        "\"2147483647.9999999999\"",
        "\"64k\"",
        "\"-1\"",
    ] {
        let got = h2(bad);
        assert_eq!(got.len(), 1, "{bad}: {got:?}");
        assert!(got[0].ends_with(STREAM_WINDOW), "{got:?}");
    }
    let got = h2("\"64 Ki\"");
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains("in body should match"), "{got:?}");
    assert!(
        got[1].contains("quantities must match the regular expression"),
        "{got:?}"
    );
    let got = h2("\"1e2.5\"");
    assert_eq!(
        got.len(),
        1,
        "the pattern allows it, ParseQuantity does not: {got:?}"
    );
    assert!(got[0].contains("quantities must match"), "{got:?}");
}

#[test]
fn quantity_parsing() {
    let q = Quantity::parse("-0012.50Ki").unwrap();
    assert_eq!(
        q,
        Quantity {
            negative: true,
            digits: vec![1, 2, 5, 0],
            exp10: -2,
            exp2: 10
        }
    );
    assert_eq!(Quantity::parse("1Kb"), Err(QUANTITY_FORMAT_ERROR));
    assert_eq!(Quantity::parse("1iK"), Err(QUANTITY_SUFFIX_ERROR));
    assert_eq!(Quantity::parse("1e"), Err(QUANTITY_SUFFIX_ERROR));
    assert_eq!(Quantity::parse(""), Err(QUANTITY_FORMAT_ERROR));
    assert_eq!(Quantity::parse("1x"), Err(QUANTITY_FORMAT_ERROR));
    assert!(Quantity::parse("1E3").unwrap().is_greater_than(999));
    assert!(!Quantity::parse("1E3").unwrap().is_greater_than(1000));
    assert!(Quantity::parse("1e-9999999999").unwrap().is_less_than(1));
    assert!(!Quantity::parse("1e99999").unwrap().is_less_than(1));
    assert!(Quantity::parse("0.0000000001").unwrap().is_less_than(1));
    assert!(
        !Quantity::parse("0.9999999999").unwrap().is_less_than(1),
        "rounded up to 1"
    );
}

#[test]
fn health_check_and_outlier_detection() {
    let got = messages(&format!(
        "{TARGET}healthCheck:\n  timeout: 1s\n  interval: 1s\n  healthyThreshold: -1\n  unhealthyThreshold: 1"
    ));
    assert_eq!(
        got,
        [
            "spec.healthCheck.healthyThreshold: Invalid value: -1: spec.healthCheck.healthyThreshold in body \
             should be greater than or equal to 0",
            "spec.healthCheck: Invalid value: \"object\": exactly one of http or grpc must be set",
        ]
    );
    let got = messages(&format!(
        "{TARGET}outlierDetection:\n  interval: 0ms\n  maxEjectionPercent: 100"
    ));
    assert_eq!(
        got,
        ["spec.outlierDetection.interval: Invalid value: \"0ms\": interval must be at least 1ms"]
    );
}

#[test]
fn tls_rules() {
    assert_eq!(
        messages(&format!("{TARGET}tls:\n  sni: example.com")),
        [
            "spec.tls: Invalid value: \"object\": exactly one of the fields in [secretRef files insecureSkipVerify \
             wellKnownCACertificates] must be set"
        ]
    );
    assert_eq!(
        messages(&format!("{TARGET}tls:\n  files: {{}}")),
        [
            "spec.tls.files: Invalid value: \"object\": At least one of tlsCertificate, tlsKey, or rootCA must be \
             set in TLSFiles"
        ]
    );
    assert!(messages(&format!("{TARGET}tls:\n  wellKnownCACertificates: System")).is_empty());
    assert!(messages(&format!("{TARGET}tls:\n  secretRef:\n    name: tls")).is_empty());
}

#[test]
fn circuit_breakers_and_proxy_protocol() {
    assert_eq!(
        messages(&format!("{TARGET}circuitBreakers:\n  trackRemaining: true")),
        [format!(
            "spec.circuitBreakers: Invalid value: \"object\": {CIRCUIT_BREAKERS_ONE}"
        )]
    );
    assert_eq!(
        messages(&format!("{TARGET}upstreamProxyProtocol:\n  version: V3")),
        [
            "spec.upstreamProxyProtocol.version: Unsupported value: \"V3\": supported values: \"V1\", \"V2\"",
            &format!("<nil>: Invalid value: \"null\": {SKIPPED_RULES}"),
        ]
    );
}

#[test]
fn int_or_string_reads_64_bit_integers() {
    let v: IntOrString = serde_json::from_str("2147483648").unwrap();
    assert_eq!(v, IntOrString::Int(2147483648));
    let v: IntOrString = serde_json::from_str("\"64Ki\"").unwrap();
    assert_eq!(v, IntOrString::String("64Ki".into()));
    assert!(serde_json::from_str::<IntOrString>("1.5").is_err());
    assert!(serde_json::from_str::<IntOrString>("18446744073709551615").is_err());
    assert_eq!(serde_json::to_string(&IntOrString::Int(-3)).unwrap(), "-3");
}

// ---- The CRD itself: the types and the messages must cover all of it.

fn crd_schema() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/kgateway/crd-backendconfigpolicies-main.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let crd: serde_json::Value = serde_yaml_ng::from_str(&text).expect("the CRD parses");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// A value that sets every property the schema declares.
fn example(schema: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return json!(65535);
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("object") => {
            let mut map = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    map.insert(name.clone(), example(prop));
                }
            }
            if let Some(extra) = schema.get("additionalProperties") {
                map.insert("key".into(), example(extra));
            }
            Value::Object(map)
        }
        Some("array") => json!([example(&schema["items"])]),
        Some("integer") => json!(1),
        Some("boolean") => json!(true),
        Some("string") if schema["format"] == "date-time" => json!("2026-01-02T03:04:05Z"),
        Some("string") => json!("x"),
        other => panic!("schema type {other:?} not handled: {schema}"),
    }
}

fn assert_round_trips<T: serde::de::DeserializeOwned + Serialize>(what: &str, value: serde_json::Value) {
    let mut ignored = Vec::new();
    let typed: T = serde_ignored::deserialize(value.clone(), |path| ignored.push(path.to_string()))
        .unwrap_or_else(|e| panic!("{what} does not deserialize: {e}"));
    assert_eq!(
        ignored,
        Vec::<String>::new(),
        "{what}: fields of the CRD that the types do not have"
    );
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, value, "{what}: the types lose or rename fields");
}

#[test]
fn the_types_cover_every_field_of_the_crd() {
    let schema = crd_schema();
    assert_round_trips::<BackendConfigPolicySpec>("spec", example(&schema["properties"]["spec"]));
    assert_round_trips::<PolicyStatus>("status", example(&schema["properties"]["status"]));
}

fn collect_messages(schema: &serde_json::Value, out: &mut Vec<String>) {
    match schema {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if key == "x-kubernetes-validations" {
                    for rule in value.as_array().into_iter().flatten() {
                        out.push(
                            rule["message"]
                                .as_str()
                                .expect("every rule has a message")
                                .to_string(),
                        );
                    }
                } else {
                    collect_messages(value, out);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_messages(v, out)),
        _ => {}
    }
}

#[test]
fn every_cel_message_of_the_crd_is_implemented() {
    let mut all = Vec::new();
    collect_messages(&crd_schema(), &mut all);
    assert_eq!(
        all.len(),
        45,
        "the CRD's rules changed: review validate() against them"
    );
    let ours = [
        INVALID_DURATION,
        AT_MOST_ONE_HTTP,
        TARGET_REFS_KINDS,
        TARGET_SELECTORS_KINDS,
        CIRCUIT_BREAKERS_ONE,
        JITTER_LE_REFRESH,
        REFRESH_RATE_MIN,
        HTTP_OR_GRPC,
        CONNECTION_IDLE_INTERVAL_MIN,
        H2_INTERVAL_MIN,
        H2_TIMEOUT_MIN,
        CONNECTION_WINDOW,
        STREAM_WINDOW,
        AGGRESSION,
        HASH_POLICY_ONE,
        PREFER_LOCAL_SET,
        LOCALITY_XOR_ZONE,
        ZONE_AWARE_HASHING,
        ONE_LB_TYPE,
        BASE_EJECTION_MIN,
        OUTLIER_INTERVAL_MIN,
        KEEPALIVE_INTERVAL_MIN,
        KEEPALIVE_TIME_MIN,
        TLS_FILES_ONE,
        TLS_ONE_SOURCE,
    ];
    // Ours may add a hint after the CRD's words.
    let ours: Vec<&str> = ours
        .iter()
        .map(|m| m.split(" (write whole numbers").next().unwrap_or(m))
        .collect();
    for message in &all {
        assert!(
            ours.contains(&message.as_str()),
            "CRD rule message not implemented: {message:?}"
        );
    }
    for message in &ours {
        assert!(
            all.iter().any(|m| m == message),
            "message not in the CRD: {message:?}"
        );
    }
}

// ---- Limits of the data plane (limits.rs): valid for the API server, refused by kgw.

const HEALTH_CHECK: &str = "healthCheck:\n  http: {path: /health}\n  interval: 1s\n  timeout: 1s\n  \
                            healthyThreshold: 1\n  unhealthyThreshold: 1";

#[test]
fn zero_durations_envoy_refuses() {
    assert_eq!(
        messages(&format!("{TARGET}connectTimeout: 0s")),
        [format!(
            "spec.connectTimeout: Invalid value: \"0s\": {CONNECT_TIMEOUT_ZERO}"
        )]
    );
    // Zero in any unit, and in several parts, is still zero.
    assert_eq!(messages(&format!("{TARGET}connectTimeout: 0h0m0ms")).len(), 1);
    let hc = HEALTH_CHECK
        .replace("interval: 1s", "interval: 0s")
        .replace("timeout: 1s", "timeout: 0ms");
    assert_eq!(
        messages(&format!("{TARGET}{hc}")),
        [
            format!("spec.healthCheck.interval: Invalid value: \"0s\": {HEALTH_CHECK_INTERVAL_ZERO}"),
            format!("spec.healthCheck.timeout: Invalid value: \"0ms\": {HEALTH_CHECK_TIMEOUT_ZERO}"),
        ]
    );
    // A duration the CRD already refuses gets the CRD's message only.
    assert_eq!(
        messages(&format!("{TARGET}connectTimeout: \"0\"")),
        [format!(
            "spec.connectTimeout: Invalid value: \"0\": {INVALID_DURATION}"
        )]
    );
}

#[test]
fn health_check_path_and_host_envoy_refuses() {
    let hc = HEALTH_CHECK.replace("path: /health", "path: \"\"");
    assert_eq!(
        messages(&format!("{TARGET}{hc}")),
        [format!(
            "spec.healthCheck.http.path: Invalid value: \"\": {HEALTH_CHECK_PATH_EMPTY}"
        )]
    );
    let hc = HEALTH_CHECK.replace("{path: /health}", "{path: \"/a\\r\\nb\", host: \"x\\u0000\"}");
    let got = messages(&format!("{TARGET}{hc}"));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with(
            "spec.healthCheck.http.host: Invalid value: \"x\\u0000\": host must not contain NUL, CR or LF"
        ),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("spec.healthCheck.http.path: Invalid value: \"/a\\r\\nb\": path must not contain"),
        "{got:?}"
    );
}

#[test]
fn max_headers_count_zero_and_choice_count_below_two() {
    assert_eq!(
        messages(&format!(
            "{TARGET}commonHttpProtocolOptions:\n  maxHeadersCount: 0"
        )),
        [format!(
            "spec.commonHttpProtocolOptions.maxHeadersCount: Invalid value: 0: {MAX_HEADERS_COUNT_ZERO}"
        )]
    );
    assert_eq!(
        messages(&format!(
            "{TARGET}commonHttpProtocolOptions:\n  maxHeadersCount: 101"
        )),
        [format!(
            "spec.commonHttpProtocolOptions.maxHeadersCount: Invalid value: 101: {MAX_HEADERS_COUNT_CAP}"
        )]
    );
    for n in ["1", "0", "-3"] {
        assert_eq!(
            messages(&format!(
                "{TARGET}loadBalancer:\n  leastRequest:\n    choiceCount: {n}"
            )),
            [format!(
                "spec.loadBalancer.leastRequest.choiceCount: Invalid value: {n}: {CHOICE_COUNT_MIN}"
            )]
        );
    }
    assert!(
        messages(&format!(
            "{TARGET}loadBalancer:\n  leastRequest:\n    choiceCount: 2"
        ))
        .is_empty()
    );
}

#[test]
fn ring_sizes_envoy_refuses() {
    let ring = |fields: &str| {
        messages(&format!(
            "{TARGET}loadBalancer:\n  ringHash:\n    hashPolicies:\n    - sourceIP: {{}}\n{}",
            fields.lines().map(|l| format!("    {l}\n")).collect::<String>()
        ))
    };
    assert_eq!(
        ring("minimumRingSize: 2000\nmaximumRingSize: 1000"),
        [format!(
            "spec.loadBalancer.ringHash: Invalid value: \"object\": {}",
            ring_min_above_max(2000, 1000)
        )]
    );
    // An unset minimum is Envoy's 1024.
    assert_eq!(
        ring("maximumRingSize: 512"),
        [format!(
            "spec.loadBalancer.ringHash: Invalid value: \"object\": {}",
            ring_min_above_max(1024, 512)
        )]
    );
    assert_eq!(
        ring("maximumRingSize: 8388609"),
        [format!(
            "spec.loadBalancer.ringHash.maximumRingSize: Invalid value: 8388609: {RING_SIZE_CAP}"
        )]
    );
    // Over the cap is said once, not again as min > max.
    assert_eq!(
        ring("minimumRingSize: 9000000"),
        [format!(
            "spec.loadBalancer.ringHash.minimumRingSize: Invalid value: 9000000: {RING_SIZE_CAP}"
        )]
    );
    for ok in [
        "minimumRingSize: 0",
        "maximumRingSize: 8388608",
        "minimumRingSize: 1024\nmaximumRingSize: 1024",
        "",
    ] {
        assert_eq!(ring(ok), Vec::<String>::new(), "{ok}");
    }
    let got = ring("minimumRingSize: -1\nmaximumRingSize: -2");
    assert_eq!(got.len(), 2, "the CRD's minimum only: {got:?}");
}

#[test]
fn hash_header_names_envoy_refuses() {
    let got = messages(&format!(
        "{TARGET}loadBalancer:\n  maglev:\n    hashPolicies:\n    - header: {{name: \"x\\ny\"}}"
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(
            "spec.loadBalancer.maglev.hashPolicies[0].header.name: Invalid value: \"x\\ny\": name must not"
        ),
        "{got:?}"
    );
}

#[test]
fn int32_fields_beyond_32_bits() {
    assert_eq!(
        messages(&format!("{TARGET}circuitBreakers:\n  maxConnections: 2147483648")),
        [format!(
            "spec.circuitBreakers.maxConnections: Invalid value: 2147483648: {INT32_MAX}"
        )]
    );
    assert_eq!(
        messages(&format!("{TARGET}perConnectionBufferLimitBytes: 4294967296")),
        [format!(
            "spec.perConnectionBufferLimitBytes: Invalid value: 4294967296: {INT32_MAX}"
        )]
    );
    assert!(messages(&format!("{TARGET}perConnectionBufferLimitBytes: 2147483647")).is_empty());
}

#[test]
fn zeros_the_data_plane_serves_are_accepted() {
    let spec = format!(
        "{TARGET}perConnectionBufferLimitBytes: 0\ncommonHttpProtocolOptions:\n  idleTimeout: 0s\n  \
         maxRequestsPerConnection: 0\n  maxStreamDuration: 0s\n{}\nloadBalancer:\n  ringHash:\n    \
         minimumRingSize: 0\n    hashPolicies:\n    - cookie: {{name: s, ttl: 0s}}",
        HEALTH_CHECK
            .replace("healthyThreshold: 1", "healthyThreshold: 0")
            .replace("unhealthyThreshold: 1", "unhealthyThreshold: 0")
    );
    assert_eq!(messages(&spec), Vec::<String>::new());
}

#[test]
fn limits_wait_for_a_schema_that_passes() {
    let got = messages(&format!(
        "{TARGET}connectTimeout: 0s\nupstreamProxyProtocol:\n  version: V3"
    ));
    assert_eq!(
        got,
        [
            "spec.upstreamProxyProtocol.version: Unsupported value: \"V3\": supported values: \"V1\", \"V2\""
                .to_string(),
            format!("<nil>: Invalid value: \"null\": {SKIPPED_RULES}"),
        ]
    );
}

#[test]
fn a_generated_cookie_cannot_break_its_set_cookie_header() {
    let lb = |cookie: &str| {
        format!("{TARGET}loadBalancer:\n  ringHash:\n    hashPolicies:\n    - cookie: {cookie}\n")
    };
    assert_eq!(
        messages(&lb("{name: session-id, ttl: 1h, path: /api}")),
        Vec::<String>::new()
    );
    assert_eq!(
        messages(&lb("{name: \"a b\", ttl: 1h}")),
        [format!(
            "spec.loadBalancer.ringHash.hashPolicies[0].cookie.name: Invalid value: \"a b\": {COOKIE_NAME_TOKEN}"
        )]
    );
    assert_eq!(
        messages(&lb("{name: s, ttl: 1h, path: \"/\\r\\nX-Evil: 1\"}")),
        [format!(
            "spec.loadBalancer.ringHash.hashPolicies[0].cookie.path: Invalid value: \"/\\r\\nX-Evil: 1\": {COOKIE_PATH_CHARS}"
        )]
    );
    assert_eq!(
        messages(&lb("{name: s, path: \"/; Domain=evil\"}")).len(),
        1,
        "a ';' would add an attribute"
    );
}

#[test]
fn window_quantities_read_as_whole_bytes_rounded_up() {
    let value = |s: &str| IntOrString::String(s.into()).whole_value();
    assert_eq!(value("64Ki"), Some(65536));
    assert_eq!(value("1024Ki"), Some(1_048_576));
    assert_eq!(value("1Mi"), Some(1_048_576));
    assert_eq!(value("1e5"), Some(100_000));
    assert_eq!(value("1.5k"), Some(1500));
    // Quantity.Value() rounds up: the CRD's bound 65534 < q admits 65534.5, read as 65535.
    assert_eq!(value("65534.5"), Some(65535));
    assert_eq!(value("1.5Gi"), Some(1_610_612_736));
    assert_eq!(value("not a quantity"), None);
    assert_eq!(IntOrString::Int(70000).whole_value(), Some(70000));
}

#[test]
fn upstream_alpn_offers_h2_and_http11_only() {
    let alpn = |list: &str| {
        messages(&format!(
            "{TARGET}tls:\n  insecureSkipVerify: true\n  alpnProtocols: {list}"
        ))
    };
    assert_eq!(alpn("[h2, http/1.1]"), Vec::<String>::new());
    assert_eq!(alpn("[h2]"), Vec::<String>::new());
    let got = alpn("[h2, h3]");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0]
            .starts_with("spec.tls.alpnProtocols[1]: Invalid value: \"h3\": kgw speaks HTTP/1.1 and HTTP/2"),
        "{got:?}"
    );
    assert!(got[0].contains("list only h2 and/or http/1.1"), "{got:?}");
}

#[test]
fn http2_keepalive_needs_its_timeout_and_windows_their_minimum() {
    let doc = "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: p\n  \
         namespace: default\nspec:\n  targetRefs: [{group: \"\", kind: Service, name: httpbin}]\n  \
         http2ProtocolOptions:\n    connectionKeepalive:\n      interval: 10s\n";
    let got = match crate::parse_manifests(doc, "test") {
        Ok(_) => Vec::new(),
        Err(e) => vec![e.to_string()],
    };
    assert!(
        got.iter().any(|m| m.contains("BackendConfigPolicy \"default/p\" is invalid: \
            spec.http2ProtocolOptions.connectionKeepalive: Invalid value: {\"interval\":\"10s\"}: timeout is required")),
        "{got:?}"
    );
    let got = messages(&format!(
        "{TARGET}http2ProtocolOptions:\n  initialStreamWindowSize: 1024"
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("spec.http2ProtocolOptions.initialStreamWindowSize: Invalid value: 1024"),
        "{got:?}"
    );
}
