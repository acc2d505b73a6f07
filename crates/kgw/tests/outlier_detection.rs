//! kgateway's outlier detection, end to end: a real kgw, two real backends on loopback
//! (127.0.0.2 and 127.0.0.3, same port, one EndpointSlice) whose answers the test controls.
//! Of two endpoints, one answering 5xx is ejected after `consecutive5xx` failures, traffic then
//! goes only to the other, and it comes back after `baseEjectionTime`; `/clusters` shows
//! `/failed_outlier_check`; the `outlier_detection.*` counters count.

mod common;
#[path = "common/controlled_backend.rs"]
mod controlled_backend;

use std::time::{Duration, Instant};

use common::*;
use controlled_backend::{ANSWER_CLOSE, flags_of, httpbin_on_both_backends, two_backends};

const CLUSTER: &str = "kube_kgateway-base_httpbin_8080";

/// kgateway's e2e manifest for this policy (`backendconfigpolicy/testdata/outlierdetection.yaml`),
/// verbatim: the policy and its route.
const E2E_MANIFEST: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: backend-outlier-detection-policy
  namespace: kgateway-base
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  outlierDetection:
    consecutive5xx: 1
    maxEjectionPercent: 51
    interval: 10ms
    baseEjectionTime: 600s
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: httpbin-route
  namespace: kgateway-base
spec:
  parentRefs:
    - name: gateway
      namespace: kgateway-base
  hostnames:
    - "httpbin.example.com"
  rules:
    - backendRefs:
        - name: httpbin
          port: 8080
"#;

/// What the e2e suite's setup provides: the Gateway, and Service httpbin with both backends.
fn setup(port: u16, backend_port: u16) -> String {
    let service = httpbin_on_both_backends("kgateway-base", backend_port);
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gateway
  namespace: kgateway-base
spec:
  gatewayClassName: kgateway
  listeners:
  - protocol: HTTP
    port: {port}
    name: http
---
{service}"#
    )
}

/// The e2e manifest's policy with a short ejection and a 3-failure threshold, to see the host
/// come back (the manifest ejects for 600 s).
const RETURNING_POLICY: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: backend-outlier-detection-policy
  namespace: kgateway-base
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  outlierDetection:
    consecutive5xx: 3
    maxEjectionPercent: 51
    interval: 500ms
    baseEjectionTime: 2s
"#;

/// kgateway's `outlierdetection` test input's split policy, with a threshold of 2 (it has 10).
const SPLIT_POLICY: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: backend-outlier-detection-policy
  namespace: kgateway-base
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  outlierDetection:
    maxEjectionPercent: 95
    splitExternalLocalOriginErrors: true
    consecutiveLocalOriginFailure: 2
    enforcingConsecutiveLocalOriginFailure: 100
    enforcingConsecutive5xx: 0
"#;

const ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: httpbin-route
  namespace: kgateway-base
spec:
  parentRefs:
    - name: gateway
      namespace: kgateway-base
  hostnames:
    - "httpbin.example.com"
  rules:
    - backendRefs:
        - name: httpbin
          port: 8080
"#;

fn start(dir: &std::path::Path, manifest: &str, backend_port: u16) -> Gateway {
    let port = free_port();
    let gw = GatewayBuilder::run(dir, port).start();
    let out = gw.kgw(
        &["apply", "-f", "-"],
        &format!("{}---\n{manifest}", setup(port, backend_port)),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the route", Duration::from_secs(5), || {
        (gw.curl("httpbin.example.com", "/").0 != 404).then_some(())
    });
    gw
}

/// One request through the gateway: status and who answered.
fn request(gw: &Gateway) -> (u16, String) {
    gw.curl("httpbin.example.com", "/")
}

fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.stat(&format!("cluster.{CLUSTER}.outlier_detection.{name}"))
        .unwrap_or_else(|| panic!("no outlier_detection.{name}"))
}

