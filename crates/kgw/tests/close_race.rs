//! The close race: a backend (nginx, `keepalive_timeout 1s`) closes idle keep-alive connections
//! just as the gateway reuses them. Clients sending about one request a second hit that window
//! again and again; none of them may see an error.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// nginx on 127.0.0.1:`port`, answering 200 with a small body, closing idle connections after 1 s.
fn nginx(dir: &std::path::Path, port: u16) -> Proc {
    common::nginx::start(
        dir,
        "nginx",
        port,
        "keepalive_timeout 1s;",
        &format!("server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}"),
    )
}

/// One GET on a new connection; Some(status) or None for a transport error.
fn get(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: race.example.com\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn no_request_fails_when_the_backend_closes_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let backend = free_port();
    let _nginx = nginx(dir.path(), backend);
    let port = free_port();
    let mut builder = GatewayBuilder::run(dir.path(), port)
        .arg("--access-log")
        .arg("off");
    // For measurements only (the note compares): KGW_RACE_NO_RETRY=1 turns the retry off.
    let no_retry = std::env::var_os("KGW_RACE_NO_RETRY").is_some();
    if no_retry {
        builder = builder.arg("--no-retry");
    }
    let gw = builder.start();
    let out = gw.kgw(
        &["apply", "-f", "-"],
        &route_all_to("race", "nginx", port, backend),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    const CLIENTS: usize = 20;
    const REQUESTS: usize = 30;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                // All clients at once (so the gateway pools 20 upstream connections), then about
                // one request a second each: every pooled connection is reused right around
                // nginx's 1 s idle timeout, now a little before it, now a little after.
                let mut jitter = 0x9e37_79b9_u64.wrapping_mul(c as u64 + 1);
                let mut errors = Vec::new();
                for _ in 0..REQUESTS {
                    match get(port) {
                        Some(200) => {}
                        other => errors.push(other),
                    }
                    jitter = jitter
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let offset = (jitter >> 33) % 60;
                    std::thread::sleep(Duration::from_millis(970 + offset));
                }
                errors
            })
        })
        .collect();
    let errors: Vec<Option<u16>> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let stat = |n: &str| gw.stat(&format!("cluster.kube_race_nginx_80.{n}")).unwrap_or(0);
    eprintln!(
        "close race: {} requests, {} errors; upstream_cx_total {}, upstream_cx_destroy_remote {}, upstream_rq_retry {}",
        CLIENTS * REQUESTS,
        errors.len(),
        stat("upstream_cx_total"),
        stat("upstream_cx_destroy_remote"),
        stat("upstream_rq_retry")
    );
    if no_retry {
        return;
    }
    assert!(errors.is_empty(), "{} requests failed: {errors:?}", errors.len());
    assert!(
        stat("upstream_cx_destroy_remote") > 0,
        "nginx did close idle connections during the run"
    );
}
