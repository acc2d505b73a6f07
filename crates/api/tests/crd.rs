//! The BackendConfigPolicy CRD generated from our types has the schema of kgateway's CRD
//! (`../shared/conformance/kgateway/crd-backendconfigpolicies-main.yaml`) without its CEL rules.
//!
//! The schemas are walked side by side from `openAPIV3Schema`, and every difference in property
//! names, `type`, `enum`, bounds, `pattern`, `required`, int-or-string, `default`, `format` and
//! list/map types is reported at once. Ignored: `description` and `x-kubernetes-validations`;
//! upstream's `anyOf: [{type: integer}, {type: string}]` beside `x-kubernetes-int-or-string` and
//! its `allOf` of enums are compared by their effect.

use std::collections::BTreeSet;
use std::path::Path;

use api::crd::backend_config_policy_crd;
use api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Map, Value, json};

const UPSTREAM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/kgateway/crd-backendconfigpolicies-main.yaml"
);

fn upstream() -> Value {
    let text = std::fs::read_to_string(UPSTREAM).unwrap_or_else(|e| panic!("reading {UPSTREAM}: {e}"));
    serde_yaml_ng::from_str(&text).expect("the upstream CRD parses")
}

fn only_version(crd: &Value) -> &Value {
    let versions = crd["spec"]["versions"].as_array().expect("spec.versions");
    assert_eq!(versions.len(), 1, "one version");
    &versions[0]
}

/// Keys whose values must be equal (after [`effective`]).
const COMPARED: &[&str] = &[
    "type",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "required",
    "default",
    "format",
    "nullable",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
];
/// Keys walked into.
const WALKED: &[&str] = &["properties", "items", "additionalProperties"];
/// Keys not compared.
const IGNORED: &[&str] = &["description", "x-kubernetes-validations"];

/// The constraints of one schema node: its own keys but the walked and ignored ones, with
/// `allOf` members folded in (enums intersected), the int-or-string `anyOf` wrapper dropped
/// and `required` sorted.
fn effective(path: &str, schema: &Value, diffs: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(obj) = schema.as_object() else {
        diffs.push(format!("{path}: not a schema object: {schema}"));
        return out;
    };
    for (key, value) in obj {
        let key = key.as_str();
        if WALKED.contains(&key) || IGNORED.contains(&key) || key == "allOf" {
            continue;
        }
        if !COMPARED.contains(&key) {
            diffs.push(format!(
                "{path}: key {key:?} is not handled by this test: {value}"
            ));
        }
        out.insert(key.to_string(), value.clone());
    }
    for member in obj.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        for (key, value) in member.as_object().into_iter().flatten() {
            match (key.as_str(), out.get_mut(key)) {
                ("enum", Some(Value::Array(current))) => {
                    let allowed = value.as_array().cloned().unwrap_or_default();
                    current.retain(|v| allowed.contains(v));
                }
                (_, None) => {
                    out.insert(key.clone(), value.clone());
                }
                (_, Some(current)) if current == value => {}
                (_, Some(current)) => {
                    diffs.push(format!(
                        "{path}: allOf sets {key} to {value}, the schema to {current}"
                    ));
                }
            }
        }
    }
    let int_or_string_wrapper = json!([{ "type": "integer" }, { "type": "string" }]);
    if out.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        && out.get("anyOf") == Some(&int_or_string_wrapper)
    {
        out.remove("anyOf");
    }
    if let Some(Value::Array(required)) = out.get_mut("required") {
        required.sort_by_key(|v| v.to_string());
    }
    out
}

fn property_names(schema: &Value) -> BTreeSet<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Compares `upstream` and `ours` at `path` and below; each difference is one line in `diffs`.
fn compare(path: &str, upstream: &Value, ours: &Value, diffs: &mut Vec<String>) {
    let up = effective(path, upstream, diffs);
    let our = effective(path, ours, diffs);
    let keys: BTreeSet<&String> = up.keys().chain(our.keys()).collect();
    for key in keys {
        let (u, o) = (up.get(key), our.get(key));
        if u != o {
            let show = |v: Option<&Value>| v.map_or_else(|| "(none)".to_string(), Value::to_string);
            diffs.push(format!("{path}: {key}: upstream {}, ours {}", show(u), show(o)));
        }
    }

    let (up_names, our_names) = (property_names(upstream), property_names(ours));
    for name in up_names.difference(&our_names) {
        diffs.push(format!("{path}.{name}: only upstream has this property"));
    }
    for name in our_names.difference(&up_names) {
        diffs.push(format!("{path}.{name}: only ours has this property"));
    }
    for name in up_names.intersection(&our_names) {
        compare(
            &format!("{path}.{name}"),
            &upstream["properties"][name],
            &ours["properties"][name],
            diffs,
        );
    }

    for (key, suffix) in [("items", "[]"), ("additionalProperties", "{}")] {
        match (upstream.get(key), ours.get(key)) {
            (None, None) => {}
            (Some(u), Some(o)) if u.is_object() && o.is_object() => {
                compare(&format!("{path}{suffix}"), u, o, diffs);
            }
            (u, o) => diffs.push(format!("{path}: {key}: upstream {u:?}, ours {o:?}")),
        }
    }
}

