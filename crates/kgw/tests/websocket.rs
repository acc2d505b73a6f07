//! WebSocket through the gateway (HTTP/1.1 `Upgrade`): a python `websockets` echo server as the
//! backend and a `websockets` client through the real kgw, over HTTP and HTTPS listeners.
//! Needs `pip install websockets`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pki::{Pki, secret_yaml};
use common::*;

const NS: &str = "ws";
const CLUSTER: &str = "kube_ws_echo_80";

/// The backend: echoes every message; `/close-after-one` echoes one and then closes with 1001;
/// `/drop-after-one` echoes one and then drops the TCP connection without a close frame;
/// `/plain` answers a plain GET with 200 "plain".
const SERVER: &str = r#"
import asyncio, sys
from http import HTTPStatus
from websockets.asyncio.server import serve

async def handler(ws):
    path = ws.request.path
    if path == "/close-after-one":
        await ws.send(await ws.recv())
        await ws.close(1001, "going away")
        return
    if path == "/drop-after-one":
        await ws.send(await ws.recv())
        await asyncio.sleep(0.1)
        ws.transport.close()
        return
    async for message in ws:
        await ws.send(message)

def plain(connection, request):
    if request.path == "/plain":
        return connection.respond(HTTPStatus.OK, "plain\n")
    return None

async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), max_size=None,
                     process_request=plain) as server:
        print("ready", flush=True)
        await server.serve_forever()

asyncio.run(main())
"#;

/// The client: runs one scenario against URL and prints what it saw, one line.
const CLIENT: &str = r#"
import os, ssl, sys, time
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed

url, scenario = sys.argv[1], sys.argv[2]
context = None
if url.startswith("wss:"):
    context = ssl.create_default_context(cafile=sys.argv[3])
kwargs = dict(open_timeout=5, close_timeout=5, max_size=None)
if context is not None:
    kwargs["ssl"] = context
    kwargs["server_hostname"] = "ws.example.com"
with connect(url, **kwargs) as ws:
    if scenario == "echo":
        ws.send("hello, text")
        assert ws.recv(timeout=5) == "hello, text"
        binary = bytes(range(256)) * 4
        ws.send(binary)
        assert ws.recv(timeout=5) == binary
        big = os.urandom(1 << 20)
        ws.send(big)
        assert ws.recv(timeout=10) == big
        print("echo ok", flush=True)
    elif scenario == "backend-closes":
        ws.send("one")
        assert ws.recv(timeout=5) == "one"
        started = time.monotonic()
        try:
            ws.recv(timeout=10)
            print("no close", flush=True)
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
            print(f"closed code={code} after={time.monotonic() - started:.2f}", flush=True)
    elif scenario == "chatty-then-idle":
        started = time.monotonic()
        for i in range(6):
            ws.send(f"m{i}")
            assert ws.recv(timeout=5) == f"m{i}"
            time.sleep(0.5)
        chatted = time.monotonic() - started
        started = time.monotonic()
        try:
            ws.recv(timeout=10)
            print("no close", flush=True)
        except ConnectionClosed:
            print(f"chatted={chatted:.2f} closed after={time.monotonic() - started:.2f}", flush=True)
"#;

fn python(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args);
    cmd
}

/// The echo server on 127.0.0.1:`port`, once it listens.
fn echo_server(dir: &Path, port: u16) -> Proc {
    let log = dir.join("echo-server.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = python(SERVER, &[&port.to_string()])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("python3");
    let proc = Proc { child, log };
    wait_for("the websockets echo server", Duration::from_secs(20), || {
        assert!(
            !proc.log_text().contains("Error"),
            "the echo server failed (pip install websockets?):\n{}",
            proc.log_text()
        );
        proc.log_text().contains("ready").then_some(())
    });
    proc
}

/// Runs a client scenario (bounded: it must end within 30 s); its one line of output.
fn client(url: &str, scenario: &str, ca: Option<&Path>) -> String {
    let mut args = vec![url, scenario];
    let ca = ca.map(|p| p.to_string_lossy().to_string());
    if let Some(ca) = &ca {
        args.push(ca);
    }
    let mut child = python(CLIENT, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let started = Instant::now();
    let status = wait_for("the websocket client to end", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        status.success(),
        "client {scenario} failed after {:?}: {out}{err}",
        started.elapsed()
    );
    out.trim().to_string()
}

/// Gateway `gw` in NS: an HTTP listener on `http_port`, and an HTTPS one on `https_port` with
/// Secret `cert` when given; every request to Service `echo` (127.0.0.1:`backend`).
fn gateway(http_port: u16, https_port: Option<u16>, backend: u16) -> String {
    let mut listeners = format!("  - name: http\n    protocol: HTTP\n    port: {http_port}\n");
    if let Some(port) = https_port {
        listeners += &format!(
            "  - name: https\n    protocol: HTTPS\n    port: {port}\n    tls:\n      mode: Terminate\n      \
             certificateRefs:\n      - kind: Secret\n        group: \"\"\n        name: cert\n"
        );
    }
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {NS}\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n{listeners}---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: {NS}\nspec:\n  ports:\n  - port: 80\n    \
         appProtocol: kubernetes.io/ws\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-1\n  namespace: {NS}\n  labels:\n    \
         kubernetes.io/service-name: echo\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {backend}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: echo\n  namespace: {NS}\nspec:\n  \
         parentRefs:\n  - name: gw\n  rules:\n  - backendRefs:\n    - name: echo\n      port: 80\n"
    )
}

/// A stat, 0 when absent.
fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.stat(name).unwrap_or(0)
}

