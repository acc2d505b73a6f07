//! `translate`: the resources a user wrote -> the Snapshot the gateway runs, plus the status of
//! every object. A pure function: same input, same output; no I/O, no clock (time and version
//! come in as arguments), so it is tested with golden files.

mod app_protocol;
mod backend_policy;
mod backend_tls_policy;
mod backends;
pub mod features;
mod frontend_tls;
mod gateway_addresses;
mod gateway_class;
mod gateway_status;
mod generation;
mod grpc_routes;
mod listener_isolation;
mod listener_policy;
mod listener_tls;
mod namespace_selector;
mod reference_grant;
mod route_cors;
mod route_filters;
mod route_mirror;
mod route_query;
mod route_timeout;
mod routes;
mod tls_objects;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use api::{EndpointSlice, Kind, Object, ObjectKey, Service};
use serde_json::Value;
use snapshot::{Cluster, Endpoint, Snapshot, UpstreamPolicy};

/// Everything the store holds, by identity. Objects are shared with the store, so handing
/// them to a translation copies no object.
pub type Resources = BTreeMap<ObjectKey, Arc<Object>>;

/// The `status` of each object that has one, as the API would show it.
pub type Statuses = BTreeMap<ObjectKey, Value>;

/// kgateway's controller name, written into every status we own.
pub const CONTROLLER_NAME: &str = api::CONTROLLER_NAME;

/// Label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub use gateway_addresses::{AddressPool, Addressing, EVERY_INTERFACE};

/// The translation with no address pool: Gateways without `spec.addresses` bind every interface.
pub fn translate(resources: &Resources, version: u64, now: SystemTime) -> (Snapshot, Statuses) {
    translate_with(resources, &Addressing::default(), version, now)
}

/// The translation, with the addresses a pool gave Gateways (`AddressPool::assign`).
pub fn translate_with(
    resources: &Resources,
    addressing: &Addressing,
    version: u64,
    now: SystemTime,
) -> (Snapshot, Statuses) {
    let mut statuses = Statuses::new();
    gateway_class::statuses(resources, &mut statuses, now);
    let resources = &*gateway_class::without_foreign_gateways(resources);
    let mut clusters = service_clusters(resources);
    backends::clusters(resources, &mut clusters, &mut statuses, now);
    let mut errored = backend_policy::attach(resources, &mut clusters, &mut statuses, now);
    backend_tls_policy::attach(resources, &mut clusters, &mut errored, &mut statuses, now);
    // Never plain text where TLS was asked for: a cluster whose TLS could not be built answers 503.
    for name in errored {
        if let Some(draft) = clusters.get_mut(&name) {
            draft.cluster = backend_policy::blackhole(name);
        }
    }
    let clusters: Vec<Cluster> = clusters.into_values().map(|c| c.cluster).collect();
    let mut listeners = routes::listeners(resources, &clusters, &mut statuses, now, addressing);
    listener_policy::attach(resources, &mut listeners, &mut statuses, now);
    route_filters::settle_redirect_ports(&mut listeners);
    generation::stamp_all(resources, &mut statuses);
    (
        Snapshot {
            version,
            created: now,
            listeners,
            clusters,
        },
        statuses,
    )
}

/// A cluster while it is being built, with the object it came from (a Service, for each of its
/// ports, or a Backend).
pub(crate) struct ClusterDraft {
    pub cluster: Cluster,
    pub target: ObjectKey,
}

pub(crate) fn cluster_name(namespace: &str, service: &str, port: i32) -> String {
    format!("kube_{namespace}_{service}_{port}")
}

pub(crate) fn objects(resources: &Resources, kind: Kind) -> impl Iterator<Item = (&ObjectKey, &Object)> {
    let start = ObjectKey {
        kind,
        namespace: String::new(),
        name: String::new(),
    };
    resources
        .range(start..)
        .take_while(move |(k, _)| k.kind == kind)
        .map(|(k, o)| (k, &**o))
}

/// The objects of `kind` that `pick` takes, oldest first: by `metadata.creationTimestamp` (one
/// without counts as the newest), then namespace/name. The order in which policies win.
pub(crate) fn oldest_first<'a, T>(
    resources: &'a Resources,
    kind: Kind,
    pick: impl Fn(&'a Object) -> Option<&'a T>,
) -> Vec<(&'a ObjectKey, &'a T)> {
    let mut found: Vec<(&ObjectKey, &Object, &T)> = objects(resources, kind)
        .filter_map(|(k, o)| Some((k, o, pick(o)?)))
        .collect();
    found.sort_by(|(ka, a, _), (kb, b, _)| {
        let ta = a.meta().creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.meta().creation_timestamp.as_ref().map(|t| t.0);
        (ta.is_none(), ta, &ka.namespace, &ka.name).cmp(&(tb.is_none(), tb, &kb.namespace, &kb.name))
    });
    found.into_iter().map(|(k, _, t)| (k, t)).collect()
}

