//! Envoy's default access log format, one line per request, kept cheap on the request path: a
//! line is formatted straight into a shared buffer (no allocation, the date formatted once a
//! second), and a writer thread writes the buffer out every second, or as soon as it holds
//! 64 KiB, as Envoy's file access log does (its flush interval defaults to 10 s; 1 s keeps
//! `tail -f` current). So a request costs no system call and no thread wake-up.
//!
//! What can be lost: nothing on a clean exit (`flush`, called by `kgw run` at exit, and on drop);
//! on a crash, the lines of the last second at most (64 KiB or less at high rates, a few hundred
//! lines).

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::local_reply::ResponseFlag;

/// The buffer is handed to the writer when it holds this much.
const FLUSH_SIZE: usize = 64 * 1024;
/// And at least this often.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Beyond this, while the writer is stuck (a stdout nobody reads), lines are dropped rather than
/// held in memory without bound.
const MAX_PENDING: usize = 16 << 20;
/// How long the flush at exit waits for the log output (a stdout nobody reads blocks the writer
/// for ever; exit must not wait on it).
const EXIT_FLUSH_LIMIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
    /// Dropped with the last handle: writes what is pending and stops the writer.
    _flush_on_drop: Option<Arc<FlushOnDrop>>,
}

struct FlushOnDrop(Arc<Shared>);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.write_pending_within(EXIT_FLUSH_LIMIT);
        self.0.lock_pending().closed = true;
        self.0.full.notify_one();
    }
}

struct Shared {
    /// Lines not written yet.
    pending: Mutex<Pending>,
    /// Wakes the writer when `pending` is full, or on close.
    full: Condvar,
    /// Taken before `pending` by whoever writes, so chunks are written in order.
    out: Mutex<Box<dyn Write + Send>>,
    /// Lines taken from `pending` whose write has not returned yet (reported as lost when the
    /// exit flush gives up on them).
    being_written: AtomicUsize,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    dropped: u64,
    /// The writer was woken for a full buffer and has not taken it yet (each wake is a system
    /// call).
    woken: bool,
    closed: bool,
}

/// What a request's line takes from its head, captured when the head is read (its buffer is
/// reused before the line is written): one buffer, recycled per thread, not a String per field.
pub(crate) struct RequestFields {
    /// Wall-clock time since the epoch: one clock read gives both the line's start time and,
    /// with the read when it ends, its duration (a clock stepped back meanwhile gives 0 ms).
    start: Duration,
    /// `"METHOD PATH PROTOCOL"` then, from `split`, ` "X-FORWARDED-FOR" "USER-AGENT" "AUTHORITY"`.
    text: Vec<u8>,
    split: usize,
}

impl RequestFields {
    /// The same fields for a request that began `by` before they were captured (a head that
    /// took that long to refuse).
    pub(crate) fn began_earlier(mut self, by: Duration) -> RequestFields {
        self.start = self.start.saturating_sub(by);
        self
    }
}

/// One request's line: its captured fields and how it ended.
pub(crate) struct Entry<'a> {
    pub request: RequestFields,
    pub status: u16,
    pub flag: Option<ResponseFlag>,
    pub upstream: Option<std::net::SocketAddr>,
    pub cluster: &'a str,
}

impl AccessLog {
    pub fn disabled() -> AccessLog {
        AccessLog {
            shared: None,
            _flush_on_drop: None,
        }
    }

