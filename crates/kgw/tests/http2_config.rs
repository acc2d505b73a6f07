//! HTTP/2 and gRPC configuration through `kgw apply`, as a user sees it: `http2ProtocolOptions`
//! on an h2c Service reaches `/config_dump` (quantities in bytes, keepalive durations) and the
//! traffic goes upstream in HTTP/2; the same options on a Service without an HTTP/2
//! `appProtocol` are left out, as kgateway leaves them; bad values are refused with the
//! resource, the field and the fix while what was serving keeps serving; and a GRPCRoute
//! routes a real gRPC client's calls by service, method and header.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::grpc::{GrpcServer, grpc_client};
use common::*;

const H2C_CLUSTER: &str = "kube_httpbin_httpbin_8000";
const PLAIN_CLUSTER: &str = "kube_httpbin_plain_8000";
const OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The quickstart's Service with its port speaking h2c (the sample backend does), the issue's
/// policy with every http2ProtocolOptions field, and a Service without appProtocol that gets
/// the same options.
fn h2c_manifest(backend_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: httpbin
spec:
  ports:
  - name: http
    port: 8000
    targetPort: {backend_port}
    appProtocol: kubernetes.io/h2c
---
kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-http2
  namespace: httpbin
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
    - name: plain
      group: ""
      kind: Service
  http2ProtocolOptions:
    maxConcurrentStreams: 100
    initialStreamWindowSize: 64Ki
    initialConnectionWindowSize: 1Mi
    overrideStreamErrorOnInvalidHttpMessage: true
    connectionKeepalive:
      interval: 30s
      timeout: 5s
      connectionIdleInterval: 60s
---
apiVersion: v1
kind: Service
metadata:
  name: plain
  namespace: httpbin
spec:
  ports:
  - name: http
    port: 8000
    targetPort: {backend_port}
"#
    )
}

fn protocol_options(gw: &Gateway, cluster: &str) -> serde_json::Value {
    gw.cluster(cluster)
        .map(|c| c["typed_extension_protocol_options"].clone())
        .unwrap_or_default()
}

#[test]
fn http2_options_reach_the_dump_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let out = gw.kgw(&["apply", "-f", "-"], &h2c_manifest(gw.backend_port));
    assert!(out.status.success(), "{}", stderr(&out));

    let options = wait_for("the HTTP/2 options in the dump", Duration::from_secs(2), || {
        let o = protocol_options(&gw, H2C_CLUSTER);
        o.pointer(&format!(
            "/{OPTIONS}/explicit_http_config/http2_protocol_options/connection_keepalive"
        ))
        .is_some()
        .then_some(o)
    });
    assert_eq!(
        options,
        serde_json::json!({OPTIONS: {
            "@type": format!("type.googleapis.com/{OPTIONS}"),
            "explicit_http_config": {"http2_protocol_options": {
                "initial_connection_window_size": 1_048_576,
                "initial_stream_window_size": 65_536,
                "max_concurrent_streams": 100,
                "override_stream_error_on_invalid_http_message": true,
                "connection_keepalive": {"interval": "30s", "timeout": "5s", "connection_idle_interval": "60s"}}}}})
    );
    // kgateway applies HTTP/2 options only to a cluster that speaks HTTP/2.
    assert!(gw.cluster(PLAIN_CLUSTER).is_some());
    assert_eq!(protocol_options(&gw, PLAIN_CLUSTER), serde_json::Value::Null);
    // The policy is accepted on both targets.
    let status = gw.kgw(
        &[
            "get",
            "backendconfigpolicy",
            "httpbin-http2",
            "-n",
            "httpbin",
            "-o",
            "json",
        ],
        "",
    );
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let ancestors = status["status"]["ancestors"].as_array().unwrap();
    assert_eq!(ancestors.len(), 2, "{status}");
    for a in ancestors {
        assert_eq!(a["conditions"][0]["reason"], "Valid", "{a}");
    }
    // The traffic goes upstream in HTTP/2.
    let (status, body) = gw.curl("www.example.com", "/get");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        gw.stat(&format!("cluster.{H2C_CLUSTER}.upstream_cx_http2_total")),
        Some(1)
    );

    let before = gw.dump("GET", "?include_eds");
    let policy = |h2: &str| {
        format!(
            "kind: BackendConfigPolicy\napiVersion: gateway.kgateway.dev/v1alpha1\nmetadata:\n  name: httpbin-http2\n  \
             namespace: httpbin\nspec:\n  targetRefs:\n  - {{name: httpbin, group: \"\", kind: Service}}\n  \
             http2ProtocolOptions:\n{}",
            h2.lines().map(|l| format!("    {l}\n")).collect::<String>()
        )
    };
    // (document, what it names, the field, words of the fix)
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            policy("connectionKeepalive:\n  interval: 30s"),
            "BackendConfigPolicy \"httpbin/httpbin-http2\" is invalid",
            "spec.http2ProtocolOptions.connectionKeepalive",
            "timeout is required",
        ),
        (
            policy("connectionKeepalive:\n  timeout: 500us"),
            "BackendConfigPolicy \"httpbin/httpbin-http2\" is invalid",
            "spec.http2ProtocolOptions.connectionKeepalive.timeout",
            "timeout must be at least 1ms",
        ),
        (
            policy("initialStreamWindowSize: 1Ki"),
            "BackendConfigPolicy \"httpbin/httpbin-http2\" is invalid",
            "spec.http2ProtocolOptions.initialStreamWindowSize",
            "must be between 65535 and 2147483647 bytes",
        ),
        (
            policy("initialConnectionWindowSize: 65534"),
            "BackendConfigPolicy \"httpbin/httpbin-http2\" is invalid",
            "spec.http2ProtocolOptions.initialConnectionWindowSize",
            "must be between 65535 and 2147483647 bytes",
        ),
        (
            policy("maxConcurrentStreams: 0"),
            "BackendConfigPolicy \"httpbin/httpbin-http2\" is invalid",
            "spec.http2ProtocolOptions.maxConcurrentStreams",
            "should be greater than or equal to 1",
        ),
        (
            "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: Backend\nmetadata: {name: grpc, namespace: httpbin}\n\
             spec:\n  static:\n    hosts: [{host: 127.0.0.1, port: 9000}]\n    appProtocol: h2c\n"
                .to_string(),
            "Backend \"httpbin/grpc\" is invalid",
            "spec.static.appProtocol",
            "supported values: \"http2\", \"grpc\", \"grpc-web\", \"kubernetes.io/h2c\", \"kubernetes.io/ws\"",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: greeter, namespace: httpbin}\n\
             spec:\n  rules:\n  - matches:\n    - method: {type: RegularExpression, service: \"hello.*\"}\n"
                .to_string(),
            "GRPCRoute \"httpbin/greeter\"",
            "spec.rules[0].matches[0].method.type",
            "use Exact",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: greeter, namespace: httpbin}\n\
             spec:\n  rules:\n  - matches:\n    - method: {type: Exact}\n"
                .to_string(),
            "GRPCRoute \"httpbin/greeter\" is invalid",
            "spec.rules[0].matches[0].method",
            "One or both of 'service' or 'method' must be specified",
        ),
    ];
    for (doc, names, field, words) in &cases {
        let out = gw.kgw(&["apply", "-f", "-"], doc);
        let err = stderr(&out);
        assert!(!out.status.success(), "accepted but should not be:\n{doc}");
        assert!(err.contains(names), "names the resource ({names}): {err}");
        assert!(err.contains(field), "names the field {field}: {err}");
        assert!(err.contains(words), "says {words:?}: {err}");
    }
    // Nothing of that changed what is served, nor how.
    assert_eq!(gw.dump("GET", "?include_eds")["configs"], before["configs"]);
    let (status, _) = gw.curl("www.example.com", "/get");
    assert_eq!(status, 200);
    assert_eq!(
        gw.stat(&format!("cluster.{H2C_CLUSTER}.upstream_cx_http2_total")),
        Some(1),
        "the same HTTP/2 connection"
    );
}

