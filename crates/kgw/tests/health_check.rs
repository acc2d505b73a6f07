//! kgateway's active health checks, end to end: a real kgw, two real backends on loopback
//! (127.0.0.2 and 127.0.0.3, same port, one EndpointSlice) whose health the test controls.
//! An endpoint failing its check leaves rotation within `interval x unhealthyThreshold` + 1 s,
//! returns after `healthyThreshold` passes, `/clusters` shows `/failed_active_hc`, and the
//! `health_check.*` counters count.

mod common;
#[path = "common/controlled_backend.rs"]
mod controlled_backend;

use std::time::{Duration, Instant};

use common::*;
use controlled_backend::{
    ANSWER_CLOSE, ControlledBackend, health_flags, httpbin_on_both_backends, two_backends,
};

const CLUSTER: &str = "kube_default_httpbin_8080";

/// The policy of kgateway's `healthcheck` test input, verbatim.
const GOLDEN_POLICY: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-policy
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  healthCheck:
    timeout: 3s
    interval: 2s
    unhealthyThreshold: 3
    healthyThreshold: 2
    http:
      path: /healthz
      host: example.com
      method: HEAD
"#;

/// The kgateway "Backend health checks" guide's policy, with its target renamed to this test's
/// Service and its times shortened (guide: interval 30s, timeout 10s, both thresholds 1).
const GUIDE_POLICY_SHORT: &str = r#"apiVersion: gateway.kgateway.dev/v1alpha1
kind: BackendConfigPolicy
metadata:
  name: healthcheck-policy
  namespace: default
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  healthCheck:
    healthyThreshold: 2
    http:
      path: /status/200
    interval: 1s
    timeout: 1s
    unhealthyThreshold: 3
"#;

/// Gateway, Service `httpbin` (port 8080) with both backends as endpoints, and a route to it.
fn setup(port: u16, backend_port: u16) -> String {
    let service = httpbin_on_both_backends("default", backend_port);
    format!(
        r#"kind: Gateway
apiVersion: gateway.networking.k8s.io/v1
metadata:
  name: example-gateway
spec:
  gatewayClassName: kgateway
  listeners:
  - protocol: HTTP
    port: {port}
    name: http
    allowedRoutes:
      namespaces:
        from: All
---
{service}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: httpbin
spec:
  parentRefs:
  - name: example-gateway
  hostnames: ["www.example.com"]
  rules:
  - backendRefs:
    - name: httpbin
      port: 8080
"#
    )
}

fn flags(gw: &Gateway) -> Vec<(String, String)> {
    health_flags(gw, CLUSTER)
}

fn flags_of(gw: &Gateway, backend: &ControlledBackend) -> String {
    controlled_backend::flags_of(gw, CLUSTER, backend)
}

/// Who answered each of `n` requests through the gateway.
fn answered_by(gw: &Gateway, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (status, body) = gw.curl("www.example.com", "/");
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect()
}

