//! The CustomResourceDefinitions of our own kinds, generated from the Rust types (for `kgw crds`).
//!
//! BackendConfigPolicy's schema comes from the types of [`crate::backend_config_policy`] and
//! their `#[schemars(...)]` attributes: the fields, types, enums, bounds, patterns, defaults and
//! list/map types of kgateway's CRD. It leaves out:
//! - the CRD's CEL rules (`x-kubernetes-validations`): API servers before 1.25 refuse them, so
//!   `kgw crds` places kgateway's on this schema from its own data unless `--no-cel`
//!   (crates/kgw/src/crds/), and [`crate::backend_config_policy::validate`] enforces them too
//!   (the admission webhook's job);
//! - descriptions: the doc comments are written for Rust readers;
//! - `nullable`: kgateway's CRD has none (the API server drops a `null` field, then defaults it).
//!
//! The schema is structural, made as kube-derive makes it (every subschema inline, kube-core's
//! [`StructuralSchemaRewriter`]): no `$ref`, no definitions, no `anyOf` for an `Option`.

use kube::core::schema::{OptionalEnum, StructuralSchemaRewriter};
use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use crate::backend_config_policy::{BackendConfigPolicySpec, PolicyStatus};

pub const BACKEND_CONFIG_POLICY_CRD_NAME: &str = "backendconfigpolicies.gateway.kgateway.dev";

/// The `apiextensions.k8s.io/v1` CustomResourceDefinition of `gateway.kgateway.dev/v1alpha1`
/// BackendConfigPolicy, as kgateway's (same names, columns, schema) minus the CEL rules.
/// Render it with `serde_yaml_ng::to_string` (or `serde_json`) for `kubectl apply -f -`.
pub fn backend_config_policy_crd() -> Value {
    let mut crd = kgateway_crd(
        "BackendConfigPolicy",
        "backendconfigpolicies",
        json!([
            {
                "description": "Backend config policy acceptance status",
                "jsonPath": ".status.ancestors[*].conditions[?(@.type=='Accepted')].status",
                "name": "Accepted",
                "type": "string",
            },
            {
                "description": "Backend config policy attachment status",
                "jsonPath": ".status.ancestors[*].conditions[?(@.type=='Attached')].status",
                "name": "Attached",
                "type": "string",
            },
        ]),
        structural_schema::<BackendConfigPolicySpec>(),
        structural_schema::<PolicyStatus>(),
    );
    // Gateway API's policy metaresource label (GEP-713), as kgateway sets it.
    crd["metadata"]["labels"] = json!({ "gateway.networking.k8s.io/policy": "Direct" });
    crd
}

/// A kgateway CRD in `gateway.kgateway.dev/v1alpha1` with a status subresource.
pub fn kgateway_crd(kind: &str, plural: &str, columns: Value, spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{plural}.gateway.kgateway.dev") },
        "spec": {
            "group": "gateway.kgateway.dev",
            "names": {
                "categories": ["kgateway"],
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_lowercase(),
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "additionalPrinterColumns": columns,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "apiVersion": { "type": "string" },
                            "kind": { "type": "string" },
                            "metadata": { "type": "object" },
                            "spec": spec,
                            "status": status,
                        },
                        "required": ["spec"],
                    },
                },
            }],
        },
    })
}

/// `T`'s schema as a CRD wants it: OpenAPI v3, inline, structural, without descriptions or
/// `nullable`.
fn structural_schema<T: JsonSchema>() -> Value {
    SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(StructuralSchemaRewriter)
        .with_transform(OptionalEnum)
        .with_transform(KubernetesShape)
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// Drops what kgateway's CRD does not have: `nullable` (added by schemars for `Option`s),
/// `title` and `description` (from the type names and doc comments); sorts the keys as
/// controller-gen does, so that the YAML compares line by line with kgateway's.
#[derive(Clone)]
struct KubernetesShape;

impl Transform for KubernetesShape {
    fn transform(&mut self, schema: &mut Schema) {
        if let Some(object) = schema.as_object_mut() {
            for key in ["nullable", "title", "description"] {
                object.remove(key);
            }
            object.sort_keys();
        }
        transform_subschemas(self, schema);
    }
}

/// `#[schemars(schema_with)]` for an [`IntOrString`](crate::backend_config_policy::IntOrString)
/// field: Kubernetes' int-or-string, no `type` (the value validations still apply to strings).
pub(crate) fn int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-int-or-string": true })
}

/// `#[schemars(transform)]`: no `default` in the schema, where `#[serde(default)]` on the field
/// only means "absent reads as empty" (a CRD default would be written into stored objects).
pub(crate) fn without_default(schema: &mut Schema) {
    schema.remove("default");
}

/// The schema of a status condition: Kubernetes' `metav1.Condition` with the bounds of its Go
/// markers (k8s-openapi's schema of [`Condition`](k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition),
/// the type the status holds, has none). Used only for its schema.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "only its schema is used")]
pub(crate) struct ConditionSchema {
    #[schemars(extend("format" = "date-time"))]
    last_transition_time: String,
    #[schemars(length(max = 32768))]
    message: String,
    #[schemars(range(min = 0))]
    observed_generation: Option<i64>,
    #[schemars(
        length(min = 1, max = 1024),
        pattern(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    )]
    reason: String,
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    status: String,
    #[serde(rename = "type")]
    #[schemars(
        length(max = 316),
        pattern(
            r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        )
    )]
    type_: String,
}
