//! Upgraded connections (WebSocket over HTTP/1.1, on the routes whose backend says
//! `appProtocol: kubernetes.io/ws`): once the upstream answers an upgrade request
//! with 101 Switching Protocols, the client's connection and the upstream's become one tunnel.
//! Bytes go both ways as they come, unparsed (no frames are read), until either side ends.
//!
//! As Envoy's HTTP/1.1 upgrades (checked against Envoy 1.40): when one side closes (a FIN), the
//! bytes it sent before are delivered and then both connections close; there is no half-close.
//! Once upgraded, the route timeout no longer applies (the response has begun); the stream idle
//! timeout does: no byte either way for that long resets the tunnel. The upstream connection
//! is never pooled again. Counted as Envoy counts them: `downstream_cx_upgrades_total` and
//! `downstream_cx_upgrades_active`.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use crate::DataPlane;
use crate::downstream::{Downstream, Next, Outcome};
use crate::h1::{self, ResponseHead};
use crate::http1_exchange::{Exchange, HEAD_EDITS, Progress};
use crate::local_reply::{LocalReply, ResponseFlag};
use crate::stats;
use crate::upstream::{self, Connection, End};

/// Bytes read per system call in each direction of a tunnel.
const CHUNK: usize = 16 * 1024;

/// An upgrade request in progress, counted from the time it is sent upstream until its tunnel
/// (if the upstream accepted) ends.
pub(crate) struct Active<'a>(&'a DataPlane);

