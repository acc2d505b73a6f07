//! gRPC through the gateway, end to end: a real grpcio server behind a Service with
//! `appProtocol: kubernetes.io/h2c`, a real grpcio client over HTTP/2 with prior knowledge to the
//! gateway's plain listener. Unary and streaming calls, initial and trailing metadata, status
//! codes; local replies as gRPC statuses; GRPCRoute matching.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/grpc_peer.py");
const CLUSTER: &str = "kube_default_echo_9000";
const AUTHORITY: &str = "grpc.example.com";

/// The grpcio server, killed when dropped.
struct GrpcServer {
    child: Child,
    port: u16,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn grpc_server(health: &str) -> GrpcServer {
    let port = free_port();
    let child = Command::new("python3")
        .args([PEER, "server", &port.to_string(), health])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 with grpcio and grpcio-health-checking");
    wait_for("the gRPC server", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    GrpcServer { child, port }
}

/// Runs the peer script in `mode` against the gateway; its JSON output.
fn peer(gw: &Gateway, args: &[&str]) -> serde_json::Value {
    let target = format!("127.0.0.1:{}", gw.port);
    let out = Command::new("python3")
        .arg(PEER)
        .arg(args[0])
        .arg(&target)
        .arg(AUTHORITY)
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// Gateway, Service `echo` (h2c, port 9000) on the gRPC server, and `route`.
fn setup(port: u16, backend: u16, route: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
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
  name: echo
spec:
  ports:
  - name: grpc
    port: 9000
    appProtocol: kubernetes.io/h2c
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  labels:
    kubernetes.io/service-name: echo
addressType: IPv4
endpoints:
- addresses: ["127.0.0.1"]
ports:
- name: grpc
  port: {backend}
---
{route}"#
    )
}

const GRPC_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: echo
spec:
  parentRefs:
  - name: gw
  hostnames: ["grpc.example.com"]
  rules:
  - matches:
    - method:
        service: kgw.test.Echo
    - method:
        service: grpc.health.v1.Health
        method: Check
    backendRefs:
    - name: echo
      port: 9000
"#;

fn start(dir: &Path, backend: u16, extra: &str) -> Gateway {
    let port = free_port();
    let gw = GatewayBuilder::run(dir, port).start();
    let out = gw.kgw(
        &["apply", "-f", "-"],
        &format!("{}{extra}", setup(port, backend, GRPC_ROUTE)),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the GRPCRoute accepted", Duration::from_secs(5), || {
        let out = gw.kgw(&["get", "grpcroute", "echo", "-o", "json"], "");
        let route: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let accepted = route["status"]["parents"][0]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True");
        accepted.then_some(())
    });
    gw
}

#[test]
fn unary_and_streaming_calls_keep_their_messages_metadata_trailers_and_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = grpc_server("SERVING");
    let gw = start(dir.path(), server.port, "");

    let results = peer(&gw, &["client"]);
    assert_eq!(
        results,
        serde_json::json!({
            "unary": {"reply": "hello", "code": "OK", "initial": "yes", "trailer": "kept-5"},
            "denied": {"code": "PERMISSION_DENIED", "details": "denied by test"},
            "server_streaming": ["0", "1", "2", "3", "4"],
            "client_streaming": "a,b,c",
            "bidi": ["X", "Y"],
            "large_unary_bytes": 1048576
        })
    );
    // HTTP/2 on both sides: the client's connection and the upstream's.
    assert!(any_downstream_http2(&gw), "the client's connection speaks HTTP/2");
    assert!(
        gw.stat(&format!("cluster.{CLUSTER}.upstream_cx_http2_total"))
            .unwrap_or(0)
            >= 1,
        "the upstream connection speaks HTTP/2"
    );
}

/// Whether /stats counts any downstream HTTP/2 connection (whatever the counter's scope).
fn any_downstream_http2(gw: &Gateway) -> bool {
    let (_, stats) = http(gw.admin, "GET", "/stats", "");
    stats
        .lines()
        .filter(|l| l.contains("downstream_cx_http2_total"))
        .any(|l| !l.trim_end().ends_with(": 0"))
}

#[test]
fn local_replies_reach_a_grpc_client_as_grpc_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = grpc_server("SERVING");
    let gw = start(dir.path(), server.port, "");

    // A method no GRPCRoute rule matches: no route (404), which gRPC calls UNIMPLEMENTED.
    let unmatched = peer(&gw, &["call", "Nope", "x"]);
    assert_eq!(unmatched["code"], "UNIMPLEMENTED", "{unmatched}");

    // The backend gone: Envoy's 503 is UNAVAILABLE for a gRPC client, with Envoy's text.
    drop(server);
    let down = peer(&gw, &["call", "Say", "x"]);
    assert_eq!(down["code"], "UNAVAILABLE", "{down}");
    assert!(
        down["details"]
            .as_str()
            .unwrap()
            .starts_with("upstream connect error or disconnect/reset before headers"),
        "{down}"
    );
}
