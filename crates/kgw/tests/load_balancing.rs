//! kgateway's "load balancing", "consistent hashing" and "zone-aware routing" guides, end to
//! end: the real kgw, three real backends on distinct loopback addresses (127.0.0.2-4, one
//! port, as one EndpointSlice lists them) that answer with their name, and the guides' YAML.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;

const CLUSTER: &str = "kube_httpbin_httpbin_80";

/// A backend that answers every request with its name; requests to `/hold` on a holding
/// backend wait until the test releases them.
struct Backend {
    held: Arc<AtomicUsize>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Backend {
    fn start(ip: &str, port: u16, name: &'static str, holds: bool) -> Backend {
        let listener = TcpListener::bind((ip, port)).expect("bind a loopback backend");
        let held = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (h, g) = (held.clone(), gate.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (h, g) = (h.clone(), g.clone());
                std::thread::spawn(move || serve(stream, name, holds, &h, &g));
            }
        });
        Backend { held, gate }
    }

    fn release(&self) {
        let (released, wake) = &*self.gate;
        *released.lock().unwrap() = true;
        wake.notify_all();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.release();
    }
}

/// One connection: requests without a body, each answered with the backend's name.
fn serve(stream: TcpStream, name: &str, holds: bool, held: &AtomicUsize, gate: &(Mutex<bool>, Condvar)) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        if holds && path.starts_with("/hold") {
            held.fetch_add(1, Ordering::SeqCst);
            let (released, wake) = gate;
            let mut r = released.lock().unwrap();
            while !*r {
                r = wake.wait(r).unwrap();
            }
            drop(r);
            held.fetch_sub(1, Ordering::SeqCst);
        }
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}", name.len());
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Three backends on 127.0.0.2-4 (one port) and a gateway routing every request of
/// `www.example.com` to Service httpbin/httpbin, whose EndpointSlice lists them (with `zones`,
/// if given) — the guides' namespace and Service.
struct Setup {
    gw: Gateway,
    backends: Vec<Backend>,
    backend_port: u16,
    _dir: tempfile::TempDir,
}

const IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
const NAMES: [&str; 3] = ["backend-a", "backend-b", "backend-c"];

fn setup(count: usize, zones: &[&str], holds: bool, extra_args: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let backend_port = free_port();
    let backends: Vec<Backend> = (0..count)
        .map(|i| Backend::start(IPS[i], backend_port, NAMES[i], holds && i == 0))
        .collect();
    let manifests = dir.path().join("app.yaml");
    std::fs::write(&manifests, app(port, backend_port, count, zones)).unwrap();
    let mut builder = GatewayBuilder::run(dir.path(), port)
        .arg("-f")
        .arg(manifests.to_str().unwrap());
    for a in extra_args {
        builder = builder.arg(*a);
    }
    let gw = builder.start();
    Setup {
        gw,
        backends,
        backend_port,
        _dir: dir,
    }
}

fn app(port: u16, backend_port: u16, count: usize, zones: &[&str]) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: http\n  namespace: httpbin\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: {port}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: httpbin\n  namespace: httpbin\nspec:\n  ports:\n  - port: 80\n---\n\
         {}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: httpbin\n  namespace: httpbin\nspec:\n  \
         parentRefs:\n  - name: http\n  hostnames: [\"www.example.com\"]\n  rules:\n  - backendRefs:\n    - name: httpbin\n      port: 80\n",
        endpoint_slice(backend_port, count, zones)
    )
}

fn endpoint_slice(backend_port: u16, count: usize, zones: &[&str]) -> String {
    let mut endpoints = String::new();
    for (i, ip) in IPS.iter().take(count).enumerate() {
        endpoints.push_str(&format!("- addresses: [\"{ip}\"]\n"));
        if let Some(zone) = zones.get(i) {
            endpoints.push_str(&format!("  zone: {zone}\n"));
        }
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: httpbin-1\n  namespace: httpbin\n  labels:\n    \
         kubernetes.io/service-name: httpbin\naddressType: IPv4\nendpoints:\n{endpoints}ports:\n- port: {backend_port}\n"
    )
}