    /// Lines go to `out` (stdout, or a file).
    pub fn to_writer(out: Box<dyn Write + Send>) -> AccessLog {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                lines: Vec::with_capacity(FLUSH_SIZE * 2),
                ..Pending::default()
            }),
            full: Condvar::new(),
            out: Mutex::new(out),
            being_written: AtomicUsize::new(0),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let shared = writer;
                // The chunk being written; it swaps places with the pending buffer, so neither
                // is allocated again.
                let mut chunk = Vec::with_capacity(FLUSH_SIZE * 2);
                loop {
                    {
                        let pending = shared.lock_pending();
                        let (pending, _) = shared
                            .full
                            .wait_timeout_while(pending, FLUSH_INTERVAL, |p| {
                                p.lines.len() < FLUSH_SIZE && !p.closed
                            })
                            .unwrap_or_else(|e| e.into_inner());
                        if pending.closed {
                            return;
                        }
                    }
                    shared.write_pending(&mut chunk);
                }
            })
            .ok();
        AccessLog {
            _flush_on_drop: Some(Arc::new(FlushOnDrop(shared.clone()))),
            shared: Some(shared),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Writes out every line logged so far, waiting at most 2 s for the log output (then says
    /// on stderr how many lines are lost). `kgw run` calls it at exit; dropping the last handle
    /// does it too.
    pub fn flush(&self) {
        if let Some(shared) = &self.shared {
            shared.write_pending_within(EXIT_FLUSH_LIMIT);
        }
    }

    /// The request's fields, when the log is on.
    pub(crate) fn capture(
        &self,
        method: &[u8],
        path: &[u8],
        protocol: &str,
        forwarded_for: Option<&[u8]>,
        user_agent: Option<&[u8]>,
        authority: &[u8],
    ) -> Option<RequestFields> {
        self.shared.as_ref()?;
        let mut text = FREE_TEXT.with_borrow_mut(Vec::pop).unwrap_or_default();
        text.push(b'"');
        for (i, part) in [method, path, protocol.as_bytes()].into_iter().enumerate() {
            if i > 0 {
                text.push(b' ');
            }
            text.extend_from_slice(part);
        }
        text.push(b'"');
        let split = text.len();
        for field in [forwarded_for, user_agent, Some(authority)] {
            text.extend_from_slice(b" \"");
            text.extend_from_slice(field.filter(|f| !f.is_empty()).unwrap_or(b"-"));
            text.push(b'"');
        }
        Some(RequestFields {
            start: now(),
            text,
            split,
        })
    }

    pub(crate) fn log(&self, e: Entry) {
        let Some(shared) = &self.shared else { return };
        let ended = now();
        {
            // Formatted in place: a line costs less than a second copy would.
            let mut pending = shared.lock_pending();
            if pending.lines.len() >= MAX_PENDING {
                pending.dropped += 1;
            } else {
                format_line(&mut pending.lines, &e, ended);
                if pending.lines.len() >= FLUSH_SIZE && !pending.woken {
                    pending.woken = true;
                    shared.full.notify_one();
                }
            }
        }
        let mut text = e.request.text;
        text.clear();
        FREE_TEXT.with_borrow_mut(|free| {
            if free.len() < FREE_TEXT_KEPT {
                free.push(text);
            }
        });
    }
}

impl Shared {
    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the pending lines out on a thread of its own, waiting for it at most `limit`: the
    /// writer may hold the output, blocked on a stdout nobody reads, and so may this write.
    fn write_pending_within(self: &Arc<Self>, limit: Duration) {
        let (done, written) = std::sync::mpsc::channel();
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name("access-log-flush".into())
            .spawn(move || {
                shared.write_pending(&mut Vec::new());
                let _ = done.send(());
            });
        if spawned.is_err() || written.recv_timeout(limit).is_err() {
            let pending = self.lock_pending();
            let lost = lines_in(&pending.lines)
                + self.being_written.load(Ordering::Relaxed)
                + pending.dropped as usize;
            drop(pending);
            eprintln!(
                "access log: {lost} lines not written: the log output accepted nothing for {limit:?} \
                 (is anything reading kgw's stdout? use --access-log=PATH for a file)"
            );
        }
    }

    /// Swaps the pending lines with `chunk` (empty) and writes them out.
    fn write_pending(&self, chunk: &mut Vec<u8>) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = {
            let mut pending = self.lock_pending();
            std::mem::swap(&mut pending.lines, chunk);
            pending.woken = false;
            std::mem::take(&mut pending.dropped)
        };
        if !chunk.is_empty() {
            let lines = lines_in(chunk);
            self.being_written.fetch_add(lines, Ordering::Relaxed);
            // An error (a closed stdout, a full disk) loses these lines; the next ones try again.
            let _ = out.write_all(chunk).and_then(|()| out.flush());
            self.being_written.fetch_sub(lines, Ordering::Relaxed);
            chunk.clear();
        }
        drop(out);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "access log lines dropped: the log output does not keep up"
            );
        }
    }
}

fn lines_in(text: &[u8]) -> usize {
    text.iter().filter(|b| **b == b'\n').count()
}

/// Captured-field buffers kept per thread for reuse (requests in flight on this thread at once).
const FREE_TEXT_KEPT: usize = 256;

