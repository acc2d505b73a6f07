//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that the connector writes first
//! on every new upstream connection of a cluster with `upstreamProxyProtocol`, as Envoy's
//! upstream_proxy_protocol transport socket: it carries the client's address and the address
//! the client connected to (the listener side of the downstream connection). A connection that
//! carried one client's header serves only that client: the pool looks connections up by these
//! addresses (Envoy hashes the same state into its pool key).
//!
//! Encoded by hand: both formats are a few fixed fields, and the crates that exist either parse
//! only or pull in a byte-buffer stack; the header lives on the stack, with no allocation.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use snapshot::ProxyProtocolVersion;

/// The addresses of one downstream connection, as its PROXY header says them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProxyAddresses {
    /// The client's address (the downstream peer).
    pub source: SocketAddr,
    /// The address the client connected to (the downstream socket's local address).
    pub destination: SocketAddr,
}

/// The v2 signature (spec, 2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2 with the PROXY command; with LOCAL.
const V2_PROXY: u8 = 0x21;
const V2_LOCAL: u8 = 0x20;
/// TCP over IPv4; over IPv6; unspecified (LOCAL).
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;
const V2_UNSPEC: u8 = 0x00;

/// The longest header: v1's "PROXY TCP6" line with two full IPv6 addresses is 104 bytes (the
/// spec's bound is 107).
const MAX_HEADER: usize = 108;

/// An encoded header.
pub(crate) struct ProxyHeader {
    bytes: [u8; MAX_HEADER],
    len: usize,
}

impl ProxyHeader {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn new() -> ProxyHeader {
        ProxyHeader {
            bytes: [0; MAX_HEADER],
            len: 0,
        }
    }

    fn put(&mut self, part: &[u8]) {
        self.bytes[self.len..self.len + part.len()].copy_from_slice(part);
        self.len += part.len();
    }

    /// The header for a client's connection.
    pub(crate) fn for_client(version: ProxyProtocolVersion, addresses: ProxyAddresses) -> ProxyHeader {
        let (source, destination) = same_family(addresses.source, addresses.destination);
        match version {
            ProxyProtocolVersion::V1 => v1(source, destination),
            ProxyProtocolVersion::V2 => v2(source, destination),
        }
    }

    /// The header for a connection with no client (a health check): as Envoy, version 1 names
    /// the connection's own addresses, version 2 says LOCAL (the receiver then uses the real
    /// connection's addresses).
    pub(crate) fn without_client(
        version: ProxyProtocolVersion,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> ProxyHeader {
        match version {
            ProxyProtocolVersion::V1 => {
                let (source, destination) = same_family(local, peer);
                v1(source, destination)
            }
            ProxyProtocolVersion::V2 => {
                let mut h = ProxyHeader::new();
                h.put(&V2_SIGNATURE);
                h.put(&[V2_LOCAL, V2_UNSPEC, 0, 0]);
                h
            }
        }
    }
}

/// Both addresses in one family, as both formats need: IPv4-mapped IPv6 addresses as IPv4, and
/// when one is still IPv6, the other as IPv4-mapped IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let plain = |s: SocketAddr| match s.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), s.port()),
            None => s,
        },
        IpAddr::V4(_) => s,
    };
    let (a, b) = (plain(a), plain(b));
    let six = |s: SocketAddr| match s.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (six(a), six(b))
    }
}

/// "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (spec, 2.1).
fn v1(source: SocketAddr, destination: SocketAddr) -> ProxyHeader {
    use std::io::Write;
    let mut h = ProxyHeader::new();
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    let mut line = std::io::Cursor::new(&mut h.bytes[..]);
    // Fits: MAX_HEADER bounds the longest line.
    let _ = write!(
        line,
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    );
    h.len = line.position() as usize;
    h
}

/// The binary header with the PROXY command over TCP (spec, 2.2).
fn v2(source: SocketAddr, destination: SocketAddr) -> ProxyHeader {
    let mut h = ProxyHeader::new();
    h.put(&V2_SIGNATURE);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.put(&[V2_PROXY, V2_TCP4]);
            h.put(&12u16.to_be_bytes());
            h.put(&s.octets());
            h.put(&d.octets());
        }
        (s, d) => {
            let six = |ip: IpAddr| match ip {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            };
            let (s, d): (Ipv6Addr, Ipv6Addr) = (six(s), six(d));
            h.put(&[V2_PROXY, V2_TCP6]);
            h.put(&36u16.to_be_bytes());
            h.put(&s.octets());
            h.put(&d.octets());
        }
    }
    h.put(&source.port().to_be_bytes());
    h.put(&destination.port().to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(source: &str, destination: &str) -> ProxyAddresses {
        ProxyAddresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn v1_is_one_text_line() {
        let h = ProxyHeader::for_client(ProxyProtocolVersion::V1, addrs("10.0.0.1:5000", "127.0.0.1:8080"));
        assert_eq!(h.as_bytes(), b"PROXY TCP4 10.0.0.1 127.0.0.1 5000 8080\r\n");
        let h = ProxyHeader::for_client(ProxyProtocolVersion::V1, addrs("[::1]:5000", "[::2]:80"));
        assert_eq!(h.as_bytes(), b"PROXY TCP6 ::1 ::2 5000 80\r\n");
    }

    #[test]
    fn the_longest_v1_line_fits() {
        let full = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535";
        let h = ProxyHeader::for_client(ProxyProtocolVersion::V1, addrs(full, full));
        assert!(h.as_bytes().ends_with(b" 65535 65535\r\n"), "{:?}", h.as_bytes());
    }

    #[test]
    fn v2_ipv4_is_the_binary_form() {
        let h = ProxyHeader::for_client(ProxyProtocolVersion::V2, addrs("10.0.0.1:5000", "127.0.0.1:8080"));
        let mut want = V2_SIGNATURE.to_vec();
        want.extend([
            0x21, 0x11, 0, 12, 10, 0, 0, 1, 127, 0, 0, 1, 0x13, 0x88, 0x1f, 0x90,
        ]);
        assert_eq!(h.as_bytes(), want);
    }

    #[test]
    fn mapped_addresses_are_ipv4_and_mixed_families_are_ipv6() {
        let h = ProxyHeader::for_client(
            ProxyProtocolVersion::V1,
            addrs("[::ffff:10.0.0.1]:1", "127.0.0.1:2"),
        );
        assert_eq!(h.as_bytes(), b"PROXY TCP4 10.0.0.1 127.0.0.1 1 2\r\n");
        let h = ProxyHeader::for_client(ProxyProtocolVersion::V2, addrs("10.0.0.1:1", "[::1]:2"));
        assert_eq!(&h.as_bytes()[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(h.as_bytes().len(), 16 + 36);
    }

    #[test]
    fn without_a_client_v2_says_local() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let h = ProxyHeader::without_client(ProxyProtocolVersion::V2, a, a);
        let mut want = V2_SIGNATURE.to_vec();
        want.extend([0x20, 0, 0, 0]);
        assert_eq!(h.as_bytes(), want);
    }
}
