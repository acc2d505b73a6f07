//! Upstream connections: connect with the cluster's timeout, TCP keepalive (and our
//! TCP_USER_TIMEOUT) set on the socket before connect, HTTP/1.1 handshake, and the task that
//! watches the connection: when it ends, it leaves the pool at once and is counted by reason.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use snapshot::TcpKeepalive;
use tokio::net::TcpSocket;

use crate::cluster::ClusterRuntime;
use crate::stats;

/// What we send upstream: the client's body streamed through, or nothing (a retried request
/// that had no body).
pub(crate) type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// State shared between a pooled connection and the task that drives it.
#[derive(Default)]
pub(crate) struct Shared {
    /// We closed it (dropped it, or its idle timeout passed).
    closed_locally: AtomicBool,
    /// Closed by the idle timeout.
    idle_timeout: AtomicBool,
    /// A request is using it.
    busy: AtomicBool,
}

/// A pooled HTTP/1.1 connection to one endpoint of one cluster.
pub(crate) struct Connection {
    pub id: u64,
    pub sender: http1::SendRequest<UpstreamBody>,
    pub idle_since: Instant,
    /// It served a request before: a failure on it may be the close race.
    pub reused: bool,
    shared: Arc<Shared>,
}

impl Connection {
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    pub fn set_busy(&self, busy: bool) {
        self.shared.busy.store(busy, Ordering::Relaxed);
    }

    /// Closes it because it sat idle too long.
    pub fn expire(self) {
        self.shared.idle_timeout.store(true, Ordering::Relaxed);
    }
}

impl Drop for Connection {
    /// Dropping the sender closes the connection: our choice, so its end counts as local
    /// (unless the peer had closed it already, which its task has counted by then).
    fn drop(&mut self) {
        self.shared.closed_locally.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub(crate) enum ConnectError {
    Timeout,
    Failed(std::io::Error),
}

/// The kernel's keepalive defaults, for fields a policy leaves out.
struct KernelKeepalive {
    time: u64,
    interval: u64,
    probes: u64,
}

static KERNEL: LazyLock<KernelKeepalive> = LazyLock::new(|| {
    let read = |name: &str, default: u64| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(default)
    };
    KernelKeepalive {
        time: read("tcp_keepalive_time", 7200),
        interval: read("tcp_keepalive_intvl", 75),
        probes: read("tcp_keepalive_probes", 9),
    }
});

/// Our addition to Envoy's keepalive: TCP_USER_TIMEOUT = keepAliveTime + probes x interval
/// (kernel defaults for what the policy leaves out), so that a request in flight on a peer that
/// vanished fails on the keepalive clock rather than after ~15 minutes of retransmissions.
pub(crate) fn user_timeout(k: &TcpKeepalive) -> Duration {
    let time = k.time.map(u64::from).unwrap_or(KERNEL.time);
    let interval = k.interval.map(u64::from).unwrap_or(KERNEL.interval);
    let probes = k.probes.map(u64::from).unwrap_or(KERNEL.probes);
    Duration::from_secs(time + probes * interval)
}

/// Sets SO_KEEPALIVE and, for each given field, TCP_KEEPCNT / TCP_KEEPIDLE / TCP_KEEPINTVL; a
/// field left out keeps the kernel's default. `None` turns keepalive off (a policy removed).
/// With `user_timeout`, TCP_USER_TIMEOUT follows the keepalive (and is cleared without it).
pub(crate) fn apply_keepalive(
    socket: &socket2::Socket,
    keepalive: Option<&TcpKeepalive>,
    with_user_timeout: bool,
) -> std::io::Result<()> {
    let Some(k) = keepalive else {
        if with_user_timeout {
            socket.set_tcp_user_timeout(None)?;
        }
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
    socket.set_tcp_keepalive(&params)?;
    if with_user_timeout {
        socket.set_tcp_user_timeout(Some(user_timeout(k)))?;
    }
    Ok(())
}

/// Did the kernel give up on the connection (ETIMEDOUT: keepalive probes or TCP_USER_TIMEOUT)?
pub(crate) fn is_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        current = e.source();
    }
    false
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
        apply_keepalive(
            &handle,
            settings.tcp_keepalive.as_ref(),
            cluster.tcp_user_timeout(),
        )
        .map_err(ConnectError::Failed)?;
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
    let shared = Arc::new(Shared::default());
    let task_cluster = cluster.clone();
    let task_shared = shared.clone();
    tokio::spawn(async move {
        let result = conn.await;
        let s = task_cluster.stats();
        stats::dec(&s.upstream_cx_active);
        stats::inc(&s.upstream_cx_destroy);
        let busy = task_shared.busy.load(Ordering::Relaxed);
        let timed_out = result.as_ref().err().is_some_and(|e| is_timed_out(e));
        if timed_out && !busy {
            // The keepalive probes went unanswered on an idle pooled connection.
            stats::inc(&s.upstream_cx_destroy_keepalive_timeout);
        } else if task_shared.idle_timeout.load(Ordering::Relaxed) {
            stats::inc(&s.upstream_cx_idle_timeout);
            stats::inc(&s.upstream_cx_destroy_local);
        } else if task_shared.closed_locally.load(Ordering::Relaxed) && !timed_out {
            stats::inc(&s.upstream_cx_destroy_local);
            if busy {
                stats::inc(&s.upstream_cx_destroy_local_with_active_rq);
            }
        } else {
            stats::inc(&s.upstream_cx_destroy_remote);
            if busy {
                stats::inc(&s.upstream_cx_destroy_remote_with_active_rq);
            }
        }
        match &result {
            Err(e) => {
                tracing::debug!(cluster = task_cluster.name(), %address, id, "upstream connection ended: {e}")
            }
            Ok(()) => {
                tracing::debug!(cluster = task_cluster.name(), %address, id, "upstream connection closed")
            }
        }
        // Out of the pool before anyone can pick it.
        task_cluster.evict(address, id);
        task_cluster.forget(id);
    });
    Ok(Connection {
        id,
        sender,
        idle_since: Instant::now(),
        reused: false,
        shared,
    })
}
