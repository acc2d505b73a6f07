//! Upstream connections: connect with the cluster's timeout and socket options
//! (`socket_options.rs`). A connection is a socket and its read
//! buffer, driven by the request that uses it (no task of its own); idle in its pool, a sweep
//! of socket readiness finds the ones that ended. Each ending is counted by reason, once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::net::{TcpSocket, TcpStream};

use crate::cluster::ClusterRuntime;
use crate::stats;

/// How a connection ended, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// We closed it (the default: dropped without another reason).
    Local,
    /// The peer closed or reset it.
    Remote,
    /// The kernel gave up on the peer (keepalive probes, or TCP_USER_TIMEOUT): ETIMEDOUT.
    TimedOut,
    /// It sat idle past `--upstream-idle-timeout`.
    IdleTimeout,
}

/// A pooled HTTP/1.1 connection to one endpoint of one cluster.
pub(crate) struct Connection {
    pub id: u64,
    pub stream: TcpStream,
    /// Bytes read from the upstream and not used yet.
    pub buf: Vec<u8>,
    pub idle_since: Instant,
    /// It served a request before: a failure on it may be the close race.
    pub reused: bool,
    /// A request is using it (for the destroy counters).
    pub busy: bool,
    pub end: End,
    cluster: Arc<ClusterRuntime>,
}

impl Connection {
    /// For a connection in the pool: has it ended (the peer closed it, the kernel gave up, or it
    /// sent bytes nobody asked for)? Costs no system call unless the socket became readable.
    pub fn ended_while_idle(&mut self) -> Option<End> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => None,
            Poll::Ready(Err(e)) => Some(end_of(&e)),
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                match self.stream.try_read(&mut byte) {
                    Ok(0) => Some(End::Remote),
                    // An idle HTTP/1.1 connection has nothing to say: it cannot be trusted.
                    Ok(_) => Some(End::Local),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                    Err(e) => Some(end_of(&e)),
                }
            }
        }
    }
}

/// The end an I/O error means.
pub(crate) fn end_of(error: &std::io::Error) -> End {
    if error.kind() == std::io::ErrorKind::TimedOut {
        End::TimedOut
    } else {
        End::Remote
    }
}

/// Descriptors held by upstream connections in this process, for the accept path's descriptor
/// budget (the open files limit is per process, so one gauge for every cluster and data plane).
static UPSTREAM_DESCRIPTORS: AtomicU64 = AtomicU64::new(0);

/// Each upstream connection holds two: its stream, and the handle its cluster keeps to retune
/// keepalive on it.
const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// Descriptors upstream connections hold now.
pub(crate) fn descriptors_open() -> u64 {
    UPSTREAM_DESCRIPTORS.load(Ordering::Relaxed)
}

impl Drop for Connection {
    fn drop(&mut self) {
        UPSTREAM_DESCRIPTORS.fetch_sub(DESCRIPTORS_PER_CONNECTION, Ordering::Relaxed);
        let s = self.cluster.stats();
        stats::dec(&s.upstream_cx_active);
        stats::inc(&s.upstream_cx_destroy);
        match (self.end, self.busy) {
            // The keepalive probes went unanswered on an idle pooled connection.
            (End::TimedOut, false) => stats::inc(&s.upstream_cx_destroy_keepalive_timeout),
            (End::IdleTimeout, _) => {
                stats::inc(&s.upstream_cx_idle_timeout);
                stats::inc(&s.upstream_cx_destroy_local);
            }
            (End::Local, busy) => {
                stats::inc(&s.upstream_cx_destroy_local);
                if busy {
                    stats::inc(&s.upstream_cx_destroy_local_with_active_rq);
                }
            }
            (End::Remote | End::TimedOut, busy) => {
                stats::inc(&s.upstream_cx_destroy_remote);
                if busy {
                    stats::inc(&s.upstream_cx_destroy_remote_with_active_rq);
                }
            }
        }
        tracing::debug!(cluster = self.cluster.name(), id = self.id, end = ?self.end, "upstream connection closed");
        self.cluster.forget(self.id);
    }
}

#[derive(Debug)]
pub(crate) enum ConnectError {
    Timeout,
    Failed(std::io::Error),
}

/// Opens a new connection for the cluster to `address`.
pub(crate) async fn connect(
    cluster: &Arc<ClusterRuntime>,
    address: SocketAddr,
) -> Result<Connection, ConnectError> {
    let policy = cluster.policy();
    let options = cluster.socket_options(&policy);
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ConnectError::Failed)?;
    let handle = socket2::SockRef::from(&socket);
    options
        .apply_before_connect(&handle)
        .map_err(ConnectError::Failed)?;
    // A second handle on the same socket, kept by the cluster so that later policy changes
    // reach this connection whoever is using it.
    let kept = handle.try_clone().map_err(ConnectError::Failed)?;
    stats::inc(&cluster.stats().upstream_cx_total);
    let stream = match tokio::time::timeout(policy.connect_timeout(), socket.connect(address)).await {
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
    let id = cluster.register(address, kept, options);
    stats::inc(&cluster.stats().upstream_cx_active);
    UPSTREAM_DESCRIPTORS.fetch_add(DESCRIPTORS_PER_CONNECTION, Ordering::Relaxed);
    Ok(Connection {
        id,
        stream,
        buf: Vec::new(),
        idle_since: Instant::now(),
        reused: false,
        busy: true,
        end: End::Local,
        cluster: cluster.clone(),
    })
}
