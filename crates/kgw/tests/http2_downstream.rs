//! HTTP/2 clients through the real kgw to an HTTP/1.1 backend (the sample backend): curl
//! `--http2` over HTTPS (ALPN h2) and `--http2-prior-knowledge` over plain HTTP (the preface),
//! many streams on one connection, uploads both ways (with a length, and without one: chunked
//! upstream), the access log and Envoy's counters, HTTP/1.1 clients unchanged on both ports, and
//! a gRPC request that gets a local reply answered as Envoy answers it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::pki::{Pki, secret_yaml};
use common::*;

const NS: &str = "web";

struct Setup {
    gw: Gateway,
    ca: PathBuf,
    http_port: u16,
    https_port: u16,
    access_log: PathBuf,
    _pki: Pki,
    _backend: Proc,
}

/// kgw with Gateway `gw`: an HTTP and an HTTPS listener (www.example.com), HTTPRoute `echo` to
/// the sample backend, and HTTPRoute `down` (host down.example.com) to a Service with no
/// endpoint.
fn setup(dir: &Path) -> Setup {
    let pki = Pki::new(&dir.join("pki"));
    let leaf = pki.leaf(
        "www",
        &["www.example.com", "down.example.com", "grpc.example.com"],
    );
    let backend_port = free_port();
    let backend = sample_backend_on(backend_port, dir.join("backend.log"));
    let http_port = free_port();
    let https_port = free_port();
    let access_log = dir.join("access.log");
    let gw = GatewayBuilder::run(dir, http_port)
        .arg("--access-log")
        .arg(access_log.to_str().unwrap())
        .start();
    let yaml = format!(
        "{secret}---\n\
         {gateway}---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: {NS}\nspec:\n  ports:\n  - port: 80\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-1\n  namespace: {NS}\n  labels:\n    \
         kubernetes.io/service-name: echo\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {backend_port}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: down\n  namespace: {NS}\nspec:\n  ports:\n  - port: 80\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: down-1\n  namespace: {NS}\n  labels:\n    \
         kubernetes.io/service-name: down\naddressType: IPv4\nendpoints: []\nports:\n- port: 80\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: echo\n  namespace: {NS}\nspec:\n  \
         parentRefs:\n  - name: gw\n  hostnames: [\"www.example.com\"]\n  rules:\n  - backendRefs:\n    - name: echo\n      port: 80\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: down\n  namespace: {NS}\nspec:\n  \
         parentRefs:\n  - name: gw\n  hostnames: [\"down.example.com\"]\n  rules:\n  - backendRefs:\n    - name: down\n      port: 80\n",
        secret = secret_yaml(NS, "www-cert", &leaf, None),
        gateway = gateway(Some(http_port), https_port),
    );
    gw.apply(&yaml);
    let setup = Setup {
        gw,
        ca: pki.ca.cert.clone(),
        http_port,
        https_port,
        access_log,
        _pki: pki,
        _backend: backend,
    };
    wait_for("both listeners to serve", Duration::from_secs(15), || {
        let https = setup.curl(&["--http1.1"], Scheme::Https, "www.example.com", "/get");
        let http = setup.curl(&["--http1.1"], Scheme::Http, "www.example.com", "/get");
        (https.status == 200 && http.status == 200).then_some(())
    });
    setup
}

