//! HTTP/1.1 message heads and body framing for the proxy's hot path, on httparse.
//!
//! Why by hand: a proxy forwards messages, it does not need them as typed objects. hyper parses
//! every head into a HeaderMap and encodes it again, on both sides, and runs each upstream
//! connection in a task of its own; on this machine that is 2.6 µs of user time per request
//! more than a minimal tokio proxy (`bench/floor`), the whole gap to nginx and HAProxy. Here a
//! head is parsed in place (httparse gives slices of the read buffer) and written out with the
//! proxy's edits, and the body is framed so that its end is found without copying it.
//!
//! Pure functions and state machines, no I/O: the listener drives them.

use std::mem::MaybeUninit;
use std::ops::{Deref, Range};

/// The most header lines a head may have (Envoy's default limit is 100).
pub const MAX_HEADERS: usize = 100;
/// The largest head accepted (Envoy's `max_request_headers_kb` default is 60 KiB).
pub const MAX_HEAD_BYTES: usize = 60 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a request without Content-Length or Transfer-Encoding; a response to HEAD; 1xx,
    /// 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: forwarded as is, its end found by [`ChunkedScanner`].
    Chunked,
    /// Until the peer closes (responses only).
    UntilClose,
}

/// What a request's `Connection: upgrade` and `Upgrade` headers ask for (HTTP/1.1 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// No upgrade; or `h2c`, whose headers are dropped and the request served as it is (as
    /// Envoy does); or one on a request with a body.
    None,
    /// `Upgrade: websocket`: the headers go upstream, and a 101 answer turns the connection
    /// into a tunnel (`upgrade.rs`).
    WebSocket,
    /// Any other protocol: refused with 403, as Envoy refuses an upgrade type it is not
    /// configured for.
    Other,
}

/// Why a head cannot be forwarded; each maps to the answer a client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed (400, or a broken upstream: 503 UC).
    Malformed(&'static str),
    /// Larger than [`MAX_HEAD_BYTES`] or more than [`MAX_HEADERS`] lines (431).
    TooLarge,
    /// A transfer coding other than `chunked` (501, as nginx answers it).
    NotImplemented,
}

/// One header line, as ranges into the buffer the head was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLine {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// A head's header lines; the list goes back to the thread's free list when the head is done
/// with (see `recycle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLines(Vec<HeaderLine>);

impl Deref for HeaderLines {
    type Target = [HeaderLine];
    fn deref(&self) -> &[HeaderLine] {
        &self.0
    }
}

impl Drop for HeaderLines {
    fn drop(&mut self) {
        crate::recycle::give_lines(std::mem::take(&mut self.0));
    }
}

/// A parsed request head. Ranges point into the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, including the empty line.
    pub len: usize,
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub version: Version,
    pub headers: HeaderLines,
    pub framing: Framing,
    /// The client wants the connection kept after this exchange.
    pub keep_alive: bool,
    /// The host the request is for: an absolute-form target's authority (RFC 9112, 3.2.2: it
    /// wins over the `host` header), else the `host` header's value, if any.
    pub host: Option<Range<usize>>,
    pub upgrade: Upgrade,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub version: Version,
    pub headers: HeaderLines,
    pub framing: Framing,
    /// The upstream connection may carry another request after this response.
    pub keep_alive: bool,
}

fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    // httparse returns subslices of `buf`: their offset is their distance from its start.
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Connection-level facts found in the header lines: framing and keep-alive.
struct Scan {
    content_length: Option<u64>,
    /// The last transfer coding is `chunked`.
    chunked: bool,
    /// How many `transfer-encoding` lines there are.
    transfer_encodings: u32,
    /// The only transfer coding is `chunked` (one line, that one word).
    exactly_chunked: bool,
    close: bool,
    keep_alive: bool,
    /// `Connection` lists `upgrade`.
    upgrade: bool,
}

fn scan(headers: &[httparse::Header<'_>]) -> Result<Scan, HeadError> {
    let mut s = Scan {
        content_length: None,
        chunked: false,
        transfer_encodings: 0,
        exactly_chunked: false,
        close: false,
        keep_alive: false,
        upgrade: false,
    };
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only: `+5` would parse here and may read otherwise upstream.
            let digits = h.value.trim_ascii();
            let n = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or(HeadError::Malformed("invalid content-length"))?;
            // Repeated Content-Length lines must agree (RFC 9110, 8.6); otherwise it is a
            // request-smuggling attempt.
            if s.content_length.is_some_and(|m| m != n) {
                return Err(HeadError::Malformed("conflicting content-length"));
            }
            s.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            s.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            s.transfer_encodings += 1;
            s.exactly_chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                s.close |= token.eq_ignore_ascii_case(b"close");
                s.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                s.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        }
    }
    if s.transfer_encodings > 0 && s.content_length.is_some() {
        // RFC 9112, 6.3: both present is a smuggling signal; refuse rather than guess.
        return Err(HeadError::Malformed("both content-length and transfer-encoding"));
    }
    Ok(s)
}

