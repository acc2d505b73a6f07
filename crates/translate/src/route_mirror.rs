//! HTTPRoute RequestMirror filters -> each rule's mirrors. As kgateway, a mirror whose
//! backendRef does not resolve (no such Service or Backend, or a namespace crossed without a
//! ReferenceGrant) is left out: nothing to send the copy to.

use api::gateway_api::httproutes::{HttpRouteRulesFiltersRequestMirror, HttpRouteRulesFiltersType};
use api::{HttpRoute, ObjectKey};
use snapshot::{Cluster, MirrorShare, RequestMirror};

use crate::reference_grant::{Side, permitted};
use crate::routes::{GATEWAY_GROUP, RuleAction};

/// Puts each rule's mirrors on its action (`actions[i]` is rule i's).
pub(crate) fn with_mirrors(
    resources: &crate::Resources,
    key: &ObjectKey,
    route: &HttpRoute,
    clusters: &[Cluster],
    mut actions: Vec<RuleAction>,
) -> Vec<RuleAction> {
    for (rule, action) in route.spec.rules.iter().flatten().zip(actions.iter_mut()) {
        action.mirrors = rule
            .filters
            .iter()
            .flatten()
            .filter(|f| f.r#type == HttpRouteRulesFiltersType::RequestMirror)
            .filter_map(|f| f.request_mirror.as_ref())
            .filter_map(|m| resolve(resources, key, m, clusters))
            .collect();
    }
    actions
}

fn resolve(
    resources: &crate::Resources,
    key: &ObjectKey,
    mirror: &HttpRouteRulesFiltersRequestMirror,
    clusters: &[Cluster],
) -> Option<RequestMirror> {
    let b = &mirror.backend_ref;
    let namespace = b.namespace.as_deref().unwrap_or(&key.namespace);
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let cluster = match (group, kind) {
        ("", "Service") => crate::cluster_name(namespace, &b.name, b.port.unwrap_or(0)),
        ("gateway.kgateway.dev", "Backend") => crate::backends::backend_cluster_name(namespace, &b.name),
        _ => return None,
    };
    let from = Side {
        group: GATEWAY_GROUP,
        kind: "HTTPRoute",
        namespace: &key.namespace,
    };
    let to = Side {
        group,
        kind,
        namespace,
    };
    if !permitted(resources, &from, &to, &b.name) {
        return None;
    }
    let index = clusters
        .binary_search_by(|c| c.name.as_str().cmp(&cluster))
        .ok()?;
    Some(RequestMirror {
        cluster,
        index,
        share: share(mirror),
    })
}

/// `percent` as a share of 100; `fraction` scaled to a share of a million (exact for the
/// denominators people write: 100, 1000, ...); neither: every request.
fn share(mirror: &HttpRouteRulesFiltersRequestMirror) -> Option<MirrorShare> {
    if let Some(percent) = mirror.percent {
        return Some(MirrorShare {
            numerator: percent.clamp(0, 100) as u32,
            per_million: false,
        });
    }
    let fraction = mirror.fraction.as_ref()?;
    let denominator = i64::from(fraction.denominator.unwrap_or(100).max(1));
    let numerator = i64::from(fraction.numerator.max(0)).min(denominator);
    Some(MirrorShare {
        numerator: (numerator * 1_000_000 / denominator) as u32,
        per_million: true,
    })
}