/// Gateway `gw`: an HTTP listener (when `http_port` is set) and an HTTPS one.
fn gateway(http_port: Option<u16>, https_port: u16) -> String {
    let http = http_port
        .map(|port| format!("  - name: http\n    protocol: HTTP\n    port: {port}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {NS}\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n{http}  \
         - name: https\n    protocol: HTTPS\n    port: {https_port}\n    tls:\n      mode: Terminate\n      \
         certificateRefs:\n      - kind: Secret\n        group: \"\"\n        name: www-cert\n"
    )
}

#[derive(Clone, Copy)]
enum Scheme {
    Http,
    Https,
}

/// What curl saw: the HTTP version it spoke, the status, the response headers and the body.
struct Seen {
    version: String,
    status: u16,
    headers: String,
    body: String,
    /// curl's error, if any.
    error: String,
}

impl Setup {
    /// `curl ARGS URL` through the gateway (HTTPS: the test CA, the name resolved to 127.0.0.1).
    fn curl(&self, args: &[&str], scheme: Scheme, host: &str, path: &str) -> Seen {
        let out = self.curl_output(args, scheme, host, path, None);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (rest, tail) = text.rsplit_once("\n@@").unwrap_or((&text, "0 0"));
        let (version, status) = tail.trim().split_once(' ').unwrap_or(("0", "0"));
        let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or(("", rest));
        Seen {
            version: version.to_string(),
            status: status.parse().unwrap_or(0),
            headers: headers.to_ascii_lowercase(),
            body: body.to_string(),
            error: stderr(&out),
        }
    }

    fn curl_output(
        &self,
        args: &[&str],
        scheme: Scheme,
        host: &str,
        path: &str,
        stdin: Option<&[u8]>,
    ) -> Output {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "-i",
            "-w",
            "\n@@%{http_version} %{http_code}",
        ])
        .args(args);
        match scheme {
            Scheme::Https => {
                https_target(&mut cmd, &self.ca, host, self.https_port, path);
            }
            Scheme::Http => {
                cmd.args(["-H", &format!("host: {host}")])
                    .arg(format!("http://127.0.0.1:{}{path}", self.http_port));
            }
        }
        match stdin {
            None => cmd.output().expect("curl is installed"),
            Some(bytes) => {
                use std::io::Write;
                let mut child = cmd
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("curl is installed");
                child.stdin.take().unwrap().write_all(bytes).unwrap();
                child.wait_with_output().unwrap()
            }
        }
    }

    fn stat(&self, name: &str) -> u64 {
        self.gw.stat(&format!("http.http.{name}")).unwrap_or(0)
    }

    /// The access log lines that contain `needle`, once there are `count` of them.
    fn log_lines(&self, needle: &str, count: usize) -> Vec<String> {
        wait_for(
            &format!("{count} access log lines with {needle}"),
            Duration::from_secs(5),
            || {
                let lines: Vec<String> = std::fs::read_to_string(&self.access_log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_string)
                    .collect();
                (lines.len() >= count).then_some(lines)
            },
        )
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn curl_http2_over_https_and_prior_knowledge_reaches_an_http1_backend() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let cx_before = s.stat("downstream_cx_http2_total");

    // HTTPS: ALPN picks h2; the backend gets HTTP/1.1 with the proxy's edits.
    let seen = s.curl(
        &["--http2"],
        Scheme::Https,
        "www.example.com",
        "/headers?over=tls",
    );
    assert_eq!((seen.version.as_str(), seen.status), ("2", 200), "{}", seen.body);
    let headers = &json(&seen.body)["headers"];
    assert_eq!(headers["X-Forwarded-Proto"], "https", "{}", seen.body);
    assert_eq!(headers["Host"], format!("www.example.com:{}", s.https_port));
    assert_eq!(headers["X-Forwarded-For"], "127.0.0.1");

    // Plain HTTP with prior knowledge: the preface is recognised.
    let seen = s.curl(
        &["--http2-prior-knowledge"],
        Scheme::Http,
        "www.example.com",
        "/headers",
    );
    assert_eq!((seen.version.as_str(), seen.status), ("2", 200), "{}", seen.body);
    assert_eq!(json(&seen.body)["headers"]["X-Forwarded-Proto"], "http");
    // Connection-specific headers do not cross into HTTP/2 (the backend sends keep-alive ones).
    assert!(!seen.headers.contains("\nconnection:"), "{}", seen.headers);
    assert!(!seen.headers.contains("transfer-encoding"), "{}", seen.headers);

    // An upload with a length, and one without (curl -T -: no content-length, so it goes
    // upstream chunked); each comes back whole.
    let payload = "x".repeat(100_000);
    let seen = s.curl(
        &["--http2-prior-knowledge", "--data-binary", &payload],
        Scheme::Http,
        "www.example.com",
        "/anything",
    );
    assert_eq!(seen.status, 200);
    assert_eq!(
        json(&seen.body)["data"].as_str().map(str::len),
        Some(payload.len())
    );
    let out = s.curl_output(
        &["--http2", "-T", "-", "-X", "POST"],
        Scheme::Https,
        "www.example.com",
        "/anything",
        Some(b"streamed upload, no length"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("@@2 200"), "{text}");
    let body = text
        .split_once("\r\n\r\n")
        .unwrap()
        .1
        .rsplit_once("\n@@")
        .unwrap()
        .0;
    let echoed = json(body);
    assert_eq!(echoed["data"], "streamed upload, no length", "{body}");
    assert_eq!(echoed["headers"]["Transfer-Encoding"], "chunked", "{body}");

    // HTTP/1.1 clients still work on both ports.
    for scheme in [Scheme::Http, Scheme::Https] {
        let seen = s.curl(&["--http1.1"], scheme, "www.example.com", "/get");
        assert_eq!((seen.version.as_str(), seen.status), ("1.1", 200));
    }

    // Counted and logged as HTTP/2.
    assert_eq!(s.stat("downstream_cx_http2_total") - cx_before, 4);
    let lines = s.log_lines("HTTP/2\"", 4);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"GET /headers?over=tls HTTP/2\" 200")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"POST /anything HTTP/2\" 200")),
        "{lines:?}"
    );
}

