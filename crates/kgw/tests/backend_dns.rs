//! A Backend whose host is a DNS name, end to end: a real kgw whose /etc/hosts is the test's
//! own (kgw runs in a private mount namespace, `unshare --mount`, with a temp file bind-mounted
//! over /etc/hosts; the mount goes away with the process), two real backends on loopback
//! (127.0.0.2 "a" and 127.0.0.3 "b", same port). The name's address is changed in the file and
//! the next refresh (`dns.refreshRate: 1s`) moves the traffic; a name that stops resolving keeps
//! its last address; a health check's Host is the name; `/clusters` shows the name as Envoy does;
//! Snapshots that leave the cluster as it is do not resolve it again.

mod common;
#[path = "common/controlled_backend.rs"]
mod controlled_backend;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use controlled_backend::{ControlledBackend, two_backends};

const NAME: &str = "some-name.test";
const CLUSTER: &str = "backend_default_b_0";

/// `kgw run` in its own mount namespace, whose /etc/hosts is `hosts`.
fn start_with_hosts(dir: &Path, hosts: &Path) -> Gateway {
    let port = free_port();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let state_dir = dir.join("state");
    let log = dir.join("kgw.log");
    let out = std::fs::File::create(&log).unwrap();
    // `unshare` execs the shell in the new namespace (private propagation: the bind mount is
    // seen by nobody else), which execs kgw: one process, killed by the guard.
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
        ])
        .arg(hosts)
        .arg(KGW)
        .args(["run", "--admin-address", &admin.to_string(), "--state-dir"])
        .arg(&state_dir)
        .env("KGW_LOG", "info,proxy=debug")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("unshare (util-linux) is installed");
    let mut proc = Proc { child, log };
    let started = Instant::now();
    let ready_after = wait_for("kgw /ready", Duration::from_secs(20), || {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("kgw exited early ({status}):\n{}", proc.log_text());
        }
        (http(admin, "GET", "/ready", "").0 == 200).then(|| started.elapsed())
    });
    Gateway {
        proc,
        admin,
        port,
        state_dir,
        started,
        ready_after,
        backend_port: 0,
    }
}

/// Gateway `gw`, Backend `b` (`NAME`:`backend_port`), an HTTPRoute sending everything to it,
/// and a BackendConfigPolicy on it with `policy` (YAML lines under `spec`).
fn setup(port: u16, backend_port: u16, policy: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: kgateway
  listeners:
  - {{name: http, protocol: HTTP, port: {port}}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: b, namespace: default}}
spec:
  type: Static
  static:
    hosts:
    - host: {NAME}
      port: {backend_port}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs:
    - {{group: gateway.kgateway.dev, kind: Backend, name: b}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: BackendConfigPolicy
metadata: {{name: dns, namespace: default}}
spec:
  targetRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: b}}]
{policy}"#
    )
}

/// Points `NAME` at `address` (None: the name is not in the file). Written in place: the bind
/// mount holds the file's inode, which a rename would replace.
fn resolve_name_to(hosts: &Path, address: Option<&str>) {
    let mut text = "127.0.0.1 localhost\n".to_string();
    if let Some(a) = address {
        text.push_str(&format!("{a} {NAME}\n"));
    }
    std::fs::write(hosts, text).unwrap();
}

