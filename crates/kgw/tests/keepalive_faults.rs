//! Keepalive against a real network fault: the backend lives in its own network namespace and
//! vanishes silently (a blackhole route drops its replies). These tests need root (CI runs as
//! root) and iproute2; each removes what it made, pass or fail.

mod common;

use std::time::{Duration, Instant};

use common::netns::BackendHost;
use common::*;

const CLUSTER: &str = "kube_faults_fault_8080";

fn manifest(port: u16, host: &BackendHost) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: faults
spec:
  gatewayClassName: kgateway
  listeners:
  - name: http
    protocol: HTTP
    port: {port}
---
apiVersion: v1
kind: Service
metadata:
  name: fault
  namespace: faults
spec:
  ports:
  - name: http
    port: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: fault-1
  namespace: faults
  labels:
    kubernetes.io/service-name: fault
addressType: IPv4
endpoints:
- addresses: ["{ip}"]
ports:
- name: http
  port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: fault
  namespace: faults
spec:
  parentRefs:
  - name: gw
  rules:
  - backendRefs:
    - name: fault
      port: 8080
"#,
        ip = host.backend_ip
    )
}

fn policy(keepalive: &str) -> String {
    format!(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: fault-keepalive\n  \
         namespace: faults\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: fault\n  tcpKeepalive:\n{keepalive}"
    )
}

/// A gateway in front of a backend in its own namespace, with `policy` applied (if any).
fn setup(dir: &std::path::Path, policy_yaml: Option<&str>, extra: &[&str]) -> (BackendHost, Gateway) {
    let mut host = BackendHost::new();
    host.spawn(
        KGW,
        &["sample-backend", "--listen", &format!("{}:8080", host.backend_ip)],
    );
    let addr = std::net::SocketAddr::from((host.backend_ip, 8080));
    wait_for("the backend in its namespace", Duration::from_secs(10), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    });
    let port = free_port();
    let mut builder = GatewayBuilder::run(dir, port);
    for a in extra {
        builder = builder.arg(*a);
    }
    let gw = builder.start();
    let out = gw.kgw(&["apply", "-f", "-"], &manifest(port, &host));
    assert!(out.status.success(), "{}", stderr(&out));
    if let Some(p) = policy_yaml {
        let out = gw.kgw(&["apply", "-f", "-"], p);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    (host, gw)
}

fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.stat(&format!("cluster.{CLUSTER}.{name}")).unwrap_or(0)
}

/// `cx_active` of the backend host in /clusters.
fn open_connections(gw: &Gateway, host: &BackendHost) -> u64 {
    let (_, text) = http(gw.admin, "GET", "/clusters", "");
    let prefix = format!("{CLUSTER}::{}:8080::cx_active::", host.backend_ip);
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Policy `time`/`interval`/`probes`: one request pools a connection, the backend vanishes, and
/// the gateway must close that connection within the kernel's bound (time + probes x interval)
/// plus 0.5 s; once the backend is back, the next request succeeds at once on a new connection.
fn stale_idle_connection(time: u32, interval: u32, probes: u32) {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&format!(
        "    keepAliveTime: {time}s\n    keepAliveInterval: {interval}s\n    keepAliveProbes: {probes}\n"
    ));
    let (host, gw) = setup(dir.path(), Some(&p), &[]);
    assert_eq!(gw.curl("fault.example.com", "/get").0, 200);
    assert_eq!(open_connections(&gw, &host), 1);

    let vanished = Instant::now();
    host.blackhole();
    let bound = Duration::from_secs(u64::from(time + probes * interval));
    let found = wait_for(
        "the keepalive to find the dead peer",
        bound + Duration::from_secs(5),
        || (stat(&gw, "upstream_cx_destroy_keepalive_timeout") == 1).then(|| vanished.elapsed()),
    );
    eprintln!(
        "{time}s/{interval}s/{probes}: dead connection closed {found:?} after the backend vanished (kernel bound {bound:?})"
    );
    assert!(
        found <= bound + Duration::from_millis(500),
        "closed after {found:?}, bound {bound:?} + 0.5 s"
    );
    assert_eq!(open_connections(&gw, &host), 0, "gone from /clusters");
    assert_eq!(stat(&gw, "upstream_cx_pool_idle"), 0, "gone from the pool");

    host.lift();
    let t = Instant::now();
    assert_eq!(gw.curl("fault.example.com", "/get").0, 200);
    assert!(t.elapsed() < Duration::from_secs(1), "at once: {:?}", t.elapsed());
    assert_eq!(stat(&gw, "upstream_cx_total"), 2, "on a new connection");
    drop(gw);
    host.close();
}