#[test]
fn many_streams_share_one_connection_and_grpc_gets_envoys_local_reply() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let (cx_before, rq_before) = (
        s.stat("downstream_cx_http2_total"),
        s.stat("downstream_rq_http2_total"),
    );

    // 100 requests, up to 50 at once, multiplexed on one connection (h2load, nghttp2's client:
    // curl 7.88's --parallel fails with prior knowledge against any server).
    let out = Command::new("h2load")
        .args([
            "-n",
            "100",
            "-c",
            "1",
            "-m",
            "50",
            "-H",
            ":authority: www.example.com",
        ])
        .arg(format!("http://127.0.0.1:{}/get?n=1", s.http_port))
        .output()
        .expect("h2load (nghttp2-client) is installed");
    let report = stdout(&out);
    assert!(
        report.contains("100 done, 100 succeeded"),
        "{report}{}",
        stderr(&out)
    );
    assert!(report.contains("status codes: 100 2xx"), "{report}");
    assert_eq!(s.stat("downstream_rq_http2_total") - rq_before, 100);
    let connections = s.stat("downstream_cx_http2_total") - cx_before;
    assert!(connections <= 2, "{connections} connections for 100 streams");
    // Upstream, HTTP/1.1 connections go back to their pool after each exchange: at most one
    // per stream in flight (50), not one per stream.
    let upstream =
        s.gw.stat(&format!("cluster.kube_{NS}_echo_80.upstream_cx_total"))
            .unwrap();
    assert!(upstream <= 55, "{upstream} upstream connections for 100 streams");
    s.log_lines("\"GET /get?n=1 HTTP/2\" 200", 100);

    // A gRPC call to a route whose Service has no endpoint: HTTP 200, grpc-status 14
    // (UNAVAILABLE, from Envoy's 503), grpc-message the reply's text, no body.
    for scheme in [Scheme::Http, Scheme::Https] {
        let flag = match scheme {
            Scheme::Http => "--http2-prior-knowledge",
            Scheme::Https => "--http2",
        };
        let seen = s.curl(
            &[
                flag,
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "--data-binary",
                "grpc",
            ],
            scheme,
            "down.example.com",
            "/pkg.Service/Method",
        );
        assert_eq!(
            (seen.version.as_str(), seen.status),
            ("2", 200),
            "{}{}",
            seen.headers,
            seen.error
        );
        assert!(seen.headers.contains("grpc-status: 14"), "{}", seen.headers);
        assert!(
            seen.headers.contains("grpc-message: no healthy upstream"),
            "{}",
            seen.headers
        );
        assert!(
            seen.headers.contains("content-type: application/grpc"),
            "{}",
            seen.headers
        );
        assert_eq!(seen.body, "");
    }
    // Over HTTP/1.1 too: 200 and the status in the headers (as Envoy 1.40 answers).
    let seen = s.curl(
        &[
            "--http1.1",
            "-H",
            "content-type: application/grpc+proto",
            "--data-binary",
            "grpc",
        ],
        Scheme::Http,
        "down.example.com",
        "/pkg.Service/Method",
    );
    assert_eq!(
        (seen.version.as_str(), seen.status),
        ("1.1", 200),
        "{}",
        seen.headers
    );
    assert!(seen.headers.contains("grpc-status: 14"), "{}", seen.headers);
    // gRPC-Web is not gRPC to Envoy's local replies (its grpc_web filter's business): the
    // plain 503, as for a request that is not gRPC at all.
    let seen = s.curl(
        &[
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc-web+proto",
            "--data-binary",
            "grpc",
        ],
        Scheme::Http,
        "down.example.com",
        "/pkg.Service/Method",
    );
    assert_eq!((seen.status, seen.body.as_str()), (503, "no healthy upstream"));
    let seen = s.curl(
        &["--http2-prior-knowledge"],
        Scheme::Http,
        "down.example.com",
        "/",
    );
    assert_eq!((seen.status, seen.body.as_str()), (503, "no healthy upstream"));
    // Logged as Envoy logs it: the status the client got, and why.
    let lines = s.log_lines("/pkg.Service/Method HTTP/2\" 200 UH", 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    s.log_lines("/pkg.Service/Method HTTP/1.1\" 200 UH", 1);
}

