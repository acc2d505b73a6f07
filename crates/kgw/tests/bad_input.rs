//! Everything a user can get wrong is refused with a message naming the resource, the field and
//! the fix; the CLI exits non-zero; what was serving keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::*;

const CLUSTER: &str = "kube_httpbin_httpbin_8000";

fn policy_with(keepalive_line: &str) -> String {
    format!(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: BackendConfigPolicy\nmetadata:\n  name: httpbin-keepalive\n  \
         namespace: httpbin\nspec:\n  targetRefs:\n    - name: httpbin\n      group: \"\"\n      kind: Service\n  \
         tcpKeepalive:\n    keepAliveProbes: 3\n    {keepalive_line}\n"
    )
}

#[test]
fn bad_policies_are_refused_and_the_serving_config_stays() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let out = gw.kgw(&["apply", "-f", "-"], GUIDE_POLICY);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = gw.dump("GET", "?include_eds");
    assert!(
        gw.cluster(CLUSTER)
            .unwrap()
            .get("upstream_connection_options")
            .is_some()
    );

    // (document, field path, words the message must hold)
    let cases: Vec<(String, &str, &str)> = vec![
        (
            policy_with("keepAliveTime: 500ms"),
            "spec.tcpKeepalive.keepAliveTime",
            "must be at least 1 second",
        ),
        (
            policy_with("keepAliveTime: 1.5s"),
            "spec.tcpKeepalive.keepAliveTime",
            "invalid duration value (write whole numbers",
        ),
        (
            policy_with("keepAliveTime: abc"),
            "spec.tcpKeepalive.keepAliveTime",
            "invalid duration value",
        ),
        (
            policy_with("keepAliveTime: 30s").replace("keepAliveProbes: 3", "keepAliveProbes: -1"),
            "spec.tcpKeepalive.keepAliveProbes",
            "greater than or equal to 0",
        ),
        (
            policy_with("keepAliveTime: 30s").replace("keepAliveProbes: 3", "keepAliveProbes: 200"),
            "spec.tcpKeepalive.keepAliveProbes",
            "between 1 and 127",
        ),
        (
            policy_with("keepAliveTme: 30s"),
            "spec.tcpKeepalive.keepAliveTme",
            "remove it or check its spelling",
        ),
        (
            GUIDE_POLICY.replace(
                "      group: \"\"\n      kind: Service",
                "      group: apps\n      kind: Deployment",
            ),
            "spec.targetRefs",
            "TargetRefs must reference either a Kubernetes Service, a Backend, or an Istio Hostname",
        ),
        (
            GUIDE_POLICY.replace(
                "  tcpKeepalive:",
                "  http2ProtocolOptions:\n    initialStreamWindowSize: 1024\n  tcpKeepalive:",
            ),
            "spec.http2ProtocolOptions.initialStreamWindowSize",
            "must be between 65535 and 2147483647 bytes",
        ),
        (
            GUIDE_POLICY.replace("  tcpKeepalive:", "  connectTimeout: 0s\n  tcpKeepalive:"),
            "spec.connectTimeout",
            "must be greater than 0",
        ),
        // The CRD's CEL rules: one health check kind, one hash source per policy.
        (
            GUIDE_POLICY.replace(
                "  tcpKeepalive:",
                "  healthCheck:\n    timeout: 1s\n    interval: 1s\n    healthyThreshold: 1\n    \
                 unhealthyThreshold: 1\n    http: {path: /}\n    grpc: {}\n  tcpKeepalive:",
            ),
            "spec.healthCheck",
            "exactly one of http or grpc must be set",
        ),
        (
            GUIDE_POLICY.replace(
                "  tcpKeepalive:",
                "  loadBalancer:\n    ringHash:\n      hashPolicies:\n      - header: {name: x}\n        \
                 sourceIP: {}\n  tcpKeepalive:",
            ),
            "spec.loadBalancer.ringHash.hashPolicies[0]",
            "exactly one of the fields in [header cookie sourceIP] must be set",
        ),
        // Values the CRD allows but the data plane (and Envoy) cannot honour.
        (
            GUIDE_POLICY.replace(
                "  tcpKeepalive:",
                "  loadBalancer:\n    ringHash:\n      minimumRingSize: 4096\n      maximumRingSize: 1024\n  tcpKeepalive:",
            ),
            "spec.loadBalancer.ringHash",
            "must not be greater than maximumRingSize",
        ),
        (
            GUIDE_POLICY.replace(
                "  tcpKeepalive:",
                "  commonHttpProtocolOptions:\n    maxHeadersCount: 0\n  tcpKeepalive:",
            ),
            "spec.commonHttpProtocolOptions.maxHeadersCount",
            "must be at least 1",
        ),
    ];
    for (doc, field, words) in &cases {
        let out = gw.kgw(&["apply", "-f", "-"], doc);
        let err = stderr(&out);
        assert!(!out.status.success(), "accepted but should not be:\n{doc}");
        assert!(
            err.contains("BackendConfigPolicy \"httpbin/httpbin-keepalive\" is invalid"),
            "names the resource: {err}"
        );
        assert!(err.contains(field), "names the field {field}: {err}");
        assert!(err.contains(words), "says {words:?}: {err}");
    }

    // A YAML syntax error names the source and the line.
    let out = gw.kgw(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports: [\n",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("STDIN") && err.contains("line 7"), "{err}");
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  namespace: [\n",
    )
    .unwrap();
    let out = gw.kgw(&["apply", "-f", file.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("broken.yaml") && err.contains("line 6"), "{err}");

    // Deleting what does not exist.
    let out = gw.kgw(&["delete", "backendconfigpolicy", "nope", "-n", "httpbin"], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"nope\" not found"), "{}", stderr(&out));

    // Nothing of that changed what is served.
    assert_eq!(gw.dump("GET", "?include_eds")["configs"], before["configs"]);
    let (status, _) = gw.curl("www.example.com", "/get");
    assert_eq!(status, 200);
}

const NOT_READY: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: sleepy
  namespace: httpbin
spec:
  ports:
  - name: http
    port: 9000
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sleepy-1
  namespace: httpbin
  labels:
    kubernetes.io/service-name: sleepy
addressType: IPv4
endpoints:
- addresses: ["127.0.0.1"]
  conditions:
    ready: false
ports:
- name: http
  port: 9
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: sleepy
  namespace: httpbin
spec:
  parentRefs:
  - name: http
    namespace: kgateway-system
  hostnames: ["sleepy.example.com"]
  rules:
  - backendRefs:
    - name: sleepy
      port: 9000
"#;

#[test]
fn no_ready_endpoint_answers_503_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let out = gw.kgw(&["apply", "-f", "-"], NOT_READY);
    assert!(out.status.success(), "{}", stderr(&out));
    let t = Instant::now();
    let (status, body) = gw.curl("sleepy.example.com", "/get");
    assert_eq!(status, 503);
    assert_eq!(body, "no healthy upstream");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "503 at once, not a hang: {:?}",
        t.elapsed()
    );
    assert_eq!(
        gw.stat("cluster.kube_httpbin_sleepy_9000.upstream_cx_none_healthy"),
        Some(1)
    );
    // the access log carries Envoy's flag
    let log = wait_for("the access log line", Duration::from_secs(2), || {
        let text = gw.proc.log_text();
        text.lines()
            .find(|l| l.contains("sleepy.example.com"))
            .map(str::to_string)
    });
    assert!(log.contains("\" 503 UH "), "{log}");
    // No route: 404 with NR.
    let (status, _) = gw.curl("nobody.example.com", "/");
    assert_eq!(status, 404);
}

