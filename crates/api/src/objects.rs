//! Multi-document YAML -> typed objects, strictly: wrong types and unknown fields are errors
//! with the field's path, and each object is validated before anything is accepted.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{FieldError, InvalidObject};
use crate::{
    Backend, BackendConfigPolicy, BackendTlsPolicy, ConfigMap, EndpointSlice, Gateway, GatewayClass,
    GrpcRoute, HttpRoute, ListenerPolicy, Namespace, ObjectMeta, ReferenceGrant, Secret, Service, validate,
};

/// The kinds this gateway reads, with the spellings kubectl accepts for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Gateway,
    HTTPRoute,
    GRPCRoute,
    Service,
    EndpointSlice,
    BackendConfigPolicy,
    Secret,
    ConfigMap,
    ReferenceGrant,
    BackendTLSPolicy,
    Backend,
    ListenerPolicy,
    GatewayClass,
    Namespace,
}

/// The label the API server puts on every Namespace (since Kubernetes 1.22): its own name, so
/// that a label selector can pick one namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Gateway,
        Kind::HTTPRoute,
        Kind::GRPCRoute,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::BackendConfigPolicy,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::ReferenceGrant,
        Kind::BackendTLSPolicy,
        Kind::Backend,
        Kind::ListenerPolicy,
        Kind::GatewayClass,
        Kind::Namespace,
    ];

    /// Cluster-scoped kinds have no namespace: their key's namespace is "".
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::GatewayClass | Kind::Namespace)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::HTTPRoute => "HTTPRoute",
            Kind::GRPCRoute => "GRPCRoute",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::BackendConfigPolicy => "BackendConfigPolicy",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::BackendTLSPolicy => "BackendTLSPolicy",
            Kind::Backend => "Backend",
            Kind::ListenerPolicy => "ListenerPolicy",
            Kind::GatewayClass => "GatewayClass",
            Kind::Namespace => "Namespace",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Gateway
            | Kind::HTTPRoute
            | Kind::GRPCRoute
            | Kind::BackendTLSPolicy
            | Kind::GatewayClass => "gateway.networking.k8s.io/v1",
            Kind::Service | Kind::Secret | Kind::ConfigMap | Kind::Namespace => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::BackendConfigPolicy | Kind::Backend | Kind::ListenerPolicy => {
                "gateway.kgateway.dev/v1alpha1"
            }
            // The version every Gateway API release serves (v1 only in the newest ones).
            Kind::ReferenceGrant => "gateway.networking.k8s.io/v1beta1",
        }
    }

    /// Every apiVersion a manifest may give for this kind (same schema in each).
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            // v1beta1 is still served for these (the conformance manifests use it), with v1's
            // schema.
            Kind::ReferenceGrant | Kind::Gateway | Kind::HTTPRoute | Kind::GatewayClass => &[
                "gateway.networking.k8s.io/v1",
                "gateway.networking.k8s.io/v1beta1",
            ],
            Kind::GRPCRoute | Kind::BackendTLSPolicy => &["gateway.networking.k8s.io/v1"],
            Kind::Service | Kind::Secret | Kind::ConfigMap | Kind::Namespace => &["v1"],
            Kind::EndpointSlice => &["discovery.k8s.io/v1"],
            Kind::BackendConfigPolicy | Kind::Backend | Kind::ListenerPolicy => {
                &["gateway.kgateway.dev/v1alpha1"]
            }
        }
    }

    /// kubectl's resource name with its group: `backendconfigpolicies.gateway.kgateway.dev`.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Gateway => "gateways.gateway.networking.k8s.io",
            Kind::HTTPRoute => "httproutes.gateway.networking.k8s.io",
            Kind::GRPCRoute => "grpcroutes.gateway.networking.k8s.io",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices.discovery.k8s.io",
            Kind::BackendConfigPolicy => "backendconfigpolicies.gateway.kgateway.dev",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::ReferenceGrant => "referencegrants.gateway.networking.k8s.io",
            Kind::BackendTLSPolicy => "backendtlspolicies.gateway.networking.k8s.io",
            Kind::Backend => "backends.gateway.kgateway.dev",
            Kind::ListenerPolicy => "listenerpolicies.gateway.kgateway.dev",
            Kind::GatewayClass => "gatewayclasses.gateway.networking.k8s.io",
            Kind::Namespace => "namespaces",
        }
    }

    /// Parses what a user types after `kgw get`: kind, singular, plural, short name, any case,
    /// optionally qualified with the group (`backendconfigpolicy.gateway.kgateway.dev`).
    pub fn from_cli(word: &str) -> Option<Kind> {
        let lower = word.to_ascii_lowercase();
        let (name, group) = match lower.split_once('.') {
            Some((n, g)) => (n.to_string(), Some(g.to_string())),
            None => (lower, None),
        };
        let kind = match name.as_str() {
            "gateway" | "gateways" | "gtw" => Kind::Gateway,
            "httproute" | "httproutes" => Kind::HTTPRoute,
            "grpcroute" | "grpcroutes" => Kind::GRPCRoute,
            "service" | "services" | "svc" => Kind::Service,
            "endpointslice" | "endpointslices" => Kind::EndpointSlice,
            "backendconfigpolicy" | "backendconfigpolicies" => Kind::BackendConfigPolicy,
            "secret" | "secrets" => Kind::Secret,
            "configmap" | "configmaps" | "cm" => Kind::ConfigMap,
            "referencegrant" | "referencegrants" | "refgrant" => Kind::ReferenceGrant,
            "backendtlspolicy" | "backendtlspolicies" | "btlspolicy" => Kind::BackendTLSPolicy,
            "backend" | "backends" => Kind::Backend,
            "listenerpolicy" | "listenerpolicies" => Kind::ListenerPolicy,
            "gatewayclass" | "gatewayclasses" | "gc" => Kind::GatewayClass,
            "namespace" | "namespaces" | "ns" => Kind::Namespace,
            _ => return None,
        };
        match group {
            None => Some(kind),
            Some(g) if kind.resource().ends_with(&format!(".{g}")) => Some(kind),
            Some(_) => None,
        }
    }

    fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && k.api_versions().contains(&api_version))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of an object in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.is_namespaced() {
            write!(f, "{} \"{}/{}\"", self.kind, self.namespace, self.name)
        } else {
            write!(f, "{} \"{}\"", self.kind, self.name)
        }
    }
}

