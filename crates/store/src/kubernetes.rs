//! The Kubernetes source: watches the kinds kgw serves in a cluster and keeps the store's
//! cluster objects equal to what the API server has; writes the statuses kgw computes back.
//!
//! Objects come through the same strict decoding and validation as files and `kgw apply`, so the
//! translation sees the same resources whichever source they came from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{Kind, Object, ObjectKey};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;

use crate::{Rejected, Store};

/// Controller name of the GatewayClasses whose Gateways kgw serves.
pub const CONTROLLER_NAME: &str = api::CONTROLLER_NAME;

fn resource(kind: Kind) -> ApiResource {
    let (group, version, plural) = match kind {
        Kind::Gateway => ("gateway.networking.k8s.io", "v1", "gateways"),
        Kind::HTTPRoute => ("gateway.networking.k8s.io", "v1", "httproutes"),
        Kind::GRPCRoute => ("gateway.networking.k8s.io", "v1", "grpcroutes"),
        Kind::Service => ("", "v1", "services"),
        Kind::EndpointSlice => ("discovery.k8s.io", "v1", "endpointslices"),
        Kind::BackendConfigPolicy => ("gateway.kgateway.dev", "v1alpha1", "backendconfigpolicies"),
        Kind::Backend => ("gateway.kgateway.dev", "v1alpha1", "backends"),
        Kind::ListenerPolicy => ("gateway.kgateway.dev", "v1alpha1", "listenerpolicies"),
        Kind::Secret => ("", "v1", "secrets"),
        Kind::ConfigMap => ("", "v1", "configmaps"),
        Kind::ReferenceGrant => ("gateway.networking.k8s.io", "v1beta1", "referencegrants"),
        Kind::BackendTLSPolicy => ("gateway.networking.k8s.io", "v1", "backendtlspolicies"),
        Kind::GatewayClass => ("gateway.networking.k8s.io", "v1", "gatewayclasses"),
        Kind::Namespace => ("", "v1", "namespaces"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind.as_str()), plural)
}

/// Gateways are served only when their GatewayClass is ours: both are tracked here and the store
/// gets the Gateways that qualify.
#[derive(Default)]
struct Classes {
    ours: BTreeSet<String>,
    /// Every Gateway's last accepted version.
    gateways: BTreeMap<ObjectKey, Object>,
    /// Gateways whose current version kgw refuses, whatever their class: whether the class is
    /// ours is decided when publishing, since the classes may be listed after the Gateways.
    refused: BTreeMap<ObjectKey, Rejected>,
}

impl Classes {
    /// Hands the store the Gateways of our classes, and the refused ones of our classes (a
    /// refused Gateway gets our status only when its class is ours).
    fn publish(&self, store: &Store) {
        let refused = self
            .refused
            .iter()
            .filter(|(_, r)| {
                r.object
                    .pointer("/spec/gatewayClassName")
                    .and_then(Value::as_str)
                    .is_some_and(|class| self.ours.contains(class))
            })
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        store.replace_cluster_kind_with_rejected(Kind::Gateway, self.serving(), refused);
    }

    fn serving(&self) -> Vec<Object> {
        self.gateways
            .values()
            .filter(|o| match o {
                Object::Gateway(g) => self.ours.contains(&g.spec.gateway_class_name),
                _ => false,
            })
            .cloned()
            .collect()
    }
}

/// Counts the watches that have not listed their kind once yet; the last one to list it records
/// the store generation that holds the whole cluster.
struct FirstSync {
    remaining: Mutex<usize>,
    synced: tokio::sync::watch::Sender<Option<u64>>,
}

impl FirstSync {
    /// Called by each watch after its first complete listing is in the store.
    fn listed(&self, store: &Store) {
        let mut remaining = self.remaining.lock().unwrap_or_else(|e| e.into_inner());
        *remaining -= 1;
        if *remaining == 0 {
            let generation = *store.subscribe().borrow();
            tracing::info!(generation, "first complete sync from the API server");
            self.synced.send_replace(Some(generation));
        }
    }
}

