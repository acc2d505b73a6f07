//! The data plane as a client sees it: routing by host, path, header, method and weight,
//! Gateway addresses, Envoy's answers when the upstream fails, and the admin endpoints.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Two sample backends behind two Services, and routes that tell them apart.
fn routing_manifest(port: u16, backend_a: u16, backend_b: u16) -> String {
    let service = |name: &str, backend: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  ports:\n  - name: http\n    \
             port: 80\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  \
             namespace: apps\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nendpoints:\n- \
             addresses: [\"127.0.0.1\"]\nports:\n- name: http\n  port: {backend}\n---\n"
        )
    };
    format!(
        "{}{}apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: apps
spec:
  gatewayClassName: kgateway
  addresses:
  - type: IPAddress
    value: 127.0.0.1
  listeners:
  - name: http
    protocol: HTTP
    port: {port}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: routes
  namespace: apps
spec:
  parentRefs:
  - name: gw
  hostnames: [\"routes.example.com\"]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /anything/b}}
    backendRefs:
    - {{name: b, port: 80}}
  - matches:
    - path: {{type: Exact, value: /anything/exact}}
      method: POST
    backendRefs:
    - {{name: b, port: 80}}
  - matches:
    - path: {{type: PathPrefix, value: /anything}}
      headers:
      - {{name: x-pick, value: b}}
    backendRefs:
    - {{name: b, port: 80}}
  - matches:
    - path: {{type: PathPrefix, value: /status}}
    backendRefs:
    - {{name: a, port: 80, weight: 1}}
    - {{name: b, port: 80, weight: 3}}
  - matches:
    - path: {{type: PathPrefix, value: /anything/half}}
    backendRefs:
    - {{name: b, port: 80, weight: 1}}
    - {{name: ghost, port: 80, weight: 1}}
  - matches:
    - path: {{type: PathPrefix, value: /missing}}
    backendRefs:
    - {{name: nothere, port: 80}}
  - backendRefs:
    - {{name: a, port: 80}}
",
        service("a", backend_a),
        service("b", backend_b)
    )
}

/// Starts `kgw sample-backend` on a free port; returns it with its port.
fn backend() -> (Proc, u16) {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("kgw-backend-{port}.log"));
    (sample_backend_on(port, log), port)
}

/// The quickstart's httpbin EndpointSlice, pointed at a loopback `port`.
fn sample_endpoint_on(port: u16) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: httpbin-sample\n  namespace: httpbin\n  \
         labels:\n    kubernetes.io/service-name: httpbin\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\n\
         ports:\n- name: http\n  port: {port}\n"
    )
}

/// Sends a request; returns its status and whether cluster `b` served it (its request counter).
fn served_by(gw: &Gateway, path: &str, extra: &[&str]) -> (u16, bool) {
    let before = gw.stat("cluster.kube_apps_b_80.upstream_rq_total").unwrap_or(0);
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "host: routes.example.com",
    ]);
    cmd.args(extra);
    cmd.arg(format!("http://127.0.0.1:{}{path}", gw.port));
    let out = cmd.output().unwrap();
    let status = String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0);
    let after = gw.stat("cluster.kube_apps_b_80.upstream_rq_total").unwrap_or(0);
    (status, after > before)
}

