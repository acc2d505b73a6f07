//! An HTTP/1.1 backend whose answers the test controls: 200 with its name as the body, another
//! status, or a connection closed without an answer. It records every request head it reads.
//! Included with `#[path]` by the tests that need it.

// Each test crate uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the backend answers, for every path (`ANSWER_CLOSE`: it closes the connection).
pub const ANSWER_CLOSE: u16 = 0;

pub struct ControlledBackend {
    pub addr: SocketAddr,
    answer: Arc<AtomicU16>,
    /// Paths answered otherwise than `answer` (see `answer_on`).
    answer_by_path: Arc<Mutex<Vec<(String, u16)>>>,
    requests: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
}

impl ControlledBackend {
    /// Listens on `addr` (a loopback address, port 0 for any), answering 200 with `name`.
    pub fn start(addr: &str, name: &'static str) -> ControlledBackend {
        let listener = TcpListener::bind(addr).expect("bind the backend");
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(AtomicU16::new(200));
        let answer_by_path = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, p, r, s) = (
            answer.clone(),
            answer_by_path.clone(),
            requests.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (a, p, r) = (a.clone(), p.clone(), r.clone());
                std::thread::spawn(move || serve(conn, name, &a, &p, &r));
            }
        });
        ControlledBackend {
            addr,
            answer,
            answer_by_path,
            requests,
            stop,
        }
    }

    /// From now on, answer with `status` (200: the name; `ANSWER_CLOSE`: close instead).
    pub fn answer(&self, status: u16) {
        self.answer.store(status, Ordering::SeqCst);
    }

    /// From now on, answer requests for `path` with `status` whatever `answer` says.
    pub fn answer_on(&self, path: &str, status: u16) {
        let mut by_path = self.answer_by_path.lock().unwrap();
        by_path.retain(|(p, _)| p != path);
        by_path.push((path.to_string(), status));
    }

    /// Request heads received so far on `path` (start line and headers), with when.
    pub fn requests_on(&self, path: &str) -> Vec<(Instant, String)> {
        let prefix = format!(" {path} HTTP/1.1");
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, head)| head.lines().next().is_some_and(|l| l.contains(&prefix)))
            .cloned()
            .collect()
    }
}

impl Drop for ControlledBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(
    mut conn: TcpStream,
    name: &str,
    answer: &AtomicU16,
    answer_by_path: &Mutex<Vec<(String, u16)>>,
    requests: &Mutex<Vec<(Instant, String)>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let is_head = head.starts_with("HEAD ");
        let path = head.split(' ').nth(1).unwrap_or_default().to_string();
        requests.lock().unwrap().push((Instant::now(), head));
        let status = answer_by_path
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| *p == path)
            .map_or_else(|| answer.load(Ordering::SeqCst), |(_, status)| *status);
        if status == ANSWER_CLOSE {
            return;
        }
        let body = if status == 200 {
            name.to_string()
        } else {
            format!("{name} failing")
        };
        let mut out = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if !is_head {
            out.push_str(&body);
        }
        if conn.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// Two backends on one port, 127.0.0.2 ("a") and 127.0.0.3 ("b").
pub fn two_backends() -> (ControlledBackend, ControlledBackend) {
    for _ in 0..20 {
        let a = ControlledBackend::start("127.0.0.2:0", "a");
        let b = std::net::TcpListener::bind(("127.0.0.3", a.addr.port()));
        if let Ok(b) = b {
            drop(b);
            let b = ControlledBackend::start(&format!("127.0.0.3:{}", a.addr.port()), "b");
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// Service `httpbin` (port 8080) in `namespace` with both backends of `two_backends` as its
/// endpoints, listening on `backend_port`.
pub fn httpbin_on_both_backends(namespace: &str, backend_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: {namespace}
spec:
  ports:
    - name: http
      port: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin-1
  namespace: {namespace}
  labels:
    kubernetes.io/service-name: httpbin
addressType: IPv4
endpoints:
- addresses: ["127.0.0.2"]
- addresses: ["127.0.0.3"]
ports:
- name: http
  port: {backend_port}
"#
    )
}

/// `health_flags` of each endpoint of `cluster`, from `/clusters`.
pub fn health_flags(gw: &super::common::Gateway, cluster: &str) -> Vec<(String, String)> {
    let (_, body) = super::common::http(gw.admin, "GET", "/clusters", "");
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{cluster}::"))?;
            let (host, flags) = rest.split_once("::health_flags::")?;
            Some((host.to_string(), flags.to_string()))
        })
        .collect()
}

/// `health_flags` of `backend` in `cluster`.
pub fn flags_of(gw: &super::common::Gateway, cluster: &str, backend: &ControlledBackend) -> String {
    health_flags(gw, cluster)
        .into_iter()
        .find(|(h, _)| *h == backend.addr.to_string())
        .map(|(_, f)| f)
        .unwrap_or_default()
}
