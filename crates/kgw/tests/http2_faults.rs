//! HTTP/1.1 clients through an h2c cluster when a side misbehaves or is slow: a backend that
//! answers before it has read the body (full duplex), a client that stops reading, a backend
//! that never opens its flow-control window, and a policy change that takes HTTP/2 away.

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// An h2c-only backend on loopback (hyper, 64 KiB windows): `/echo` answers its head at once
/// and echoes the body as it comes; `/big/<n>` answers n bytes; `/stall` never reads the body
/// nor answers; `/headers/<n>` answers with n extra headers; `/nothing` answers a head that
/// ends the stream. Counts the connections it accepted.
struct Backend {
    port: u16,
    accepted: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

type Body = BoxBody<Bytes, hyper::Error>;

async fn serve(req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/echo" {
        return Ok(Response::new(req.into_body().boxed()));
    }
    if let Some(n) = path
        .strip_prefix("/headers/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let mut response = Response::new(
            Full::new(Bytes::from_static(b"ok"))
                .map_err(|never| match never {})
                .boxed(),
        );
        for i in 0..n {
            response.headers_mut().insert(
                hyper::header::HeaderName::from_bytes(format!("x-extra-{i}").as_bytes()).unwrap(),
                hyper::header::HeaderValue::from_static("1"),
            );
        }
        return Ok(response);
    }
    if path == "/nothing" {
        return Ok(Response::new(Nothing.boxed()));
    }
    if path == "/stall" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(req);
    }
    let size = path
        .strip_prefix("/big/")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let body = Full::new(Bytes::from(vec![b'x'; size])).map_err(|never| match never {});
    Ok(Response::new(body.boxed()))
}

/// A body that is over before it starts, of no stated size: hyper sends the response head
/// with END_STREAM and no content-length.
struct Nothing;

impl hyper::body::Body for Nothing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }
}

fn backend() -> Backend {
    let (runtime, listener, port) = backend_runtime();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(65_535)
                    .initial_connection_window_size(65_535)
                    .serve_connection(TokioIo::new(tcp), service_fn(serve))
                    .await;
            });
        }
    });
    Backend {
        port,
        accepted,
        _runtime: runtime,
    }
}

const CLUSTER: &str = "kube_h2_backend_80";

