//! The access log, on by default, must stay off the request path: lines are written in batches
//! (not one system call per request), each within the flush interval, and none is lost when kgw
//! exits on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::prefixed::start;
use common::*;

/// `count` requests, one after the other on one keep-alive connection (curl's URL range).
fn requests(port: u16, count: usize) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\\n",
        ])
        .args(["-H", "host: fd.example.com"])
        .arg(format!("http://127.0.0.1:{port}/get?n=[1-{count}]"))
        .output()
        .expect("curl is installed");
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().filter(|c| *c == "200").count(), count, "{codes}");
}

/// The lines of this test's requests (`/get?n=...`) in the log at `path`.
fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/get?n="))
        .count()
}

/// Kills the process traced by strace `tracer` when dropped.
struct TraceeGuard(String);

impl TraceeGuard {
    fn of(tracer: u32) -> TraceeGuard {
        let children = format!("/proc/{tracer}/task/{tracer}/children");
        let pid = wait_for("strace to start kgw", Duration::from_secs(5), || {
            std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next().map(str::to_string))
        });
        TraceeGuard(pid)
    }
}

impl Drop for TraceeGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.0]).status();
    }
}

#[test]
fn the_default_access_log_writes_in_batches_not_once_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let trace_arg = trace.to_str().unwrap();
    // The default access log (stdout), every write(2) to it traced.
    let (gw, _backend) = start(
        dir.path(),
        &[
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=write,writev",
            "-e",
            "signal=none",
            "-o",
            trace_arg,
        ],
        &[],
    );
    // strace killed leaves its tracee running: kgw is killed on its own.
    let _kgw = TraceeGuard::of(gw.pid());
    let stdout = dir.path().join("kgw.stdout");
    requests(gw.port, 300);
    wait_for("300 more access log lines", Duration::from_secs(5), || {
        (lines_in(&stdout) == 300).then_some(())
    });
    let writes = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" write(1,") || l.contains(" writev(1,"))
        .count();
    // One write a second or per 64 KiB: the 300 requests took a few seconds at most.
    assert!(writes <= 10, "{writes} writes to stdout for 300 requests");
}

#[test]
fn no_access_log_line_is_lost_on_exit_and_each_is_written_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (gw, _backend) = start(dir.path(), &[], &["--access-log", log.to_str().unwrap()]);
    // Written within the flush interval while kgw runs: what a crash can lose.
    requests(gw.port, 1);
    wait_for("the line within 2 s", Duration::from_secs(2), || {
        (lines_in(&log) == 1).then_some(())
    });
    requests(gw.port, 500);
    let pid = gw.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut gw = gw;
    let status = wait_for("kgw to exit", Duration::from_secs(10), || {
        gw.proc.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status}: {}", gw.proc.log_text());
    assert_eq!(lines_in(&log), 501);
}
