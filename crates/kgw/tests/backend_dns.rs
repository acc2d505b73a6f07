//! A Backend whose host is a DNS name, end to end: a real kgw whose /etc/hosts is the test's
//! own (kgw runs in a private mount namespace, `unshare --mount`, with a temp file bind-mounted
//! over /etc/hosts; the mount goes away with the process), two real backends on loopback
//! (127.0.0.2 "a" and 127.0.0.3 "b", same port). The name's address is changed in the file and
//! the next refresh (`dns.refreshRate: 1s`) moves the traffic; a name that stops resolving keeps
//! its last address; a health check's Host is the name; `/clusters` shows the name as Envoy does;
//! Snapshots that leave the cluster as it is do not resolve it again.
//!
//! With `dns.respectTTL`, kgw's /etc/resolv.conf (bind-mounted too) names a small DNS server
//! of the test's on a loopback address, answering the name's A record with a chosen address
//! and TTL: the answer's TTL, not the refresh rate, says when the name is resolved again.

mod common;
#[path = "common/controlled_backend.rs"]
mod controlled_backend;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use controlled_backend::{ControlledBackend, two_backends};

const NAME: &str = "some-name.test";
const CLUSTER: &str = "backend_default_b_0";

/// `kgw run` in its own mount namespace, whose /etc/hosts is `hosts`.
fn start_with_hosts(dir: &Path, hosts: &Path) -> Gateway {
    start_with_files(dir, &[(hosts, "/etc/hosts")])
}

/// `kgw run` in its own mount namespace, in which each file is bind-mounted over its target.
fn start_with_files(dir: &Path, mounts: &[(&Path, &str)]) -> Gateway {
    // `unshare` execs the shell in the new namespace (private propagation: the bind mount is
    // seen by nobody else), which execs kgw: one process, killed by the guard.
    // The script mounts "$1" over "$2", "$3" over "$4"... then execs the rest.
    let mut script = String::new();
    for _ in mounts {
        script.push_str("mount --bind \"$1\" \"$2\" && shift 2 && ");
    }
    script.push_str("exec \"$@\"");
    let mut wrapper: Vec<std::ffi::OsString> = ["unshare", "--mount", "--", "sh", "-c", &script, "sh"]
        .into_iter()
        .map(Into::into)
        .collect();
    for (file, target) in mounts {
        wrapper.push(file.as_os_str().to_owned());
        wrapper.push(target.into());
    }
    GatewayBuilder::run(dir, free_port()).wrapped(wrapper).start()
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

/// A name server for the tests: on port 53 (resolv.conf has no port) of a loopback address of
/// its own, it answers every A question with `address` and `ttl` (as they are when asked), and
/// AAAA questions with no record; without an address, every question with NXDOMAIN. It counts
/// the questions, and the A questions. Stops when dropped.
struct TestNameServer {
    ip: std::net::Ipv4Addr,
    answer: std::sync::Arc<std::sync::Mutex<(Option<std::net::Ipv4Addr>, u32)>>,
    questions: std::sync::Arc<std::sync::atomic::AtomicU64>,
    a_questions: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestNameServer {
    fn start(address: Option<std::net::Ipv4Addr>, ttl: u32) -> TestNameServer {
        use std::sync::atomic::Ordering;
        // 127.53.x.y, x from the process, y from the test: another run or test may hold one.
        let first = std::process::id() as u8;
        let socket = (0..=255u8)
            .flat_map(|x| (1..=254u8).map(move |y| (x, y)))
            .map(|(x, y)| std::net::Ipv4Addr::new(127, 53, first.wrapping_add(x), y))
            .find_map(|ip| std::net::UdpSocket::bind((ip, 53)).ok())
            .expect("a loopback address whose port 53 is free");
        let ip = match socket.local_addr().unwrap().ip() {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("bound {other}"),
        };
        // Short reads so that a drop is seen.
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut server = TestNameServer {
            ip,
            answer: std::sync::Arc::new(std::sync::Mutex::new((address, ttl))),
            questions: Default::default(),
            a_questions: Default::default(),
            stop: Default::default(),
            thread: None,
        };
        let (answer, questions, a_questions, stop) = (
            server.answer.clone(),
            server.questions.clone(),
            server.a_questions.clone(),
            server.stop.clone(),
        );
        server.thread = Some(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let (address, ttl) = *answer.lock().unwrap();
                if let Some((reply, asks_a)) = reply_to(&buf[..n], address, ttl) {
                    questions.fetch_add(1, Ordering::SeqCst);
                    if asks_a {
                        a_questions.fetch_add(1, Ordering::SeqCst);
                    }
                    socket.send_to(&reply, from).unwrap();
                }
            }
        }));
        server
    }

    fn answer(&self, address: std::net::Ipv4Addr) {
        self.answer.lock().unwrap().0 = Some(address);
    }

    fn questions(&self) -> u64 {
        self.questions.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn a_questions(&self) -> u64 {
        self.a_questions.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A resolv.conf naming this server only.
    fn resolv_conf(&self, path: &Path) {
        std::fs::write(
            path,
            format!("nameserver {}\noptions timeout:1 attempts:2\n", self.ip),
        )
        .unwrap();
    }
}

impl Drop for TestNameServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The answer to a query (RFC 1035 4.1): the header with QR, RD, RA (and NXDOMAIN without an
/// address); the question as asked; for an A question, one A record (owner: a pointer to the
/// question's name). And whether the question was for A. None for what is not a query.
fn reply_to(query: &[u8], address: Option<std::net::Ipv4Addr>, ttl: u32) -> Option<(Vec<u8>, bool)> {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = query.get(12..end + 5)?;
    let asks_a = question[question.len() - 4..] == [0, 1, 0, 1];
    let rcode = if address.is_some() { 0 } else { 3 };
    let records = asks_a && address.is_some();
    let mut out = query[..2].to_vec();
    out.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1, 0, u8::from(records), 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if let Some(address) = address.filter(|_| asks_a) {
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&[0, 4]);
        out.extend_from_slice(&address.octets());
    }
    Some((out, asks_a))
}

/// kgw with the test's /etc/hosts (without `NAME`) and /etc/resolv.conf (naming `server`),
/// and the setup with `policy`.
fn start_with_name_server(
    dir: &Path,
    server: &TestNameServer,
    backend: &ControlledBackend,
    policy: &str,
) -> Gateway {
    start_with_name_server_and_hosts(dir, server, backend, policy, None)
}

/// As `start_with_name_server`, with `NAME` at `in_hosts` in /etc/hosts if given.
fn start_with_name_server_and_hosts(
    dir: &Path,
    server: &TestNameServer,
    backend: &ControlledBackend,
    policy: &str,
    in_hosts: Option<&str>,
) -> Gateway {
    let (hosts, resolv_conf) = (dir.join("hosts"), dir.join("resolv.conf"));
    resolve_name_to(&hosts, in_hosts);
    server.resolv_conf(&resolv_conf);
    let gw = start_with_files(dir, &[(&hosts, "/etc/hosts"), (&resolv_conf, "/etc/resolv.conf")]);
    let out = gw.kgw(
        &["apply", "-f", "-"],
        &setup(gw.port, backend.addr.port(), policy),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    gw
}

fn ipv4(address: std::net::SocketAddr) -> std::net::Ipv4Addr {
    match address.ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("an IPv4 backend, not {other}"),
    }
}

#[test]
fn with_respect_ttl_a_new_answer_is_taken_when_the_ttl_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_backends();
    let server = TestNameServer::start(Some(ipv4(a.addr)), 1);
    // An hour between refreshes: only the TTL (1 s) can bring the new answer in time.
    let gw = start_with_name_server(
        dir.path(),
        &server,
        &a,
        "  dns: {respectTTL: true, refreshRate: 1h}\n",
    );
    answered_by(&gw, "a");

    server.answer(ipv4(b.addr));
    let moved_after = answered_by(&gw, "b");
    eprintln!("with respectTTL and a TTL of 1 s, traffic moved {moved_after:?} after the answer changed");
    // The TTL (1 s) and a lookup (getaddrinfo and the TTL query, both on loopback).
    assert!(
        moved_after < Duration::from_millis(2500),
        "moved after {moved_after:?}"
    );
    for _ in 0..10 {
        assert_eq!(gw.curl("www.example.com", "/"), (200, "b".to_string()));
    }
    let attempts = gw.stat(&format!("cluster.{CLUSTER}.update_attempt")).unwrap();
    assert!(attempts >= 2, "{attempts} lookups");
    // Each lookup asked twice for A: getaddrinfo for the address, kgw for the TTL.
    assert!(
        server.a_questions() >= 2 * attempts - 1,
        "{} A questions",
        server.a_questions()
    );
    assert_eq!(gw.stat(&format!("cluster.{CLUSTER}.update_failure")), Some(0));
}

