//! An open-loop load generator for the latency rounds: requests are due at a fixed rate, each
//! is timed from when it was due (not from when a connection was free to send it), so a stall
//! anywhere in the path counts for every request it delayed (coordinated omission corrected).
//!
//! Why not oha: its pacing rides tokio's timer, whose resolution is 1 ms, so requests leave in
//! bursts once per millisecond and every latency carries up to a millisecond of the generator's
//! own queueing (measured direct to the backend: p50 0.2 ms at 2,000 req/s, 0.67 ms at 10,000,
//! rising with the rate), which buries the tens of microseconds a proxy adds. wrk2 would do, but
//! no registry here has it. This one paces with io_uring's absolute timeouts (hrtimers, which
//! the kernel starts without slack) and keeps every sample, so its percentiles are exact.
//!
//! One thread, HTTP/1.1 keep-alive, no pipelining: a request waits for a free connection.
//! Responses must carry a Content-Length. A connection that fails is not replaced. Prints one
//! JSON object: percentiles in ms; requests due, answered, and failed (a dead connection, or no
//! answer within 2 s of the end: these are the slowest and are not in the percentiles, so a
//! run with errors is to be refused); and how many left more than one interval after they were
//! due (no free connection, or the generator itself was late: the wait is in their latency).
//!
//! Usage: `paced ADDR RATE SECONDS CONNECTIONS HOST`.

