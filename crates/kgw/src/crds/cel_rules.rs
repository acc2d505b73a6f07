//! Upstream's CEL validation rules (`x-kubernetes-validations`), kept as data beside this file
//! and placed on the generated schemas by path, so that an API server of Kubernetes 1.25 or
//! later refuses what upstream's CRDs refuse, with upstream's messages, and with no webhook.
//!
//! A rules file maps CRD name -> version -> schema path -> the list of rules at that node. A
//! path starts at `openAPIV3Schema`; `.name` is a property, `[]` the items of a list, `{}` the
//! values of a map (`openAPIV3Schema.spec.rules[].matches[].path`).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_json::Value;

/// CRD name -> version name -> schema path -> rules, in upstream's order.
pub type Rules = BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<Value>>>>;

/// kgateway's rules for BackendConfigPolicy (from the CRD pinned in the conformance corpus).
pub const BACKEND_CONFIG_POLICY: &str = include_str!("backendconfigpolicy-rules.yaml");
/// Gateway API v1.5.1's rules for the standard-channel kinds kgw serves.
pub const GATEWAY_API: &str = include_str!("gateway-api-v1.5.1-rules.yaml");
/// Gateway API v1.5.1's schema keywords its rules rely on (upper bounds for the API server's
/// cost estimate, defaults of fields the rules read without `has()`).
pub const GATEWAY_API_KEYWORDS: &str = include_str!("gateway-api-v1.5.1-keywords.yaml");

/// CRD name -> version name -> schema path -> schema keywords (`maxItems: 16`).
pub type Keywords = BTreeMap<String, BTreeMap<String, BTreeMap<String, serde_json::Map<String, Value>>>>;

pub fn parse_keywords(name: &str, text: &str) -> anyhow::Result<Keywords> {
    serde_yaml_ng::from_str(text).with_context(|| format!("the schema keywords file {name} does not parse"))
}

/// Every keyword of `keywords` for this CRD set on its schemas; a path the CRD lacks is an
/// error, as in [`place`].
pub fn place_keywords(crd: &mut Value, keywords: &Keywords) -> anyhow::Result<()> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let Some(by_version) = keywords.get(&name) else {
        return Ok(());
    };
    for (version, by_path) in by_version {
        let schema = version_schema(crd, &name, version)?;
        for (path, keywords) in by_path {
            let node = node_at(schema, path)
                .with_context(|| format!("schema keywords of CRD {name} {version} at {path}"))?;
            let Value::Object(node) = node else {
                bail!("CRD {name} {version}: {path} is not a schema object");
            };
            node.extend(keywords.clone());
        }
    }
    Ok(())
}

fn version_schema<'a>(crd: &'a mut Value, name: &str, version: &str) -> anyhow::Result<&'a mut Value> {
    let versions = crd["spec"]["versions"]
        .as_array_mut()
        .with_context(|| format!("CRD {name} has no spec.versions"))?;
    let Some(served) = versions.iter_mut().find(|v| v["name"] == version) else {
        bail!("upstream's validation names version {version} of CRD {name}, which kgw's CRD does not serve");
    };
    Ok(&mut served["schema"])
}

pub fn parse(name: &str, text: &str) -> anyhow::Result<Rules> {
    serde_yaml_ng::from_str(text).with_context(|| format!("the CEL rules file {name} does not parse"))
}

/// Every rule of `rules` for this CRD placed on its schemas. A CRD, version or path the rules
/// name but the CRD does not have is an error: the generated schema no longer matches upstream's
/// shape there, and a rule dropped silently would let the API server accept what upstream refuses.
pub fn place(crd: &mut Value, rules: &Rules) -> anyhow::Result<()> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let Some(by_version) = rules.get(&name) else {
        return Ok(());
    };
    for (version, by_path) in by_version {
        let schema = version_schema(crd, &name, version)?;
        for (path, list) in by_path {
            let node = node_at(schema, path)
                .with_context(|| format!("CEL rules of CRD {name} {version} at {path}"))?;
            let Value::Object(node) = node else {
                bail!("CRD {name} {version}: {path} is not a schema object");
            };
            node.insert("x-kubernetes-validations".into(), Value::Array(list.clone()));
        }
    }
    Ok(())
}