#[test]
fn the_e2e_manifest_ejects_the_failing_host_at_its_first_5xx_and_no_more_than_51_percent() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_backends();
    let gw = start(dir.path(), &format!("{E2E_MANIFEST}---\n{ROUTE}"), a.addr.port());
    let cluster = gw.cluster(CLUSTER).expect("cluster in the dump");
    assert_eq!(
        cluster["outlier_detection"],
        serde_json::json!({"consecutive_5xx": 1, "interval": "0.010s", "base_ejection_time": "600s", "max_ejection_percent": 51})
    );
    let mut seen: Vec<String> = (0..6).map(|_| request(&gw).1).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["a", "b"]);
    assert_eq!(stat(&gw, "ejections_active"), 0);

    // b answers 500: the first 500 a client sees is the last one (consecutive5xx: 1).
    b.answer(500);
    let t = Instant::now();
    let mut failures = 0;
    while flags_of(&gw, CLUSTER, &b) != "/failed_outlier_check" {
        assert!(t.elapsed() < Duration::from_secs(5), "b never ejected");
        if request(&gw).0 == 500 {
            failures += 1;
        }
    }
    eprintln!("ejected after {failures} 5xx, {:?}", t.elapsed());
    assert_eq!(failures, 1);
    let answers: Vec<(u16, String)> = (0..10).map(|_| request(&gw)).collect();
    assert!(answers.iter().all(|(s, w)| *s == 200 && w == "a"), "{answers:?}");
    assert_eq!(flags_of(&gw, CLUSTER, &a), "healthy");
    for (name, want) in [
        ("ejections_active", 1),
        ("ejections_enforced_total", 1),
        ("ejections_enforced_consecutive_5xx", 1),
        ("ejections_detected_consecutive_5xx", 1),
        ("ejections_consecutive_5xx", 1),
        ("ejections_total", 1),
        ("ejections_overflow", 0),
    ] {
        assert_eq!(stat(&gw, name), want, "{name}");
    }

    // a fails too: ejecting it would put 100% of the hosts out, over 51%; it stays, and the
    // overflow is counted.
    a.answer(500);
    assert_eq!(request(&gw).0, 500);
    assert_eq!(flags_of(&gw, CLUSTER, &a), "healthy");
    assert_eq!(stat(&gw, "ejections_overflow"), 1);
    assert_eq!(stat(&gw, "ejections_active"), 1);
}

#[test]
fn an_ejected_host_comes_back_after_base_ejection_time() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_backends();
    let gw = start(
        dir.path(),
        &format!("{RETURNING_POLICY}---\n{ROUTE}"),
        a.addr.port(),
    );

    b.answer(503);
    let t = Instant::now();
    let mut failures = 0;
    while flags_of(&gw, CLUSTER, &b) != "/failed_outlier_check" {
        assert!(t.elapsed() < Duration::from_secs(5), "b never ejected");
        if request(&gw).0 == 503 {
            failures += 1;
        }
    }
    let ejected_at = Instant::now();
    eprintln!("ejected after {failures} 5xx in {:?}", t.elapsed());
    assert_eq!(failures, 3, "consecutive5xx: 3");
    assert!((0..6).map(|_| request(&gw)).all(|(s, w)| s == 200 && w == "a"));

    // b is well again; it returns at the first sweep after baseEjectionTime (2 s; sweeps every
    // 500 ms).
    b.answer(200);
    wait_for("b back in rotation", Duration::from_secs(4), || {
        (flags_of(&gw, CLUSTER, &b) == "healthy").then_some(())
    });
    let out_for = ejected_at.elapsed();
    eprintln!("back after {out_for:?} (baseEjectionTime 2 s, interval 500 ms)");
    assert!(out_for >= Duration::from_millis(1900), "{out_for:?}");
    // Bound: baseEjectionTime + interval (the sweep that finds it due), + 0.5 s of slack.
    assert!(out_for <= Duration::from_millis(2000 + 500 + 500), "{out_for:?}");
    let mut seen: Vec<String> = (0..6).map(|_| request(&gw).1).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["a", "b"]);
    assert_eq!(stat(&gw, "ejections_active"), 0);
    assert_eq!(stat(&gw, "ejections_enforced_total"), 1);
}

#[test]
fn with_the_split_local_origin_failures_eject_and_5xx_are_not_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_backends();
    let gw = start(dir.path(), &format!("{SPLIT_POLICY}---\n{ROUTE}"), a.addr.port());

    // 5xx: detected after 5 in a row (the default), but enforcingConsecutive5xx is 0.
    b.answer(500);
    let t = Instant::now();
    while stat(&gw, "ejections_detected_consecutive_5xx") == 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "5xx never detected");
        request(&gw);
    }
    assert_eq!(flags_of(&gw, CLUSTER, &b), "healthy");
    assert_eq!(stat(&gw, "ejections_enforced_total"), 0);

    // b goes away: connections reset, then refused. Two local-origin failures in a row eject it.
    b.answer(ANSWER_CLOSE);
    drop(b);
    let t = Instant::now();
    let mut failures = 0;
    let b_addr = format!("127.0.0.3:{}", a.addr.port());
    while health_of(&gw, &b_addr) != "/failed_outlier_check" {
        assert!(t.elapsed() < Duration::from_secs(5), "b never ejected");
        if request(&gw).0 != 200 {
            failures += 1;
        }
    }
    eprintln!("ejected after {failures} failed requests, {:?}", t.elapsed());
    assert!((1..=2).contains(&failures), "{failures}");
    assert!((0..6).map(|_| request(&gw)).all(|(s, w)| s == 200 && w == "a"));
    assert_eq!(
        stat(&gw, "ejections_enforced_consecutive_local_origin_failure"),
        1
    );
    assert_eq!(
        stat(&gw, "ejections_detected_consecutive_local_origin_failure"),
        1
    );
    assert_eq!(stat(&gw, "ejections_active"), 1);
}

fn health_of(gw: &Gateway, address: &str) -> String {
    controlled_backend::health_flags(gw, CLUSTER)
        .into_iter()
        .find(|(h, _)| h == address)
        .map(|(_, f)| f)
        .unwrap_or_default()
}
