//! How bytes reach an endpoint. The connector opens a socket with the cluster's socket options,
//! connects it, writes the PROXY protocol header (plain, first) and runs the TLS handshake when
//! the cluster has upstream TLS (`upstream_tls.rs`), all within the connect timeout (Envoy's
//! connect timer stops when the transport socket reports connected, after the handshake), and
//! gives a `Transport`: what the HTTP/1.1 exchange reads and writes without knowing what
//! carries it, a plain TCP stream or TLS over one. An enum, not a trait object: each read and
//! write is a match, with no allocation or dynamic call.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, tcp};

use snapshot::ProxyProtocolVersion;
use tokio::io::AsyncWriteExt;

use crate::proxy_protocol::{ProxyAddresses, ProxyHeader};
use crate::socket_options::SocketOptions;
use crate::upstream::{End, end_of};
use crate::upstream_tls::ClientTls;

type TlsClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A connected stream to an upstream.
pub(crate) enum Transport {
    Tcp(TcpStream),
    /// Boxed: a TLS session is large, and most connections are plain. Behind a mutex so the
    /// two halves of `split` can share it (one TLS state machine serves both directions); a
    /// whole `Transport` reaches it without locking (`Mutex::get_mut`).
    Tls(Box<Mutex<TlsClientStream>>),
}

/// The read side of a `Transport`, borrowed (see `Transport::split`).
pub(crate) enum ReadHalf<'a> {
    Tcp(tcp::ReadHalf<'a>),
    Tls(&'a Mutex<TlsClientStream>),
}

/// The write side of a `Transport`, borrowed (see `Transport::split`).
pub(crate) enum WriteHalf<'a> {
    Tcp(tcp::WriteHalf<'a>),
    Tls(&'a Mutex<TlsClientStream>),
}

/// The shared TLS stream, for one poll (never held across an await: no contention but the
/// other half's poll in the same task).
fn lock(stream: &Mutex<TlsClientStream>) -> MutexGuard<'_, TlsClientStream> {
    stream.lock().unwrap_or_else(|e| e.into_inner())
}

fn get_mut(stream: &mut Mutex<TlsClientStream>) -> &mut TlsClientStream {
    stream.get_mut().unwrap_or_else(|e| e.into_inner())
}

/// Reads through TLS, first sending what earlier writes left in the TLS buffer when the socket
/// was full: the exchange never flushes (a TCP write needs none) and, its request written, it
/// reads the answer; left in the buffer, the request's end would never leave.
fn poll_read_tls(
    stream: &mut TlsClientStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if stream.get_ref().1.wants_write()
        && let Poll::Ready(Err(e)) = Pin::new(&mut *stream).poll_flush(cx)
    {
        return Poll::Ready(Err(e));
    }
    // (Pending flush: the task wakes when the socket takes more, and flushes again here.)
    Pin::new(stream).poll_read(cx, buf)
}

impl Transport {
    /// Its two sides, to read the upstream's early answer while a request body is written.
    pub(crate) fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Transport::Tcp(stream) => {
                let (read, write) = stream.split();
                (ReadHalf::Tcp(read), WriteHalf::Tcp(write))
            }
            Transport::Tls(stream) => (ReadHalf::Tls(stream), WriteHalf::Tls(stream)),
        }
    }

    /// Did its TLS handshake settle on HTTP/2 (ALPN `h2`)?
    pub(crate) fn negotiated_h2(&mut self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            Transport::Tls(stream) => get_mut(stream).get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }

    /// For a connection in the pool: has it ended (the peer closed it, the kernel gave up, or
    /// it sent bytes nobody asked for)? Costs no system call unless the socket became readable.
    pub(crate) fn ended_while_idle(&mut self) -> Option<End> {
        match self {
            Transport::Tcp(stream) => tcp_ended_while_idle(stream),
            Transport::Tls(stream) => tls_ended_while_idle(get_mut(stream)),
        }
    }
}

/// As for TCP, but what arrives is read through TLS: a close_notify or an EOF ends it, records
/// without data (a TLS 1.3 session ticket) do not, and data nobody asked for does.
fn tls_ended_while_idle(stream: &mut TlsClientStream) -> Option<End> {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.get_ref().0.poll_read_ready(&mut cx) {
        Poll::Pending => None,
        Poll::Ready(Err(e)) => Some(end_of(&e)),
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            let mut buf = ReadBuf::new(&mut byte);
            match Pin::new(stream).poll_read(&mut cx, &mut buf) {
                Poll::Pending => None,
                Poll::Ready(Ok(())) if buf.filled().is_empty() => Some(End::Remote),
                Poll::Ready(Ok(())) => Some(End::Local),
                Poll::Ready(Err(e)) => Some(end_of(&e)),
            }
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
            Transport::Tls(s) => poll_read_tls(get_mut(s), cx, buf),
        }
    }
}

