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
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
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

fn invalid(_: httparse::Error) -> Error {
    Error::new(ErrorKind::InvalidData, "malformed HTTP")
}

async fn serve(mut downstream: TcpStream, backend: SocketAddr, pool: Pool) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(4096);
    let mut request = Vec::with_capacity(1024);
    loop {
        // The request head, forwarded with the edits a proxy makes: hop-by-hop `connection`
        // dropped, x-forwarded-for and x-forwarded-proto added.
        let head_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(n) = parsed.parse(&buffer).map_err(invalid)? {
                request.clear();
                request.extend_from_slice(parsed.method.unwrap_or("GET").as_bytes());
                request.push(b' ');
                request.extend_from_slice(parsed.path.unwrap_or("/").as_bytes());
                request.extend_from_slice(b" HTTP/1.1\r\n");
                for h in parsed.headers.iter().filter(|h| !h.name.eq_ignore_ascii_case("connection")) {
                    request.extend_from_slice(h.name.as_bytes());
                    request.extend_from_slice(b": ");
                    request.extend_from_slice(h.value);
                    request.extend_from_slice(b"\r\n");
                }
                request.extend_from_slice(b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n");
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
                Upstream { stream, buffer: Vec::with_capacity(4096) }
            }
        };
        upstream.stream.write_all(&request).await?;
        let response_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = parsed.parse(&upstream.buffer).map_err(invalid)? {
                let body_len = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if upstream.buffer.len() >= n + body_len {
                    break n + body_len;
                }
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
