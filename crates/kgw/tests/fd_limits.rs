//! Running out of file descriptors: idle clients beyond the open files limit are refused (closed
//! at once) while kgw keeps descriptors for its own files, the admin API and upstream connects;
//! an error reading the watched files never removes what they held.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::prefixed::start;
use common::*;

fn idle_clients(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("idle client {i}: {e}")))
        .collect()
}

/// Whether the gateway closed this connection (end of stream or reset), waiting at most `limit`.
fn closed_by_gateway(mut s: &TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// `kgw get` of the manifest's kinds, less the AGE column.
fn objects(gw: &Gateway) -> String {
    ["gateways", "httproutes", "services"]
        .iter()
        .map(|kind| {
            let out = gw.kgw(&["get", kind, "-A"], "");
            assert!(out.status.success(), "kgw get {kind}: {}", stderr(&out));
            stdout(&out)
                .lines()
                .map(|l| l.rsplit_once(' ').map_or(l, |(rest, _age)| rest).to_string() + "\n")
                .collect::<String>()
        })
        .collect()
}

#[test]
fn idle_clients_beyond_the_open_files_limit_are_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    // 256 descriptors, soft and hard: kgw cannot raise it, and keeps 64 in reserve.
    let (gw, _backend) = start(dir.path(), &["prlimit", "--nofile=256:256"], &[]);
    let before = objects(&gw);
    assert!(before.contains("gw") && before.contains("backend"), "{before}");

    let clients = idle_clients(gw.port, 300);
    // 256 - 64 in reserve = 192 connections, client and upstream (the pooled one from the
    // request above); the others are closed at once.
    let refused = wait_for(
        "the clients beyond the limit to be refused",
        Duration::from_secs(10),
        || {
            gw.stat("http.http.downstream_global_cx_overflow")
                .filter(|n| *n >= 108)
        },
    );
    let active = gw.stat("http.http.downstream_cx_active").unwrap();
    assert_eq!(active + refused, 300, "{}", gw.proc.log_text());
    assert!(active >= 190, "{active} clients accepted");
    let closed = clients
        .iter()
        .rev()
        .take(108)
        .filter(|s| closed_by_gateway(s, Duration::from_secs(5)))
        .count();
    assert_eq!(
        closed, 108,
        "the refused clients see a close, not a hang in the backlog"
    );

    // The reserve: the admin API answers and the watched files are still read at the limit.
    let manifests = dir.path().join("manifests");
    let route = std::fs::read_to_string(manifests.join("gw.yaml")).unwrap();
    std::fs::write(
        manifests.join("gw.yaml"),
        route.replace(
            "- backendRefs:",
            "- matches:\n    - path: {type: PathPrefix, value: /}\n    backendRefs:",
        ),
    )
    .unwrap();
    wait_for(
        "the edited file to be loaded at the limit",
        Duration::from_secs(10),
        || {
            let log = gw.proc.log_text();
            (log.lines().filter(|l| l.contains(" loaded ")).count() >= 2).then_some(())
        },
    );
    assert_eq!(objects(&gw), before);

    drop(clients);
    wait_for("the idle clients to be gone", Duration::from_secs(10), || {
        (gw.stat("http.http.downstream_cx_active") == Some(0)).then_some(())
    });
    assert_eq!(gw.curl("fd.example.com", "/get").0, 200);
    let log = gw.proc.log_text();
    assert!(!log.contains("removed"), "{log}");
    assert!(log.contains("refusing new client connections"), "{log}");
}

/// An upstream connection is two descriptors (its stream and the handle kept to retune its
/// keepalive); pooled ones outlive their clients. kgw counted them only near the budget, as one
/// per client: after a burst, idle clients took it past its open files limit (accept failed with
/// EMFILE, and the admin API with it).
#[test]
fn pooled_upstream_connections_count_against_the_open_files_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _backend) = start(dir.path(), &["prlimit", "--nofile=256:256"], &[]);
    const BURST: usize = 60;
    // A burst of slow requests, each on its own upstream connection, pooled once answered.
    let burst: Vec<_> = (0..BURST)
        .map(|_| {
            let port = gw.port;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.write_all(b"GET /delay/1 HTTP/1.1\r\nHost: fd.example.com\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut response = String::new();
                let _ = s.read_to_string(&mut response);
                response.starts_with("HTTP/1.1 200")
            })
        })
        .collect();
    let answered = burst
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(answered, BURST);
    let cluster = "cluster.kube_fd_backend_80";
    wait_for(
        "the burst's connections to be pooled",
        Duration::from_secs(10),
        || (gw.stat(&format!("{cluster}.upstream_cx_pool_idle")) >= Some(BURST as u64 - 5)).then_some(()),
    );

    // 256 - 64 in reserve = 192 descriptors for client and upstream connections.
    let clients = idle_clients(gw.port, 300);
    let refused = wait_for(
        "the clients beyond the budget to be refused",
        Duration::from_secs(10),
        || {
            gw.stat("http.http.downstream_global_cx_overflow")
                .filter(|n| *n >= 108)
        },
    );
    let active = gw.stat("http.http.downstream_cx_active").unwrap();
    let upstream = gw.stat(&format!("{cluster}.upstream_cx_active")).unwrap();
    assert_eq!(active + refused, 300, "{}", gw.proc.log_text());
    assert!(
        active + 2 * upstream <= 192,
        "{active} clients, {upstream} upstream connections"
    );
    drop(clients);
    wait_for("the idle clients to be gone", Duration::from_secs(10), || {
        (gw.stat("http.http.downstream_cx_active") == Some(0)).then_some(())
    });
    assert_eq!(gw.curl("fd.example.com", "/get").0, 200);
    let log = gw.proc.log_text();
    assert!(!log.contains("accept failed"), "{log}");
}

#[test]
fn a_read_error_on_the_watched_directory_keeps_its_objects_and_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _backend) = start(dir.path(), &[], &[]);
    let before = objects(&gw);
    let clients = idle_clients(gw.port, 100);
    wait_for("the idle clients to be accepted", Duration::from_secs(10), || {
        (gw.stat("http.http.downstream_cx_active") == Some(100)).then_some(())
    });
    // Now descriptors run out under kgw: every open, listing the directory included, fails with
    // EMFILE.
    let out = Command::new("prlimit")
        .args(["--pid", &gw.pid().to_string(), "--nofile=64:64"])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {}", stderr(&out));
    let seen = wait_for(
        "kgw to poll the directory without descriptors",
        Duration::from_secs(10),
        || {
            let log = gw.proc.log_text();
            (log.contains("cannot read") || log.contains("removed")).then_some(log)
        },
    );
    assert!(!seen.contains("removed"), "{seen}");

    drop(clients);
    wait_for("a new client to be served", Duration::from_secs(10), || {
        (gw.curl("fd.example.com", "/get").0 == 200).then_some(())
    });
    assert_eq!(objects(&gw), before);
    let log = gw.proc.log_text();
    assert!(!log.contains("removed"), "{log}");
}