const FIRST: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: files
  namespace: default
spec:
  gatewayClassName: kgateway
  listeners:
  - name: http
    protocol: HTTP
    port: PORT
---
apiVersion: v1
kind: Service
metadata:
  name: first
  namespace: default
spec:
  ports:
  - port: 80
"#;

const SECOND: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: second
  namespace: default
spec:
  ports:
  - port: 80
"#;

#[test]
fn a_watched_file_cut_mid_write_keeps_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let port = free_port();
    let first = FIRST.replace("PORT", &port.to_string());
    std::fs::write(manifests.join("first.yaml"), &first).unwrap();
    let gw = GatewayBuilder::run(dir.path(), port)
        .arg("-f")
        .arg(manifests.to_str().unwrap())
        .start();
    assert!(gw.cluster("kube_default_first_80").is_some());

    // Cut the file in the middle of its second document.
    let cut = &first[..first.find("kind: Service").unwrap() + 8];
    std::fs::write(manifests.join("first.yaml"), cut).unwrap();
    // A second file is read by the same pass of the watcher: once it shows, the cut file has
    // been read too.
    std::fs::write(manifests.join("second.yaml"), SECOND).unwrap();
    wait_for("the second file", Duration::from_secs(5), || {
        gw.cluster("kube_default_second_80")
    });
    assert!(
        gw.cluster("kube_default_first_80").is_some(),
        "the cut file's objects stay"
    );
    assert!(
        gw.proc.log_text().contains("keeping what"),
        "the error is reported:\n{}",
        gw.proc.log_text()
    );

    // Emptied (as `>` does before writing): still kept.
    std::fs::write(manifests.join("first.yaml"), "").unwrap();
    std::fs::write(manifests.join("second.yaml"), SECOND.replace("second", "third")).unwrap();
    wait_for("the third service", Duration::from_secs(5), || {
        gw.cluster("kube_default_third_80")
    });
    assert!(gw.cluster("kube_default_first_80").is_some());

    // Written in full again: served as written; removed: its objects go.
    std::fs::write(
        manifests.join("first.yaml"),
        first.replace("name: first", "name: fourth"),
    )
    .unwrap();
    wait_for("the rewritten file", Duration::from_secs(5), || {
        gw.cluster("kube_default_fourth_80")
    });
    assert!(gw.cluster("kube_default_first_80").is_none());
    std::fs::remove_file(manifests.join("first.yaml")).unwrap();
    wait_for("the removed file's objects to go", Duration::from_secs(5), || {
        gw.cluster("kube_default_fourth_80").is_none().then_some(())
    });
}

#[test]
fn a_listener_port_in_use_is_not_programmed_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let manifests = dir.path().join("gw.yaml");
    std::fs::write(&manifests, FIRST.replace("PORT", &port.to_string())).unwrap();
    let gw = GatewayBuilder::run(dir.path(), port)
        .arg("-f")
        .arg(manifests.to_str().unwrap())
        .start();
    let out = gw.kgw(&["get", "gateway", "files", "-o", "json"], "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let programmed = v["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Programmed")
        .unwrap();
    assert_eq!(programmed["status"], "False", "{v}");
    let message = programmed["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("cannot listen on port {port}")),
        "{message}"
    );
    let out = gw.kgw(&["get", "gateways"], "");
    assert!(
        stdout(&out).contains("PROGRAMMED") && stdout(&out).contains("False"),
        "{}",
        stdout(&out)
    );
}
