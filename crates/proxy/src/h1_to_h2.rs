//! An HTTP/1.1 client's request to a cluster that speaks HTTP/2 (`upstream_h2.rs`).
//! - The head: the proxy's edits as on the HTTP/1.1 path (`h1::write_request_head`:
//!   x-forwarded-for and x-forwarded-proto, hop-by-hop headers dropped), then as HTTP/2: Host
//!   becomes `:authority`, `:scheme` is the upstream's (https over TLS, else http), and the
//!   connection-specific headers HTTP/2 forbids (transfer-encoding, ...) are left out.
//! - The body (content-length or chunked, as the client sent it) goes as DATA frames under
//!   the upstream's flow control (`h2_body::send_data`); chunked trailers are dropped.
//! - The response comes back as HTTP/1.1: with its content-length when it has one, else
//!   chunked (close-delimited to an HTTP/1.0 client); its trailers are dropped (Envoy's HTTP/1
//!   codec sends them only with `enableTrailers`, kept simple here).
//! - Failures before the response head are Envoy's local replies (503 UC "connection
//!   termination" when the connection dies, "remote reset" when the stream is reset); a
//!   failure mid-body resets the client's connection, as on the HTTP/1.1 path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};

use crate::DataPlane;
use crate::cluster::{ClusterRuntime, Endpoint};
use crate::downstream::{Downstream, Next, Outcome};
use crate::h1::{self, BodyFrame, Framing, RequestHead};
use crate::h2_body;
use crate::http_protocol::read_bounded;
use crate::local_reply::{LocalReply, ResponseFlag};
use crate::outlier_detection::Report;
use crate::stats;
use crate::upstream_h2::{self, UpstreamStream};

/// Headers that describe one HTTP/1.1 connection and are malformed in HTTP/2 (RFC 9113,
/// 8.2.2); `host` becomes `:authority`.
const NOT_IN_HTTP2: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
];

/// What the request needs from the client connection's side.
pub(crate) struct H1Request<'a> {
    pub cluster: &'a Arc<ClusterRuntime>,
    pub endpoint: &'a Arc<Endpoint>,
    pub buf: Vec<u8>,
    pub head: &'a RequestHead,
    pub is_head: bool,
    pub set_cookies: Vec<String>,
}

impl Downstream {
    /// Proxies one HTTP/1.1 request to an HTTP/2 upstream; the client's head and body are
    /// consumed from its buffer.
    pub(crate) async fn forward_to_h2(
        &mut self,
        dp: &DataPlane,
        r: H1Request<'_>,
    ) -> std::io::Result<Outcome> {
        let H1Request {
            cluster,
            endpoint,
            buf,
            head,
            is_head,
            set_cookies,
        } = r;
        let keep_alive = head.keep_alive && !dp.is_draining();
        let scheme = if self.stream.is_tls() { "https" } else { "http" };
        let request = match h2_request(&buf, head, self.client_address().as_bytes(), scheme, cluster) {
            Ok(request) => request,
            Err(reply) => {
                self.buf = buf;
                self.buf.drain(..head.len);
                return self
                    .local_reply_after_head(head.framing, keep_alive, is_head, reply, None)
                    .await;
            }
        };
        let continue_body = h1::expects_continue(&buf, head);
        self.buf = buf;
        self.buf.drain(..head.len);
        stats::inc(&cluster.stats().upstream_rq_active);
        stats::inc(&endpoint.active_requests);
        // With the cluster's maxStreamDuration, as on the HTTP/1.1 path: 504 UMSDR before the
        // response head, a reset after.
        let response_status = AtomicU16::new(0);
        let exchange = self.h2_exchange(
            dp,
            cluster,
            endpoint,
            request,
            head,
            is_head,
            continue_body,
            set_cookies,
            &response_status,
        );
        let result = match cluster.http_options().max_stream_duration {
            None => exchange.await,
            Some(limit) => match tokio::time::timeout(limit, exchange).await {
                Ok(result) => result,
                Err(_) => {
                    stats::inc(&cluster.stats().upstream_rq_max_duration_reached);
                    match response_status.load(Ordering::Relaxed) {
                        0 => Err(LocalReply::max_stream_duration()),
                        status => Ok(Outcome {
                            status,
                            flag: Some(ResponseFlag::UpstreamMaxStreamDurationReached),
                            upstream: Some(endpoint.address),
                            next: Next::Reset,
                        }),
                    }
                }
            },
        };
        stats::dec(&cluster.stats().upstream_rq_active);
        stats::dec(&endpoint.active_requests);
        match result {
            Ok(outcome) => {
                cluster.stats().count_status(outcome.status);
                Ok(outcome)
            }
            Err(reply) => {
                if reply.flag == Some(ResponseFlag::UpstreamRequestTimeout) {
                    stats::inc(&cluster.stats().upstream_rq_timeout);
                }
                cluster.stats().count_status(reply.status);
                // The body may be partly read: unless none was, the connection closes.
                self.local_reply_after_head(head.framing, keep_alive, is_head, reply, Some(endpoint.address))
                    .await
            }
        }
    }

