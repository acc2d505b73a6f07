//! `kgw crds`: every CustomResourceDefinition kgw needs, generated from the Rust types it reads
//! (Gateway API's from the gateway-api crate, BackendConfigPolicy's from ours), as a YAML
//! stream for `kgw crds | kubectl apply -f -`. Backend and ListenerPolicy, whose types carry no
//! schema, are written out here, their shared parts (tcpKeepalive, conditions, policy status)
//! taken from BackendConfigPolicy's generated schema.
//!
//! By default the CRDs carry upstream's CEL rules ([`cel_rules`]): Kubernetes 1.25 and later
//! then refuse what upstream's CRDs refuse, with no webhook. `kgw crds --no-cel` leaves them out
//! for older API servers, which refuse a CRD that has them (there kgw's webhook validates).

mod cel_rules;

use kube::CustomResourceExt;
use serde_json::{Value, json};

/// Gateway API's group is protected (`*.k8s.io`): the API server wants the approval annotation
/// the upstream CRDs carry.
const APPROVAL: &str = "https://github.com/kubernetes-sigs/gateway-api/pull/1538";

/// Whether the CRDs carry upstream's CEL rules (`x-kubernetes-validations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cel {
    /// Kubernetes 1.25 and later: the API server checks the rules.
    Rules,
    /// Before 1.25: API servers refuse the field.
    None,
}

pub fn all(cel: Cel) -> anyhow::Result<Vec<Value>> {
    let mut backend_tls_policy = serde_json::to_value(api::BackendTlsPolicy::crd())?;
    // Gateway API's policy metaresource label (GEP-713), as the upstream CRD carries it.
    backend_tls_policy["metadata"]["labels"]["gateway.networking.k8s.io/policy"] = "Direct".into();
    let mut gateway_api = vec![
        serde_json::to_value(api::gateway_api::gatewayclasses::GatewayClass::crd())?,
        serde_json::to_value(api::gateway_api::gateways::Gateway::crd())?,
        serde_json::to_value(api::gateway_api::httproutes::HttpRoute::crd())?,
        serde_json::to_value(api::gateway_api::grpcroutes::GrpcRoute::crd())?,
        reference_grant_crd()?,
        backend_tls_policy,
    ];
    for crd in &mut gateway_api {
        clean_schema(crd);
        crd["metadata"]["annotations"]["api-approved.kubernetes.io"] = Value::String(APPROVAL.into());
    }
    let mut policy = api::crd::backend_config_policy_crd();
    drop_empty_string_defaults(&mut policy);
    let backend = backend_crd(&policy);
    let listener_policy = listener_policy_crd(&policy);
    gateway_api.extend([policy, backend, listener_policy]);
    if cel == Cel::Rules {
        let keywords = cel_rules::parse_keywords(
            "gateway-api-v1.5.1-keywords.yaml",
            cel_rules::GATEWAY_API_KEYWORDS,
        )?;
        let rules = [
            cel_rules::parse("backendconfigpolicy-rules.yaml", cel_rules::BACKEND_CONFIG_POLICY)?,
            cel_rules::parse("gateway-api-v1.5.1-rules.yaml", cel_rules::GATEWAY_API)?,
        ];
        for crd in &mut gateway_api {
            cel_rules::place_keywords(crd, &keywords)?;
            for rules in &rules {
                cel_rules::place(crd, rules)?;
            }
        }
    }
    for crd in &mut gateway_api {
        nullable_groups(crd);
    }
    Ok(gateway_api)
}

/// ReferenceGrant as every Gateway API release serves it: `v1beta1` (the stored version, which
/// kgw watches) and, from Gateway API 1.5, `v1` with the same schema. The gateway-api crate
/// generates only `v1`; the schemas are equal, so no conversion webhook is needed.
fn reference_grant_crd() -> anyhow::Result<Value> {
    let mut crd = serde_json::to_value(api::ReferenceGrant::crd())?;
    let v1 = crd["spec"]["versions"][0].clone();
    anyhow::ensure!(
        v1["name"] == "v1",
        "the gateway-api crate's ReferenceGrant CRD is not v1: {}",
        v1["name"]
    );
    let mut v1beta1 = v1.clone();
    v1beta1["name"] = "v1beta1".into();
    v1beta1["storage"] = true.into();
    let mut v1 = v1;
    v1["storage"] = false.into();
    crd["spec"]["versions"] = json!([v1beta1, v1]);
    Ok(crd)
}

/// Where BackendConfigPolicy's generated schema keeps what Backend and ListenerPolicy share.
const POLICY_SCHEMA: &str = "/spec/versions/0/schema/openAPIV3Schema/properties";

fn shared_schema(policy: &Value, pointer: &str) -> Value {
    policy
        .pointer(&format!("{POLICY_SCHEMA}{pointer}"))
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))
}

