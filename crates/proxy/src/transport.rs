//! How bytes reach an endpoint. The connector opens a socket with the cluster's socket options,
//! connects it within the connect timeout, and gives a `Transport`: what the HTTP/1.1 exchange
//! reads and writes without knowing what carries it. Today that is a plain TCP stream; what
//! must be written before the first request (a PROXY protocol header) belongs to the connector,
//! and TLS or HTTP/2 would be new variants here, with the exchange untouched. An enum, not a
//! trait object: each read and write is a match, with no allocation or dynamic call.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, tcp};

use snapshot::ProxyProtocolVersion;
use tokio::io::AsyncWriteExt;

use crate::proxy_protocol::{ProxyAddresses, ProxyHeader};
use crate::socket_options::SocketOptions;
use crate::upstream::{End, end_of};

/// A connected stream to an upstream.
pub(crate) enum Transport {
    Tcp(TcpStream),
}

/// The read side of a `Transport`, borrowed (see `Transport::split`).
pub(crate) enum ReadHalf<'a> {
    Tcp(tcp::ReadHalf<'a>),
}

/// The write side of a `Transport`, borrowed (see `Transport::split`).
pub(crate) enum WriteHalf<'a> {
    Tcp(tcp::WriteHalf<'a>),
}

impl Transport {
    /// Its two sides, to read the upstream's early answer while a request body is written.
    pub(crate) fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Transport::Tcp(stream) => {
                let (read, write) = stream.split();
                (ReadHalf::Tcp(read), WriteHalf::Tcp(write))
            }
        }
    }

    /// For a connection in the pool: has it ended (the peer closed it, the kernel gave up, or
    /// it sent bytes nobody asked for)? Costs no system call unless the socket became readable.
    pub(crate) fn ended_while_idle(&mut self) -> Option<End> {
        match self {
            Transport::Tcp(stream) => tcp_ended_while_idle(stream),
        }
    }
}

fn tcp_ended_while_idle(stream: &TcpStream) -> Option<End> {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => None,
        Poll::Ready(Err(e)) => Some(end_of(&e)),
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            match stream.try_read(&mut byte) {
                Ok(0) => Some(End::Remote),
                // An idle HTTP/1.1 connection has nothing to say: it cannot be trusted.
                Ok(_) => Some(End::Local),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) => Some(end_of(&e)),
            }
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(s) => s.is_write_vectored(),
        }
    }
}

#[derive(Debug)]
pub(crate) enum ConnectError {
    Timeout,
    Failed(io::Error),
}

/// A socket with its options set, not connected yet.
pub(crate) struct Connector {
    socket: TcpSocket,
    address: SocketAddr,
}

impl Connector {
    /// A socket for `address` with `options` applied, and a second handle on it that the
    /// cluster keeps, so that later policy changes reach the connection whoever is using it.
    pub(crate) fn new(
        address: SocketAddr,
        options: &SocketOptions,
    ) -> io::Result<(Connector, socket2::Socket)> {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        let handle = socket2::SockRef::from(&socket);
        options.apply_before_connect(&handle)?;
        let kept = handle.try_clone()?;
        Ok((Connector { socket, address }, kept))
    }

    /// Connects within `timeout`, and writes the PROXY protocol header first when the cluster
    /// sends one (`proxy`: its version, and the client's addresses; None for a connection of
    /// no client's, a health check's).
    pub(crate) async fn connect(
        self,
        timeout: Duration,
        proxy: Option<(ProxyProtocolVersion, Option<ProxyAddresses>)>,
    ) -> Result<Transport, ConnectError> {
        let address = self.address;
        let connected = async move {
            let mut stream = self.socket.connect(address).await?;
            if let Some((version, client)) = proxy {
                let header = match client {
                    Some(addresses) => ProxyHeader::for_client(version, addresses),
                    None => ProxyHeader::without_client(version, stream.local_addr()?, stream.peer_addr()?),
                };
                stream.write_all(header.as_bytes()).await?;
            }
            Ok::<_, io::Error>(stream)
        };
        match tokio::time::timeout(timeout, connected).await {
            Ok(Ok(stream)) => Ok(Transport::Tcp(stream)),
            Ok(Err(e)) => Err(ConnectError::Failed(e)),
            Err(_) => Err(ConnectError::Timeout),
        }
    }
}