/// One validated resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Gateway(Box<Gateway>),
    HTTPRoute(Box<HttpRoute>),
    GRPCRoute(Box<GrpcRoute>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    BackendConfigPolicy(Box<BackendConfigPolicy>),
    Secret(Box<Secret>),
    ConfigMap(Box<ConfigMap>),
    ReferenceGrant(Box<ReferenceGrant>),
    BackendTLSPolicy(Box<BackendTlsPolicy>),
    Backend(Box<Backend>),
    ListenerPolicy(Box<ListenerPolicy>),
    GatewayClass(Box<GatewayClass>),
    Namespace(Box<Namespace>),
}

/// `$m!(variant)` for every variant: the per-kind match arms written once.
macro_rules! each_kind {
    ($self:expr, $o:ident => $body:expr) => {
        match $self {
            Object::Gateway($o) => $body,
            Object::HTTPRoute($o) => $body,
            Object::GRPCRoute($o) => $body,
            Object::Service($o) => $body,
            Object::EndpointSlice($o) => $body,
            Object::BackendConfigPolicy($o) => $body,
            Object::Secret($o) => $body,
            Object::ConfigMap($o) => $body,
            Object::ReferenceGrant($o) => $body,
            Object::BackendTLSPolicy($o) => $body,
            Object::Backend($o) => $body,
            Object::ListenerPolicy($o) => $body,
            Object::GatewayClass($o) => $body,
            Object::Namespace($o) => $body,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Gateway(_) => Kind::Gateway,
            Object::HTTPRoute(_) => Kind::HTTPRoute,
            Object::GRPCRoute(_) => Kind::GRPCRoute,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::BackendConfigPolicy(_) => Kind::BackendConfigPolicy,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::BackendTLSPolicy(_) => Kind::BackendTLSPolicy,
            Object::Backend(_) => Kind::Backend,
            Object::ListenerPolicy(_) => Kind::ListenerPolicy,
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Namespace(_) => Kind::Namespace,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        each_kind!(self, o => &o.metadata)
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_kind!(self, o => &mut o.metadata)
    }

    pub fn key(&self) -> ObjectKey {
        let m = self.meta();
        ObjectKey {
            kind: self.kind(),
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        }
    }

    /// The object as the API would return it: apiVersion, kind, metadata, spec, status.
    pub fn to_value(&self) -> Value {
        let mut v = each_kind!(self, o => serde_json::to_value(o)).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            // kube's derived types write apiVersion/kind themselves; k8s-openapi's too. Make
            // sure they come first, as kubectl shows them.
            let mut out = serde_json::Map::new();
            out.insert(
                "apiVersion".into(),
                Value::String(self.kind().api_version().into()),
            );
            out.insert("kind".into(), Value::String(self.kind().as_str().into()));
            for (k, val) in std::mem::take(map) {
                if k != "apiVersion" && k != "kind" {
                    out.insert(k, val);
                }
            }
            *map = out;
        }
        v
    }
}

