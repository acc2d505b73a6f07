//! The kgateway "Circuit breakers" guide with kgw: a BackendConfigPolicy's `circuitBreakers`
//! limit connections, pending requests and requests to a backend (kgw's sample backend, whose
//! `/delay/N` holds a request open); what is over is answered 503 `UO` with
//! `x-envoy-overloaded: true`, counted with Envoy's names.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const NS: &str = "httpbin";
const CLUSTER: &str = "kube_httpbin_httpbin_80";

/// The guide's policy, verbatim.
const GUIDE_POLICY: &str = r#"apiVersion: gateway.kgateway.dev/v1alpha1
kind: BackendConfigPolicy
metadata:
  name: httpbin-circuit-breakers
  namespace: httpbin
spec:
  targetRefs:
  - group: ""
    kind: Service
    name: httpbin
  circuitBreakers:
    maxConnections: 1000
    maxPendingRequests: 500
    maxRequests: 2000
    maxRetries: 10
"#;

fn policy(limits: &str) -> String {
    format!(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: httpbin-circuit-breakers\n  \
         namespace: httpbin\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: httpbin\n  circuitBreakers:\n{limits}"
    )
}

fn setup(dir: &std::path::Path) -> (Proc, Gateway) {
    let backend = free_port();
    let sample = sample_backend_on(backend, dir.join("backend.log"));
    let port = free_port();
    let gw = GatewayBuilder::run(dir, port).start();
    let out = gw.kgw(&["apply", "-f", "-"], &route_all_to(NS, "httpbin", port, backend));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the route", Duration::from_secs(10), || {
        (gw.curl("x", "/get").0 == 200).then_some(())
    });
    (sample, gw)
}

fn apply_limits(gw: &Gateway, yaml: &str, max_connections: u64) {
    let out = gw.kgw(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the thresholds in the dump", Duration::from_secs(10), || {
        gw.cluster(CLUSTER)
            .filter(|c| c["circuit_breakers"]["thresholds"][0]["max_connections"] == max_connections)
            .map(|_| ())
    });
}

fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.stat(&format!("cluster.{CLUSTER}.{name}")).unwrap_or(0)
}

/// One request with curl on its own connection: status, response head, body.
fn get(port: u16, path: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-", "-H", "host: x"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// `n` requests at once; their answers.
fn concurrent(port: u16, n: usize, path: &str) -> Vec<(u16, String, String)> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || get(port, &path))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn the_guides_policy_is_dumped_and_its_gauges_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (_sample, gw) = setup(dir.path());
    // Without a policy the breaker exists with Envoy's defaults: the gauges are there, closed.
    for g in [
        "cx_open",
        "cx_pool_open",
        "rq_open",
        "rq_pending_open",
        "rq_retry_open",
    ] {
        assert_eq!(
            gw.stat(&format!("cluster.{CLUSTER}.circuit_breakers.default.{g}")),
            Some(0),
            "{g}"
        );
    }
    assert_eq!(
        stat(&gw, "circuit_breakers.default.remaining_rq"),
        0,
        "only with trackRemaining"
    );
    apply_limits(&gw, GUIDE_POLICY, 1000);
    let c = gw.cluster(CLUSTER).unwrap();
    let t = &c["circuit_breakers"]["thresholds"][0];
    assert_eq!(
        (
            t["max_pending_requests"].clone(),
            t["max_requests"].clone(),
            t["max_retries"].clone()
        ),
        (500.into(), 2000.into(), 10.into())
    );
    assert_eq!(gw.curl("x", "/get").0, 200);
    let (_, prometheus) = http(gw.admin, "GET", "/stats/prometheus", "");
    assert!(
        prometheus.contains(&format!(
            "envoy_cluster_circuit_breakers_default_cx_open{{envoy_cluster_name=\"{CLUSTER}\"}} 0"
        )),
        "{prometheus}"
    );
}

