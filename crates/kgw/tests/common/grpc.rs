//! The one gRPC peer of the tests, `support/grpc_peer.py` (grpcio): a server started on an
//! address and awaited until it serves, killed when dropped; and its client modes, run through
//! the gateway.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};

pub const GRPC_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/grpc_peer.py");

/// `grpc_peer.py server`: kgw.test.Echo and the standard health service on one address.
pub struct GrpcServer {
    child: Child,
}

impl GrpcServer {
    /// Serves on `address` (host:port), every health service name answering `health`
    /// (SERVING, NOT_SERVING); `options` as the script takes them (`--name`,
    /// `--health-service`). Returns once it serves.
    pub fn start(address: &str, health: &str, options: &[&str]) -> GrpcServer {
        let mut child = Command::new("python3")
            .args([GRPC_PEER, "server", address, health])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with grpcio and grpcio-health-checking");
        // The script prints "ready" once it serves, or exits (EOF here) if it cannot.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert_eq!(first.trim(), "ready", "the gRPC server on {address}");
        GrpcServer { child }
    }

    /// What its health service answers from now on.
    pub fn set_health(&mut self, status: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{status}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client mode of the peer (`client`, `call`, `calls`, `health`) with `args`, within
/// 30 s.
pub fn grpc_client(mode: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["30", "python3", GRPC_PEER, mode])
        .args(args)
        .output()
        .expect("timeout and python3 with grpcio")
}
