//! `kgw crds`: every CustomResourceDefinition kgw needs, generated from the Rust types it reads
//! (Gateway API's from the gateway-api crate, BackendConfigPolicy's from ours), as a YAML
//! stream for `kgw crds | kubectl apply -f -`.

use kube::CustomResourceExt;
use serde_json::Value;

/// Gateway API's group is protected (`*.k8s.io`): the API server wants the approval annotation
/// the upstream CRDs carry.
const APPROVAL: &str = "https://github.com/kubernetes-sigs/gateway-api/pull/1538";

pub fn all() -> anyhow::Result<Vec<Value>> {
    let mut gateway_api = vec![
        serde_json::to_value(api::gateway_api::gatewayclasses::GatewayClass::crd())?,
        serde_json::to_value(api::gateway_api::gateways::Gateway::crd())?,
        serde_json::to_value(api::gateway_api::httproutes::HttpRoute::crd())?,
    ];
    for crd in &mut gateway_api {
        clean_schema(crd);
        crd["metadata"]["annotations"]["api-approved.kubernetes.io"] = Value::String(APPROVAL.into());
    }
    let mut policy = api::crd::backend_config_policy_crd();
    drop_empty_string_defaults(&mut policy);
    gateway_api.push(policy);
    for crd in &mut gateway_api {
        nullable_groups(crd);
    }
    Ok(gateway_api)
}

pub fn print() -> anyhow::Result<()> {
    for crd in all()? {
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
/// (from optional Rust enums), and CEL rules, which API servers before 1.25 do not know and
/// which kgw does not rely on (its own validation runs on every object it reads).
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