/// Starts one watch per kind (cluster-wide, or in `namespace`). Watches that fail are retried
/// with backoff; what the store holds keeps serving meanwhile.
///
/// Returns the store generation that holds the first complete listing of every kind (None until
/// then): a replica is ready once its data plane serves that generation, not before, or it would
/// take traffic for listeners it has not bound yet.
pub fn watch_cluster(
    store: Arc<Store>,
    client: kube::Client,
    namespace: Option<String>,
) -> tokio::sync::watch::Receiver<Option<u64>> {
    let classes = Arc::new(Mutex::new(Classes::default()));
    let (synced, synced_rx) = tokio::sync::watch::channel(None);
    let first_sync = Arc::new(FirstSync {
        // One watch per kind.
        remaining: Mutex::new(Kind::ALL.len()),
        synced,
    });
    for kind in Kind::ALL {
        let first_sync = first_sync.clone();
        let mut listed_once = false;
        let store = store.clone();
        let classes = classes.clone();
        let client = client.clone();
        let namespace = namespace.clone();
        tokio::spawn(async move {
            let ar = served_resource(&client, kind).await;
            let api: Api<DynamicObject> = match &namespace {
                Some(ns) if kind.is_namespaced() => Api::namespaced_with(client.clone(), ns, &ar),
                _ => Api::all_with(client.clone(), &ar),
            };
            let mut stream = watcher::watcher(api, watch_config(kind, namespace.as_deref()))
                .default_backoff()
                .boxed();
            let mut listing: Vec<Object> = Vec::new();
            let mut listing_rejected: Vec<(ObjectKey, Rejected)> = Vec::new();
            let mut refusals = RefusalLog::default();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Init) => {
                        listing.clear();
                        listing_rejected.clear();
                    }
                    Ok(Event::InitApply(o)) => match decode(&ar, kind, o) {
                        Ok(object) => {
                            refusals.accepted(&object.key());
                            listing.push(object);
                        }
                        Err(refused) => {
                            refusals.refused(&refused.0, &refused.1.message);
                            listing_rejected.push(*refused);
                        }
                    },
                    Ok(Event::InitDone) => {
                        let objects = std::mem::take(&mut listing);
                        let rejected = std::mem::take(&mut listing_rejected);
                        refusals.keep_only(rejected.iter().map(|(k, _)| k));
                        if kind == Kind::Gateway {
                            let mut c = classes.lock().unwrap_or_else(|e| e.into_inner());
                            let mut gateways: BTreeMap<ObjectKey, Object> =
                                objects.into_iter().map(|o| (o.key(), o)).collect();
                            // A refused Gateway's last accepted version keeps serving.
                            for (key, _) in &rejected {
                                if let Some(accepted) = c.gateways.remove(key) {
                                    gateways.insert(key.clone(), accepted);
                                }
                            }
                            c.gateways = gateways;
                            c.refused = rejected.into_iter().collect();
                            c.publish(&store);
                        } else {
                            store.replace_cluster_kind_with_rejected(kind, objects, rejected);
                        }
                        if !listed_once {
                            listed_once = true;
                            first_sync.listed(&store);
                        }
                    }
                    Ok(Event::Apply(o)) => {
                        let object = match decode(&ar, kind, o) {
                            Ok(object) => {
                                refusals.accepted(&object.key());
                                object
                            }
                            Err(refused) => {
                                let (key, rejected) = *refused;
                                refusals.refused(&key, &rejected.message);
                                if kind == Kind::Gateway {
                                    let mut c = classes.lock().unwrap_or_else(|e| e.into_inner());
                                    c.refused.insert(key, rejected);
                                    c.publish(&store);
                                } else {
                                    store.reject_cluster(key, rejected);
                                }
                                continue;
                            }
                        };
                        if kind == Kind::Gateway {
                            let mut c = classes.lock().unwrap_or_else(|e| e.into_inner());
                            c.refused.remove(&object.key());
                            c.gateways.insert(object.key(), object);
                            c.publish(&store);
                        } else {
                            store.upsert_cluster(object);
                        }
                    }
                    Ok(Event::Delete(o)) => {
                        let key = ObjectKey {
                            kind,
                            namespace: o.metadata.namespace.clone().unwrap_or_default(),
                            name: o.metadata.name.clone().unwrap_or_default(),
                        };
                        refusals.accepted(&key);
                        if kind == Kind::Gateway {
                            let mut c = classes.lock().unwrap_or_else(|e| e.into_inner());
                            c.gateways.remove(&key);
                            c.refused.remove(&key);
                            c.publish(&store);
                        } else {
                            store.delete_cluster(&key);
                        }
                    }
                    Err(e) => match refusal(&e) {
                        // No objects of a kind the server does not know: the kind is synced,
                        // empty; the watcher keeps retrying, so installing the CRD later is
                        // picked up (its first listing then replaces the empty one).
                        Some(404) => {
                            if !listed_once {
                                tracing::warn!(kind = %kind, "the API server does not serve {}: its CRD is not installed, so kgw serves without any {kind} until it is (install kgw's CRDs: `kgw crds | kubectl apply -f -`)", resource_name(&ar));
                                listed_once = true;
                                first_sync.listed(&store);
                            }
                        }
                        // Not counted as synced: objects of this kind exist but cannot be read,
                        // and serving without them (a route without its Services, a backend
                        // without its policy) would answer traffic wrongly; the replica stays
                        // unready and says why until the rule is granted.
                        Some(403) => {
                            tracing::error!(kind = %kind, "{}; kgw stays unready until it can read every kind", forbidden(&ar))
                        }
                        _ => tracing::warn!(kind = %kind, "watch failed, retrying: {e}"),
                    },
                }
                if kind == Kind::GatewayClass {
                    // Which classes are ours decides which Gateways the store gets.
                    let mut c = classes.lock().unwrap_or_else(|e| e.into_inner());
                    let ours = our_classes(&store);
                    if ours != c.ours {
                        c.ours = ours;
                        c.publish(&store);
                    }
                }
            }
        });
    }
    synced_rx
}

