//! Applying cannot stall traffic: absurdly nested YAML is refused before any parser sees it,
//! and parsing runs on a control-plane thread, not on the workers that carry requests. Alone in
//! its test binary so that no other test's gateway competes for the CPU during the timing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// One request through the gateway on a fresh connection: its status and how long it took.
fn timed_request(port: u16) -> (u16, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /get HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let status = String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, t.elapsed())
}

#[test]
fn deeply_nested_yaml_is_refused_at_once_and_traffic_never_waits() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    assert_eq!(timed_request(gw.port).0, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let port = gw.port;
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut count = 0;
            while !stop.load(Ordering::Relaxed) {
                let (status, took) = timed_request(port);
                assert_eq!(status, 200, "a request failed during the applies");
                slowest = slowest.max(took);
                count += 1;
            }
            (count, slowest)
        })
    };

    // Two at once, as in the issue: each took 38 s of CPU on a traffic worker before.
    let nested = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let applies: Vec<_> = (0..2)
        .map(|_| {
            let nested = nested.clone();
            let admin = gw.admin;
            std::thread::spawn(move || {
                let t = Instant::now();
                let out = kgw_cli(admin, &["apply", "-f", "-"], &nested);
                (out, t.elapsed())
            })
        })
        .collect();
    for apply in applies {
        let (out, took) = apply.join().unwrap();
        assert!(!out.status.success(), "the nested document was accepted");
        let err = stderr(&out);
        assert!(
            err.contains("STDIN") && err.contains("deeper than 64 levels at line 1"),
            "names the source, the limit and the line: {err}"
        );
        assert!(took < Duration::from_secs(1), "refused after {took:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let (count, slowest) = traffic.join().unwrap();
    assert!(count > 0);
    assert!(
        slowest < Duration::from_millis(100),
        "slowest of {count} requests took {slowest:?}"
    );

    // Block nesting is counted too, and a valid manifest still applies.
    let mut deep_blocks =
        String::from("apiVersion: v1\nkind: Service\nmetadata:\n  name: deep\n  annotations:\n");
    for level in 0..80 {
        deep_blocks.push_str(&" ".repeat(4 + 2 * level));
        deep_blocks.push_str("k:\n");
    }
    let out = gw.kgw(&["apply", "-f", "-"], &deep_blocks);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nests deeper than 64 levels at line 68"),
        "{}",
        stderr(&out)
    );
    let out = gw.kgw(&["apply", "-f", "-"], GUIDE_POLICY);
    assert!(out.status.success(), "{}", stderr(&out));
}
