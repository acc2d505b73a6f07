//! kgateway's "HTTP/2 keepalive" guide, end to end, as a user follows it with kgw: the
//! quickstart (whose sample backend also speaks h2c), the guide's `kubectl patch` run as
//! `kgw patch`, its policy applied verbatim, its jq filter's output, HTTP/2 on the upstream
//! socket, and its cleanup.

mod common;

use std::time::Duration;

use common::*;

const CLUSTER: &str = "kube_httpbin_httpbin_8000";

/// The guide's policy, verbatim.
const GUIDE_POLICY: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-http2-keepalive
  namespace: httpbin
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  http2ProtocolOptions:
    connectionKeepalive:
      timeout: 5s
      interval: 30s
      connectionIdleInterval: 60s
"#;

/// The guide's `kubectl patch ... --type='json' -p='...'` arguments (the shell's quotes removed).
const PATCH_ADD: &str = r#"[{"op":"add","path":"/spec/ports/0/appProtocol","value":"kubernetes.io/h2c"}]"#;
const PATCH_REMOVE: &str = r#"[{"op":"remove","path":"/spec/ports/0/appProtocol"}]"#;

fn protocol_options(gw: &Gateway) -> serde_json::Value {
    gw.cluster(CLUSTER)
        .map(|c| c["typed_extension_protocol_options"].clone())
        .unwrap_or_default()
}

fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.stat(&format!("cluster.{CLUSTER}.{name}")).unwrap_or(0)
}

#[test]
fn http2_keepalive_guide() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();

    // Step 1: the Service's port speaks h2c.
    let out = gw.kgw(
        &[
            "patch",
            "service",
            "httpbin",
            "-n",
            "httpbin",
            "--type=json",
            &format!("-p={PATCH_ADD}"),
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "service/httpbin patched");
    // HTTP/2 to the endpoints, with no option set: Envoy's explicit HTTP/2 config, empty.
    wait_for("the cluster to speak HTTP/2", Duration::from_secs(2), || {
        let o = protocol_options(&gw);
        (o["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
            == serde_json::json!({"http2_protocol_options": {}}))
        .then_some(())
    });

    // Step 2: the guide's policy, verbatim.
    let out = gw.kgw(&["apply", "-f", "-"], GUIDE_POLICY);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "backendconfigpolicies.gateway.kgateway.dev/httpbin-http2-keepalive created"
    );

    // Step 3: the guide's jq filter gives the guide's example output, and the whole extension is
    // what kgateway renders.
    let options = wait_for("the keepalive in the dump", Duration::from_secs(2), || {
        let o = protocol_options(&gw);
        o.pointer("/envoy.extensions.upstreams.http.v3.HttpProtocolOptions/explicit_http_config/http2_protocol_options/connection_keepalive")
            .is_some()
            .then_some(o)
    });
    assert_eq!(
        options,
        serde_json::json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {"connection_keepalive": {
                "interval": "30s", "timeout": "5s", "connection_idle_interval": "60s"}}}}})
    );
    let path = dir.path().join("dump.json");
    std::fs::write(
        &path,
        serde_json::to_string(&gw.dump("POST", "?include_eds")).unwrap(),
    )
    .unwrap();
    let check = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/tools/envoy-dump-check"
    ))
    .arg("check")
    .arg(&path)
    .output()
    .unwrap();
    assert!(check.status.success(), "{}{}", stdout(&check), stderr(&check));

    // The traffic: requests go to the sample backend over HTTP/2, several on one connection.
    for _ in 0..3 {
        let (status, body) = gw.curl("www.example.com", "/headers");
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(stat(&gw, "upstream_cx_http2_total"), 1, "one HTTP/2 connection");
    assert_eq!(stat(&gw, "upstream_rq_total"), 3);

    // Cleanup, as the guide: the policy goes, then the port's appProtocol.
    let out = gw.kgw(
        &[
            "delete",
            "backendconfigpolicy",
            "httpbin-http2-keepalive",
            "-n",
            "httpbin",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gw.kgw(
        &[
            "patch",
            "service",
            "httpbin",
            "-n",
            "httpbin",
            "--type=json",
            &format!("-p={PATCH_REMOVE}"),
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("HTTP/1.1 again", Duration::from_secs(2), || {
        protocol_options(&gw).is_null().then_some(())
    });
    let (status, _) = gw.curl("www.example.com", "/headers");
    assert_eq!(status, 200);
    assert_eq!(
        stat(&gw, "upstream_cx_http2_total"),
        1,
        "no new HTTP/2 connection"
    );
}
