//! HTTP/2 conformance of the gateway's listeners: the frame-level suite in
//! support/h2_conformance.py (h2spec's generic, http2 and hpack sections, one connection per
//! case, written in Python on PyPI's hpack because h2spec is not packaged here) runs against a
//! real kgw, on its plain listener (h2c with prior knowledge) and on its HTTPS listener (ALPN h2),
//! with the sample backend behind both. A failure fails the test unless it is listed, with its
//! reason, in support/h2_conformance_accepted.txt.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::pki::{Pki, secret_yaml};
use common::*;

const NS: &str = "conf";
const HOST: &str = "h2.example.com";

fn support(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

/// kgw with an HTTP listener and an HTTPS listener (certificate for HOST), one route for both
/// to the sample backend.
struct Setup {
    _gw: Gateway,
    _backend: Proc,
    http_port: u16,
    https_port: u16,
}

fn setup(dir: &Path) -> Setup {
    let pki = Pki::new(&dir.join("pki"));
    let cert = pki.leaf("h2", &[HOST]);
    let backend_port = free_port();
    let backend = sample_backend_on(backend_port, dir.join("backend.log"));
    let http_port = free_port();
    let https_port = free_port();
    let https_listener = format!(
        "  - name: http\n    protocol: HTTP\n    port: {http_port}\n  - name: https\n    protocol: HTTPS\n    port: {https_port}\n    \
         tls:\n      mode: Terminate\n      certificateRefs:\n      - kind: Secret\n        group: \"\"\n        name: h2-cert\n"
    );
    let gateway = route_all_to(NS, "echo", http_port, backend_port).replace(
        &format!("  - name: http\n    protocol: HTTP\n    port: {http_port}\n"),
        &https_listener,
    );
    let yaml = format!("{gateway}---\n{}", secret_yaml(NS, "h2-cert", &cert, None));
    let manifest = dir.join("gw.yaml");
    std::fs::write(&manifest, yaml).unwrap();
    let gw = GatewayBuilder::run(dir, http_port)
        .arg("-f")
        .arg(manifest.to_str().unwrap())
        .start();
    wait_for("the route on the HTTP listener", Duration::from_secs(15), || {
        (curl(http_port, HOST, "/get").0 == 200).then_some(())
    });
    wait_for("the HTTPS listener", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", https_port)).ok()
    });
    Setup {
        _gw: gw,
        _backend: backend,
        http_port,
        https_port,
    }
}

/// The suite's summary line.
struct Summary {
    total: u64,
    passed: u64,
    accepted: u64,
    failed: Vec<String>,
    stale: Vec<String>,
}

fn run_suite(port: u16, tls: bool) -> (Summary, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(support("h2_conformance.py"))
        .args([
            "--port",
            &port.to_string(),
            "--authority",
            HOST,
            "--path",
            "/anything",
        ])
        .args(["--timeout", "1", "--json", "--accepted"])
        .arg(support("h2_conformance_accepted.txt"));
    if tls {
        cmd.arg("--tls");
    }
    let out = cmd
        .output()
        .expect("python3 runs the conformance suite (pip install h2)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text.lines().last().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "the suite printed no summary ({e}); is python's h2 installed?\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let ids = |key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    (
        Summary {
            total: json["total"].as_u64().unwrap(),
            passed: json["passed"].as_u64().unwrap(),
            accepted: json["accepted"].as_u64().unwrap(),
            failed: ids("failed"),
            stale: ids("stale"),
        },
        text,
    )
}

fn assert_conformant(what: &str, port: u16, tls: bool) {
    let (summary, report) = run_suite(port, tls);
    println!("{what}:\n{report}");
    assert!(
        summary.failed.is_empty(),
        "{what}: cases failed that are not accepted: {:?}\n{report}",
        summary.failed
    );
    // The suite is h2spec-sized: a run that skipped most of it proves nothing.
    assert!(summary.total >= 140, "{what}: only {} cases ran", summary.total);
    assert_eq!(summary.passed + summary.accepted, summary.total);
    eprintln!(
        "{what}: {} cases, {} passed, {} accepted failures{}",
        summary.total,
        summary.passed,
        summary.accepted,
        if summary.stale.is_empty() {
            String::new()
        } else {
            format!(" (accepted but passing now: {:?})", summary.stale)
        }
    );
}

#[test]
fn h2c_prior_knowledge_listener_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    assert_conformant("h2c (prior knowledge)", s.http_port, false);
}

#[test]
fn https_listener_with_alpn_h2_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    assert_conformant("HTTPS (ALPN h2)", s.https_port, true);
}