#[test]
fn without_respect_ttl_the_refresh_rate_holds_and_the_ttl_is_not_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_backends();
    let server = TestNameServer::start(Some(ipv4(a.addr)), 1);
    let gw = start_with_name_server(
        dir.path(),
        &server,
        &a,
        "  dns: {respectTTL: false, refreshRate: 1h}\n",
    );
    answered_by(&gw, "a");
    // getaddrinfo's one A question, no other.
    assert_eq!(server.a_questions(), 1);

    server.answer(ipv4(b.addr));
    // Three TTLs go by (with respectTTL the traffic moves within one and a lookup): still a.
    let changed = Instant::now();
    while changed.elapsed() < Duration::from_secs(3) {
        assert_eq!(gw.curl("www.example.com", "/"), (200, "a".to_string()));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gw.stat(&format!("cluster.{CLUSTER}.update_attempt")), Some(1));
    assert_eq!(server.a_questions(), 1);
}

#[test]
fn with_respect_ttl_a_name_from_the_hosts_file_is_resolved_again_at_the_refresh_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_backends();
    // The name server does not know the name (NXDOMAIN): no TTL; the hosts file has it.
    let server = TestNameServer::start(None, 1);
    let gw = start_with_name_server_and_hosts(
        dir.path(),
        &server,
        &a,
        "  dns: {respectTTL: true, refreshRate: 1s}\n",
        Some(&a.addr.ip().to_string()),
    );
    answered_by(&gw, "a");
    let hosts = dir.path().join("hosts");
    resolve_name_to(&hosts, Some("127.0.0.3"));
    let moved_after = answered_by(&gw, "b");
    eprintln!("a hosts-file name with respectTTL moved {moved_after:?} after the file changed");
    assert!(
        moved_after < Duration::from_secs(3),
        "moved after {moved_after:?}"
    );
    // getaddrinfo found the name in the file; kgw asked the server (A only: NXDOMAIN).
    let attempts = gw.stat(&format!("cluster.{CLUSTER}.update_attempt")).unwrap();
    assert!(attempts >= 2, "{attempts} lookups");
    assert_eq!(server.questions(), server.a_questions());
    assert!(
        server.a_questions() >= attempts - 1,
        "{} A questions",
        server.a_questions()
    );
}
