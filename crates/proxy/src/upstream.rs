//! Upstream connections: connect with the cluster's timeout, TCP keepalive set on the socket
//! before connect, HTTP/1.1 handshake, and the connection's task that keeps the counters right.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use snapshot::TcpKeepalive;
use tokio::net::TcpSocket;

use crate::cluster::ClusterRuntime;
use crate::stats;

/// A pooled HTTP/1.1 connection to one endpoint of one cluster.
pub(crate) struct Connection {
    pub sender: http1::SendRequest<Incoming>,
    pub idle_since: Instant,
    /// Set when we close the connection ourselves, so its end is counted as local.
    closed_locally: Arc<AtomicBool>,
}

impl Connection {
    pub fn is_usable(&self) -> bool {
        !self.sender.is_closed() && self.sender.is_ready()
    }
}

impl Drop for Connection {
    /// Dropping the sender closes the connection: our choice, so its end counts as local
    /// (unless the peer had closed it already, which its task has counted by then).
    fn drop(&mut self) {
        self.closed_locally.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub(crate) enum ConnectError {
    Timeout,
    Failed(std::io::Error),
}

/// Sets SO_KEEPALIVE and, for each given field, TCP_KEEPCNT / TCP_KEEPIDLE / TCP_KEEPINTVL; a
/// field left out keeps the kernel's default. `None` turns keepalive off (a policy removed).
pub(crate) fn apply_keepalive(
    socket: &socket2::Socket,
    keepalive: Option<&TcpKeepalive>,
) -> std::io::Result<()> {
    let Some(k) = keepalive else {
        return socket.set_keepalive(false);
    };
    let mut params = socket2::TcpKeepalive::new();
    if let Some(t) = k.time {
        params = params.with_time(Duration::from_secs(u64::from(t)));
    }
    if let Some(i) = k.interval {
        params = params.with_interval(Duration::from_secs(u64::from(i)));
    }
    if let Some(p) = k.probes {
        params = params.with_retries(p);
    }
    // set_tcp_keepalive turns SO_KEEPALIVE on and sets only the fields given.
    socket.set_tcp_keepalive(&params)
}

/// Opens a new connection for the cluster to `address`.
pub(crate) async fn connect(
    cluster: &Arc<ClusterRuntime>,
    address: SocketAddr,
) -> Result<Connection, ConnectError> {
    let settings = cluster.settings();
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ConnectError::Failed)?;
    let handle = socket2::SockRef::from(&socket);
    if settings.tcp_keepalive.is_some() {
        apply_keepalive(&handle, settings.tcp_keepalive.as_ref()).map_err(ConnectError::Failed)?;
    }
    let _ = handle.set_tcp_nodelay(true);
    // A second handle on the same socket, kept by the cluster so that later policy changes
    // can reach this connection while hyper owns the stream.
    let kept = handle.try_clone().map_err(ConnectError::Failed)?;
    stats::inc(&cluster.stats().upstream_cx_total);
    let stream = match tokio::time::timeout(settings.connect_timeout, socket.connect(address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            stats::inc(&cluster.stats().upstream_cx_connect_fail);
            return Err(ConnectError::Failed(e));
        }
        Err(_) => {
            stats::inc(&cluster.stats().upstream_cx_connect_fail);
            stats::inc(&cluster.stats().upstream_cx_connect_timeout);
            return Err(ConnectError::Timeout);
        }
    };
    let (sender, conn) = match http1::Builder::new().handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return Err(ConnectError::Failed(std::io::Error::other(e))),
    };
    let id = cluster.register(address, kept, settings.tcp_keepalive);
    stats::inc(&cluster.stats().upstream_cx_active);
    let closed_locally = Arc::new(AtomicBool::new(false));
    let task_cluster = cluster.clone();
    let task_flag = closed_locally.clone();
    tokio::spawn(async move {
        let result = conn.await;
        let s = task_cluster.stats();
        stats::dec(&s.upstream_cx_active);
        stats::inc(&s.upstream_cx_destroy);
        if task_flag.load(Ordering::Relaxed) {
            stats::inc(&s.upstream_cx_destroy_local);
        } else {
            stats::inc(&s.upstream_cx_destroy_remote);
        }
        if let Err(e) = result {
            tracing::debug!(cluster = task_cluster.name(), %address, "upstream connection ended: {e}");
        }
        task_cluster.forget(id);
    });
    Ok(Connection {
        sender,
        idle_since: Instant::now(),
        closed_locally,
    })
}
