//! The HTTP/1.1 exchange with an upstream: a request goes on a pooled or new connection (its
//! body passed through framed as it came, while an early answer is listened for), and the
//! response comes back to the client, under the route and stream idle timeouts; the connection
//! goes back to its pool when the exchange left it clean.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Sleep;

use crate::DataPlane;
use crate::circuit_breakers::{self, RetryGuard};
use crate::cluster::{ClusterRuntime, Endpoint};
use crate::downstream::{Downstream, Next, Outcome};
use crate::h1::{self, BodyFrame, Framing, ResponseHead};
use crate::http_protocol::{HttpOptions, read_bounded};
use crate::local_reply::{LocalReply, ResponseFlag};
use crate::outlier_detection::Report;
use crate::proxy_protocol::ProxyAddresses;
use crate::recycle::{self, read_some};
use crate::stats;
use crate::upstream::{self, Connection, End};

/// A response rest this small is read to its end when the client leaves early, so that its
/// connection goes back to the pool instead of being closed (a new connection costs the backend
/// a handshake, and the next request a round trip).
const DRAIN_LIMIT: u64 = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Room for what the proxy adds to a head (x-forwarded-*, connection).
pub(crate) const HEAD_EDITS: usize = 128;

/// Idle time after which a reused connection may be closing under us (see `exchange`).
pub(crate) const REPLAY_AFTER_IDLE: Duration = Duration::from_millis(100);

impl Downstream {
    /// Sends the request on a pooled or new connection, and the response back. A reused
    /// connection that fails before the response began (the peer closed it as we wrote: the
    /// close race) gets the request again, once, on a new connection, when that is safe: the
    /// request is idempotent, has no body, and the connection had idled long enough to be in
    /// that race.
    ///
    /// As Envoy's: the route timeout counts from the end of the request. A request without a
    /// body ends with its head; a body is uploaded under the stream idle timeout instead (a
    /// stall, not a slow upload, ends it), and the route timeout starts when its last byte is in.
    ///
    /// The connection comes from the circuit breaker (`circuit_breakers::connection_for`: a
    /// pooled one, a new one, or one waited for). With the cluster's `maxStreamDuration`, the
    /// exchange on it is ended when it runs longer (Envoy's timer also starts once the
    /// connection is ready): before the response head, 504 `UMSDR`; after, the client's
    /// connection is reset.
    pub(crate) async fn exchange(
        &mut self,
        dp: &DataPlane,
        x: &Exchange<'_>,
        mut route_timer: Pin<&mut Sleep>,
        idle_timer: Pin<&mut Sleep>,
    ) -> Result<Outcome, LocalReply> {
        let now = tokio::time::Instant::now();
        let (head_wait, _) = response_head_wait(dp, x.route_timeout);
        if x.framing == Framing::Empty {
            route_timer.as_mut().reset(now + head_wait);
        }
        // A client that leaves while its request waits for a connection gives up its pending
        // place at once, as Envoy cancels a pending request when its client resets.
        let mut conn = tokio::select! {
            biased;
            c = circuit_breakers::connection_for(x.cluster, x.endpoint, x.proxied, head_wait, true) => c?,
            () = client_closed(self.stream.tcp()) => {
                return Ok(Outcome {
                    status: 0,
                    flag: Some(ResponseFlag::DownstreamConnectionTermination),
                    upstream: None,
                    next: Next::Close,
                });
            }
        };
        // An upgrade request counts as one until its tunnel ends (Envoy counts it when the
        // upgrade is accepted, whatever the upstream answers).
        let _upgrade = x.upgrade.then(|| crate::upgrade::Active::start(dp));
        // Counted against max_requests from here to the end of the exchange.
        let Some(_request) = x.cluster.breaker().start_request() else {
            stats::inc(&x.cluster.stats().upstream_rq_active_overflow);
            x.cluster.put_idle(x.endpoint, conn);
            return Err(LocalReply::overflow());
        };
        conn.given_request(&x.options, x.cluster);
        let Some(limit) = x.options.max_stream_duration else {
            return self
                .exchange_on(dp, conn, x, now.into_std(), route_timer, idle_timer)
                .await;
        };
        let on = self.exchange_on(dp, conn, x, now.into_std(), route_timer, idle_timer);
        match tokio::time::timeout(limit, on).await {
            Ok(result) => result,
            Err(_) => {
                // The connection, mid-request, was dropped with the exchange: it closes.
                stats::inc(&x.cluster.stats().upstream_rq_max_duration_reached);
                let status = x.response_status.load(std::sync::atomic::Ordering::Relaxed);
                if status == 0 {
                    return Err(LocalReply::max_stream_duration());
                }
                Ok(Outcome {
                    status,
                    flag: Some(ResponseFlag::UpstreamMaxStreamDurationReached),
                    upstream: Some(x.endpoint.address),
                    next: Next::Reset,
                })
            }
        }
    }