/// A keep-alive client connection to the gateway.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// One answer: status, headers (lowercase names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn connect(port: u16) -> Client {
        Client::from_stream(TcpStream::connect(("127.0.0.1", port)).unwrap())
    }

    /// From a given source address (for the source IP hash policy).
    fn connect_from(source: &str, port: u16) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let from: SocketAddr = format!("{source}:0").parse().unwrap();
        socket.bind(&from.into()).unwrap();
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        socket.connect(&to.into()).unwrap();
        Client::from_stream(socket.into())
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: www.example.com\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.writer.write_all(request.as_bytes()).unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut answer_headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                answer_headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let length: usize = answer_headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        Answer {
            status,
            headers: answer_headers,
            body: String::from_utf8_lossy(&body).to_string(),
        }
    }

    /// Which backend served `path`.
    fn served_by(&mut self, path: &str, headers: &[(&str, &str)]) -> String {
        let answer = self.get(path, headers);
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }
}

fn apply(gw: &Gateway, yaml: &str) {
    let out = gw.kgw(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Applies a policy and waits until the dump shows its load balancing (a policy change is
/// served once it is in the dump).
fn apply_policy(gw: &Gateway, yaml: &str, dump_shows: &str) {
    apply(gw, yaml);
    wait_for("the policy in the dump", Duration::from_secs(5), || {
        gw.cluster(CLUSTER).filter(|c| c.to_string().contains(dump_shows))
    });
}

fn counts(names: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for n in names {
        *out.entry(n).or_default() += 1;
    }
    out
}

/// kgateway's load balancing guide, "Round robin", verbatim.
const ROUND_ROBIN: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-lb-policy
  namespace: httpbin
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  loadBalancer:
    roundRobin:
      slowStart:
        window: 10s
        aggression: "1.5"
        minWeightPercent: 10
"#;

/// kgateway's load balancing guide, "Least requests", verbatim.
const LEAST_REQUEST: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-lb-policy
  namespace: httpbin
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  loadBalancer:
    leastRequest:
      choiceCount: 3
      slowStart:
        window: 10s
        aggression: "1.5"
        minWeightPercent: 10
"#;

/// kgateway's load balancing guide, "Random", verbatim.
const RANDOM: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-lb-policy
  namespace: httpbin
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  loadBalancer:
    random: {}
"#;

/// kgateway's consistent hashing guide, "Ringhash" with headers, verbatim
/// (`useHostnameForHashing` changes nothing on a Service's endpoints, which have no hostname:
/// kgateway and kgw hash their address either way).
const RING_HASH_HEADERS: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-hash
  namespace: httpbin
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  loadBalancer:
    ringHash:
      minimumRingSize: 1024
      maximumRingSize: 2048
      useHostnameForHashing: true
      hashPolicies:
      - header:
          name: "x-user-id"
        terminal: true
      - header:
          name: "x-session-id"
        terminal: false
    closeConnectionsOnHostSetChange: true
"#;

/// The consistent hashing guide, "Ringhash" with cookies, verbatim.
const RING_HASH_COOKIES: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-hash
  namespace: httpbin
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  loadBalancer:
    ringHash:
      minimumRingSize: 1024
      maximumRingSize: 2048
      hashPolicies:
      - cookie:
          name: "session-id"
          path: "/api"
          ttl: 30m
          httpOnly: true
          secure: true
          sameSite: "Strict"
        terminal: true
"#;

/// The consistent hashing guide, "Maglev" with the source IP address, verbatim.
const MAGLEV_SOURCE_IP: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-hash
  namespace: httpbin
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  loadBalancer:
    maglev:
      hashPolicies:
      - sourceIP: {}
        terminal: true
"#;

/// The consistent hashing guide, "Maglev" with headers, verbatim (see RING_HASH_HEADERS).
const MAGLEV_HEADERS: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-hash
  namespace: httpbin
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  loadBalancer:
    maglev:
      useHostnameForHashing: true
      hashPolicies:
      - header:
          name: "x-user-id"
        terminal: true
      - header:
          name: "x-session-id"
        terminal: false
    closeConnectionsOnHostSetChange: true
"#;

/// kgateway's zone-aware routing guide, "Prefer local zone", verbatim.
const ZONE_AWARE: &str = r#"apiVersion: gateway.kgateway.dev/v1alpha1
kind: BackendConfigPolicy
metadata:
  name: httpbin-zone-aware
  namespace: httpbin
spec:
  targetRefs:
    - group: ""
      kind: Service
      name: httpbin
  loadBalancer:
    roundRobin: {}
    zoneAware:
      preferLocal:
        minEndpointsThreshold: 3
        routingEnabled: 100
"#;

#[test]
fn round_robin_alternates() {
    let s = setup(3, &[], false, &[]);
    apply_policy(&s.gw, ROUND_ROBIN, "round_robin");
    let mut client = Client::connect(s.gw.port);
    let order: Vec<String> = (0..6).map(|_| client.served_by("/get", &[])).collect();
    eprintln!("round robin: {order:?}");
    // Each of the three, in turn, twice.
    assert_eq!(order[..3], order[3..]);
    let mut first = order[..3].to_vec();
    first.sort();
    assert_eq!(first, NAMES);
}

#[test]
fn random_reaches_every_backend() {
    let s = setup(3, &[], false, &[]);
    apply_policy(&s.gw, RANDOM, "envoy.load_balancing_policies.random");
    let mut client = Client::connect(s.gw.port);
    let spread = counts((0..300).map(|_| client.served_by("/get", &[])));
    eprintln!("random, 300 requests: {spread:?}");
    for name in NAMES {
        assert!((50..=150).contains(&spread[name]), "{spread:?}");
    }
}

#[test]
fn least_request_prefers_the_idle_backend() {
    let s = setup(2, &[], true, &[]);
    apply_policy(&s.gw, LEAST_REQUEST, "least_request");
    let port = s.gw.port;
    // Slow requests: those that land on backend-a are held there, those on backend-b answer.
    let mut holders = Vec::new();
    for _ in 0..40 {
        if s.backends[0].held.load(Ordering::SeqCst) >= 3 {
            break;
        }
        let held_before = s.backends[0].held.load(Ordering::SeqCst);
        holders.push(std::thread::spawn(move || {
            Client::connect(port).served_by("/hold", &[])
        }));
        // Wait until this request was answered (backend-b) or is held (backend-a).
        wait_for("the slow request to land", Duration::from_secs(5), || {
            let finished = holders.last().unwrap().is_finished();
            (finished || s.backends[0].held.load(Ordering::SeqCst) > held_before).then_some(())
        });
    }
    assert_eq!(
        s.backends[0].held.load(Ordering::SeqCst),
        3,
        "three requests in flight on backend-a"
    );
    let mut client = Client::connect(port);
    let spread = counts((0..60).map(|_| client.served_by("/get", &[])));
    eprintln!("least request, backend-a holding 3 requests, 60 new ones: {spread:?}");
    // Three random choices out of two: backend-a only when all three are it (1 in 8); round
    // robin would give it half.
    let busy = spread.get("backend-a").copied().unwrap_or(0);
    assert!(busy <= 18, "the busy backend got {busy} of 60");
    s.backends[0].release();
    for h in holders {
        let who = h.join().unwrap();
        assert!(NAMES.contains(&who.as_str()));
    }
}

#[test]
fn ring_hash_keeps_each_header_value_on_one_backend_and_spreads_values() {
    let s = setup(3, &[], false, &[]);
    apply_policy(&s.gw, RING_HASH_HEADERS, "ring_hash");
    let mut client = Client::connect(s.gw.port);
    let mut owner: HashMap<String, String> = HashMap::new();
    for key in 0..1000 {
        let user = format!("user-{key}");
        let who = client.served_by("/get", &[("x-user-id", &user)]);
        owner.insert(user, who);
    }
    let spread = counts(owner.values().cloned());
    eprintln!("ring hash, 1000 x-user-id values over 3 backends: {spread:?}");
    for name in NAMES {
        assert!((200..=470).contains(&spread[name]), "{spread:?}");
    }
    // Each value again, twice: always the same backend.
    for key in (0..1000).step_by(7) {
        let user = format!("user-{key}");
        for _ in 0..2 {
            assert_eq!(
                client.served_by("/get", &[("x-user-id", &user)]),
                owner[&user],
                "{user} moved"
            );
        }
    }
    // x-user-id is terminal: x-session-id does not change its backend.
    assert_eq!(
        client.served_by("/get", &[("x-user-id", "user-1"), ("x-session-id", "s-9")]),
        owner["user-1"]
    );
    // Without either header: no hash, a random backend.
    let spread = counts((0..90).map(|_| client.served_by("/get", &[])));
    assert_eq!(spread.len(), 3, "{spread:?}");
}

#[test]
fn cookie_hash_with_a_ttl_sets_the_cookie_and_then_sticks() {
    let s = setup(3, &[], false, &[]);
    apply_policy(&s.gw, RING_HASH_COOKIES, "ring_hash");
    let mut client = Client::connect(s.gw.port);
    let first = client.get("/api/items", &[]);
    assert_eq!(first.status, 200);
    let set_cookie = first
        .header("set-cookie")
        .expect("a generated cookie")
        .to_string();
    eprintln!("first answer: set-cookie: {set_cookie}");
    let value = set_cookie
        .strip_prefix("session-id=\"")
        .and_then(|rest| rest.split_once('"'))
        .map(|(v, _)| v.to_string())
        .unwrap_or_else(|| panic!("{set_cookie}"));
    assert_eq!(
        set_cookie,
        format!("session-id=\"{value}\"; Max-Age=1800; Path=/api; HttpOnly; Secure; SameSite=Strict")
    );
    // With the cookie, from other connections too: the same backend, and no new cookie.
    let cookie = format!("session-id=\"{value}\"");
    for _ in 0..10 {
        let mut other = Client::connect(s.gw.port);
        let answer = other.get("/api/items", &[("cookie", &cookie)]);
        assert_eq!(answer.body, first.body);
        assert_eq!(answer.header("set-cookie"), None);
    }
    // Different cookies spread over the backends.
    let spread =
        counts((0..300).map(|i| client.served_by("/api/items", &[("cookie", &format!("session-id=v{i}"))])));
    eprintln!("cookie hash, 300 cookies: {spread:?}");
    assert_eq!(spread.len(), 3, "{spread:?}");
}

#[test]
fn maglev_is_consistent_per_source_ip_and_per_header() {
    let s = setup(3, &[], false, &[]);
    apply_policy(&s.gw, MAGLEV_SOURCE_IP, "maglev");
    // Clients from 20 loopback addresses, each on two connections (two source ports).
    let mut by_source = HashMap::new();
    for i in 0..20 {
        let source = format!("127.0.1.{}", i + 1);
        let a = Client::connect_from(&source, s.gw.port).served_by("/get", &[]);
        let b = Client::connect_from(&source, s.gw.port).served_by("/get", &[]);
        assert_eq!(a, b, "{source} moved between connections");
        by_source.insert(source, a);
    }
    let spread = counts(by_source.values().cloned());
    eprintln!("maglev, 20 source addresses: {spread:?}");
    assert!(spread.len() >= 2, "{spread:?}");

    // (Its hash policies are on the route; the cluster shows its other setting.)
    apply_policy(&s.gw, MAGLEV_HEADERS, "close_connections_on_host_set_change");
    let mut client = Client::connect(s.gw.port);
    let mut owner: HashMap<String, String> = HashMap::new();
    for key in 0..300 {
        let user = format!("user-{key}");
        let who = client.served_by("/get", &[("x-user-id", &user)]);
        assert_eq!(client.served_by("/get", &[("x-user-id", &user)]), who);
        owner.insert(user, who);
    }
    let spread = counts(owner.values().cloned());
    eprintln!("maglev, 300 x-user-id values: {spread:?}");
    assert_eq!(spread.len(), 3, "{spread:?}");
}

#[test]
fn close_connections_on_host_set_change_closes_pooled_and_in_use_connections() {
    let s = setup(2, &[], true, &[]);
    apply_policy(&s.gw, RING_HASH_HEADERS, "close_connections_on_host_set_change");
    let port = s.gw.port;
    let stat = |name: &str| s.gw.stat(&format!("cluster.{CLUSTER}.{name}")).unwrap();
    let mut client = Client::connect(port);
    for key in 0..10 {
        client.served_by("/get", &[("x-user-id", &format!("u{key}"))]);
    }
    wait_for(
        "a pooled connection to each endpoint",
        Duration::from_secs(2),
        || (stat("upstream_cx_pool_idle") >= 2).then_some(()),
    );
    // A request in flight on backend-a (the first x-user-id value that hashes there).
    let mut in_flight = None;
    for key in 0..50 {
        let user = format!("hold-{key}");
        let request =
            std::thread::spawn(move || Client::connect(port).served_by("/hold", &[("x-user-id", &user)]));
        wait_for("the request to land", Duration::from_secs(5), || {
            (request.is_finished() || s.backends[0].held.load(Ordering::SeqCst) == 1).then_some(())
        });
        if s.backends[0].held.load(Ordering::SeqCst) == 1 {
            in_flight = Some(request);
            break;
        }
        assert_eq!(request.join().unwrap(), "backend-b");
    }
    let in_flight = in_flight.expect("a value hashed to backend-a");
    let idle = stat("upstream_cx_pool_idle");
    let destroyed_before = stat("upstream_cx_destroy");

    // A third endpoint joins: the pooled connections close, though their hosts stayed.
    let _third = Backend::start(IPS[2], s.backend_port, NAMES[2], false);
    apply(&s.gw, &endpoint_slice(s.backend_port, 3, &[]));
    wait_for("the pool to empty", Duration::from_secs(5), || {
        (stat("upstream_cx_pool_idle") == 0).then_some(())
    });
    assert_eq!(stat("upstream_cx_destroy"), destroyed_before + idle);

    // The one in use finishes its request, then closes instead of going back to the pool.
    s.backends[0].release();
    assert_eq!(in_flight.join().unwrap(), "backend-a");
    wait_for("the in-use connection to close", Duration::from_secs(5), || {
        (stat("upstream_cx_destroy") == destroyed_before + idle + 1).then_some(())
    });
    assert_eq!(stat("upstream_cx_pool_idle"), 0);
}

#[test]
fn slow_start_gives_a_new_endpoint_little_traffic_at_first() {
    let s = setup(2, &[], false, &[]);
    apply_policy(&s.gw, ROUND_ROBIN, "slow_start_config");
    let _third = Backend::start(IPS[2], s.backend_port, NAMES[2], false);
    apply(&s.gw, &endpoint_slice(s.backend_port, 3, &[]));
    let mut client = Client::connect(s.gw.port);
    wait_for("the new endpoint to serve", Duration::from_secs(5), || {
        (client.served_by("/get", &[]) == NAMES[2]).then_some(())
    });
    // In its first second of a 10 s window, at aggression 1.5, it weighs about
    // max(0.1, (t/10)^(1/1.5)) ~ 0.1-0.22 against 1 for the others: ~5-10%, not a third.
    let spread = counts((0..300).map(|_| client.served_by("/get", &[])));
    eprintln!("slow start, 300 requests just after the third endpoint joined: {spread:?}");
    let new = spread.get(NAMES[2]).copied().unwrap_or(0);
    assert!(new < 60, "{spread:?}");
}

#[test]
fn zone_aware_routing_keeps_requests_in_the_proxy_zone() {
    let zones = ["us-east-1a", "us-east-1b", "us-east-1b"];
    let s = setup(3, &zones, false, &["--zone", "us-east-1a"]);
    apply_policy(&s.gw, ZONE_AWARE, "zone_aware_lb_config");
    let mut client = Client::connect(s.gw.port);
    let spread = counts((0..30).map(|_| client.served_by("/get", &[])));
    eprintln!("zone aware from us-east-1a: {spread:?}");
    assert_eq!(spread.get("backend-a"), Some(&30), "{spread:?}");
    assert!(s.gw.stat(&format!("cluster.{CLUSTER}.lb_zone_routing_all_directly")) >= Some(30));

    // Another proxy, in us-east-1b: its two local endpoints.
    let s = setup(3, &zones, false, &["--zone", "us-east-1b"]);
    apply_policy(&s.gw, ZONE_AWARE, "zone_aware_lb_config");
    let mut client = Client::connect(s.gw.port);
    let spread = counts((0..30).map(|_| client.served_by("/get", &[])));
    assert_eq!(spread.get("backend-a"), None, "{spread:?}");
    assert_eq!(spread.len(), 2, "{spread:?}");
}

#[test]
fn without_a_policy_endpoints_in_zones_are_balanced_by_zone() {
    // kgateway's default cluster is locality weighted: each zone weighs the same, whatever
    // its number of endpoints (as Envoy does with EDS localities of weight 1).
    let s = setup(3, &["us-east-1a", "us-east-1b", "us-east-1b"], false, &[]);
    let mut client = Client::connect(s.gw.port);
    let spread = counts((0..600).map(|_| client.served_by("/get", &[])));
    eprintln!("no policy, zones a (1 endpoint) and b (2): {spread:?}");
    let a = spread["backend-a"];
    assert!((240..=360).contains(&a), "{spread:?}");
}
