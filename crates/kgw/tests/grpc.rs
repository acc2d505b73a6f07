//! gRPC through the gateway, end to end: a real grpcio server behind a Service with
//! `appProtocol: kubernetes.io/h2c`, a real grpcio client over HTTP/2 with prior knowledge to the
//! gateway's plain listener. Unary and streaming calls, initial and trailing metadata, status
//! codes; local replies as gRPC statuses; GRPCRoute matching.

mod common;

use std::path::Path;
use std::time::Duration;

use common::grpc::{GrpcServer, grpc_client};
use common::*;

const CLUSTER: &str = "kube_default_echo_9000";
const AUTHORITY: &str = "grpc.example.com";

/// The peer's server on a free port of 127.0.0.1, every service SERVING.
fn grpc_server() -> (GrpcServer, u16) {
    let port = free_port();
    let server = GrpcServer::start(&format!("127.0.0.1:{port}"), "SERVING", &[]);
    (server, port)
}

/// Runs the peer's client `mode` against the gateway; its JSON output.
fn peer(gw: &Gateway, mode: &str, args: &[&str]) -> serde_json::Value {
    let target = format!("127.0.0.1:{}", gw.port);
    let out = grpc_client(mode, &[&[target.as_str(), AUTHORITY], args].concat());
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
    let (_server, backend) = grpc_server();
    let gw = start(dir.path(), backend, "");

    let results = peer(&gw, "client", &[]);
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
    let (server, backend) = grpc_server();
    let gw = start(dir.path(), backend, "");

    // A method no GRPCRoute rule matches: no route (404), which gRPC calls UNIMPLEMENTED.
    let unmatched = peer(&gw, "call", &["Nope", "x"]);
    assert_eq!(unmatched["code"], "UNIMPLEMENTED", "{unmatched}");

    // The backend gone: Envoy's 503 is UNAVAILABLE for a gRPC client, with Envoy's text.
    drop(server);
    let down = peer(&gw, "call", &["Say", "x"]);
    assert_eq!(down["code"], "UNAVAILABLE", "{down}");
    assert!(
        down["details"]
            .as_str()
            .unwrap()
            .starts_with("upstream connect error or disconnect/reset before headers"),
        "{down}"
    );
}