/// What each watch asks the API server for. Secrets: every type but Helm's release records
/// (`helm.sh/release.v1`, up to 1 MiB each, one per release revision), which can be most of a
/// cluster's Secret bytes and never hold TLS material; API servers select Secrets by `type`.
/// Namespaces, with --namespace: that one only (its labels are all a Selector reads).
fn watch_config(kind: Kind, namespace: Option<&str>) -> watcher::Config {
    let config = watcher::Config::default();
    match (kind, namespace) {
        (Kind::Secret, _) => config.fields("type!=helm.sh/release.v1"),
        (Kind::Namespace, Some(ns)) => config.fields(&format!("metadata.name={ns}")),
        _ => config,
    }
}

/// The refusals a watch has logged, so that each is logged once: when an object is first
/// refused, or refused for another reason, not again on every update or relist that brings the
/// same verdict (a cluster-wide Secret watch sees many objects kgw has no use for).
#[derive(Default)]
struct RefusalLog {
    logged: BTreeMap<ObjectKey, String>,
}

impl RefusalLog {
    fn refused(&mut self, key: &ObjectKey, message: &str) {
        if self.logged.get(key).map(String::as_str) != Some(message) {
            tracing::warn!(object = %key, "not served: {message}");
            self.logged.insert(key.clone(), message.to_string());
        }
    }

    /// Accepted or deleted: a later refusal is news again.
    fn accepted(&mut self, key: &ObjectKey) {
        self.logged.remove(key);
    }

    /// After a relist: forget the objects that are no longer refused (or gone).
    fn keep_only<'a>(&mut self, refused: impl Iterator<Item = &'a ObjectKey>) {
        let refused: BTreeSet<&ObjectKey> = refused.collect();
        self.logged.retain(|k, _| refused.contains(k));
    }
}

/// The resource to watch for `kind`. API servers before 1.21 serve EndpointSlices only as
/// `discovery.k8s.io/v1beta1`; those are read and converted to v1.
async fn served_resource(client: &kube::Client, kind: Kind) -> ApiResource {
    if kind == Kind::EndpointSlice
        && client
            .list_api_group_resources("discovery.k8s.io/v1")
            .await
            .is_err()
    {
        tracing::info!("the API server has no discovery.k8s.io/v1: reading EndpointSlices as v1beta1");
        return ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("discovery.k8s.io", "v1beta1", "EndpointSlice"),
            "endpointslices",
        );
    }
    resource(kind)
}

/// The HTTP status the API server refused a list or watch with, if it did.
fn refusal(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    }
}

