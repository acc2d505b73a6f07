//! The gRPC health check (`healthCheck.grpc`, Envoy's `grpc_health_check`): each probe calls
//! `grpc.health.v1.Health/Check` with the configured `service` over HTTP/2 (whatever the
//! cluster's protocol, as Envoy's gRPC checker always speaks HTTP/2) on a connection of its own,
//! kept between checks. It passes when the call ends OK with `status: SERVING`; an answer of any
//! other status (NOT_SERVING, UNKNOWN), a non-OK `grpc-status` or a non-200 HTTP status fails at
//! once; a connection that cannot be opened or breaks, or an answer that is not a gRPC
//! message, is a network failure (Envoy: `unhealthy_threshold` of those in a row).

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use snapshot::GrpcHealthCheck;
use tokio::task::JoinHandle;

use crate::h2_body;
use crate::health_check::{Probe, ProbeConnector};

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// A health answer is a few bytes; anything much bigger is not one.
const MAX_ANSWER: usize = 1024;

/// A gRPC probe's connection, kept between checks (Envoy's `reuse_connection`).
#[derive(Default)]
pub(crate) struct GrpcProbe {
    connection: Option<(SendRequest<Bytes>, JoinHandle<()>)>,
}

impl Drop for GrpcProbe {
    fn drop(&mut self) {
        self.close();
    }
}

/// Why a probe did not pass.
enum Failed {
    /// The call completed with another answer (Envoy: an active failure).
    Answer(u16),
    /// The connection or the stream failed, or the answer was not a gRPC message.
    Network(String),
}

impl GrpcProbe {
    fn close(&mut self) {
        if let Some((_, driver)) = self.connection.take() {
            driver.abort();
        }
    }

    /// One `Health/Check` call to `address`, all within `timeout`. `authority`: the check's
    /// own, else the endpoint's hostname or the cluster's name.
    pub(crate) async fn probe(
        &mut self,
        address: std::net::SocketAddr,
        check: &GrpcHealthCheck,
        authority: &str,
        connector: &ProbeConnector,
        timeout: std::time::Duration,
    ) -> Probe {
        let called = tokio::time::timeout(timeout, self.call(address, check, authority, connector)).await;
        match called {
            Ok(Ok(())) => Probe::Pass,
            Ok(Err(Failed::Answer(status))) => Probe::Fail(status),
            Ok(Err(Failed::Network(why))) => {
                tracing::debug!(%address, "gRPC health check: {why}");
                self.close();
                Probe::NetworkFailure
            }
            Err(_) => {
                self.close();
                Probe::Timeout
            }
        }
    }

