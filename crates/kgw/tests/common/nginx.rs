//! nginx as a real backend: one process in the test's directory, serving the `server` blocks a
//! test writes (plain, TLS, PROXY protocol), with every path nginx writes kept inside that
//! directory. Started and awaited on its port; stopped when the `Proc` drops.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Proc, wait_for};

/// nginx listening on 127.0.0.1:`port` with `http_extra` in its `http` block (e.g.
/// `keepalive_timeout 1s;`) and `server` as its only server block. `name` keeps two instances
/// of one test apart.
pub fn start(dir: &Path, name: &str, port: u16, http_extra: &str, server: &str) -> Proc {
    let prefix = dir.join(name);
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {p}/logs/error.log;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  {http_extra}\n  client_body_temp_path {p}/body;\n  \
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  \
             scgi_temp_path {p}/scgi;\n  {server}\n}}\n",
            p = prefix.display()
        ),
    )
    .unwrap();
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|n| Command::new(n).arg("-v").output().is_ok())
        .expect("nginx is installed (bash scripts/test installs it)");
    let log = prefix.join("logs/stderr.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("start nginx");
    let proc = Proc { child, log };
    wait_for("nginx", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    proc
}
