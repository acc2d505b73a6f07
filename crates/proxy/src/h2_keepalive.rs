//! HTTP/2 keepalive on an upstream connection, as Envoy's `KeepaliveSettings`
//! (`Http2ProtocolOptions.connection_keepalive`): TCP keepalive cannot see a peer that stopped
//! answering at the HTTP/2 layer; a PING can.
//! - With `interval`, a PING goes every `interval` plus a random jitter of up to 15% of it
//!   (Envoy's `interval_jitter` default).
//! - With `connection_idle_interval`, a connection that received nothing for that long gets a
//!   PING when a new stream is put on it (`Keepalive::before_new_stream`); the stream does not
//!   wait for the answer (Envoy's `ClientConnectionImpl::newStream` sends it and goes on).
//! - A PING counts as answered when ANY frame arrives while it is outstanding (Envoy's doc: "a
//!   PING response is considered received if any frame arrives"): the transport is wrapped
//!   (`Watched`) to note when bytes are read. Unanswered within `timeout`: the connection is
//!   dead; its owner closes it and counts `http2.keepalive_timeout`.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use snapshot::Http2Keepalive;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Envoy's default `interval_jitter`: 15% of the interval, added.
const JITTER_PERCENT: u64 = 15;

/// When a connection last received bytes, and the wake-up for a PING before a new stream.
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds from `start` of the last read that gave bytes.
    last_read_ms: AtomicU64,
    ping_wanted: Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            ping_wanted: Notify::new(),
        })
    }

    fn read_now(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_read_ms.store(ms, Ordering::Relaxed);
    }

    /// When bytes last arrived.
    pub(crate) fn last_read(&self) -> Instant {
        self.start + Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed))
    }

    /// With `connection_idle_interval`: a connection that received nothing for that long gets a
    /// PING as a new stream goes on it.
    pub(crate) fn before_new_stream(&self, settings: Option<&Http2Keepalive>) {
        let Some(idle) = settings.and_then(|k| k.connection_idle_interval) else {
            return;
        };
        if !idle.is_zero() && self.last_read().elapsed() >= idle {
            self.ping_wanted.notify_one();
        }
    }
}

/// A transport whose reads are noted in its `Activity`.
pub(crate) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Watched<T> {
        activity.read_now();
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read_now();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why the keepalive gave up on a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dead {
    /// A PING went unanswered (no frame at all) for `timeout`.
    Timeout,
    /// The connection is gone (PINGs cannot be sent).
    Closed,
}

/// Runs the connection's keepalive: returns when the connection is found dead, never while it
/// answers. Polled beside the connection's own future (which carries the PINGs).
pub(crate) async fn run(
    settings: Http2Keepalive,
    mut ping_pong: h2::PingPong,
    activity: Arc<Activity>,
) -> Dead {
    // A PING sent whose PONG h2 has not handed back yet (frames answered for it): h2 allows
    // one user PING at a time, so the next waits for that PONG.
    let mut outstanding = false;
    loop {
        match settings.interval.filter(|i| !i.is_zero()) {
            Some(interval) => {
                let wait = jittered(interval);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = activity.ping_wanted.notified() => {}
                }
            }
            None => activity.ping_wanted.notified().await,
        }
        let sent_at = Instant::now();
        if !outstanding {
            if ping_pong.send_ping(h2::Ping::opaque()).is_err() {
                return Dead::Closed;
            }
            outstanding = true;
        }
        let answered = tokio::time::timeout(settings.timeout, poll_fn(|cx| ping_pong.poll_pong(cx))).await;
        match answered {
            Ok(Ok(_pong)) => outstanding = false,
            Ok(Err(_)) => return Dead::Closed,
            // Any frame since the PING was sent answers it.
            Err(_) if activity.last_read() > sent_at => {}
            Err(_) => return Dead::Timeout,
        }
    }
}

/// `interval` plus up to `JITTER_PERCENT` of it, at random.
fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let max_jitter_ms = interval.as_millis() as u64 * JITTER_PERCENT / 100;
    if max_jitter_ms == 0 {
        return interval;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    interval + Duration::from_millis(hasher.finish() % (max_jitter_ms + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jitter_adds_at_most_fifteen_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(1));
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_millis(1150),
                "{d:?}"
            );
        }
    }
}
