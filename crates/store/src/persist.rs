//! The state directory: applied objects as one multi-document YAML file, replaced atomically
//! (write a temporary file, fsync, rename, fsync the directory) so a crash leaves either the
//! old or the new state, never half of one.
//!
//! The file is verified whole before anything in it is used: it starts with [`HEADER`] and
//! ends with a trailer line holding the number of objects and the SHA-256 of everything before
//! it. Both are YAML comments, so any YAML reader still reads the file. A file cut short, or
//! changed outside kgw, fails the check and is refused, never half-loaded. A file without the
//! header was written by an earlier kgw (which wrote neither): it is loaded as before and gets
//! both on the next save.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use api::{Object, ObjectKey};

use crate::StoreError;

const FILE: &str = "applied.yaml";
const HEADER: &str = "# kgw state file, format 2: the objects of `kgw apply`. Change it with kgw apply/delete: \
                      an edit by hand breaks the checksum on the last line.\n";
const TRAILER: &str = "# kgw-state-end objects=";

/// What was loaded: the objects, and a report on those that could not be (already logged).
pub(crate) struct Loaded {
    pub objects: Vec<Object>,
}

pub(crate) fn load(dir: &Path) -> Result<Loaded, StoreError> {
    let path = dir.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded { objects: Vec::new() }),
        Err(e) => {
            return Err(StoreError::Invalid(format!(
                "cannot read the saved state {}: {e}; fix its permissions, or point --state-dir elsewhere",
                path.display()
            )));
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => return Err(damaged(&path, "it is not UTF-8 text")),
    };
    // The previous kgw wrote `---` before each object and nothing else: such a file (or an
    // empty one) has no checksum to check. Anything else must be this format, whole.
    let verified = !(text.is_empty() || text.starts_with("---\n"));
    let body = if verified {
        if !text.starts_with(HEADER) {
            return Err(damaged(
                &path,
                "it does not start with kgw's header line (nor with `---`, as files of earlier kgw versions do)",
            ));
        }
        match verify(&text) {
            Ok(body) => body,
            Err(why) => return Err(damaged(&path, &why)),
        }
    } else {
        tracing::info!(file = %path.display(), "the saved state has no checksum (written by an earlier kgw); it gets one on the next change");
        text.as_str()
    };
    let shown = path.display().to_string();
    let documents = match api::parse_documents(body, &shown) {
        Ok(d) => d,
        Err(e) => return Err(damaged(&path, &e.to_string())),
    };
    let mut objects = Vec::new();
    let mut refused = Vec::new();
    for document in documents {
        match document.object {
            Ok(o) => objects.push(o),
            // Without a checksum, a document that is not even an object means the file is
            // not one kgw wrote (garbage, or another file in its place).
            Err(api::DecodeError::Other(e)) if !verified => {
                return Err(damaged(
                    &path,
                    &format!("the document at line {} is not an object: {e}", document.line),
                ));
            }
            Err(e) => refused.push(format!("document at line {}: {e}", document.line)),
        }
    }
    if !refused.is_empty() {
        // Objects this kgw refuses (validation is stricter than the kgw that wrote them, or the
        // file was edited): the others serve, and a copy keeps the refused ones, since the
        // next save writes only what serves.
        let copy = keep_copy(&path, "refused");
        tracing::error!(
            "the saved state {shown} holds {} object(s) kgw refuses; they are not served, the other {} are:\n{}\n\
             a copy of the file is kept at {copy}: fix those objects there and `kgw apply -f` them",
            refused.len(),
            objects.len(),
            refused.join("\n"),
        );
    }
    Ok(Loaded { objects })
}

/// Checks the header's file: trailer present, object count and checksum right. Returns the
/// text before the trailer.
fn verify(text: &str) -> Result<&str, String> {
    let cut = "the file ends early (cut short, e.g. by a full disk or a copy that stopped): its last line is not \
               the kgw-state-end line";
    let without_newline = text.strip_suffix('\n').ok_or(cut)?;
    let trailer_start = without_newline.rfind('\n').map_or(0, |i| i + 1);
    let trailer = &without_newline[trailer_start..];
    let fields = trailer.strip_prefix(TRAILER).ok_or(cut)?;
    let (count, sum) = fields
        .split_once(" sha256=")
        .ok_or("its kgw-state-end line is malformed")?;
    let body = &text[..trailer_start];
    if checksum(body) != sum {
        return Err(
            "its checksum does not match: the file was changed outside kgw or damaged on disk".to_string(),
        );
    }
    let documents = body.matches("\n---\n").count();
    if count.parse::<usize>().ok() != Some(documents) {
        return Err(format!("it should hold {count} objects and holds {documents}"));
    }
    Ok(body)
}

