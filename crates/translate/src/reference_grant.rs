//! ReferenceGrant: whether an object may refer to one in another namespace (a route to a
//! Service, a Gateway listener to a Secret). A grant lives in the namespace referred to.

use api::{Kind, Object};

use crate::{Resources, objects};

/// One side of a reference: the kind's group and name, and the namespace.
pub(crate) struct Side<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

/// May `from` refer to `to_name` of `to`? Always within a namespace; across namespaces only
/// when a ReferenceGrant in `to`'s namespace allows it.
pub(crate) fn permitted(resources: &Resources, from: &Side, to: &Side, to_name: &str) -> bool {
    if from.namespace == to.namespace {
        return true;
    }
    objects(resources, Kind::ReferenceGrant)
        .filter(|(k, _)| k.namespace == to.namespace)
        .any(|(_, o)| {
            let Object::ReferenceGrant(g) = o else {
                return false;
            };
            g.spec
                .from
                .iter()
                .any(|f| f.group == from.group && f.kind == from.kind && f.namespace == from.namespace)
                && g.spec.to.iter().any(|t| {
                    t.group == to.group
                        && t.kind == to.kind
                        && t.name.as_deref().is_none_or(|n| n.is_empty() || n == to_name)
                })
        })
}

/// May a Gateway in `gateway_namespace` refer to the core-group `kind` object `name` in
/// `namespace` (a listener's certificate Secret, a frontend CA ConfigMap)?
pub(crate) fn gateway_may_refer(
    resources: &Resources,
    gateway_namespace: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let from = Side {
        group: "gateway.networking.k8s.io",
        kind: "Gateway",
        namespace: gateway_namespace,
    };
    let to = Side {
        group: "",
        kind,
        namespace,
    };
    permitted(resources, &from, &to, name)
}
