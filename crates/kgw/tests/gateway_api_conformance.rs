//! Gateway API conformance (v1.5.1, GATEWAY-HTTP profile): the runner in tests/gateway_api/
//! (Python: runner.py, its echo backend emulator echo.py, its client httpclient.py, certs.py)
//! runs every case of ../shared/conformance/gateway-api whose features kgw's GatewayClass claims
//! against the kgw binary built for this test, then its self-check: mutated copies of a real case
//! that it must fail, each for its reason. Either failing fails the test, with the table.
//!
//! Needs root: the Gateways listen on ports 80 and 443 of 127.0.10.x (the address pool).
//! The report goes to target/gateway-api-conformance/report.yaml (and .md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const KGW: &str = env!("CARGO_BIN_EXE_kgw");

fn runner() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway_api/runner.py")
}

/// target/gateway-api-conformance, beside the kgw binary's profile directory.
fn report_dir() -> PathBuf {
    Path::new(KGW)
        .parent()
        .and_then(Path::parent)
        .expect("kgw is built in target/<profile>/")
        .join("gateway-api-conformance")
}

/// Runs the runner with `args`: (passed, everything it printed).
fn run_runner(args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(runner())
        .arg("--kgw")
        .arg(KGW)
        .args(args)
        .output()
        .expect("python3 runs the conformance runner (scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The suite and then its self-check, one after the other: both use the same loopback addresses.
#[test]
fn gateway_api_conformance() {
    let dir = report_dir();
    let report = dir.join("report.yaml");
    let started = Instant::now();
    // kgw writes statuses and serves the new configuration before `kgw apply` returns, so
    // upstream's waits (60 s for a status, 180 s for a Gateway address, 30 s for a request to
    // pass 3 times in a row) would only make a failure slower to report.
    let (suite_ok, suite_out) = run_runner(&[
        "--report",
        report.to_str().unwrap(),
        "--timeout-scale",
        "0.1",
        "--max-time-to-consistency",
        "10",
    ]);
    let suite_time = started.elapsed();
    println!("{suite_out}");
    println!("conformance suite: {:.0} s", suite_time.as_secs_f64());

    let self_check = dir.join("self-check.yaml");
    let (check_ok, check_out) = run_runner(&[
        "--self-check",
        "--report",
        self_check.to_str().unwrap(),
        "--timeout-scale",
        "0.05",
        "--max-time-to-consistency",
        "3",
    ]);
    println!("{check_out}");
    println!(
        "self-check: {:.0} s; total {:.0} s",
        started.elapsed().as_secs_f64() - suite_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let table = std::fs::read_to_string(report.with_extension("md")).unwrap_or_default();
    assert!(
        check_ok,
        "the runner's self-check failed: a mutated case it must fail passed, or the unmutated one failed\n{check_out}"
    );
    assert!(
        suite_ok,
        "Gateway API conformance: a Core test or a test of a claimed feature failed \
         (report: {})\n{table}",
        report.display()
    );
}
