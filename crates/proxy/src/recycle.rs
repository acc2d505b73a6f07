//! Per-thread free lists for the hot path's buffers.
//!
//! A connection gives its buffers back whenever it goes idle (so that 10,000 idle clients cost
//! no buffers), which on a busy connection is after every request. glibc serves 4 KiB blocks
//! from its bins, not its per-thread cache, and merging freed blocks showed in profiles
//! (malloc, free and their consolidation: ~0.3 µs per request). A short free list per thread
//! hands the same blocks back in a few instructions. It is capped, so memory returns to the
//! allocator once load drops. (No crate: an object pool crate would bring more than these few
//! lines, and the cap and size rules are ours.)

use std::cell::RefCell;

use crate::h1::HeaderLine;

/// Bytes read per system call; buffers start at this size and grow only for large heads.
pub(crate) const READ_CHUNK: usize = 4096;

/// Buffers kept per thread: enough for the connections one thread serves back to back.
const KEPT: usize = 256;
/// A buffer that grew past this (a large head, a long body read) goes back to the allocator.
const LARGEST_KEPT: usize = 4 * READ_CHUNK;

thread_local! {
    static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static LINES: RefCell<Vec<Vec<HeaderLine>>> = const { RefCell::new(Vec::new()) };
}

/// An empty byte buffer with room for at least one read.
pub(crate) fn bytes() -> Vec<u8> {
    BYTES
        .with(|kept| kept.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
}

/// Gives a byte buffer back (its contents are dropped).
pub(crate) fn give_bytes(mut buf: Vec<u8>) {
    if !(READ_CHUNK..=LARGEST_KEPT).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    BYTES.with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < KEPT {
            kept.push(buf);
        }
    });
}

/// A byte buffer from the free list that goes back to it when dropped: for the heads the proxy
/// writes out, which live for one exchange whatever way it ends.
pub(crate) struct Buffer(Vec<u8>);

impl Buffer {
    pub(crate) fn new() -> Self {
        Buffer(bytes())
    }
}

impl std::ops::Deref for Buffer {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        give_bytes(std::mem::take(&mut self.0));
    }
}

/// An empty list for a head's header lines.
pub(crate) fn lines() -> Vec<HeaderLine> {
    LINES.with(|kept| kept.borrow_mut().pop()).unwrap_or_default()
}

/// Gives a header-line list back.
pub(crate) fn give_lines(mut lines: Vec<HeaderLine>) {
    if lines.capacity() == 0 || lines.capacity() > 2 * crate::h1::MAX_HEADERS {
        return;
    }
    lines.clear();
    LINES.with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < KEPT {
            kept.push(lines);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_comes_back_empty_and_oversized_ones_do_not() {
        let mut buf = bytes();
        assert!(buf.capacity() >= READ_CHUNK);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let at = buf.as_ptr();
        give_bytes(buf);
        let again = bytes();
        assert_eq!(again.as_ptr(), at, "the same block is handed out again");
        assert!(again.is_empty());

        give_bytes(Vec::with_capacity(LARGEST_KEPT * 2));
        give_bytes(again);
        let next = bytes();
        assert!(next.capacity() <= LARGEST_KEPT);
    }
}
