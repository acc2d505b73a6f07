//! The file source: `kgw run -f FILE|DIR`. Files are polled rather than watched through inotify:
//! polling sees every kind of replacement (editors that rename, `cp`, `>` redirection, files on
//! network mounts) the same way, and costs one stat per file every interval.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::Store;

const POLL: Duration = Duration::from_millis(200);

#[derive(PartialEq, Clone)]
struct Seen {
    modified: Option<SystemTime>,
    len: u64,
}

/// Loads the files once (returning every error), then keeps watching them in the background.
pub async fn watch_files(store: Arc<Store>, roots: Vec<PathBuf>) -> Vec<String> {
    let mut seen: BTreeMap<PathBuf, (Seen, String)> = BTreeMap::new();
    let errors = scan(&store, &roots, &mut seen);
    tokio::spawn(async move {
        let mut pending: BTreeMap<PathBuf, Seen> = BTreeMap::new();
        loop {
            tokio::time::sleep(POLL).await;
            // A file is read once its size and mtime have stayed the same for one interval,
            // so a file being written is not read half-way.
            let current = list(&roots);
            let mut stable = Vec::new();
            for (path, meta) in &current {
                let known = seen.get(path).map(|(s, _)| s);
                if known == Some(meta) {
                    pending.remove(path);
                    continue;
                }
                if pending.get(path) == Some(meta) {
                    stable.push(path.clone());
                } else {
                    pending.insert(path.clone(), meta.clone());
                }
            }
            let gone: Vec<PathBuf> = seen
                .keys()
                .filter(|p| !current.contains_key(*p))
                .cloned()
                .collect();
            for path in gone {
                tracing::info!(file = %path.display(), "file removed: its objects are removed");
                seen.remove(&path);
                store.set_file(&path, None);
            }
            for path in stable {
                pending.remove(&path);
                load_one(&store, &path, current[&path].clone(), &mut seen);
            }
        }
    });
    errors
}

fn scan(store: &Store, roots: &[PathBuf], seen: &mut BTreeMap<PathBuf, (Seen, String)>) -> Vec<String> {
    let mut errors = Vec::new();
    for root in roots {
        if !root.exists() {
            errors.push(format!("the path \"{}\" does not exist", root.display()));
        }
    }
    for (path, meta) in list(roots) {
        if let Some(e) = load_one(store, &path, meta, seen) {
            errors.push(e);
        }
    }
    errors
}

/// Reads and parses one file; on any error what the file held before stays.
fn load_one(
    store: &Store,
    path: &Path,
    meta: Seen,
    seen: &mut BTreeMap<PathBuf, (Seen, String)>,
) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("cannot read {}: {e}; keeping what it held", path.display());
            tracing::warn!("{msg}");
            return Some(msg);
        }
    };
    if seen.get(path).is_some_and(|(_, old)| *old == text) {
        seen.insert(path.to_path_buf(), (meta, text));
        return None;
    }
    if text.trim().is_empty() && seen.contains_key(path) {
        // An emptied file is a file being rewritten far more often than a wish to remove
        // everything (delete the file for that), so what it held stays.
        tracing::warn!(file = %path.display(), "file is empty; keeping what it held (delete the file to remove its objects)");
        return None;
    }
    match crate::admit(&text, &path.display().to_string()) {
        Ok(objects) => {
            tracing::info!(file = %path.display(), objects = objects.len(), "loaded");
            store.set_file(path, Some(objects));
            seen.insert(path.to_path_buf(), (meta, text));
            None
        }
        Err(e) => {
            let msg = format!("{e}\n(keeping what {} held before)", path.display());
            tracing::warn!("{msg}");
            // Remember the bad content so it is not reported again until it changes.
            seen.insert(path.to_path_buf(), (meta, text));
            Some(msg)
        }
    }
}

/// The manifest files under the roots: files given directly, and `*.yaml|*.yml|*.json` in
/// directories (not recursive, as `kubectl apply -f DIR`).
fn list(roots: &[PathBuf]) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut add = |path: PathBuf| {
        if let Ok(m) = std::fs::metadata(&path) {
            out.insert(
                path,
                Seen {
                    modified: m.modified().ok(),
                    len: m.len(),
                },
            );
        }
    };
    for root in roots {
        if root.is_dir() {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if path.is_file() && matches!(ext, "yaml" | "yml" | "json") {
                    add(path);
                }
            }
        } else {
            add(root.clone());
        }
    }
    out
}