fn service_clusters(resources: &Resources) -> BTreeMap<String, ClusterDraft> {
    let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for (key, object) in objects(resources, Kind::EndpointSlice) {
        if let Object::EndpointSlice(slice) = object
            && let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            slices
                .entry((key.namespace.as_str(), svc.as_str()))
                .or_default()
                .push(slice);
        }
    }
    let mut out = BTreeMap::new();
    for (key, object) in objects(resources, Kind::Service) {
        let Object::Service(service) = object else {
            continue;
        };
        let own_slices = slices.get(&(key.namespace.as_str(), key.name.as_str()));
        for port in service.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
            let name = cluster_name(&key.namespace, &key.name, port.port);
            let endpoints = own_slices
                .map(|s| ready_endpoints(s, service, port))
                .unwrap_or_default();
            out.insert(
                name.clone(),
                ClusterDraft {
                    cluster: Cluster {
                        name,
                        discovery: snapshot::Discovery::Eds,
                        endpoints,
                        protocol: app_protocol::upstream_protocol(port.app_protocol.as_deref()),
                        upstream: UpstreamPolicy::default(),
                    },
                    target: key.clone(),
                },
            );
        }
    }
    out
}

/// Ready addresses (with their zone) of the slices' port that carries this Service port (matched by name, as
/// kube-proxy does), sorted and without duplicates.
fn ready_endpoints(
    slices: &[&EndpointSlice],
    _service: &Service,
    port: &api::k8s_openapi::api::core::v1::ServicePort,
) -> Vec<Endpoint> {
    let wanted = port.name.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for slice in slices {
        let Some(slice_port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == wanted)
            .and_then(|p| p.port)
        else {
            continue;
        };
        let Ok(slice_port) = u16::try_from(slice_port) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            // A nil `ready` means ready, per the EndpointSlice API.
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    out.push(Endpoint {
                        address: SocketAddr::new(ip, slice_port),
                        zone: endpoint.zone.clone(),
                    });
                }
            }
        }
    }
    out.sort();
    // One address in two slices (or zones) counts once.
    out.dedup_by(|a, b| a.address == b.address);
    out
}

/// A status condition in metav1.Condition's JSON shape.
pub(crate) fn condition(kind: &str, ok: bool, reason: &str, message: &str, now: &str) -> Value {
    json_object([
        ("type", kind.into()),
        ("status", if ok { "True" } else { "False" }.into()),
        ("reason", reason.into()),
        ("message", message.into()),
        ("lastTransitionTime", now.into()),
    ])
}

/// A JSON object from fields, moving the values in. `json!` would serialize every `Value`
/// expression it is given into a copy, which made status building most of a translation's
/// cost at a few thousand objects.
pub(crate) fn json_object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    jiff::Timestamp::from_second(secs as i64)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// The data plane could not bind `address` (for example, it is in use, or not an address of this
/// host): every Gateway listener bound there (its port, on an address its Gateway's
/// `status.addresses` gives), and its Gateway, are not Programmed, and say why. Bind failures
/// are only known after translation, so this marks the statuses translate made.
pub fn listener_not_programmed(
    resources: &Resources,
    statuses: &mut Statuses,
    address: SocketAddr,
    why: &str,
    now: SystemTime,
) {
    let now = rfc3339(now);
    let port = address.port();
    let message = if address.ip().is_unspecified() {
        format!("cannot listen on port {port}: {why}")
    } else {
        format!("cannot listen on {address}: {why}")
    };
    for (key, object) in objects(resources, Kind::Gateway) {
        let Object::Gateway(gw) = object else { continue };
        let names: Vec<&str> = gw
            .spec
            .listeners
            .iter()
            .filter(|l| l.port == i32::from(port))
            .map(|l| l.name.as_str())
            .collect();
        if names.is_empty() {
            continue;
        }
        let Some(status) = statuses.get_mut(key) else {
            continue;
        };
        if !gateway_addresses::binds_at(status, address.ip()) {
            continue;
        }
        // A specific address the host cannot bind (not one of its own, or taken): Gateway API's
        // AddressNotUsable for the Gateway.
        let gateway_reason = if address.ip().is_unspecified() {
            "Invalid"
        } else {
            "AddressNotUsable"
        };
        let not_programmed = condition("Programmed", false, "Invalid", &message, &now);
        if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
            replace_condition(
                conditions,
                condition("Programmed", false, gateway_reason, &message, &now),
            );
        }
        for listener in status
            .get_mut("listeners")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if names
                .iter()
                .any(|n| listener.get("name").and_then(Value::as_str) == Some(n))
                && let Some(conditions) = listener.get_mut("conditions").and_then(Value::as_array_mut)
            {
                replace_condition(conditions, not_programmed.clone());
            }
        }
        if let Some(generation) = object.meta().generation {
            generation::stamp(status, generation);
        }
    }
}

