//! The state file (`--state-dir`/applied.yaml) is verified whole: a damaged one is refused with
//! a message naming it and a copy kept, never half-loaded; one object kgw refuses is reported
//! and the others serve; names YAML 1.1 reads as other types are written quoted.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: c1\n  namespace: sd\nspec:\n  ports:\n  - name: http\n    port: 80\n\
---\napiVersion: v1\nkind: Service\nmetadata:\n  name: c2\n  namespace: sd\nspec:\n  ports:\n  - name: http\n    port: 81\n\
---\napiVersion: v1\nkind: Service\nmetadata:\n  name: c3\n  namespace: sd\nspec:\n  ports:\n  - name: http\n    port: 82\n";

/// `kgw run` on `dir`'s state, expected to refuse to start: its exit status and output.
fn run_expecting_exit(dir: &Path) -> (bool, String) {
    let log = dir.join(format!("exit-{}.log", free_port()));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(KGW)
        .args(["run", "--admin-address"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start kgw");
    let mut proc = Proc { child, log };
    let status = wait_for(
        "kgw to refuse the state and exit",
        Duration::from_secs(10),
        || proc.child.try_wait().unwrap(),
    );
    (status.success(), proc.log_text())
}

/// Applies SERVICES through a gateway that is then stopped; returns the state file's path.
fn state_with_three_services(dir: &Path) -> std::path::PathBuf {
    let gw = GatewayBuilder::run(dir, free_port()).start();
    let out = gw.kgw(&["apply", "-f", "-"], SERVICES);
    assert!(out.status.success(), "{}", stderr(&out));
    gw.state_dir.join("applied.yaml")
}

fn copies(dir: &Path, what: &str) -> Vec<String> {
    std::fs::read_dir(dir.join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&format!("applied.yaml.{what}-")))
        .collect()
}

#[test]
fn a_truncated_state_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_three_services(dir.path());
    let text = std::fs::read_to_string(&state).unwrap();
    // Cut inside the last object's namespace, as in the issue (`sd/c3` became `s/c3`).
    let cut = &text[..text.rfind("namespace: sd").unwrap() + "namespace: s".len()];
    std::fs::write(&state, cut).unwrap();

    let (ok, log) = run_expecting_exit(dir.path());
    assert!(!ok, "kgw started on a cut state file:\n{log}");
    assert!(
        log.contains(&format!("the saved state {} is damaged", state.display()))
            && log.contains("ends early"),
        "names the file and what is wrong:\n{log}"
    );
    assert!(log.contains("move it away"), "says the fix:\n{log}");
    let kept = copies(dir.path(), "damaged");
    assert_eq!(kept.len(), 1, "one copy is kept: {kept:?}");
    assert!(log.contains(&kept[0]), "names the copy:\n{log}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        cut,
        "the file itself is left alone"
    );
}

#[test]
fn a_garbage_state_file_is_refused_as_damaged() {
    for garbage in [
        &[0xff_u8, 0xfe, 0x00, 0x12, 0x80][..],
        b"\x1b[31mnot yaml: [\n",
        b"just some words\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/applied.yaml"), garbage).unwrap();
        let (ok, log) = run_expecting_exit(dir.path());
        assert!(!ok, "kgw started on garbage:\n{log}");
        assert!(log.contains("applied.yaml is damaged"), "{log}");
        assert!(!log.contains("cannot save"), "{log}");
        assert_eq!(copies(dir.path(), "damaged").len(), 1);
    }
}

#[test]
fn one_bad_object_is_reported_and_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    // As an earlier kgw wrote it (no checksum), with an object this kgw refuses in the middle.
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let bad = SERVICES.replace("name: c2", "name: 2nd");
    std::fs::write(dir.path().join("state/applied.yaml"), format!("---\n{bad}")).unwrap();
    let gw = GatewayBuilder::run(dir.path(), free_port()).start();
    let out = gw.kgw(&["get", "services", "-n", "sd"], "");
    let listed = stdout(&out);
    assert!(
        listed.contains("c1") && listed.contains("c3") && !listed.contains("2nd"),
        "{listed}"
    );
    let log = gw.proc.log_text();
    assert!(
        log.contains("holds 1 object(s) kgw refuses")
            && log.contains("Service \"sd/2nd\" is invalid: metadata.name")
            && log.contains("kgw apply -f"),
        "reports the object, the field and the fix:\n{log}"
    );
    let kept = copies(dir.path(), "refused");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        std::fs::read_to_string(dir.path().join("state").join(&kept[0]))
            .unwrap()
            .contains("name: 2nd"),
        "the copy holds the refused object"
    );
}