impl<'a> Active<'a> {
    pub(crate) fn start(dp: &'a DataPlane) -> Active<'a> {
        stats::inc(&dp.downstream.downstream_cx_upgrades_total);
        stats::inc(&dp.downstream.downstream_cx_upgrades_active);
        Active(dp)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        stats::dec(&self.0.downstream.downstream_cx_upgrades_active);
    }
}

/// Whether the route a WebSocket upgrade request takes allows it: only a route whose backend
/// says `appProtocol: kubernetes.io/ws` (`Route::websocket_upgrade`, Envoy's route-level
/// `upgrade_configs` in the dump), as in kgateway, whose listeners enable no upgrade. A request
/// that matches no route is left to routing (404).
pub(crate) fn route_allows_websocket(
    runtime: &crate::Runtime,
    bound: std::net::SocketAddr,
    view: &crate::router::RequestView<'_>,
) -> bool {
    crate::router::find_listener(&runtime.snapshot.listeners, bound)
        .and_then(|l| crate::router::route(l, view))
        .is_none_or(|route| route.websocket_upgrade)
}

/// The answer to an upgrade the route is not configured for (a WebSocket upgrade on a route
/// without it, any other protocol anywhere): 403, no body, and the connection closes, as Envoy
/// answers; counted in Envoy's counter (named when WebSocket was the only upgrade it knew).
pub(crate) fn refused(dp: &DataPlane) -> LocalReply {
    stats::inc(&dp.downstream.downstream_rq_ws_on_non_ws_route);
    LocalReply::direct(403, "")
}

/// How one direction of a tunnel ended.
enum Ended {
    /// Its source closed, after everything it sent was delivered.
    Closed,
    /// Reading its source failed.
    ReadFailed(std::io::Error),
    /// Writing to its destination failed.
    WriteFailed,
}

/// Passes on the 101 head to the client, then carries bytes both ways until either side ends;
/// both connections then close (the client's in `serve`, on `Next::Close` or `Next::Reset`).
pub(crate) async fn tunnel(
    down: &mut Downstream,
    dp: &DataPlane,
    mut conn: Connection,
    head: ResponseHead,
    x: &Exchange<'_>,
    mut idle_timer: Pin<&mut Sleep>,
) -> Outcome {
    let mut outcome = Outcome {
        status: head.status,
        flag: None,
        upstream: Some(x.endpoint.address),
        next: Next::Close,
    };
    // The head, and what the upstream sent right after it, in one write.
    let mut out = Vec::with_capacity(head.len + HEAD_EDITS + conn.buf.len() - head.len);
    h1::write_switching_protocols_head(&mut out, &conn.buf, &head);
    // The route's ResponseHeaderModifier applies to the 101 too, as Envoy applies it.
    x.route_filters.edit_http1_response(&mut out);
    out.extend_from_slice(&conn.buf[head.len..]);
    conn.buf = Vec::new();
    if down.stream.send(&out).await.is_err() {
        conn.end = End::Local;
        outcome.flag = Some(ResponseFlag::DownstreamConnectionTermination);
        return outcome;
    }
    drop(out);
    // What the client sent after its request head (frames it did not wait to send) goes first.
    let early = std::mem::take(&mut down.buf);
    let limit = dp.options.stream_idle_timeout;
    let progress = Progress::new();
    idle_timer.as_mut().reset(progress.last() + limit);
    let (ended_upstream_bound, ended) = {
        let (up_read, up_write) = conn.transport.split();
        let (down_read, down_write) = tokio::io::split(&mut down.stream);
        let to_upstream = pipe(down_read, up_write, early, &progress);
        let to_client = pipe(up_read, down_write, Vec::new(), &progress);
        tokio::pin!(to_upstream, to_client);
        loop {
            tokio::select! {
                ended = &mut to_upstream => break (true, Some(ended)),
                ended = &mut to_client => break (false, Some(ended)),
                () = idle_timer.as_mut() => {
                    let due = progress.last() + limit;
                    if due <= tokio::time::Instant::now() {
                        break (false, None);
                    }
                    idle_timer.as_mut().reset(due);
                }
            }
        }
    };
    match (ended_upstream_bound, ended) {
        (_, None) => {
            // Idle past the stream idle timeout: reset, as Envoy resets the stream.
            stats::inc(&dp.downstream.downstream_rq_idle_timeout);
            conn.end = End::Local;
            outcome.flag = Some(ResponseFlag::StreamIdleTimeout);
            outcome.next = Next::Reset;
        }
        // The client closed: the upstream connection closes after what it sent.
        (true, Some(Ended::Closed)) => conn.end = End::Local,
        (true, Some(Ended::ReadFailed(_))) => {
            conn.end = End::Local;
            outcome.flag = Some(ResponseFlag::DownstreamConnectionTermination);
        }
        (true, Some(Ended::WriteFailed)) => upstream_broke(&mut conn, &mut outcome, End::Remote),
        (false, Some(Ended::ReadFailed(e))) => {
            upstream_broke(&mut conn, &mut outcome, upstream::end_of(&e));
        }
        // The upstream closed: the client's connection closes after what it sent.
        (false, Some(Ended::Closed)) => conn.end = End::Remote,
        (false, Some(Ended::WriteFailed)) => {
            conn.end = End::Local;
            outcome.flag = Some(ResponseFlag::DownstreamConnectionTermination);
        }
    }
    outcome
}

/// The upstream broke mid-tunnel: the client's connection is reset, so that it cannot take the
/// cut for an orderly end.
fn upstream_broke(conn: &mut Connection, outcome: &mut Outcome, end: End) {
    conn.end = end;
    outcome.flag = Some(ResponseFlag::UpstreamConnectionTermination);
    outcome.next = Next::Reset;
}

/// Copies `from` to `to` (first `early`), flushing each write (rustls holds bytes until a
/// flush), and notes each move in `progress`; returns when `from` ends or either side fails.
async fn pipe<R, W>(mut from: R, mut to: W, early: Vec<u8>, progress: &Progress) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = early;
    loop {
        if !buf.is_empty() {
            if to.write_all(&buf).await.is_err() || to.flush().await.is_err() {
                return Ended::WriteFailed;
            }
            progress.now();
            buf.clear();
        }
        if buf.capacity() < CHUNK {
            buf.reserve(CHUNK);
        }
        match from.read_buf(&mut buf).await {
            Ok(0) => return Ended::Closed,
            Ok(_) => progress.now(),
            Err(e) => return Ended::ReadFailed(e),
        }
    }
}
