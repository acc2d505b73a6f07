//! Per-thread free lists for the hot path's buffers.
//!
//! A connection gives its buffers back whenever it goes idle (so that 10,000 idle clients cost
//! no buffers), which on a busy connection is after every request. glibc serves 4 KiB blocks
//! from its bins, not its per-thread cache, and merging freed blocks showed in profiles
//! (malloc, free and their consolidation: ~0.3 µs per request). A short free list per thread
//! hands the same blocks back in a few instructions. The lists do not shrink, but they are
//! capped: at most 128 buffers of 8 KiB or less and 128 header lists per thread (about 1 MiB
//! each at worst); anything past the cap, or larger, goes back to the allocator. (No crate: an
//! object pool crate would bring more than these few lines, and the cap and size rules are ours.)

use std::cell::RefCell;

use crate::h1::HeaderLine;

/// Bytes read per system call; buffers start at this size and grow only for large heads.
pub(crate) const READ_CHUNK: usize = 4096;

/// Buffers kept per thread: enough for the connections one thread serves back to back.
const KEPT: usize = 128;
/// A buffer that grew past this (a large head, a long body read) goes back to the allocator.
const LARGEST_KEPT: usize = 2 * READ_CHUNK;

thread_local! {
    static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static LINES: RefCell<Vec<Vec<HeaderLine>>> = const { RefCell::new(Vec::new()) };
}

type FreeList<T> = std::thread::LocalKey<RefCell<Vec<Vec<T>>>>;

/// A kept list from `list`, if it has one (none while the thread ends).
fn take<T>(list: &'static FreeList<T>) -> Option<Vec<T>> {
    list.try_with(|kept| kept.borrow_mut().pop()).ok().flatten()
}

/// Keeps `v`, emptied, unless the list is full (or the thread is ending): then it is freed.
fn keep<T>(list: &'static FreeList<T>, mut v: Vec<T>) {
    v.clear();
    let _ = list.try_with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < KEPT {
            kept.push(v);
        }
    });
}

/// An empty byte buffer with room for at least one read.
pub(crate) fn bytes() -> Vec<u8> {
    take(&BYTES).unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
}

/// Gives a byte buffer back (its contents are dropped).
pub(crate) fn give_bytes(buf: Vec<u8>) {
    if (READ_CHUNK..=LARGEST_KEPT).contains(&buf.capacity()) {
        keep(&BYTES, buf);
    }
}

/// An empty list for a head's header lines.
pub(crate) fn lines() -> Vec<HeaderLine> {
    take(&LINES).unwrap_or_default()
}

/// Gives a header-line list back.
pub(crate) fn give_lines(lines: Vec<HeaderLine>) {
    if (1..=2 * crate::h1::MAX_HEADERS).contains(&lines.capacity()) {
        keep(&LINES, lines);
    }
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