/// `plural.group` (or `plural` in the core group), as kubectl and RBAC rules name a resource.
fn resource_name(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

/// What a 403 means, and the RBAC rule that fixes it.
fn forbidden(ar: &ApiResource) -> String {
    format!(
        "the API server forbids kgw's ServiceAccount to list and watch {}: grant it, in its ClusterRole (or Role with --namespace), the rule {{apiGroups: [\"{}\"], resources: [\"{}\"], verbs: [get, list, watch]}} (deploy/kustomize/rbac.yaml has it)",
        resource_name(ar),
        ar.group,
        ar.plural
    )
}

/// The names of the GatewayClasses of our controller the store holds.
fn our_classes(store: &Store) -> BTreeSet<String> {
    store
        .resources()
        .into_iter()
        .filter_map(|(key, object)| match &*object {
            Object::GatewayClass(class) if class.spec.controller_name == CONTROLLER_NAME => Some(key.name),
            _ => None,
        })
        .collect()
}

/// API object -> our validated Object; what does not validate is returned with its key and why,
/// for the watch to log (once) and its status to say.
fn decode(ar: &ApiResource, kind: Kind, object: DynamicObject) -> Result<Object, Box<(ObjectKey, Rejected)>> {
    let key = ObjectKey {
        kind,
        namespace: object.metadata.namespace.clone().unwrap_or_default(),
        name: object.metadata.name.clone().unwrap_or_default(),
    };
    let mut value = serde_json::to_value(&object).unwrap_or_default();
    drop_nulls(&mut value);
    // What changes when kgw writes a status (the status itself, resourceVersion, managedFields)
    // is not input to the translation: without it, the echo of our own status write is not a
    // change, and does not cost a translation.
    if let Value::Object(map) = &mut value {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
            // kubectl apply's copy of the whole object: for Secrets and ConfigMaps a second copy
            // of their data (key material included) that nothing in kgw reads.
            if matches!(kind, Kind::Secret | Kind::ConfigMap)
                && let Some(Value::Object(annotations)) = meta.get_mut("annotations")
            {
                annotations.remove(LAST_APPLIED);
                if annotations.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    let mut api_version = ar.api_version.clone();
    if api_version == "discovery.k8s.io/v1beta1" {
        // v1beta1 -> v1: the same fields, less the deprecated per-endpoint `topology`.
        api_version = "discovery.k8s.io/v1".into();
        for endpoint in value
            .get_mut("endpoints")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Value::Object(e) = endpoint {
                e.remove("topology");
            }
        }
    }
    if let Value::Object(map) = &mut value {
        map.insert("apiVersion".into(), Value::String(api_version));
        map.insert("kind".into(), Value::String(ar.kind.clone()));
    }
    // The same refusals as `kgw apply` and the webhook: invalid, or not supported yet.
    let refused = match api::decode_object(&value) {
        Ok(o) => match crate::not_supported_yet(&o) {
            None => return Ok(o),
            Some(why) => why,
        },
        Err(e) => e.to_string(),
    };
    // A refused object is kept for its status; the kinds without a status keep only their
    // identity, not their data (a refused Secret's key material has no use here).
    if matches!(kind, Kind::Secret | Kind::ConfigMap | Kind::ReferenceGrant)
        && let Value::Object(map) = &mut value
    {
        map.retain(|field, _| matches!(field.as_str(), "apiVersion" | "kind" | "metadata"));
    }
    Err(Box::new((
        key,
        Rejected {
            object: value,
            message: refused,
        },
    )))
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// In the API, a null field is an unset field: nulls are removed, except `group`, where null is
/// how some API servers (kube-apiserver 1.20 as built for our tests) store the core group "".
pub fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("group") == Some(&Value::Null) {
                map.insert("group".into(), Value::String(String::new()));
            }
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Which replica writes statuses: the holder of a coordination.k8s.io Lease. Every replica
/// serves traffic; only the holder writes, so replicas never fight over a status.
pub struct Leader {
    leading: AtomicBool,
    /// Set when leadership was gained, so the new leader writes every status once.
    gained: AtomicBool,
    pub identity: String,
}

impl Leader {
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    fn set(&self, leading: bool) {
        let was = self.leading.swap(leading, Ordering::Relaxed);
        if leading && !was {
            tracing::info!(identity = %self.identity, "leading: this replica writes statuses");
            self.gained.store(true, Ordering::Relaxed);
        } else if was && !leading {
            tracing::info!(identity = %self.identity, "no longer leading: another replica writes statuses");
        }
    }
}

/// Takes part in the election for Lease `namespace/name`: renews it every third of `duration`
/// while holding it, takes it over when its holder has not renewed it for `duration`.
pub fn elect(client: kube::Client, namespace: String, name: String, duration: Duration) -> Arc<Leader> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let identity = format!("{}-{}", host.trim(), std::process::id());
    let leader = Arc::new(Leader {
        leading: AtomicBool::new(false),
        gained: AtomicBool::new(false),
        identity,
    });
    let me = leader.clone();
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &namespace);
        let seconds = i32::try_from(duration.as_secs()).unwrap_or(15).max(1);
        loop {
            let now = MicroTime(jiff::Timestamp::now());
            let outcome = match api.get_opt(&name).await {
                Ok(None) => {
                    let lease = Lease {
                        metadata: kube::api::ObjectMeta {
                            name: Some(name.clone()),
                            ..Default::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(me.identity.clone()),
                            lease_duration_seconds: Some(seconds),
                            acquire_time: Some(now.clone()),
                            renew_time: Some(now),
                            lease_transitions: Some(0),
                            ..Default::default()
                        }),
                    };
                    api.create(&PostParams::default(), &lease).await.map(|_| true)
                }
                Ok(Some(mut lease)) => {
                    let spec = lease.spec.get_or_insert_with(Default::default);
                    let holder = spec.holder_identity.clone().unwrap_or_default();
                    let held_for = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
                    let expired = spec
                        .renew_time
                        .as_ref()
                        .is_none_or(|t| jiff::Timestamp::now().as_second() > t.0.as_second() + held_for);
                    if holder == me.identity || expired || holder.is_empty() {
                        if holder != me.identity {
                            spec.holder_identity = Some(me.identity.clone());
                            spec.acquire_time = Some(now.clone());
                            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                        }
                        spec.lease_duration_seconds = Some(seconds);
                        spec.renew_time = Some(now);
                        // resourceVersion makes this a compare-and-swap: of two replicas taking
                        // over at once, one gets a conflict.
                        api.replace(&name, &PostParams::default(), &lease)
                            .await
                            .map(|_| true)
                    } else {
                        Ok(false)
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(leading) => me.set(leading),
                Err(e) => {
                    // Without a renewal the lease runs out: stop writing before another takes over.
                    tracing::warn!("lease {namespace}/{name}: {e}");
                    me.set(false);
                }
            }
            tokio::time::sleep(duration / 3).await;
        }
    });
    leader
}