    /// `exchange` on its connection.
    async fn exchange_on(
        &mut self,
        dp: &DataPlane,
        mut conn: Connection,
        x: &Exchange<'_>,
        now: std::time::Instant,
        mut route_timer: Pin<&mut Sleep>,
        mut idle_timer: Pin<&mut Sleep>,
    ) -> Result<Outcome, LocalReply> {
        let (head_wait, head_timeout) = response_head_wait(dp, x.route_timeout);
        let mut retried = false;
        // A replay in flight counts in the breaker's retries until the response head.
        let mut replay: Option<RetryGuard> = None;
        let response = loop {
            let may_replay = x.replayable
                && !retried
                && conn.reused
                && now.saturating_duration_since(conn.idle_since) >= REPLAY_AFTER_IDLE;
            let sent = if x.framing == Framing::Empty {
                tokio::select! {
                    biased;
                    r = self.send_request(&mut conn, x) => Ok(r),
                    () = route_timer.as_mut() => Err(head_timeout()),
                }
            } else {
                self.send_with_body(dp, &mut conn, x, route_timer.as_mut(), idle_timer.as_mut())
                    .await
            };
            match sent {
                Err(reply) => {
                    // Cut mid-request: the upstream connection cannot be reused.
                    conn.end = End::Local;
                    if reply.flag == Some(ResponseFlag::UpstreamRequestTimeout) {
                        x.cluster.outlier.report(x.cluster, x.endpoint, Report::Timeout);
                    }
                    return Err(reply);
                }
                Ok(Ok(head)) => {
                    x.cluster
                        .outlier
                        .report(x.cluster, x.endpoint, Report::Status(head.0.status));
                    break head;
                }
                Ok(Err(Failure::Client)) => {
                    return Ok(Outcome {
                        status: 0,
                        flag: Some(ResponseFlag::DownstreamConnectionTermination),
                        upstream: Some(x.endpoint.address),
                        next: Next::Close,
                    });
                }
                Ok(Err(Failure::BadBody)) => {
                    conn.end = End::Local;
                    return Err(LocalReply::bad_request_body());
                }
                Ok(Err(Failure::Protocol)) => {
                    conn.end = End::Local;
                    stats::inc(&x.cluster.stats().upstream_cx_protocol_error);
                    // Envoy resets the stream: a local-origin failure, as a reset.
                    x.cluster
                        .outlier
                        .report(x.cluster, x.endpoint, Report::ConnectFailed);
                    return Err(LocalReply::upstream_protocol_error());
                }
                Ok(Err(Failure::Upstream(end))) => {
                    conn.end = end;
                    drop(conn);
                    x.cluster
                        .outlier
                        .report(x.cluster, x.endpoint, Report::ConnectFailed);
                    if may_replay && end != End::TimedOut {
                        // The replay is a retry to the circuit breaker: within max_retries.
                        let Some(guard) = x.cluster.breaker().start_retry() else {
                            stats::inc(&x.cluster.stats().upstream_rq_retry_overflow);
                            return Err(LocalReply::upstream_terminated());
                        };
                        replay = Some(guard);
                        tracing::debug!(
                            cluster = x.cluster.name(),
                            "reused connection failed before the response; retrying"
                        );
                        retried = true;
                        stats::inc(&x.cluster.stats().upstream_rq_retry);
                        conn = circuit_breakers::connection_for(
                            x.cluster, x.endpoint, x.proxied, head_wait, false,
                        )
                        .await?;
                        conn.given_request(&x.options, x.cluster);
                        continue;
                    }
                    return Err(LocalReply::upstream_terminated());
                }
            }
        };
        drop(replay);
        let (response, whole) = response;
        let draining = dp.is_draining();
        // The route timeout runs on to the end of the response body (Envoy's route timeout
        // spans the whole response): the same timer, moved from the head's wait (which may be
        // the shorter stream idle timeout) to the route's own deadline.
        if head_wait < x.route_timeout {
            let route_due = route_timer.deadline() + (x.route_timeout - head_wait);
            route_timer.as_mut().reset(route_due);
        }
        Ok(self
            .forward_response(dp, conn, response, whole, x, draining, route_timer, idle_timer)
            .await)
    }

