//! kgateway's "TCP keepalive" guide, end to end, as a user follows it with kgw: the quickstart,
//! the guide's YAML applied verbatim, the dump, the real sockets, delete, re-apply, restart.

mod common;

use std::time::{Duration, Instant};

use common::*;

const CLUSTER: &str = "kube_httpbin_httpbin_8000";

fn keepalive_of_dump(gw: &Gateway) -> Option<serde_json::Value> {
    gw.cluster(CLUSTER)
        .and_then(|c| c.get("upstream_connection_options").cloned())
}

#[test]
fn tcp_keepalive_guide() {
    let dir = tempfile::tempdir().unwrap();
    let builder = GatewayBuilder::quickstart(dir.path());
    let gw = builder.start();
    eprintln!("start to /ready: {:?}", gw.ready_after);

    // Without a policy, an upstream socket has no keepalive.
    let (status, body) = gw.curl("www.example.com", "/headers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"Host\": \"www.example.com\""), "{body}");
    let sockets = upstream_keepalive(gw.pid(), gw.backend_port);
    assert_eq!(sockets.len(), 1, "one pooled upstream connection: {sockets:?}");
    assert!(!sockets[0].enabled, "no policy, no SO_KEEPALIVE: {sockets:?}");
    assert!(keepalive_of_dump(&gw).is_none());

    // The guide's YAML, verbatim, through stdin.
    let t = Instant::now();
    let out = gw.kgw(&["apply", "-f", "-"], GUIDE_POLICY);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "backendconfigpolicies.gateway.kgateway.dev/httpbin-keepalive created"
    );
    let shown = wait_for("the dump to show the policy", Duration::from_secs(1), || {
        keepalive_of_dump(&gw)
    });
    eprintln!("kgw apply to dump: {:?}", t.elapsed());
    assert_eq!(
        shown,
        serde_json::json!({"tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 30, "keepalive_interval": 5}})
    );

    // (a) POST and GET, with include_eds: cluster and its endpoint, valid for Envoy's protos.
    for method in ["POST", "GET"] {
        let dump = gw.dump(method, "?include_eds");
        let configs = dump["configs"].as_array().unwrap();
        assert_eq!(
            configs[0]["@type"],
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
        );
        let cluster = configs[0]["dynamic_active_clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cluster"]["name"] == CLUSTER)
            .expect("cluster in dynamic_active_clusters");
        assert_eq!(cluster["cluster"]["connect_timeout"], "5s");
        assert_eq!(cluster["cluster"]["upstream_connection_options"], shown);
        assert_eq!(
            configs[1]["@type"],
            "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"
        );
        let endpoints = configs[1]["dynamic_endpoint_configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint_config"]["cluster_name"] == CLUSTER)
            .expect("endpoints of the cluster");
        let address = &endpoints["endpoint_config"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        assert_eq!(address["socket_address"]["port_value"], gw.backend_port);
        if method == "POST" {
            let path = dir.path().join("dump.json");
            std::fs::write(&path, serde_json::to_string(&dump).unwrap()).unwrap();
            envoy_dump_check(&path);
        }
    }

    // (b) The policy reached the pooled socket opened before it, and new requests use it.
    let (status, _) = gw.curl("www.example.com", "/get");
    assert_eq!(status, 200);
    let sockets = upstream_keepalive(gw.pid(), gw.backend_port);
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let guide = Keepalive {
        local_port: sockets[0].local_port,
        enabled: true,
        idle_secs: 30,
        interval_secs: 5,
        probes: 3,
        // ours: keepAliveTime + probes x interval = 30 + 3 x 5 s
        user_timeout_ms: 45_000,
    };
    assert_eq!(sockets[0], guide);

    // (c) A second request reuses the pooled connection.
    let (status, _) = gw.curl("www.example.com", "/get");
    assert_eq!(status, 200);
    assert_eq!(gw.stat(&format!("cluster.{CLUSTER}.upstream_cx_total")), Some(1));
    assert_eq!(upstream_keepalive(gw.pid(), gw.backend_port), vec![guide.clone()]);

    // kgw get shows the status.
    let out = gw.kgw(
        &[
            "get",
            "backendconfigpolicy",
            "httpbin-keepalive",
            "-n",
            "httpbin",
            "-o",
            "yaml",
        ],
        "",
    );
    let yaml = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let conditions = &v["status"]["ancestors"][0]["conditions"];
    assert_eq!(conditions[0]["type"], "Accepted");
    assert_eq!(conditions[0]["status"], "True");
    assert_eq!(conditions[1]["type"], "Attached");
    assert_eq!(conditions[1]["status"], "True");

    // (d) Delete: gone from the dump within 1 s and from the live socket.
    let out = gw.kgw(
        &[
            "delete",
            "backendconfigpolicy",
            "httpbin-keepalive",
            "-n",
            "httpbin",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the dump to drop the policy", Duration::from_secs(1), || {
        keepalive_of_dump(&gw).is_none().then_some(())
    });
    let sockets = upstream_keepalive(gw.pid(), gw.backend_port);
    assert!(
        sockets.iter().all(|s| !s.enabled),
        "keepalive off after delete: {sockets:?}"
    );

    // Applying again restores it, on the same connection.
    let out = gw.kgw(&["apply", "-f", "-"], GUIDE_POLICY);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(
        "the dump to show the policy again",
        Duration::from_secs(1),
        || keepalive_of_dump(&gw),
    );
    assert_eq!(upstream_keepalive(gw.pid(), gw.backend_port), vec![guide]);
    let created = creation_time(&gw);

    // A restart keeps what was applied, with its creation time.
    drop(gw);
    let gw = builder.start();
    assert_eq!(keepalive_of_dump(&gw), Some(shown));
    assert_eq!(
        creation_time(&gw),
        created,
        "creationTimestamp is kept across restarts"
    );
    let (status, _) = gw.curl("www.example.com", "/get");
    assert_eq!(status, 200);
    let sockets = upstream_keepalive(gw.pid(), gw.backend_port);
    assert!(
        sockets
            .iter()
            .all(|s| s.enabled && s.idle_secs == 30 && s.interval_secs == 5 && s.probes == 3)
    );
}

fn creation_time(gw: &Gateway) -> String {
    let out = gw.kgw(
        &[
            "get",
            "backendconfigpolicy",
            "httpbin-keepalive",
            "-n",
            "httpbin",
            "-o",
            "json",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["metadata"]["creationTimestamp"]
        .as_str()
        .expect("creationTimestamp is set")
        .to_string()
}

/// `../shared/tools/envoy-dump-check check FILE` must pass.
fn envoy_dump_check(path: &std::path::Path) {
    let tool = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/tools/envoy-dump-check"
    );
    let out = std::process::Command::new(tool)
        .arg("check")
        .arg(path)
        .output()
        .expect("envoy-dump-check runs");
    assert!(
        out.status.success(),
        "envoy-dump-check check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