/// A gRPC server (grpcio, generic handlers: bytes in, bytes out) for `test.Echo`: `Unary`
/// echoes, or for `fail` answers NOT_FOUND; both set a trailing `x-trailer`. `Bidi` echoes each
/// message as it comes.
const GRPC_SERVER: &str = r#"
import sys
from concurrent import futures
import grpc

def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "kept"),))
    if request == b"fail":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    return b"echo:" + request

def bidi(requests, context):
    for message in requests:
        yield b"echo:" + message

handler = grpc.method_handlers_generic_handler("test.Echo", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
print("ready", flush=True)
server.wait_for_termination()
"#;

/// A grpcio client through the gateway (h2c with prior knowledge; over TLS when argv[2] names
/// the CA): a unary call and its trailers,
/// a failing call's status, details and trailers, and a bidirectional call where each message
/// is sent only once the answer to the previous one came back (it cannot pass if either way is
/// held back until the other ends).
const GRPC_CLIENT: &str = r#"
import queue, sys
import grpc

target = "127.0.0.1:" + sys.argv[1]
if len(sys.argv) > 2:
    # Over TLS (ALPN h2), trusting the test CA in argv[2].
    with open(sys.argv[2], "rb") as ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
    channel = grpc.secure_channel(target, credentials,
                                  options=[("grpc.ssl_target_name_override", "grpc.example.com"),
                                           ("grpc.default_authority", "grpc.example.com")])
else:
    channel = grpc.insecure_channel(target, options=[("grpc.default_authority", "grpc.example.com")])
unary = channel.unary_unary("/test.Echo/Unary")
response, call = unary.with_call(b"hi", timeout=10)
assert response == b"echo:hi", response
assert dict(call.trailing_metadata()).get("x-trailer") == "kept", call.trailing_metadata()
try:
    unary(b"fail", timeout=10)
    raise SystemExit("the failing call succeeded")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
    assert e.details() == "no such thing", e.details()
    assert dict(e.trailing_metadata()).get("x-trailer") == "kept", e.trailing_metadata()

pending = queue.Queue()
pending.put(b"0")
def requests():
    while True:
        message = pending.get(timeout=10)
        if message is None:
            return
        yield message
got = []
for answer in channel.stream_stream("/test.Echo/Bidi")(requests(), timeout=10):
    got.append(answer)
    pending.put(None if len(got) == 3 else str(len(got)).encode())
assert got == [b"echo:0", b"echo:1", b"echo:2"], got
print("ok")
"#;

#[test]
fn grpc_over_http2_both_ways_keeps_trailers_and_streams_each_way_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let grpc_port = free_port();
    let server_log = dir.path().join("grpc_server.log");
    let script = dir.path().join("grpc_server.py");
    std::fs::write(&script, GRPC_SERVER).unwrap();
    let server = Proc {
        child: Command::new("python3")
            .arg(&script)
            .arg(grpc_port.to_string())
            .stdout(std::fs::File::create(&server_log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("grpc_server.err")).unwrap())
            .spawn()
            .expect("python3"),
        log: server_log,
    };
    wait_for("the gRPC server", Duration::from_secs(10), || {
        server.log_text().contains("ready").then_some(())
    });
    // The Service's port says h2c (kgateway's appProtocol): the cluster speaks HTTP/2. The same
    // sample backend, also over h2c, for a plain request.
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: grpc\n  namespace: {NS}\nspec:\n  ports:\n  - port: 80\n    \
         appProtocol: kubernetes.io/h2c\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: grpc-1\n  namespace: {NS}\n  labels:\n    \
         kubernetes.io/service-name: grpc\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {grpc_port}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: grpc\n  namespace: {NS}\nspec:\n  \
         parentRefs:\n  - name: gw\n  hostnames: [\"grpc.example.com\"]\n  rules:\n  - backendRefs:\n    - name: grpc\n      port: 80\n"
    );
    s.gw.apply(&yaml);
    let cluster = format!("cluster.kube_{NS}_grpc_80");
    wait_for("the gRPC route", Duration::from_secs(15), || {
        let seen = s.curl(
            &["--http2-prior-knowledge"],
            Scheme::Http,
            "grpc.example.com",
            "/",
        );
        // grpcio answers a plain GET itself (not 404 from the gateway: the route is in).
        (seen.status != 404 && seen.status != 0).then_some(())
    });

    let client = dir.path().join("grpc_client.py");
    std::fs::write(&client, GRPC_CLIENT).unwrap();
    // Plain (prior knowledge) on the HTTP port, TLS (ALPN h2) on the HTTPS one.
    let ca = s.ca.to_str().unwrap().to_string();
    for args in [vec![s.http_port.to_string()], vec![s.https_port.to_string(), ca]] {
        let out = Command::new("timeout")
            .args(["30", "python3"])
            .arg(&client)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success() && stdout(&out).contains("ok"),
            "{args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    // Over HTTP/2 upstream, on one connection, and logged.
    assert!(
        s.gw.stat(&format!("{cluster}.upstream_cx_http2_total"))
            .unwrap_or(0)
            >= 1
    );
    s.log_lines("\"POST /test.Echo/Unary HTTP/2\" 200", 4);
    s.log_lines("\"POST /test.Echo/Bidi HTTP/2\" 200", 2);
}

/// An HTTP/2 client on a raw socket: python h2 opens the connection and sends one GET for
/// argv[2] to 127.0.0.1:argv[1]; the server's frames are then read one by one (python h2
/// takes a GOAWAY as the end of everything, while a graceful one lets streams finish), PINGs
/// and SETTINGS acknowledged. Prints `sent`, then one line per event until the connection
/// ends, with the seconds since the request went: `status N`, `ended`, `goaway CODE LAST`,
/// `reset CODE`, `eof`. With argv[3], it resets its stream after that many seconds instead.
const H2_CLIENT: &str = r#"
import socket, struct, sys, time
import h2.config, h2.connection, hpack

sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.settimeout(20)
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
conn.initiate_connection()
conn.send_headers(1, [(":method", "GET"), (":path", sys.argv[2]), (":scheme", "http"),
                      (":authority", "www.example.com")], end_stream=True)
sock.sendall(conn.data_to_send())
start = time.monotonic()
print("sent", flush=True)
decoder = hpack.Decoder()
buf = b""
def say(*words):
    print("%.2f" % (time.monotonic() - start), *words, flush=True)
if len(sys.argv) > 3:
    # Reset the stream (CANCEL) after argv[3] seconds, keep the connection 2 s more, and go.
    time.sleep(float(sys.argv[3]))
    sock.sendall(b"\x00\x00\x04\x03\x00\x00\x00\x00\x01\x00\x00\x00\x08")
    say("reset-sent")
    time.sleep(2)
    sys.exit(0)
while True:
    data = sock.recv(65536)
    if not data:
        say("eof")
        break
    buf += data
    while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
        length = int.from_bytes(buf[:3], "big")
        kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        payload, buf = buf[9:9 + length], buf[9 + length:]
        if kind == 1:
            block = payload[5:] if flags & 0x20 else payload
            headers = dict(decoder.decode(block))
            say("status", headers[":status"])
        if kind in (0, 1) and stream == 1 and flags & 0x1:
            say("ended")
        elif kind == 3:
            say("reset", int.from_bytes(payload[:4], "big"))
        elif kind == 4 and not flags & 0x1:
            sock.sendall(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
        elif kind == 6 and not flags & 0x1:
            sock.sendall(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload)
        elif kind == 7:
            last, code = struct.unpack(">II", payload[:8])
            say("goaway", code, last & 0x7FFFFFFF)
"#;

/// Starts `H2_CLIENT` for `path` on `port`; returns once it sent its request.
fn h2_client(dir: &Path, port: u16, path: &str) -> std::process::Child {
    h2_client_with(dir, port, path, &[])
}

fn h2_client_with(dir: &Path, port: u16, path: &str, extra: &[&str]) -> std::process::Child {
    use std::io::Read;
    let script = dir.join("h2_client.py");
    std::fs::write(&script, H2_CLIENT).unwrap();
    let mut child = Command::new("timeout")
        .args(["30", "python3"])
        .arg(&script)
        .args([&port.to_string(), path])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Byte by byte: a buffered reader would take the lines after it too, and drop them.
    let mut first = String::new();
    let out = child.stdout.as_mut().unwrap();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        first.push(byte[0] as char);
    }
    assert_eq!(first.trim(), "sent");
    child
}

/// The client's event lines once it ended: (seconds, event).
fn events(child: std::process::Child) -> Vec<(f64, String)> {
    let out = child.wait_with_output().unwrap();
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(at, event)| (at.parse().unwrap(), event.to_string()))
        .collect()
}

