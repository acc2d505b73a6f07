//! The HTTP work both floors do, so that they differ only in how they reach the kernel: the
//! request head forwarded with the edits a proxy makes (hop-by-hop `connection` dropped,
//! x-forwarded-for and x-forwarded-proto added), the response's end found by Content-Length.
//! Also the io_uring setup that floor-uring and the `paced` load generator share.

use std::io::{Error, ErrorKind};

fn invalid(_: httparse::Error) -> Error {
    Error::new(ErrorKind::InvalidData, "malformed HTTP")
}

/// A ring for one thread that alone submits and reaps: completions' task work runs when that
/// thread waits for them, not by interrupting it whenever they arrive.
pub fn single_thread_ring(entries: u32) -> std::io::Result<io_uring::IoUring> {
    io_uring::IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(entries)
}

/// If `buffer` starts with a whole request head, writes it as forwarded into `request` and
/// returns the head's length in `buffer`.
pub fn forward_request_head(buffer: &[u8], request: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(n) = parsed.parse(buffer).map_err(invalid)? else {
        return Ok(None);
    };
    request.clear();
    request.extend_from_slice(parsed.method.unwrap_or("GET").as_bytes());
    request.push(b' ');
    request.extend_from_slice(parsed.path.unwrap_or("/").as_bytes());
    request.extend_from_slice(b" HTTP/1.1\r\n");
    for h in parsed
        .headers
        .iter()
        .filter(|h| !h.name.eq_ignore_ascii_case("connection"))
    {
        request.extend_from_slice(h.name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(h.value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n");
    Ok(Some(n))
}

/// The length of the whole response at the start of `buffer` (head and Content-Length body),
/// once it is all there.
pub fn complete_response_len(buffer: &[u8]) -> std::io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = parsed.parse(buffer).map_err(invalid)? else {
        return Ok(None);
    };
    let body_len = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0);
    Ok((buffer.len() >= n + body_len).then_some(n + body_len))
}