/// Settings kept as written (the Backend types and ListenerPolicy fields kgw refuses as not
/// supported yet): the API server stores them whole, and kgw's refusal names them.
fn kept_as_written() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// kgateway's Backend: the fields of `api::backend` typed (type Static with its hosts), the
/// other types kept as written.
fn backend_crd(policy: &Value) -> Value {
    let condition = shared_schema(
        policy,
        "/status/properties/ancestors/items/properties/conditions/items",
    );
    let spec = json!({
        "type": "object",
        "properties": {
            "type": { "type": "string", "enum": api::backend::BACKEND_TYPES },
            "static": {
                "type": "object",
                "properties": {
                    "hosts": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {
                                "host": { "type": "string", "minLength": 1 },
                                "port": { "type": "integer", "format": "int32", "minimum": 1, "maximum": 65535 },
                                "insecureSkipVerify": { "type": "boolean" },
                            },
                            "required": ["host", "port"],
                        },
                    },
                    "appProtocol": { "type": "string", "enum": api::backend::APP_PROTOCOLS },
                },
                "required": ["hosts"],
            },
            "aws": kept_as_written(),
            "dynamicForwardProxy": kept_as_written(),
            "gcp": kept_as_written(),
        },
    });
    let status = json!({
        "type": "object",
        "properties": {
            "conditions": {
                "type": "array",
                "maxItems": 8,
                "items": condition,
                "x-kubernetes-list-map-keys": ["type"],
                "x-kubernetes-list-type": "map",
            },
        },
    });
    let columns = json!([
        { "jsonPath": ".spec.type", "name": "Type", "type": "string" },
        {
            "description": "Backend acceptance status",
            "jsonPath": ".status.conditions[?(@.type=='Accepted')].status",
            "name": "Accepted",
            "type": "string",
        },
    ]);
    api::crd::kgateway_crd("Backend", "backends", columns, spec, status)
}

/// kgateway's ListenerPolicy: targets (Gateways), `default` and `perPort` listener settings
/// (tcpKeepalive as BackendConfigPolicy's, the buffer limit; the rest kept as written), and
/// BackendConfigPolicy's status (ancestors).
fn listener_policy_crd(policy: &Value) -> Value {
    let listener = json!({
        "type": "object",
        "properties": {
            "tcpKeepalive": shared_schema(policy, "/spec/properties/tcpKeepalive"),
            "perConnectionBufferLimitBytes": { "type": "integer", "format": "int32", "minimum": 0 },
            "proxyProtocol": kept_as_written(),
            "httpSettings": kept_as_written(),
            "rbac": kept_as_written(),
            // kgateway allows it only under `default`; kept under perPort too, so kgw's
            // refusal names it instead of the API server pruning it silently.
            "clientCertificateValidation": kept_as_written(),
        },
    });
    let name = json!({ "type": "string", "minLength": 1, "maxLength": 253 });
    let group = json!({ "type": "string", "maxLength": 253 });
    let kind = json!({ "type": "string", "minLength": 1, "maxLength": 63 });
    let spec = json!({
        "type": "object",
        "properties": {
            "targetRefs": {
                "type": "array",
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "properties": { "group": group, "kind": kind, "name": name, "sectionName": name },
                    "required": ["group", "kind", "name"],
                },
            },
            "targetSelectors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "group": group,
                        "kind": kind,
                        "matchLabels": { "type": "object", "additionalProperties": { "type": "string" } },
                        "sectionName": name,
                    },
                    "required": ["group", "kind", "matchLabels"],
                },
            },
            "default": listener,
            "perPort": {
                "type": "array",
                "maxItems": 64,
                "items": {
                    "type": "object",
                    "properties": {
                        "port": { "type": "integer", "format": "int32", "minimum": 1, "maximum": 65535 },
                        "listener": listener,
                    },
                    "required": ["port", "listener"],
                },
            },
        },
    });
    let columns = json!([
        {
            "description": "Listener policy acceptance status",
            "jsonPath": ".status.ancestors[*].conditions[?(@.type=='Accepted')].status",
            "name": "Accepted",
            "type": "string",
        },
        {
            "description": "Listener policy attachment status",
            "jsonPath": ".status.ancestors[*].conditions[?(@.type=='Attached')].status",
            "name": "Attached",
            "type": "string",
        },
    ]);
    let mut crd = api::crd::kgateway_crd(
        "ListenerPolicy",
        "listenerpolicies",
        columns,
        spec,
        shared_schema(policy, "/status"),
    );
    crd["metadata"]["labels"] = json!({ "gateway.networking.k8s.io/policy": "Direct" });
    crd
}

pub fn print(cel: Cel) -> anyhow::Result<()> {
    for crd in all(cel)? {
        println!("---");
        print!("{}", serde_yaml_ng::to_string(&crd)?);
    }
    Ok(())
}

/// kube-apiserver 1.20 refuses `default: ""` ("must be of type string: null"); an empty name
/// by default means the same as no name, so such defaults are left out.
fn drop_empty_string_defaults(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("default") == Some(&Value::String(String::new())) {
                map.remove("default");
            }
            map.values_mut().for_each(drop_empty_string_defaults);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_empty_string_defaults),
        _ => {}
    }
}

/// The kube-apiserver our tests run (v1.20 built from Debian's source) hands an empty string in
/// a custom resource to validation as `null`, so `group: ""` (the core group, as kgateway's
/// guides write it) would be refused. `group` properties accept null; kgw reads a null group as
/// "" (see store::kubernetes).
fn nullable_groups(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get_mut("properties")
                && let Some(Value::Object(group)) = props.get_mut("group")
                && group.get("type") == Some(&Value::String("string".into()))
            {
                group.insert("nullable".into(), Value::Bool(true));
            }
            map.values_mut().for_each(nullable_groups);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_groups),
        _ => {}
    }
}

/// What the generated Gateway API schemas carry that an API server refuses: `null` in enums
/// (from optional Rust enums), and any CEL rules of the crate's own (upstream's are placed
/// from [`cel_rules`], where a test compares them with upstream's).
fn clean_schema(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            for v in map.values_mut() {
                clean_schema(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(clean_schema),
        _ => {}
    }
}