fn at(events: &[(f64, String)], prefix: &str) -> f64 {
    events
        .iter()
        .find(|(_, e)| e.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {events:?}"))
        .0
}

#[test]
fn sigterm_sends_goaway_and_the_stream_in_flight_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = GatewayBuilder::quickstart(dir.path())
        .arg("--drain-time")
        .arg("20s")
        .start();
    let client = h2_client(dir.path(), gw.port, "/delay/2");
    wait_for("the slow stream at the backend", Duration::from_secs(5), || {
        (gw.stat("cluster.kube_httpbin_httpbin_8000.upstream_rq_active") == Some(1)).then_some(())
    });
    let kill = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let events = events(client);
    // GOAWAY (NO_ERROR) at once, the stream's answer after its 2 seconds, then the close.
    let goaway = at(&events, "goaway 0");
    assert!(goaway < 1.5, "{events:?}");
    assert!(events.iter().any(|(_, e)| e == "status 200"), "{events:?}");
    let ended = at(&events, "ended");
    assert!(goaway < ended && ended >= 1.9, "{events:?}");
    assert!(at(&events, "eof") >= ended, "{events:?}");
    let status = wait_for("kgw to exit", Duration::from_secs(15), || {
        gw.proc.child.try_wait().unwrap()
    });
    assert!(
        status.success(),
        "kgw exited with {status}:\n{}",
        gw.proc.log_text()
    );
}

