//! The resource store: every object the gateway knows, from its sources (watched files and
//! `kgw apply`), with the statuses the last translation gave them.
//!
//! Objects applied from the command line persist in the state directory, written atomically,
//! so they survive a restart. Objects from files are owned by their files: a file that does not
//! parse keeps what it held until it does.

mod files;
pub mod kubernetes;
mod persist;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use api::{Kind, Object, ObjectKey};
use serde_json::Value;
use tokio::sync::watch;
use translate::{Resources, Statuses};

pub use files::watch_files;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The manifest was refused; nothing changed.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("cannot save the state in {path}: {source}")]
    Persist { path: PathBuf, source: std::io::Error },
}

/// What `apply` did to each object, in kubectl's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub key: ObjectKey,
    pub action: &'static str,
}

#[derive(Default)]
struct State {
    /// Objects from `kgw apply`, persisted.
    /// Objects are shared (`Arc`) with the translations that read them: handing the resources
    /// to a translation copies pointers, not objects.
    applied: BTreeMap<ObjectKey, Arc<Object>>,
    /// Objects from each watched file (its last version that parsed).
    files: BTreeMap<PathBuf, Vec<Arc<Object>>>,
    /// Objects from the Kubernetes API server (`kgw run --kubernetes`).
    cluster: BTreeMap<ObjectKey, Arc<Object>>,
    statuses: Arc<Statuses>,
    /// Cluster objects kgw refuses (they fail validation), with why. A refused update leaves
    /// the last accepted version serving; the object's status says what is wrong.
    rejected: BTreeMap<ObjectKey, Rejected>,
}

/// An object from the API server that failed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The object as the API server has it.
    pub object: Value,
    /// The validation error, as `kgw apply` would print it.
    pub message: String,
}

pub struct Store {
    state: Mutex<State>,
    state_dir: Option<PathBuf>,
    /// Bumped on every change of the resources; the translation loop waits on it.
    generation: watch::Sender<u64>,
}