/// Waits for a stat to reach `value`.
fn stat_becomes(gw: &Gateway, name: &str, value: u64) {
    wait_for(&format!("{name} = {value}"), Duration::from_secs(10), || {
        (stat(gw, name) == value).then_some(())
    });
}

/// One raw HTTP/1.1 request on a new connection; everything the gateway sends until it closes.
fn raw(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the gateway closes the connection");
    String::from_utf8_lossy(&out).to_string()
}

fn start(dir: &Path, https: bool) -> (Gateway, Proc, u16, Option<u16>) {
    start_with(dir, https, &[])
}

fn start_with(dir: &Path, https: bool, args: &[&str]) -> (Gateway, Proc, u16, Option<u16>) {
    let backend = free_port();
    let server = echo_server(dir, backend);
    let port = free_port();
    let https_port = https.then(free_port);
    let mut builder = GatewayBuilder::run(dir, port);
    for a in args {
        builder = builder.arg(*a);
    }
    (builder.start(), server, backend, https_port)
}

#[test]
fn a_websocket_echoes_text_binary_and_a_mebibyte_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _server, backend, _) = start(dir.path(), false);
    gw.apply(&gateway(gw.port, None, backend));
    let url = format!("ws://127.0.0.1:{}/echo", gw.port);
    assert_eq!(client(&url, "echo", None), "echo ok");
    assert_eq!(client(&url, "echo", None), "echo ok");

    // Counted as Envoy counts upgrades; none left open once the clients closed.
    assert_eq!(stat(&gw, "http.http.downstream_cx_upgrades_total"), 2);
    stat_becomes(&gw, "http.http.downstream_cx_upgrades_active", 0);
    // An upgraded upstream connection is never pooled: each tunnel had its own, and all closed.
    stat_becomes(&gw, &format!("cluster.{CLUSTER}.upstream_cx_active"), 0);
    assert_eq!(stat(&gw, &format!("cluster.{CLUSTER}.upstream_cx_total")), 2);

    // A plain request on the same port is served as before (on a new upstream connection).
    let (status, body) = gw.curl("ws.example.com", "/plain");
    assert_eq!((status, body.as_str()), (200, "plain\n"));
    assert_eq!(stat(&gw, &format!("cluster.{CLUSTER}.upstream_cx_total")), 3);
    assert_eq!(stat(&gw, "http.http.downstream_cx_upgrades_total"), 2);
}

#[test]
fn a_backend_that_closes_mid_stream_ends_the_clients_connection_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _server, backend, _) = start(dir.path(), false);
    gw.apply(&gateway(gw.port, None, backend));

    // A close handshake from the backend reaches the client, its code intact.
    let url = format!("ws://127.0.0.1:{}/close-after-one", gw.port);
    let seen = client(&url, "backend-closes", None);
    assert!(seen.starts_with("closed code=1001"), "{seen}");

    // A backend that drops the connection without a close frame: the client sees its
    // connection end at once (no close frame, no hang until a timeout).
    let url = format!("ws://127.0.0.1:{}/drop-after-one", gw.port);
    let seen = client(&url, "backend-closes", None);
    let after: f64 = seen
        .strip_prefix("closed code=None after=")
        .unwrap_or_else(|| panic!("{seen}"))
        .parse()
        .unwrap();
    assert!(after < 2.0, "the client saw the close {after} s later");

    stat_becomes(&gw, "http.http.downstream_cx_upgrades_active", 0);
    stat_becomes(&gw, &format!("cluster.{CLUSTER}.upstream_cx_active"), 0);
    stat_becomes(&gw, "http.http.downstream_cx_active", 0);
}

