//! An echo backend for the route-policy tests, after Gateway API's echo-basic: every request is
//! answered 200 with JSON naming the backend and what it received (method, path with query,
//! host, headers); `delay=DURATION` in the query (`500ms`, `1s`) sleeps that long first. Each
//! request is also logged to stdout as `NAME METHOD PATH HOST`, which the mirror tests read.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERVER: &str = r#"
import json, sys, threading, time, re
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlsplit, parse_qs

LOG = threading.Lock()

def handler_for(name):
    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a):
            pass
        def handle_one(self):
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            with LOG:
                sys.stdout.write(f"{name} {self.command} {self.path} {self.headers.get('host')}\n")
                sys.stdout.flush()
            delay = parse_qs(urlsplit(self.path).query).get("delay")
            if delay:
                m = re.fullmatch(r"(\d+)(ms|s)", delay[0])
                time.sleep(int(m.group(1)) / (1000 if m.group(2) == "ms" else 1))
            headers = {}
            for k, v in self.headers.items():
                headers.setdefault(k, []).append(v)
            body = json.dumps({"backend": name, "method": self.command, "path": self.path,
                               "host": self.headers.get("host"), "headers": headers}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_one
    return Echo

for arg in sys.argv[1:]:
    name, port = arg.split(":")
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), handler_for(name))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// The running backends, by name, and every request they logged.
pub struct Echo {
    child: Child,
    pub ports: BTreeMap<String, u16>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Echo {
    pub fn start(names: &[&str]) -> Echo {
        let ports: BTreeMap<String, u16> = names
            .iter()
            .map(|n| (n.to_string(), crate::common::free_port()))
            .collect();
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .args(ports.iter().map(|(n, p)| format!("{n}:{p}")))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is installed");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok);
        assert_eq!(first.as_deref(), Some("ready"), "the echo backend did not start");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        Echo { child, ports, seen }
    }

    /// Every request logged so far, as `NAME METHOD PATH HOST`.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (bounded) until `count` logged requests satisfy `pred`; returns them all.
    pub fn wait_seen(&self, what: &str, count: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let what = format!("{what} (seen: {:?})", self.seen());
        crate::common::wait_for(&what, Duration::from_secs(10), || {
            let seen = self.seen();
            (seen.iter().filter(|l| pred(l)).count() >= count).then_some(seen)
        })
    }

    /// Services and EndpointSlices for every backend, in `namespace`: Service NAME port 8080.
    pub fn services(&self, namespace: &str) -> String {
        self.ports
            .iter()
            .map(|(name, port)| {
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  ports:\n  \
                     - port: 8080\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  \
                     namespace: {namespace}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\n\
                     endpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {port}\n---\n"
                )
            })
            .collect()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