fn version(minor: Option<u8>) -> Result<Version, HeadError> {
    match minor {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(HeadError::Malformed("unsupported HTTP version")),
    }
}

fn lines(buf: &[u8], headers: &[httparse::Header<'_>]) -> HeaderLines {
    let mut lines = crate::recycle::lines();
    lines.extend(headers.iter().map(|h| HeaderLine {
        name: range_of(buf, h.name.as_bytes()),
        value: range_of(buf, h.value),
    }));
    HeaderLines(lines)
}

/// Room for httparse's header slices, left uninitialized: httparse writes each one before it
/// reads it, and filling 100 of them per head showed in profiles.
fn header_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

fn too_large_or_partial(buf: &[u8]) -> Result<(), HeadError> {
    if buf.len() > MAX_HEAD_BYTES {
        Err(HeadError::TooLarge)
    } else {
        Ok(())
    }
}

/// Parses a request head at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut slots = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return too_large_or_partial(buf).map(|()| None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let version = version(req.version)?;
    let s = scan(req.headers)?;
    // As nginx: one transfer-encoding line, exactly `chunked`, on HTTP/1.1. Anything else may
    // frame the body differently in the next hop (request smuggling).
    if s.transfer_encodings > 1 {
        return Err(HeadError::Malformed("repeated transfer-encoding"));
    }
    if s.transfer_encodings == 1 {
        if version == Version::Http10 {
            return Err(HeadError::Malformed("transfer-encoding on HTTP/1.0"));
        }
        if !s.exactly_chunked {
            return Err(HeadError::NotImplemented);
        }
    }
    let framing = if s.chunked {
        Framing::Chunked
    } else {
        match s.content_length {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };
    // RFC 9112, 3.2: one `host` line, required in HTTP/1.1 (HTTP/1.0 may leave it out, and
    // nginx serves it so).
    let mut hosts = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host"));
    let host_header = hosts.next().map(|h| range_of(buf, h.value));
    if hosts.next().is_some() {
        return Err(HeadError::Malformed("more than one host header"));
    }
    if host_header.is_none() && version == Version::Http11 {
        return Err(HeadError::Malformed("missing host header"));
    }
    let method = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    let (authority, _) = split_absolute_form(target.as_bytes());
    let valid_target = match authority {
        Some(a) => !a.is_empty(),
        None => {
            target.starts_with('/')
                || (target == "*" && method == "OPTIONS")
                // CONNECT's authority-form: the listener refuses the method itself (405).
                || method == "CONNECT"
        }
    };
    if !valid_target {
        return Err(HeadError::Malformed("invalid request target"));
    }
    let host = match authority {
        Some(a) => Some(range_of(buf, a)),
        None => host_header,
    };
    let upgrade = if s.upgrade && version == Version::Http11 && framing == Framing::Empty {
        upgrade_asked(req.headers)
    } else {
        Upgrade::None
    };
    Ok(Some(RequestHead {
        len,
        method: range_of(buf, req.method.unwrap_or_default().as_bytes()),
        target: range_of(buf, req.path.unwrap_or_default().as_bytes()),
        version,
        framing,
        keep_alive: match version {
            Version::Http11 => !s.close,
            Version::Http10 => s.keep_alive && !s.close,
        },
        headers: lines(buf, req.headers),
        host,
        upgrade,
    }))
}

/// The protocol a request's `Upgrade` header names (its `Connection` lists `upgrade`). As
/// Envoy: matched without case; `h2c` is no upgrade to a proxy (its headers are dropped).
fn upgrade_asked(headers: &[httparse::Header<'_>]) -> Upgrade {
    let Some(h) = headers.iter().find(|h| h.name.eq_ignore_ascii_case("upgrade")) else {
        return Upgrade::None;
    };
    let protocol = h.value.trim_ascii();
    if protocol.eq_ignore_ascii_case(b"websocket") {
        Upgrade::WebSocket
    } else if protocol.eq_ignore_ascii_case(b"h2c") {
        Upgrade::None
    } else {
        Upgrade::Other
    }
}

/// Parses a response head at the start of `buf`, for a request with `request_method`;
/// `Ok(None)` when more bytes are needed.
pub fn parse_response(buf: &[u8], request_method: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
    let mut slots = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return too_large_or_partial(buf).map(|()| None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("malformed response head")),
    };
    let version = version(resp.version)?;
    let status = resp.code.unwrap_or_default();
    // httparse takes any three digits; RFC 9110, 15: a status code is 100..599.
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed("status code out of range"));
    }
    let s = scan(resp.headers)?;
    if s.transfer_encodings > 0 && !s.chunked {
        return Err(HeadError::Malformed("unsupported transfer-encoding"));
    }
    // RFC 9112, 6.3: the order in which a response's body length is decided.
    let framing = if request_method.eq_ignore_ascii_case(b"HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Framing::Empty
    } else if s.chunked {
        Framing::Chunked
    } else {
        match s.content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = framing != Framing::UntilClose
        && match version {
            Version::Http11 => !s.close,
            Version::Http10 => s.keep_alive && !s.close,
        };
    Ok(Some(ResponseHead {
        len,
        status,
        version,
        headers: lines(buf, resp.headers),
        framing,
        keep_alive,
    }))
}

