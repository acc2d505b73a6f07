//! The kgateway "HTTP connection settings" guide with kgw: a BackendConfigPolicy's
//! `commonHttpProtocolOptions`, `http1ProtocolOptions` and `perConnectionBufferLimitBytes` on real
//! connections. The backend is a raw HTTP/1.1 server in the test (so it can answer with many
//! headers or with trailers, and show the request head as it came), or kgw's sample backend for
//! `/delay`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const NS: &str = "httpbin";
const CLUSTER: &str = "kube_httpbin_httpbin_80";

/// The guide's HTTP protocol options policy, verbatim except `headersWithUnderscoresAction`,
/// which the pinned CRD does not have (kgw refuses it as an unknown field).
const GUIDE_HTTP_OPTIONS: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-policy
  namespace: httpbin
spec:
  targetRefs:
  - name: httpbin
    group: ""
    kind: Service
  commonHttpProtocolOptions:
    idleTimeout: 10s
    maxHeadersCount: 15
    maxStreamDuration: 30s
    maxRequestsPerConnection: 100
"#;

/// The guide's general connection settings policy, verbatim.
const GUIDE_GENERAL: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: httpbin-policy
  namespace: httpbin
spec:
  targetRefs:
  - name: httpbin
    group: ""
    kind: Service
  connectTimeout: 5s
  perConnectionBufferLimitBytes: 1024
"#;

fn policy(spec: &str) -> String {
    format!(
        "kind: BackendConfigPolicy\napiVersion: gateway.kgateway.dev/v1alpha1\nmetadata:\n  name: httpbin-policy\n  \
         namespace: httpbin\nspec:\n  targetRefs:\n  - name: httpbin\n    group: \"\"\n    kind: Service\n{spec}"
    )
}

/// A raw HTTP/1.1 backend: keeps connections open, records every request head as it came, and
/// answers `/headers/N` with N header lines, `/trailers` with a chunked body and a trailer, `/big`
/// with 64 KiB, `/stall` with half its body then a 3 s pause, anything else with a small body.
struct RawBackend {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<u32>>,
}

impl RawBackend {
    fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (h, c) = (heads.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                *c.lock().unwrap() += 1;
                let h = h.clone();
                std::thread::spawn(move || serve(stream, h));
            }
        });
        RawBackend {
            port,
            heads,
            connections,
        }
    }

    fn last_head(&self) -> String {
        self.heads.lock().unwrap().last().cloned().unwrap_or_default()
    }
}

fn serve(stream: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let chunked_upload =
            path == "/up" && head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        heads.lock().unwrap().push(head);
        if chunked_upload {
            // The chunked body as it arrived, up to the blank line after the last chunk and its
            // trailers (test bodies are single-line chunks), kept as `body:...` for the test.
            let mut body = String::new();
            let mut last_chunk = false;
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                body.push_str(&line);
                if line == "0\r\n" {
                    last_chunk = true;
                } else if last_chunk && line == "\r\n" {
                    break;
                }
            }
            heads.lock().unwrap().push(format!("body:{body}"));
        }
        let answer = if let Some(n) = path.strip_prefix("/headers/") {
            let n: usize = n.parse().unwrap_or(0);
            let mut a = String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
            for i in 1..n {
                a.push_str(&format!("x-extra-{i}: {i}\r\n"));
            }
            a.push_str("\r\nok");
            a.into_bytes()
        } else if path == "/trailers" {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
              5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n"
                .to_vec()
        } else if path == "/stall" {
            // Half the body, then nothing for 3 s.
            if out
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
                .is_err()
            {
                return;
            }
            std::thread::sleep(Duration::from_secs(3));
            b"world".to_vec()
        } else if path == "/big" {
            let mut a = b"HTTP/1.1 200 OK\r\ncontent-length: 65536\r\n\r\n".to_vec();
            a.extend(std::iter::repeat_n(b'x', 65536));
            a
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n".to_vec()
        };
        if out.write_all(&answer).is_err() {
            return;
        }
    }
}

fn setup(dir: &std::path::Path, backend: u16) -> Gateway {
    let port = free_port();
    let gw = GatewayBuilder::run(dir, port).start();
    apply(&gw, &route_all_to(NS, "httpbin", port, backend));
    wait_for("the route", Duration::from_secs(10), || {
        (gw.curl("x", "/").0 == 200).then_some(())
    });
    gw
}

/// Waits (5 s at most) for kgw's access log to hold a line with `needle`.
fn wait_for_log_line(gw: &Gateway, needle: &str) {
    wait_for("the access log line", Duration::from_secs(5), || {
        gw.proc
            .log_text()
            .lines()
            .any(|l| l.contains(needle))
            .then_some(())
    });
}