#[test]
fn an_idle_http2_connection_gets_goaway_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path())
        .arg("--idle-timeout")
        .arg("1s")
        .start();
    let client = h2_client(dir.path(), gw.port, "/get");
    let events = events(client);
    let ended = at(&events, "ended");
    let goaway = at(&events, "goaway 0");
    // Counted from the end of the last stream, not from the connection's start.
    assert!(goaway - ended >= 0.9 && goaway - ended < 3.0, "{events:?}");
    assert!(at(&events, "eof") >= goaway, "{events:?}");
    assert_eq!(gw.stat("http.http.downstream_cx_http2_active"), Some(0));
}

#[test]
fn a_removed_listener_sends_goaway_and_its_stream_in_flight_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let client = h2_client(dir.path(), s.http_port, "/delay/2");
    wait_for("the slow stream at the backend", Duration::from_secs(5), || {
        (s.gw
            .stat(&format!("cluster.kube_{NS}_echo_80.upstream_rq_active"))
            == Some(1))
        .then_some(())
    });
    // The Gateway without its HTTP listener: the port closes.
    s.gw.apply(&gateway(None, s.https_port));
    let events = events(client);
    let goaway = at(&events, "goaway 0");
    assert!(goaway < 1.5, "{events:?}");
    assert!(events.iter().any(|(_, e)| e == "status 200"), "{events:?}");
    let ended = at(&events, "ended");
    assert!(goaway < ended && ended >= 1.9, "{events:?}");
    assert!(at(&events, "eof") >= ended, "{events:?}");
    // The HTTPS listener goes on.
    let seen = s.curl(&["--http2"], Scheme::Https, "www.example.com", "/get");
    assert_eq!((seen.version.as_str(), seen.status), ("2", 200));
}

