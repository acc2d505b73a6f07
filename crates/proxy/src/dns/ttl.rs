//! A name's TTL, for `respect_ttl`: getaddrinfo gives the addresses but no TTL, so the name's
//! A records (AAAA when it has none) are also asked of the name servers of /etc/resolv.conf,
//! directly, over UDP (TCP when the answer is truncated), and the answer's least TTL is kept.
//!
//! A name the servers do not know (answered from /etc/hosts, say) has no TTL, and neither has
//! a TTL of 0: the refresh rate applies then, as in Envoy, whose c-ares resolver reports hosts
//! file answers without a TTL and whose DNS cluster follows only a TTL above zero. A server
//! that does not answer within `QUERY_BOUND` (all servers together) means no TTL too: the TTL
//! never holds the addresses back longer than that.
//!
//! The name is asked as given, as an absolute name (Backend hosts are fully qualified):
//! resolv.conf's `search` and `ndots` are not applied (a short name completed by the search
//! list has no TTL here, and is resolved again at the refresh rate).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::wire::{self, Reply, TYPE_A, TYPE_AAAA, WireError};

/// The longest the TTL of one name is waited for (every server, both record types).
const QUERY_BOUND: Duration = Duration::from_secs(2);
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// glibc's MAXNS: the servers after the third are not used.
const MAX_SERVERS: usize = 3;
/// Large enough for any UDP answer (EDNS is not offered, so servers keep to 512 bytes).
const DATAGRAM_MAX: usize = 4096;

/// `name`'s TTL from the servers of /etc/resolv.conf (read at every call, as glibc does when
/// the file changes), or None (see the module comment).
pub(crate) async fn ttl_of(name: &str) -> Option<Duration> {
    let conf = tokio::fs::read_to_string(RESOLV_CONF).await.unwrap_or_default();
    ttl_from(&name_servers(&conf), name).await
}

/// As `ttl_of`, with the servers given.
pub(crate) async fn ttl_from(servers: &[SocketAddr], name: &str) -> Option<Duration> {
    let ttl = tokio::time::timeout(QUERY_BOUND, ask_servers(servers, name)).await;
    ttl.ok().flatten().filter(|t| !t.is_zero())
}

/// resolv.conf's `nameserver` addresses, port 53, at most three; the local host when there
/// are none (as glibc).
fn name_servers(conf: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            // A link-local address with a zone (fe80::1%eth0) is left out: std cannot parse it.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .take(MAX_SERVERS)
        .collect();
    if out.is_empty() {
        out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
    }
    out
}

/// The servers in order, as glibc: one that fails (unreachable, SERVFAIL, garbage) passes the
/// question to the next; one that answers settles it.
async fn ask_servers(servers: &[SocketAddr], name: &str) -> Option<Duration> {
    // Each server gets its share of the bound: a dead first server leaves time for the others.
    let share = QUERY_BOUND / servers.len().max(1) as u32;
    for server in servers {
        let answered = tokio::time::timeout(share, async {
            match ask(*server, name, TYPE_A).await? {
                // kgateway's V4_PREFERRED: the AAAA records count only without A records
                // (and only if the name exists).
                Reply::NoRecords => ask(*server, name, TYPE_AAAA).await,
                reply => Ok(reply),
            }
        })
        .await;
        match answered {
            Ok(Ok(Reply::Ttl(ttl))) => return Some(ttl),
            Ok(Ok(_)) => return None,
            Ok(Err(e)) => tracing::debug!(%server, name, "no TTL from the name server: {e}"),
            Err(_) => tracing::debug!(%server, name, "no TTL from the name server: timed out"),
        }
    }
    None
}

/// One question to one server: UDP, then TCP if the answer was truncated.
async fn ask(server: SocketAddr, name: &str, record_type: u16) -> std::io::Result<Reply> {
    let id = crate::load_balancing::random_u64() as u16;
    let query = wire::query(id, name, record_type).map_err(invalid)?;
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: datagrams from anyone but the server are dropped by the kernel.
    socket.connect(server).await?;
    socket.send(&query).await?;
    let mut buf = vec![0u8; DATAGRAM_MAX];
    let reply = loop {
        let n = socket.recv(&mut buf).await?;
        match wire::reply(&query, &buf[..n]) {
            // A late answer to an earlier query on a reused port: wait for ours.
            Err(WireError::NotOurs) => continue,
            other => break other.map_err(invalid)?,
        }
    };
    if reply != Reply::Truncated {
        return Ok(reply);
    }
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed).await?;
    let length = stream.read_u16().await?;
    let mut answer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut answer).await?;
    match wire::reply(&query, &answer).map_err(invalid)? {
        Reply::Truncated => Err(invalid(WireError::Short)),
        reply => Ok(reply),
    }
}