/// Why one document could not become an object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Invalid(#[from] InvalidObject),
    #[error("{0}")]
    Other(String),
}

/// Decodes and validates one object from its JSON form (a YAML document, or an API body).
pub fn decode_object(value: &Value) -> Result<Object, DecodeError> {
    let Value::Object(map) = value else {
        return Err(DecodeError::Other(format!(
            "expected a Kubernetes object (a mapping with apiVersion and kind), found {}",
            json_type(value)
        )));
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind_name = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if api_version.is_empty() || kind_name.is_empty() {
        let missing = if api_version.is_empty() {
            "apiVersion"
        } else {
            "kind"
        };
        return Err(DecodeError::Other(format!(
            "Object 'Kind' is missing or incomplete: field \"{missing}\" is not set; every document needs \
             apiVersion and kind"
        )));
    }
    let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
        let supported = Kind::ALL
            .iter()
            .map(|k| format!("{} {}", k.api_version(), k))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(DecodeError::Other(format!(
            "no matches for kind \"{kind_name}\" in version \"{api_version}\": kgateway-rs serves {supported}"
        )));
    };
    let display_name = {
        let meta = map.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        match meta.and_then(|m| m.get("namespace")).and_then(Value::as_str) {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        }
    };
    let invalid = |errors: Vec<FieldError>| InvalidObject {
        kind: kind_name.clone(),
        name: display_name.clone(),
        errors,
    };

    let mut object = match kind {
        Kind::Gateway => Object::Gateway(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::HTTPRoute => Object::HTTPRoute(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::GRPCRoute => Object::GRPCRoute(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::Service => Object::Service(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::EndpointSlice => Object::EndpointSlice(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::BackendConfigPolicy => {
            Object::BackendConfigPolicy(Box::new(strict_decode(value).map_err(invalid)?))
        }
        Kind::Secret => Object::Secret(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::ConfigMap => Object::ConfigMap(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::ReferenceGrant => Object::ReferenceGrant(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::BackendTLSPolicy => Object::BackendTLSPolicy(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::Backend => Object::Backend(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::ListenerPolicy => Object::ListenerPolicy(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::GatewayClass => Object::GatewayClass(Box::new(strict_decode(value).map_err(invalid)?)),
        Kind::Namespace => Object::Namespace(Box::new(strict_decode(value).map_err(invalid)?)),
    };
    // The API server stores stringData as data (it wins over a data key of the same name), so
    // every reader sees one map.
    if let Object::Secret(secret) = &mut object
        && let Some(strings) = secret.string_data.take()
    {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in strings {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
    // Namespaced kinds default to "default", as kubectl does without -n; cluster-scoped kinds
    // have none (the API server ignores one given).
    let namespaced = kind.is_namespaced();
    let meta = object.meta_mut();
    if !namespaced {
        meta.namespace = None;
    } else if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".into());
    }
    if kind == Kind::Namespace {
        let name = meta.name.clone().unwrap_or_default();
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(NAMESPACE_NAME_LABEL.into(), name);
    }
    let errors = validate::validate(&object);
    if !errors.is_empty() {
        return Err(invalid(errors).into());
    }
    Ok(object)
}

/// Deserializes with the path of a wrong-typed field and every unknown field reported.
fn strict_decode<T: DeserializeOwned>(value: &Value) -> Result<T, Vec<FieldError>> {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let result = {
        let de = serde_path_to_error::Deserializer::new(value, &mut track);
        serde_ignored::deserialize(de, |path| unknown.push(kube_path(&path.to_string())))
    };
    // apiVersion and kind are read by our dispatcher, not by every type.
    unknown.retain(|p| p != "apiVersion" && p != "kind");
    match result {
        Ok(v) if unknown.is_empty() => Ok(v),
        Ok(_) => Err(unknown.into_iter().map(FieldError::unknown).collect()),
        Err(e) => {
            let path = kube_path(&track.path().to_string());
            let path = if path.is_empty() || path == "." {
                "<root>".to_string()
            } else {
                path
            };
            let detail = e.to_string();
            let shown = value_at(value, &path);
            Err(vec![match shown {
                Some(v) => FieldError::invalid(&path, &v, type_message(&path, &detail)),
                None => FieldError::required(&path, type_message(&path, &detail)),
            }])
        }
    }
}

/// serde error text -> kubectl-like: `spec.x in body must be of type integer: "string"`.
fn type_message(path: &str, detail: &str) -> String {
    if let Some(rest) = detail.strip_prefix("missing field ") {
        return format!("{} is required", rest.trim_matches('`'));
    }
    if detail.starts_with("invalid type") || detail.starts_with("invalid value") {
        return format!("{path} in body has the wrong type or value ({detail})");
    }
    if detail.starts_with("unknown variant") {
        return detail.replace('`', "\"");
    }
    detail.to_string()
}

/// serde_ignored / serde_path_to_error paths (`spec.targetRefs.0.foo`, `spec.x?`) -> kubectl's
/// `spec.targetRefs[0].foo`.
fn kube_path(raw: &str) -> String {
    let mut out = String::new();
    for part in raw.split('.') {
        let part = part.trim_end_matches('?');
        if part.is_empty() {
            continue;
        }
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push('[');
            out.push_str(part);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn value_at(root: &Value, path: &str) -> Option<Value> {
    let mut cur = root;
    for seg in path.split('.') {
        let (name, indices) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            cur = cur.get(idx.parse::<usize>().ok()?)?;
        }
    }
    Some(cur.clone())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "an empty document",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Everything wrong with one manifest (a file, or what `kgw apply` was given).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ManifestError {
    /// The file, or `STDIN`.
    pub origin: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in &self.problems {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Reads every document of a multi-document YAML text. All or nothing: when any document is
/// wrong, nothing is returned, so a half-written file or a bad `kgw apply` changes nothing.
pub fn parse_manifests(text: &str, source: &str) -> Result<Vec<Object>, ManifestError> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for document in parse_documents(text, source)? {
        match document.object {
            Ok(o) => objects.push(o),
            Err(e) => problems.push(format!(
                "error validating {source} (document at line {}): {e}",
                document.line
            )),
        }
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(ManifestError {
            origin: source.into(),
            problems,
        })
    }
}

/// One document of a manifest: the object, or why it is not a valid one.
#[derive(Debug)]
pub struct Document {
    /// 1-based line where the document starts.
    pub line: usize,
    pub object: Result<Object, DecodeError>,
}

/// Reads each document on its own: a document that is not a valid object does not stop the
/// others. Only what stops the reading of the text is an error: too deep a nesting, or a YAML
/// syntax error (nothing after it can be read).
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Document>, ManifestError> {
    let fail = |problem: String| ManifestError {
        origin: source.into(),
        problems: vec![problem],
    };
    if let Some(deep) = crate::nesting::too_deep(text) {
        return Err(fail(format!(
            "error parsing {source}: the document starting at line {} nests deeper than {} levels at line {}: \
             no Kubernetes object nests that deep, so it is refused unparsed; look for runaway brackets \
             or indentation there",
            deep.document_line,
            crate::nesting::MAX_DEPTH,
            deep.line
        )));
    }
    let starts = document_start_lines(text);
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let line = starts.get(index).copied().unwrap_or(1);
        let value = match Value::deserialize_yaml(document) {
            Ok(v) => v,
            Err(e) => {
                let at = e
                    .location()
                    .map(|l| format!("line {}, column {}", l.line(), l.column()));
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                // The YAML stream cannot be read past a syntax error.
                return Err(fail(format!(
                    "error parsing {source}: YAML syntax error at {}: {msg}",
                    at.unwrap_or_else(|| format!("document starting at line {line}"))
                )));
            }
        };
        if value.is_null() {
            continue; // an empty document (comments only, or a trailing ---)
        }
        let object = decode_object(&value);
        // The document's tree is freed here, before the next one is read.
        drop(value);
        documents.push(Document { line, object });
    }
    Ok(documents)
}

trait DeserializeYaml: Sized {
    fn deserialize_yaml(d: serde_yaml_ng::Deserializer<'_>) -> Result<Self, serde_yaml_ng::Error>;
}

impl DeserializeYaml for Value {
    fn deserialize_yaml(d: serde_yaml_ng::Deserializer<'_>) -> Result<Self, serde_yaml_ng::Error> {
        // Through serde_yaml_ng's own Value so that YAML-only shapes (non-string keys) give a
        // clear error instead of a panic.
        let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(d)?;
        serde_json::to_value(v).map_err(serde::de::Error::custom)
    }
}

/// 1-based line of each document's first line, for error messages.
fn document_start_lines(text: &str) -> Vec<usize> {
    let mut starts = vec![1];
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && (line.len() == 3 || line[3..].starts_with(char::is_whitespace)) {
            if i == 0 {
                starts[0] = 2;
            } else {
                starts.push(i + 2);
            }
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_paths() {
        assert_eq!(kube_path("spec.targetRefs.0.foo"), "spec.targetRefs[0].foo");
        assert_eq!(kube_path("spec?.tcpKeepalive?.x"), "spec.tcpKeepalive.x");
    }

    #[test]
    fn kinds_from_cli() {
        assert_eq!(
            Kind::from_cli("backendconfigpolicies"),
            Some(Kind::BackendConfigPolicy)
        );
        assert_eq!(
            Kind::from_cli("BackendConfigPolicy"),
            Some(Kind::BackendConfigPolicy)
        );
        assert_eq!(
            Kind::from_cli("backendconfigpolicy.gateway.kgateway.dev"),
            Some(Kind::BackendConfigPolicy)
        );
        assert_eq!(Kind::from_cli("svc"), Some(Kind::Service));
        assert_eq!(Kind::from_cli("deployment"), None);
        assert_eq!(Kind::from_cli("gatewayclass"), Some(Kind::GatewayClass));
        assert_eq!(Kind::from_cli("ns"), Some(Kind::Namespace));
    }

    #[test]
    fn cluster_scoped_kinds_have_no_namespace() {
        let objects = parse_manifests(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: kgateway\n  \
             namespace: ignored\nspec:\n  controllerName: kgateway.dev/kgateway\n---\napiVersion: v1\n\
             kind: Namespace\nmetadata:\n  name: apps\n  labels:\n    team: a\n",
            "test",
        )
        .expect("valid");
        let class = &objects[0];
        assert_eq!(class.key().namespace, "");
        assert_eq!(class.meta().namespace, None);
        assert_eq!(class.key().to_string(), "GatewayClass \"kgateway\"");
        // As the API server does, every Namespace carries its own name as a label.
        let labels = objects[1].meta().labels.clone().expect("labels");
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(labels.get(NAMESPACE_NAME_LABEL).map(String::as_str), Some("apps"));
    }

    #[test]
    fn gateway_class_needs_a_controller_name() {
        let err = parse_manifests(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: c\nspec:\n  \
             controllerName: nodomain\n",
            "test",
        )
        .expect_err("refused");
        assert!(err.to_string().contains("spec.controllerName"), "{err}");
    }

    #[test]
    fn gateway_api_v1beta1_is_read_as_v1() {
        let objects = parse_manifests(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  \
             gatewayClassName: kgateway\n  listeners:\n  - name: http\n    port: 80\n    protocol: HTTP\n",
            "test",
        )
        .expect("valid");
        assert_eq!(objects[0].kind(), Kind::Gateway);
        assert_eq!(
            objects[0].to_value()["apiVersion"],
            "gateway.networking.k8s.io/v1"
        );
    }

    #[test]
    fn a_kind_we_do_not_serve_is_named() {
        let err = parse_manifests(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: echo\n",
            "test",
        )
        .expect_err("refused");
        assert!(
            err.to_string()
                .contains("no matches for kind \"Deployment\" in version \"apps/v1\""),
            "{err}"
        );
    }
}
