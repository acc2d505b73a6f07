//! Request mirrors (HTTPRoute RequestMirror, Envoy's `request_mirror_policies`): a copy of the
//! request goes to each mirror cluster (all requests, or the mirror's share of them, each drawn
//! on its own), fire and forget: the client's exchange never waits for it, and the mirror's
//! answer is read and thrown away. As Envoy does, the copy's Host gets a `-shadow` suffix
//! (before any port), so the mirror can tell copies from live traffic.
//!
//! A copy carries the whole request when the proxy holds it when routing: a request without a
//! body, or an HTTP/1.1 request whose Content-Length body came in with its head. A request
//! whose body is still to be read (streamed, chunked, or larger than what was read) is not
//! mirrored, nor is a copy sent to a cluster that speaks HTTP/2 (kgw's mirrors speak
//! HTTP/1.1).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use snapshot::{RequestMirror, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::h1::{self, Framing, RequestHead};
use crate::h2_to_h1::StreamRequest;
use crate::load_balancing::{self, PickContext};
use crate::upstream::End;
use crate::{Runtime, circuit_breakers, stats};

/// How long a copy may take, connection and answer included: the route timeout's default.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

/// Mirrors an HTTP/1.1 request (its head and what `buf` holds of its body) when `route` says so.
pub(crate) fn from_http1(
    runtime: &Arc<Runtime>,
    route: &Route,
    buf: &[u8],
    head: &RequestHead,
    client: &str,
    tls: bool,
) {
    // An upgrade is a tunnel to one backend, not a request to copy.
    if route.mirrors.is_empty() || head.upgrade != h1::Upgrade::None {
        return;
    }
    let body = match head.framing {
        Framing::Empty => &[][..],
        Framing::Length(n) => match buf.get(head.len..head.len.saturating_add(n as usize)) {
            Some(body) if body.len() as u64 == n => body,
            _ => return,
        },
        Framing::Chunked | Framing::UntilClose => return,
    };
    let mut copy = Vec::with_capacity(head.len + body.len() + 64);
    let scheme: &[u8] = if tls { b"https" } else { b"http" };
    h1::write_request_head(&mut copy, buf, head, client.as_bytes(), scheme);
    let mut copy = with_shadow_host(&copy);
    copy.extend_from_slice(body);
    send_all(runtime, &route.mirrors, copy);
}

/// Mirrors an HTTP/2 request without a body when `route` says so (as HTTP/1.1).
pub(crate) fn from_http2(
    runtime: &Arc<Runtime>,
    route: &Route,
    request: &StreamRequest<'_>,
    end_of_stream: bool,
) {
    if route.mirrors.is_empty() || !end_of_stream {
        return;
    }
    let mut head = Vec::with_capacity(512);
    crate::h2_to_h1::write_request_head(&mut head, request, Framing::Empty);
    send_all(runtime, &route.mirrors, with_shadow_host(&head));
}

fn send_all(runtime: &Arc<Runtime>, mirrors: &[RequestMirror], copy: Vec<u8>) {
    let copy: Arc<[u8]> = copy.into();
    for mirror in mirrors {
        let drawn = mirror
            .share
            .is_none_or(|s| load_balancing::random_u64() % 1_000_000 < u64::from(s.per_million()));
        if drawn && let Some(cluster) = runtime.clusters.get(mirror.index) {
            let (cluster, copy) = (cluster.clone(), copy.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(MIRROR_TIMEOUT, send(cluster, copy)).await;
            });
        }
    }
}

/// One copy to one cluster, on a connection of its own; the answer's head is read (its status
/// counted) and the connection closed.
async fn send(cluster: Arc<crate::ClusterRuntime>, copy: Arc<[u8]>) {
    if cluster.speaks_http2() {
        return;
    }
    stats::inc(&cluster.stats().upstream_rq_total);
    let no_headers = http::HeaderMap::new();
    let mut pick = PickContext::new(&no_headers, SocketAddr::from(([0, 0, 0, 0], 0)));
    let Some(endpoint) = cluster.pick(&mut pick) else {
        stats::inc(&cluster.stats().upstream_cx_none_healthy);
        return;
    };
    let Ok(mut conn) =
        circuit_breakers::connection_for(&cluster, &endpoint, None, MIRROR_TIMEOUT, false).await
    else {
        return;
    };
    conn.end = End::Local;
    if conn.transport.write_all(&copy).await.is_err() {
        return;
    }
    let mut read = Vec::with_capacity(1024);
    loop {
        if let Ok(Some(response)) = h1::parse_response(&read, b"GET") {
            cluster.stats().count_status(response.status);
            return;
        }
        let mut chunk = [0u8; 1024];
        match conn.transport.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) if read.len() + n <= 64 * 1024 => read.extend_from_slice(&chunk[..n]),
            Ok(_) => return,
        }
    }
}

/// The head with its Host value `name-shadow` (`name-shadow:port` with a port), as Envoy
/// marks a mirrored request's authority.
fn with_shadow_host(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 8);
    for line in head.split_inclusive(|&b| b == b'\n') {
        let is_host = line.len() > 5 && line[..5].eq_ignore_ascii_case(b"host:");
        if !is_host {
            out.extend_from_slice(line);
            continue;
        }
        let value = String::from_utf8_lossy(line[5..].trim_ascii());
        let (name, port) = snapshot::split_port(&value);
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"-shadow");
        if let Some(port) = port {
            out.push(b':');
            out.extend_from_slice(port.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_says_shadow_before_the_port() {
        let head = b"GET /a HTTP/1.1\r\nhost: example.com:8080\r\nx: y\r\n\r\n";
        assert_eq!(
            with_shadow_host(head),
            b"GET /a HTTP/1.1\r\nhost: example.com-shadow:8080\r\nx: y\r\n\r\n"
        );
        let head = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
        assert_eq!(
            with_shadow_host(head),
            b"GET / HTTP/1.1\r\nhost: example.com-shadow\r\n\r\n"
        );
        let head = b"GET / HTTP/1.1\r\nhost: [::1]\r\n\r\n";
        assert_eq!(
            with_shadow_host(head),
            b"GET / HTTP/1.1\r\nhost: [::1]-shadow\r\n\r\n"
        );
    }
}