#[test]
fn routing_by_host_path_header_method_and_weight() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, port_a) = backend();
    let (_b, port_b) = backend();
    let manifests = dir.path().join("m.yaml");
    let port = free_port();
    std::fs::write(&manifests, routing_manifest(port, port_a, port_b)).unwrap();
    let gw = GatewayBuilder::run(dir.path(), port)
        .arg("-f")
        .arg(manifests.to_str().unwrap())
        .start();

    assert_eq!(
        served_by(&gw, "/get", &[]),
        (200, false),
        "catch-all rule goes to a"
    );
    assert_eq!(
        served_by(&gw, "/anything/b/x", &[]),
        (200, true),
        "longer prefix wins"
    );
    assert_eq!(
        served_by(&gw, "/anything/bb", &[]),
        (200, false),
        "prefix matches whole segments"
    );
    assert_eq!(served_by(&gw, "/anything/exact", &["-X", "POST"]), (200, true));
    assert_eq!(
        served_by(&gw, "/anything/exact", &[]),
        (200, false),
        "method must match"
    );
    assert_eq!(
        served_by(&gw, "/anything/x", &["-H", "x-pick: b"]),
        (200, true),
        "header match"
    );
    assert_eq!(served_by(&gw, "/anything/x", &["-H", "x-pick: c"]), (200, false));
    let (status, _) = served_by(&gw, "/missing", &[]);
    assert_eq!(status, 500, "a backendRef to a missing Service answers 500");
    let (status, _) = curl(gw.port, "other.example.com", "/get");
    assert_eq!(status, 404, "unknown host: no route");

    // Weighted 1:3 over 200 requests: b gets about 150.
    let before = gw.stat("cluster.kube_apps_b_80.upstream_rq_total").unwrap();
    for i in 0..200 {
        let (status, body) = curl(gw.port, "routes.example.com", "/status/200");
        assert_eq!(status, 200, "request {i}: {body}\n{}", gw.proc.log_text());
    }
    let to_b = gw.stat("cluster.kube_apps_b_80.upstream_rq_total").unwrap() - before;
    assert!((110..=190).contains(&to_b), "weights 1:3 sent {to_b} of 200 to b");

    // Half the weight on a missing Service: that half is answered with 500.
    let mut errors = 0;
    for _ in 0..100 {
        let (status, _) = curl(gw.port, "routes.example.com", "/anything/half");
        assert!(status == 200 || status == 500, "{status}");
        errors += usize::from(status == 500);
    }
    assert!((25..=75).contains(&errors), "{errors} of 100 got 500");

    // The route status says what did not resolve.
    let out = gw.kgw(&["get", "httproute", "routes", "-n", "apps", "-o", "json"], "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let conditions = v["status"]["parents"][0]["conditions"].as_array().unwrap();
    let resolved = conditions.iter().find(|c| c["type"] == "ResolvedRefs").unwrap();
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");

    // spec.addresses: the listener binds 127.0.0.1 only, and the dump says so.
    let dump = gw.dump("GET", "?resource=dynamic_listeners");
    let listener = &dump["configs"][0]["active_state"]["listener"];
    assert_eq!(listener["address"]["socket_address"]["address"], "127.0.0.1");
    let ss = std::process::Command::new("ss")
        .args(["-Htln", &format!("sport = :{port}")])
        .output()
        .unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(
        ss.contains(&format!("127.0.0.1:{port}")) && !ss.contains("*:") && !ss.contains("[::]"),
        "{ss}"
    );
}

#[test]
fn upstream_failures_answer_as_envoy_does() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path())
        .arg("--route-timeout")
        .arg("1s")
        .start();

    // 504 UT: the upstream is slower than the route timeout.
    let t = Instant::now();
    let (status, body) = gw.curl("www.example.com", "/delay/5");
    assert_eq!((status, body.as_str()), (504, "upstream request timeout"));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // 503 UF: nothing listens on the endpoint.
    let closed = free_port();
    let out = gw.kgw(&["apply", "-f", "-"], &sample_endpoint_on(closed));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "endpointslices.discovery.k8s.io/httpbin-sample configured"
    );
    let (status, body) = gw.curl("www.example.com", "/get");
    assert_eq!(status, 503);
    assert!(
        body.starts_with("upstream connect error or disconnect/reset before headers. reset reason:"),
        "{body}"
    );
    let log = wait_for("access log lines", Duration::from_secs(2), || {
        let text = gw.proc.log_text();
        (text.contains("\" 504 UT ") && text.contains("\" 503 UF ")).then_some(text)
    });
    assert!(log.contains("kube_httpbin_httpbin_8000"));
    assert_eq!(
        gw.stat("cluster.kube_httpbin_httpbin_8000.upstream_cx_connect_fail"),
        Some(1)
    );
    assert_eq!(
        gw.stat("cluster.kube_httpbin_httpbin_8000.upstream_rq_timeout"),
        Some(1)
    );
}