#[test]
fn one_connection_one_pending_and_ten_slow_requests_give_503_uo() {
    let dir = tempfile::tempdir().unwrap();
    let (_sample, gw) = setup(dir.path());
    apply_limits(
        &gw,
        &policy("    maxConnections: 1\n    maxPendingRequests: 1\n    trackRemaining: true\n"),
        1,
    );
    assert_eq!(
        stat(&gw, "circuit_breakers.default.remaining_cx"),
        0,
        "the route check's pooled connection"
    );
    assert_eq!(stat(&gw, "circuit_breakers.default.remaining_pending"), 1);

    let answers = concurrent(gw.port, 10, "/delay/0.5");
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let overflow: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    let pending_overflow = stat(&gw, "upstream_rq_pending_overflow");
    let cx_overflow = stat(&gw, "upstream_cx_overflow");
    eprintln!(
        "10 x /delay/0.5, maxConnections 1, maxPendingRequests 1: {ok} x 200, {} x 503; \
         upstream_rq_pending_overflow {pending_overflow}, upstream_cx_overflow {cx_overflow}",
        overflow.len()
    );
    // One on the connection, one waiting for it: the other 8 overflow, as Envoy 1.40 with one
    // worker (measured: 2 x 200, 8 x 503, cx_overflow 1, pending_overflow 8; with its default
    // two workers 3 x 200, each worker's pool opening its own first connection).
    assert_eq!(ok, 2, "{answers:?}");
    assert_eq!(overflow.len(), 8, "{answers:?}");
    for (_, head, body) in &overflow {
        assert!(head.contains("\r\nx-envoy-overloaded: true"), "{head}");
        assert_eq!(
            body,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        );
    }
    assert_eq!(pending_overflow, 8);
    assert_eq!(cx_overflow, 1);
    assert_eq!(stat(&gw, "upstream_cx_total"), 1, "never a second connection");
    let log = gw.proc.log_text();
    let uo_lines = log
        .lines()
        .filter(|l| l.contains("\"GET /delay/0.5 HTTP/1.1\" 503 UO"))
        .count();
    assert_eq!(uo_lines, 8, "{log}");
    // Done: the breaker is closed again.
    assert_eq!(stat(&gw, "circuit_breakers.default.rq_pending_open"), 0);
    assert_eq!(stat(&gw, "circuit_breakers.default.remaining_pending"), 1);
    assert_eq!(stat(&gw, "upstream_rq_pending_active"), 0);
}

#[test]
fn max_requests_over_limit_is_503_uo_counted_as_active_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let (_sample, gw) = setup(dir.path());
    apply_limits(&gw, &policy("    maxConnections: 10\n    maxRequests: 2\n"), 10);
    let answers = concurrent(gw.port, 4, "/delay/0.5");
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let refused = answers
        .iter()
        .filter(|a| a.0 == 503 && a.1.contains("x-envoy-overloaded: true"))
        .count();
    eprintln!("4 x /delay/0.5 with maxRequests 2: {ok} x 200, {refused} x 503 UO");
    assert_eq!((ok, refused), (2, 2), "{answers:?}");
    // As Envoy 1.40 counts it (measured: 4 x /delay/0.5 with max_requests 2 gave 2 x 200,
    // 2 x 503 with x-envoy-overloaded, upstream_rq_active_overflow 2, pending_overflow 0).
    assert_eq!(stat(&gw, "upstream_rq_active_overflow"), 2);
    assert_eq!(stat(&gw, "upstream_rq_pending_overflow"), 0);
    assert_eq!(stat(&gw, "upstream_rq_active"), 0);
}