/// Finds where a chunked body ends while its bytes pass through unchanged. Feed it every byte
/// of the body in order; it says how many of them belong to the body.
#[derive(Debug, Clone, Default)]
pub struct ChunkedScanner {
    state: ChunkState,
    /// Bytes left in the current chunk's data (while reading the size: the size so far).
    remaining: u64,
    /// Hex digits read of the current size line (a size line needs one).
    digits: u8,
    /// Where the trailer lines were in the bytes of the last `feed` (one run: only the final
    /// CRLF follows them).
    trailer: Option<Range<usize>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size.
    #[default]
    Size,
    /// After the size: extensions until CR.
    Extension,
    /// Expecting LF after the size line.
    SizeLf,
    /// In the chunk's data.
    Data,
    /// Expecting CR after the data.
    DataCr,
    /// Expecting LF after the data.
    DataLf,
    /// After the last chunk: at the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line, until CR.
    Trailer,
    /// Expecting LF ending a trailer line.
    TrailerLf,
    /// Expecting the final LF.
    EndLf,
    /// The body ended.
    Done,
}

/// Where a body being forwarded ends, for either side: fed the bytes that arrived, it says how
/// many belong to the body, then whether the body is complete.
#[derive(Debug, Clone)]
pub struct BodyFrame {
    framing: Framing,
    /// Bytes still to come of a `Length` body.
    left: u64,
    chunked: ChunkedScanner,
}

impl BodyFrame {
    pub fn new(framing: Framing) -> BodyFrame {
        BodyFrame {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: ChunkedScanner::default(),
        }
    }

    /// How many of `bytes` (what arrived and was not forwarded yet) belong to the body.
    pub fn take(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        Ok(match self.framing {
            Framing::Empty => 0,
            Framing::Length(_) => {
                let n = self.left.min(bytes.len() as u64);
                self.left -= n;
                n as usize
            }
            Framing::Chunked => self.chunked.feed(bytes)?,
            Framing::UntilClose => bytes.len(),
        })
    }

    /// The whole body went by (a close-delimited one ends only with its connection).
    pub fn is_done(&self) -> bool {
        match self.framing {
            Framing::Empty => true,
            Framing::Length(_) => self.left == 0,
            Framing::Chunked => self.chunked.is_done(),
            Framing::UntilClose => false,
        }
    }

    /// Moves the body bytes at the start of `from` to `to`, leaving out the chunked trailer
    /// lines unless `keep_trailers` (Envoy's HTTP/1 codec drops them unless enable_trailers).
    pub fn move_body(
        &mut self,
        from: &mut Vec<u8>,
        to: &mut Vec<u8>,
        keep_trailers: bool,
    ) -> Result<(), ChunkError> {
        let take = self.take(from)?;
        match self.chunked.trailer.take() {
            Some(trailer) if !keep_trailers && self.framing == Framing::Chunked => {
                to.extend_from_slice(&from[..trailer.start]);
                to.extend_from_slice(&from[trailer.end..take]);
                from.drain(..take);
            }
            _ => to.extend(from.drain(..take)),
        }
        Ok(())
    }

    /// Bytes still to come of a body of known length.
    pub fn length_left(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(_) => Some(self.left),
            _ => None,
        }
    }
}

/// A chunked body that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError;

