//! Every option set on an upstream socket, in one place (as Pingora's PeerOptions): the
//! connector applies them to a new socket before it connects, and a cluster whose policy
//! changed applies them again to its live sockets (setsockopt on a connected socket is allowed,
//! so connections in use get the new values with no reconnect).

use std::sync::LazyLock;
use std::time::Duration;

use snapshot::{TcpKeepalive, UpstreamPolicy};

/// What a cluster's upstream sockets are set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketOptions {
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Set TCP_USER_TIMEOUT along with keepalive (our addition; `kgw run --no-tcp-user-timeout`).
    pub tcp_user_timeout: bool,
}

impl SocketOptions {
    pub(crate) fn of(policy: &UpstreamPolicy, tcp_user_timeout: bool) -> SocketOptions {
        SocketOptions {
            tcp_keepalive: policy.tcp_keepalive,
            tcp_user_timeout,
        }
    }

    /// On a new socket, before it connects: keepalive when the policy asks for it (a socket
    /// starts without), and TCP_NODELAY (the proxy writes whole heads and bodies, never
    /// small pieces worth coalescing).
    pub(crate) fn apply_before_connect(&self, socket: &socket2::SockRef<'_>) -> std::io::Result<()> {
        if self.tcp_keepalive.is_some() {
            apply_keepalive(socket, self.tcp_keepalive.as_ref(), self.tcp_user_timeout)?;
        }
        let _ = socket.set_tcp_nodelay(true);
        Ok(())
    }

    /// On a live socket opened with `applied`: what changed since (keepalive on, retuned or off).
    pub(crate) fn retune(&self, socket: &socket2::Socket, applied: &SocketOptions) -> std::io::Result<()> {
        if self.tcp_keepalive != applied.tcp_keepalive {
            apply_keepalive(socket, self.tcp_keepalive.as_ref(), self.tcp_user_timeout)?;
        }
        Ok(())
    }
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
fn user_timeout(k: &TcpKeepalive) -> Duration {
    let time = k.time.map(u64::from).unwrap_or(KERNEL.time);
    let interval = k.interval.map(u64::from).unwrap_or(KERNEL.interval);
    let probes = k.probes.map(u64::from).unwrap_or(KERNEL.probes);
    Duration::from_secs(time + probes * interval)
}

/// Sets SO_KEEPALIVE and, for each given field, TCP_KEEPCNT / TCP_KEEPIDLE / TCP_KEEPINTVL; a
/// field left out keeps the kernel's default. `None` turns keepalive off (a policy removed).
/// With `user_timeout`, TCP_USER_TIMEOUT follows the keepalive (and is cleared without it).
fn apply_keepalive(
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

/// On an accepted client socket: the ListenerPolicy's keepalive (Envoy's
/// `Listener.tcp_keepalive`), only the given fields set, as upstream. No TCP_USER_TIMEOUT:
/// that is our addition for requests in flight upstream, and Envoy sets none downstream.
pub(crate) fn apply_accepted_keepalive(
    stream: &tokio::net::TcpStream,
    keepalive: &TcpKeepalive,
) -> std::io::Result<()> {
    apply_keepalive(&socket2::SockRef::from(stream), Some(keepalive), false)
}