#[test]
fn a_stale_idle_connection_is_found_and_closed_by_keepalive() {
    stale_idle_connection(1, 1, 2);
}

#[test]
fn detection_2s_1s_3() {
    stale_idle_connection(2, 1, 3);
}

#[test]
fn detection_5s_2s_2() {
    stale_idle_connection(5, 2, 2);
}

#[test]
fn without_keepalive_the_dead_connection_stays_pooled() {
    let dir = tempfile::tempdir().unwrap();
    let (host, gw) = setup(dir.path(), None, &[]);
    assert_eq!(gw.curl("fault.example.com", "/get").0, 200);
    host.blackhole();
    // Nothing can tell this connection is dead: after 5 s it is still in the pool.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(open_connections(&gw, &host), 1);
    assert_eq!(stat(&gw, "upstream_cx_pool_idle"), 1);
    assert_eq!(stat(&gw, "upstream_cx_destroy"), 0);
    drop(gw);
    host.close();
}

#[test]
fn only_probes_given_keeps_the_kernel_idle_and_interval() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let p = GUIDE_POLICY.replace(
        "    keepAliveProbes: 3\n    keepAliveTime: 30s\n    keepAliveInterval: 5s\n",
        "    keepAliveProbes: 2\n",
    );
    let out = gw.kgw(&["apply", "-f", "-"], &p);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(gw.curl("www.example.com", "/get").0, 200);
    let kernel = |name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let sockets = upstream_keepalive(gw.pid(), gw.backend_port);
    assert_eq!(sockets.len(), 1);
    assert!(sockets[0].enabled);
    assert_eq!(sockets[0].probes, 2);
    assert_eq!(sockets[0].idle_secs, kernel("tcp_keepalive_time"));
    assert_eq!(sockets[0].interval_secs, kernel("tcp_keepalive_intvl"));
    let user_timeout = (kernel("tcp_keepalive_time") + 2 * kernel("tcp_keepalive_intvl")) * 1000;
    assert_eq!(
        sockets[0].user_timeout_ms,
        u128::from(user_timeout),
        "TCP_USER_TIMEOUT with kernel defaults"
    );
    let c = gw.cluster("kube_httpbin_httpbin_8000").unwrap();
    assert_eq!(
        c["upstream_connection_options"],
        serde_json::json!({"tcp_keepalive": {"keepalive_probes": 2}})
    );
}

#[test]
fn a_policy_change_reaches_the_idle_pooled_connection() {
    let dir = tempfile::tempdir().unwrap();
    let slow = policy("    keepAliveTime: 30s\n    keepAliveInterval: 1s\n    keepAliveProbes: 2\n");
    let (host, gw) = setup(dir.path(), Some(&slow), &[]);
    assert_eq!(gw.curl("fault.example.com", "/get").0, 200);
    let fast = policy("    keepAliveTime: 1s\n    keepAliveInterval: 1s\n    keepAliveProbes: 2\n");
    let out = gw.kgw(&["apply", "-f", "-"], &fast);
    assert!(out.status.success(), "{}", stderr(&out));
    let vanished = Instant::now();
    host.blackhole();
    let found = wait_for(
        "the new keepalive to find the dead peer",
        Duration::from_secs(10),
        || (stat(&gw, "upstream_cx_destroy_keepalive_timeout") == 1).then(|| vanished.elapsed()),
    );
    eprintln!("live change 30s -> 1s/1s/2: closed {found:?} after the backend vanished");
    assert!(found <= Duration::from_millis(3500), "{found:?}");
    assert_eq!(
        stat(&gw, "upstream_cx_total"),
        1,
        "the same connection, no new one opened first"
    );
    drop(gw);
    host.close();
}