thread_local! {
    static FREE_TEXT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// `[YYYY-MM-DDTHH:MM:SS` of the second last formatted on this thread.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Appends one line in Envoy's default format.
fn format_line(out: &mut Vec<u8>, e: &Entry, ended: Duration) {
    let request = &e.request;
    let second = request.start.as_secs() as i64;
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            *text = jiff::Timestamp::from_second(second)
                .map(|t| t.strftime("[%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_else(|_| "[-".into());
        }
        out.extend_from_slice(text.as_bytes());
    });
    let millis = request.start.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
    ]);
    out.extend_from_slice(b"Z] ");
    out.extend_from_slice(&request.text[..request.split]);
    out.push(b' ');
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(number.format(e.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(e.flag.map_or("-", ResponseFlag::as_str).as_bytes());
    out.push(b' ');
    let duration = ended.saturating_sub(request.start);
    out.extend_from_slice(number.format(duration.as_millis()).as_bytes());
    out.extend_from_slice(&request.text[request.split..]);
    out.extend_from_slice(b" \"");
    match e.upstream {
        // By hand: Display for SocketAddr costs more than the rest of the line.
        Some(std::net::SocketAddr::V4(address)) => {
            for (i, octet) in address.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(number.format(octet).as_bytes());
            }
            out.push(b':');
            out.extend_from_slice(number.format(address.port()).as_bytes());
        }
        Some(address) => {
            let _ = write!(out, "{address}");
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"\" \"");
    out.extend_from_slice(or_dash(e.cluster).as_bytes());
    out.extend_from_slice(b"\"\n");
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log: &AccessLog, start: &str, status: u16, upstream: Option<&str>) -> Entry<'static> {
        let mut request = log
            .capture(
                b"GET",
                b"/get?a=1",
                "HTTP/1.1",
                None,
                Some(b"curl/8.5.0"),
                b"www.example.com",
            )
            .unwrap();
        let start: jiff::Timestamp = start.parse().unwrap();
        request.start = Duration::from_millis(start.as_millisecond() as u64);
        Entry {
            request,
            status,
            flag: upstream.is_none().then_some(ResponseFlag::NoRouteFound),
            upstream: upstream.map(|a| a.parse().unwrap()),
            cluster: if upstream.is_some() {
                "kube_httpbin_httpbin_8000"
            } else {
                ""
            },
        }
    }

    #[test]
    fn lines_are_in_envoys_default_format() {
        let log = AccessLog::to_writer(Box::new(std::io::sink()));
        let mut out = Vec::new();
        let first = entry(&log, "2026-11-29T18:03:43.007Z", 200, Some("127.0.0.1:8000"));
        let ended = first.request.start + Duration::from_millis(12);
        format_line(&mut out, &first, ended);
        // The cached second is reused for the next line of the same second.
        let second = entry(&log, "2026-11-29T18:03:43.999Z", 200, Some("[::1]:80"));
        format_line(&mut out, &second, second.request.start);
        // A clock stepped back: 0 ms.
        let third = entry(&log, "2026-11-29T18:03:44.120Z", 404, None);
        format_line(&mut out, &third, Duration::ZERO);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[2026-11-29T18:03:43.007Z] \"GET /get?a=1 HTTP/1.1\" 200 - 12 \"-\" \"curl/8.5.0\" \"www.example.com\" \"127.0.0.1:8000\" \"kube_httpbin_httpbin_8000\"\n\
             [2026-11-29T18:03:43.999Z] \"GET /get?a=1 HTTP/1.1\" 200 - 0 \"-\" \"curl/8.5.0\" \"www.example.com\" \"[::1]:80\" \"kube_httpbin_httpbin_8000\"\n\
             [2026-11-29T18:03:44.120Z] \"GET /get?a=1 HTTP/1.1\" 404 NR 0 \"-\" \"curl/8.5.0\" \"www.example.com\" \"-\" \"-\"\n"
        );
    }
}

#[cfg(test)]
mod exit_flush_tests {
    use super::*;

    /// A stdout nobody reads: every write blocks for ever.
    struct NeverReady(std::sync::mpsc::Receiver<()>);

    impl Write for NeverReady {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_flush_at_exit_gives_up_on_an_output_that_accepts_nothing() {
        let (_keep_blocked, never) = std::sync::mpsc::channel();
        let log = AccessLog::to_writer(Box::new(NeverReady(never)));
        let line = || {
            let request = log
                .capture(b"GET", b"/", "HTTP/1.1", None, None, b"a.example.com")
                .unwrap();
            log.log(Entry {
                request,
                status: 200,
                flag: None,
                upstream: None,
                cluster: "",
            });
        };
        line();
        // The first flush blocks in the write; the second waits on the first.
        let (returned, flushed) = std::sync::mpsc::channel();
        let flusher = log.clone();
        std::thread::spawn(move || {
            flusher.flush();
            flusher.flush();
            let _ = returned.send(());
        });
        let started = std::time::Instant::now();
        flushed
            .recv_timeout(Duration::from_secs(10))
            .expect("flush returned");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }
}