impl ChunkedScanner {
    /// Consumes bytes of the body; returns how many belong to it (less than `bytes.len()` only
    /// when the body ended within them).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        self.trailer = None;
        let mut i = 0;
        while i < bytes.len() {
            if self.state == ChunkState::Data {
                // Skip the data in one step: it is most of the body.
                let take = self.remaining.min((bytes.len() - i) as u64) as usize;
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            let in_trailer = match self.state {
                ChunkState::TrailerStart => b != b'\r',
                ChunkState::Trailer | ChunkState::TrailerLf => true,
                _ => false,
            };
            if in_trailer {
                let start = self.trailer.as_ref().map_or(i - 1, |r| r.start);
                self.trailer = Some(start..i);
            }
            self.state = match (self.state, b) {
                (ChunkState::Size, b) if b.is_ascii_hexdigit() => {
                    let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.remaining = self
                        .remaining
                        .checked_mul(16)
                        .and_then(|r| r.checked_add(digit))
                        .ok_or(ChunkError)?;
                    self.digits = self.digits.saturating_add(1);
                    ChunkState::Size
                }
                (ChunkState::Size, _) if self.digits == 0 => return Err(ChunkError),
                (ChunkState::Size | ChunkState::Extension, b'\r') => ChunkState::SizeLf,
                (ChunkState::Size, b';' | b' ' | b'\t') => ChunkState::Extension,
                // A bare LF or other control byte inside a line: some servers end lines on LF
                // alone and would see a different end of the body. Refused.
                (ChunkState::Extension | ChunkState::TrailerStart | ChunkState::Trailer, b)
                    if b != b'\t' && b != b'\r' && (b < 0x20 || b == 0x7f) =>
                {
                    return Err(ChunkError);
                }
                (ChunkState::Extension, _) => ChunkState::Extension,
                (ChunkState::SizeLf, b'\n') if self.remaining == 0 => ChunkState::TrailerStart,
                (ChunkState::SizeLf, b'\n') => ChunkState::Data,
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => {
                    self.digits = 0;
                    ChunkState::Size
                }
                (ChunkState::TrailerStart, b'\r') => ChunkState::EndLf,
                (ChunkState::Trailer, b'\r') => ChunkState::TrailerLf,
                (ChunkState::TrailerStart | ChunkState::Trailer, _) => ChunkState::Trailer,
                (ChunkState::TrailerLf, b'\n') => ChunkState::TrailerStart,
                (ChunkState::EndLf, b'\n') => {
                    self.state = ChunkState::Done;
                    return Ok(i);
                }
                _ => return Err(ChunkError),
            };
        }
        Ok(i)
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// Hop-by-hop headers: they describe one connection and go no further (RFC 9110, 7.6.1).
/// Transfer-Encoding stays: a chunked body is forwarded as it came.
fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The header names a `Connection` header lists (other than `close` and `keep-alive`): they
/// are hop-by-hop too.
fn listed_in_connection<'a>(buf: &'a [u8], headers: &[HeaderLine]) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|h| buf[h.name.clone()].eq_ignore_ascii_case(b"connection"))
        .flat_map(|h| buf[h.value.clone()].split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.is_empty() && !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")
        })
        // Never the headers that say where a message ends, or which host it is for: dropping
        // them would let a client make its body read as a second request upstream.
        .filter(|t| {
            !t.eq_ignore_ascii_case(b"content-length")
                && !t.eq_ignore_ascii_case(b"transfer-encoding")
                && !t.eq_ignore_ascii_case(b"host")
        })
        .collect()
}

/// The hop-by-hop test for one head's header names: the fixed list, and what its `Connection`
/// header lists.
fn hop_by_hop_in<'a>(buf: &'a [u8], headers: &[HeaderLine]) -> impl Fn(&[u8]) -> bool + 'a {
    let listed = listed_in_connection(buf, headers);
    move |name| is_hop_by_hop(name) || listed.iter().any(|l| l.eq_ignore_ascii_case(name))
}

/// Writes the header lines that `keep` accepts, as `name: value` CRLF lines. Runs of lines that
/// are already in exactly that form go out as one copy of the bytes they were read from (most
/// lines: this is what makes forwarding a head cheap); any other line is written anew, so odd
/// spacing or a bare LF never reaches the next hop.
fn write_lines(out: &mut Vec<u8>, buf: &[u8], headers: &[HeaderLine], keep: impl Fn(&[u8], &[u8]) -> bool) {
    let mut run: Option<Range<usize>> = None;
    for h in headers {
        let (name, value) = (&buf[h.name.clone()], &buf[h.value.clone()]);
        if !keep(name, value) {
            if let Some(r) = run.take() {
                out.extend_from_slice(&buf[r]);
            }
            continue;
        }
        let line_end = h.value.end + 2;
        let canonical = buf.get(h.name.end..h.value.start) == Some(b": ".as_slice())
            && buf.get(h.value.end..line_end) == Some(b"\r\n".as_slice());
        match (&mut run, canonical) {
            (Some(r), true) if r.end == h.name.start => r.end = line_end,
            (_, true) => {
                if let Some(r) = run.replace(h.name.start..line_end) {
                    out.extend_from_slice(&buf[r]);
                }
            }
            (_, false) => {
                if let Some(r) = run.take() {
                    out.extend_from_slice(&buf[r]);
                }
                put_header(out, name, value);
            }
        }
    }
    if let Some(r) = run {
        out.extend_from_slice(&buf[r]);
    }
}

