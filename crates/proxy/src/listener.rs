//! Listeners: bind what the Snapshot asks for and accept; each client connection is then
//! served by its own task (`downstream.rs`), after its TLS handshake on an HTTPS port
//! (`downstream_tls.rs`). What an accepted connection gets (TLS certificates, keepalive, buffer
//! limit) is the address's `PortSettings`, replaced by each Snapshot without a re-bind: the
//! next connection (or handshake) has the new ones, open connections keep theirs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use snapshot::{Listener, ListenerConnection, Snapshot};

use crate::DataPlane;
use crate::downstream::{ClientStream, Downstream};
use crate::downstream_tls::{Certificates, HttpsPort, SslStats, stats_address};
use crate::stats::{self, Metric};

/// A bound listener address; dropping it stops accepting.
pub(crate) struct Bound {
    task: tokio::task::JoinHandle<()>,
    port: Arc<Port>,
}

/// A bound address's settings, and its counters (kept while it stays bound).
struct Port {
    settings: ArcSwap<PortSettings>,
    ssl: Arc<SslStats>,
}

/// What a connection accepted on an address gets.
#[derive(Default)]
struct PortSettings {
    /// HTTPS: the handshake first.
    https: Option<Arc<HttpsPort>>,
    connection: ListenerConnection,
}

impl Port {
    /// The settings `listener` asks for; the certificates are parsed only when they changed.
    fn settings_for(&self, listener: &Listener) -> Result<PortSettings, String> {
        let current = self.settings.load();
        let https = match (&listener.tls, &current.https) {
            (None, _) => None,
            (Some(tls), Some(port)) => {
                if !port.serves(tls) {
                    port.replace(Certificates::parse(&listener.name, tls));
                }
                Some(port.clone())
            }
            (Some(tls), None) => Some(Arc::new(HttpsPort::new(
                Certificates::parse(&listener.name, tls),
                self.ssl.clone(),
            )?)),
        };
        Ok(PortSettings {
            https,
            connection: listener.connection.clone(),
        })
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the Snapshot's listener addresses that are not bound yet and closes the others.
pub(crate) fn reconcile(dp: &Arc<DataPlane>, snapshot: &Snapshot) -> Vec<(SocketAddr, String)> {
    let want: BTreeMap<SocketAddr, &Listener> = snapshot
        .listeners
        .iter()
        .flat_map(|l| l.bind_addresses().into_iter().map(move |a| (a, l)))
        .collect();
    let mut bound = dp.listeners.lock().unwrap_or_else(|e| e.into_inner());
    if dp.is_draining() {
        // Closed for good: a Snapshot that arrives during the drain binds nothing. (Read under
        // the lock: `drain` sets the flag, then empties the map under it.)
        return Vec::new();
    }
    bound.retain(|addr, _| want.contains_key(addr));
    let mut failed = Vec::new();
    for (addr, listener) in want {
        if let Some(existing) = bound.get(&addr) {
            match existing.port.settings_for(listener) {
                Ok(settings) => existing.port.settings.store(Arc::new(settings)),
                Err(e) => {
                    tracing::error!(%addr, "cannot serve HTTPS: {e}");
                    failed.push((addr, e));
                }
            }
            continue;
        }
        let port = Arc::new(Port {
            settings: ArcSwap::from_pointee(PortSettings::default()),
            ssl: Arc::new(SslStats::default()),
        });
        let settings = match port.settings_for(listener) {
            Ok(settings) => settings,
            Err(e) => {
                tracing::error!(%addr, "cannot serve HTTPS: {e}");
                failed.push((addr, e));
                continue;
            }
        };
        port.settings.store(Arc::new(settings));
        match bind(addr) {
            Ok(socket) => {
                tracing::info!(%addr, "listening");
                let task = tokio::spawn(accept_loop(dp.clone(), socket, addr.port(), port.clone()));
                bound.insert(addr, Bound { task, port });
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

async fn accept_loop(dp: Arc<DataPlane>, listener: tokio::net::TcpListener, port: u16, state: Arc<Port>) {
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
        let settings = state.settings.load_full();
        if let Some(keepalive) = &settings.connection.tcp_keepalive
            && let Err(e) = crate::socket_options::apply_accepted_keepalive(&stream, keepalive)
        {
            tracing::warn!(%peer, "cannot set the ListenerPolicy's TCP keepalive on a client connection: {e}");
        }
        // Counted here, before the next accept, so that a burst cannot overshoot the cap.
        stats::inc(&dp.downstream.downstream_cx_total);
        stats::inc(&dp.downstream.downstream_cx_active);
        let dp = dp.clone();
        tokio::spawn(async move {
            let read_limit = read_limit(&settings.connection);
            let stream = match &settings.https {
                None => ClientStream::Tcp(stream),
                // The handshake is bounded as a request head is: a client that never ends it
                // does not hold its task.
                Some(https) => match https.handshake(stream, dp.options.request_headers_timeout).await {
                    Some(tls) => ClientStream::Tls(Box::new(tls)),
                    None => {
                        stats::dec(&dp.downstream.downstream_cx_active);
                        return;
                    }
                },
            };
            drop(settings);
            let mut downstream = Downstream::new(stream, peer, read_limit);
            if let Err(e) = downstream.serve(&dp, port).await {
                tracing::debug!(%peer, "downstream connection: {e}");
            }
            stats::dec(&dp.downstream.downstream_cx_active);
        });
    }
}

/// The largest read from the client: `perConnectionBufferLimitBytes` when it is below kgw's
/// read chunk (what kgw buffers per connection is one read at a time; see `http_protocol.rs`
/// for the upstream side); 0 means no limit, as in Envoy.
fn read_limit(connection: &ListenerConnection) -> Option<usize> {
    connection
        .per_connection_buffer_limit_bytes
        .map(|n| n as usize)
        .filter(|n| *n > 0 && *n < crate::recycle::READ_CHUNK)
}

impl DataPlane {
    /// `listener.<address>.*` of the HTTPS addresses bound now.
    pub(crate) fn listener_metrics(&self, out: &mut Vec<Metric>) {
        let bound = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        for (addr, b) in bound.iter() {
            if b.port.settings.load().https.is_some() {
                b.port.ssl.metrics(&stats_address(addr), out);
            }
        }
    }
}