#[test]
fn admin_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let out = gw.kgw(&["apply", "-f", "-"], GUIDE_POLICY);
    assert!(out.status.success());
    assert_eq!(gw.curl("www.example.com", "/get").0, 200);

    // resource= gives the items of one repeated field, each with its own @type.
    let dump = gw.dump("GET", "?resource=dynamic_active_clusters");
    let items = dump["configs"].as_array().unwrap();
    assert!(!items.is_empty());
    assert_eq!(
        items[0]["@type"],
        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster"
    );
    // mask= keeps only the masked fields.
    let dump = gw.dump(
        "GET",
        "?resource=dynamic_active_clusters&mask=cluster.name,cluster.connect_timeout",
    );
    let first = &dump["configs"][0]["cluster"];
    assert!(first.get("name").is_some() && first.get("connect_timeout").is_some());
    assert!(first.get("eds_cluster_config").is_none(), "{first}");
    // name_regex= filters by resource name.
    let dump = gw.dump("GET", "?include_eds&name_regex=kube_httpbin_.*");
    let clusters = dump["configs"][0]["dynamic_active_clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0]["cluster"]["name"], "kube_httpbin_httpbin_8000");
    let (status, _) = http(gw.admin, "GET", "/config_dump?resource=nonsense", "");
    assert_eq!(status, 400);

    // /clusters, text and JSON.
    let (status, text) = http(gw.admin, "GET", "/clusters", "");
    assert_eq!(status, 200);
    let host = format!(
        "kube_httpbin_httpbin_8000::127.0.0.1:{}::cx_active::1",
        gw.backend_port
    );
    assert!(text.contains(&host), "{text}");
    let (_, body) = http(gw.admin, "GET", "/clusters?format=json", "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["cluster_statuses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "kube_httpbin_httpbin_8000")
    );

    // /stats and /stats/prometheus carry the same counter.
    assert_eq!(
        gw.stat("cluster.kube_httpbin_httpbin_8000.upstream_cx_total"),
        Some(1)
    );
    let (_, prom) = http(gw.admin, "GET", "/stats/prometheus", "");
    assert!(
        prom.contains("# TYPE envoy_cluster_upstream_cx_total counter"),
        "{prom}"
    );
    assert!(
        prom.contains("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"kube_httpbin_httpbin_8000\"} 1")
    );
    let (_, filtered) = http(gw.admin, "GET", "/stats?filter=upstream_cx_total", "");
    assert!(
        filtered.lines().all(|l| l.contains("upstream_cx_total")),
        "{filtered}"
    );

    // kgw get: kubectl spellings, tables, all namespaces.
    for kind in [
        "backendconfigpolicy",
        "backendconfigpolicies",
        "BackendConfigPolicy",
    ] {
        let out = gw.kgw(&["get", kind, "-n", "httpbin"], "");
        assert!(out.status.success());
        assert!(stdout(&out).contains("httpbin-keepalive"), "{}", stdout(&out));
    }
    let out = gw.kgw(&["get", "gateways", "-A"], "");
    assert!(
        stdout(&out).contains("kgateway-system") && stdout(&out).contains("http"),
        "{}",
        stdout(&out)
    );
    let out = gw.kgw(&["get", "deployments"], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("doesn't have a resource type \"deployments\""),
        "{}",
        stderr(&out)
    );

    // kgw delete -f FILE removes what the file names.
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, GUIDE_POLICY).unwrap();
    let out = gw.kgw(&["delete", "-f", file.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gw.kgw(&["get", "backendconfigpolicy", "-n", "httpbin"], "");
    assert!(!stdout(&out).contains("httpbin-keepalive"));
}

#[test]
fn hop_by_hop_headers_stop_at_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-H",
            "host: www.example.com",
            "-H",
            "Connection: keep-alive, X-Hop",
            "-H",
            "X-Hop: 1",
        ])
        .args([
            "-H",
            "Proxy-Connection: keep-alive",
            "-H",
            "TE: trailers",
            "-H",
            "X-Kept: yes",
        ])
        .args(["-H", "X-Forwarded-For: 192.0.2.7"])
        .arg(format!("http://127.0.0.1:{}/headers", gw.port))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let headers = v["headers"].as_object().unwrap();
    for gone in ["X-Hop", "Proxy-Connection", "Te"] {
        assert!(!headers.contains_key(gone), "{gone} was forwarded: {headers:?}");
    }
    assert_eq!(headers["X-Kept"], "yes");
    assert_eq!(
        headers["X-Forwarded-For"], "192.0.2.7, 127.0.0.1",
        "the client's address is appended"
    );
    assert_eq!(headers["X-Forwarded-Proto"], "http");
}

/// A client that leaves while the response is still coming does not cost the upstream
/// connection: the small rest is read and the connection pooled, so the next request reuses it.
/// A keep-alive backend on a raw socket: `answer` writes the response to each request head it
/// reads (it returns false to end the connection). Returns its port and its accepted-count.
fn raw_backend(
    answer: impl Fn(&mut std::net::TcpStream) -> bool + Send + Sync + 'static,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" && !answer(&mut stream) {
                        return;
                    }
                }
            });
        }
    });
    (port, accepted)
}

