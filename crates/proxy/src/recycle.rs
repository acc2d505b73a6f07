//! Per-thread free lists for the hot path's buffers and per-request state.
//!
//! A connection gives its buffers back whenever it goes idle (so that 10,000 idle clients cost
//! no buffers), which on a busy connection is after every request. glibc serves 4 KiB blocks
//! from its bins, not its per-thread cache, and merging freed blocks showed in profiles
//! (malloc, free and their consolidation: ~0.3 µs per request). A short free list per thread
//! hands the same blocks back in a few instructions. The lists do not shrink, but they are
//! capped at 128 of each kind per thread: buffers of 8 KiB or less (1 MiB at worst), header
//! lists, and request-state blocks (~1.4 KB each, ~180 KB); anything past the cap, or larger,
//! goes back to the allocator. (No crate: an
//! object pool crate would bring more than these few lines, and the cap and size rules are ours.)

// Unsafe code here, and only in `Recycled` (the one place in the data plane): a future placed in
// a reused heap block, which is what `Box::pin` does with a fresh one.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

use crate::h1::HeaderLine;

/// Bytes read per system call; buffers start at this size and grow only for large heads.
pub(crate) const READ_CHUNK: usize = 4096;

/// Appends what one read gives; Ok(0) at end of stream. Cancel-safe (it is raced against other
/// reads and writes): bytes land in the spare capacity and count only once read.
pub(crate) async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    if buf.capacity() == 0 {
        *buf = bytes();
    } else {
        buf.reserve(READ_CHUNK);
    }
    tokio::io::AsyncReadExt::read_buf(stream, buf).await
}

/// Buffers kept per thread: enough for the connections one thread serves back to back.
const KEPT: usize = 128;
/// A buffer that grew past this (a large head, a long body read) goes back to the allocator.
const LARGEST_KEPT: usize = 2 * READ_CHUNK;

thread_local! {
    static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static LINES: RefCell<Vec<Vec<HeaderLine>>> = const { RefCell::new(Vec::new()) };
    static BLOCKS: RefCell<Blocks> = const { RefCell::new(Blocks(Vec::new())) };
}

/// Free blocks of `Recycled` futures, with the layout each was allocated with; freed with
/// their thread.
struct Blocks(Vec<(Layout, NonNull<u8>)>);

impl Drop for Blocks {
    fn drop(&mut self) {
        for (layout, block) in self.0.drain(..) {
            // SAFETY: allocated by `Recycled::new` with this layout, and no longer in use.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
        }
    }
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

/// A future in a heap block from a per-thread free list, so that a connection's per-request
/// state (~3.4 KB) lives outside its task while it idles: an idle client's task keeps ~600
/// bytes instead of ~2 KB. `Box::pin` would do the same with a malloc and free per request
/// (blocks of this size come from glibc's shared bins; boxing was measured worse for p99
/// here); this hands the same blocks out again. (No crate: tokio-util's `ReusableBoxFuture`
/// keeps its block for the connection's life, which is the memory this is meant to free.)
pub(crate) struct Recycled<F> {
    future: NonNull<F>,
}

// SAFETY: `Recycled` owns its `F` as a `Box` would.
unsafe impl<F: Send> Send for Recycled<F> {}

impl<F: Future> Recycled<F> {
    /// The future `make` builds, in a block. `make` runs once the block is had, so the future
    /// is built in it: a future made first and then moved in was copied whole (its full size,
    /// ~3.4 KB, not just the arguments it starts with), twice per request (perf: memmove 1.1%
    /// of the connection task's samples).
    pub(crate) fn new(make: impl FnOnce() -> F) -> Recycled<F> {
        let layout = Layout::new::<F>();
        let block = if layout.size() == 0 {
            NonNull::<F>::dangling().cast()
        } else {
            let kept = BLOCKS
                .try_with(|kept| {
                    let kept = &mut kept.borrow_mut().0;
                    match kept.last() {
                        Some((l, _)) if *l == layout => kept.pop().map(|(_, block)| block),
                        _ => None,
                    }
                })
                .ok()
                .flatten();
            // SAFETY: the layout's size is not zero.
            kept.or_else(|| NonNull::new(unsafe { std::alloc::alloc(layout) }))
                .unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
        };
        let slot = block.cast::<F>();
        // SAFETY: the block is unused, and sized and aligned for `F`.
        unsafe { slot.as_ptr().write(make()) };
        Recycled { future: slot }
    }
}

impl<F: Future> Future for Recycled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future stays in its block, unmoved, until `drop`.
        unsafe { Pin::new_unchecked(&mut *self.future.as_ptr()) }.poll(cx)
    }
}

impl<F> Drop for Recycled<F> {
    fn drop(&mut self) {
        // SAFETY: the future was written in `new` and is dropped only here.
        unsafe { std::ptr::drop_in_place(self.future.as_ptr()) };
        let layout = Layout::new::<F>();
        if layout.size() == 0 {
            return;
        }
        let block = self.future.cast::<u8>();
        let kept = BLOCKS
            .try_with(|kept| {
                let kept = &mut kept.borrow_mut().0;
                let room = kept.len() < KEPT;
                if room {
                    kept.push((layout, block));
                }
                room
            })
            .unwrap_or(false);
        if !kept {
            // SAFETY: allocated in `new` with this layout (or taken from the list, which holds
            // only such blocks).
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
        }
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

    #[test]
    fn a_recycled_future_runs_drops_its_state_and_its_block_serves_the_next() {
        let state = std::rc::Rc::new(());
        let holder = state.clone();
        let mut first = Recycled::new(|| async move {
            let _held = holder;
            7
        });
        let at = first.future.as_ptr() as usize;
        let waker = std::task::Waker::noop();
        assert_eq!(
            Pin::new(&mut first).poll(&mut Context::from_waker(waker)),
            Poll::Ready(7)
        );
        drop(first);
        assert_eq!(
            std::rc::Rc::strong_count(&state),
            1,
            "the future's state was dropped"
        );

        let holder = state.clone();
        let second = Recycled::new(|| async move {
            let _held = holder;
            8
        });
        assert_eq!(
            second.future.as_ptr() as usize,
            at,
            "the same block is handed out again"
        );
        drop(second);
        assert_eq!(
            std::rc::Rc::strong_count(&state),
            1,
            "dropped unpolled, the state goes too"
        );
    }
}