    /// A request with a body: the upload, bounded by the stream idle timeout (on the idle
    /// timer, which a connection does not use during a request), then the wait for the
    /// response head, bounded by the route timeout from the end of the upload.
    async fn send_with_body(
        &mut self,
        dp: &DataPlane,
        conn: &mut Connection,
        x: &Exchange<'_>,
        mut route_timer: Pin<&mut Sleep>,
        mut idle_timer: Pin<&mut Sleep>,
    ) -> Result<Result<(ResponseHead, bool), Failure>, LocalReply> {
        let stream_idle = dp.options.stream_idle_timeout;
        // The time of the last byte from the client: the timer is moved on to it only when it
        // comes due, not on every read.
        let progress = Progress::new();
        idle_timer.as_mut().reset(progress.last() + stream_idle);
        let sent = {
            let upload = self.send_body(conn, x, Some(&progress));
            tokio::pin!(upload);
            loop {
                tokio::select! {
                    biased;
                    r = &mut upload => break r,
                    () = idle_timer.as_mut() => {
                        let due = progress.last() + stream_idle;
                        if due > tokio::time::Instant::now() {
                            idle_timer.as_mut().reset(due);
                            continue;
                        }
                        return Err(LocalReply::stream_timeout_in_request());
                    }
                }
            }
        };
        let sent = match sent {
            Ok(sent) => sent,
            Err(failure) => return Ok(Err(failure)),
        };
        let (head_wait, head_timeout) = response_head_wait(dp, x.route_timeout);
        route_timer
            .as_mut()
            .reset(tokio::time::Instant::now() + head_wait);
        tokio::select! {
            biased;
            r = self.read_response_head(conn, x, sent) => Ok(r),
            () = route_timer.as_mut() => Err(head_timeout()),
        }
    }

    /// Writes the request (head and body) and reads the response head (see `send_body` and
    /// `read_response_head`).
    async fn send_request(
        &mut self,
        conn: &mut Connection,
        x: &Exchange<'_>,
    ) -> Result<(ResponseHead, bool), Failure> {
        let sent = self.send_body(conn, x, None).await?;
        self.read_response_head(conn, x, sent).await
    }

