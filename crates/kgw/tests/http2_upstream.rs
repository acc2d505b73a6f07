//! HTTP/2 to the backends: a Service port with `appProtocol: kubernetes.io/h2c` makes its
//! cluster speak HTTP/2 with prior knowledge; HTTP/1.1 clients are served through it, streams
//! share connections up to `maxConcurrentStreams`, and `http2ProtocolOptions.connectionKeepalive`
//! finds a backend that stopped answering (the keepalive test puts the backend in a network
//! namespace and blackholes it: root and iproute2, as keepalive_faults.rs).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::grpc::GrpcServer;
use common::netns::BackendHost;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// An h2c-only backend on loopback (hyper): it answers "<version> <path> xff=<x-forwarded-for>"
/// (and "uploaded=<bytes>" for a body over 1000 bytes) after the milliseconds a `/delay/<ms>`
/// path asks for, or `/bytes/<n>` bytes; it counts the connections it accepted.
struct H2Backend {
    port: u16,
    accepted: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

fn h2_backend() -> H2Backend {
    let (runtime, listener, port) = backend_runtime();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    if let Some(ms) = path.strip_prefix("/delay/").and_then(|ms| ms.parse().ok()) {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    let xff = req
                        .headers()
                        .get("x-forwarded-for")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    let version = req.version();
                    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
                        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; n]))));
                    }
                    let uploaded = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes().len())
                        .unwrap_or(0);
                    let body = if uploaded > 1000 {
                        format!("{version:?} {path} xff={xff} uploaded={uploaded}")
                    } else {
                        format!("{version:?} {path} xff={xff}")
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    H2Backend {
        port,
        accepted,
        _runtime: runtime,
    }
}

/// A Gateway on `port`, a route to Service h2/backend whose port 80 says
/// `appProtocol: kubernetes.io/h2c`, its endpoint at `ip`:`backend`.
fn manifest(port: u16, ip: &str, backend: u16) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: h2
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
  name: backend
  namespace: h2
spec:
  ports:
  - name: h2c
    port: 80
    appProtocol: kubernetes.io/h2c
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend-1
  namespace: h2
  labels:
    kubernetes.io/service-name: backend
addressType: IPv4
endpoints:
- addresses: ["{ip}"]
ports:
- name: h2c
  port: {backend}
  appProtocol: kubernetes.io/h2c
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: backend
  namespace: h2
spec:
  parentRefs:
  - name: gw
  rules:
  - backendRefs:
    - name: backend
      port: 80
"#
    )
}

const CLUSTER: &str = "kube_h2_backend_80";

/// A BackendConfigPolicy on Service h2/backend with `http2ProtocolOptions` (YAML lines, indented
/// four spaces).
fn policy(http2: &str) -> String {
    format!(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: backend-http2\n  \
         namespace: h2\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: backend\n  http2ProtocolOptions:\n{http2}"
    )
}

fn apply(gw: &Gateway, yaml: &str) {
    let out = gw.kgw(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.stat(&format!("cluster.{CLUSTER}.{name}")).unwrap_or(0)
}

#[test]
fn an_http1_client_reaches_an_h2c_backend_over_http2() {
    let backend = h2_backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    apply(&gw, &manifest(port, "127.0.0.1", backend.port));
    let (status, body) = gw.curl("h2.example.com", "/hello?x=1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "HTTP/2.0 /hello xff=127.0.0.1");
    // A body, chunked from the client, goes as DATA frames.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-H",
            "transfer-encoding: chunked",
            "--data-binary",
        ])
        .arg("a body")
        .arg(format!("http://127.0.0.1:{port}/post"))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "HTTP/2.0 /post xff=127.0.0.1");
    // Bodies larger than the HTTP/2 windows (64 KiB) both ways, under flow control.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'y'; 3 * 1024 * 1024]).unwrap();
    let t = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--data-binary"])
        .arg(format!("@{}", big.display()))
        .arg(format!("http://127.0.0.1:{port}/upload"))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "HTTP/2.0 /upload xff=127.0.0.1 uploaded=3145728");
    eprintln!("3 MiB upload to the h2c backend: {:?}", t.elapsed());
    let t = Instant::now();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
        ])
        .arg(format!("http://127.0.0.1:{port}/bytes/5000000"))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "5000000");
    let took = t.elapsed();
    eprintln!("5 MB download from the h2c backend: {took:?}");
    // With the h2 crate's 64 KiB receive windows it took 3.5 s (a stall per window); with
    // kgw's 1 MiB, some 65 ms.
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(stat(&gw, "upstream_cx_http2_total"), 1, "one connection for all");
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    // /clusters lists it as any upstream connection.
    let (_, clusters) = http(gw.admin, "GET", "/clusters", "");
    let line = format!("{CLUSTER}::127.0.0.1:{}::cx_active::1", backend.port);
    assert!(clusters.lines().any(|l| l == line), "{line} in\n{clusters}");
    let cluster = gw.cluster(CLUSTER).unwrap();
    assert!(
        cluster.to_string().contains("http2_protocol_options"),
        "the dump says HTTP/2: {cluster}"
    );
}

