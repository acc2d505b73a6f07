//! BackendConfigPolicy: which clusters a policy reaches, how several policies on one target
//! merge (per top-level field, the oldest policy wins: `UpstreamPolicy::fill_from`), and the
//! policy's status. Each policy concern turns the API's fields into the Snapshot's in a file of
//! its own.

mod circuit_breakers;
pub(crate) mod connection;
mod dns;
mod health_check;
mod http2;
mod http_protocol;
mod load_balancing;
mod outlier_detection;
mod proxy_protocol;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use api::{BackendConfigPolicy, Kind, Object, ObjectKey};
use serde_json::{Value, json};
use snapshot::{Cluster, Discovery, UpstreamPolicy};

use crate::{
    CONTROLLER_NAME, ClusterDraft, Resources, Statuses, condition, json_object, objects, oldest_first,
    rfc3339,
};

/// Returns the clusters a policy could not be applied to (its Secret is missing, say): they
/// are to answer 503, as kgateway's blackhole cluster, rather than reach the backend without
/// the TLS asked for, unless a BackendTLSPolicy gives them TLS (it wins for TLS).
pub(crate) fn attach(
    resources: &Resources,
    clusters: &mut BTreeMap<String, ClusterDraft>,
    statuses: &mut Statuses,
    now: SystemTime,
) -> BTreeSet<String> {
    let now_text = rfc3339(now);
    let policies = oldest_first(resources, Kind::BackendConfigPolicy, |o| match o {
        Object::BackendConfigPolicy(p) => Some(p.as_ref()),
        _ => None,
    });

    let mut errored: BTreeSet<String> = BTreeSet::new();
    for (key, policy) in policies {
        let (found, missing) = targets(resources, key, policy);
        let upstream = upstream_policy(resources, key, policy, now);
        for target in &found {
            for (name, draft) in clusters_of(clusters, target) {
                match &upstream {
                    // Oldest first: what an older policy set stays; this one fills the rest.
                    Ok(u) => draft.cluster.upstream.fill_from(u),
                    Err(_) => {
                        errored.insert(name.clone());
                    }
                }
            }
        }
        let mut ancestors: Vec<Value> = Vec::new();
        let accepted = match &upstream {
            Ok(_) => condition("Accepted", true, "Valid", "Policy accepted", &now_text),
            Err(e) => condition(
                "Accepted",
                false,
                "Invalid",
                &format!("{e}; the targeted backends answer 503 until this is fixed"),
                &now_text,
            ),
        };
        for target in &found {
            let group = if target.kind == Kind::Service {
                ""
            } else {
                BACKEND_GROUP
            };
            ancestors.push(json_object([
                (
                    "ancestorRef",
                    json!({"group": group, "kind": target.kind.as_str(), "name": target.name, "namespace": key.namespace}),
                ),
                ("controllerName", CONTROLLER_NAME.into()),
                (
                    "conditions",
                    Value::Array(vec![
                        accepted.clone(),
                        condition("Attached", true, "Attached", "Attached to all targets", &now_text),
                    ]),
                ),
            ]));
        }
        for (kind, name) in &missing {
            let group = if kind == "Service" { "" } else { BACKEND_GROUP };
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
                        accepted.clone(),
                        condition("Attached", false, "Pending", &pending, &now_text),
                    ]),
                ),
            ]));
        }
        statuses.insert(key.clone(), json_object([("ancestors", Value::Array(ancestors))]));
    }
    errored
}

const BACKEND_GROUP: &str = "gateway.kgateway.dev";

/// A cluster without endpoints or settings: every request gets 503 (no healthy upstream).
pub(crate) fn blackhole(name: String) -> Cluster {
    Cluster {
        name,
        discovery: Discovery::Static { hosts: Vec::new() },
        endpoints: Vec::new(),
        protocol: snapshot::UpstreamProtocol::Http1,
        upstream: UpstreamPolicy::default(),
    }
}

/// The clusters made from `target`: each port of a Service, or a Backend's one cluster.
pub(crate) fn clusters_of<'a>(
    clusters: &'a mut BTreeMap<String, ClusterDraft>,
    target: &'a ObjectKey,
) -> impl Iterator<Item = (&'a String, &'a mut ClusterDraft)> {
    // Cluster names start with `kube_<ns>_<svc>_` or are `backend_<ns>_<name>_0`: a range,
    // not a scan.
    let prefix = match target.kind {
        Kind::Backend => crate::backends::backend_cluster_name(&target.namespace, &target.name),
        _ => format!("kube_{}_{}_", target.namespace, target.name),
    };
    clusters
        .range_mut(prefix.clone()..)
        .take_while(move |(n, _)| n.starts_with(&prefix))
        .filter(move |(_, d)| &d.target == target)
}

/// The objects (Services, Backends) a policy reaches, and the references that resolve to nothing.
fn targets(
    resources: &Resources,
    key: &ObjectKey,
    policy: &BackendConfigPolicy,
) -> (BTreeSet<ObjectKey>, BTreeSet<(String, String)>) {
    let mut found = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for r in &policy.spec.target_refs {
        let kind = match (r.group.as_str(), r.kind.as_str()) {
            ("", "Service") => Some(Kind::Service),
            (BACKEND_GROUP, "Backend") => Some(Kind::Backend),
            _ => None,
        };
        let target = kind.map(|kind| ObjectKey {
            kind,
            namespace: key.namespace.clone(),
            name: r.name.clone(),
        });
        match target {
            Some(t) if resources.contains_key(&t) => {
                found.insert(t);
            }
            _ => {
                missing.insert((r.kind.clone(), r.name.clone()));
            }
        }
    }
    for selector in &policy.spec.target_selectors {
        let kind = match (selector.group.as_str(), selector.kind.as_str()) {
            ("", "Service") => Kind::Service,
            (BACKEND_GROUP, "Backend") => Kind::Backend,
            _ => continue,
        };
        for (k, o) in objects(resources, kind) {
            if k.namespace != key.namespace {
                continue;
            }
            let labels = o.meta().labels.as_ref();
            let matches = selector
                .match_labels
                .iter()
                .all(|(lk, lv)| labels.and_then(|l| l.get(lk)) == Some(lv));
            if matches {
                found.insert(k.clone());
            }
        }
    }
    (found, missing)
}

/// The policy's effect on a cluster, in the Snapshot's units, one concern at a time.
fn upstream_policy(
    resources: &Resources,
    key: &ObjectKey,
    policy: &BackendConfigPolicy,
    now: SystemTime,
) -> Result<UpstreamPolicy, String> {
    let spec = &policy.spec;
    Ok(UpstreamPolicy {
        connect_timeout: connection::connect_timeout(spec),
        per_connection_buffer_limit_bytes: connection::buffer_limit(spec),
        tcp_keepalive: connection::tcp_keepalive(spec),
        common_http: http_protocol::common(spec),
        http1: http_protocol::http1(spec),
        http2: http2::http2(spec),
        load_balancer: load_balancing::load_balancer(spec, key),
        health_check: health_check::health_check(spec),
        outlier_detection: outlier_detection::outlier_detection(spec),
        circuit_breakers: circuit_breakers::circuit_breakers(spec),
        proxy_protocol: proxy_protocol::version(spec),
        tls: tls::tls(resources, &key.namespace, spec, now)?,
        dns: dns::dns(spec),
    })
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