use std::collections::VecDeque;
use std::io::{Error, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::IntoRawFd;

use io_uring::{opcode, types};

const RECV: u64 = 0;
const SEND: u64 = 1;
const TIMER: u64 = 2;
const KIND_BITS: u64 = 2;
/// How long requests still in flight when the run ends may take before they count as errors.
const DRAIN_NS: u64 = 2_000_000_000;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC is always there.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Connection {
    fd: i32,
    alive: bool,
    /// When the request in flight on it was due.
    due: Option<u64>,
    /// Where the kernel receives into; its address must not move while a receive is pending.
    rx: Box<[u8; 4096]>,
    input: Vec<u8>,
    sent: usize,
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        Error::new(
            ErrorKind::InvalidInput,
            "usage: paced ADDR RATE SECONDS CONNECTIONS HOST",
        )
    };
    let [addr, rate, seconds, connections, host] = args.as_slice() else {
        return Err(usage());
    };
    let addr: SocketAddr = addr.parse().map_err(|_| usage())?;
    let rate: u64 = rate
        .parse()
        .ok()
        .filter(|r| (1..=1_000_000).contains(r))
        .ok_or_else(usage)?;
    let seconds: u64 = seconds.parse().map_err(|_| usage())?;
    let connections: usize = connections.parse().map_err(|_| usage())?;
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();

    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        conns.push(Connection {
            fd: stream.into_raw_fd(),
            alive: true,
            due: None,
            rx: Box::new([0; 4096]),
            input: Vec::new(),
            sent: 0,
        });
    }
    let mut ring = floor::single_thread_ring(1024)?;
    let mut queued = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        queued.push(recv(i, c));
    }

    let interval_ns = 1_000_000_000 / rate;
    let start = monotonic_ns();
    let end = start + seconds * 1_000_000_000;
    let mut next_due = start;
    let mut due_count = 0u64;
    let mut pending: VecDeque<u64> = VecDeque::new();
    let mut idle: Vec<usize> = (0..connections).collect();
    let mut latencies: Vec<u64> = Vec::with_capacity((rate * seconds) as usize + 1);
    let (mut errors, mut sent_late) = (0u64, 0u64);
    // The one armed timeout; boxed so that its address holds while the kernel reads it.
    let mut timer = Box::new(types::Timespec::new());
    let mut timer_armed = false;
    let mut done: Vec<(u64, i32)> = Vec::new();

    loop {
        let now = monotonic_ns();
        while next_due <= now && next_due < end {
            pending.push_back(next_due);
            due_count += 1;
            next_due += interval_ns;
        }
        while let Some(&due) = pending.front() {
            let Some(i) = idle.pop() else {
                break;
            };
            if !conns[i].alive {
                continue;
            }
            pending.pop_front();
            if now - due > interval_ns {
                sent_late += 1;
            }
            let c = &mut conns[i];
            c.due = Some(due);
            c.sent = 0;
            queued.push(send(i, c, &request));
        }
        if now >= end {
            let in_flight = conns.iter().filter(|c| c.alive && c.due.is_some()).count();
            if pending.is_empty() && in_flight == 0 || now >= end + DRAIN_NS {
                errors += (pending.len() + in_flight) as u64;
                break;
            }
        }
        if !timer_armed {
            let wake = if next_due < end { next_due } else { end + DRAIN_NS };
            *timer = types::Timespec::new()
                .sec(wake / 1_000_000_000)
                .nsec((wake % 1_000_000_000) as u32);
            queued.push(
                opcode::Timeout::new(&*timer)
                    .flags(types::TimeoutFlags::ABS)
                    .build()
                    .user_data(TIMER),
            );
            timer_armed = true;
        }
        for entry in queued.drain(..) {
            // SAFETY: receive buffers are boxed per connection and connections are never
            // dropped; the request bytes and the timer outlive the loop.
            while unsafe { ring.submission().push(&entry) }.is_err() {
                ring.submit()?;
            }
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        let now = monotonic_ns();
        for (data, result) in done.drain(..) {
            let (i, kind) = ((data >> KIND_BITS) as usize, data & ((1 << KIND_BITS) - 1));
            if kind == TIMER {
                timer_armed = false;
                continue;
            }
            let c = &mut conns[i];
            if !c.alive {
                continue;
            }
            if kind == SEND {
                if result < 0 {
                    c.alive = false;
                } else {
                    c.sent += result as usize;
                    if c.sent < request.len() {
                        queued.push(send(i, c, &request));
                    }
                }
                continue;
            }
            if result <= 0 {
                c.alive = false;
                continue;
            }
            c.input.extend_from_slice(&c.rx[..result as usize]);
            match floor::complete_response_len(&c.input) {
                Ok(None) => {}
                Ok(Some(len)) => {
                    c.input.drain(..len);
                    if let Some(due) = c.due.take() {
                        latencies.push(now - due);
                        idle.push(i);
                    }
                }
                Err(_) => {
                    c.alive = false;
                    continue;
                }
            }
            queued.push(recv(i, c));
        }
        for c in conns.iter_mut().filter(|c| !c.alive && c.fd >= 0) {
            // A dead connection's request is an error; the connection is not replaced.
            errors += u64::from(c.due.take().is_some());
            // Shut down first: a receive still pending in the kernel holds the socket open past
            // close. No descriptor is opened in the loop, so the closed number is not reused.
            // SAFETY: our descriptor, closed once (fd set to -1).
            unsafe {
                libc::shutdown(c.fd, libc::SHUT_RDWR);
                libc::close(c.fd);
            }
            c.fd = -1;
        }
    }

    latencies.sort_unstable();
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1] as f64 / 1e6
    };
    println!(
        "{{\"p50\": {:.6}, \"p99\": {:.6}, \"p99.9\": {:.6}, \"max\": {:.6}, \"due\": {}, \"requests\": {}, \"errors\": {}, \"sent_late\": {}}}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0),
        due_count,
        latencies.len(),
        errors,
        sent_late
    );
    Ok(())
}

fn recv(i: usize, c: &mut Connection) -> io_uring::squeue::Entry {
    opcode::Recv::new(types::Fd(c.fd), c.rx.as_mut_ptr(), c.rx.len() as u32)
        .build()
        .user_data((i as u64) << KIND_BITS | RECV)
}

fn send(i: usize, c: &Connection, request: &[u8]) -> io_uring::squeue::Entry {
    let rest = &request[c.sent..];
    opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32)
        .build()
        .user_data((i as u64) << KIND_BITS | SEND)
}