/// Writes one `name: value` header line (the one writer of header lines for every HTTP/1.1 head
/// the proxy writes).
pub(crate) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the request head as it goes upstream: HTTP/1.1, origin-form target (an absolute-form
/// target's authority becomes `host`), hop-by-hop headers dropped, the
/// client's address appended to `x-forwarded-for`, `x-forwarded-proto: <scheme>` (`http`, or
/// `https` on a TLS connection, as Envoy does with `use_remote_address`).
pub fn write_request_head(out: &mut Vec<u8>, buf: &[u8], head: &RequestHead, client: &[u8], scheme: &[u8]) {
    let target = &buf[head.target.clone()];
    let (authority, origin_form) = split_absolute_form(target);
    out.extend_from_slice(&buf[head.method.clone()]);
    out.push(b' ');
    if origin_form.first() == Some(&b'?') {
        // `http://host?q`: the path is empty, and goes as "/".
        out.push(b'/');
    }
    out.extend_from_slice(origin_form);
    // An HTTP/1.0 client's request goes as HTTP/1.0, so that the answer is one it can read
    // (no chunked body).
    out.extend_from_slice(match head.version {
        Version::Http10 => b" HTTP/1.0\r\n",
        Version::Http11 => b" HTTP/1.1\r\n",
    });
    let is_forwarded_for = |name: &[u8]| name.eq_ignore_ascii_case(b"x-forwarded-for");
    let hop_by_hop = hop_by_hop_in(buf, &head.headers);
    // A WebSocket upgrade keeps its `Upgrade` header (and gets its own `Connection` below).
    let websocket = head.upgrade == Upgrade::WebSocket;
    let is_dropped = |name: &[u8]| hop_by_hop(name) && !(websocket && name.eq_ignore_ascii_case(b"upgrade"));
    // An absolute-form target's authority is the host (RFC 9112, 3.2.2: a proxy sends it, not
    // the client's host line).
    let is_replaced_host = |name: &[u8]| authority.is_some() && name.eq_ignore_ascii_case(b"host");
    write_lines(out, buf, &head.headers, |name, value| {
        // x-forwarded-proto is ours to set; `expect: 100-continue` was answered by the proxy;
        // x-forwarded-for lines are joined below.
        !is_dropped(name)
            && !name.eq_ignore_ascii_case(b"x-forwarded-proto")
            && !is_expect_continue(name, value)
            && !is_forwarded_for(name)
            && !is_replaced_host(name)
    });
    if let Some(authority) = authority {
        put_header(out, b"host", authority);
    }
    // Every x-forwarded-for line joins one, the client's address last: a second line cannot put
    // a forged address after it. (A second pass over the few header lines, not a buffer.)
    out.extend_from_slice(b"x-forwarded-for: ");
    for h in head.headers.iter() {
        let name = &buf[h.name.clone()];
        if is_forwarded_for(name) && !is_dropped(name) {
            out.extend_from_slice(buf[h.value.clone()].trim_ascii());
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(client);
    out.extend_from_slice(b"\r\n");
    put_header(out, b"x-forwarded-proto", scheme);
    if websocket {
        put_header(out, b"connection", b"upgrade");
    }
    out.extend_from_slice(b"\r\n");
}

/// Does the client wait for `100 Continue` before it sends its body?
pub fn expects_continue(buf: &[u8], head: &RequestHead) -> bool {
    head.framing != Framing::Empty
        && head
            .headers
            .iter()
            .any(|h| is_expect_continue(&buf[h.name.clone()], &buf[h.value.clone()]))
}

fn is_expect_continue(name: &[u8], value: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"expect") && value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
}

/// `http://authority/path?q` -> (Some(authority), `/path?q`); an origin-form target is kept.
pub fn split_absolute_form(target: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let rest = if target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        &target[7..]
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        &target[8..]
    } else {
        return (None, target);
    };
    match rest.iter().position(|b| *b == b'/' || *b == b'?') {
        Some(i) if rest[i] == b'/' => (Some(&rest[..i]), &rest[i..]),
        // `http://host?q` has an empty path: "/" it is, with the query.
        Some(i) => (Some(&rest[..i]), &rest[i..]),
        None => (Some(rest), b"/"),
    }
}

/// Writes the response head as it goes to the client: the upstream's status line in HTTP/1.1,
/// hop-by-hop headers dropped, and `connection: close` when the client's connection ends after
/// this response.
pub fn write_response_head(out: &mut Vec<u8>, buf: &[u8], head: &ResponseHead, close: bool, client: Version) {
    write_status_line(out, buf, head);
    let is_dropped = hop_by_hop_in(buf, &head.headers);
    write_lines(out, buf, &head.headers, |name, _| !is_dropped(name));
    if close {
        put_header(out, b"connection", b"close");
    } else if client == Version::Http10 {
        // An HTTP/1.0 client keeps the connection only when told so.
        put_header(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a 101 (Switching Protocols) head as it goes to the client: as any response head,
/// but its `Upgrade` header stays, with `connection: upgrade` (as Envoy passes them on).
pub fn write_switching_protocols_head(out: &mut Vec<u8>, buf: &[u8], head: &ResponseHead) {
    write_status_line(out, buf, head);
    let hop_by_hop = hop_by_hop_in(buf, &head.headers);
    write_lines(out, buf, &head.headers, |name, _| {
        !hop_by_hop(name) || name.eq_ignore_ascii_case(b"upgrade")
    });
    put_header(out, b"connection", b"upgrade");
    out.extend_from_slice(b"\r\n");
}

/// `HTTP/1.1 <status> <the upstream's reason>` CRLF.
fn write_status_line(out: &mut Vec<u8>, buf: &[u8], head: &ResponseHead) {
    let reason = head_reason(buf, head);
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse gives a status of exactly three digits.
    let status = head.status;
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase of the status line (the text after the code, up to CRLF).
fn head_reason<'a>(buf: &'a [u8], head: &ResponseHead) -> &'a [u8] {
    // httparse also ends a line at a bare LF: the reason ends at whichever comes first, or a
    // bare LF would reach the client inside the status line and end it there.
    let line_end = buf[..head.len]
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(0);
    let line = &buf[..line_end];
    // "HTTP/1.1 200 OK": the reason starts after the second space.
    line.splitn(3, |b| *b == b' ').nth(2).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_body_drops_trailers_unless_kept_even_across_reads() {
        let body = b"5\r\nhello\r\n0\r\nx-a: 1\r\nx-b: 2\r\n\r\nNEXT";
        for split in 0..body.len() - "NEXT".len() {
            for keep in [false, true] {
                let mut frame = BodyFrame::new(Framing::Chunked);
                let mut out = Vec::new();
                let mut first = body[..split].to_vec();
                frame.move_body(&mut first, &mut out, keep).unwrap();
                let mut second = body[split..].to_vec();
                frame.move_body(&mut second, &mut out, keep).unwrap();
                assert!(frame.is_done());
                assert_eq!(second, b"NEXT", "split at {split}");
                let want: &[u8] = if keep {
                    b"5\r\nhello\r\n0\r\nx-a: 1\r\nx-b: 2\r\n\r\n"
                } else {
                    b"5\r\nhello\r\n0\r\n\r\n"
                };
                assert_eq!(out, want, "split at {split}, keep {keep}");
            }
        }
    }

    fn text<'a>(buf: &'a [u8], r: &Range<usize>) -> &'a str {
        std::str::from_utf8(&buf[r.clone()]).unwrap()
    }

    #[test]
    fn a_status_line_ended_by_a_bare_lf_is_forwarded_ended_by_crlf() {
        // Found by the http1_head fuzz target: the reason phrase ran past the bare LF.
        let buf = b"HTTP/1.1 200 Fine\n\r\nok";
        let head = parse_response(buf, b"GET").unwrap().unwrap();
        let mut out = Vec::new();
        write_response_head(&mut out, buf, &head, false, Version::Http11);
        assert_eq!(out, b"HTTP/1.1 200 Fine\r\n\r\n");
    }

    #[test]
    fn a_request_head_is_found_in_place() {
        let buf = b"GET /get?x=1 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl\r\n\r\nNEXT";
        let head = parse_request(buf).unwrap().unwrap();
        assert_eq!(head.len, buf.len() - 4);
        assert_eq!(text(buf, &head.method), "GET");
        assert_eq!(text(buf, &head.target), "/get?x=1");
        assert_eq!(text(buf, head.host.as_ref().unwrap()), "www.example.com");
        assert_eq!(head.headers.len(), 2);
        assert_eq!(text(buf, &head.headers[1].name), "User-Agent");
        assert_eq!((head.framing, head.keep_alive), (Framing::Empty, true));
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n", b"GET"), Ok(None));
    }

    #[test]
    fn request_framing_and_keep_alive() {
        let head = |s: &str| parse_request(s.as_bytes()).unwrap().unwrap();
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n").framing,
            Framing::Chunked
        );
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let refused = |s: &str| parse_request(s.as_bytes()).unwrap_err();
        assert!(matches!(
            refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert_eq!(
            refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            HeadError::NotImplemented
        );
        assert!(matches!(
            refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"),
            HeadError::Malformed(_)
        ));
    }

    #[test]
    fn transfer_encoding_is_exactly_chunked_on_http_1_1_as_nginx_takes_it() {
        let refused = |s: &str| parse_request(s.as_bytes()).unwrap_err();
        assert_eq!(
            refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            HeadError::NotImplemented
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            HeadError::NotImplemented
        );
        assert!(matches!(
            refused(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Malformed(_)
        ));
    }

    #[test]
    fn host_is_required_once_in_http_1_1() {
        let refused = |s: &str| parse_request(s.as_bytes()).unwrap_err();
        assert!(matches!(
            refused("GET / HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            refused("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            refused("GET http://x/ HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            refused("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        // HTTP/1.0 may leave it out (RFC 9112, 3.2; nginx serves it).
        assert_eq!(
            parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().host,
            None
        );
    }

    #[test]
    fn an_absolute_form_target_names_the_host() {
        let buf = b"GET http://www.example.com/p?q HTTP/1.1\r\nHost: other\r\n\r\n";
        let head = parse_request(buf).unwrap().unwrap();
        assert_eq!(text(buf, head.host.as_ref().unwrap()), "www.example.com");
        assert_eq!(
            forwarded_request(buf, b"127.0.0.1"),
            "GET /p?q HTTP/1.1\r\nhost: www.example.com\r\nx-forwarded-for: 127.0.0.1\r\n\
x-forwarded-proto: http\r\n\r\n"
        );
        let buf = b"GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        assert!(forwarded_request(buf, b"::1").starts_with("GET /?q=1 HTTP/1.1\r\nhost: h\r\n"));
        let refused = |s: &str| parse_request(s.as_bytes()).unwrap_err();
        assert!(matches!(
            refused("GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            refused("GET p HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(
            parse_request(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn an_upstream_status_outside_100_to_599_is_malformed() {
        for bad in [
            "HTTP/1.1 600 X\r\n\r\n",
            "HTTP/1.1 099 X\r\n\r\n",
            "HTTP/1.1 000 X\r\n\r\n",
        ] {
            assert!(matches!(
                parse_response(bad.as_bytes(), b"GET"),
                Err(HeadError::Malformed(_))
            ));
        }
        assert!(parse_response(b"HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n", b"GET").is_ok());
    }

    #[test]
    fn oversized_heads_are_refused() {
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        while big.len() <= MAX_HEAD_BYTES {
            big.extend_from_slice(
                b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert_eq!(parse_request(&big), Err(HeadError::TooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            parse_request(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let framing = |s: &str, method: &str| {
            parse_response(s.as_bytes(), method.as_bytes())
                .unwrap()
                .unwrap()
                .framing
        };
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "GET"),
            Framing::Length(3)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "HEAD"),
            Framing::Empty
        );
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", "GET"), Framing::Empty);
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", "GET"),
            Framing::Empty
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET"),
            Framing::Chunked
        );
        let until_close = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", b"GET")
            .unwrap()
            .unwrap();
        assert_eq!(
            (until_close.framing, until_close.keep_alive),
            (Framing::UntilClose, false)
        );
        let closing = parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            b"GET",
        )
        .unwrap()
        .unwrap();
        assert!(!closing.keep_alive);
    }

    #[test]
    fn the_end_of_a_chunked_body_is_found_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: t\r\n\r\nNEXT REQUEST";
        let end = body.len() - "NEXT REQUEST".len();
        for split in 0..body.len() {
            let mut scanner = ChunkedScanner::default();
            let first = scanner.feed(&body[..split]).unwrap();
            assert_eq!(first, split.min(end));
            if split < end {
                assert!(!scanner.is_done());
                let second = scanner.feed(&body[split..]).unwrap();
                assert_eq!(split + second, end, "split at {split}");
            }
            assert!(scanner.is_done());
        }
        let mut plain = ChunkedScanner::default();
        assert_eq!(plain.feed(b"0\r\n\r\n"), Ok(5));
        assert!(plain.is_done());
    }

    #[test]
    fn a_broken_chunked_body_is_an_error() {
        assert_eq!(ChunkedScanner::default().feed(b"zz\r\n"), Err(ChunkError));
        assert_eq!(ChunkedScanner::default().feed(b"\r\n\r\n"), Err(ChunkError));
        assert_eq!(
            ChunkedScanner::default().feed(b"0\r\n\nGET /x HTTP/1.1\r\n\r\n"),
            Err(ChunkError)
        );
        assert_eq!(
            ChunkedScanner::default().feed(b"1;a\nb\r\nx\r\n"),
            Err(ChunkError)
        );
        assert_eq!(ChunkedScanner::default().feed(b"3\r\nabcX"), Err(ChunkError));
        assert_eq!(
            ChunkedScanner::default().feed(b"ffffffffffffffffffff\r\n"),
            Err(ChunkError)
        );
    }

    /// A request head as `write_request_head` forwards it for `client`.
    fn forwarded_request(buf: &[u8], client: &[u8]) -> String {
        let head = parse_request(buf).unwrap().unwrap();
        let mut out = Vec::new();
        write_request_head(&mut out, buf, &head, client, b"http");
        String::from_utf8(out).unwrap()
    }

    /// The answer to a GET as `write_response_head` forwards it to an HTTP/1.1 client.
    fn forwarded_response(buf: &[u8], close: bool) -> String {
        let head = parse_response(buf, b"GET").unwrap().unwrap();
        let mut out = Vec::new();
        write_response_head(&mut out, buf, &head, close, Version::Http11);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_request_head_goes_upstream_with_the_proxy_edits() {
        let buf = b"GET http://www.example.com/get?x=1 HTTP/1.0\r\nConnection: keep-alive, x-private\r\n\
X-Private: secret\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            forwarded_request(buf, b"127.0.0.1"),
            "GET /get?x=1 HTTP/1.0\r\nAccept: */*\r\nhost: www.example.com\r\n\
x-forwarded-for: 10.0.0.1, 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        );
        // Connection cannot drop the headers that frame the body; two x-forwarded-for lines
        // make one, the client's address last.
        let buf = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nConnection: content-length, host\r\n\
Host: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\nabc";
        assert_eq!(
            forwarded_request(buf, b"127.0.0.1"),
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nHost: a\r\n\
x-forwarded-for: 1.1.1.1, 6.6.6.6, 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        );
        let buf = b"POST /post HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            forwarded_request(buf, b"::1"),
            "POST /post HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nx-forwarded-for: ::1\r\n\
x-forwarded-proto: http\r\n\r\n"
        );
    }

    #[test]
    fn header_lines_go_out_in_one_form_whatever_form_they_came_in() {
        // Lines already in `name: value` CRLF form are copied as they are; odd spacing, an
        // empty value and bare LF line ends are written anew.
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-Tight:v\r\nX-Loose:   v2\t\r\nX-Empty:\r\n\
X-Bare: lf\nAccept: */*\r\nUser-Agent: t\r\n\r\n";
        assert_eq!(
            forwarded_request(buf, b"127.0.0.1"),
            "GET / HTTP/1.1\r\nHost: a\r\nX-Tight: v\r\nX-Loose: v2\r\nX-Empty: \r\nX-Bare: lf\r\n\
Accept: */*\r\nUser-Agent: t\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        );
        // A dropped line in the middle splits the copied run.
        let buf = b"HTTP/1.1 200 OK\r\nA: 1\r\nKeep-Alive: timeout=5\r\nB: 2\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            forwarded_response(buf, false),
            "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_targets_become_origin_form() {
        assert_eq!(split_absolute_form(b"/a?b"), (None, &b"/a?b"[..]));
        assert_eq!(
            split_absolute_form(b"http://h:8080"),
            (Some(&b"h:8080"[..]), &b"/"[..])
        );
        assert_eq!(split_absolute_form(b"HTTP://h/p"), (Some(&b"h"[..]), &b"/p"[..]));
        assert_eq!(
            split_absolute_form(b"http://h?q=1"),
            (Some(&b"h"[..]), &b"?q=1"[..])
        );
    }

    #[test]
    fn a_websocket_upgrade_keeps_its_headers_and_other_upgrades_are_told_apart() {
        let upgrade = |s: &str| parse_request(s.as_bytes()).unwrap().unwrap().upgrade;
        let ws = "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\
Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert_eq!(upgrade(ws), Upgrade::WebSocket);
        assert_eq!(
            forwarded_request(ws.as_bytes(), b"::1"),
            "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: k\r\n\
Sec-WebSocket-Version: 13\r\nx-forwarded-for: ::1\r\nx-forwarded-proto: http\r\nconnection: upgrade\r\n\r\n"
        );
        assert_eq!(
            upgrade("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n"),
            Upgrade::Other
        );
        // Not upgrades: h2c (its headers are dropped), an Upgrade header that Connection does
        // not list, HTTP/1.0, a request with a body.
        for plain in [
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
HTTP2-Settings: AAA\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\n",
        ] {
            assert_eq!(upgrade(plain), Upgrade::None, "{plain}");
            let out = forwarded_request(plain.as_bytes(), b"::1").to_ascii_lowercase();
            assert!(
                !out.contains("upgrade") && !out.contains("http2-settings"),
                "{out}"
            );
        }
        // The 101 goes to the client with its Upgrade header and `connection: upgrade`.
        let buf = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: x\r\n\r\n";
        let head = parse_response(buf, b"GET").unwrap().unwrap();
        let mut out = Vec::new();
        write_switching_protocols_head(&mut out, buf, &head);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\
connection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn the_response_head_goes_downstream_without_hop_by_hop_headers() {
        let buf = b"HTTP/1.1 404 Not Found\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
Content-Length: 0\r\n\r\n";
        assert_eq!(
            forwarded_response(buf, true),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nconnection: close\r\n\r\n"
        );
    }
}
