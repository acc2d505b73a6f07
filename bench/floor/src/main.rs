//! The floor: a minimal HTTP/1.1 proxy on tokio with no HTTP library, to measure how much of
//! kgw's cost per request is its HTTP machinery (hyper on both sides) rather than tokio and the
//! kernel. It handles only what the benchmark sends (requests without a body, responses with a
//! Content-Length), keeps one pool of upstream connections, and routes nothing. Not a proxy to
//! use: a reference row in BENCHMARKS.md.
//!
//! Usage: `floor LISTEN_ADDR BACKEND_ADDR`.

use std::cell::RefCell;
use std::io::{Error, ErrorKind};
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Upstream {
    stream: TcpStream,
    buffer: Vec<u8>,
}

type Pool = Rc<RefCell<Vec<Upstream>>>;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || Error::new(ErrorKind::InvalidInput, "usage: floor LISTEN_ADDR BACKEND_ADDR");
    let listen: SocketAddr = args.next().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let backend: SocketAddr = args.next().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(listen).await?;
        let pool: Pool = Rc::default();
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let _ = serve(stream, backend, pool).await;
            });
        }
    })
}

/// Reads more bytes into `buffer`; false at end of stream.
async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<bool> {
    let start = buffer.len();
    buffer.resize(start + 4096, 0);
    let n = stream.read(&mut buffer[start..]).await?;
    buffer.truncate(start + n);
    Ok(n > 0)
}

async fn serve(mut downstream: TcpStream, backend: SocketAddr, pool: Pool) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(4096);
    let mut request = Vec::with_capacity(1024);
    loop {
        // The request head, forwarded with the edits a proxy makes: hop-by-hop `connection`
        // dropped, x-forwarded-for and x-forwarded-proto added.
        let head_len = loop {
            if let Some(n) = floor::forward_request_head(&buffer, &mut request)? {
                break n;
            }
            if !fill(&mut downstream, &mut buffer).await? {
                return Ok(());
            }
        };
        buffer.drain(..head_len);

        let pooled = pool.borrow_mut().pop();
        let mut upstream = match pooled {
            Some(u) => u,
            None => {
                let stream = TcpStream::connect(backend).await?;
                stream.set_nodelay(true)?;
                Upstream {
                    stream,
                    buffer: Vec::with_capacity(4096),
                }
            }
        };
        upstream.stream.write_all(&request).await?;
        let response_len = loop {
            if let Some(n) = floor::complete_response_len(&upstream.buffer)? {
                break n;
            }
            if !fill(&mut upstream.stream, &mut upstream.buffer).await? {
                return Ok(());
            }
        };
        downstream.write_all(&upstream.buffer[..response_len]).await?;
        upstream.buffer.drain(..response_len);
        pool.borrow_mut().push(upstream);
    }
}
