//! A `kgw run -f DIR` gateway with a sample backend, started through a command prefix
//! (`prlimit`, `strace`), for the tests that need one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// `kgw sample-backend` on a free port.
pub fn backend(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    (sample_backend_on(port, dir.join("backend.log")), port)
}

/// `kgw run -f DIR` with the manifest, started through `prefix` (e.g. `prlimit --nofile=N:N`).
/// Its stderr is `gw.proc.log`, its stdout (the access log by default) `DIR/kgw.stdout`.
pub fn start(dir: &Path, prefix: &[&str], extra: &[&str]) -> (Gateway, Proc) {
    let (backend, backend_port) = backend(dir);
    let port = free_port();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("gw.yaml"),
        route_all_to("fd", "backend", port, backend_port),
    )
    .unwrap();
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = dir.join("kgw.log");
    let out = std::fs::File::create(&log).unwrap();
    let (program, args) = match prefix {
        [] => (KGW, Vec::new()),
        [first, rest @ ..] => (*first, [rest, &[KGW]].concat()),
    };
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .args(["run", "--admin-address", &admin.to_string(), "--state-dir"])
        .arg(dir.join("state"))
        .arg("-f")
        .arg(&manifests)
        .args(extra)
        .stdout(std::fs::File::create(dir.join("kgw.stdout")).unwrap())
        .stderr(out)
        .env("KGW_LOG", "info,store=debug")
        .stdin(Stdio::null())
        .spawn()
        .expect("start kgw");
    let mut proc = Proc { child, log };
    let ready_after = wait_for("kgw /ready", Duration::from_secs(20), || {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("kgw exited early ({status}):\n{}", proc.log_text());
        }
        (http(admin, "GET", "/ready", "").0 == 200).then(|| started.elapsed())
    });
    let gw = Gateway {
        proc,
        admin,
        port,
        state_dir: dir.join("state"),
        started,
        ready_after,
        backend_port,
    };
    wait_for("the route to serve", Duration::from_secs(10), || {
        (gw.curl("fd.example.com", "/get").0 == 200).then_some(())
    });
    (gw, backend)
}