#[test]
fn an_http2_stream_past_the_route_timeout_gets_envoys_504_or_grpc_status_14() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path())
        .arg("--route-timeout")
        .arg("1s")
        .start();
    let url = format!("http://127.0.0.1:{}/delay/3", gw.port);
    let run = |extra: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-i",
                "--max-time",
                "10",
                "--http2-prior-knowledge",
                "-H",
                "host: www.example.com",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
    };
    let started = std::time::Instant::now();
    let plain = run(&[]);
    assert!(plain.starts_with("HTTP/2 504"), "{plain}");
    assert!(plain.ends_with("upstream request timeout"), "{plain}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let grpc = run(&["-H", "content-type: application/grpc", "--data-binary", "grpc"]);
    assert!(grpc.starts_with("HTTP/2 200"), "{grpc}");
    assert!(grpc.contains("grpc-status: 14\n"), "{grpc}");
    assert!(
        grpc.contains("grpc-message: upstream request timeout\n"),
        "{grpc}"
    );
    assert_eq!(
        gw.stat("cluster.kube_httpbin_httpbin_8000.upstream_rq_timeout"),
        Some(2)
    );
}

#[test]
fn a_stream_the_client_resets_ends_its_upstream_request_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let cluster = "cluster.kube_httpbin_httpbin_8000";
    let started = std::time::Instant::now();
    // A 3 s request, reset by the client after 0.5 s.
    let client = h2_client_with(dir.path(), gw.port, "/delay/3", &["0.5"]);
    wait_for("the stream at the backend", Duration::from_secs(5), || {
        (gw.stat(&format!("{cluster}.upstream_rq_active")) == Some(1)).then_some(())
    });
    wait_for("the upstream request to end", Duration::from_secs(5), || {
        (gw.stat(&format!("{cluster}.upstream_rq_active")) == Some(0)).then_some(())
    });
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // Its connection, mid-request, is closed rather than pooled.
    assert_eq!(
        gw.stat(&format!("{cluster}.upstream_cx_destroy_local_with_active_rq")),
        Some(1)
    );
    let events = events(client);
    assert!(events.iter().any(|(_, e)| e == "reset-sent"), "{events:?}");
}