fn apply(gw: &Gateway, yaml: &str) {
    let out = gw.kgw(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Applies `yaml` and waits until the cluster's dump shows `field` in its HTTP options.
fn apply_policy(gw: &Gateway, yaml: &str, shows: impl Fn(&serde_json::Value) -> bool) {
    apply(gw, yaml);
    wait_for("the policy in the dump", Duration::from_secs(10), || {
        gw.cluster(CLUSTER).filter(|c| shows(c)).map(|_| ())
    });
}

fn http_options(c: &serde_json::Value) -> &serde_json::Value {
    &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
}

fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.stat(&format!("cluster.{CLUSTER}.{name}")).unwrap_or(0)
}

/// One request on a new client connection; the raw response.
fn raw(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_guides_policies_are_taken_and_dumped_as_kgateway_renders_them() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RawBackend::start();
    let gw = setup(dir.path(), backend.port);
    apply_policy(&gw, GUIDE_HTTP_OPTIONS, |c| {
        http_options(c)["common_http_protocol_options"]["max_headers_count"] == 15
    });
    let c = gw.cluster(CLUSTER).unwrap();
    let common = &http_options(&c)["common_http_protocol_options"];
    assert_eq!(common["idle_timeout"], "10s");
    assert_eq!(common["max_stream_duration"], "30s");
    assert_eq!(common["max_requests_per_connection"], 100);
    assert_eq!(gw.curl("x", "/headers/10").0, 200, "10 headers are within 15");

    apply_policy(&gw, GUIDE_GENERAL, |c| {
        c["per_connection_buffer_limit_bytes"] == 1024
    });
    // A 64 KiB answer goes through 1 KiB reads whole.
    let (status, body) = gw.curl("x", "/big");
    assert_eq!((status, body.len()), (200, 65536));
}

#[test]
fn max_requests_per_connection_n_plus_one_requests_open_two_connections() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RawBackend::start();
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port).start();
    // The policy comes with the route: every request that reaches the backend counts.
    let yaml = format!(
        "{}---\n{}",
        route_all_to(NS, "httpbin", port, backend.port),
        policy("  commonHttpProtocolOptions:\n    maxRequestsPerConnection: 3\n")
    );
    apply(&gw, &yaml);
    // The first 200 is request 1 (earlier attempts found no route and reached no backend).
    wait_for("the route", Duration::from_secs(10), || {
        (gw.curl("x", "/").0 == 200).then_some(())
    });
    assert_eq!(
        http_options(&gw.cluster(CLUSTER).unwrap())["common_http_protocol_options"]["max_requests_per_connection"],
        3
    );
    for _ in 0..3 {
        assert_eq!(gw.curl("x", "/").0, 200);
    }
    let opened = stat(&gw, "upstream_cx_total");
    eprintln!("4 requests with maxRequestsPerConnection 3: {opened} upstream connections");
    assert_eq!(opened, 2, "N+1 requests, N per connection: 2 connections");
    assert_eq!(*backend.connections.lock().unwrap(), 2);
    assert_eq!(stat(&gw, "upstream_cx_max_requests"), 1);
    assert_eq!(backend.heads.lock().unwrap().len(), 4);
}

#[test]
fn a_pooled_connection_idle_past_idle_timeout_is_closed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RawBackend::start();
    let gw = setup(dir.path(), backend.port);
    apply_policy(
        &gw,
        &policy("  commonHttpProtocolOptions:\n    idleTimeout: 1s\n"),
        |c| http_options(c)["common_http_protocol_options"]["idle_timeout"] == "1s",
    );
    let before = stat(&gw, "upstream_cx_idle_timeout");
    assert_eq!(gw.curl("x", "/").0, 200);
    let pooled = Instant::now();
    let after = wait_for("the idle timeout", Duration::from_secs(5), || {
        (stat(&gw, "upstream_cx_idle_timeout") > before).then(|| pooled.elapsed())
    });
    eprintln!("idleTimeout 1s: the pooled connection closed {after:?} after its request");
    assert!(
        after >= Duration::from_millis(900),
        "not before its time: {after:?}"
    );
    assert!(after <= Duration::from_millis(1600), "{after:?}");
    assert_eq!(stat(&gw, "upstream_cx_pool_idle"), 0);
    assert_eq!(stat(&gw, "upstream_cx_active"), 0);
}

#[test]
fn max_stream_duration_ends_a_slow_request_with_504_umsdr() {
    let dir = tempfile::tempdir().unwrap();
    let backend = free_port();
    let _sample = sample_backend_on(backend, dir.path().join("backend.log"));
    let gw = setup(dir.path(), backend);
    apply_policy(
        &gw,
        &policy("  commonHttpProtocolOptions:\n    maxStreamDuration: 1s\n"),
        |c| http_options(c)["common_http_protocol_options"]["max_stream_duration"] == "1s",
    );
    let t = Instant::now();
    let (status, body) = gw.curl("x", "/delay/3");
    let took = t.elapsed();
    eprintln!("maxStreamDuration 1s, /delay/3: {status} after {took:?}: {body}");
    assert_eq!(status, 504);
    assert_eq!(body, "upstream max stream duration reached");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(stat(&gw, "upstream_rq_max_duration_reached"), 1);
    wait_for_log_line(&gw, "\"GET /delay/3 HTTP/1.1\" 504 UMSDR");
    // A quick one is untouched.
    assert_eq!(gw.curl("x", "/get").0, 200);
}