/// A request waiting for a connection is pending, not active: it does not count against
/// maxRequests (Envoy 1.40, measured: max_connections 1, max_pending_requests 10,
/// max_requests 2, 4 x /delay/0.5 gave 4 x 200, upstream_rq_active_overflow 0,
/// upstream_rq_pending_total 4).
#[test]
fn requests_waiting_for_a_connection_do_not_count_against_max_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (_sample, gw) = setup(dir.path());
    apply_limits(
        &gw,
        &policy("    maxConnections: 1\n    maxPendingRequests: 10\n    maxRequests: 2\n"),
        1,
    );
    let answers = concurrent(gw.port, 4, "/delay/0.5");
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    assert_eq!(ok, 4, "{answers:?}");
    assert_eq!(stat(&gw, "upstream_rq_active_overflow"), 0);
    assert_eq!(stat(&gw, "upstream_rq_pending_overflow"), 0);
}

/// A backend that answers the first request of each connection and closes the connection
/// without answering the second (a keep-alive connection closed under the gateway as it reuses
/// it: the close race, made certain).
fn closing_backend() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                for request in 0.. {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    if request > 0 {
                        return;
                    }
                    let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
                }
            });
        }
    });
    port
}

/// A request on the pooled connection (which served one request) after 150 ms: the backend
/// closes it; kgw's replay on a new connection is a retry to the breaker.
fn reuse_after_idle(gw: &Gateway) -> u16 {
    // The replay is for a connection that idled long enough to be in the close race.
    std::thread::sleep(Duration::from_millis(150));
    gw.curl("x", "/again").0
}

#[test]
fn max_retries_bounds_the_replay_on_a_reused_connection() {
    let dir = tempfile::tempdir().unwrap();
    let backend = closing_backend();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    let out = gw.kgw(&["apply", "-f", "-"], &route_all_to(NS, "httpbin", port, backend));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the route", Duration::from_secs(10), || {
        (gw.curl("x", "/").0 == 200).then_some(())
    });
    // Envoy's default (3 retries): the request goes again on a new connection.
    assert_eq!(reuse_after_idle(&gw), 200);
    assert_eq!(stat(&gw, "upstream_rq_retry"), 1);
    assert_eq!(stat(&gw, "upstream_rq_retry_overflow"), 0);

    apply_limits(&gw, &policy("    maxConnections: 10\n    maxRetries: 0\n"), 10);
    let status = reuse_after_idle(&gw);
    eprintln!("maxRetries 0: the request on the closed connection got {status}");
    assert_eq!(status, 503, "no replay allowed");
    assert_eq!(stat(&gw, "upstream_rq_retry"), 1, "no second replay");
    assert_eq!(stat(&gw, "upstream_rq_retry_overflow"), 1);
}

/// A client that leaves while its request waits for a connection gives its pending place back
/// at once (Envoy cancels a pending request when its client resets): the next request waits
/// and is served, instead of being refused until the route timeout frees the place.
#[test]
fn a_client_that_leaves_while_pending_frees_its_place() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (_sample, gw) = setup(dir.path());
    apply_limits(
        &gw,
        &policy("    maxConnections: 1\n    maxPendingRequests: 1\n"),
        1,
    );
    // The one connection, busy for 5 s.
    let port = gw.port;
    let busy = std::thread::spawn(move || get(port, "/delay/5"));
    wait_for("the slow request in flight", Duration::from_secs(10), || {
        (stat(&gw, "upstream_rq_active") == 1).then_some(())
    });
    // A client queues a request, then leaves.
    let mut leaver = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    leaver.write_all(b"GET /get HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    wait_for("the request pending", Duration::from_secs(10), || {
        (stat(&gw, "upstream_rq_pending_active") == 1).then_some(())
    });
    drop(leaver);
    // At once, not when the busy connection comes back (in about 5 s).
    wait_for("its place given back", Duration::from_secs(2), || {
        (stat(&gw, "upstream_rq_pending_active") == 0).then_some(())
    });
    // The next one waits for the connection and is served.
    let (status, _, _) = get(gw.port, "/get");
    assert_eq!(status, 200);
    assert_eq!(busy.join().unwrap().0, 200);
    assert_eq!(stat(&gw, "upstream_rq_pending_overflow"), 0);
}
