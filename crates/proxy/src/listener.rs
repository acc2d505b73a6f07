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
    /// Sent when the address is closed (no longer wanted, or the drain): HTTP/2 connections
    /// accepted on it send GOAWAY (as Envoy drains a removed listener's connections).
    removed: tokio::sync::watch::Sender<bool>,
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
        self.port.removed.send_replace(true);
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
            removed: tokio::sync::watch::Sender::new(false),
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
                let task = tokio::spawn(accept_loop(dp.clone(), socket, addr, port.clone()));
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

/// `bound`: the address as bound, which names the Snapshot listener its connections are routed
/// by.
async fn accept_loop(
    dp: Arc<DataPlane>,
    listener: tokio::net::TcpListener,
    bound: SocketAddr,
    state: Arc<Port>,
) {
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
        let state = state.clone();
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
            if crate::downstream_tls::negotiated_http2(&stream) {
                let removed = state.removed.subscribe();
                crate::h2_server::serve(&dp, stream, Vec::new(), bound, peer, removed).await;
                stats::dec(&dp.downstream.downstream_cx_active);
                return;
            }
            let mut downstream = Downstream::new(stream, peer, read_limit);
            if let Err(e) = downstream.serve(&dp, bound).await {
                tracing::debug!(%peer, "downstream connection: {e}");
            }
            if downstream.http2_preface {
                let read = std::mem::take(&mut downstream.buf);
                let removed = state.removed.subscribe();
                crate::h2_server::serve(&dp, downstream.stream, read, bound, peer, removed).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downstream_tls::tests::{certificate, client_config, der, self_signed};
    use crate::{AccessLog, ProxyOptions};
    use snapshot::{
        Cluster, Discovery, Endpoint, ListenerTls, PathMatch, Route, RouteAction, TcpKeepalive, VirtualHost,
        WeightedCluster,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that answers every request on a connection with the x-forwarded-proto it got.
    async fn backend() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            buf.drain(..end + 4);
                            let proto = head
                                .lines()
                                .find_map(|l| l.strip_prefix("x-forwarded-proto: "))
                                .unwrap_or("none")
                                .to_string();
                            let reply = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{proto}",
                                proto.len()
                            );
                            if stream.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        address
    }

    fn snapshot(version: u64, port: u16, backend: SocketAddr, tls: ListenerTls) -> Arc<Snapshot> {
        let route = Route {
            name: "all".into(),
            path: PathMatch::Prefix("/".into()),
            method: None,
            headers: Vec::new(),
            action: RouteAction::Forward(vec![WeightedCluster {
                name: "c".into(),
                index: Some(0),
                weight: 1,
                filters: None,
            }]),
            websocket_upgrade: false,
            query_params: Vec::new(),
            filters: None,
            timeout: None,
            mirrors: Vec::new(),
            cors: None,
        };
        Arc::new(Snapshot {
            version,
            created: std::time::SystemTime::now(),
            listeners: vec![Listener {
                name: format!("listener~{port}"),
                port,
                addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
                virtual_hosts: vec![VirtualHost {
                    name: "any".into(),
                    domains: vec!["*".into()],
                    routes: vec![route],
                }],
                tls: Some(tls),
                connection: ListenerConnection {
                    tcp_keepalive: Some(TcpKeepalive {
                        probes: Some(3),
                        time: Some(1200),
                        interval: Some(60),
                    }),
                    per_connection_buffer_limit_bytes: Some(64),
                },
            }],
            clusters: vec![Cluster {
                name: "c".into(),
                discovery: Discovery::Eds,
                endpoints: vec![Endpoint::new(backend)],
                protocol: snapshot::UpstreamProtocol::Http1,
                upstream: Default::default(),
            }],
        })
    }

    type Client = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    async fn connect(port: u16) -> Client {
        connect_with(port, client_config()).await
    }

    async fn connect_with(port: u16, config: Arc<rustls::ClientConfig>) -> Client {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("www.example.com").unwrap();
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap()
    }

    fn leaf(client: &Client) -> Vec<u8> {
        client.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// One request on the connection; the response body.
    async fn get(client: &mut Client) -> String {
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: www.example.com\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = async {
            loop {
                let mut chunk = [0u8; 1024];
                let n = client.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed: {}", String::from_utf8_lossy(&buf));
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_string)
                        })
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                        return body.to_string();
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_port_serves_and_a_new_certificate_reaches_the_next_handshake_only() {
        let dir = tempfile::tempdir().unwrap();
        let old = self_signed(dir.path(), &["www.example.com"]);
        let newer = tempfile::tempdir().unwrap();
        let new = self_signed(newer.path(), &["www.example.com"]);
        let backend = backend().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let with = |pem| ListenerTls {
            certificates: vec![certificate("https", &["www.example.com"], pem)],
        };
        let dp = DataPlane::new(ProxyOptions::default(), AccessLog::disabled());
        assert!(dp.update(snapshot(1, port, backend, with(&old))).is_empty());

        let mut open = connect(port).await;
        assert_eq!(leaf(&open), der(&old.0));
        // Over TLS the upstream is told so; the 64-byte buffer limit still lets the request by.
        assert_eq!(get(&mut open).await, "https");

        assert!(dp.update(snapshot(2, port, backend, with(&new))).is_empty());
        let resuming = client_config();
        let mut next = connect_with(port, resuming.clone()).await;
        assert_eq!(leaf(&next), der(&new.0));
        assert_eq!(get(&mut next).await, "https");
        // The connection opened before goes on, on its socket and its certificate.
        assert_eq!(get(&mut open).await, "https");
        // A client that kept the session (its ticket came with the response) resumes it.
        let mut resumed = connect_with(port, resuming).await;
        assert_eq!(get(&mut resumed).await, "https");

        let address = "127.0.0.1_".to_string() + &port.to_string();
        let metrics = dp.metrics();
        let value = |name: &str| {
            metrics
                .iter()
                .find(|m| m.name == format!("listener.{address}.{name}"))
                .map(|m| m.value)
        };
        assert_eq!(value("ssl.handshake"), Some(3));
        assert_eq!(value("ssl.session_reused"), Some(1));
        assert_eq!(value("ssl.no_certificate"), Some(3));
        assert_eq!(value("ssl.versions.TLSv1.3"), Some(3));
    }
}
