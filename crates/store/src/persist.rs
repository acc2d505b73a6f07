//! The state directory: applied objects as one multi-document YAML file, replaced atomically
//! (write a temporary file, fsync, rename, fsync the directory) so a crash leaves either the
//! old or the new state, never half of one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use api::{Object, ObjectKey};

use crate::StoreError;

const FILE: &str = "applied.yaml";

pub(crate) fn load(dir: &Path) -> Result<Vec<Object>, StoreError> {
    let path = dir.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StoreError::Persist { path, source }),
    };
    api::parse_manifests(&text, &path.display().to_string()).map_err(|e| {
        StoreError::Invalid(format!(
            "the saved state {} does not load: {e}\nfix or move the file away to start without it",
            path.display()
        ))
    })
}

pub(crate) fn save(
    dir: &Path,
    objects: &BTreeMap<ObjectKey, std::sync::Arc<Object>>,
) -> Result<(), StoreError> {
    let err = |source| StoreError::Persist {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    let mut text = String::new();
    for object in objects.values() {
        text.push_str("---\n");
        let yaml = serde_yaml_ng::to_string(&object.to_value())
            .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        text.push_str(&yaml);
    }
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let mut file = fs::File::create(&tmp).map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, dir.join(FILE)).map_err(err)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}