    /// Writes the request head and body. The body goes while the upstream is watched: one that
    /// answers before it has the whole body (a 413, say) is heard, and the rest of the body is
    /// not sent (`whole` is then false: neither connection can be reused). Each read of the
    /// client's body, and each write of it upstream, sets `progress` to its time.
    async fn send_body(
        &mut self,
        conn: &mut Connection,
        x: &Exchange<'_>,
        progress: Option<&Progress>,
    ) -> Result<BodySent, Failure> {
        let upstream_failed = |e: std::io::Error| {
            tracing::debug!(
                cluster = x.cluster.name(),
                "writing or reading the upstream failed: {e}"
            );
            Failure::Upstream(upstream::end_of(&e))
        };
        // A body-less request (most of them) goes as its head alone, without a copy; a body is
        // sent after the head in the same buffer.
        let mut out = if x.framing == Framing::Empty {
            Vec::new()
        } else {
            x.request.clone()
        };
        let mut whole = true;
        // A write that fails may be the upstream closing after it answered early: its answer
        // is read before the failure counts.
        let mut write_failed: Option<Failure> = None;
        // A request's framing is never close-delimited (see `h1::parse_request`).
        let mut body = BodyFrame::new(x.framing);
        loop {
            body.move_body(&mut self.buf, &mut out, x.options.enable_trailers)
                .map_err(|_| Failure::BadBody)?;
            let finished = body.is_done();
            let Connection { transport, buf, .. } = &mut *conn;
            let (mut upstream_read, mut upstream_write) = transport.split();
            if finished {
                let all: &[u8] = if x.framing == Framing::Empty {
                    &x.request
                } else {
                    &out
                };
                if let Err(e) = upstream_write.write_all(all).await {
                    write_failed = Some(upstream_failed(e));
                    whole = false;
                }
                break;
            }
            // Body bytes are still to come from the client: send what we have, then read more,
            // either way listening for an early answer.
            let early = tokio::select! {
                biased;
                // The write is cancelled, maybe part-way: this body cannot go on.
                r = read_some(&mut upstream_read, buf) => Some((r, false)),
                r = upstream_write.write_all(&out) => {
                    if let Err(e) = r {
                        write_failed = Some(upstream_failed(e));
                        whole = false;
                        break;
                    }
                    out.clear();
                    // Bytes moved on count as activity too (a backend slow to read is no stall
                    // of the client's).
                    if let Some(progress) = progress {
                        progress.now();
                    }
                    tokio::select! {
                        biased;
                        r = read_some(&mut upstream_read, buf) => Some((r, true)),
                        r = read_bounded(&mut self.stream, &mut self.buf, x.options.read_limit) => match r {
                            Ok(n) if n > 0 => {
                                if let Some(progress) = progress {
                                    progress.now();
                                }
                                None
                            }
                            _ => return Err(Failure::Client),
                        },
                    }
                }
            };
            match early {
                None => {}
                Some((Ok(n), body_intact)) if n > 0 => {
                    // What the upstream says early is judged on a whole head: a 100 Continue
                    // that arrives in pieces is not a final answer.
                    while let Ok(None) = h1::parse_response(&conn.buf, b"GET") {
                        match read_some(&mut conn.transport, &mut conn.buf).await {
                            Ok(0) => return Err(Failure::Upstream(End::Remote)),
                            Ok(_) => {}
                            Err(e) => return Err(upstream_failed(e)),
                        }
                    }
                    // An interim answer (100 Continue, unasked) is passed on and the body goes
                    // on; anything else is the final answer, early.
                    if self.pass_interim(conn, x).await? && conn.buf.is_empty() && body_intact {
                        continue;
                    }
                    whole = false;
                    break;
                }
                Some((Ok(_), _)) => return Err(Failure::Upstream(End::Remote)),
                Some((Err(e), _)) => return Err(upstream_failed(e)),
            }
        }
        Ok(BodySent { whole, write_failed })
    }

    /// Reads the response head, forwarding interim (1xx) responses to the client; the second
    /// value says whether the whole request went upstream.
    async fn read_response_head(
        &mut self,
        conn: &mut Connection,
        x: &Exchange<'_>,
        sent: BodySent,
    ) -> Result<(ResponseHead, bool), Failure> {
        let BodySent { whole, write_failed } = sent;
        let upstream_failed = |e: std::io::Error| {
            tracing::debug!(
                cluster = x.cluster.name(),
                "writing or reading the upstream failed: {e}"
            );
            Failure::Upstream(upstream::end_of(&e))
        };
        let method: &[u8] = if x.is_head { b"HEAD" } else { b"GET" };
        loop {
            // An interim head is passed on, the final one returned, from one parse each.
            match h1::parse_response(&conn.buf, method) {
                // The upstream switches protocols: the final answer to an upgrade request.
                Ok(Some(head)) if head.status == 101 && x.upgrade => return Ok((head, whole)),
                // A 101 nobody asked for is a broken upstream.
                Ok(Some(head)) if head.status == 101 => return Err(Failure::Protocol),
                Ok(Some(head)) if (100..200).contains(&head.status) => {
                    self.forward_interim(conn, head.len, x).await?;
                    continue;
                }
                Ok(Some(head)) if x.options.too_many_headers(head.headers.len()) => {
                    tracing::debug!(
                        cluster = x.cluster.name(),
                        headers = head.headers.len(),
                        "the response has more headers than maxHeadersCount"
                    );
                    return Err(Failure::Protocol);
                }
                Ok(Some(head)) => return Ok((head, whole)),
                Ok(None) => {}
                Err(_) => return Err(Failure::Protocol),
            }
            match read_some(&mut conn.transport, &mut conn.buf).await {
                Ok(0) => return Err(write_failed.unwrap_or(Failure::Upstream(End::Remote))),
                Ok(_) => {}
                Err(e) => return Err(write_failed.unwrap_or_else(|| upstream_failed(e))),
            }
        }
    }

