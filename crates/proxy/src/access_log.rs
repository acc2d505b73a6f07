//! Envoy's default access log format, one line per request, written by a background thread so
//! the request path never waits on stdout or a file.

use std::io::Write;
use std::sync::mpsc;

#[derive(Clone)]
pub struct AccessLog {
    sink: Option<mpsc::Sender<String>>,
}

/// One request's log fields.
pub(crate) struct Entry<'a> {
    pub start: jiff::Timestamp,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub flags: &'a str,
    pub duration_ms: u128,
    pub forwarded_for: &'a str,
    pub user_agent: &'a str,
    pub authority: &'a str,
    pub upstream: Option<std::net::SocketAddr>,
    pub cluster: &'a str,
}

impl AccessLog {
    pub fn disabled() -> AccessLog {
        AccessLog { sink: None }
    }

    /// Lines go to `out` (stdout, or a file).
    pub fn to_writer(out: Box<dyn Write + Send>) -> AccessLog {
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(out);
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    // drain what is queued, then flush once
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(more.as_bytes());
                    }
                    let _ = out.flush();
                }
            })
            .ok();
        AccessLog { sink: Some(tx) }
    }

    pub fn is_enabled(&self) -> bool {
        self.sink.is_some()
    }

    pub(crate) fn log(&self, e: &Entry) {
        let Some(sink) = &self.sink else { return };
        let upstream = e.upstream.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        let line = format!(
            "[{}] \"{} {} {}\" {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"\n",
            e.start.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
            e.method,
            e.path,
            e.protocol,
            e.status,
            if e.flags.is_empty() { "-" } else { e.flags },
            e.duration_ms,
            or_dash(e.forwarded_for),
            or_dash(e.user_agent),
            or_dash(e.authority),
            upstream,
            or_dash(e.cluster),
        );
        let _ = sink.send(line);
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}
