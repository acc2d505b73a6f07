//! BackendConfigPolicy: which clusters a policy reaches, how several policies on one target
//! merge (per top-level field, the oldest policy wins: `UpstreamPolicy::fill_from`), and the
//! policy's status. Each policy concern turns the API's fields into the Snapshot's in a file of
//! its own.

mod circuit_breakers;
mod connection;
mod health_check;
mod http_protocol;
mod load_balancing;
mod outlier_detection;
mod proxy_protocol;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use api::{BackendConfigPolicy, Kind, Object, ObjectKey};
use serde_json::{Value, json};
use snapshot::UpstreamPolicy;

use crate::{CONTROLLER_NAME, ClusterDraft, Resources, Statuses, condition, json_object, objects, rfc3339};

pub(crate) fn attach(
    resources: &Resources,
    clusters: &mut BTreeMap<String, ClusterDraft>,
    statuses: &mut Statuses,
    now: SystemTime,
) {
    let now_text = rfc3339(now);
    let mut policies: Vec<(&ObjectKey, &BackendConfigPolicy)> = objects(resources, Kind::BackendConfigPolicy)
        .filter_map(|(k, o)| match o {
            Object::BackendConfigPolicy(p) => Some((k, p.as_ref())),
            _ => None,
        })
        .collect();
    // Oldest first; a policy without a creation time counts as the newest.
    policies.sort_by(|(ka, a), (kb, b)| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (ta.is_none(), ta, &ka.namespace, &ka.name).cmp(&(tb.is_none(), tb, &kb.namespace, &kb.name))
    });

    for (key, policy) in policies {
        let (found, missing) = targets(resources, key, policy);
        let upstream = upstream_policy(key, policy);
        for service in &found {
            // Cluster names of a Service port start with `kube_<ns>_<svc>_`: a range, not a scan.
            let prefix = format!("kube_{}_{}_", key.namespace, service);
            for (_, draft) in clusters
                .range_mut(prefix.clone()..)
                .take_while(|(n, _)| n.starts_with(&prefix))
            {
                if draft.namespace != key.namespace || &draft.service != service {
                    continue;
                }
                // Oldest first: what an older policy set stays; this one fills the rest.
                draft.cluster.upstream.fill_from(&upstream);
            }
        }
        let mut ancestors: Vec<Value> = Vec::new();
        for service in &found {
            ancestors.push(json_object([
                (
                    "ancestorRef",
                    json!({"group": "", "kind": "Service", "name": service, "namespace": key.namespace}),
                ),
                ("controllerName", CONTROLLER_NAME.into()),
                (
                    "conditions",
                    Value::Array(vec![
                        condition("Accepted", true, "Valid", "Policy accepted", &now_text),
                        condition("Attached", true, "Attached", "Attached to all targets", &now_text),
                    ]),
                ),
            ]));
        }
        for (kind, name) in &missing {
            let group = if kind == "Service" {
                ""
            } else {
                "gateway.kgateway.dev"
            };
            let pending = format!(
                "target {kind} {}/{name} not found; the policy attaches when it exists",
                key.namespace
            );
            ancestors.push(json_object([
                (
                    "ancestorRef",
                    json!({"group": group, "kind": kind, "name": name, "namespace": key.namespace}),
                ),
                ("controllerName", CONTROLLER_NAME.into()),
                (
                    "conditions",
                    Value::Array(vec![
                        condition("Accepted", true, "Valid", "Policy accepted", &now_text),
                        condition("Attached", false, "Pending", &pending, &now_text),
                    ]),
                ),
            ]));
        }
        statuses.insert(key.clone(), json_object([("ancestors", Value::Array(ancestors))]));
    }
}

/// The Services a policy reaches (by name), and the references that resolve to nothing.
fn targets(
    resources: &Resources,
    key: &ObjectKey,
    policy: &BackendConfigPolicy,
) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let mut found = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for r in &policy.spec.target_refs {
        let service_key = ObjectKey {
            kind: Kind::Service,
            namespace: key.namespace.clone(),
            name: r.name.clone(),
        };
        if r.group.is_empty() && r.kind == "Service" && resources.contains_key(&service_key) {
            found.insert(r.name.clone());
        } else {
            missing.insert((r.kind.clone(), r.name.clone()));
        }
    }
    for selector in &policy.spec.target_selectors {
        if !(selector.group.is_empty() && selector.kind == "Service") {
            continue;
        }
        for (k, o) in objects(resources, Kind::Service) {
            if k.namespace != key.namespace {
                continue;
            }
            let labels = o.meta().labels.as_ref();
            let matches = selector
                .match_labels
                .iter()
                .all(|(lk, lv)| labels.and_then(|l| l.get(lk)) == Some(lv));
            if matches {
                found.insert(k.name.clone());
            }
        }
    }
    (found, missing)
}

/// The policy's effect on a cluster, in the Snapshot's units, one concern at a time.
fn upstream_policy(key: &ObjectKey, policy: &BackendConfigPolicy) -> UpstreamPolicy {
    let spec = &policy.spec;
    UpstreamPolicy {
        connect_timeout: connection::connect_timeout(spec),
        per_connection_buffer_limit_bytes: connection::buffer_limit(spec),
        tcp_keepalive: connection::tcp_keepalive(spec),
        common_http: http_protocol::common(spec),
        http1: http_protocol::http1(spec),
        load_balancer: load_balancing::load_balancer(spec, key),
        health_check: health_check::health_check(spec),
        outlier_detection: outlier_detection::outlier_detection(spec),
        circuit_breakers: circuit_breakers::circuit_breakers(spec),
        proxy_protocol: proxy_protocol::version(spec),
        tls: None,
        dns: None,
    }
}

/// A Go duration the API accepted, as a Duration; None when unset or not positive.
fn duration(text: Option<&str>) -> Option<Duration> {
    text.and_then(api::duration::parse_go_duration)
        .filter(|n| *n > 0)
        .map(|n| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX)))
}

/// A count the API bounds as int32 and at least 0.
fn count(value: Option<i64>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok())
}
