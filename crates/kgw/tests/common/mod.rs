//! Test harness: the real `kgw` binary as a child process, real sockets, curl as the client.
//! Every wait is bounded; every process is killed when its guard drops, pass or fail.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KGW: &str = env!("CARGO_BIN_EXE_kgw");

/// A port nobody listens on right now (the kernel picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until `check` returns Some, polling every 20 ms, at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A running gateway: admin address, gateway port, state dir.
pub struct Gateway {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub port: u16,
    pub state_dir: PathBuf,
    pub started: Instant,
    pub ready_after: Duration,
    /// The quickstart's sample backend port.
    pub backend_port: u16,
}

pub struct GatewayBuilder {
    pub args: Vec<String>,
    pub admin: SocketAddr,
    pub port: u16,
    pub state_dir: PathBuf,
    pub quickstart: bool,
    pub backend_port: u16,
    /// Extra environment for the kgw process.
    pub env: Vec<(String, String)>,
    /// A command kgw runs under (it ends by exec'ing its arguments: kgw and its own), e.g.
    /// `unshare --mount -- sh -c SCRIPT sh ...`; empty: kgw runs directly.
    pub wrapper: Vec<std::ffi::OsString>,
}

impl GatewayBuilder {
    /// `kgw quickstart` on free ports, with its sample backend on a free port.
    pub fn quickstart(dir: &Path) -> GatewayBuilder {
        GatewayBuilder {
            args: vec![],
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            port: free_port(),
            state_dir: dir.join("state"),
            quickstart: true,
            backend_port: free_port(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// `kgw run` on a free admin port.
    pub fn run(dir: &Path, port: u16) -> GatewayBuilder {
        GatewayBuilder {
            args: vec![],
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            port,
            state_dir: dir.join("state"),
            quickstart: false,
            backend_port: 0,
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Runs kgw under `wrapper` (see the field).
    pub fn wrapped<I: Into<std::ffi::OsString>>(mut self, wrapper: impl IntoIterator<Item = I>) -> Self {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    pub fn start(&self) -> Gateway {
        let mut cmd = match self.wrapper.split_first() {
            None => Command::new(KGW),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(KGW);
                cmd
            }
        };
        if self.quickstart {
            cmd.arg("quickstart")
                .arg("--port")
                .arg(self.port.to_string())
                .arg("--backend-address")
                .arg(format!("127.0.0.1:{}", self.backend_port));
        } else {
            cmd.arg("run");
        }
        cmd.arg("--admin-address")
            .arg(self.admin.to_string())
            .arg("--state-dir")
            .arg(&self.state_dir);
        cmd.args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let log = self.state_dir.with_extension(format!("{}.log", free_port()));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdout(out.try_clone().unwrap())
            .stderr(out)
            .env("KGW_LOG", "info,proxy=debug,store=debug,kgw=debug");
        let started = Instant::now();
        let child = cmd.spawn().expect("start kgw");
        let mut proc = Proc { child, log };
        let admin = self.admin;
        let ready = wait_for("kgw /ready", Duration::from_secs(20), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("kgw exited early ({status}):\n{}", proc.log_text());
            }
            (http(admin, "GET", "/ready", "").0 == 200).then(|| started.elapsed())
        });
        Gateway {
            proc,
            admin,
            port: self.port,
            state_dir: self.state_dir.clone(),
            started,
            ready_after: ready,
            backend_port: self.backend_port,
        }
    }
}

/// A minimal HTTP/1.1 exchange (for admin calls); returns status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).is_err() {
        return (0, String::new());
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
    let text = String::from_utf8_lossy(&rest).to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

impl Gateway {
    pub fn dump(&self, method: &str, query: &str) -> serde_json::Value {
        let (status, body) = http(self.admin, method, &format!("/config_dump{query}"), "");
        assert_eq!(status, 200, "config_dump: {body}");
        serde_json::from_str(&body).expect("config_dump is JSON")
    }

    /// The cluster's entry in the dump (`.cluster`), if present.
    pub fn cluster(&self, name: &str) -> Option<serde_json::Value> {
        let dump = self.dump("GET", "");
        dump["configs"][0]["dynamic_active_clusters"]
            .as_array()?
            .iter()
            .find(|c| c["cluster"]["name"] == name)
            .map(|c| c["cluster"].clone())
    }

    pub fn stat(&self, name: &str) -> Option<u64> {
        let (_, body) = http(self.admin, "GET", "/stats", "");
        body.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// Runs `kgw ARGS` against this gateway, with `stdin` piped in.
    pub fn kgw(&self, args: &[&str], stdin: &str) -> Output {
        kgw_cli(self.admin, args, stdin)
    }

    /// `kgw apply -f -` with `yaml`, which must be admitted (the test stops with kgw's output
    /// otherwise).
    pub fn apply(&self, yaml: &str) {
        let out = self.kgw(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kgw apply: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    /// A request through the gateway with curl.
    pub fn curl(&self, host: &str, path: &str) -> (u16, String) {
        curl(self.port, host, path)
    }

    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }
}

pub fn kgw_cli(admin: SocketAddr, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(KGW)
        .args(args)
        .arg("--server")
        .arg(admin.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kgw");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `curl -H "host: HOST" 127.0.0.1:PORT/PATH`: status and body.
pub fn curl(port: u16, host: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("host: {host}"))
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Points curl `cmd` at `https://HOST:PORT/PATH` with HOST resolved to 127.0.0.1 (so the SNI
/// and the certificate check use HOST), trusting the CA certificate at `ca`.
pub fn https_target<'a>(
    cmd: &'a mut Command,
    ca: &Path,
    host: &str,
    port: u16,
    path: &str,
) -> &'a mut Command {
    cmd.arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}{path}"))
}

/// `curl ARGS` to `https://HOST:PORT/PATH` as [`https_target`] says: status (0 when curl
/// failed, a refused handshake too) and body.
pub fn curl_https(ca: &Path, host: &str, port: u16, path: &str, args: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args);
    let out = https_target(&mut cmd, ca, host, port, path)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A one-worker tokio runtime for an in-test backend, and a listener it owns on a free
/// loopback port (with that port): the backend serves by spawning on the runtime.
pub fn backend_runtime() -> (tokio::runtime::Runtime, tokio::net::TcpListener, u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    (runtime, listener, port)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The kgateway "TCP keepalive" guide's policy, verbatim.
pub const GUIDE_POLICY: &str = r#"apiVersion: gateway.kgateway.dev/v1alpha1
kind: BackendConfigPolicy
metadata:
  name: httpbin-keepalive
  namespace: httpbin
spec:
  targetRefs:
    - name: httpbin
      group: ""
      kind: Service
  tcpKeepalive:
    keepAliveProbes: 3
    keepAliveTime: 30s
    keepAliveInterval: 5s
"#;

pub mod curl_reply;
pub mod grpc;
pub mod netns;
pub mod nginx;
pub mod pki;
pub mod prefixed;
pub mod sockets;
#[allow(unused_imports)]
pub use sockets::{Keepalive, upstream_keepalive};

/// A Gateway `gw` in `namespace` listening on `port`, with one HTTPRoute sending every request
/// to Service `service` (port 80), whose EndpointSlice is 127.0.0.1:`backend`. Its cluster is
/// `kube_<namespace>_<service>_80`.
pub fn route_all_to(namespace: &str, service: &str, port: u16, backend: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {namespace}\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: {port}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: {service}\n  namespace: {namespace}\nspec:\n  ports:\n  - port: 80\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  namespace: {namespace}\n  labels:\n    \
         kubernetes.io/service-name: {service}\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {backend}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {service}\n  namespace: {namespace}\nspec:\n  \
         parentRefs:\n  - name: gw\n  rules:\n  - backendRefs:\n    - name: {service}\n      port: 80\n"
    )
}

/// `kgw sample-backend` on 127.0.0.1:`port`, its output in `log`, once it accepts connections.
pub fn sample_backend_on(port: u16, log: PathBuf) -> Proc {
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(KGW)
        .args(["sample-backend", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let proc = Proc { child, log };
    wait_for("the sample backend", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    proc
}
