//! Upstream PROXY protocol with kgw: kgateway's e2e manifest's BackendConfigPolicy
//! (`upstreamProxyProtocol`), verbatim, in front of nginx listening with `proxy_protocol`, which
//! answers with what the header told it. The header carries the client's address and port and
//! the address it connected to; a connection that carried one client's header never serves
//! another client.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::*;

const NS: &str = "kgateway-base";
const CLUSTER: &str = "kube_kgateway-base_upstream-pp-svc_80";

/// The policy of kgateway's e2e manifest `upstream-proxy-protocol.yaml`, verbatim.
const E2E_POLICY: &str = r#"kind: BackendConfigPolicy
apiVersion: gateway.kgateway.dev/v1alpha1
metadata:
  name: upstream-pp-policy
  namespace: kgateway-base
spec:
  targetRefs:
    - name: upstream-pp-svc
      group: ""
      kind: Service
  upstreamProxyProtocol:
    version: V1
"#;

/// nginx on 127.0.0.1:`port` with `proxy_protocol`, answering the header's source address and
/// port, its destination address and port, and nginx's connection serial number.
fn nginx(dir: &std::path::Path, port: u16) -> Proc {
    common::nginx::start(
        dir,
        "nginx",
        port,
        "",
        &format!(
            "server {{ listen 127.0.0.1:{port} proxy_protocol; location / {{ return 200 \"$proxy_protocol_addr \
             $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port $connection\\n\"; }} }}"
        ),
    )
}

/// What nginx said for each of `paths`, asked on one client connection from 127.0.0.2, and
/// that connection's local port.
fn from_client(port: u16, paths: &[&str]) -> (Vec<Vec<String>>, u16) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "--interface",
        "127.0.0.2",
        "-H",
        "host: example.com",
    ]);
    cmd.args(["-w", "local_port=%{local_port}\n"]);
    for p in paths {
        cmd.arg(format!("http://127.0.0.1:{port}{p}"));
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut answers = Vec::new();
    let mut local_port = 0;
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("local_port=") {
            local_port = p.parse().unwrap_or(0);
        } else {
            answers.push(line.split_whitespace().map(str::to_string).collect());
        }
    }
    (answers, local_port)
}

fn setup(dir: &std::path::Path, backend: u16, policy: &str) -> Gateway {
    let port = free_port();
    let gw = GatewayBuilder::run(dir, port).start();
    let yaml = format!(
        "{}---\n{policy}",
        route_all_to(NS, "upstream-pp-svc", port, backend)
    );
    let out = gw.kgw(&["apply", "-f", "-"], &yaml);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the policy in the dump", Duration::from_secs(10), || {
        gw.cluster(CLUSTER)
            .filter(|c| !c["transport_socket"].is_null())
            .map(|_| ())
    });
    wait_for("the route", Duration::from_secs(10), || {
        (gw.curl("example.com", "/").0 == 200).then_some(())
    });
    gw
}

fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.stat(&format!("cluster.{CLUSTER}.{name}")).unwrap_or(0)
}

#[test]
fn v1_header_carries_the_clients_address_and_no_two_clients_share_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let backend = free_port();
    let _nginx = nginx(dir.path(), backend);
    let gw = setup(dir.path(), backend, E2E_POLICY);
    let c = gw.cluster(CLUSTER).unwrap();
    assert_eq!(
        c["transport_socket"]["name"],
        "envoy.transport_sockets.upstream_proxy_protocol"
    );

    // Two requests on one client connection: one upstream connection, the client's header.
    let (answers, client_port) = from_client(gw.port, &["/a", "/b"]);
    eprintln!("client 127.0.0.2:{client_port} -> nginx saw {answers:?}");
    assert_eq!(answers.len(), 2, "{answers:?}");
    let want = |a: &Vec<String>| {
        a[0] == "127.0.0.2"
            && a[1] == client_port.to_string()
            && a[2] == "127.0.0.1"
            && a[3] == gw.port.to_string()
    };
    assert!(answers.iter().all(want), "{answers:?}");
    assert_eq!(
        answers[0][4], answers[1][4],
        "one client, one upstream connection"
    );

    // A second client: its own header on its own connection, though the first one is idle in
    // the pool.
    let before = stat(&gw, "upstream_cx_total");
    let (second, second_port) = from_client(gw.port, &["/c"]);
    assert_ne!(second_port, client_port);
    assert!(
        second.iter().all(|a| a[1] == second_port.to_string()),
        "{second:?}"
    );
    assert_ne!(second[0][4], answers[0][4], "never the first client's connection");
    assert_eq!(stat(&gw, "upstream_cx_total"), before + 1);
}

#[test]
fn v2_header_is_the_binary_form_with_the_clients_address() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap().port();
    // A raw backend: reads the 28-byte v2 header of an IPv4 connection, then answers every
    // request with what it read.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut header = [0u8; 28];
                if s.read_exact(&mut header).is_err() {
                    return;
                }
                let text = format!(
                    "sig={} cmd={:02x} fam={:02x} len={} src={}.{}.{}.{}:{} dst={}.{}.{}.{}:{}",
                    header[..12] == *b"\r\n\r\n\0\r\nQUIT\n",
                    header[12],
                    header[13],
                    u16::from_be_bytes([header[14], header[15]]),
                    header[16],
                    header[17],
                    header[18],
                    header[19],
                    u16::from_be_bytes([header[24], header[25]]),
                    header[20],
                    header[21],
                    header[22],
                    header[23],
                    u16::from_be_bytes([header[26], header[27]]),
                );
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}\n",
                        text.len() + 1
                    );
                    if s.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gw = setup(
        dir.path(),
        backend,
        &E2E_POLICY.replace("version: V1", "version: V2"),
    );
    assert_eq!(
        gw.cluster(CLUSTER).unwrap()["transport_socket"]["typed_config"]["config"]["version"],
        "V2"
    );
    let (answers, client_port) = from_client(gw.port, &["/"]);
    let line = answers[0].join(" ");
    eprintln!("client 127.0.0.2:{client_port} -> the backend read {line}");
    assert_eq!(
        line,
        format!(
            "sig=true cmd=21 fam=11 len=12 src=127.0.0.2:{client_port} dst=127.0.0.1:{}",
            gw.port
        )
    );
}

/// With PROXY protocol, each client's idle upstream connection can serve no other client, yet
/// holds a circuit breaker slot: at `maxConnections`, a new client's request must not wait
/// (until the route timeout, 504) for a connection it could never use. One of another client's
/// idle connections gives way, as Envoy's per-client pools would not block it either.
#[test]
fn at_max_connections_a_new_client_is_not_blocked_by_other_clients_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let backend = free_port();
    let _nginx = nginx(dir.path(), backend);
    let policy = format!("{E2E_POLICY}  circuitBreakers:\n    maxConnections: 1\n");
    // setup's own check leaves an idle connection that carried 127.0.0.1's header.
    let gw = setup(dir.path(), backend, &policy);
    for round in 0..3 {
        let started = std::time::Instant::now();
        let (answers, port) = from_client(gw.port, &["/"]);
        assert_eq!(
            answers.len(),
            1,
            "round {round}: no answer within 10 s: {answers:?}"
        );
        assert_eq!(answers[0][1], port.to_string(), "round {round}: {answers:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "round {round}: waited {:?}",
            started.elapsed()
        );
    }
    assert_eq!(stat(&gw, "upstream_rq_pending_overflow"), 0);
    assert_eq!(
        gw.stat(&format!("cluster.{CLUSTER}.circuit_breakers.default.cx_open")),
        Some(1)
    );
}