    async fn call(
        &mut self,
        address: std::net::SocketAddr,
        check: &GrpcHealthCheck,
        authority: &str,
        connector: &ProbeConnector,
    ) -> Result<(), Failed> {
        let network = |e: &dyn std::fmt::Display| Failed::Network(e.to_string());
        // A kept connection that ended (GOAWAY, closed) is replaced.
        if self
            .connection
            .as_ref()
            .is_some_and(|(_, driver)| driver.is_finished())
        {
            self.close();
        }
        let send = match &self.connection {
            Some((send, _)) => send.clone(),
            None => {
                let transport = connector.connect(address).await.map_err(|e| network(&e))?;
                let (send, connection) = h2::client::handshake(transport).await.map_err(|e| network(&e))?;
                let driver = tokio::spawn(async move {
                    let _ = connection.await;
                });
                self.connection = Some((send.clone(), driver));
                send
            }
        };
        let mut send = send.ready().await.map_err(|e| network(&e))?;
        let scheme = if connector.tls.is_some() { "https" } else { "http" };
        let request = http::Request::post(format!(
            "{scheme}://{}/grpc.health.v1.Health/Check",
            check.authority.as_deref().unwrap_or(authority)
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "Envoy/HC")
        .body(())
        .map_err(|e| network(&e))?;
        let (response, mut body) = send.send_request(request, false).map_err(|e| network(&e))?;
        let message = health_check_request(check.service_name.as_deref().unwrap_or(""));
        h2_body::send_data(&mut body, message, true)
            .await
            .map_err(|e| network(&e))?;
        let response = response.await.map_err(|e| network(&e))?;
        let http_status = response.status().as_u16();
        // A gRPC error answered in the head alone (trailers-only).
        let head_grpc_status = grpc_status(response.headers());
        if http_status != 200 {
            return Err(Failed::Answer(http_status));
        }
        let mut answer = response.into_body();
        let mut data = BytesMut::new();
        while let Some(chunk) = h2_body::recv_data(&mut answer).await {
            data.extend_from_slice(&chunk.map_err(|e| network(&e))?);
            if data.len() > MAX_ANSWER {
                return Err(Failed::Network(
                    "the answer is too big for a health answer".into(),
                ));
            }
        }
        let trailers = h2_body::trailers(&mut answer).await.map_err(|e| network(&e))?;
        let status = trailers.as_ref().and_then(grpc_status).or(head_grpc_status);
        match status {
            Some(0) => {}
            Some(_) => return Err(Failed::Answer(http_status)),
            None => return Err(Failed::Network("the call ended without grpc-status".into())),
        }
        match serving_status(&data) {
            Some(SERVING) => Ok(()),
            Some(_) => Err(Failed::Answer(http_status)),
            None => Err(Failed::Network("the answer is not a HealthCheckResponse".into())),
        }
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// A gRPC message (uncompressed, length-prefixed) carrying `HealthCheckRequest { service }`.
fn health_check_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        // Field 1, length-delimited.
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The `status` of the `HealthCheckResponse` in one gRPC message (0, UNKNOWN, when the field is
/// absent, as protobuf's default); None when it is not one.
fn serving_status(framed: &[u8]) -> Option<u64> {
    let (&compressed, rest) = framed.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let length = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let message = rest.get(4..4 + length)?;
    let mut status = 0;
    let mut at = 0;
    while at < message.len() {
        let key = varint(message, &mut at)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(message, &mut at)?,
            (_, 0) => {
                varint(message, &mut at)?;
            }
            (_, 2) => {
                let len = varint(message, &mut at)? as usize;
                at = at.checked_add(len).filter(|end| *end <= message.len())?;
            }
            (_, 1) => at += 8,
            (_, 5) => at += 4,
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;
    use crate::socket_options::SocketOptions;

    #[test]
    fn request_and_answer_encoding() {
        assert_eq!(&health_check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &health_check_request("svc")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b's', b'v', b'c']
        );
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(SERVING));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(serving_status(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(serving_status(&[0, 0, 0, 0, 5, 0x08]), None, "short");
    }

    /// A gRPC health server answering `status` (1 SERVING, 2 NOT_SERVING) to every check,
    /// recording the service asked for; counts its connections.
    async fn health_server(status: Arc<AtomicU64>) -> (std::net::SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let status = status.clone();
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    // Each stream in a task of its own: the accept loop drives the connection.
                    while let Some(Ok((request, mut respond))) = conn.accept().await {
                        let status = status.clone();
                        tokio::spawn(async move {
                            assert_eq!(request.uri().path(), "/grpc.health.v1.Health/Check");
                            assert_eq!(request.uri().authority().unwrap().as_str(), "svc.example.com");
                            let mut body = request.into_body();
                            let mut asked = Vec::new();
                            while let Some(Ok(d)) = h2_body::recv_data(&mut body).await {
                                asked.extend_from_slice(&d);
                            }
                            assert_eq!(asked, &health_check_request("pkg.Svc")[..]);
                            let head = http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(())
                                .unwrap();
                            let mut out = respond.send_response(head, false).unwrap();
                            let s = status.load(Ordering::SeqCst) as u8;
                            out.send_data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, s]), false)
                                .unwrap();
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            out.send_trailers(trailers).unwrap();
                        });
                    }
                });
            }
        });
        (address, connections)
    }

    #[tokio::test]
    async fn serving_passes_not_serving_fails_and_the_connection_is_kept() {
        let status = Arc::new(AtomicU64::new(SERVING));
        let (address, connections) = health_server(status.clone()).await;
        let connector = ProbeConnector {
            options: SocketOptions {
                tcp_keepalive: None,
                tcp_user_timeout: false,
            },
            connect_timeout: Duration::from_secs(1),
            proxy_protocol: None,
            tls: None,
        };
        let check = GrpcHealthCheck {
            service_name: Some("pkg.Svc".into()),
            authority: Some("svc.example.com".into()),
        };
        let mut probe = GrpcProbe::default();
        let timeout = Duration::from_secs(2);
        assert_eq!(
            probe.probe(address, &check, "cluster", &connector, timeout).await,
            Probe::Pass
        );
        status.store(2, Ordering::SeqCst);
        assert_eq!(
            probe.probe(address, &check, "cluster", &connector, timeout).await,
            Probe::Fail(200)
        );
        assert_eq!(connections.load(Ordering::SeqCst), 1, "one kept connection");
        // Nobody listening: a network failure.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let mut other = GrpcProbe::default();
        assert_eq!(
            other.probe(closed, &check, "cluster", &connector, timeout).await,
            Probe::NetworkFailure
        );
    }
}
