//! Listeners: bind what the Snapshot asks for and accept; each client connection is then
//! served by its own task (`downstream.rs`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use snapshot::Snapshot;

use crate::DataPlane;
use crate::downstream::Downstream;
use crate::stats;

/// A bound listener address; dropping it stops accepting.
pub(crate) struct Bound {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the Snapshot's listener addresses that are not bound yet and closes the others.
pub(crate) fn reconcile(dp: &Arc<DataPlane>, snapshot: &Snapshot) -> Vec<(SocketAddr, String)> {
    let want: BTreeSet<SocketAddr> = snapshot
        .listeners
        .iter()
        .flat_map(|l| l.bind_addresses())
        .collect();
    let mut bound = dp.listeners.lock().unwrap_or_else(|e| e.into_inner());
    if dp.is_draining() {
        // Closed for good: a Snapshot that arrives during the drain binds nothing. (Read under
        // the lock: `drain` sets the flag, then empties the map under it.)
        return Vec::new();
    }
    bound.retain(|addr, _| want.contains(addr));
    let mut failed = Vec::new();
    for addr in want {
        if bound.contains_key(&addr) {
            continue;
        }
        match bind(addr) {
            Ok(listener) => {
                tracing::info!(%addr, "listening");
                let task = tokio::spawn(accept_loop(dp.clone(), listener, addr.port()));
                bound.insert(addr, Bound { task });
            }
            Err(e) => {
                tracing::error!(%addr, "cannot listen: {e}");
                failed.push((addr, e.to_string()));
            }
        }
    }
    failed
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    // As Envoy's enable_reuse_port (its default on Linux): several kgw processes (replicas on one
    // host, or an old and a new one during a restart) can serve the same port.
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `[::]` with IPv4 mapped in, as Envoy's `::` listener with ipv4_compat.
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    tokio::net::TcpListener::from_std(socket.into())
}

async fn accept_loop(dp: Arc<DataPlane>, listener: tokio::net::TcpListener, port: u16) {
    // Set while connections are being refused, so the warning is logged once per episode.
    let mut refusing = false;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !dp.admits_connection() {
            // As Envoy at its connection limit: accepted and closed at once, so the client sees
            // a close now rather than waiting in the listen backlog.
            stats::inc(&dp.downstream.downstream_global_cx_overflow);
            if !refusing {
                tracing::warn!(
                    active = dp
                        .downstream
                        .downstream_cx_active
                        .load(std::sync::atomic::Ordering::Relaxed),
                    "refusing new client connections: at the connection limit (--max-downstream-connections, or the open files limit less its reserve)"
                );
                refusing = true;
            }
            drop(stream);
            continue;
        }
        refusing = false;
        let _ = stream.set_nodelay(true);
        // Counted here, before the next accept, so that a burst cannot overshoot the cap.
        stats::inc(&dp.downstream.downstream_cx_total);
        stats::inc(&dp.downstream.downstream_cx_active);
        let dp = dp.clone();
        tokio::spawn(async move {
            let mut downstream = Downstream::new(stream, peer);
            if let Err(e) = downstream.serve(&dp, port).await {
                tracing::debug!(%peer, "downstream connection: {e}");
            }
            stats::dec(&dp.downstream.downstream_cx_active);
        });
    }
}
