//! Entry points for the fuzz targets in `fuzz/` (libFuzzer through `cargo fuzz`). Not an API:
//! each function runs one input through the HTTP/1.1 codec as the listener would, and panics
//! when a property the proxy relies on breaks.

use crate::h1::{self, ChunkedScanner, Framing, HeadError};

/// A request as a client sends it: the head is parsed, written as it goes upstream, and the
/// bytes after it are scanned as the body. What goes upstream must read back as a request with
/// the same method, target path and body framing, or a client could make the next hop see
/// another request than the one the proxy routed (request smuggling).
pub fn request(data: &[u8]) {
    let head = match h1::parse_request(data) {
        Ok(Some(head)) => head,
        Ok(None) | Err(_) => return,
    };
    assert!(head.len <= data.len(), "a head longer than its input");
    for range in [&head.method, &head.target]
        .into_iter()
        .chain(head.headers.iter().flat_map(|h| [&h.name, &h.value]))
    {
        assert!(range.end <= head.len, "a range outside the head");
    }

    let mut upstream = Vec::new();
    h1::write_request_head(&mut upstream, data, &head, b"192.0.2.1", b"http");
    match h1::parse_request(&upstream) {
        Ok(Some(again)) => {
            assert_eq!(
                again.len,
                upstream.len(),
                "the forwarded head has bytes after its end"
            );
            assert_eq!(
                again.framing, head.framing,
                "the forwarded head frames its body otherwise"
            );
            assert_eq!(
                &upstream[again.method.clone()],
                &data[head.method.clone()],
                "the forwarded head has another method"
            );
        }
        // The proxy's own lines (x-forwarded-*, host) can take a head over the line limit; the
        // upstream then refuses it whole, which is safe.
        Err(HeadError::TooLarge) => {}
        other => panic!(
            "the forwarded head does not parse ({other:?}):\n{}",
            String::from_utf8_lossy(&upstream)
        ),
    }

    if head.framing == Framing::Chunked {
        // Fed in two pieces, the scanner must find the same end as in one.
        let body = &data[head.len..];
        let whole = ChunkedScanner::default().feed(body);
        let split = body.len() / 2;
        let mut scanner = ChunkedScanner::default();
        let pieces = scanner.feed(&body[..split]).and_then(|first| {
            if scanner.is_done() {
                Ok(first)
            } else {
                scanner.feed(&body[split..]).map(|second| first + second)
            }
        });
        assert_eq!(whole.is_ok(), pieces.is_ok(), "one chunked body read two ways");
        if let (Ok(a), Ok(b)) = (whole, pieces) {
            assert_eq!(a, b, "one chunked body ends at two places");
        }
    }
}

/// An upstream's response to GET and to HEAD: parsed, and written as it goes to the client.
pub fn response(data: &[u8]) {
    for method in [b"GET".as_slice(), b"HEAD"] {
        let Ok(Some(head)) = h1::parse_response(data, method) else {
            continue;
        };
        assert!(head.len <= data.len(), "a head longer than its input");
        let mut downstream = Vec::new();
        h1::write_response_head(&mut downstream, data, &head, false, h1::Version::Http11);
        match h1::parse_response(&downstream, method) {
            Ok(Some(again)) => {
                assert_eq!(
                    again.status, head.status,
                    "the forwarded response has another status"
                );
                assert_eq!(
                    again.len,
                    downstream.len(),
                    "the forwarded head has bytes after its end"
                );
            }
            Err(HeadError::TooLarge) => {}
            other => panic!(
                "the forwarded response head does not parse ({other:?}):\n{}",
                String::from_utf8_lossy(&downstream)
            ),
        }
    }
}