/// A request waiting on `/delay/20` when the backend vanishes: 5xx on the keepalive clock.
fn in_flight(extra: &[&str]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let p = policy("    keepAliveTime: 1s\n    keepAliveInterval: 1s\n    keepAliveProbes: 2\n");
    let args = [&["--route-timeout", "60s"][..], extra].concat();
    let (host, gw) = setup(dir.path(), Some(&p), &args);
    let port = gw.port;
    let started = Instant::now();
    let request = std::thread::spawn(move || curl(port, "fault.example.com", "/delay/20"));
    std::thread::sleep(Duration::from_millis(500));
    host.blackhole();
    let (status, body) = request.join().unwrap();
    let took = started.elapsed();
    assert!((500..600).contains(&status), "{status} {body}");
    assert!(
        body.starts_with("upstream connect error or disconnect/reset before headers"),
        "{body}"
    );
    // The access log is written from its own thread, just after the client has its answer.
    wait_for("the access log line", Duration::from_secs(2), || {
        gw.proc
            .log_text()
            .contains("\"GET /delay/20 HTTP/1.1\" 503 UC")
            .then_some(())
    });
    drop(gw);
    host.close();
    took
}

#[test]
fn a_request_in_flight_fails_on_the_keepalive_clock() {
    let took = in_flight(&[]);
    eprintln!("in flight, TCP_USER_TIMEOUT on: 503 after {took:?}");
    assert!(
        took <= Duration::from_millis(500) + Duration::from_secs(1 + 2 + 1),
        "{took:?}"
    );
}

#[test]
fn a_request_in_flight_fails_on_the_keepalive_clock_without_user_timeout() {
    let took = in_flight(&["--no-tcp-user-timeout"]);
    eprintln!("in flight, TCP_USER_TIMEOUT off: 503 after {took:?}");
    assert!(
        took <= Duration::from_millis(500) + Duration::from_secs(1 + 2 + 1),
        "{took:?}"
    );
}

/// A request written onto a pooled connection whose peer has just vanished: its bytes are never
/// acknowledged, so keepalive never probes (there is data in flight). TCP_USER_TIMEOUT
/// (5 + 2 x 1 = 7 s here) is what ends it; without it, only the route timeout does.
fn written_to_vanished_peer(extra: &[&str]) -> (u16, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let p = policy("    keepAliveTime: 5s\n    keepAliveInterval: 1s\n    keepAliveProbes: 2\n");
    let args = [&["--route-timeout", "12s"][..], extra].concat();
    let (host, gw) = setup(dir.path(), Some(&p), &args);
    assert_eq!(gw.curl("fault.example.com", "/get").0, 200);
    let sockets = upstream_keepalive(gw.pid(), 8080);
    let expected_ms = if extra.is_empty() { 7_000 } else { 0 };
    assert_eq!(
        sockets.iter().map(|s| s.user_timeout_ms).collect::<Vec<_>>(),
        vec![expected_ms]
    );
    host.blackhole();
    let started = Instant::now();
    let (status, _) = gw.curl("fault.example.com", "/get");
    let took = started.elapsed();
    assert_eq!(stat(&gw, "upstream_cx_total"), 1, "sent on the pooled connection");
    drop(gw);
    host.close();
    (status, took)
}

#[test]
fn a_request_written_to_a_vanished_peer_fails_on_the_user_timeout() {
    let (status, took) = written_to_vanished_peer(&[]);
    eprintln!("written to a vanished peer, TCP_USER_TIMEOUT on: {status} after {took:?}");
    assert_eq!(status, 503);
    assert!(
        took >= Duration::from_secs(6) && took <= Duration::from_secs(9),
        "{took:?}"
    );

    let (status, took) = written_to_vanished_peer(&["--no-tcp-user-timeout"]);
    eprintln!("written to a vanished peer, TCP_USER_TIMEOUT off: {status} after {took:?}");
    assert_eq!(status, 504, "only the route timeout ends it");
    assert!(took >= Duration::from_secs(11), "{took:?}");
}