    /// The stream: opened, the body sent, the response head awaited (the route timeout from
    /// the end of the request), then the response relayed.
    #[allow(clippy::too_many_arguments)]
    async fn h2_exchange(
        &mut self,
        dp: &DataPlane,
        cluster: &Arc<ClusterRuntime>,
        endpoint: &Arc<Endpoint>,
        request: Request<()>,
        head: &RequestHead,
        is_head: bool,
        continue_body: bool,
        set_cookies: Vec<String>,
        response_status: &AtomicU16,
    ) -> Result<Outcome, LocalReply> {
        let route_timeout = dp.options.route_timeout;
        let no_body = head.framing == Framing::Empty;
        let proxied = cluster
            .policy_ref()
            .proxy_protocol
            .is_some()
            .then(|| self.proxied())
            .flatten();
        let UpstreamStream {
            response,
            body,
            lease,
        } = upstream_h2::open_stream(cluster, endpoint, request, no_body, route_timeout, proxied).await?;
        let mut request_whole = no_body;
        let mut response = std::pin::pin!(response);
        let response = if no_body {
            tokio::time::timeout(route_timeout, response.as_mut()).await
        } else {
            if continue_body && self.buf.is_empty() && head.version == h1::Version::Http11 {
                self.stream
                    .send(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .map_err(|_| LocalReply::upstream_terminated())?;
            }
            let stream_idle = dp.options.stream_idle_timeout;
            let upload = self.upload(body, head.framing, stream_idle);
            tokio::pin!(upload);
            // An early answer (a 413, say) ends the upload: the rest is not read.
            let early = tokio::select! {
                biased;
                r = response.as_mut() => Some(r),
                r = &mut upload => match r {
                    Ok(()) => {
                        request_whole = true;
                        None
                    }
                    Err(Some(reply)) => return Err(reply),
                    Err(None) => {
                        return Ok(Outcome {
                            status: 0,
                            flag: Some(ResponseFlag::DownstreamConnectionTermination),
                            upstream: Some(endpoint.address),
                            next: Next::Close,
                        });
                    }
                },
            };
            match early {
                Some(r) => Ok(r),
                None => tokio::time::timeout(route_timeout, response.as_mut()).await,
            }
        };
        let response = match response {
            Err(_) => {
                cluster.outlier.report(cluster, endpoint, Report::Timeout);
                return Err(LocalReply::upstream_timeout());
            }
            Ok(Err(e)) => {
                cluster.outlier.report(cluster, endpoint, Report::ConnectFailed);
                return Err(upstream_h2::stream_failed(&e));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        // From here the client may get part of the response.
        response_status.store(status, Ordering::Relaxed);
        cluster.outlier.report(cluster, endpoint, Report::Status(status));
        let close = !head.keep_alive || dp.is_draining() || !request_whole;
        let (parts, mut body) = response.into_parts();
        let length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bodiless = is_head || status == 204 || status == 304 || (100..200).contains(&status);
        let chunked = !bodiless && length.is_none() && head.version == h1::Version::Http11;
        let until_close = !bodiless && length.is_none() && !chunked && !body.is_end_stream();
        let close = close || until_close;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if NOT_IN_HTTP2.contains(&name.as_str()) {
                continue;
            }
            put_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
        for cookie in &set_cookies {
            put_header(&mut out, b"set-cookie", cookie.as_bytes());
        }
        if chunked {
            put_header(&mut out, b"transfer-encoding", b"chunked");
        } else if length.is_none() && !bodiless && body.is_end_stream() {
            put_header(&mut out, b"content-length", b"0");
        }
        if close {
            put_header(&mut out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        let mut outcome = Outcome {
            status,
            flag: None,
            upstream: Some(endpoint.address),
            next: if close { Next::Close } else { Next::KeepAlive },
        };
        if self.stream.send(&out).await.is_err() {
            outcome.flag = Some(ResponseFlag::DownstreamConnectionTermination);
            outcome.next = Next::Close;
            return Ok(outcome);
        }
        if bodiless {
            drop(lease);
            return Ok(outcome);
        }
        let idle = dp.options.stream_idle_timeout;
        loop {
            let data = match tokio::time::timeout(idle, h2_body::recv_data(&mut body)).await {
                Err(_) => {
                    stats::inc(&dp.downstream.downstream_rq_idle_timeout);
                    outcome.flag = Some(ResponseFlag::StreamIdleTimeout);
                    outcome.next = Next::Reset;
                    return Ok(outcome);
                }
                Ok(None) => break,
                Ok(Some(Err(_))) => {
                    // Cut part-way (the connection died, or the stream was reset).
                    outcome.flag = Some(ResponseFlag::UpstreamConnectionTermination);
                    outcome.next = Next::Reset;
                    return Ok(outcome);
                }
                Ok(Some(Ok(data))) => data,
            };
            if data.is_empty() {
                continue;
            }
            out.clear();
            if chunked {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&data);
            }
            if self.stream.send(&out).await.is_err() {
                outcome.flag = Some(ResponseFlag::DownstreamConnectionTermination);
                outcome.next = Next::Close;
                return Ok(outcome);
            }
        }
        if chunked && self.stream.send(b"0\r\n\r\n").await.is_err() {
            outcome.next = Next::Close;
        }
        drop(lease);
        Ok(outcome)
    }

    /// Sends the client's body (from its buffer, then its connection) on `stream`, decoded
    /// from its HTTP/1.1 framing; a stall longer than `stream_idle` ends it (Envoy: 408 SI).
    /// Err(None): the client left mid-body (the stream is reset as it drops).
    async fn upload(
        &mut self,
        mut stream: h2::SendStream<Bytes>,
        framing: Framing,
        stream_idle: Duration,
    ) -> Result<(), Option<LocalReply>> {
        let mut frame = BodyFrame::new(framing);
        let mut decoder = ChunkDecoder::default();
        let mut framed = Vec::new();
        loop {
            framed.clear();
            frame
                .move_body(&mut self.buf, &mut framed, false)
                .map_err(|_| Some(LocalReply::bad_request_body()))?;
            let data = if framing == Framing::Chunked {
                decoder.decode(&framed)
            } else {
                std::mem::take(&mut framed)
            };
            let done = frame.is_done();
            if !data.is_empty() || done {
                h2_body::send_data(&mut stream, Bytes::from(data), done)
                    .await
                    .map_err(|e| Some(upstream_h2::stream_failed(&e)))?;
            }
            if done {
                return Ok(());
            }
            match tokio::time::timeout(stream_idle, read_bounded(&mut self.stream, &mut self.buf, None)).await
            {
                Err(_) => return Err(Some(LocalReply::stream_timeout_in_request())),
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Err(None),
            }
        }
    }
}

/// The HTTP/2 request for an HTTP/1.1 head, with the proxy's edits.
fn h2_request(
    buf: &[u8],
    head: &RequestHead,
    client: &[u8],
    scheme: &str,
    cluster: &ClusterRuntime,
) -> Result<Request<()>, LocalReply> {
    let mut lowered = buf[..head.len].to_vec();
    for h in head.headers.iter() {
        lowered[h.name.clone()].make_ascii_lowercase();
    }
    let mut edited = Vec::with_capacity(head.len + 128);
    h1::write_request_head(&mut edited, &lowered, head, client, scheme.as_bytes());
    let mut headers = [httparse::EMPTY_HEADER; h1::MAX_HEADERS + 4];
    let mut parsed = httparse::Request::new(&mut headers);
    let bad = LocalReply::bad_request_body;
    if !matches!(parsed.parse(&edited), Ok(httparse::Status::Complete(_))) {
        return Err(bad());
    }
    let method = Method::from_bytes(parsed.method.unwrap_or("GET").as_bytes()).map_err(|_| bad())?;
    let path = parsed.path.unwrap_or("/");
    let authority = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .unwrap_or("");
    let upstream_scheme = if cluster.tls.client().is_some() {
        "https"
    } else {
        "http"
    };
    let uri = Uri::builder()
        .scheme(upstream_scheme)
        .authority(if authority.is_empty() {
            "localhost"
        } else {
            authority
        })
        .path_and_query(path)
        .build()
        .map_err(|_| bad())?;
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(map) = request.headers_mut() {
        for h in parsed.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            if NOT_IN_HTTP2.contains(&name.as_str()) {
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| bad())?;
            map.append(name, value);
        }
    }
    request.body(()).map_err(|_| bad())
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The data of a chunked body whose framing `BodyFrame` already checked: chunk sizes,
/// extensions, CRLFs and trailers are skipped; fed the framed bytes in order.
#[derive(Default)]
struct ChunkDecoder {
    state: ChunkState,
    /// Data bytes left in the current chunk (in a size line: the size so far).
    left: u64,
    /// Past the size, in the size line's extensions.
    in_extension: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// In a size line (size, extensions) until its LF.
    #[default]
    SizeLine,
    Data,
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers and the final CRLF (dropped).
    Trailers,
}

impl ChunkDecoder {
    fn decode(&mut self, framed: &[u8]) -> Vec<u8> {
        let mut data = Vec::with_capacity(framed.len());
        let mut i = 0;
        while i < framed.len() {
            match self.state {
                ChunkState::SizeLine => {
                    let b = framed[i];
                    i += 1;
                    match b {
                        b'\n' => {
                            self.in_extension = false;
                            self.state = if self.left == 0 {
                                ChunkState::Trailers
                            } else {
                                ChunkState::Data
                            };
                        }
                        _ if self.in_extension => {}
                        _ => match (b as char).to_digit(16) {
                            Some(digit) => self.left = self.left * 16 + u64::from(digit),
                            None => self.in_extension = b != b'\r',
                        },
                    }
                }
                ChunkState::Data => {
                    let take = self.left.min((framed.len() - i) as u64) as usize;
                    data.extend_from_slice(&framed[i..i + take]);
                    i += take;
                    self.left -= take as u64;
                    if self.left == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    if framed[i] == b'\n' {
                        self.state = ChunkState::SizeLine;
                    }
                    i += 1;
                }
                ChunkState::Trailers => return data,
            }
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_data_is_decoded_across_any_split() {
        let framed = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ntrailer: x\r\n\r\n";
        for split in 0..framed.len() {
            let mut d = ChunkDecoder::default();
            let mut data = d.decode(&framed[..split]);
            data.extend(d.decode(&framed[split..]));
            assert_eq!(data, b"hello world", "split at {split}");
        }
    }
}