/// Written whole by an HTTP/2 connection (upstream_h2.rs), which owns its transport; the
/// HTTP/1.1 exchange writes through `split`.
impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(get_mut(s)).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(get_mut(s)).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(get_mut(s)).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Tls(s) => poll_read_tls(&mut lock(s), cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WriteHalf::Tls(s) => Pin::new(&mut *lock(s)).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_flush(cx),
            WriteHalf::Tls(s) => Pin::new(&mut *lock(s)).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WriteHalf::Tls(s) => Pin::new(&mut *lock(s)).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(s) => Pin::new(&mut *lock(s)).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(s) => s.is_write_vectored(),
            WriteHalf::Tls(s) => lock(s).is_write_vectored(),
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
    /// no client's, a health check's), then runs the TLS handshake when the cluster has `tls`
    /// (a failure: `ConnectError::Failed` carrying an `upstream_tls::HandshakeFailure`).
    pub(crate) async fn connect(
        self,
        timeout: Duration,
        proxy: Option<(ProxyProtocolVersion, Option<ProxyAddresses>)>,
        tls: Option<Arc<ClientTls>>,
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
            match tls {
                None => Ok::<_, io::Error>(Transport::Tcp(stream)),
                Some(tls) => {
                    let secured = tls.handshake(stream, address).await?;
                    Ok(Transport::Tls(Box::new(Mutex::new(secured))))
                }
            }
        };
        match tokio::time::timeout(timeout, connected).await {
            Ok(Ok(transport)) => Ok(transport),
            Ok(Err(e)) => Err(ConnectError::Failed(e)),
            Err(_) => Err(ConnectError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use snapshot::{
        CertificateKey, PemSource, SanMatch, SanType, ServerValidation, TlsParameters, TlsVersion,
        UpstreamTls,
    };
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::test_pki::Pki;
    use crate::upstream_tls::{ClusterTls, HandshakeFailure};

    /// What the test server saw of one connection.
    #[derive(Debug)]
    struct Seen {
        plain_prefix: Vec<u8>,
        sni: Option<String>,
        client_certificate: bool,
        alpn: Option<Vec<u8>>,
    }

    /// A TLS server on loopback with `pki`'s "server" certificate (TLS 1.2 and 1.3, client
    /// certificates asked for, not required). Per connection: a PROXY v1 line read plain first
    /// when `proxy_line`, the handshake, then "pong" for each "ping"; on "bye" it sends
    /// close_notify and keeps the socket open.
    async fn server(pki: &Pki, proxy_line: bool) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.cert("ca")).unwrap();
        let clients =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(vec![pki.cert("server")], pki.key("server"))
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, seen_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut plain_prefix = Vec::new();
                    if proxy_line {
                        let mut byte = [0u8; 1];
                        while !plain_prefix.ends_with(b"\r\n") {
                            tcp.read_exact(&mut byte).await.unwrap();
                            plain_prefix.push(byte[0]);
                        }
                    }
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let session = tls.get_ref().1;
                    let _ = seen.send(Seen {
                        plain_prefix,
                        sni: session.server_name().map(str::to_string),
                        client_certificate: session.peer_certificates().is_some_and(|c| !c.is_empty()),
                        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                    });
                    let mut word = [0u8; 4];
                    while tls.read_exact(&mut word).await.is_ok() {
                        match &word {
                            b"ping" => {
                                let _ = tls.write_all(b"pong").await;
                            }
                            b"bye!" => {
                                tls.get_mut().1.send_close_notify();
                                let _ = tls.flush().await;
                            }
                            _ => return,
                        }
                    }
                });
            }
        });
        (addr, seen_rx)
    }

    fn tls_to(pki: &Pki, sni: Option<&str>, sans: &[&str]) -> UpstreamTls {
        UpstreamTls {
            sni: sni.map(str::to_string),
            client_certificate: None,
            validation: ServerValidation::TrustedCa {
                ca: PemSource::Inline(pki.pem("ca.crt")),
                subject_alt_names: sans
                    .iter()
                    .map(|s| SanMatch {
                        san_type: SanType::Dns,
                        value: s.to_string(),
                    })
                    .collect(),
            },
            alpn_protocols: Vec::new(),
            parameters: TlsParameters::default(),
        }
    }

    async fn connect(
        addr: SocketAddr,
        cluster: &ClusterTls,
        proxy: Option<(ProxyProtocolVersion, Option<ProxyAddresses>)>,
    ) -> Result<Transport, ConnectError> {
        let (connector, _kept) = Connector::new(
            addr,
            &SocketOptions {
                tcp_keepalive: None,
                tcp_user_timeout: false,
            },
        )
        .unwrap();
        connector
            .connect(Duration::from_secs(5), proxy, cluster.client())
            .await
    }

    async fn ping(transport: &mut Transport) {
        let (mut read, mut write) = transport.split();
        write.write_all(b"ping").await.unwrap();
        let mut answer = [0u8; 4];
        read.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"pong");
    }

    fn pki(tag: &str) -> Pki {
        let pki = Pki::new(tag);
        pki.server("server", "DNS:backend.example.com");
        pki.leaf("client", "DNS:gateway.example.com", "clientAuth");
        pki
    }

    #[tokio::test]
    async fn a_verified_connection_carries_the_sni_the_alpn_and_the_client_certificate() {
        let pki = pki("t-verified");
        let (addr, mut seen) = server(&pki, false).await;
        let mut tls = tls_to(&pki, Some("backend.example.com"), &["backend.example.com"]);
        tls.alpn_protocols = vec!["http/1.1".into()];
        tls.client_certificate = Some(CertificateKey {
            certificate_chain: PemSource::Inline(pki.pem("client.crt")),
            private_key: PemSource::Inline(pki.pem("client.key")),
        });
        let cluster = ClusterTls::default();
        cluster.configure("c", Some(&tls));
        let mut transport = connect(addr, &cluster, None).await.unwrap();
        ping(&mut transport).await;
        ping(&mut transport).await;
        let s = seen.recv().await.unwrap();
        assert_eq!(s.sni.as_deref(), Some("backend.example.com"));
        assert!(s.client_certificate);
        assert_eq!(s.alpn.as_deref(), Some(&b"http/1.1"[..]));
        let stats = cluster.stats().unwrap();
        assert_eq!(stats.handshake.load(Ordering::Relaxed), 1);
        assert_eq!(stats.connection_error.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_wrong_san_fails_the_handshake_with_its_reason_and_counters() {
        let pki = pki("t-wrong-san");
        let (addr, _seen) = server(&pki, false).await;
        let cluster = ClusterTls::default();
        cluster.configure(
            "c",
            Some(&tls_to(&pki, Some("backend.example.com"), &["api.example.com"])),
        );
        let Err(ConnectError::Failed(e)) = connect(addr, &cluster, None).await else {
            panic!("the handshake must fail");
        };
        let reason = &HandshakeFailure::of(&e).expect("a TLS failure").reason;
        assert_eq!(
            reason,
            "certificate SAN does not match any of [api.example.com] (the certificate has [backend.example.com])"
        );
        let stats = cluster.stats().unwrap();
        assert_eq!(stats.handshake.load(Ordering::Relaxed), 0);
        assert_eq!(stats.connection_error.load(Ordering::Relaxed), 0);
        assert_eq!(stats.fail_verify_san.load(Ordering::Relaxed), 1);
        // The client's 503 body gets the category, not the certificate's names.
        assert_eq!(e.to_string(), "TLS handshake failed: certificate verify failed");
        assert_eq!(stats.fail_verify_error.load(Ordering::Relaxed), 0);

        // Another CA: the chain fails first.
        let other = Pki::new("transport-other-ca");
        let cluster = ClusterTls::default();
        cluster.configure("c", Some(&tls_to(&other, None, &[])));
        let Err(ConnectError::Failed(e)) = connect(addr, &cluster, None).await else {
            panic!("the handshake must fail");
        };
        assert!(
            HandshakeFailure::of(&e)
                .unwrap()
                .reason
                .starts_with("unknown issuer")
        );
        assert_eq!(
            cluster.stats().unwrap().fail_verify_error.load(Ordering::Relaxed),
            1
        );
    }

    #[tokio::test]
    async fn without_sni_none_is_sent_and_the_proxy_header_goes_plain_first() {
        let pki = pki("t-no-sni");
        let (addr, mut seen) = server(&pki, true).await;
        let cluster = ClusterTls::default();
        cluster.configure("c", Some(&tls_to(&pki, None, &[])));
        let client = ProxyAddresses {
            source: "10.0.0.1:5000".parse().unwrap(),
            destination: "127.0.0.1:8080".parse().unwrap(),
        };
        let mut transport = connect(addr, &cluster, Some((ProxyProtocolVersion::V1, Some(client))))
            .await
            .unwrap();
        ping(&mut transport).await;
        let s = seen.recv().await.unwrap();
        assert_eq!(s.plain_prefix, b"PROXY TCP4 10.0.0.1 127.0.0.1 5000 8080\r\n");
        assert_eq!(s.sni, None);
        assert!(!s.client_certificate);
    }

    /// Waits (bounded) until the connection's socket has something to read.
    async fn readable(transport: &mut Transport) {
        let Transport::Tls(stream) = transport else {
            panic!("a TLS transport")
        };
        tokio::time::timeout(Duration::from_secs(5), get_mut(stream).get_ref().0.readable())
            .await
            .expect("readable within 5 s")
            .unwrap();
    }

    #[tokio::test]
    async fn an_idle_tls_connection_ends_on_close_notify_not_on_session_tickets() {
        let pki = pki("t-idle");
        let (addr, _seen) = server(&pki, false).await;
        let mut tls = tls_to(&pki, Some("backend.example.com"), &[]);
        // TLS 1.3: the server sends session tickets after the handshake, unasked.
        tls.parameters.max_version = Some(TlsVersion::V1_3);
        let cluster = ClusterTls::default();
        cluster.configure("c", Some(&tls));
        let mut transport = connect(addr, &cluster, None).await.unwrap();
        readable(&mut transport).await;
        assert_eq!(transport.ended_while_idle(), None, "tickets are not data");
        ping(&mut transport).await;
        assert_eq!(transport.ended_while_idle(), None);
        transport.split().1.write_all(b"bye!").await.unwrap();
        readable(&mut transport).await;
        assert_eq!(transport.ended_while_idle(), Some(End::Remote));
    }
}