#[test]
fn a_client_leaving_mid_response_keeps_the_upstream_connection() {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;

    // A keep-alive backend that sends each response in two parts, 500 ms apart.
    let (backend_port, accepted) = raw_backend(|stream| {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
        if stream.write_all(head.as_bytes()).is_err() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
        stream.write_all(b"world").is_ok()
    });

    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let out = gw.kgw(&["apply", "-f", "-"], &sample_endpoint_on(backend_port));
    assert!(out.status.success(), "{}", stderr(&out));

    // The client reads the first part and leaves.
    let mut client = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    client
        .write_all(b"GET /get HTTP/1.1\r\nhost: www.example.com\r\n\r\n")
        .unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("hello") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "the gateway closed before the first part");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(client);

    let cluster = "cluster.kube_httpbin_httpbin_8000";
    wait_for(
        "the upstream connection back in the pool",
        Duration::from_secs(3),
        || (gw.stat(&format!("{cluster}.upstream_cx_pool_idle")) == Some(1)).then_some(()),
    );
    let (status, body) = gw.curl("www.example.com", "/get");
    assert_eq!((status, body.as_str()), (200, "helloworld"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the backend saw one connection"
    );
    assert_eq!(gw.stat(&format!("{cluster}.upstream_cx_total")), Some(1));
}

/// Request bodies pass through as they came: with a length, chunked, after `Expect:
/// 100-continue`, and one the backend answers before reading it all (the sample backend reads
/// 1 MiB at most) gets that answer, not an error.
#[test]
fn request_bodies_reach_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let post = |extra: &[&str], data: &str| -> (u16, serde_json::Value) {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-H", "host: www.example.com"])
            .args(extra)
            .args([
                "--data-binary",
                data,
                &format!("http://127.0.0.1:{}/anything", gw.port),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (
            status.parse().unwrap(),
            serde_json::from_str(body).unwrap_or_default(),
        )
    };
    let (status, echo) = post(&[], "hello");
    assert_eq!((status, echo["data"].as_str()), (200, Some("hello")));
    let (status, echo) = post(&["-H", "transfer-encoding: chunked"], "hello chunked");
    assert_eq!((status, echo["data"].as_str()), (200, Some("hello chunked")));

    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'a'; 3 << 20]).unwrap();
    let at_big = format!("@{}", big.display());
    // curl sends `Expect: 100-continue` for a body this large.
    let (status, echo) = post(&[], &at_big);
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["Content-Length"], "3145728");
    assert!(
        echo["headers"].get("Expect").is_none(),
        "the gateway answered the Expect itself"
    );
    // And the connection is usable after.
    assert_eq!(gw.curl("www.example.com", "/get").0, 200);
}

/// An upstream's interim answer (103 Early Hints) reaches an HTTP/1.1 client before the final
/// one, on a connection that is reused after; an HTTP/1.0 client, which cannot take interim
/// answers, gets the final one alone.
#[test]
fn interim_responses_reach_http11_clients_only() {
    use std::io::{Read, Write};

    let (backend_port, _) = raw_backend(|stream| {
        let answer = "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
                      HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        stream.write_all(answer.as_bytes()).is_ok()
    });

    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let out = gw.kgw(&["apply", "-f", "-"], &sample_endpoint_on(backend_port));
    assert!(out.status.success(), "{}", stderr(&out));

    let exchange = |client: &mut std::net::TcpStream, version: &str| -> String {
        let request =
            format!("GET /get {version}\r\nhost: www.example.com\r\nconnection: keep-alive\r\n\r\n");
        client.write_all(request.as_bytes()).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.ends_with(b"\r\n\r\nok") {
            let n = client.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "the gateway closed early: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(seen).unwrap()
    };
    let mut client = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        let seen = exchange(&mut client, "HTTP/1.1");
        let hints = seen.find("HTTP/1.1 103 Early Hints\r\n").expect(&seen);
        let final_head = seen.find("HTTP/1.1 200 OK\r\n").expect(&seen);
        assert!(hints < final_head, "{seen}");
        assert!(seen.contains("link: </style.css>; rel=preload\r\n"), "{seen}");
    }
    let mut old_client = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    old_client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let seen = exchange(&mut old_client, "HTTP/1.0");
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
    assert!(!seen.contains("103"), "{seen}");
    let cluster = "cluster.kube_httpbin_httpbin_8000";
    assert_eq!(
        gw.stat(&format!("{cluster}.upstream_cx_total")),
        Some(1),
        "one upstream connection served all three"
    );
}
