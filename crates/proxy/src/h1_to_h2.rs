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
//!   termination" when the connection dies, 503 UR "remote reset" when the stream is reset); a
//!   failure mid-body resets the client's connection, as on the HTTP/1.1 path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use tokio::time::Instant;

use crate::DataPlane;
use crate::cluster::{ClusterRuntime, Endpoint};
use crate::downstream::{Downstream, Next, Outcome};
use crate::h1::{self, BodyFrame, Framing, RequestHead, put_header};
use crate::h2_body;
use crate::http_protocol::read_bounded;
use crate::local_reply::{LocalReply, ResponseFlag};
use crate::outlier_detection::Report;
use crate::stats;
use crate::upstream_h2::{self, UpstreamStream};

/// Headers an HTTP/2 head cannot carry: the connection-specific ones and `host` (it becomes
/// `:authority`).
fn not_in_http2(name: &str) -> bool {
    name == "host" || snapshot::CONNECTION_SPECIFIC_HEADERS.contains(&name)
}

/// What the request needs from the client connection's side.
pub(crate) struct H1Request<'a> {
    pub cluster: &'a Arc<ClusterRuntime>,
    pub endpoint: &'a Arc<Endpoint>,
    pub buf: Vec<u8>,
    pub head: &'a RequestHead,
    pub is_head: bool,
    pub set_cookies: Vec<String>,
    pub route_filters: crate::route_filters::Picked,
    /// The route's timeout, to the end of the response (`route_timeout.rs`).
    pub route_timeout: Duration,
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
            route_filters,
            route_timeout,
        } = r;
        let keep_alive = head.keep_alive && !dp.is_draining();
        if head.upgrade == h1::Upgrade::WebSocket {
            // Not turned into a plain request (the client would take the answer for a refusal
            // and go on in HTTP/1.1): refused, and the connection closes, as for any upgrade
            // not accepted. Envoy would try RFC 8441's extended CONNECT, not done here yet.
            self.buf = buf;
            self.buf.drain(..head.len);
            return self
                .local_reply_after_head(
                    head.framing,
                    false,
                    is_head,
                    LocalReply::websocket_to_http2(),
                    None,
                )
                .await;
        }
        let scheme = if self.stream.is_tls() { "https" } else { "http" };
        let request = match h2_request(&buf, head, self.client_address().as_bytes(), scheme, cluster) {
            Ok(mut request) => {
                route_filters.edit_h2_request(&mut request);
                request
            }
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
            &route_filters,
            route_timeout,
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

    /// The stream: opened, then the request body and the response moving at once (a
    /// full-duplex backend answers before the body ends), under one stream idle timer for both
    /// directions and every write to the client (Envoy's stream_idle_timeout), with the route
    /// timeout from the end of the request to the end of the response.
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
        route_filters: &crate::route_filters::Picked,
        route_timeout: Duration,
    ) -> Result<Outcome, LocalReply> {
        let idle = dp.options.stream_idle_timeout;
        let no_body = head.framing == Framing::Empty;
        let proxied = cluster
            .policy_ref()
            .proxy_protocol
            .is_some()
            .then(|| self.proxied())
            .flatten();
        let UpstreamStream {
            response,
            body: upload_stream,
            lease,
        } = tokio::select! {
            biased;
            opened = upstream_h2::open_stream(cluster, endpoint, request, no_body, route_timeout, proxied) => opened?,
            // A client that leaves while its request waits for a stream gives up its pending
            // place at once, as on the HTTP/1.1 path.
            () = crate::http1_exchange::client_closed(self.stream.tcp()) => {
                return Ok(Outcome {
                    status: 0,
                    flag: Some(ResponseFlag::DownstreamConnectionTermination),
                    upstream: None,
                    next: Next::Close,
                });
            }
        };
        let mut response = std::pin::pin!(response);
        let ended = |status: u16, (flag, next): (ResponseFlag, Next)| -> Result<Outcome, LocalReply> {
            if flag == ResponseFlag::StreamIdleTimeout {
                stats::inc(&dp.downstream.downstream_rq_idle_timeout);
            }
            Ok(Outcome {
                status,
                flag: Some(flag),
                upstream: Some(endpoint.address),
                next,
            })
        };
        if !no_body
            && continue_body
            && self.buf.is_empty()
            && head.version == h1::Version::Http11
            && let Err(cut) = self.send_within(idle, b"HTTP/1.1 100 Continue\r\n\r\n").await
        {
            return ended(0, cut);
        }
        let options = cluster.http_options();
        // Each read of the upload within both the cluster's and the listener's buffer limits
        // (perConnectionBufferLimitBytes), as on the HTTP/1.1 path.
        let read_limit = match (options.read_limit, self.read_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut upload = Upload::new(upload_stream, head.framing, no_body);
        let idle_timer = tokio::time::sleep(idle);
        let route_timer = tokio::time::sleep(route_timeout);
        tokio::pin!(idle_timer, route_timer);
        let mut body: Option<h2::RecvStream> = None;
        // Set with the response head.
        let mut status = 0;
        let mut chunked = false;
        let mut close = false;
        let mut out = Vec::with_capacity(256);
        loop {
            upload.absorb(&mut self.buf)?;
            let got_head = status != 0;
            // The response is over: so is the exchange (a body not wholly read closes the
            // client connection: `close` was set with the head).
            if got_head && body.is_none() {
                break;
            }
            let event = tokio::select! {
                biased;
                r = response.as_mut(), if !got_head => Event::Head(r),
                r = next_data(&mut body) => Event::Data(r),
                r = std::future::poll_fn(|cx| upload.poll_send(cx)), if upload.has_work() => Event::Sent(r),
                r = read_bounded(&mut self.stream, &mut self.buf, read_limit), if upload.wants_bytes() => Event::Read(r),
                () = &mut route_timer, if upload.finished() => Event::RouteTimeout,
                () = &mut idle_timer => Event::Idle,
            };
            match event {
                Event::Idle if !got_head => {
                    stats::inc(&dp.downstream.downstream_rq_idle_timeout);
                    return Err(if upload.finished() {
                        LocalReply::stream_timeout_after_request()
                    } else {
                        LocalReply::stream_timeout_in_request()
                    });
                }
                Event::Idle => return ended(status, (ResponseFlag::StreamIdleTimeout, Next::Reset)),
                Event::RouteTimeout if !got_head => {
                    cluster.outlier.report(cluster, endpoint, Report::Timeout);
                    return Err(LocalReply::upstream_timeout());
                }
                // Envoy's route timeout spans the whole response: one still coming is cut (the
                // client's connection closes short of its end), counted as a timeout, `UT`.
                Event::RouteTimeout => {
                    stats::inc(&cluster.stats().upstream_rq_timeout);
                    cluster.outlier.report(cluster, endpoint, Report::Timeout);
                    return ended(status, (ResponseFlag::UpstreamRequestTimeout, Next::Close));
                }
                Event::Read(Ok(n)) if n > 0 => {}
                // The client left mid-body (the stream is reset as it drops).
                Event::Read(_) => {
                    return ended(
                        status,
                        (ResponseFlag::DownstreamConnectionTermination, Next::Close),
                    );
                }
                Event::Sent(Ok(())) => {
                    if upload.finished() {
                        // The request is whole: the route timeout runs from here (to the
                        // response's end).
                        route_timer.as_mut().reset(Instant::now() + route_timeout);
                    }
                }
                Event::Sent(Err(e)) if !got_head => return Err(lease.failed(cluster, &e)),
                Event::Sent(Err(_)) => {
                    // The upstream takes no more of the body (reset after its answer): the
                    // rest is not read, so the client connection closes after the response.
                    upload.abandon();
                    close = true;
                }
                Event::Head(Err(e)) => {
                    cluster.outlier.report(cluster, endpoint, Report::ConnectFailed);
                    return Err(lease.failed(cluster, &e));
                }
                Event::Head(Ok(response)) if options.too_many_headers(response.headers().len()) => {
                    tracing::debug!(
                        cluster = cluster.name(),
                        headers = response.headers().len(),
                        "the response has more headers than maxHeadersCount"
                    );
                    return Err(LocalReply::upstream_protocol_error());
                }
                Event::Head(Ok(response)) => {
                    status = response.status().as_u16();
                    // From here the client may get part of the response.
                    response_status.store(status, Ordering::Relaxed);
                    cluster.outlier.report(cluster, endpoint, Report::Status(status));
                    let (mut parts, recv) = response.into_parts();
                    route_filters.edit_h2_response(&mut parts.headers);
                    let framing = ResponseFraming::of(
                        &parts.headers,
                        status,
                        is_head,
                        head.version,
                        recv.is_end_stream(),
                    );
                    // A body not whole yet still goes up as the response comes down; the
                    // client connection closes after both.
                    close = close
                        || !head.keep_alive
                        || dp.is_draining()
                        || !upload.finished()
                        || framing.until_close;
                    chunked = framing.chunked;
                    out.clear();
                    write_response_head(
                        &mut out,
                        status,
                        &parts,
                        &set_cookies,
                        framing,
                        close,
                        head.version,
                    );
                    if !framing.bodiless && !recv.is_end_stream() {
                        body = Some(recv);
                    }
                    if let Err(cut) = self.send_within(idle, &out).await {
                        return ended(status, cut);
                    }
                }
                Event::Data(Some(Ok(data))) => {
                    if !data.is_empty() {
                        out.clear();
                        if chunked {
                            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                            out.extend_from_slice(&data);
                            out.extend_from_slice(b"\r\n");
                        } else {
                            out.extend_from_slice(&data);
                        }
                        if let Err(cut) = self.send_within(idle, &out).await {
                            return ended(status, cut);
                        }
                    }
                }
                Event::Data(None) => {
                    body = None;
                    if chunked && let Err(cut) = self.send_within(idle, b"0\r\n\r\n").await {
                        return ended(status, cut);
                    }
                }
                // Cut part-way (the stream was reset: UR, or the connection died: UC).
                Event::Data(Some(Err(e))) => {
                    let flag = if upstream_h2::reset_by_upstream(&e) {
                        ResponseFlag::UpstreamRemoteReset
                    } else {
                        ResponseFlag::UpstreamConnectionTermination
                    };
                    return ended(status, (flag, Next::Reset));
                }
            }
            idle_timer.as_mut().reset(Instant::now() + idle);
        }
        drop(lease);
        Ok(Outcome {
            status,
            flag: None,
            upstream: Some(endpoint.address),
            next: if close || !upload.finished() {
                Next::Close
            } else {
                Next::KeepAlive
            },
        })
    }

    /// Writes `bytes` to the client within the stream idle timeout; else how the exchange
    /// ends: the client left, or it stopped reading (Envoy's SI, the connection reset).
    async fn send_within(&mut self, idle: Duration, bytes: &[u8]) -> Result<(), (ResponseFlag, Next)> {
        match tokio::time::timeout(idle, self.stream.send(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err((ResponseFlag::DownstreamConnectionTermination, Next::Close)),
            Err(_) => Err((ResponseFlag::StreamIdleTimeout, Next::Reset)),
        }
    }
}

/// What woke the exchange.
enum Event {
    Head(Result<http::Response<h2::RecvStream>, h2::Error>),
    Data(Option<Result<Bytes, h2::Error>>),
    /// The body held so far went up (or the upload failed).
    Sent(Result<(), h2::Error>),
    /// Bytes from the client.
    Read(std::io::Result<usize>),
    RouteTimeout,
    Idle,
}

/// The response body's next data; never, when there is none to read.
async fn next_data(body: &mut Option<h2::RecvStream>) -> Option<Result<Bytes, h2::Error>> {
    match body {
        Some(body) => h2_body::recv_data(body).await,
        None => std::future::pending().await,
    }
}

/// How the response goes to the HTTP/1.1 client.
#[derive(Clone, Copy)]
struct ResponseFraming {
    /// No body at all (HEAD, 1xx, 204, 304).
    bodiless: bool,
    chunked: bool,
    /// Close-delimited (an HTTP/1.0 client, no length).
    until_close: bool,
    /// The head ended the stream: an empty body, sent as `content-length: 0` (as Envoy).
    empty: bool,
}

impl ResponseFraming {
    fn of(
        headers: &http::HeaderMap,
        status: u16,
        is_head: bool,
        version: h1::Version,
        end_stream: bool,
    ) -> Self {
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bodiless = is_head || status == 204 || status == 304 || (100..200).contains(&status);
        let empty = !bodiless && length.is_none() && end_stream;
        let open = !bodiless && length.is_none() && !end_stream;
        ResponseFraming {
            bodiless,
            chunked: open && version == h1::Version::Http11,
            until_close: open && version == h1::Version::Http10,
            empty,
        }
    }
}

/// The HTTP/1.1 response head for an HTTP/2 response.
fn write_response_head(
    out: &mut Vec<u8>,
    status: u16,
    parts: &http::response::Parts,
    set_cookies: &[String],
    framing: ResponseFraming,
    close: bool,
    version: h1::Version,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if not_in_http2(name.as_str()) {
            continue;
        }
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    for cookie in set_cookies {
        put_header(out, b"set-cookie", cookie.as_bytes());
    }
    if framing.chunked {
        put_header(out, b"transfer-encoding", b"chunked");
    } else if framing.empty {
        put_header(out, b"content-length", b"0");
    }
    if close {
        put_header(out, b"connection", b"close");
    } else if version == h1::Version::Http10 {
        // An HTTP/1.0 client keeps the connection only when told so.
        put_header(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// The client's body on its way up: its bytes taken from the client's buffer, decoded from
/// their HTTP/1.1 framing, and sent as the stream's flow-control window allows. Each send is
/// one step of the exchange's loop, so a window that never opens is stream idle time.
struct Upload {
    stream: h2::SendStream<Bytes>,
    frame: BodyFrame,
    chunked: bool,
    decoder: ChunkDecoder,
    /// Decoded, not yet sent.
    held: BytesMut,
    /// The body's end was taken from the client.
    read_all: bool,
    /// END_STREAM sent (or the upload abandoned).
    done: bool,
}

/// Body bytes held before the client is read again (the upstream's window is closed).
const UPLOAD_HELD_MAX: usize = 64 * 1024;

impl Upload {
    fn new(stream: h2::SendStream<Bytes>, framing: Framing, no_body: bool) -> Upload {
        Upload {
            stream,
            frame: BodyFrame::new(framing),
            chunked: framing == Framing::Chunked,
            decoder: ChunkDecoder::default(),
            held: BytesMut::new(),
            read_all: no_body,
            done: no_body,
        }
    }

    /// Takes the body's bytes at the start of the client's buffer (not the next request's).
    fn absorb(&mut self, buf: &mut Vec<u8>) -> Result<(), LocalReply> {
        if self.read_all || self.done || buf.is_empty() {
            return Ok(());
        }
        let mut framed = Vec::new();
        self.frame
            .move_body(buf, &mut framed, false)
            .map_err(|_| LocalReply::bad_request_body())?;
        if self.chunked {
            self.held.extend_from_slice(&self.decoder.decode(&framed));
        } else {
            self.held.extend_from_slice(&framed);
        }
        self.read_all = self.frame.is_done();
        Ok(())
    }

    /// Should the client be read for more of the body?
    fn wants_bytes(&self) -> bool {
        !self.read_all && !self.done && self.held.len() < UPLOAD_HELD_MAX
    }

    /// Is there something to send (data, or the end)?
    fn has_work(&self) -> bool {
        !self.done && (!self.held.is_empty() || self.read_all)
    }

    /// The whole body went up (END_STREAM sent).
    fn finished(&self) -> bool {
        self.done && self.read_all
    }

    /// No more of the body goes up.
    fn abandon(&mut self) {
        self.done = true;
        self.held.clear();
    }

    /// Sends what the window allows of what it holds (with the end once all is read).
    fn poll_send(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), h2::Error>> {
        use std::task::Poll;
        if self.held.is_empty() {
            self.done = true;
            return Poll::Ready(self.stream.send_data(Bytes::new(), true));
        }
        self.stream.reserve_capacity(self.held.len());
        let granted = match self.stream.poll_capacity(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(granted))) => granted,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            // Reset or closed: what it says is in send_data's error.
            Poll::Ready(None) => {
                self.done = true;
                return Poll::Ready(self.stream.send_data(Bytes::new(), true));
            }
        };
        if granted == 0 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let chunk = self.held.split_to(granted.min(self.held.len())).freeze();
        let end = self.read_all && self.held.is_empty();
        self.done = end;
        Poll::Ready(self.stream.send_data(chunk, end))
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
            if not_in_http2(name.as_str()) {
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| bad())?;
            map.append(name, value);
        }
    }
    request.body(()).map_err(|_| bad())
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
