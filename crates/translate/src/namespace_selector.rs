//! `allowedRoutes.namespaces.from: Selector`: a route's namespace is allowed when the labels
//! of its Namespace object match the selector (matchLabels and matchExpressions, ANDed, as
//! Kubernetes label selectors). A namespace without a Namespace object has only the label the
//! API server gives every Namespace, `kubernetes.io/metadata.name: NAME` (standalone kgw knows
//! namespaces that no manifest created).

use std::collections::BTreeMap;

use api::gateway_api::gateways::GatewayListenersAllowedRoutesNamespacesSelector as Selector;
use api::{Kind, Object, ObjectKey};

use crate::Resources;

/// Whether `selector` selects namespace `name`. No selector selects nothing (the CRD requires
/// one with Selector).
pub(crate) fn selects(resources: &Resources, selector: Option<&Selector>, name: &str) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let key = ObjectKey {
        kind: Kind::Namespace,
        namespace: String::new(),
        name: name.to_string(),
    };
    let implicit = BTreeMap::from([(api::NAMESPACE_NAME_LABEL.to_string(), name.to_string())]);
    let labels = match resources.get(&key).map(|o| &**o) {
        Some(Object::Namespace(ns)) => ns.metadata.labels.as_ref().unwrap_or(&implicit),
        _ => &implicit,
    };
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // The API server refuses any other operator.
            _ => false,
        }
    });
    labels_match && expressions_match
}