#[test]
fn max_stream_duration_resets_a_response_already_started() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RawBackend::start();
    let gw = setup(dir.path(), backend.port);
    apply_policy(
        &gw,
        &policy("  commonHttpProtocolOptions:\n    maxStreamDuration: 1s\n"),
        |c| http_options(c)["common_http_protocol_options"]["max_stream_duration"] == "1s",
    );
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break "reset",
        }
    };
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&got);
    eprintln!("maxStreamDuration 1s, a stalled body: {ended} after {took:?}, got {text:?}");
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("hello"),
        "{text:?}"
    );
    assert_eq!(ended, "reset", "the cut response is reset, not ended cleanly");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(stat(&gw, "upstream_rq_max_duration_reached"), 1);
    wait_for_log_line(&gw, "\"GET /stall HTTP/1.1\" 200 UMSDR");
}

#[test]
fn max_headers_count_refuses_an_answer_with_more_headers_502_upe() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RawBackend::start();
    let gw = setup(dir.path(), backend.port);
    apply_policy(
        &gw,
        &policy("  commonHttpProtocolOptions:\n    maxHeadersCount: 5\n"),
        |c| http_options(c)["common_http_protocol_options"]["max_headers_count"] == 5,
    );
    // content-length and 4 more: 5 header lines, as many as allowed.
    assert_eq!(gw.curl("x", "/headers/5").0, 200);
    let (status, body) = gw.curl("x", "/headers/12");
    assert_eq!(status, 502);
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
    );
    assert_eq!(stat(&gw, "upstream_cx_protocol_error"), 1);
    wait_for_log_line(&gw, "\"GET /headers/12 HTTP/1.1\" 502 UPE");
}

#[test]
fn trailers_are_dropped_unless_enable_trailers() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RawBackend::start();
    let gw = setup(dir.path(), backend.port);
    let get = "GET /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = raw(gw.port, get);
    assert!(
        answer.ends_with("5\r\nhello\r\n0\r\n\r\n"),
        "dropped by default: {answer:?}"
    );
    assert!(!answer.contains("x-checksum: abc123"));
    // The client's trailers are dropped on the way up too.
    let post = "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                2\r\nhi\r\n0\r\nX-Client-Trailer: 1\r\n\r\n";
    assert!(raw(gw.port, post).starts_with("HTTP/1.1 200"));
    assert_eq!(
        backend.last_head(),
        "body:2\r\nhi\r\n0\r\n\r\n",
        "the backend saw no trailer"
    );

    apply_policy(
        &gw,
        &policy("  http1ProtocolOptions:\n    enableTrailers: true\n"),
        |c| http_options(c)["explicit_http_config"]["http_protocol_options"]["enable_trailers"] == true,
    );
    let answer = raw(gw.port, get);
    assert!(
        answer.ends_with("5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n"),
        "kept: {answer:?}"
    );
    // The client's trailers go upstream the same way.
    assert!(raw(gw.port, post).starts_with("HTTP/1.1 200"));
    assert_eq!(
        backend.last_head(),
        "body:2\r\nhi\r\n0\r\nX-Client-Trailer: 1\r\n\r\n",
        "the backend saw the client's trailer"
    );
}

#[test]
fn header_names_go_upstream_lower_cased_unless_preserve_http1_header_case() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RawBackend::start();
    let gw = setup(dir.path(), backend.port);
    let get = "GET /case HTTP/1.1\r\nHost: x\r\nX-Custom-Header: Value\r\nConnection: close\r\n\r\n";
    assert!(raw(gw.port, get).starts_with("HTTP/1.1 200"));
    let head = backend.last_head();
    assert!(head.contains("\r\nx-custom-header: Value\r\n"), "{head}");
    assert!(head.contains("\r\nhost: x\r\n"), "{head}");

    apply_policy(
        &gw,
        &policy(
            "  http1ProtocolOptions:\n    preserveHttp1HeaderCase: true\n    overrideStreamErrorOnInvalidHttpMessage: true\n",
        ),
        |c| !http_options(c)["explicit_http_config"]["http_protocol_options"]["header_key_format"].is_null(),
    );
    assert!(raw(gw.port, get).starts_with("HTTP/1.1 200"));
    let head = backend.last_head();
    assert!(head.contains("\r\nX-Custom-Header: Value\r\n"), "{head}");
    assert!(head.contains("\r\nHost: x\r\n"), "{head}");
}
