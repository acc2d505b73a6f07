//! A `kgw run -f DIR` gateway with a sample backend, started through a command prefix
//! (`prlimit`, `strace`), for the tests that need one.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A Gateway on `port` routing every request to the sample backend on `backend`.
pub fn manifest(port: u16, backend: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: fd\nspec:\n  \
         gatewayClassName: kgateway\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: {port}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: backend\n  namespace: fd\nspec:\n  ports:\n  - port: 80\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: backend-1\n  namespace: fd\n  labels:\n    \
         kubernetes.io/service-name: backend\naddressType: IPv4\nendpoints:\n- addresses: [\"127.0.0.1\"]\nports:\n- port: {backend}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: backend\n  namespace: fd\nspec:\n  \
         parentRefs:\n  - name: gw\n  rules:\n  - backendRefs:\n    - name: backend\n      port: 80\n"
    )
}

/// `kgw sample-backend` on a free port.
pub fn backend(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let log = dir.join("backend.log");
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
    (proc, port)
}

/// `kgw run -f DIR` with the manifest, started through `prefix` (e.g. `prlimit --nofile=N:N`).
/// Its stderr is `gw.proc.log`, its stdout (the access log by default) `DIR/kgw.stdout`.
pub fn start(dir: &Path, prefix: &[&str], extra: &[&str]) -> (Gateway, Proc) {
    let (backend, backend_port) = backend(dir);
    let port = free_port();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("gw.yaml"), manifest(port, backend_port)).unwrap();
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = dir.join("kgw.log");
    let out = std::fs::File::create(&log).unwrap();
    let (program, args) = match prefix {
        [] => (KGW, Vec::new()),
        [first, rest @ ..] => (*first, [rest, &[KGW]].concat()),
    };
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .args(["run", "--admin-address", &admin.to_string(), "--state-dir"])
        .arg(dir.join("state"))
        .arg("-f")
        .arg(&manifests)
        .args(extra)
        .stdout(std::fs::File::create(dir.join("kgw.stdout")).unwrap())
        .stderr(out)
        .env("KGW_LOG", "info,store=debug")
        .stdin(Stdio::null())
        .spawn()
        .expect("start kgw");
    let mut proc = Proc { child, log };
    let ready_after = wait_for("kgw /ready", Duration::from_secs(20), || {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("kgw exited early ({status}):\n{}", proc.log_text());
        }
        (http(admin, "GET", "/ready", "").0 == 200).then(|| started.elapsed())
    });
    let gw = Gateway {
        proc,
        admin,
        port,
        state_dir: dir.join("state"),
        started,
        ready_after,
        backend_port,
    };
    wait_for("the route to serve", Duration::from_secs(10), || {
        (gw.curl("fd.example.com", "/get").0 == 200).then_some(())
    });
    (gw, backend)
}