impl Store {
    /// A store that persists applied objects in `state_dir` (loading what is there).
    pub fn open(state_dir: Option<&Path>) -> Result<Store, StoreError> {
        let mut state = State::default();
        if let Some(dir) = state_dir {
            for object in persist::load(dir)?.objects {
                state.applied.insert(object.key(), Arc::new(object));
            }
        }
        Ok(Store {
            state: Mutex::new(state),
            state_dir: state_dir.map(Path::to_path_buf),
            generation: watch::channel(0).0,
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-changed: every change is
        // prepared first and then assigned. So a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Every object, files first, then applied objects (which win on the same identity).
    pub fn resources(&self) -> Resources {
        let state = self.lock();
        let mut out = Resources::new();
        for objects in state.files.values() {
            for o in objects {
                out.insert(o.key(), o.clone());
            }
        }
        for (k, o) in &state.cluster {
            out.insert(k.clone(), o.clone());
        }
        for (k, o) in &state.applied {
            out.insert(k.clone(), o.clone());
        }
        out
    }

    /// `kgw apply`: all documents or none. Validation, then the data plane's limits.
    pub fn apply(&self, text: &str, origin: &str) -> Result<Vec<Applied>, StoreError> {
        let objects = admit(text, origin)?;
        let mut state = self.lock();
        let mut applied = state.applied.clone();
        let mut result = Vec::new();
        for mut object in objects {
            let key = object.key();
            let previous = applied
                .get(&key)
                .or_else(|| state.files.values().flatten().find(|o| o.key() == key));
            let action = match previous {
                None => {
                    stamp_creation(&mut object, None);
                    "created"
                }
                Some(prev) => {
                    stamp_creation(&mut object, Some(prev));
                    if same_content(prev, &object) {
                        "unchanged"
                    } else {
                        "configured"
                    }
                }
            };
            applied.insert(key.clone(), Arc::new(object));
            result.push(Applied { key, action });
        }
        if result.iter().all(|a| a.action == "unchanged") {
            return Ok(result);
        }
        if let Some(dir) = &self.state_dir {
            persist::save(dir, &applied)?;
        }
        state.applied = applied;
        drop(state);
        self.changed();
        Ok(result)
    }

    /// `kgw delete KIND NAME -n NS`.
    pub fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.applied.contains_key(key) {
            if let Some((path, _)) = state
                .files
                .iter()
                .find(|(_, objs)| objs.iter().any(|o| &o.key() == key))
            {
                return Err(StoreError::Conflict(format!(
                    "{} \"{}\" is defined in the watched file {}: remove it from that file instead",
                    key.kind.resource(),
                    key.name,
                    path.display()
                )));
            }
            return Err(StoreError::NotFound(not_found(key)));
        }
        let mut applied = state.applied.clone();
        applied.remove(key);
        if let Some(dir) = &self.state_dir {
            persist::save(dir, &applied)?;
        }
        state.applied = applied;
        drop(state);
        self.changed();
        Ok(())
    }

    /// Replaces what one watched file holds (None: the file is gone).
    pub fn set_file(&self, path: &Path, objects: Option<Vec<Object>>) {
        let mut state = self.lock();
        let previous = state.files.get(path);
        let objects: Option<Vec<Arc<Object>>> = objects.map(|list| {
            list.into_iter()
                .map(|mut o| {
                    let prev = previous.and_then(|p| p.iter().find(|x| x.key() == o.key()));
                    stamp_creation(&mut o, prev.map(|p| &**p));
                    Arc::new(o)
                })
                .collect()
        });
        let changed = match (&objects, previous) {
            (None, None) => false,
            (Some(new), Some(old)) => new != old,
            _ => true,
        };
        if !changed {
            return;
        }
        match objects {
            Some(list) => state.files.insert(path.to_path_buf(), list),
            None => state.files.remove(path),
        };
        drop(state);
        self.changed();
    }

    /// Kubernetes source: every object of `kind` the API server has now, valid or refused. A
    /// refused object's last accepted version keeps serving, as after a refused update.
    pub fn replace_cluster_kind_with_rejected(
        &self,
        kind: Kind,
        objects: Vec<Object>,
        rejected: Vec<(ObjectKey, Rejected)>,
    ) {
        let mut state = self.lock();
        let mut next_rejected: BTreeMap<ObjectKey, Rejected> = state
            .rejected
            .iter()
            .filter(|(k, _)| k.kind != kind)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        let mut next: BTreeMap<ObjectKey, Arc<Object>> = state
            .cluster
            .iter()
            .filter(|(k, _)| k.kind != kind || rejected.iter().any(|(r, _)| r == *k))
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        for o in objects {
            next.insert(o.key(), Arc::new(o));
        }
        next_rejected.extend(rejected);
        let rejected_changed = next_rejected != state.rejected;
        state.rejected = next_rejected;
        if next != state.cluster || rejected_changed {
            state.cluster = next;
            drop(state);
            self.changed();
        }
    }

    /// Kubernetes source: one object added or changed.
    pub fn upsert_cluster(&self, object: Object) {
        let mut state = self.lock();
        let key = object.key();
        let was_rejected = state.rejected.remove(&key).is_some();
        if state.cluster.get(&key).map(|o| &**o) != Some(&object) || was_rejected {
            state.cluster.insert(key, Arc::new(object));
            drop(state);
            self.changed();
        }
    }

    /// Kubernetes source: one object deleted.
    pub fn delete_cluster(&self, key: &ObjectKey) {
        let mut state = self.lock();
        let was_rejected = state.rejected.remove(key).is_some();
        if state.cluster.remove(key).is_some() || was_rejected {
            drop(state);
            self.changed();
        }
    }

    /// Kubernetes source: an object the API server has that fails validation. What was
    /// accepted before keeps serving.
    pub fn reject_cluster(&self, key: ObjectKey, rejected: Rejected) {
        let mut state = self.lock();
        if state.rejected.get(&key) != Some(&rejected) {
            state.rejected.insert(key, rejected);
            drop(state);
            self.changed();
        }
    }

    /// Every object the API server holds that kgw knows of, accepted or refused.
    pub fn cluster_keys(&self) -> std::collections::BTreeSet<ObjectKey> {
        let state = self.lock();
        state
            .cluster
            .keys()
            .chain(state.rejected.keys())
            .cloned()
            .collect()
    }

    /// Takes the statuses of a new translation. A condition whose status did not change keeps
    /// its `lastTransitionTime`, as in Kubernetes. Refused objects get a status that says why,
    /// in place of their last accepted version's. Returns the statuses as kept.
    pub fn set_statuses(&self, mut statuses: Statuses) -> Arc<Statuses> {
        let mut state = self.lock();
        let now = std::time::SystemTime::now();
        for (key, rejected) in &state.rejected {
            match translate::rejected_status(key.kind, &rejected.object, &rejected.message, now) {
                Some(status) => statuses.insert(key.clone(), status),
                None => statuses.remove(key),
            };
        }
        for (key, status) in statuses.iter_mut() {
            if let Some(old) = state.statuses.get(key) {
                keep_transition_times(status, old);
            }
        }
        let statuses = Arc::new(statuses);
        let previous = std::mem::replace(&mut state.statuses, statuses.clone());
        drop(state);
        // Freed outside the lock: a few thousand statuses take milliseconds to free.
        drop(previous);
        statuses
    }

    /// `kgw get`: objects of a kind with their status, sorted by namespace and name.
    pub fn get(&self, kind: Kind, namespace: Option<&str>, name: Option<&str>) -> Vec<Value> {
        let resources = self.resources();
        let state = self.lock();
        resources
            .iter()
            .filter(|(k, _)| k.kind == kind)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(k, _)| name.is_none_or(|n| k.name == n))
            .map(|(k, o)| {
                let mut v = o.to_value();
                if let (Some(status), Value::Object(m)) = (state.statuses.get(k), &mut v) {
                    m.insert("status".into(), status.clone());
                }
                v
            })
            .collect()
    }
}

/// kubectl's words for an object that is not there (cluster-scoped kinds have no namespace).
pub fn not_found(key: &ObjectKey) -> String {
    if key.kind.is_namespaced() {
        format!(
            "{} \"{}\" not found in namespace \"{}\"",
            key.kind.resource(),
            key.name,
            key.namespace
        )
    } else {
        format!("{} \"{}\" not found", key.kind.resource(), key.name)
    }
}

/// Parses and validates a manifest, then refuses what the data plane cannot do yet.
pub fn admit(text: &str, origin: &str) -> Result<Vec<Object>, StoreError> {
    let objects = api::parse_manifests(text, origin).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let problems: Vec<String> = objects.iter().filter_map(not_supported_yet).collect();
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(StoreError::Invalid(
            problems
                .into_iter()
                .map(|p| format!("error validating {origin}: {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ))
    }
}

/// Why the data plane cannot do what `object` asks yet (fields it does not implement), if so.
pub(crate) fn not_supported_yet(object: &Object) -> Option<String> {
    let errors = api::unsupported(object);
    if errors.is_empty() {
        return None;
    }
    let key = object.key();
    Some(
        api::InvalidObject {
            kind: key.kind.to_string(),
            name: if key.kind.is_namespaced() {
                format!("{}/{}", key.namespace, key.name)
            } else {
                key.name.clone()
            },
            errors,
        }
        .to_string(),
    )
}

/// Sets `metadata.creationTimestamp` the first time an object is seen, and keeps it after; and
/// `metadata.generation` as the API server does: 1 at creation, one more at each change of
/// anything but metadata and status (what a manifest says of either is not kept).
fn stamp_creation(object: &mut Object, previous: Option<&Object>) {
    let generation = match previous {
        None => 1,
        Some(prev) => {
            let before = prev.meta().generation.unwrap_or(1);
            if same_spec(prev, object) {
                before
            } else {
                before + 1
            }
        }
    };
    object.meta_mut().generation = Some(generation);
    let keep = previous.and_then(|p| p.meta().creation_timestamp.clone());
    let meta = object.meta_mut();
    match keep {
        Some(t) => meta.creation_timestamp = Some(t),
        None => {
            if meta.creation_timestamp.is_none() {
                let now = jiff::Timestamp::now();
                let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
                meta.creation_timestamp = Some(api::Time(now));
            }
        }
    }
}

/// Walks a new status and, for each `conditions` list, copies the old `lastTransitionTime` of
/// every condition whose type and status are the same as before.
fn keep_transition_times(new: &mut Value, old: &Value) {
    match (new, old) {
        (Value::Object(n), Value::Object(o)) => {
            for (k, v) in n.iter_mut() {
                if k == "conditions"
                    && let (Value::Array(nc), Some(Value::Array(oc))) = (&mut *v, o.get(k))
                {
                    for c in nc.iter_mut() {
                        let same = oc
                            .iter()
                            .find(|x| x.get("type") == c.get("type") && x.get("status") == c.get("status"));
                        if let (Some(prev), Value::Object(cm)) =
                            (same.and_then(|x| x.get("lastTransitionTime")), c)
                        {
                            cm.insert("lastTransitionTime".into(), prev.clone());
                        }
                    }
                } else if let Some(ov) = o.get(k) {
                    keep_transition_times(v, ov);
                }
            }
        }
        (Value::Array(n), Value::Array(o)) => {
            for (nv, ov) in n.iter_mut().zip(o) {
                keep_transition_times(nv, ov);
            }
        }
        _ => {}
    }
}

fn same_content(a: &Object, b: &Object) -> bool {
    a == b
}

/// Equal but for metadata and status: no new generation.
fn same_spec(a: &Object, b: &Object) -> bool {
    let without_meta = |o: &Object| {
        let mut v = o.to_value();
        if let Value::Object(map) = &mut v {
            map.remove("metadata");
            map.remove("status");
        }
        v
    };
    a.kind() == b.kind() && without_meta(a) == without_meta(b)
}