fn grpc_service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  ports:\n  - name: grpc\n    \
         port: 50051\n    appProtocol: kubernetes.io/h2c\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: apps\n  labels:\n    \
         kubernetes.io/service-name: {name}\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- name: grpc\n  \
         port: {port}\n---\n"
    )
}

const GRPC_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: greeter
  namespace: apps
spec:
  parentRefs:
  - name: gw
  hostnames:
  - grpc.example.com
  rules:
  - matches:
    - method:
        service: helloworld.Greeter
        method: SayHello
      headers:
      - name: x-tenant
        value: b
    backendRefs:
    - name: b
      port: 50051
  - matches:
    - method:
        service: helloworld.Greeter
    backendRefs:
    - name: a
      port: 50051
  - matches:
    - method:
        method: Check
    backendRefs:
    - name: b
      port: 50051
"#;

#[test]
fn a_grpc_route_routes_calls_by_service_method_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let (a_port, b_port) = (free_port(), free_port());
    let _a = GrpcServer::start(&format!("127.0.0.1:{a_port}"), "SERVING", &["--name", "a"]);
    let _b = GrpcServer::start(&format!("127.0.0.1:{b_port}"), "SERVING", &["--name", "b"]);
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: apps\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: {port}\n---\n"
    );
    let manifest = gateway + &grpc_service("a", a_port) + &grpc_service("b", b_port) + GRPC_ROUTE;
    let out = gw.kgw(&["apply", "-f", "-"], &manifest);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("grpcroutes.gateway.networking.k8s.io/greeter created"),
        "{}",
        stdout(&out)
    );
    wait_for("the listener", Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });

    let target = format!("127.0.0.1:{port}");
    let out = grpc_client(
        "calls",
        &[
            &target,
            "grpc.example.com",
            "/helloworld.Greeter/SayHello x-tenant=b",
            "/helloworld.Greeter/SayHello",
            "/helloworld.Greeter/SayGoodbye",
            // Any service's Check (not grpc.health.v1.Health's: the peer serves that one).
            "/pkg.Health/Check",
            "/other.Service/Do",
        ],
    );
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        [
            "b /helloworld.Greeter/SayHello",
            "a /helloworld.Greeter/SayHello",
            "a /helloworld.Greeter/SayGoodbye",
            "b /pkg.Health/Check",
            // No route: Envoy's 404, which a gRPC client reads as UNIMPLEMENTED.
            "UNIMPLEMENTED",
        ],
        "{}",
        stderr(&out)
    );

    // The route's status, and the listener counting it.
    let out = gw.kgw(&["get", "grpcroute", "greeter", "-n", "apps", "-o", "json"], "");
    let route: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let conditions = &route["status"]["parents"][0]["conditions"];
    assert_eq!(conditions[0]["reason"], "Accepted", "{route}");
    assert_eq!(conditions[1]["reason"], "ResolvedRefs", "{route}");
    let out = gw.kgw(&["get", "gateway", "gw", "-n", "apps", "-o", "json"], "");
    let gateway: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        gateway["status"]["listeners"][0]["attachedRoutes"], 1,
        "{gateway}"
    );
    let out = gw.kgw(&["get", "grpcroutes", "-n", "apps"], "");
    assert!(
        stdout(&out).contains("greeter") && stdout(&out).contains("[\"grpc.example.com\"]"),
        "{}",
        stdout(&out)
    );
}
