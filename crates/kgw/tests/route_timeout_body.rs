//! The route timeout spans the whole response, as Envoy's (RouteAction.timeout: "until the
//! upstream response has been completely processed"; Gateway API's `timeouts.request` and
//! `backendRequest`: the full response): a backend that sends its head at once and then
//! trickles its body past a rule's `timeouts.request` has its response cut at the timeout (the
//! HTTP/1.1 client's connection closes short of the body; the HTTP/2 client's stream is reset),
//! counted in `upstream_rq_timeout`, logged `UT`; a body that ends within the timeout is
//! intact. Over HTTP/1.1 and HTTP/2 clients, to an HTTP/1.1 backend (python) and an h2c one
//! (hyper): the four paths of the data plane.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// How often the backends send one body byte.
const TRICKLE: Duration = Duration::from_millis(250);

/// An HTTP/1.1 backend: `GET .../N` is answered with a head (content-length N) at once, then
/// one byte `x` every 250 ms. It prints its port once it listens.
const PYTHON_TRICKLE: &str = r#"
import socket, threading, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)
def serve(conn):
    with conn:
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                data = conn.recv(4096)
                if not data:
                    return
                pending += data
            head, pending = pending.split(b"\r\n\r\n", 1)
            n = int(head.split(b" ", 2)[1].rsplit(b"/", 1)[1])
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n" % n)
                for _ in range(n):
                    time.sleep(0.25)
                    conn.sendall(b"x")
            except OSError:
                return
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

fn python_backend(dir: &std::path::Path) -> (Proc, u16) {
    let log = dir.join("trickle.log");
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_TRICKLE])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("python3 is installed");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line.trim().parse().expect("the backend prints its port");
    (Proc { child, log }, port)
}

/// A body of `left` bytes `x`, one each `TRICKLE`.
struct Trickle {
    left: usize,
    tick: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.tick.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.left -= 1;
        let next = tokio::time::Instant::now() + TRICKLE;
        self.tick.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
    }
}

/// An h2c backend (hyper) with the python backend's answers.
fn h2c_backend() -> (tokio::runtime::Runtime, u16) {
    let (runtime, listener, port) = backend_runtime();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let n: usize = req.uri().path().rsplit('/').next().unwrap().parse().unwrap();
                    let body = Trickle {
                        left: n,
                        tick: Box::pin(tokio::time::sleep(TRICKLE)),
                    };
                    let response = Response::builder()
                        .header("content-type", "text/plain")
                        .header("content-length", n.to_string())
                        .body(body)
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (runtime, port)
}

/// A Gateway on `port`; Service `h1` (HTTP/1.1, at `h1`) and `h2c` (appProtocol h2c, at `h2c`);
/// one rule per Service, by path prefix, with `timeouts.request: 1s`.
fn manifest(port: u16, h1: u16, h2c: u16) -> String {
    let mut yaml = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: tmo}}
spec:
  gatewayClassName: kgateway
  listeners:
  - {{name: http, protocol: HTTP, port: {port}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: trickle, namespace: tmo}}
spec:
  parentRefs:
  - name: gw
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /h1}}
    backendRefs:
    - {{name: h1, port: 80}}
    timeouts:
      request: 1s
  - matches:
    - path: {{type: PathPrefix, value: /h2c}}
    backendRefs:
    - {{name: h2c, port: 80}}
    timeouts:
      request: 1s
"#
    );
    for (name, backend, app) in [("h1", h1, ""), ("h2c", h2c, ", appProtocol: kubernetes.io/h2c")] {
        yaml.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: tmo}}
spec:
  ports:
  - {{name: web, port: 80{app}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: tmo
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints:
- addresses: ["127.0.0.1"]
ports:
- {{name: web, port: {backend}{app}}}
"#
        ));
    }
    yaml
}

/// What curl got: its exit code, the status, the body, and how long it took.
struct Got {
    exit: i32,
    status: u16,
    body: String,
    took: Duration,
}

fn get(port: u16, path: &str, h2: bool) -> Got {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-D", "-", "-o", "-"]);
    if h2 {
        cmd.arg("--http2-prior-knowledge");
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let started = Instant::now();
    let out = cmd.output().expect("curl is installed");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Got {
        exit: out.status.code().unwrap_or(-1),
        status,
        body: body.to_string(),
        took,
    }
}

#[test]
fn a_body_still_trickling_at_the_route_timeout_is_cut_on_all_four_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (_python, h1) = python_backend(dir.path());
    let (_runtime, h2c) = h2c_backend();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    gw.apply(&manifest(port, h1, h2c));
    wait_for("the routes", Duration::from_secs(10), || {
        (get(port, "/h1/0", false).status == 200 && get(port, "/h2c/0", false).status == 200).then_some(())
    });
    let mut cut = 0;
    for backend in ["h1", "h2c"] {
        for h2 in [false, true] {
            let case = format!("{backend} backend, HTTP/{} client", if h2 { 2 } else { 1 });
            // 2 bytes in 0.5 s: within the rule's 1 s, whole.
            let whole = get(port, &format!("/{backend}/2"), h2);
            assert_eq!(
                (whole.exit, whole.status, whole.body.as_str()),
                (0, 200, "xx"),
                "{case}: a body done within the timeout is intact"
            );
            // 20 bytes in 5 s: the head comes at once, the body is cut at 1 s.
            let slow = get(port, &format!("/{backend}/20"), h2);
            assert_eq!(slow.status, 200, "{case}: the head went to the client");
            assert_ne!(
                slow.exit, 0,
                "{case}: curl must see the response cut, got {:?}",
                slow.body
            );
            assert!(
                slow.body.len() < 20 && slow.body.chars().all(|c| c == 'x'),
                "{case}: part of the body: {:?}",
                slow.body
            );
            assert!(
                slow.took >= Duration::from_millis(900) && slow.took < Duration::from_millis(2500),
                "{case}: cut after {:?}, not at the rule's 1 s",
                slow.took
            );
            cut += 1;
        }
    }
    let timeouts: u64 = ["h1", "h2c"]
        .iter()
        .map(|s| {
            gw.stat(&format!("cluster.kube_tmo_{s}_80.upstream_rq_timeout"))
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(timeouts, cut, "each cut counts in upstream_rq_timeout");
    wait_for("the access log's UT entries", Duration::from_secs(5), || {
        (gw.proc.log_text().matches(" 200 UT ").count() == cut as usize).then_some(())
    });
}