#[test]
fn an_upgrade_to_another_protocol_is_refused_as_envoy_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _server, backend, _) = start(dir.path(), false);
    gw.apply(&gateway(gw.port, None, backend));
    let answer = raw(
        gw.port,
        "GET /echo HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert_eq!(stat(&gw, "http.http.downstream_rq_ws_on_non_ws_route"), 1);
    assert_eq!(stat(&gw, "http.http.downstream_cx_upgrades_total"), 0);
    // Nothing went upstream.
    assert_eq!(stat(&gw, &format!("cluster.{CLUSTER}.upstream_rq_total")), 0);

    // A WebSocket upgrade the backend does not accept is an ordinary response; the
    // connection then closes (what the client sends next may be WebSocket frames).
    let answer = raw(
        gw.port,
        "GET /plain HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("plain\n"), "{answer}");
}

#[test]
fn a_websocket_upgrade_is_refused_on_a_route_whose_backend_does_not_say_kubernetes_io_ws() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _server, backend, _) = start(dir.path(), false);
    // As kgateway renders it: no upgrade on the listener, none on a route to a plain backend.
    let plain = gateway(gw.port, None, backend).replace("    appProtocol: kubernetes.io/ws\n", "");
    gw.apply(&plain);
    let route = wait_for("the route in the dump", Duration::from_secs(5), || {
        let dump = gw.dump("GET", "");
        let routes =
            dump.pointer("/configs/2/dynamic_route_configs/0/route_config/virtual_hosts/0/routes/0")?;
        Some(routes.clone())
    });
    assert!(route["route"].get("upgrade_configs").is_none(), "{route}");
    let answer = raw(
        gw.port,
        "GET /echo HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert_eq!(stat(&gw, "http.http.downstream_rq_ws_on_non_ws_route"), 1);
    assert_eq!(stat(&gw, &format!("cluster.{CLUSTER}.upstream_rq_total")), 0);

    // The backend says kubernetes.io/ws: the route enables WebSocket, in the dump and in the
    // traffic.
    gw.apply(&gateway(gw.port, None, backend));
    wait_for("the route's upgrade_configs", Duration::from_secs(5), || {
        let dump = gw.dump("GET", "");
        let route =
            dump.pointer("/configs/2/dynamic_route_configs/0/route_config/virtual_hosts/0/routes/0/route")?;
        (route["upgrade_configs"] == serde_json::json!([{"upgrade_type": "websocket"}])).then_some(())
    });
    let url = format!("ws://127.0.0.1:{}/echo", gw.port);
    assert_eq!(client(&url, "echo", None), "echo ok");
}

#[test]
fn the_routes_response_header_modifier_edits_the_101() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _server, backend, _) = start(dir.path(), false);
    let filtered = gateway(gw.port, None, backend).replace(
        "  rules:\n  - backendRefs:",
        "  rules:\n  - filters:\n    - type: ResponseHeaderModifier\n      responseHeaderModifier:\n        \
         set: [{name: X-Header-Set, value: set}]\n        add: [{name: X-Header-Add, value: added}]\n    \
         backendRefs:",
    );
    gw.apply(&filtered);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /echo HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    // The 101 head only: the tunnel stays open after it.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("the gateway answers with a head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(head.contains("\r\nx-header-set: set\r\n"), "{head}");
    assert!(head.contains("\r\nx-header-add: added\r\n"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
}

#[test]
fn a_websocket_goes_through_the_https_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let pair = pki.leaf("ws", &["ws.example.com"]);
    let (gw, _server, backend, https_port) = start(dir.path(), true);
    let https_port = https_port.unwrap();
    gw.apply(&format!(
        "{}---\n{}",
        secret_yaml(NS, "cert", &pair, None),
        gateway(gw.port, Some(https_port), backend)
    ));
    wait_for("the HTTPS listener", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", https_port)).ok()
    });
    let url = format!("wss://127.0.0.1:{https_port}/echo");
    assert_eq!(client(&url, "echo", Some(&pki.ca.cert)), "echo ok");
    let url = format!("wss://127.0.0.1:{https_port}/close-after-one");
    let seen = client(&url, "backend-closes", Some(&pki.ca.cert));
    assert!(seen.starts_with("closed code=1001"), "{seen}");
    stat_becomes(&gw, "http.http.downstream_cx_upgrades_active", 0);
}

#[test]
fn a_tunnel_outlives_the_route_timeout_and_ends_at_the_stream_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--route-timeout", "1s", "--stream-idle-timeout", "2s"];
    let (gw, _server, backend, _) = start_with(dir.path(), false, &args);
    gw.apply(&gateway(gw.port, None, backend));
    let url = format!("ws://127.0.0.1:{}/echo", gw.port);
    // Messages for 3 s (past the route timeout, and past the idle timeout in all), then none.
    let seen = client(&url, "chatty-then-idle", None);
    let idle: f64 = seen
        .split_once("closed after=")
        .unwrap_or_else(|| panic!("{seen}"))
        .1
        .parse()
        .unwrap();
    assert!(
        (1.5..3.5).contains(&idle),
        "closed {idle} s after the last message: {seen}"
    );
    assert_eq!(stat(&gw, "http.http.downstream_rq_idle_timeout"), 1);
    stat_becomes(&gw, "http.http.downstream_cx_upgrades_active", 0);
}
