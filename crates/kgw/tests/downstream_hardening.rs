//! The client side under slow, odd and unfriendly clients, and a graceful shutdown: what a
//! client sees on a raw socket through the real `kgw` (issue 13, items 2, 3, 7 and 9). Timeouts
//! are given short values so that each test takes seconds.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// A response as a client reads it: status, head (lower-cased) and body.
struct Response {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response (content-length framed, or to the end of the stream); None if the
/// connection ends before a status line.
fn read_response(s: &mut TcpStream) -> Option<Response> {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&seen).to_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            s.read_exact(&mut body).ok()?;
        }
        None => {
            let _ = s.read_to_end(&mut body);
        }
    }
    Some(Response {
        status,
        head,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `request` on a new connection; the answer's status (0: the connection closed first).
fn status_of(port: u16, request: &[u8]) -> u16 {
    let mut s = connect(port);
    s.write_all(request).unwrap();
    read_response(&mut s).map(|r| r.status).unwrap_or(0)
}

/// True once the peer has closed `s` (EOF or reset), waiting at most `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// True once the peer has reset `s` (not closed it cleanly: a clean close can read as the end
/// of a close-delimited body), waiting at most `limit`.
fn reset_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut rest = Vec::new();
    matches!(s.read_to_end(&mut rest), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

/// A request head sent a few bytes at a time, never finished, is answered 408 and closed once
/// the request-headers timeout (1 s here) has passed since its first byte, although bytes keep
/// coming. A keep-alive connection idle between requests is not: its idle time counts from its
/// last request, against the (1 h) idle timeout.
#[test]
fn a_trickled_request_head_is_closed_after_the_request_headers_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path())
        .arg("--request-headers-timeout")
        .arg("1s")
        .start();

    let mut idle = connect(gw.port);
    idle.write_all(b"GET /get HTTP/1.1\r\nhost: www.example.com\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle).map(|r| r.status), Some(200));

    let mut slow = connect(gw.port);
    slow.write_all(b"GET /get HTTP/1.1\r\nhost: www.example.com\r\n")
        .unwrap();
    let started = Instant::now();
    // One header byte every 100 ms, for up to 5 s: the gateway must cut it first.
    let trickle = slow.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut trickle = trickle;
        for _ in 0..50 {
            if trickle.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let answer = read_response(&mut slow).expect("an answer to the slow head");
    let took = started.elapsed();
    assert_eq!(answer.status, 408, "{}", answer.head);
    assert!(answer.head.contains("connection: close"), "{}", answer.head);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert!(closed_within(&mut slow, Duration::from_secs(2)));
    writer.join().unwrap();

    // The idle connection outlived the 1 s request-headers timeout and still serves.
    idle.write_all(b"GET /get HTTP/1.1\r\nhost: www.example.com\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle).map(|r| r.status), Some(200));

    let log = wait_for("the 408 in the access log", Duration::from_secs(5), || {
        let log = gw.proc.log_text();
        log.contains("\"- - -\" 408").then_some(log)
    });
    assert!(!log.contains("\" 504 "), "{log}");
}

/// A POST whose 20-byte body takes about 4 s to arrive (a byte every 200 ms) reaches a healthy
/// backend and is answered, although the route timeout is 2 s: it counts from the end of the
/// request. A body that stalls is ended by the stream idle timeout (1 s here) with a 408.
#[test]
fn a_slow_upload_is_bounded_by_the_stream_idle_timeout_not_the_route_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path())
        .arg("--route-timeout")
        .arg("2s")
        .arg("--stream-idle-timeout")
        .arg("1s")
        .start();

    let mut s = connect(gw.port);
    s.write_all(b"POST /anything HTTP/1.1\r\nhost: www.example.com\r\ncontent-length: 20\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    for b in b"abcdefghijklmnopqrst" {
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(&[*b]).unwrap();
    }
    let upload = started.elapsed();
    let answer = read_response(&mut s).expect("an answer to the slow upload");
    assert!(upload > Duration::from_secs(3), "the upload took {upload:?}");
    assert_eq!(answer.status, 200, "{}{}", answer.head, answer.body);
    let echo: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(echo["data"], "abcdefghijklmnopqrst");

    // The same connection goes on; this body stops after 5 of its 20 bytes.
    s.write_all(b"POST /anything HTTP/1.1\r\nhost: www.example.com\r\ncontent-length: 20\r\n\r\nabcde")
        .unwrap();
    let stalled = Instant::now();
    let answer = read_response(&mut s).expect("an answer to the stalled upload");
    let took = stalled.elapsed();
    assert_eq!(answer.status, 408, "{}{}", answer.head, answer.body);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert!(closed_within(&mut s, Duration::from_secs(2)));
}

/// The issue's own case, with kgw's defaults: a POST of 20 bytes at 1 byte/s (20 s) to a
/// healthy backend, against the default 15 s route timeout, is answered 200. Before, it got a 504
/// after 15 s: the route timeout counted the upload.
#[test]
fn a_20_second_upload_at_one_byte_per_second_succeeds_with_the_default_route_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let mut s = connect(gw.port);
    s.write_all(b"POST /anything HTTP/1.1\r\nhost: www.example.com\r\ncontent-length: 20\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    for b in b"abcdefghijklmnopqrst" {
        std::thread::sleep(Duration::from_secs(1));
        s.write_all(&[*b]).unwrap();
    }
    let answer = read_response(&mut s).expect("an answer to the 20 s upload");
    assert!(started.elapsed() >= Duration::from_secs(20));
    assert_eq!(answer.status, 200, "{}{}", answer.head, answer.body);
    let echo: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(echo["data"], "abcdefghijklmnopqrst");
}

/// A local reply to HEAD (here 503 "no healthy upstream") gives the body's length and no body:
/// body bytes after the head would be read as the start of the next response on the connection.
#[test]
fn a_local_reply_to_head_sends_no_body() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let no_endpoints = "apiVersion: v1
kind: Service
metadata: {name: empty, namespace: httpbin}
spec:
  ports: [{name: http, port: 8000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: empty, namespace: httpbin}
spec:
  parentRefs: [{name: http, namespace: kgateway-system}]
  hostnames: [empty.example.com]
  rules: [{backendRefs: [{name: empty, port: 8000}]}]
";
    let out = gw.kgw(&["apply", "-f", "-"], no_endpoints);
    assert!(out.status.success(), "{}", stderr(&out));

    let mut s = connect(gw.port);
    s.write_all(
        b"HEAD / HTTP/1.1\r\nhost: empty.example.com\r\n\r\nGET /get HTTP/1.1\r\nhost: www.example.com\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed inside the HEAD answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("content-length: 19"), "{head}");
    let next = read_response(&mut s).expect("the second answer on the connection");
    assert_eq!(next.status, 200, "the second answer: {}{}", next.head, next.body);
}

/// RFC 9112 cases, answered as nginx answers them: Host required once in HTTP/1.1 (HTTP/1.0
/// may leave it out: routed, here to no route), an absolute-form target names the host and
/// goes upstream in origin form, transfer codings other than exactly `chunked` refused (501,
/// 400 for repeated lines or HTTP/1.0), a broken chunked body gets a 400, an upstream status
/// outside 100..599 a 502, CONNECT a 405; refused heads are in the access log.
#[test]
fn http11_requests_get_the_answers_rfc_9112_and_nginx_give() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path()).start();
    let port = gw.port;

    let cases: &[(&str, &[u8], u16)] = &[
        ("no host in HTTP/1.1", b"GET /get HTTP/1.1\r\n\r\n", 400),
        (
            "two host lines",
            b"GET /get HTTP/1.1\r\nhost: www.example.com\r\nhost: www.example.com\r\n\r\n",
            400,
        ),
        ("no host in HTTP/1.0: no route", b"GET /get HTTP/1.0\r\n\r\n", 404),
        (
            "gzip, chunked",
            b"POST /anything HTTP/1.1\r\nhost: www.example.com\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        (
            "two transfer-encoding lines",
            b"POST /anything HTTP/1.1\r\nhost: www.example.com\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "chunked on HTTP/1.0",
            b"POST /anything HTTP/1.0\r\nhost: www.example.com\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "a broken chunked body",
            b"POST /anything HTTP/1.1\r\nhost: www.example.com\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        (
            "an upstream status of 600",
            b"GET /status/600 HTTP/1.1\r\nhost: www.example.com\r\n\r\n",
            502,
        ),
        (
            "CONNECT",
            b"CONNECT www.example.com:443 HTTP/1.1\r\nhost: www.example.com:443\r\n\r\n",
            405,
        ),
        (
            "chunked, in any case",
            b"POST /anything HTTP/1.1\r\nhost: www.example.com\r\ntransfer-encoding:  Chunked \r\n\r\n0\r\n\r\n",
            200,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, request, want) in cases {
        let got = status_of(port, request);
        if got != *want {
            wrong.push(format!("{what}: {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // Absolute-form: the target's authority is the host (the host line is not), and the path
    // goes upstream in origin form.
    let mut s = connect(port);
    s.write_all(b"GET http://www.example.com/anything/abs?x=1 HTTP/1.1\r\nhost: elsewhere.example\r\n\r\n")
        .unwrap();
    let answer = read_response(&mut s).expect("an answer to the absolute-form request");
    assert_eq!(answer.status, 200, "{}{}", answer.head, answer.body);
    let echo: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(echo["url"], "http://www.example.com/anything/abs?x=1");
    assert_eq!(echo["headers"]["Host"], "www.example.com");

    // A head too large (431) and a malformed one (400) show in the access log.
    let mut big = b"GET /get HTTP/1.1\r\nhost: www.example.com\r\n".to_vec();
    while big.len() < 70 * 1024 {
        big.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    big.extend_from_slice(b"\r\n");
    assert_eq!(status_of(port, &big), 431);
    assert_eq!(status_of(port, b"GET /get HTTP/1.1\r\nbad header\r\n\r\n"), 400);
    wait_for("400 and 431 in the access log", Duration::from_secs(5), || {
        let log = gw.proc.log_text();
        (log.contains("\"- - -\" 431 DPE") && log.contains("\"- - -\" 400 DPE")).then_some(())
    });
}

/// SIGTERM while a slow request (2 s at the backend) is in flight: /ready fails, new
/// connections are refused, an idle keep-alive connection is closed, the slow request is
/// answered with `connection: close`, and kgw exits 0, well within the drain time.
#[test]
fn sigterm_drains_requests_in_flight_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = GatewayBuilder::quickstart(dir.path())
        .arg("--drain-time")
        .arg("20s")
        .start();
    let cluster = "cluster.kube_httpbin_httpbin_8000";

    let mut idle = connect(gw.port);
    idle.write_all(b"GET /get HTTP/1.1\r\nhost: www.example.com\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle).map(|r| r.status), Some(200));

    let mut slow = connect(gw.port);
    slow.write_all(b"GET /delay/2 HTTP/1.1\r\nhost: www.example.com\r\n\r\n")
        .unwrap();
    wait_for("the slow request at the backend", Duration::from_secs(5), || {
        (gw.stat(&format!("{cluster}.upstream_rq_active")) == Some(1)).then_some(())
    });

    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    let ready = wait_for("/ready failing", Duration::from_secs(5), || {
        let (status, body) = http(gw.admin, "GET", "/ready", "");
        (status == 503).then_some(body)
    });
    assert_eq!(ready.trim(), "DRAINING");
    wait_for("new connections refused", Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", gw.port)).is_err().then_some(())
    });
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "the idle keep-alive connection was not closed"
    );

    let answer = read_response(&mut slow).expect("the slow request's answer");
    assert_eq!(answer.status, 200, "{}{}", answer.head, answer.body);
    assert!(answer.head.contains("connection: close"), "{}", answer.head);

    let status = wait_for("kgw to exit", Duration::from_secs(15), || {
        gw.proc.child.try_wait().unwrap()
    });
    assert!(
        status.success(),
        "kgw exited with {status}:\n{}",
        gw.proc.log_text()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "exit took {:?}",
        signalled.elapsed()
    );
}

/// A backend that misbehaves mid-response, on a raw socket. `/stall`: a head announcing 100
/// bytes, 10 of them, then nothing (the connection stays open). `/flood`: a head announcing
/// 1 GiB, then body bytes as fast as the peer takes them. `/silent`: no answer at all. Each
/// connection reports on `ended` when the gateway closed it (`/stall` and `/silent`: read end
/// of stream; `/flood`: a write failed).
fn misbehaving_backend(ended: std::sync::mpsc::Sender<(&'static str, Instant)>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let ended = ended.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let stall = head.starts_with("GET /stall ");
                if stall || head.starts_with("GET /silent ") {
                    if stall {
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
                    }
                    // Bounded: the test is over long before this.
                    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut rest = [0u8; 64];
                    while let Ok(n) = conn.read(&mut rest) {
                        if n == 0 {
                            let _ = ended.send((if stall { "stall" } else { "silent" }, Instant::now()));
                            return;
                        }
                    }
                } else if head.starts_with("GET /flood ") {
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n");
                    conn.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
                    let chunk = vec![b'x'; 64 * 1024];
                    for _ in 0..(1 << 14) {
                        if let Err(e) = conn.write_all(&chunk) {
                            if !matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) {
                                let _ = ended.send(("flood", Instant::now()));
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// The stream idle timeout (1 s here) covers the response too, as Envoy's does: an upstream
/// that stalls mid-body, and a client that reads nothing of a large response, hold the
/// connections for that long, not for ever. The stream is then reset: the client's connection
/// and the upstream's are closed, the access log shows the request with `SI`, and
/// `downstream_rq_idle_timeout` counts it.
#[test]
fn a_response_that_stalls_either_way_is_reset_after_the_stream_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (ended, upstream_closed) = std::sync::mpsc::channel();
    let backend = misbehaving_backend(ended);
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port)
        .arg("--stream-idle-timeout")
        .arg("1s")
        .start();
    let out = gw.kgw(&["apply", "-f", "-"], &route_all_to("idle", "raw", port, backend));
    assert!(out.status.success(), "{}", stderr(&out));
    // The first /stall, once routed, is kept open (its client reads no more) and left to the
    // gateway's timeout as well.
    let _probe = wait_for("the route to the raw backend", Duration::from_secs(10), || {
        let mut s = connect(port);
        s.write_all(b"GET /stall HTTP/1.1\r\nhost: idle.example.com\r\n\r\n")
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        (&head == b"HTTP/1.1 200").then_some(s)
    });
    let first_stall = upstream_closed
        .recv_timeout(Duration::from_secs(5))
        .expect("the gateway closes the stalled upstream connection");
    assert_eq!(first_stall.0, "stall");

    // An upstream that stalls after 10 of its 100 bytes.
    let mut s = connect(port);
    s.write_all(b"GET /stall HTTP/1.1\r\nhost: idle.example.com\r\n\r\n")
        .unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"0123456789") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    let stalled = Instant::now();
    assert!(
        reset_within(&mut s, Duration::from_secs(4)),
        "the client's cut response did not end with a reset"
    );
    let took = stalled.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
    let (what, at) = upstream_closed
        .recv_timeout(Duration::from_secs(3))
        .expect("the gateway closes the stalled upstream connection");
    assert_eq!(what, "stall");
    assert!(at.duration_since(stalled) < Duration::from_millis(2500));

    // A client that sends its request and reads nothing of a 1 GiB response.
    let mut lazy = connect(port);
    lazy.write_all(b"GET /flood HTTP/1.1\r\nhost: idle.example.com\r\n\r\n")
        .unwrap();
    let asked = Instant::now();
    let (what, at) = upstream_closed
        .recv_timeout(Duration::from_secs(6))
        .expect("the gateway gives up the response nobody reads");
    assert_eq!(what, "flood");
    let took = at.duration_since(asked);
    assert!(took < Duration::from_secs(4), "gave up after {took:?}");
    wait_for("no client connection left", Duration::from_secs(3), || {
        (gw.stat("http.http.downstream_cx_active") == Some(0)).then_some(())
    });

    assert_eq!(gw.stat("http.http.downstream_rq_idle_timeout"), Some(3));
    let log = wait_for("the SI lines in the access log", Duration::from_secs(5), || {
        let log = gw.proc.log_text();
        (log.matches("\" 200 SI ").count() == 3).then_some(log)
    });
    assert!(log.contains("\"GET /flood HTTP/1.1\" 200 SI "), "{log}");
    drop(lazy);
}

/// The downstream idle timeout (`--idle-timeout`, 1 s here) counts from the end of the last
/// request: a keep-alive connection used again before it is served, one that idles longer is
/// closed, and a response that takes longer than it is not cut.
#[test]
fn the_idle_timeout_counts_from_the_end_of_the_last_request() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::quickstart(dir.path())
        .arg("--idle-timeout")
        .arg("1s")
        .start();
    let get = |s: &mut TcpStream, path: &str| {
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: www.example.com\r\n\r\n").as_bytes())
            .unwrap();
        read_response(s).map(|r| r.status)
    };

    let mut s = connect(gw.port);
    assert_eq!(get(&mut s, "/get"), Some(200));
    // Idle time under the timeout is the point here, so it is slept.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(get(&mut s, "/get"), Some(200));
    std::thread::sleep(Duration::from_millis(700));
    // 1.4 s since the first request, 0.7 s since the last: still served; and a response that
    // takes 1.5 s is not cut by the idle timeout.
    let asked = Instant::now();
    assert_eq!(get(&mut s, "/delay/1.5"), Some(200));
    assert!(asked.elapsed() >= Duration::from_millis(1500));
    let answered = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(4)),
        "the idle client is still connected"
    );
    let idled = answered.elapsed();
    assert!(
        idled >= Duration::from_millis(900) && idled < Duration::from_millis(2500),
        "closed after {idled:?} idle"
    );
}

/// An upstream that never answers: with a stream idle timeout (1 s) shorter than the route
/// timeout (10 s), the request ends after the former, as Envoy ends it: 504 `SI`, counted in
/// `downstream_rq_idle_timeout` (not `upstream_rq_timeout`), the upstream connection closed.
#[test]
fn a_silent_upstream_is_bounded_by_the_stream_idle_timeout_when_it_is_the_shorter() {
    let dir = tempfile::tempdir().unwrap();
    let (ended, upstream_closed) = std::sync::mpsc::channel();
    let backend = misbehaving_backend(ended);
    let port = free_port();
    let gw = GatewayBuilder::run(dir.path(), port)
        .arg("--route-timeout")
        .arg("10s")
        .arg("--stream-idle-timeout")
        .arg("1s")
        .start();
    let out = gw.kgw(&["apply", "-f", "-"], &route_all_to("idle", "raw", port, backend));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the route to the raw backend", Duration::from_secs(10), || {
        (status_of(port, b"GET /ready HTTP/1.1\r\nhost: idle.example.com\r\n\r\n") != 404).then_some(())
    });

    let mut s = connect(port);
    s.write_all(b"GET /silent HTTP/1.1\r\nhost: idle.example.com\r\n\r\n")
        .unwrap();
    let asked = Instant::now();
    let answer = read_response(&mut s).expect("an answer to the request nobody answers");
    let took = asked.elapsed();
    assert_eq!(answer.status, 504, "{}{}", answer.head, answer.body);
    assert_eq!(answer.body, "stream timeout");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    let (what, _) = upstream_closed
        .recv_timeout(Duration::from_secs(3))
        .expect("the gateway closes the silent upstream connection");
    assert_eq!(what, "silent");
    assert_eq!(gw.stat("http.http.downstream_rq_idle_timeout"), Some(1));
    assert_eq!(gw.stat("cluster.kube_idle_raw_80.upstream_rq_timeout"), Some(0));
    wait_for("the SI line in the access log", Duration::from_secs(5), || {
        gw.proc
            .log_text()
            .contains("\"GET /silent HTTP/1.1\" 504 SI ")
            .then_some(())
    });
}