    /// Passes on the interim (1xx, not 101) responses at the start of the upstream's buffer: to
    /// an HTTP/1.1 client as they are; an HTTP/1.0 client cannot take them. True if any.
    async fn pass_interim(&mut self, conn: &mut Connection, x: &Exchange<'_>) -> Result<bool, Failure> {
        let mut any = false;
        while let Ok(Some(head)) = h1::parse_response(&conn.buf, b"GET") {
            if !(100..200).contains(&head.status) || head.status == 101 {
                break;
            }
            self.forward_interim(conn, head.len, x).await?;
            any = true;
        }
        Ok(any)
    }

    /// Passes on the interim response of `len` bytes at the start of the upstream's buffer.
    async fn forward_interim(
        &mut self,
        conn: &mut Connection,
        len: usize,
        x: &Exchange<'_>,
    ) -> Result<(), Failure> {
        if x.client_version == h1::Version::Http11 {
            self.stream
                .send(&conn.buf[..len])
                .await
                .map_err(|_| Failure::Client)?;
        }
        conn.buf.drain(..len);
        Ok(())
    }

    /// Sends the response head and body to the client, then pools the connection when the
    /// exchange left it clean. As Envoy's stream idle timeout: a response that moves no byte
    /// either way (the upstream stalls, or the client reads nothing) for `stream_idle_timeout`
    /// is reset: both connections close and the log says `SI`. A response still coming when
    /// the route timer fires is cut as Envoy cuts it (`route_timeout_reached`).
    #[allow(clippy::too_many_arguments)]
    async fn forward_response(
        &mut self,
        dp: &DataPlane,
        mut conn: Connection,
        head: ResponseHead,
        request_whole: bool,
        x: &Exchange<'_>,
        draining: bool,
        route_timer: Pin<&mut Sleep>,
        idle_timer: Pin<&mut Sleep>,
    ) -> Outcome {
        if head.status == 101 {
            // Boxed: the tunnel's state stays out of every request's future (see `Recycled`).
            return Box::pin(crate::upgrade::tunnel(self, dp, conn, head, x, idle_timer)).await;
        }
        let mut stream_idle = StreamIdle::new(idle_timer, dp.options.stream_idle_timeout, route_timer);
        // A request body not read to its end cannot be told from the client's next request.
        let close = !x.keep_alive || draining || head.framing == Framing::UntilClose || !request_whole;
        // Room for the body bytes already read too: they follow the head in the same write
        // (sized to the head alone, the buffer was grown, and copied, for them).
        let mut out = Vec::with_capacity(conn.buf.len() + HEAD_EDITS);
        if x.options.max_stream_duration.is_some() {
            // From here the client may have part of the response: a max stream duration
            // reached now resets it.
            x.response_status
                .store(head.status, std::sync::atomic::Ordering::Relaxed);
        }
        h1::write_response_head(&mut out, &conn.buf, &head, close, x.client_version);
        if !x.set_cookies.is_empty() {
            // A cookie a hash policy generated (load_balancing): before the head's last CRLF.
            out.truncate(out.len() - 2);
            for cookie in &x.set_cookies {
                out.extend_from_slice(b"set-cookie: ");
                out.extend_from_slice(cookie.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        x.route_filters.edit_http1_response(&mut out);
        conn.buf.drain(..head.len);
        let mut outcome = Outcome {
            status: head.status,
            flag: None,
            upstream: Some(x.endpoint.address),
            next: if close { Next::Close } else { Next::KeepAlive },
        };
        let mut body = BodyFrame::new(head.framing);
        let mut client_gone = false;
        loop {
            // The body bytes we have, up to the end of this response.
            let moved = if client_gone {
                body.take(&conn.buf).map(|take| {
                    conn.buf.drain(..take);
                })
            } else {
                body.move_body(&mut conn.buf, &mut out, x.options.enable_trailers)
            };
            if moved.is_err() {
                conn.end = End::Local;
                outcome.flag = Some(ResponseFlag::UpstreamProtocolError);
                outcome.next = Next::Reset;
                return outcome;
            }
            if !client_gone {
                if !out.is_empty() {
                    match stream_idle.bound(self.stream.send(&out)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => {
                            client_gone = true;
                            outcome.next = Next::Close;
                        }
                        Err(cut) => return cut.end(dp, x, &mut conn, outcome),
                    }
                }
                out.clear();
            }
            if body.is_done() {
                // Complete: whatever happens to the connection now, no request was cut.
                conn.busy = false;
                break;
            }
            if client_gone
                && !(x.framing == Framing::Empty
                    && body.length_left().is_some_and(|left| left <= DRAIN_LIMIT))
            {
                // The client left and the rest is not worth reading: the connection closes.
                conn.end = End::Local;
                return outcome;
            }
            let read = if client_gone {
                match tokio::time::timeout(DRAIN_TIME, read_some(&mut conn.transport, &mut conn.buf)).await {
                    Ok(r) => r,
                    Err(_) => {
                        conn.end = End::Local;
                        return outcome;
                    }
                }
            } else {
                match stream_idle
                    .bound(read_bounded(
                        &mut conn.transport,
                        &mut conn.buf,
                        x.options.read_limit,
                    ))
                    .await
                {
                    Ok(r) => r,
                    Err(cut) => return cut.end(dp, x, &mut conn, outcome),
                }
            };
            match read {
                Ok(0) if head.framing == Framing::UntilClose => {
                    conn.end = End::Remote;
                    return outcome;
                }
                Ok(0) => {
                    // The upstream closed mid-body: the client's response is cut short.
                    conn.end = End::Remote;
                    outcome.flag = Some(ResponseFlag::UpstreamConnectionTermination);
                    outcome.next = Next::Reset;
                    return outcome;
                }
                Ok(_) => {}
                Err(e) => {
                    conn.end = upstream::end_of(&e);
                    outcome.flag = Some(ResponseFlag::UpstreamConnectionTermination);
                    outcome.next = Next::Reset;
                    return outcome;
                }
            }
        }
        // An upgrade request's connection is not reused, whatever it was answered (as Envoy).
        if head.keep_alive
            && request_whole
            && conn.buf.is_empty()
            && conn.end != End::MaxRequests
            && !x.upgrade
        {
            // A pooled connection keeps no buffer while it idles.
            recycle::give_bytes(std::mem::take(&mut conn.buf));
            x.cluster.put_idle(x.endpoint, conn);
        }
        outcome
    }
}

/// One request on its way upstream.
pub(crate) struct Exchange<'a> {
    pub cluster: &'a Arc<ClusterRuntime>,
    pub endpoint: &'a Arc<Endpoint>,
    /// The request head as it goes upstream.
    pub request: Vec<u8>,
    /// How the request's body (in the client's stream) ends.
    pub framing: Framing,
    pub is_head: bool,
    /// It may go again on a new connection (idempotent, no body, retries on).
    pub replayable: bool,
    /// The client keeps its connection after this exchange.
    pub keep_alive: bool,
    pub client_version: h1::Version,
    /// `Set-Cookie` values the response carries (a cookie a hash policy generated).
    pub set_cookies: Vec<String>,
    /// The client's addresses, when the cluster sends them in a PROXY protocol header.
    pub proxied: Option<ProxyAddresses>,
    /// The cluster's HTTP protocol options.
    pub options: HttpOptions,
    /// The response's status once its head goes to the client (0 before), when a max stream
    /// duration may cut it.
    pub response_status: std::sync::atomic::AtomicU16,
    /// A WebSocket upgrade: a 101 answer makes the connections a tunnel (`upgrade.rs`).
    pub upgrade: bool,
    /// The HTTPRoute filters of the route and backend (`route_filters.rs`).
    pub route_filters: crate::route_filters::Picked,
    /// The route's timeout, to the end of the response (`route_timeout.rs`).
    pub route_timeout: Duration,
}

/// Why one attempt did not give a response head.
enum Failure {
    /// The upstream's answer is not HTTP/1.1 we can forward (Envoy: UPE, 502).
    Protocol,
    /// The upstream connection failed (and how it ended).
    Upstream(End),
    /// The client went away while its request was being forwarded.
    Client,
    /// The client's chunked body does not follow the grammar (400).
    BadBody,
}

/// When a stream last moved a byte: of an upload, or of a response (a `Cell` cannot cross the
/// awaits of a `Send` future; a relaxed atomic costs the same).
pub(crate) struct Progress {
    start: tokio::time::Instant,
    /// Milliseconds from `start`.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress {
            start: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn now(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn last(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The stream idle timeout over a response, on the connection's idle timer (which does not run
/// during a request). Set on the response's first wait, not per response; then moved on to the
/// last byte's time only when it comes due, not on every read or write. The route timer, already
/// set to the route's deadline, bounds the same waits.
struct StreamIdle<'t> {
    timer: Pin<&'t mut Sleep>,
    limit: Duration,
    /// The time of the last byte read from the upstream or written to the client.
    progress: Progress,
    armed: bool,
    route: Pin<&'t mut Sleep>,
}

/// Why a response was cut before its end.
enum Cut {
    /// Nothing moved for the stream idle timeout.
    Idle,
    /// The route timeout ran out before the response's end.
    Route,
}

impl<'t> StreamIdle<'t> {
    fn new(timer: Pin<&'t mut Sleep>, limit: Duration, route: Pin<&'t mut Sleep>) -> StreamIdle<'t> {
        StreamIdle {
            timer,
            limit,
            progress: Progress::new(),
            armed: false,
            route,
        }
    }

    /// Runs `io` to its end; else why the response is cut (`io` is then dropped).
    async fn bound<T>(&mut self, io: impl Future<Output = T>) -> Result<T, Cut> {
        let mut io = std::pin::pin!(io);
        let ended = std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = io.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            if self.route.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Cut::Route));
            }
            if !self.armed {
                self.armed = true;
                self.timer.as_mut().reset(self.progress.last() + self.limit);
            }
            while self.timer.as_mut().poll(cx).is_ready() {
                let due = self.progress.last() + self.limit;
                if due <= tokio::time::Instant::now() {
                    return Poll::Ready(Err(Cut::Idle));
                }
                self.timer.as_mut().reset(due);
            }
            Poll::Pending
        })
        .await;
        if ended.is_ok() {
            self.progress.now();
        }
        ended
    }
}

