//! HTTP/2 abuse against the real kgw (issue 16, acceptance f): a rapid-reset flood, a
//! CONTINUATION flood and an oversized header list, each on one client connection made frame by
//! frame (support/h2_abuse.py). The connection is ended by the gateway; a second HTTP/2 client
//! (curl with prior knowledge) is served during and after; the gateway's memory stays bounded
//! (its peak resident set, VmHWM, read from /proc before and after).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

const NS: &str = "abuse";
const HOST: &str = "abuse.example.com";
/// How much the gateway's peak resident set may grow above its resident set before the attack.
/// The limits make each attack cost a bounded amount (header lists, CONTINUATION frames,
/// pending resets); without them a CONTINUATION flood alone grows without end.
const MEMORY_BOUND_KB: u64 = 16 * 1024;

fn support(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

/// A field of /proc/<pid>/status, in kB.
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// One HTTP/2 request with prior knowledge (a client of its own); its status, 0 on failure.
fn h2_get(port: u16) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--http2-prior-knowledge",
        ])
        .args(["--max-time", "5", "-H", &format!("host: {HOST}")])
        .arg(format!("http://127.0.0.1:{port}/get"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Runs one attack while a second client keeps asking; returns the attack's report and the
/// second client's statuses.
fn attack_with_bystander(port: u16, mode: &str, extra: &[&str]) -> (serde_json::Value, Vec<u16>) {
    let stop = Arc::new(AtomicBool::new(false));
    let bystander = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push(h2_get(port));
            }
            statuses
        })
    };
    let out = Command::new("python3")
        .arg(support("h2_abuse.py"))
        .args([
            mode,
            "--port",
            &port.to_string(),
            "--authority",
            HOST,
            "--path",
            "/get",
        ])
        .args(extra)
        .output()
        .expect("python3 runs the abuse client (pip install h2)");
    stop.store(true, Ordering::Relaxed);
    let statuses = bystander.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "{mode}: no report ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, statuses)
}

/// kgw on a plain listener (h2c by prior knowledge) in front of the sample backend; runs
/// `mode` and checks what every abuse test checks. Returns the attack's report and the gateway.
fn abuse(mode: &str, extra: &[&str], codes: &[&str]) -> (serde_json::Value, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let backend_port = free_port();
    let _backend = sample_backend_on(backend_port, dir.path().join("backend.log"));
    let port = free_port();
    let manifest = dir.path().join("gw.yaml");
    std::fs::write(&manifest, route_all_to(NS, "echo", port, backend_port)).unwrap();
    let gw = GatewayBuilder::run(dir.path(), port)
        .arg("-f")
        .arg(manifest.to_str().unwrap())
        .start();
    wait_for(
        "an HTTP/2 request through the gateway",
        Duration::from_secs(15),
        || (h2_get(port) == 200).then_some(()),
    );
    let pid = gw.pid();
    let rss_before = proc_status_kb(pid, "VmRSS");
    let started = Instant::now();

    let (report, during) = attack_with_bystander(port, mode, extra);
    let took = started.elapsed();

    let after = h2_get(port);
    let peak = proc_status_kb(pid, "VmHWM");
    let rss_after = proc_status_kb(pid, "VmRSS");
    eprintln!(
        "{mode}: {report} in {took:?}; second client: {} requests during, all 200: {}; kgw VmRSS \
         before {rss_before} kB, peak (VmHWM) {peak} kB, after {rss_after} kB",
        during.len(),
        during.iter().all(|s| *s == 200)
    );

    // The abusive connection was ended by the gateway, with one of the codes that name it.
    let ended_by = report["ended_by"].as_str().unwrap();
    match ended_by {
        "GOAWAY" => {
            let code = report["code"].as_str().unwrap();
            assert!(
                codes.contains(&code),
                "{mode}: GOAWAY {code}, expected one of {codes:?}: {report}"
            );
        }
        "closed" => {}
        _ => panic!("{mode}: the gateway did not end the connection: {report}"),
    }
    // Other clients are served during the attack and after it.
    assert!(
        !during.is_empty(),
        "{mode}: the second client made no request during the attack"
    );
    assert!(
        during.iter().all(|s| *s == 200),
        "{mode}: the second client was refused during the attack: {during:?}"
    );
    assert_eq!(after, 200, "{mode}: the second client after the attack");
    assert!(
        peak.saturating_sub(rss_before) < MEMORY_BOUND_KB,
        "{mode}: kgw's peak resident set {peak} kB grew more than {MEMORY_BOUND_KB} kB above {rss_before} kB"
    );
    (report, gw)
}

#[test]
fn rapid_reset_flood_ends_the_connection_and_others_are_served() {
    // Streams opened and cancelled at once, 100 per write: faster than the gateway accepts them.
    abuse("rapid-reset", &["--count", "20000"], &["ENHANCE_YOUR_CALM"]);
}

#[test]
fn paced_rapid_reset_ends_the_connection_and_others_are_served() {
    // One stream opened and cancelled per write, 1 ms apart: the gateway accepts each stream
    // before its reset arrives, so only counting resets of accepted streams stops this flood
    // (Envoy: more than half of at least 500 streams reset within 1 s of opening).
    let (report, gw) = abuse(
        "rapid-reset",
        &["--count", "3000", "--batch", "1", "--pause", "0.001"],
        &["ENHANCE_YOUR_CALM"],
    );
    assert!(
        report["sent"].as_u64().unwrap() < 3000,
        "the flood ran to its end before the connection ended: {report}"
    );
    assert_eq!(
        gw.stat("http.http.downstream_rq_too_many_premature_resets"),
        Some(1)
    );
}

#[test]
fn continuation_flood_ends_the_connection_and_others_are_served() {
    // Up to 200000 CONTINUATION frames after one HEADERS, END_HEADERS never sent.
    abuse(
        "continuation-flood",
        &["--count", "200000"],
        &["ENHANCE_YOUR_CALM"],
    );
}

#[test]
fn oversized_header_list_ends_the_connection_and_others_are_served() {
    // 16 MiB of header fields in one request (HEADERS then CONTINUATION frames, 16 KiB each).
    abuse(
        "oversized-headers",
        &[],
        &["ENHANCE_YOUR_CALM", "COMPRESSION_ERROR"],
    );
}
