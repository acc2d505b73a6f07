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
        let mut reported: Vec<String> = Vec::new();
        loop {
            tokio::time::sleep(POLL).await;
            // A file is read once its size and mtime have stayed the same for one interval,
            // so a file being written is not read half-way.
            let (current, unreadable) = list(&roots);
            // Each read error is logged when it starts, not on every poll.
            for msg in unreadable.errors.iter().filter(|m| !reported.contains(m)) {
                tracing::warn!("{msg}");
            }
            reported.clone_from(&unreadable.errors);
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
            // Only a path that was looked for and is definitely not there is removed: an error
            // reading its directory or the file (EMFILE when descriptors run out, EIO, EACCES)
            // says nothing about it, and its objects stay.
            let gone: Vec<PathBuf> = seen
                .keys()
                .filter(|p| !current.contains_key(*p) && !unreadable.covers(p))
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
    let (listed, unreadable) = list(roots);
    for failure in &unreadable.errors {
        errors.push(failure.clone());
    }
    for (path, meta) in listed {
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

/// The paths whose listing failed, so whose files cannot be said to be gone.
#[derive(Default)]
struct Unreadable {
    /// Directories that could not be listed, and files whose metadata could not be read.
    paths: Vec<PathBuf>,
    errors: Vec<String>,
}

impl Unreadable {
    fn add(&mut self, path: &Path, error: std::io::Error) {
        self.paths.push(path.to_path_buf());
        self.errors.push(format!(
            "cannot read {}: {error}; keeping what it held",
            path.display()
        ));
    }

    /// Whether `path` is, or is directly in, a path that could not be read.
    fn covers(&self, path: &Path) -> bool {
        self.paths
            .iter()
            .any(|p| p == path || path.parent() == Some(p.as_path()))
    }
}

/// The manifest files under the roots: files given directly, and `*.yaml|*.yml|*.json` in
/// directories (not recursive, as `kubectl apply -f DIR`). A path that does not exist is absent;
/// one that cannot be read for another reason is in `Unreadable`.
fn list(roots: &[PathBuf]) -> (BTreeMap<PathBuf, Seen>, Unreadable) {
    let mut out = BTreeMap::new();
    let mut unreadable = Unreadable::default();
    let mut add = |path: PathBuf, unreadable: &mut Unreadable| match std::fs::metadata(&path) {
        // Regular files (and links to one) only: a directory named *.yaml is skipped, and a
        // FIFO or a device, whose read could block the watcher, is never opened.
        Ok(m) if !m.is_file() => {}
        Ok(m) => {
            out.insert(
                path,
                Seen {
                    modified: m.modified().ok(),
                    len: m.len(),
                },
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => unreadable.add(&path, e),
    };
    for root in roots {
        let is_dir = match std::fs::metadata(root) {
            Ok(m) => m.is_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                unreadable.add(root, e);
                continue;
            }
        };
        if !is_dir {
            add(root.clone(), &mut unreadable);
            continue;
        }
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                unreadable.add(root, e);
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    // A listing cut short is not a listing of what is there.
                    unreadable.add(root, e);
                    break;
                }
            };
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if matches!(ext, "yaml" | "yml" | "json") {
                add(path, &mut unreadable);
            }
        }
    }
    (out, unreadable)
}