impl Cut {
    /// Ends a response cut part-way; the upstream's connection is not reused. One that idled:
    /// the client's connection is reset (`SI`). One past the route timeout: as Envoy's
    /// (measured on 1.40), `upstream_rq_timeout` counts, the outlier detector hears a timeout,
    /// the log says `UT` with the status already sent, and the client's connection closes
    /// short of the body's end.
    fn end(self, dp: &DataPlane, x: &Exchange<'_>, conn: &mut Connection, mut outcome: Outcome) -> Outcome {
        conn.end = End::Local;
        match self {
            Cut::Idle => {
                stats::inc(&dp.downstream.downstream_rq_idle_timeout);
                outcome.flag = Some(ResponseFlag::StreamIdleTimeout);
                outcome.next = Next::Reset;
            }
            Cut::Route => {
                stats::inc(&x.cluster.stats().upstream_rq_timeout);
                x.cluster.outlier.report(x.cluster, x.endpoint, Report::Timeout);
                outcome.flag = Some(ResponseFlag::UpstreamRequestTimeout);
                outcome.next = Next::Close;
            }
        }
        outcome
    }
}

/// How the upload of a request ended, for reading the response.
struct BodySent {
    /// The whole request went upstream.
    whole: bool,
    /// Writing failed; the failure counts if no response is read either.
    write_failed: Option<Failure>,
}

/// How long a request waits for its response head, and the answer when that runs out: the
/// route timeout (its route's, else the default), or the stream idle timeout when it is shorter
/// (nothing moves on the stream while the upstream thinks; Envoy then answers 504 `SI`). One
/// timer serves both.
pub(crate) fn response_head_wait(dp: &DataPlane, route_timeout: Duration) -> (Duration, fn() -> LocalReply) {
    let options = &dp.options;
    if options.stream_idle_timeout < route_timeout {
        (
            options.stream_idle_timeout,
            LocalReply::stream_timeout_after_request,
        )
    } else {
        (route_timeout, LocalReply::upstream_timeout)
    }
}

/// Resolves when the client closes its connection (end of stream or an error) with nothing
/// waiting to be read; once it has sent bytes (a body, a pipelined request), which are not
/// read here, it never resolves. Only polled when a request must wait for a connection. On TLS
/// the socket under it is watched: a FIN is seen, a close_notify alone is not.
pub(crate) async fn client_closed(stream: &tokio::net::TcpStream) {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}