/// The cluster's maxStreamDuration holds for an HTTP/1.1 client's request to an HTTP/2 upstream
/// too: 504 UMSDR before the response head, as on the HTTP/1.1 path.
#[test]
fn max_stream_duration_ends_a_request_to_an_http2_upstream() {
    let backend = h2_backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    apply(&gw, &manifest(port, "127.0.0.1", backend.port));
    let limit = policy("    maxConcurrentStreams: 100\n").replace(
        "  http2ProtocolOptions:",
        "  commonHttpProtocolOptions:\n    maxStreamDuration: 300ms\n  http2ProtocolOptions:",
    );
    apply(&gw, &limit);
    let started = Instant::now();
    let (status, body) = gw.curl("h2.example.com", "/delay/3000");
    assert_eq!(
        (status, body.as_str()),
        (504, "upstream max stream duration reached")
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stat(&gw, "upstream_rq_max_duration_reached"), 1);
    assert_eq!(gw.curl("h2.example.com", "/delay/10").0, 200);
}

/// (d) 100 concurrent requests over at most ceil(100 / maxConcurrentStreams) connections.
#[test]
fn a_hundred_concurrent_requests_share_ceil_100_over_max_streams_connections() {
    let backend = h2_backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    apply(&gw, &manifest(port, "127.0.0.1", backend.port));
    apply(&gw, &policy("    maxConcurrentStreams: 10\n"));
    // Each request holds its stream 300 ms, so the 100 overlap.
    let requests: Vec<_> = (0..100)
        .map(|_| std::thread::spawn(move || curl(port, "h2.example.com", "/delay/300")))
        .collect();
    for r in requests {
        let (status, body) = r.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let connections = backend.accepted.load(Ordering::SeqCst);
    eprintln!("100 concurrent requests, maxConcurrentStreams 10: {connections} upstream connections");
    assert!(
        connections <= 10,
        "{connections} connections for 100 streams of 10 each"
    );
    assert_eq!(stat(&gw, "upstream_cx_http2_total"), connections as u64);
}

/// (d) as the issue says it: 100 concurrent streams on ONE HTTP/2 client connection (h2load,
/// prior knowledge) reach the backend over at most ceil(100 / 10) connections.
#[test]
fn a_hundred_streams_on_one_client_connection_share_ceil_100_over_max_streams_connections() {
    let backend = h2_backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    apply(&gw, &manifest(port, "127.0.0.1", backend.port));
    apply(&gw, &policy("    maxConcurrentStreams: 10\n"));
    let out = std::process::Command::new("h2load")
        .args(["-n", "100", "-c", "1", "-m", "100"])
        .arg(format!("http://127.0.0.1:{port}/delay/300"))
        .output()
        .expect("h2load (Debian's nghttp2-client) is installed");
    let report = stdout(&out);
    assert!(
        report.contains("100 succeeded") && report.contains("status codes: 100 2xx"),
        "{report}"
    );
    let connections = backend.accepted.load(Ordering::SeqCst);
    eprintln!(
        "100 streams on one client connection, maxConcurrentStreams 10: {connections} upstream connections"
    );
    assert!(
        connections <= 10,
        "{connections} connections for 100 streams of 10 each"
    );
    assert_eq!(stat(&gw, "upstream_cx_http2_total"), connections as u64);
}

/// (c) The HTTP/2 keepalive guide: PINGs find a blackholed backend within interval (plus
/// jitter) and timeout, with 0.5 s to spare; its connection closes and is counted; a request in
/// flight on it fails fast with Envoy's answer (measured on Envoy 1.40: 503 after 2.06 s); the
/// next request, once the backend is back, opens a new connection.
#[test]
fn keepalive_pings_find_a_blackholed_backend_under_a_request() {
    keepalive_detection(true);
}

/// (c) as the guide shows it: the connection is idle in the pool when the backend vanishes.
#[test]
fn keepalive_pings_find_a_blackholed_backend_behind_an_idle_connection() {
    keepalive_detection(false);
}

fn keepalive_detection(with_request_in_flight: bool) {
    let mut host = BackendHost::new();
    host.spawn(
        KGW,
        &["sample-backend", "--listen", &format!("{}:8080", host.backend_ip)],
    );
    let addr = SocketAddr::from((host.backend_ip, 8080));
    wait_for("the backend in its namespace", Duration::from_secs(10), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port)
        .arg("--route-timeout")
        .arg("60s")
        .start();
    apply(&gw, &manifest(port, &host.backend_ip.to_string(), 8080));
    apply(
        &gw,
        &policy("    connectionKeepalive:\n      interval: 1s\n      timeout: 1s\n"),
    );
    assert_eq!(gw.curl("h2.example.com", "/get").0, 200);
    assert_eq!(stat(&gw, "upstream_cx_http2_total"), 1);

    // A request in flight when the backend vanishes, or none.
    let started = Instant::now();
    let in_flight = with_request_in_flight.then(|| {
        let request = std::thread::spawn(move || curl(port, "h2.example.com", "/delay/20"));
        wait_for("the request in flight", Duration::from_secs(5), || {
            (stat(&gw, "upstream_rq_active") == 1).then_some(())
        });
        request
    });
    let vanished = Instant::now();
    host.blackhole();
    let found = wait_for("the PINGs to find the dead peer", Duration::from_secs(10), || {
        (stat(&gw, "http2.keepalive_timeout") == 1).then(|| vanished.elapsed())
    });
    let bound = Duration::from_millis(1150 + 1000);
    eprintln!(
        "keepalive interval 1s (+15% jitter) timeout 1s: dead connection closed {found:?} after the backend vanished"
    );
    assert!(
        found <= bound + Duration::from_millis(500),
        "closed after {found:?}, bound {bound:?} + 0.5 s"
    );
    if let Some(request) = in_flight {
        let (status, body) = request.join().unwrap();
        eprintln!("the request in flight got {status} after {:?}", started.elapsed());
        assert_eq!(status, 503);
        assert_eq!(
            body,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "fast: {:?}",
            started.elapsed()
        );
        assert_eq!(stat(&gw, "upstream_cx_destroy_local_with_active_rq"), 1);
    } else {
        assert_eq!(stat(&gw, "upstream_cx_destroy_local"), 1);
        assert_eq!(stat(&gw, "upstream_cx_destroy_with_active_rq"), 0);
    }
    assert_eq!(stat(&gw, "upstream_cx_active"), 0, "the connection left");

    host.lift();
    let t = Instant::now();
    assert_eq!(gw.curl("h2.example.com", "/get").0, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "at once: {:?}", t.elapsed());
    assert_eq!(stat(&gw, "upstream_cx_http2_total"), 2, "on a new connection");
    drop(gw);
    host.close();
}

/// (b) `healthCheck.grpc`: grpc.health.v1.Health/Check with the policy's serviceName; the
/// endpoint answering NOT_SERVING is marked `/failed_active_hc` in /clusters, the SERVING one
/// stays healthy, and once it answers SERVING it is healthy again.
#[test]
fn the_grpc_health_check_marks_a_not_serving_endpoint() {
    let backend_port = free_port();
    let health = ["--health-service", "pkg.Health"];
    let _serving = GrpcServer::start(&format!("127.0.0.2:{backend_port}"), "SERVING", &health);
    let mut failing = GrpcServer::start(&format!("127.0.0.3:{backend_port}"), "NOT_SERVING", &health);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    let two_endpoints = manifest(port, "127.0.0.1", backend_port).replace(
        "- addresses: [\"127.0.0.1\"]",
        "- addresses: [\"127.0.0.2\"]\n- addresses: [\"127.0.0.3\"]",
    );
    apply(&gw, &two_endpoints);
    let check = "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: grpc-health\n  \
                 namespace: h2\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: backend\n  healthCheck:\n    \
                 timeout: 1s\n    interval: 1s\n    unhealthyThreshold: 1\n    healthyThreshold: 1\n    grpc:\n      \
                 serviceName: pkg.Health\n      authority: grpc.example.com\n";
    apply(&gw, check);
    let flags = |ip: &str| {
        let (_, text) = http(gw.admin, "GET", "/clusters", "");
        let prefix = format!("{CLUSTER}::{ip}:{backend_port}::health_flags::");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_default()
    };
    wait_for("the first checks", Duration::from_secs(10), || {
        (flags("127.0.0.2") == "healthy" && flags("127.0.0.3") == "/failed_active_hc").then_some(())
    });
    assert!(stat(&gw, "health_check.success") >= 1);
    assert!(stat(&gw, "health_check.failure") >= 1);
    assert_eq!(
        stat(&gw, "health_check.network_failure"),
        0,
        "NOT_SERVING is an answer"
    );
    let c = gw.cluster(CLUSTER).unwrap();
    assert_eq!(
        c["health_checks"][0]["grpc_health_check"],
        serde_json::json!({"service_name": "pkg.Health", "authority": "grpc.example.com"})
    );

    failing.set_health("SERVING");
    // Until the cluster sees traffic, checks run every 60 s (Envoy's no_traffic_interval): one
    // request (to the healthy endpoint; not a gRPC call, whatever it answers) ends that.
    let (status, body) = gw.curl("h2.example.com", "/");
    eprintln!("a plain GET to the gRPC server: {status} {body}");
    assert_eq!(stat(&gw, "upstream_cx_http2_total"), 1, "to the healthy endpoint");
    wait_for("the endpoint to pass again", Duration::from_secs(10), || {
        (flags("127.0.0.3") == "healthy").then_some(())
    });
}