#[test]
fn names_yaml_1_1_reads_as_other_types_are_written_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let tricky = "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"on\"\n  namespace: \"yes\"\n  labels:\n    \
                  flag: \"off\"\n    empty: \"null\"\n    count: \"1_000\"\nspec:\n  ports:\n  - name: \"n\"\n    port: 80\n";
    let yaml_1_1 = |text: &str| -> serde_json::Value {
        let out = Command::new("python3")
            .args(["-c", "import sys, json, yaml\nfor d in yaml.safe_load_all(sys.stdin):\n  print(json.dumps(d, default=str))"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(text.as_bytes())?;
                c.wait_with_output()
            })
            .expect("python3 with PyYAML (a YAML 1.1 reader)");
        let last = String::from_utf8_lossy(&out.stdout)
            .lines()
            .rfind(|l| l != &"null")
            .unwrap_or("")
            .to_string();
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"))
    };
    let check = |v: &serde_json::Value, what: &str| {
        assert_eq!(v["metadata"]["name"], "on", "{what}: {v}");
        assert_eq!(v["metadata"]["namespace"], "yes", "{what}: {v}");
        assert_eq!(v["metadata"]["labels"]["flag"], "off", "{what}: {v}");
        assert_eq!(v["metadata"]["labels"]["empty"], "null", "{what}: {v}");
        assert_eq!(v["metadata"]["labels"]["count"], "1_000", "{what}: {v}");
        assert_eq!(v["spec"]["ports"][0]["name"], "n", "{what}: {v}");
    };
    {
        let gw = GatewayBuilder::run(dir.path(), free_port()).start();
        let out = gw.kgw(&["apply", "-f", "-"], tricky);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = gw.kgw(&["get", "service", "on", "-n", "yes", "-o", "yaml"], "");
        check(&yaml_1_1(&stdout(&out)), "kgw get -o yaml");
        let state = std::fs::read_to_string(gw.state_dir.join("applied.yaml")).unwrap();
        check(&yaml_1_1(&state), "the state file");
    }
    // And the state reads back the same after a restart.
    let gw = GatewayBuilder::run(dir.path(), free_port()).start();
    let out = gw.kgw(&["get", "service", "on", "-n", "yes", "-o", "json"], "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    check(&v, "after a restart");
}

#[test]
fn annotations_with_characters_yaml_cannot_hold_raw_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // DEL and a C1 control (libyaml refuses both raw), NEL, LS and PS (line breaks a reader
    // folds), a BOM and U+FFFF, each escaped in the applied YAML.
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: odd\n  namespace: sd\n  annotations:\n    \
                   note: \"a\\x7fb\\x9bc\\x85d\\u2028e\\u2029f\\ufeffg\\uffffh\"\nspec:\n  ports:\n  - name: http\n    port: 80\n";
    let expected = "a\u{7f}b\u{9b}c\u{85}d\u{2028}e\u{2029}f\u{feff}g\u{ffff}h";
    let note = |gw: &Gateway| -> serde_json::Value {
        let out = gw.kgw(&["get", "service", "odd", "-n", "sd", "-o", "json"], "");
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["metadata"]["annotations"]["note"].clone()
    };
    {
        let gw = GatewayBuilder::run(dir.path(), free_port()).start();
        let out = gw.kgw(&["apply", "-f", "-"], service);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(note(&gw), expected);
    }
    let gw = GatewayBuilder::run(dir.path(), free_port()).start();
    assert_eq!(note(&gw), expected, "after a restart");
    assert!(
        copies(dir.path(), "damaged").is_empty(),
        "the state file was judged damaged"
    );
}
