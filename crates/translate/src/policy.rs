//! BackendConfigPolicy attachment: which clusters a policy reaches, how several policies on one
//! target merge (per top-level field, the oldest policy wins), and the policy's status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use api::{BackendConfigPolicy, Kind, Object, ObjectKey};
use serde_json::{Value, json};
use snapshot::TcpKeepalive;

use crate::{CONTROLLER_NAME, ClusterDraft, Resources, Statuses, condition, json_object, objects, rfc3339};

/// Which top-level fields of a cluster a policy has already set.
#[derive(Default)]
struct Claimed {
    connect_timeout: bool,
    tcp_keepalive: bool,
}

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

    let mut claimed: BTreeMap<String, Claimed> = BTreeMap::new();
    for (key, policy) in policies {
        let (found, missing) = targets(resources, key, policy);
        let settings = Settings::from_policy(policy);
        for service in &found {
            // Cluster names of a Service port start with `kube_<ns>_<svc>_`: a range, not a scan.
            let prefix = format!("kube_{}_{}_", key.namespace, service);
            for (name, draft) in clusters
                .range_mut(prefix.clone()..)
                .take_while(|(n, _)| n.starts_with(&prefix))
            {
                if draft.namespace != key.namespace || &draft.service != service {
                    continue;
                }
                let claim = claimed.entry(name.clone()).or_default();
                if let Some(t) = settings.connect_timeout
                    && !claim.connect_timeout
                {
                    draft.cluster.connect_timeout = t;
                    claim.connect_timeout = true;
                }
                if let Some(k) = settings.tcp_keepalive
                    && !claim.tcp_keepalive
                {
                    draft.cluster.tcp_keepalive = Some(k);
                    claim.tcp_keepalive = true;
                }
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

/// The policy's effect on a cluster, in the Snapshot's units.
struct Settings {
    connect_timeout: Option<Duration>,
    tcp_keepalive: Option<TcpKeepalive>,
}

impl Settings {
    fn from_policy(policy: &BackendConfigPolicy) -> Settings {
        let spec = &policy.spec;
        let connect_timeout = spec
            .connect_timeout
            .as_deref()
            .and_then(api::duration::parse_go_duration)
            .filter(|n| *n > 0)
            .map(|n| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX)));
        let tcp_keepalive = spec.tcp_keepalive.as_ref().map(|k| TcpKeepalive {
            probes: k.keep_alive_probes.and_then(|p| u32::try_from(p).ok()),
            time: k.keep_alive_time.as_deref().and_then(whole_seconds),
            interval: k.keep_alive_interval.as_deref().and_then(whole_seconds),
        });
        Settings {
            connect_timeout,
            tcp_keepalive,
        }
    }
}

/// Durations become whole seconds, fraction dropped, as kgateway does (`1m30s` -> 90).
fn whole_seconds(text: &str) -> Option<u32> {
    let nanos = api::duration::parse_go_duration(text)?;
    u32::try_from(nanos / 1_000_000_000).ok()
}
