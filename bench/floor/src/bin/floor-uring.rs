//! The io_uring floor: the same minimal proxy as `floor` (same HTTP work, from the crate's
//! library), driven by io_uring instead of tokio's epoll loop, to show what the kernel's share
//! of a request costs on this machine when system calls are batched: one `io_uring_enter` per
//! loop turn submits every send and re-armed receive and collects every completion, and
//! multishot receives into a ring of provided buffers replace a `recvfrom` per message.
//!
//! A reference row in BENCHMARKS.md, not a proxy to use: one thread, requests without a body,
//! responses with a Content-Length, one pool of upstream connections, and connection slots that
//! are never reused (a bench run opens a few hundred connections).
//!
//! Usage: `floor-uring LISTEN_ADDR BACKEND_ADDR`.

use std::io::{Error, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

const BUFFER_SIZE: usize = 4096;
const BUFFERS: u16 = 1024;
const BUFFER_GROUP: u16 = 0;
const ACCEPT: u64 = u64::MAX;
const SEND: u64 = 1;

/// Buffers the kernel picks from for multishot receives, and hands back by id in each
/// completion; given back to the ring once their bytes are copied out.
struct ProvidedBuffers {
    entries: *mut types::BufRingEntry,
    memory: Vec<u8>,
    tail: u16,
}

impl ProvidedBuffers {
    fn new() -> ProvidedBuffers {
        let layout = std::alloc::Layout::from_size_align(BUFFERS as usize * 16, 4096).unwrap();
        // SAFETY: a non-zero size; the ring lives as long as the process (never freed).
        let entries = unsafe { std::alloc::alloc_zeroed(layout) } as *mut types::BufRingEntry;
        assert!(!entries.is_null(), "out of memory");
        let mut ring = ProvidedBuffers {
            entries,
            memory: vec![0; BUFFER_SIZE * BUFFERS as usize],
            tail: 0,
        };
        for id in 0..BUFFERS {
            ring.give_back(id);
        }
        ring
    }

    fn give_back(&mut self, id: u16) {
        // SAFETY: the index is masked into the ring; the kernel reads entries only up to the
        // published tail, which moves after the entry is written.
        let entry = unsafe { &mut *self.entries.add((self.tail & (BUFFERS - 1)) as usize) };
        entry.set_addr(self.memory[id as usize * BUFFER_SIZE..].as_ptr() as u64);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field of the ring's first entry, shared with the kernel.
        let tail = unsafe { &*(types::BufRingEntry::tail(self.entries) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    fn bytes(&self, id: u16, len: usize) -> &[u8] {
        &self.memory[id as usize * BUFFER_SIZE..][..len]
    }
}

struct Connection {
    fd: i32,
    upstream: bool,
    /// For an upstream connection, the client it answers.
    client: usize,
    /// Bytes received and not used yet.
    input: Vec<u8>,
    /// What is being sent, kept alive until the kernel says it is sent.
    output: Vec<u8>,
    sent: usize,
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || {
        Error::new(
            ErrorKind::InvalidInput,
            "usage: floor-uring LISTEN_ADDR BACKEND_ADDR",
        )
    };
    let listen: SocketAddr = args.next().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let backend: SocketAddr = args.next().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let listener = TcpListener::bind(listen)?;
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(4096)?;
    let mut buffers = ProvidedBuffers::new();
    // SAFETY: the ring's memory is never freed.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(buffers.entries as u64, BUFFERS, BUFFER_GROUP, 0)?
    };

    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut pool: Vec<usize> = Vec::new();
    let mut queued: Vec<squeue::Entry> = vec![
        opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .build()
            .user_data(ACCEPT),
    ];
    let receive = |fd: i32, index: usize| {
        opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
            .build()
            .user_data((index as u64) << 1)
    };
    let send = |c: &Connection, index: usize| {
        let rest = &c.output[c.sent..];
        opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32)
            .build()
            .user_data((index as u64) << 1 | SEND)
    };
    let mut completions = Vec::new();
    let mut forwarded = Vec::with_capacity(1024);
    loop {
        {
            let mut submission = ring.submission();
            for entry in queued.drain(..) {
                // SAFETY: every buffer an entry points at lives in `connections` or `buffers`
                // until its completion arrives (connections are never removed from the Vec).
                unsafe {
                    submission
                        .push(&entry)
                        .map_err(|_| Error::other("submission queue full"))?
                };
            }
        }
        ring.submit_and_wait(1)?;
        completions.extend(ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
        for (data, result, flags) in completions.drain(..) {
            if data == ACCEPT {
                if result >= 0 {
                    // SAFETY: the accepted descriptor is ours.
                    let stream = unsafe { TcpStream::from_raw_fd(result) };
                    stream.set_nodelay(true)?;
                    let fd = stream.into_raw_fd();
                    connections.push(Some(Connection {
                        fd,
                        upstream: false,
                        client: 0,
                        input: Vec::new(),
                        output: Vec::new(),
                        sent: 0,
                    }));
                    queued.push(receive(fd, connections.len() - 1));
                }
                if !cqueue::more(flags) {
                    queued.push(
                        opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
                            .build()
                            .user_data(ACCEPT),
                    );
                }
                continue;
            }
            let index = (data >> 1) as usize;
            let Some(c) = connections[index].as_mut() else {
                continue;
            };
            if data & SEND == SEND {
                if result > 0 {
                    c.sent += result as usize;
                    if c.sent < c.output.len() {
                        queued.push(send(c, index));
                    }
                }
                continue;
            }
            if result == -libc::ENOBUFS {
                queued.push(receive(c.fd, index));
                continue;
            }
            if result <= 0 {
                // SAFETY: the descriptor is ours; its slot is never used again.
                unsafe { libc::close(c.fd) };
                connections[index] = None;
                continue;
            }
            if !cqueue::more(flags) {
                queued.push(receive(c.fd, index));
            }
            let id = cqueue::buffer_select(flags).ok_or_else(|| Error::other("receive without a buffer"))?;
            c.input.extend_from_slice(buffers.bytes(id, result as usize));
            buffers.give_back(id);
            if !c.upstream {
                let Some(head_len) = floor::forward_request_head(&c.input, &mut forwarded)? else {
                    continue;
                };
                c.input.drain(..head_len);
                let upstream = loop {
                    match pool.pop() {
                        Some(u) if connections[u].is_some() => break u,
                        Some(_) => continue, // closed by the backend while pooled
                        None => {
                            let stream = TcpStream::connect(backend)?;
                            stream.set_nodelay(true)?;
                            let fd = stream.into_raw_fd();
                            connections.push(Some(Connection {
                                fd,
                                upstream: true,
                                client: 0,
                                input: Vec::new(),
                                output: Vec::new(),
                                sent: 0,
                            }));
                            queued.push(receive(fd, connections.len() - 1));
                            break connections.len() - 1;
                        }
                    }
                };
                let Some(u) = connections[upstream].as_mut() else {
                    continue;
                };
                u.client = index;
                std::mem::swap(&mut u.output, &mut forwarded);
                u.sent = 0;
                queued.push(send(u, upstream));
            } else {
                let Some(len) = floor::complete_response_len(&c.input)? else {
                    continue;
                };
                let client = c.client;
                let response: Vec<u8> = c.input.drain(..len).collect();
                pool.push(index);
                if let Some(d) = connections[client].as_mut() {
                    d.output = response;
                    d.sent = 0;
                    queued.push(send(d, client));
                }
            }
        }
    }
}