/// Writes statuses back to the API server, each only when it differs from what was written,
/// and only while this replica leads.
pub struct StatusWriter {
    client: kube::Client,
    leader: Arc<Leader>,
    written: Mutex<BTreeMap<ObjectKey, Value>>,
}

impl StatusWriter {
    pub fn new(client: kube::Client, leader: Arc<Leader>) -> StatusWriter {
        StatusWriter {
            client,
            leader,
            written: Mutex::new(BTreeMap::new()),
        }
    }

    /// True when this replica just became the leader and has not written yet.
    pub fn must_resync(&self) -> bool {
        self.leader.is_leading() && self.leader.gained.load(Ordering::Relaxed)
    }

    /// Patches the status subresource of every cluster object whose status changed.
    pub async fn write(&self, store: &Store, statuses: &translate::Statuses) {
        if !self.leader.is_leading() {
            return;
        }
        if self.leader.gained.swap(false, Ordering::Relaxed) {
            // Another replica may have written since we last did.
            self.written.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        let cluster = store.cluster_keys();
        let todo: Vec<(ObjectKey, Value)> = {
            let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            statuses
                .iter()
                .filter(|(k, _)| cluster.contains(*k))
                .filter(|(k, v)| written.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        tracing::debug!(changed = todo.len(), "writing statuses");
        for (key, status) in todo {
            let api: Api<DynamicObject> = if key.kind.is_namespaced() {
                Api::namespaced_with(self.client.clone(), &key.namespace, &resource(key.kind))
            } else {
                Api::all_with(self.client.clone(), &resource(key.kind))
            };
            let mut patch = serde_json::json!({ "status": status });
            if key.kind == Kind::BackendTLSPolicy {
                // A Gateway API policy other implementations may also serve: a merge patch
                // replaces `ancestors` whole, so the entries of other controllers are kept.
                match api.get_opt(&key.name).await {
                    Ok(current) => {
                        let theirs = current
                            .as_ref()
                            .and_then(|o| o.data.pointer("/status/ancestors"))
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter(|a| a["controllerName"] != CONTROLLER_NAME)
                            .cloned();
                        let ours = status["ancestors"].as_array().cloned().unwrap_or_default();
                        patch["status"]["ancestors"] = Value::Array(theirs.chain(ours).collect());
                    }
                    Err(e) => {
                        tracing::warn!(object = %key, "cannot read the status to write ours beside other controllers': {e}");
                        continue;
                    }
                }
            }
            let started = std::time::Instant::now();
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(object = %key, elapsed = ?started.elapsed(), "status written");
                    self.written
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, status);
                }
                Err(e) => tracing::warn!(object = %key, "cannot write status: {e}"),
            }
        }
    }
}