fn invalid(e: WireError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_servers_are_read_from_resolv_conf() {
        let conf = "# comment\nsearch example.test\nnameserver 10.0.0.1\nnameserver ::1\n\
                    nameserver fe80::1%eth0\noptions ndots:2\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        let got: Vec<String> = name_servers(conf).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.0.0.1:53", "[::1]:53", "10.0.0.2:53"]);
        assert_eq!(
            name_servers("search x\n"),
            [SocketAddr::from(([127, 0, 0, 1], 53))]
        );
    }

    /// A server on loopback answering each A query from `answer` (the query, the reply bytes)
    /// over UDP, and over TCP if given one; AAAA queries get an empty NOERROR.
    async fn serve(udp: UdpSocket, tcp: Option<tokio::net::TcpListener>, answer: fn(&[u8], bool) -> Vec<u8>) {
        if let Some(tcp) = tcp {
            tokio::spawn(async move {
                while let Ok((mut s, _)) = tcp.accept().await {
                    let length = s.read_u16().await.unwrap();
                    let mut q = vec![0u8; usize::from(length)];
                    s.read_exact(&mut q).await.unwrap();
                    let a = answer(&q, true);
                    s.write_all(&(a.len() as u16).to_be_bytes()).await.unwrap();
                    s.write_all(&a).await.unwrap();
                }
            });
        }
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                udp.send_to(&answer(&buf[..n], false), from).await.unwrap();
            }
        });
    }

    /// An answer to `q`: `flags` in the header, one A record with `ttl` if `q` asks for A.
    fn answer_with(q: &[u8], flags: u16, ttl: u32) -> Vec<u8> {
        let asks_a = q[q.len() - 3] == TYPE_A as u8;
        let mut out = q[..2].to_vec();
        out.extend_from_slice(&(0x8180 | flags).to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, u8::from(asks_a), 0, 0, 0, 0]);
        out.extend_from_slice(&q[12..]);
        if asks_a {
            out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&[0, 4, 127, 0, 0, 2]);
        }
        out
    }

    async fn loopback_server() -> (UdpSocket, tokio::net::TcpListener, SocketAddr) {
        // One port for both, as a name server has.
        loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let at = udp.local_addr().unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(at).await {
                return (udp, tcp, at);
            }
        }
    }

    #[tokio::test]
    async fn the_ttl_comes_over_udp_or_over_tcp_when_truncated() {
        let (udp, tcp, at) = loopback_server().await;
        serve(udp, None, |q, _| answer_with(q, 0, 77)).await;
        assert_eq!(ttl_from(&[at], "a.test").await, Some(Duration::from_secs(77)));
        drop(tcp);

        let (udp, tcp, at) = loopback_server().await;
        // Truncated over UDP, whole over TCP.
        serve(udp, Some(tcp), |q, over_tcp| {
            if over_tcp {
                answer_with(q, 0, 33)
            } else {
                answer_with(q, 0x0200, 1)
            }
        })
        .await;
        assert_eq!(ttl_from(&[at], "a.test.").await, Some(Duration::from_secs(33)));
    }

    #[tokio::test]
    async fn a_silent_or_failing_server_gives_way_to_the_next_and_all_silent_is_no_ttl() {
        // Bound and never answering.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent_at = silent.local_addr().unwrap();
        let (udp, _tcp, failing_at) = loopback_server().await;
        serve(udp, None, |q, _| answer_with(q, 2, 5)).await; // SERVFAIL
        let (udp, _tcp2, good_at) = loopback_server().await;
        serve(udp, None, |q, _| answer_with(q, 0, 5)).await;
        let started = std::time::Instant::now();
        let ttl = ttl_from(&[silent_at, failing_at, good_at], "a.test").await;
        assert_eq!(ttl, Some(Duration::from_secs(5)));
        assert!(started.elapsed() < QUERY_BOUND, "{:?}", started.elapsed());

        let started = std::time::Instant::now();
        assert_eq!(ttl_from(&[silent_at], "a.test").await, None);
        let waited = started.elapsed();
        assert!(waited >= QUERY_BOUND && waited < QUERY_BOUND * 2, "{waited:?}");
        drop(silent);
    }

    #[tokio::test]
    async fn a_zero_ttl_or_a_name_without_records_is_no_ttl() {
        let (udp, _tcp, at) = loopback_server().await;
        serve(udp, None, |q, _| answer_with(q, 0, 0)).await;
        assert_eq!(ttl_from(&[at], "a.test").await, None);
        let (udp, _tcp, at) = loopback_server().await;
        serve(udp, None, |q, _| answer_with(q, 3, 60)).await; // NXDOMAIN
        assert_eq!(ttl_from(&[at], "a.test").await, None);
    }
}