fn start(dir: &std::path::Path, policy: &str, backend_port: u16) -> Gateway {
    let port = free_port();
    let gw = GatewayBuilder::run(dir, port).start();
    let out = gw.kgw(
        &["apply", "-f", "-"],
        &format!("{}---\n{policy}", setup(port, backend_port)),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    gw
}

#[test]
fn a_host_answering_503_leaves_rotation_and_comes_back_after_healthy_threshold_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_backends();
    let gw = start(dir.path(), GOLDEN_POLICY, a.addr.port());

    // The dump renders the policy as kgateway does.
    let cluster = wait_for("the cluster in the dump", Duration::from_secs(5), || {
        gw.cluster(CLUSTER)
    });
    assert_eq!(
        cluster["health_checks"],
        serde_json::json!([{"timeout": "3s", "interval": "2s", "unhealthy_threshold": 3, "healthy_threshold": 2,
            "http_health_check": {"host": "example.com", "path": "/healthz", "method": "HEAD"}}])
    );

    // Each endpoint is checked at once: HEAD /healthz, Host example.com, Envoy's user agent.
    for backend in [&a, &b] {
        let probes = wait_for("a first check", Duration::from_secs(5), || {
            Some(backend.requests_on("/healthz")).filter(|p| !p.is_empty())
        });
        let head = probes[0].1.to_ascii_lowercase();
        assert!(head.starts_with("head /healthz http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nhost: example.com"), "{head}");
        assert!(head.contains("\r\nuser-agent: envoy/hc"), "{head}");
    }
    wait_for("both endpoints healthy", Duration::from_secs(5), || {
        (flags(&gw).iter().filter(|(_, f)| f == "healthy").count() == 2).then_some(())
    });
    let mut served = answered_by(&gw, 10);
    served.sort();
    served.dedup();
    assert_eq!(served, ["a", "b"], "both endpoints in rotation");

    // b fails its check: a status other than 200 marks it unhealthy at the next check (Envoy
    // ignores unhealthy_threshold for it); bound: interval x unhealthyThreshold + 1 s.
    let bound = Duration::from_secs(2 * 3 + 1);
    let t = Instant::now();
    b.answer(503);
    wait_for("b marked /failed_active_hc", bound, || {
        (flags_of(&gw, &b) == "/failed_active_hc").then_some(())
    });
    let left = t.elapsed();
    eprintln!("503 to /failed_active_hc: {left:?} (bound {bound:?})");
    assert_eq!(flags_of(&gw, &a), "healthy");
    assert!(answered_by(&gw, 10).iter().all(|w| w == "a"), "b out of rotation");

    // b passes again: healthy after healthyThreshold (2) passes in a row.
    let bound = Duration::from_secs(2 * 2 + 1);
    let t = Instant::now();
    let checks_before = b.requests_on("/healthz").len();
    b.answer(200);
    wait_for("b healthy again", bound, || {
        (flags_of(&gw, &b) == "healthy").then_some(())
    });
    let back = t.elapsed();
    let passes = b.requests_on("/healthz").len() - checks_before;
    eprintln!("200 to healthy: {back:?} (bound {bound:?}), {passes} checks");
    assert!(
        passes >= 2,
        "healthyThreshold 2 needs 2 passing checks, saw {passes}"
    );
    wait_for("b in rotation again", Duration::from_secs(2), || {
        answered_by(&gw, 4).iter().any(|w| w == "b").then_some(())
    });

    let stat = |name: &str| {
        gw.stat(&format!("cluster.{CLUSTER}.health_check.{name}"))
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert!(stat("attempt") >= 6, "attempt {}", stat("attempt"));
    assert!(stat("success") >= 4);
    assert!(stat("failure") >= 1);
    assert_eq!(stat("network_failure"), 0);
    assert_eq!(stat("healthy"), 2);
    assert_eq!(stat("degraded"), 0);
}

#[test]
fn network_failures_need_unhealthy_threshold_checks_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_backends();
    let gw = start(dir.path(), GUIDE_POLICY_SHORT, a.addr.port());
    wait_for("both endpoints healthy", Duration::from_secs(5), || {
        (flags(&gw).iter().filter(|(_, f)| f == "healthy").count() == 2).then_some(())
    });
    // Traffic: until the cluster carries some, Envoy checks only every 60 s.
    answered_by(&gw, 2);

    // b closes every connection without answering: network failures, 3 in a row needed.
    let bound = Duration::from_secs(3 + 1);
    let t = Instant::now();
    b.answer(ANSWER_CLOSE);
    let probes = wait_for("b marked /failed_active_hc", bound, || {
        (flags_of(&gw, &b) == "/failed_active_hc").then(|| {
            b.requests_on("/status/200")
                .into_iter()
                .filter(|(at, _)| *at >= t)
                .count()
        })
    });
    let left = t.elapsed();
    // (A check whose kept connection fails is tried once more on a new one: more probes
    // than checks.)
    eprintln!("closing to /failed_active_hc: {left:?} (bound {bound:?}), {probes} probes");
    assert!(probes >= 3, "unhealthyThreshold 3: {probes} probes");
    assert!(
        left >= Duration::from_millis(1500),
        "3 checks 1 s apart take 2 s: {left:?}"
    );
    assert!(answered_by(&gw, 6).iter().all(|w| w == "a"));
    let network = gw
        .stat(&format!("cluster.{CLUSTER}.health_check.network_failure"))
        .unwrap();
    assert!(network >= 3, "network_failure {network}");
    assert_eq!(
        gw.stat(&format!("cluster.{CLUSTER}.health_check.healthy")),
        Some(1)
    );

    // Both fail their checks but serve other paths: Envoy's panic mode sends to every endpoint
    // rather than to none (without it: 503 "no healthy upstream").
    for backend in [&a, &b] {
        backend.answer_on("/status/200", ANSWER_CLOSE);
        backend.answer(200);
    }
    wait_for("a marked /failed_active_hc", Duration::from_secs(5), || {
        (flags_of(&gw, &a) == "/failed_active_hc").then_some(())
    });
    assert_eq!(flags_of(&gw, &b), "/failed_active_hc");
    let panics = || {
        gw.stat(&format!("cluster.{CLUSTER}.lb_healthy_panic"))
            .unwrap_or(0)
    };
    let panics_before = panics();
    let (status, body) = gw.curl("www.example.com", "/");
    assert_eq!(status, 200, "panic mode: the request reaches a host: {body}");
    assert!(body == "a" || body == "b", "{body}");
    assert!(panics() > panics_before, "lb_healthy_panic counts the pick");

    // Removing the policy clears the marks.
    let out = gw.kgw(
        &[
            "delete",
            "backendconfigpolicy",
            "healthcheck-policy",
            "-n",
            "default",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("marks cleared", Duration::from_secs(5), || {
        (flags(&gw).iter().all(|(_, f)| f == "healthy")).then_some(())
    });
    assert_eq!(gw.stat(&format!("cluster.{CLUSTER}.health_check.attempt")), None);
}
