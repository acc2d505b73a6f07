//! The io_uring floor: the same minimal proxy as `floor` (same HTTP work, from the crate's
//! library), driven by io_uring instead of tokio's epoll loop, to show what the kernel's share
//! of a request costs on this machine when system calls are batched: one `io_uring_enter` per
//! loop turn submits every send and re-armed receive and collects every completion, and
//! multishot receives into a ring of provided buffers replace a `recvfrom` per message.
//!
//! A reference row in BENCHMARKS.md, not a proxy to use: one thread, requests without a body
//! and not pipelined, responses with a Content-Length, one pool of upstream connections, and
//! connection slots that are never reused (a bench run opens a few hundred connections; a
//! closed one keeps its send buffer, which a send still in flight may be reading).
//!
//! Usage: `floor-uring LISTEN_ADDR BACKEND_ADDR`.

use std::io::{Error, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types};

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
        // The kernel writes into it: a pointer from a mutable borrow.
        entry.set_addr(self.memory[id as usize * BUFFER_SIZE..].as_mut_ptr() as u64);
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
    closed: bool,
    upstream: bool,
    /// For an upstream connection, the client it answers while a request is in flight.
    client: Option<usize>,
    /// Bytes received and not used yet.
    input: Vec<u8>,
    /// What is being sent, kept alive until the kernel says it is sent.
    output: Vec<u8>,
    sent: usize,
}

impl Connection {
    fn new(fd: i32, upstream: bool) -> Connection {
        Connection {
            fd,
            closed: false,
            upstream,
            client: None,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
        }
    }
}

struct Proxy {
    backend: SocketAddr,
    connections: Vec<Connection>,
    pool: Vec<usize>,
    /// Entries for the next `io_uring_enter`.
    queued: Vec<squeue::Entry>,
    /// The previous output of a connection, reused for the next message.
    spare: Vec<u8>,
}

impl Proxy {
    fn receive(&mut self, index: usize) {
        let fd = self.connections[index].fd;
        self.queued.push(
            opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
                .build()
                .user_data((index as u64) << 1),
        );
    }

    /// Sends `spare` on connection `index` (its old output becomes the next `spare`).
    fn send_spare(&mut self, index: usize) {
        let c = &mut self.connections[index];
        std::mem::swap(&mut c.output, &mut self.spare);
        c.sent = 0;
        self.send_rest(index);
    }

    fn send_rest(&mut self, index: usize) {
        let c = &self.connections[index];
        let rest = &c.output[c.sent..];
        self.queued.push(
            opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32)
                .build()
                .user_data((index as u64) << 1 | SEND),
        );
    }

    /// Closes a connection, and the client an upstream connection was answering. Entries not
    /// yet submitted for it are dropped (its descriptor number may be reused at once); ones
    /// in flight hold the file, and its buffers stay where they are.
    fn close(&mut self, index: usize) {
        let c = &mut self.connections[index];
        if c.closed {
            return;
        }
        c.closed = true;
        let fd = c.fd;
        let client = c.client.take();
        self.queued
            .retain(|e| (e.get_user_data() >> 1) as usize != index || e.get_user_data() == ACCEPT);
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(fd) };
        if let Some(client) = client {
            self.close(client);
        }
    }

    fn upstream(&mut self) -> std::io::Result<usize> {
        while let Some(u) = self.pool.pop() {
            if !self.connections[u].closed {
                return Ok(u);
            }
        }
        // Blocking, but only while the pool fills (the bench warms it up first).
        let stream = TcpStream::connect(self.backend)?;
        stream.set_nodelay(true)?;
        self.connections.push(Connection::new(stream.into_raw_fd(), true));
        let index = self.connections.len() - 1;
        self.receive(index);
        Ok(index)
    }

    /// The bytes of a receive on connection `index`: a request goes to an upstream connection,
    /// a response to its client.
    fn received(&mut self, index: usize, bytes: &[u8]) -> std::io::Result<()> {
        let c = &mut self.connections[index];
        c.input.extend_from_slice(bytes);
        if !c.upstream {
            let Some(head_len) = floor::forward_request_head(&c.input, &mut self.spare)? else {
                return Ok(());
            };
            c.input.drain(..head_len);
            let upstream = self.upstream()?;
            self.connections[upstream].client = Some(index);
            self.send_spare(upstream);
        } else {
            let Some(len) = floor::complete_response_len(&c.input)? else {
                return Ok(());
            };
            self.spare.clear();
            self.spare.extend_from_slice(&c.input[..len]);
            c.input.drain(..len);
            let client = c.client.take();
            self.pool.push(index);
            if let Some(client) = client.filter(|&d| !self.connections[d].closed) {
                self.send_spare(client);
            }
        }
        Ok(())
    }
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
    let mut ring = floor::single_thread_ring(4096)?;
    let mut buffers = ProvidedBuffers::new();
    // SAFETY: the ring's memory is never freed.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(buffers.entries as u64, BUFFERS, BUFFER_GROUP, 0)?
    };

    let accept = || {
        opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .build()
            .user_data(ACCEPT)
    };
    let mut proxy = Proxy {
        backend,
        connections: Vec::new(),
        pool: Vec::new(),
        queued: vec![accept()],
        spare: Vec::new(),
    };
    let mut completions = Vec::new();
    let (submitter, mut submission, mut completion) = ring.split();
    loop {
        for entry in proxy.queued.drain(..) {
            // SAFETY: every buffer an entry points at lives in `proxy.connections` or
            // `buffers` until its completion arrives: connections are never removed, and a
            // connection's output is replaced only after its previous send completed (a client
            // sends its next request, and an upstream gets one, only then).
            while unsafe { submission.push(&entry) }.is_err() {
                submission.sync();
                submitter.submit()?;
                submission.sync();
            }
        }
        submission.sync();
        submitter.submit_and_wait(1)?;
        completion.sync();
        completions.extend(
            completion
                .by_ref()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for (data, result, flags) in completions.drain(..) {
            if data == ACCEPT {
                if result >= 0 {
                    // SAFETY: the accepted descriptor is ours.
                    let stream = unsafe { TcpStream::from_raw_fd(result) };
                    let _ = stream.set_nodelay(true);
                    proxy
                        .connections
                        .push(Connection::new(stream.into_raw_fd(), false));
                    proxy.receive(proxy.connections.len() - 1);
                }
                if !cqueue::more(flags) {
                    proxy.queued.push(accept());
                }
                continue;
            }
            let index = (data >> 1) as usize;
            let c = &mut proxy.connections[index];
            if data & SEND == SEND {
                if result < 0 {
                    proxy.close(index);
                } else if !c.closed {
                    c.sent += result as usize;
                    if c.sent < c.output.len() {
                        proxy.send_rest(index);
                    }
                }
                continue;
            }
            let buffer = cqueue::buffer_select(flags);
            if c.closed {
                // a last completion after the close
            } else if result == -libc::ENOBUFS {
                proxy.receive(index);
            } else if let (Some(id), true) = (buffer, result > 0) {
                if !cqueue::more(flags) {
                    proxy.receive(index);
                }
                if let Err(e) = proxy.received(index, buffers.bytes(id, result as usize)) {
                    eprintln!("connection {index}: {e}");
                    proxy.close(index);
                }
            } else {
                proxy.close(index);
            }
            if let Some(id) = buffer {
                buffers.give_back(id);
            }
        }
    }
}