/// A Gateway on `port`, a route to Service h2/backend port 80 (`appProtocol` as given, none when
/// empty), its endpoint at 127.0.0.1:`backend`.
fn manifest(port: u16, backend: u16, app_protocol: &str) -> String {
    let app_protocol = if app_protocol.is_empty() {
        String::new()
    } else {
        format!("\n    appProtocol: {app_protocol}")
    };
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
    port: 80{app_protocol}
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
- addresses: ["127.0.0.1"]
ports:
- name: h2c
  port: {backend}
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

fn gateway(dir: &std::path::Path, port: u16, backend: u16, args: &[&str]) -> Gateway {
    let mut builder = GatewayBuilder::run(dir, port);
    for a in args {
        builder = builder.arg(*a);
    }
    let gw = builder.start();
    apply(&gw, &manifest(port, backend, "kubernetes.io/h2c"));
    gw
}

fn apply(gw: &Gateway, yaml: &str) {
    let out = gw.kgw(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.stat(&format!("cluster.{CLUSTER}.{name}")).unwrap_or(0)
}

/// A listener-side counter, whatever the listener's stat prefix.
fn http_stat(gw: &Gateway, suffix: &str) -> u64 {
    let (_, body) = http(gw.admin, "GET", "/stats", "");
    body.lines()
        .filter(|l| l.starts_with("http.") && l.contains(&format!(".{suffix}: ")))
        .filter_map(|l| {
            l.rsplit_once(": ")
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Reads from `s` until `done` holds for what came so far (the read timeout bounds each read).
fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    let mut chunk = [0u8; 16 * 1024];
    while !done(got) {
        match s.read(&mut chunk) {
            Ok(0) => panic!("closed; got {:?}", String::from_utf8_lossy(got)),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("{e}; got {:?}", String::from_utf8_lossy(got)),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Finding 3: a full-duplex backend answers its head before the body ends; the rest of the
/// body still goes up (as Envoy streams both ways) and the echo completes.
#[test]
fn a_backend_that_answers_before_the_body_ends_still_gets_the_rest() {
    let backend = backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = gateway(dir.path(), port, backend.port, &[]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nhost: h2.example.com\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    // The head and the first piece come back before the body is over.
    read_until(&mut s, &mut got, |g| {
        contains(g, b"\r\n\r\n") && contains(g, b"hello")
    });
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s.write_all(b"5\r\nworld\r\n0\r\n\r\n").unwrap();
    read_until(&mut s, &mut got, |g| g.ends_with(b"0\r\n\r\n"));
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("\r\n5\r\nworld\r\n0\r\n\r\n"), "{text}");
    drop(gw);
}

/// Finding 1: a client that stops reading a big response: the request ends within the
/// stream idle timeout (SI, counted), instead of holding the stream forever.
#[test]
fn a_client_that_stops_reading_is_cut_after_the_stream_idle_timeout() {
    let backend = backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = gateway(dir.path(), port, backend.port, &["--stream-idle-timeout", "1s"]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /big/67108864 HTTP/1.1\r\nhost: h2.example.com\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    wait_for("the request to start", Duration::from_secs(5), || {
        (stat(&gw, "upstream_rq_total") == 1).then_some(())
    });
    // Never read: the gateway's writes stall once the socket buffers are full.
    let took = wait_for("the stalled request to end", Duration::from_secs(15), || {
        (stat(&gw, "upstream_rq_active") == 0).then(|| started.elapsed())
    });
    eprintln!(
        "a client that stopped reading 64 MiB: cut {took:?} after the request (stream idle timeout 1s)"
    );
    assert_eq!(http_stat(&gw, "downstream_rq_idle_timeout"), 1);
    assert!(took < Duration::from_secs(10), "{took:?}");
    drop(s);
}

/// Finding 4: a backend that never opens its window for the body: the upload waits no longer
/// than the stream idle timeout (Envoy's 408 "stream timeout", SI, counted).
#[test]
fn a_backend_that_never_opens_its_window_ends_the_upload_after_the_stream_idle_timeout() {
    let backend = backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = gateway(dir.path(), port, backend.port, &["--stream-idle-timeout", "1s"]);
    let file = dir.path().join("body");
    std::fs::write(&file, vec![b'y'; 1024 * 1024]).unwrap();
    let started = Instant::now();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-H",
            "expect:",
            "-w",
            " %{http_code}",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://127.0.0.1:{port}/stall"))
        .output()
        .unwrap();
    let took = started.elapsed();
    eprintln!(
        "a 1 MiB upload to a backend that never opens its window: {:?} after {took:?}",
        stdout(&out)
    );
    assert_eq!(stdout(&out), "stream timeout 408", "{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(http_stat(&gw, "downstream_rq_idle_timeout"), 1);
}

/// Finding 5: the keepalive guide's cleanup (the Service back to HTTP/1.1) closes the HTTP/2
/// connection at once, as Envoy drains a cluster whose protocol options changed.
#[test]
fn taking_http2_away_closes_the_http2_connection() {
    let backend = backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = gateway(dir.path(), port, backend.port, &[]);
    let (status, _) = gw.curl("h2.example.com", "/big/10");
    assert_eq!(status, 200);
    assert_eq!(stat(&gw, "upstream_cx_http2_total"), 1);
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(stat(&gw, "upstream_cx_active"), 1);
    apply(&gw, &manifest(port, backend.port, ""));
    wait_for("the HTTP/2 connection to close", Duration::from_secs(5), || {
        (stat(&gw, "upstream_cx_active") == 0).then_some(())
    });
    assert_eq!(stat(&gw, "upstream_cx_destroy"), 1);
    let (_, clusters) = http(gw.admin, "GET", "/clusters", "");
    let host = format!("{CLUSTER}::127.0.0.1:{}::cx_active::", backend.port);
    assert!(clusters.contains(&format!("{host}0")), "{clusters}");
}

/// Finding 7: a WebSocket upgrade on a route that allows it (one of its backends says
/// appProtocol kubernetes.io/ws; here with weight 0) that lands on an HTTP/2 cluster is refused
/// with a reason (501), not sent on as a plain GET, and the client connection closes.
#[test]
fn a_websocket_upgrade_to_an_http2_cluster_is_refused_and_the_connection_closes() {
    let backend = backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = gateway(dir.path(), port, backend.port, &[]);
    let ws_backend = format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: ws
  namespace: h2
spec:
  ports:
  - name: ws
    port: 80
    appProtocol: kubernetes.io/ws
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ws-1
  namespace: h2
  labels:
    kubernetes.io/service-name: ws
addressType: IPv4
endpoints:
- addresses: ["127.0.0.1"]
ports:
- name: ws
  port: {}
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
    - name: ws
      port: 80
      weight: 0
"#,
        free_port()
    );
    apply(&gw, &ws_backend);
    let cluster = gw.dump("GET", "").to_string();
    assert!(cluster.contains("upgrade_configs"), "the route allows WebSocket");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /big/10 HTTP/1.1\r\nhost: h2.example.com\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
          sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("the connection closes");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 501"), "{text}");
    assert!(
        text.contains("WebSocket to an HTTP/2 backend is not supported"),
        "{text}"
    );
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        0,
        "nothing went upstream"
    );
}

/// Finding 13: a client that leaves while its request waits for a stream (one connection of
/// one stream, held by a request to a backend that never answers) gives up its pending place
/// at once, not after the route timeout.
#[test]
fn a_client_that_leaves_while_pending_gives_up_its_place_at_once() {
    let backend = backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = gateway(dir.path(), port, backend.port, &["--route-timeout", "60s"]);
    apply(
        &gw,
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: limits\n  \
         namespace: h2\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: backend\n  \
         circuitBreakers:\n    maxConnections: 1\n  http2ProtocolOptions:\n    maxConcurrentStreams: 1\n",
    );
    let mut holder = TcpStream::connect(("127.0.0.1", port)).unwrap();
    holder
        .write_all(b"GET /stall HTTP/1.1\r\nhost: h2.example.com\r\n\r\n")
        .unwrap();
    wait_for("the stream held", Duration::from_secs(5), || {
        (stat(&gw, "upstream_rq_active") == 1).then_some(())
    });
    let mut waiting = TcpStream::connect(("127.0.0.1", port)).unwrap();
    waiting
        .write_all(b"GET /big/1 HTTP/1.1\r\nhost: h2.example.com\r\n\r\n")
        .unwrap();
    wait_for("the second request pending", Duration::from_secs(5), || {
        (stat(&gw, "upstream_rq_pending_active") == 1).then_some(())
    });
    let left = Instant::now();
    drop(waiting);
    wait_for("the pending place given up", Duration::from_secs(5), || {
        (stat(&gw, "upstream_rq_pending_active") == 0).then_some(())
    });
    eprintln!(
        "a pending client that left gave up its place {:?} after",
        left.elapsed()
    );
    assert!(left.elapsed() < Duration::from_secs(2), "{:?}", left.elapsed());
    drop(holder);
}

/// Finding 8: commonHttpProtocolOptions.maxHeadersCount holds on an HTTP/2 cluster too: a
/// response with more headers is Envoy's 502 protocol error, one within the limit passes.
#[test]
fn max_headers_count_holds_for_http2_responses() {
    let backend = backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = gateway(dir.path(), port, backend.port, &[]);
    apply(
        &gw,
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: limits\n  \
         namespace: h2\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: backend\n  \
         commonHttpProtocolOptions:\n    maxHeadersCount: 10\n",
    );
    assert_eq!(gw.curl("h2.example.com", "/headers/5"), (200, "ok".to_string()));
    let (status, body) = gw.curl("h2.example.com", "/headers/20");
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
    );
}

/// Finding 16: an HTTP/1.0 client that asks for keep-alive is told so (`connection:
/// keep-alive`) on a response from an HTTP/2 cluster, and its next request goes on the same
/// connection.
#[test]
fn an_http10_keep_alive_client_is_told_keep_alive() {
    let backend = backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = gateway(dir.path(), port, backend.port, &[]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /big/3 HTTP/1.0\r\nhost: h2.example.com\r\nconnection: keep-alive\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        read_until(&mut s, &mut got, |g| {
            contains(g, b"\r\n\r\n") && g.ends_with(b"xxx")
        });
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        assert!(text.contains("\r\nconnection: keep-alive\r\n"), "{text}");
        assert!(text.contains("\r\ncontent-length: 3\r\n"), "{text}");
    }
}

/// Finding 16: a response head that ends the stream (no body, no length) reaches an HTTP/1.1
/// client with `content-length: 0`, as Envoy sends it, not as an empty chunked body.
#[test]
fn a_head_that_ends_the_stream_goes_out_with_content_length_0() {
    let backend = backend();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gw = gateway(dir.path(), port, backend.port, &[]);
    // The backend's own answer states no length.
    let direct = std::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5", "--http2-prior-knowledge"])
        .arg(format!("http://127.0.0.1:{}/nothing", backend.port))
        .output()
        .unwrap();
    let direct = stdout(&direct).to_ascii_lowercase();
    assert!(
        direct.starts_with("http/2 200") && !direct.contains("content-length"),
        "{direct}"
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /nothing HTTP/1.1\r\nhost: h2.example.com\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |g| contains(g, b"\r\n\r\n"));
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("\r\ncontent-length: 0\r\n"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
}

/// An h2c backend (Python's h2, validation off) that answers `/bad` with a response head that
/// has no `:status`, an invalid HTTP/2 message, and anything else with 200 "ok"; it prints
/// "connection" for each connection it accepts.
const INVALID_MESSAGE_BACKEND: &str = r#"
import socket, sys, threading
import h2.config, h2.connection, h2.events

def serve(sock):
    config = h2.config.H2Configuration(client_side=False, validate_outbound_headers=False,
                                       normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65535)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                path = dict(event.headers)[b":path"]
                if path == b"/bad":
                    conn.send_headers(event.stream_id, [(b"x-no-status", b"1")], end_stream=True)
                else:
                    conn.send_headers(event.stream_id, [(b":status", b"200")])
                    conn.send_data(event.stream_id, b"ok", end_stream=True)
        sock.sendall(conn.data_to_send())

listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen()
print("ready", flush=True)
while True:
    sock, _ = listener.accept()
    print("connection", flush=True)
    threading.Thread(target=serve, args=(sock,), daemon=True).start()
"#;

/// `overrideStreamErrorOnInvalidHttpMessage`: an invalid response (no `:status`)
/// is Envoy's 502 "protocol error" either way, counted in upstream_cx_protocol_error; by
/// default (false, Envoy's) it ends the connection too, so the next request opens a new one;
/// with `true` the connection stays and the next request goes on it.
#[test]
fn an_invalid_upstream_message_ends_the_connection_unless_the_policy_overrides_it() {
    for (override_stream_error, connections_after) in [(false, 2), (true, 1)] {
        let backend_port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut backend = std::process::Command::new("python3")
            .args(["-c", INVALID_MESSAGE_BACKEND, &backend_port.to_string()])
            .stdout(log.reopen().unwrap())
            .spawn()
            .expect("python3 with h2");
        let seen = || std::fs::read_to_string(log.path()).unwrap_or_default();
        wait_for("the backend", Duration::from_secs(10), || {
            seen().contains("ready").then_some(())
        });
        let connections = || seen().matches("connection").count();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let gw = gateway(dir.path(), port, backend_port, &[]);
        if override_stream_error {
            apply(
                &gw,
                "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: h2\n  \
                 namespace: h2\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: backend\n  \
                 http2ProtocolOptions:\n    overrideStreamErrorOnInvalidHttpMessage: true\n",
            );
            wait_for("the policy in the dump", Duration::from_secs(5), || {
                gw.cluster(CLUSTER)?
                    .pointer("/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions/explicit_http_config/http2_protocol_options/override_stream_error_on_invalid_http_message")
                    .filter(|v| **v == serde_json::json!(true))
                    .map(|_| ())
            });
        }
        assert_eq!(gw.curl("h2.example.com", "/good"), (200, "ok".to_string()));
        assert_eq!(connections(), 1);
        let (status, body) = gw.curl("h2.example.com", "/bad");
        assert_eq!(status, 502, "{body}");
        assert_eq!(
            body,
            "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
        );
        assert_eq!(stat(&gw, "upstream_cx_protocol_error"), 1);
        assert_eq!(gw.curl("h2.example.com", "/good"), (200, "ok".to_string()));
        assert_eq!(
            connections(),
            connections_after,
            "override {override_stream_error}: connections the backend accepted"
        );
        let _ = backend.kill();
        let _ = backend.wait();
    }
}