fn checksum(text: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// Refuses to start on a damaged state file, keeping a copy of it. Starting without the file
/// would silently drop every applied object (and a supervisor restarting kgw would make that
/// final), so the user decides: restore it, or move it away.
fn damaged(path: &Path, why: &str) -> StoreError {
    let copy = keep_copy(path, "damaged");
    StoreError::Invalid(format!(
        "the saved state {} is damaged: {why}.\nkgw does not start with part of its state. A copy is kept at {copy}. \
         Restore the file from a backup, or move it away to start without the objects applied with `kgw apply` \
         (then apply them again)",
        path.display()
    ))
}

/// Copies the state file beside itself as `applied.yaml.<what>-<UTC time>`; returns where (or
/// why it could not).
fn keep_copy(path: &Path, what: &str) -> String {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let copy = PathBuf::from(format!("{}.{what}-{stamp}", path.display()));
    match fs::copy(path, &copy) {
        Ok(_) => copy.display().to_string(),
        Err(e) => format!("(none: cannot copy to {}: {e})", copy.display()),
    }
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
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let mut file = std::io::BufWriter::new(fs::File::create(&tmp).map_err(err)?);
    write_state(&mut file, objects.values().map(|o| &**o)).map_err(err)?;
    let file = file.into_inner().map_err(|e| err(e.into_error()))?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, dir.join(FILE)).map_err(err)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

/// Writes the file: header, one document per object, trailer. Object by object, never the
/// whole text in one buffer: a buffer of megabytes freed after each save leaves the allocator
/// holding memory the gateway never gets back.
fn write_state<'a>(out: &mut impl Write, objects: impl Iterator<Item = &'a Object>) -> std::io::Result<()> {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut emit = |text: &str| -> std::io::Result<()> {
        digest.update(text.as_bytes());
        out.write_all(text.as_bytes())
    };
    emit(HEADER)?;
    let mut count = 0;
    for object in objects {
        emit("---\n")?;
        emit(&api::yaml::to_string(&object.to_value()))?;
        count += 1;
    }
    let sum = hex(digest.finish().as_ref());
    out.write_all(format!("{TRAILER}{count} sha256={sum}\n").as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: on\nspec:\n  ports:\n  - port: 80\n\
                            ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: \"yes\"\n  namespace: sd\n";

    fn saved(dir: &Path) -> String {
        let objects = api::parse_manifests(SERVICES, "test").unwrap();
        let map = objects
            .into_iter()
            .map(|o| (o.key(), std::sync::Arc::new(o)))
            .collect();
        save(dir, &map).unwrap();
        fs::read_to_string(dir.join(FILE)).unwrap()
    }

    #[test]
    fn a_saved_file_loads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let text = saved(dir.path());
        assert!(
            text.starts_with(HEADER) && text.contains("objects=2 sha256="),
            "{text}"
        );
        assert!(
            text.contains("name: \"yes\"") && text.contains("namespace: \"on\""),
            "{text}"
        );
        let loaded = load(dir.path()).unwrap().objects;
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[1].key().name, "yes");
    }

    #[test]
    fn every_cut_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = saved(dir.path());
        for end in (1..text.len()).step_by(7) {
            fs::write(dir.path().join(FILE), &text[..end]).unwrap();
            let Err(e) = load(dir.path()) else {
                panic!("a file cut at {end} loaded:\n{}", &text[..end]);
            };
            assert!(e.to_string().contains("is damaged"), "{e}");
        }
    }

    #[test]
    fn files_of_the_previous_version_still_load() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), format!("---\n{SERVICES}")).unwrap();
        assert_eq!(load(dir.path()).unwrap().objects.len(), 2);
    }
}