/// The schema node at `path` (see the module doc) under `schema` (the version's `schema`).
fn node_at<'a>(schema: &'a mut Value, path: &str) -> anyhow::Result<&'a mut Value> {
    let mut node = schema;
    for step in steps(path)? {
        let next = match step {
            Step::Property("openAPIV3Schema") => node.get_mut("openAPIV3Schema"),
            Step::Property(name) => node.get_mut("properties").and_then(|p| p.get_mut(name)),
            Step::Items => node.get_mut("items"),
            Step::Values => node.get_mut("additionalProperties"),
        };
        node = next.with_context(|| format!("kgw's schema has no {}", step.describe()))?;
    }
    Ok(node)
}

#[derive(Debug, PartialEq)]
pub enum Step<'a> {
    Property(&'a str),
    Items,
    Values,
}

impl Step<'_> {
    fn describe(&self) -> String {
        match self {
            Step::Property(name) => format!("property {name:?} there"),
            Step::Items => "list items there".into(),
            Step::Values => "map values there".into(),
        }
    }
}

/// `openAPIV3Schema.spec.rules[].filters[]` -> its steps; the first is `openAPIV3Schema`.
pub fn steps(path: &str) -> anyhow::Result<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let name = &part[..part.find(['[', '{']).unwrap_or(part.len())];
        if name.is_empty() {
            bail!("schema path {path:?} has an empty property name");
        }
        out.push(Step::Property(name));
        let mut rest = &part[name.len()..];
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("[]") {
                out.push(Step::Items);
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{}") {
                out.push(Step::Values);
                rest = r;
            } else {
                bail!("schema path {path:?}: {part:?} is not NAME followed by [] or {{}}");
            }
        }
    }
    if out.first() != Some(&Step::Property("openAPIV3Schema")) {
        bail!("schema path {path:?} does not start at openAPIV3Schema");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_name_properties_items_and_values() {
        assert_eq!(
            steps("openAPIV3Schema.spec.rules[].x{}.y").unwrap(),
            vec![
                Step::Property("openAPIV3Schema"),
                Step::Property("spec"),
                Step::Property("rules"),
                Step::Items,
                Step::Property("x"),
                Step::Values,
                Step::Property("y"),
            ]
        );
        assert!(steps("spec.rules").is_err());
        assert!(steps("openAPIV3Schema..a").is_err());
        assert!(steps("openAPIV3Schema.a[]x").is_err());
    }

    #[test]
    fn a_path_the_schema_lacks_is_an_error_naming_it() {
        let mut crd = json!({
            "metadata": { "name": "things.example.com" },
            "spec": { "versions": [{ "name": "v1", "schema": { "openAPIV3Schema": {
                "type": "object",
                "properties": { "spec": { "type": "object", "properties": {
                    "list": { "type": "array", "items": { "type": "object" } },
                } } },
            } } }] },
        });
        let rules: Rules = serde_yaml_ng::from_str(
            "things.example.com:\n  v1:\n    openAPIV3Schema.spec.list[]:\n    - rule: 'self.a'\n",
        )
        .unwrap();
        place(&mut crd, &rules).unwrap();
        assert_eq!(
            crd.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/list/items/x-kubernetes-validations"),
            Some(&json!([{ "rule": "self.a" }]))
        );
        let missing: Rules = serde_yaml_ng::from_str(
            "things.example.com:\n  v1:\n    openAPIV3Schema.spec.gone:\n    - rule: 'true'\n",
        )
        .unwrap();
        let err = format!("{:#}", place(&mut crd, &missing).unwrap_err());
        assert!(
            err.contains("openAPIV3Schema.spec.gone") && err.contains("\"gone\""),
            "{err}"
        );
        let no_version: Rules =
            serde_yaml_ng::from_str("things.example.com:\n  v2:\n    openAPIV3Schema:\n    - rule: 'true'\n")
                .unwrap();
        assert!(place(&mut crd, &no_version).is_err());
    }

    #[test]
    fn the_rules_files_parse_and_every_rule_has_a_rule() {
        for (name, text) in [
            ("backendconfigpolicy-rules.yaml", BACKEND_CONFIG_POLICY),
            ("gateway-api-v1.5.1-rules.yaml", GATEWAY_API),
        ] {
            let rules = parse(name, text).unwrap();
            assert!(!rules.is_empty(), "{name}");
            for (crd, versions) in &rules {
                for (version, paths) in versions {
                    for (path, list) in paths {
                        steps(path).unwrap();
                        for rule in list {
                            assert!(rule["rule"].is_string(), "{name} {crd} {version} {path}: {rule}");
                        }
                    }
                }
            }
        }
    }
}