fn start(dir: &Path, backend: &ControlledBackend, policy: &str) -> (Gateway, std::path::PathBuf) {
    let hosts = dir.join("hosts");
    resolve_name_to(&hosts, Some(&backend.addr.ip().to_string()));
    let gw = start_with_hosts(dir, &hosts);
    let out = gw.kgw(
        &["apply", "-f", "-"],
        &setup(gw.port, backend.addr.port(), policy),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    (gw, hosts)
}

/// Who answers a request through the gateway, once the gateway answers 200.
fn answered_by(gw: &Gateway, who: &str) -> Duration {
    let start = Instant::now();
    wait_for(&format!("{who} to answer"), Duration::from_secs(10), || {
        let (status, body) = gw.curl("www.example.com", "/");
        (status == 200 && body == who).then_some(())
    });
    start.elapsed()
}

fn clusters_text(gw: &Gateway) -> String {
    http(gw.admin, "GET", "/clusters", "").1
}

#[test]
fn traffic_follows_the_name_to_its_new_address_at_the_next_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_backends();
    let (gw, hosts) = start(dir.path(), &a, "  dns: {refreshRate: 1s}\n");

    answered_by(&gw, "a");
    let text = clusters_text(&gw);
    let line = format!("{CLUSTER}::{}::hostname::{NAME}", a.addr);
    assert!(text.lines().any(|l| l == line), "{line} in /clusters:\n{text}");
    let (_, json) = http(gw.admin, "GET", "/clusters?format=json", "");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cluster = json["cluster_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == CLUSTER)
        .unwrap();
    assert_eq!(cluster["host_statuses"][0]["hostname"], NAME);

    resolve_name_to(&hosts, Some("127.0.0.3"));
    let moved_after = answered_by(&gw, "b");
    eprintln!("traffic moved {moved_after:?} after the hosts file changed");
    // One refresh (1 s) and a lookup; bounded well below the 10 s wait.
    assert!(
        moved_after < Duration::from_secs(3),
        "moved after {moved_after:?}"
    );
    // The old address left the endpoint set: every request goes to b now.
    for _ in 0..10 {
        assert_eq!(gw.curl("www.example.com", "/"), (200, "b".to_string()));
    }
    let text = clusters_text(&gw);
    assert!(!text.contains(&a.addr.to_string()), "{text}");
    assert!(
        text.contains(&format!("{CLUSTER}::{}::hostname::{NAME}", b.addr)),
        "{text}"
    );
    assert!(gw.stat(&format!("cluster.{CLUSTER}.update_success")).unwrap() >= 2);
    assert_eq!(gw.stat(&format!("cluster.{CLUSTER}.update_failure")), Some(0));
}

#[test]
fn a_name_that_stops_resolving_keeps_its_last_address_until_it_resolves_again() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_backends();
    let (gw, hosts) = start(dir.path(), &a, "  dns: {refreshRate: 1s}\n");
    answered_by(&gw, "a");

    resolve_name_to(&hosts, None);
    let failures = format!("cluster.{CLUSTER}.update_failure");
    wait_for("two failed lookups", Duration::from_secs(10), || {
        (gw.stat(&failures)? >= 2).then_some(())
    });
    for _ in 0..10 {
        assert_eq!(gw.curl("www.example.com", "/"), (200, "a".to_string()));
    }
    let log = gw.proc.log_text();
    assert!(
        log.contains("DNS lookup failed") && log.contains(NAME),
        "the failure is logged:\n{log}"
    );

    resolve_name_to(&hosts, Some("127.0.0.3"));
    answered_by(&gw, "b");
}

#[test]
fn a_health_check_without_a_host_sends_the_backend_name() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_backends();
    let policy = "  healthCheck:\n    http: {path: /healthz}\n    interval: 1s\n    timeout: 1s\n    \
                  healthyThreshold: 1\n    unhealthyThreshold: 1\n";
    let (gw, _hosts) = start(dir.path(), &a, policy);
    let head = wait_for("a health check", Duration::from_secs(10), || {
        a.requests_on("/healthz").first().map(|(_, head)| head.clone())
    });
    let host = format!("host: {NAME}");
    assert!(head.lines().any(|l| l.eq_ignore_ascii_case(&host)), "{head}");
    answered_by(&gw, "a");
}

#[test]
fn snapshots_that_leave_the_cluster_unchanged_do_not_resolve_again() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_backends();
    // An hour between refreshes: every lookup after the first would come from a new Snapshot.
    let (gw, _hosts) = start(dir.path(), &a, "  dns: {refreshRate: 1h}\n");
    answered_by(&gw, "a");
    let attempts = format!("cluster.{CLUSTER}.update_attempt");
    assert_eq!(gw.stat(&attempts), Some(1));
    let snapshots = "cluster_manager.cds.update_success";
    for i in 0..3 {
        let before = gw.stat(snapshots).unwrap();
        // Another route: a new Snapshot in which the Backend's cluster is the same.
        let route = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: other{i}, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [other{i}.example.com]\n  rules:\n  - backendRefs:\n    \
             - {{group: gateway.kgateway.dev, kind: Backend, name: b}}\n"
        );
        let out = gw.kgw(&["apply", "-f", "-"], &route);
        assert!(out.status.success(), "{}", stderr(&out));
        wait_for("the new Snapshot", Duration::from_secs(10), || {
            (gw.stat(snapshots)? > before).then_some(())
        });
        assert_eq!(
            gw.curl(&format!("other{i}.example.com"), "/"),
            (200, "a".to_string())
        );
    }
    assert_eq!(gw.stat(&attempts), Some(1), "no lookup for an unchanged cluster");
}