#[test]
fn the_schema_is_upstreams_without_cel_rules() {
    let upstream = upstream();
    let ours = backend_config_policy_crd();
    let up_schema = &only_version(&upstream)["schema"]["openAPIV3Schema"];
    let our_schema = &only_version(&ours)["schema"]["openAPIV3Schema"];
    for property in ["spec", "status"] {
        assert!(
            our_schema["properties"][property].is_object(),
            "ours has no {property} schema"
        );
    }
    let mut diffs = Vec::new();
    compare("openAPIV3Schema", up_schema, our_schema, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{} differences with the upstream CRD:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// Every key of every object in `value`, with the path where it is.
fn all_keys(path: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                out.push((path.to_string(), key.clone()));
                all_keys(&format!("{path}.{key}"), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                all_keys(&format!("{path}[{i}]"), v, out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_schema_is_structural_and_has_no_cel_rules() {
    let crd = backend_config_policy_crd();
    let mut keys = Vec::new();
    all_keys("", &crd, &mut keys);
    let refused = [
        "x-kubernetes-validations",
        "$ref",
        "definitions",
        "$defs",
        "$schema",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "nullable",
        "title",
    ];
    let found: Vec<String> = keys
        .iter()
        .filter(|(path, key)| {
            // A property may be called anything: only keys of schemas count.
            !path.ends_with(".properties") && refused.contains(&key.as_str())
        })
        .map(|(path, key)| format!("{path}: {key}"))
        .collect();
    assert!(found.is_empty(), "refused keys in our CRD:\n{}", found.join("\n"));

    // Structural: every node has a type, but int-or-string ones, which have none.
    fn check(path: &str, schema: &Value, errors: &mut Vec<String>) {
        let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        match (schema.get("type").and_then(Value::as_str), int_or_string) {
            (Some(_), false) | (None, true) => {}
            (t, _) => errors.push(format!("{path}: type {t:?}, int-or-string {int_or_string}")),
        }
        if schema.get("properties").is_some() && schema.get("additionalProperties").is_some() {
            errors.push(format!("{path}: both properties and additionalProperties"));
        }
        for (name, property) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            check(&format!("{path}.{name}"), property, errors);
        }
        for (key, suffix) in [("items", "[]"), ("additionalProperties", "{}")] {
            if let Some(sub) = schema.get(key) {
                check(&format!("{path}{suffix}"), sub, errors);
            }
        }
    }
    let mut errors = Vec::new();
    check(
        "openAPIV3Schema",
        &only_version(&crd)["schema"]["openAPIV3Schema"],
        &mut errors,
    );
    assert!(errors.is_empty(), "not structural:\n{}", errors.join("\n"));
}

#[test]
fn the_definition_is_upstreams() {
    let upstream = upstream();
    let ours = backend_config_policy_crd();
    assert_eq!(ours["apiVersion"], upstream["apiVersion"]);
    assert_eq!(ours["kind"], upstream["kind"]);
    assert_eq!(ours["metadata"]["name"], upstream["metadata"]["name"]);
    assert_eq!(
        ours["metadata"]["labels"]["gateway.networking.k8s.io/policy"],
        upstream["metadata"]["labels"]["gateway.networking.k8s.io/policy"]
    );
    for key in ["group", "names", "scope"] {
        assert_eq!(ours["spec"][key], upstream["spec"][key], "spec.{key}");
    }
    let (our_version, up_version) = (only_version(&ours), only_version(&upstream));
    for key in [
        "name",
        "served",
        "storage",
        "subresources",
        "additionalPrinterColumns",
    ] {
        assert_eq!(our_version[key], up_version[key], "spec.versions[0].{key}");
    }
    let our_keys: BTreeSet<&String> = our_version.as_object().unwrap().keys().collect();
    let up_keys: BTreeSet<&String> = up_version.as_object().unwrap().keys().collect();
    assert_eq!(our_keys, up_keys, "the keys of spec.versions[0]");
    assert_eq!(
        format!(
            "{}/{}",
            ours["spec"]["group"].as_str().unwrap(),
            our_version["name"].as_str().unwrap()
        ),
        api::backend_config_policy::API_VERSION
    );
    assert_eq!(ours["spec"]["names"]["kind"], api::backend_config_policy::KIND);
}

#[test]
fn kubernetes_types_read_every_field() {
    let crd = backend_config_policy_crd();
    let mut ignored = Vec::new();
    let _: CustomResourceDefinition = serde_ignored::deserialize(crd, |path| ignored.push(path.to_string()))
        .expect("a CustomResourceDefinition");
    assert_eq!(
        ignored,
        Vec::<String>::new(),
        "fields unknown to apiextensions.k8s.io/v1"
    );
}

#[test]
fn renders_as_yaml() {
    let crd = backend_config_policy_crd();
    let yaml = serde_yaml_ng::to_string(&crd).expect("YAML");
    let back: Value = serde_yaml_ng::from_str(&yaml).expect("the YAML parses");
    assert_eq!(back, crd);
    // For `kubectl apply --dry-run=... -f` by hand.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("crd-backendconfigpolicies.yaml");
    std::fs::write(&out, &yaml).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// The comparison is not blind: changes to our schema show up, all of them at once.
#[test]
fn the_comparison_reports_every_difference() {
    let upstream = upstream();
    let up_schema = &only_version(&upstream)["schema"]["openAPIV3Schema"];
    let mut ours = only_version(&backend_config_policy_crd())["schema"]["openAPIV3Schema"].clone();
    let spec = &mut ours["properties"]["spec"]["properties"];
    spec["connectTimeout"]["maxLength"] = json!(33);
    spec["dns"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("respectTTL");
    spec["dns"]["properties"]["extra"] = json!({ "type": "string" });
    spec["tls"]["properties"]["parameters"]["properties"]["maxVersion"]["enum"] = json!(["1.2", "1.3"]);
    spec["healthCheck"]["required"] = json!(["interval"]);
    spec["http2ProtocolOptions"]["properties"]["initialStreamWindowSize"] = json!({ "type": "string" });
    spec["outlierDetection"]["properties"]["interval"]
        .as_object_mut()
        .unwrap()
        .remove("default");
    spec["targetRefs"]["items"]["properties"]["kind"]["pattern"] = json!("^.*$");
    spec["upstreamProxyProtocol"]["properties"]["version"]["enum"] = json!(["V1"]);
    spec["loadBalancer"]["properties"]["random"]["x-kubernetes-validations"] = json!([{ "rule": "true" }]);
    let mut diffs = Vec::new();
    compare("openAPIV3Schema", up_schema, &ours, &mut diffs);
    let p = "openAPIV3Schema.spec";
    // The upstream int-or-string's anyOf wrapper is no difference: only its effect counts.
    let quantity = &up_schema["properties"]["spec"]["properties"]["http2ProtocolOptions"]["properties"]["initialStreamWindowSize"]
        ["pattern"];
    let want = [
        format!("{p}.connectTimeout: maxLength: upstream 32, ours 33"),
        format!("{p}.dns.respectTTL: only upstream has this property"),
        format!("{p}.dns.extra: only ours has this property"),
        format!(
            "{p}.tls.parameters.maxVersion: enum: upstream [\"AUTO\",\"1.0\",\"1.1\",\"1.2\",\"1.3\"], ours \
             [\"1.2\",\"1.3\"]"
        ),
        format!(
            "{p}.healthCheck: required: upstream [\"healthyThreshold\",\"interval\",\"timeout\",\
             \"unhealthyThreshold\"], ours [\"interval\"]"
        ),
        format!(
            "{p}.http2ProtocolOptions.initialStreamWindowSize: pattern: upstream {quantity}, ours (none)"
        ),
        format!("{p}.http2ProtocolOptions.initialStreamWindowSize: type: upstream (none), ours \"string\""),
        format!(
            "{p}.http2ProtocolOptions.initialStreamWindowSize: x-kubernetes-int-or-string: upstream true, \
             ours (none)"
        ),
        format!("{p}.outlierDetection.interval: default: upstream \"10s\", ours (none)"),
        format!(
            "{p}.targetRefs[].kind: pattern: upstream \"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$\", ours \"^.*$\""
        ),
        format!("{p}.upstreamProxyProtocol.version: enum: upstream [\"V1\",\"V2\"], ours [\"V1\"]"),
    ];
    let mut missing: Vec<&String> = want.iter().filter(|w| !diffs.contains(w)).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "not reported: {missing:#?}\nreported: {diffs:#?}"
    );
    assert_eq!(diffs.len(), want.len(), "reported: {diffs:#?}");
}