fn replace_condition(conditions: &mut Vec<Value>, new: Value) {
    match conditions.iter_mut().find(|c| c.get("type") == new.get("type")) {
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

/// The status of an object the API server holds but kgw refuses (it fails validation; without
/// the webhook nothing stops it reaching the cluster): not Accepted, with the validation error,
/// in the place each kind keeps its conditions. Services and EndpointSlices have none (None).
pub fn rejected_status(kind: Kind, object: &Value, message: &str, now: SystemTime) -> Option<Value> {
    let mut status = refusal_status(kind, object, message, now)?;
    if let Some(generation) = object.pointer("/metadata/generation").and_then(Value::as_i64) {
        generation::stamp(&mut status, generation);
    }
    Some(status)
}

/// `rejected_status` without observedGeneration.
fn refusal_status(kind: Kind, object: &Value, message: &str, now: SystemTime) -> Option<Value> {
    let now = rfc3339(now);
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let refs = |field: &str| -> Vec<Value> {
        object
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match kind {
        Kind::BackendConfigPolicy | Kind::BackendTLSPolicy | Kind::ListenerPolicy => {
            let ancestors = refs("targetRefs")
                .into_iter()
                .map(|target| {
                    let field = |name: &str| target.get(name).cloned().unwrap_or_else(|| "".into());
                    json_object([
                        (
                            "ancestorRef",
                            json_object([
                                ("group", field("group")),
                                ("kind", field("kind")),
                                ("name", field("name")),
                                ("namespace", namespace.into()),
                            ]),
                        ),
                        ("controllerName", CONTROLLER_NAME.into()),
                        (
                            "conditions",
                            Value::Array(vec![condition("Accepted", false, "Invalid", message, &now)]),
                        ),
                    ])
                })
                .collect();
            Some(json_object([("ancestors", Value::Array(ancestors))]))
        }
        Kind::HTTPRoute | Kind::GRPCRoute => {
            let parents = refs("parentRefs")
                .into_iter()
                .map(|mut parent| {
                    if let Value::Object(m) = &mut parent {
                        m.entry("group")
                            .or_insert_with(|| "gateway.networking.k8s.io".into());
                        m.entry("kind").or_insert_with(|| "Gateway".into());
                    }
                    json_object([
                        ("parentRef", parent),
                        ("controllerName", CONTROLLER_NAME.into()),
                        (
                            "conditions",
                            Value::Array(vec![condition(
                                "Accepted",
                                false,
                                "UnsupportedValue",
                                message,
                                &now,
                            )]),
                        ),
                    ])
                })
                .collect();
            Some(json_object([("parents", Value::Array(parents))]))
        }
        // `listeners: []`: the merge patch of the status replaces what the accepted version's
        // listeners said.
        Kind::Gateway => Some(json_object([
            (
                "conditions",
                Value::Array(vec![
                    condition("Accepted", false, "Invalid", message, &now),
                    condition("Programmed", false, "Invalid", message, &now),
                ]),
            ),
            ("listeners", Value::Array(Vec::new())),
        ])),
        Kind::Backend => Some(json_object([(
            "conditions",
            Value::Array(vec![condition("Accepted", false, "Invalid", message, &now)]),
        )])),
        // A refused class of ours says why, in the place the API gives its conditions.
        Kind::GatewayClass => (object.pointer("/spec/controllerName").and_then(Value::as_str)
            == Some(CONTROLLER_NAME))
        .then(|| {
            json_object([(
                "conditions",
                Value::Array(vec![condition(
                    "Accepted",
                    false,
                    "InvalidParameters",
                    message,
                    &now,
                )]),
            )])
        }),
        Kind::Service
        | Kind::EndpointSlice
        | Kind::Secret
        | Kind::ConfigMap
        | Kind::ReferenceGrant
        | Kind::Namespace => None,
    }
}
