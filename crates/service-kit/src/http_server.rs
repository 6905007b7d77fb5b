//! The one HTTP accept loop every network-facing tier uses (topic server, WebSocket bridge,
//! feeder control API), so each gets the same defences against hostile or broken peers:
//!
//! - **connection limits**, in total and per source address: a connection over a limit gets a
//!   short `503`/`429` answer naming the limit and is closed, before any request is parsed;
//! - a **request-head timeout**: a connection that does not send a complete request head in
//!   time (including an idle keep-alive connection waiting for its next request) is closed,
//!   so slow or silent peers cannot hold sockets forever; and a **request-head size** limit
//!   ([`MAX_HEAD_BYTES`], at most [`MAX_HEADERS`] headers), beyond which the answer is 431;
//! - a **request timeout** for plain HTTP requests (bodies included); WebSocket upgrades leave
//!   the request and are governed by their session;
//! - a **lingering close** (as web servers do): when a connection ends, its write side is shut
//!   and whatever the peer still sends is read and thrown away for a moment before the socket
//!   is closed. Closing a socket with unread data makes the kernel answer with a TCP reset,
//!   which can destroy a close frame or error response still in flight to the peer.
//!
//! - optional **TLS** ([`serve_counted_tls`]): the handshake runs in the connection's task,
//!   bounded by the request-head timeout, so it cannot stall the accept loop.
//!
//! Every request carries [`axum::extract::ConnectInfo<SocketAddr>`] with the peer's address.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use tokio_util::sync::CancellationToken;

/// Largest request head (and read buffer) per connection: hyper's default (~400 KB) would let
/// every connection hold that much.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;

/// How long a closing connection keeps reading what the peer still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes read and thrown away while lingering; a peer that sends more is cut off.
const LINGER_BYTES: usize = 4 * 1024 * 1024;
/// How long an over-limit connection may take to receive its refusal.
const REFUSAL_WRITE_TIME: Duration = Duration::from_secs(1);
/// How long shutdown waits for in-flight HTTP requests.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Limits of one server's accept loop. `0` turns a count limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Open connections in total (WebSocket sessions included).
    pub max_connections: usize,
    /// Open connections from one source IP address.
    pub max_connections_per_address: usize,
    /// Longest wait for a complete request head.
    pub request_head_timeout: Duration,
    /// Longest time a plain HTTP request may take, from head to response (WebSocket upgrades
    /// end their request at the upgrade).
    pub request_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            request_head_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Counts open connections, in total and per source address.
#[derive(Debug, Default)]
struct Connections {
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused at accept.
enum Refusal {
    Total(usize),
    Address(IpAddr, usize),
}

/// One admitted connection; leaving (drop) gives its place back.
struct Admission {
    connections: Arc<Connections>,
    address: IpAddr,
}

impl Connections {
    fn admit(
        self: &Arc<Self>,
        address: IpAddr,
        limits: &ServeLimits,
    ) -> Result<Admission, Refusal> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if limits.max_connections != 0 && total > limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total(limits.max_connections));
        }
        let mut per = self
            .per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = per.entry(address).or_default();
        if limits.max_connections_per_address != 0 && *count >= limits.max_connections_per_address {
            drop(per);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Address(
                address,
                limits.max_connections_per_address,
            ));
        }
        *count += 1;
        Ok(Admission {
            connections: Arc::clone(self),
            address,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut per = self
            .connections
            .per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                per.remove(&self.address);
            }
        }
        drop(per);
        self.connections.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's socket that lingers when dropped (see the module documentation). It also
/// holds the connection's [`Admission`], so the connection counts until its socket is closed.
pub struct LingeringStream {
    inner: Option<TcpStream>,
    admission: Option<Admission>,
}

impl LingeringStream {
    /// The socket, shared: for a server that writes to it from several threads without
    /// waiting (`try_write`, `poll_write_ready`) once the connection has left HTTP.
    pub fn tcp(&self) -> io::Result<&TcpStream> {
        self.inner
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let (Some(stream), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let admission = self.admission.take();
        runtime.spawn(linger(stream, admission));
    }
}

/// Shuts the write side, then reads and discards until the peer closes, [`LINGER_BYTES`] have
/// come, or [`LINGER_TIME`] has passed; then the socket (and the connection's place) go.
async fn linger(mut stream: TcpStream, admission: Option<Admission>) {
    let drain = async {
        let _ = stream.shutdown().await;
        let mut buf = [0u8; 8192];
        let mut read = 0;
        while read < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    drop(stream);
    drop(admission);
}

/// Answers an over-limit connection with a one-line HTTP error, then closes it (lingering, so
/// the answer is not lost to a reset).
async fn refuse(stream: TcpStream, refusal: Refusal) {
    let (status, text) = match refusal {
        Refusal::Total(limit) => (
            "503 Service Unavailable",
            format!("too many connections: this server accepts at most {limit}\n"),
        ),
        Refusal::Address(address, limit) => (
            "429 Too Many Requests",
            format!("too many connections from {address}: at most {limit} per address\n"),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let mut stream = LingeringStream {
        inner: Some(stream),
        admission: None,
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIME, stream.write_all(response.as_bytes())).await;
}

/// A running accept loop's shared counters, for tests and metrics.
#[derive(Debug, Clone, Default)]
pub struct ConnectionCount(Arc<Connections>);

impl ConnectionCount {
    /// Connections open now (each counts until its socket is closed).
    pub fn open(&self) -> usize {
        self.0.total.load(Ordering::Acquire)
    }
}

/// Serves `router` on `listener` until `shutdown` fires, with `limits` (see the module
/// documentation). Then it stops accepting and gives in-flight HTTP requests a few seconds;
/// upgraded connections (WebSocket sessions) are the application's to close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_counted(
        listener,
        router,
        limits,
        shutdown,
        ConnectionCount::default(),
    )
    .await
}

/// [`serve`], counting open connections in `count`.
pub async fn serve_counted(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
    count: ConnectionCount,
) -> io::Result<()> {
    serve_counted_tls(listener, router, limits, shutdown, count, None).await
}

/// [`serve_counted`], speaking TLS (`https://`, `wss://`) when `tls` is given (see
/// [`crate::tls::acceptor`]). The handshake runs in the connection's own task, so a slow or
/// silent peer never holds up the accept loop, and must finish within the request-head timeout;
/// the connection counts against the limits from accept on, handshake included.
pub async fn serve_counted_tls(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
    count: ConnectionCount,
    tls: Option<TlsAcceptor>,
) -> io::Result<()> {
    // Each connection task holds a sender; once all are gone, `recv` returns `None`.
    let (in_flight, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.request_head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept: keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let admission = match count.0.admit(peer.ip(), &limits) {
            Ok(admission) => admission,
            Err(refusal) => {
                tracing::debug!(%peer, "connection refused: over a connection limit");
                // Over TLS a plain-text refusal would not be understood: just close.
                if tls.is_none() {
                    tokio::spawn(refuse(stream, refusal));
                }
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let stream = LingeringStream {
            inner: Some(stream),
            admission: Some(admission),
        };
        let connection = Connection {
            http: http.clone(),
            service: request_service(router.clone(), peer, limits.request_timeout),
            peer,
            stop: shutdown.clone(),
        };
        let done = in_flight.clone();
        match &tls {
            None => {
                tokio::spawn(async move {
                    let _done = done;
                    connection.serve(stream).await;
                });
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                let timeout = limits.request_head_timeout;
                tokio::spawn(async move {
                    let _done = done;
                    let stop = connection.stop.clone();
                    let stream = tokio::select! {
                        accepted = tokio::time::timeout(timeout, handshake) => match accepted {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake not finished in {timeout:?}");
                                return;
                            }
                        },
                        _ = stop.cancelled() => return,
                    };
                    connection.serve(stream).await;
                });
            }
        }
    }
    drop(listener);
    drop(in_flight);
    if tokio::time::timeout(DRAIN_TIME, all_done.recv())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open after the drain time");
    }
    Ok(())
}

/// One admitted connection's HTTP side, whatever its transport (plain or TLS).
struct Connection<S> {
    http: hyper::server::conn::http1::Builder,
    service: S,
    peer: SocketAddr,
    stop: CancellationToken,
}

impl<S> Connection<S>
where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// Serves HTTP/1.1 (with upgrades) on `io` until the peer leaves or shutdown; on shutdown
    /// the request in progress (if any) is finished first.
    async fn serve<T>(self, io: T)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            http,
            service,
            peer,
            stop,
        } = self;
        let connection = http
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%peer, %error, "HTTP connection ended with an error");
        }
    }
}

/// The router as one connection's service: every request carries the peer's address and is
/// bounded by the request timeout.
fn request_service(
    router: Router,
    peer: SocketAddr,
    timeout: Duration,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send,
> + Clone
+ Send {
    tower::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            match tokio::time::timeout(timeout, router.oneshot(request)).await {
                Ok(response) => response,
                Err(_) => {
                    Ok((StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response())
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: ServeLimits) -> (SocketAddr, ConnectionCount, CancellationToken) {
        start_with_buffer(limits, None).await
    }

    /// A small receive buffer (inherited by accepted sockets) keeps the kernel from absorbing
    /// what a peer sends, so the server must read it.
    async fn start_with_buffer(
        limits: ServeLimits,
        recv_buffer: Option<u32>,
    ) -> (SocketAddr, ConnectionCount, CancellationToken) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(128).unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/", get(|| async { "hello" }))
            .route("/echo", post(|body: axum::body::Bytes| async move { body }))
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            );
        let count = ConnectionCount::default();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_counted(
            listener,
            router,
            limits,
            shutdown.clone(),
            count.clone(),
        ));
        (addr, count, shutdown)
    }

    async fn read_all(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get_once(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        read_all(&mut s).await
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn serves_and_knows_the_peer() {
        let (addr, _, _shutdown) = start(ServeLimits::default()).await;
        assert!(get_once(addr, "/").await.ends_with("hello"));
        assert!(get_once(addr, "/peer").await.contains("127.0.0.1:"));
    }

    #[tokio::test]
    async fn connections_over_the_limits_are_refused_with_a_reason() {
        let limits = ServeLimits {
            max_connections: 3,
            max_connections_per_address: 2,
            ..ServeLimits::default()
        };
        let (addr, count, _shutdown) = start(limits).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        wait_for("two connections", || count.open() == 2).await;
        let reply = get_once(addr, "/").await;
        assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
        assert!(reply.contains("at most 2 per address"), "{reply}");
        // From another loopback address the per-address limit has room, the total does not.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let _c = socket.connect(addr).await.unwrap();
        wait_for("three connections", || count.open() == 3).await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        let mut d = socket.connect(addr).await.unwrap();
        d.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let reply = read_all(&mut d).await;
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        assert!(reply.contains("at most 3"), "{reply}");
        drop((_a, _b, _c));
        wait_for("connections to close", || count.open() == 0).await;
        assert!(get_once(addr, "/").await.ends_with("hello"));
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_head_timeout() {
        let limits = ServeLimits {
            request_head_timeout: Duration::from_millis(300),
            ..ServeLimits::default()
        };
        let (addr, count, _shutdown) = start(limits).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial.write_all(b"GET / HTTP/1.1\r\nhost").await.unwrap();
        let started = std::time::Instant::now();
        let _ = read_all(&mut silent).await;
        let _ = read_all(&mut partial).await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        wait_for("connections to close", || count.open() == 0).await;
    }

    #[tokio::test]
    async fn oversized_request_heads_are_refused() {
        let (addr, _, _shutdown) = start(ServeLimits::default()).await;
        let big = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n",
            "a".repeat(2 * MAX_HEAD_BYTES)
        );
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(big.as_bytes()).await;
        let reply = read_all(&mut s).await;
        assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
        let many: String = (0..MAX_HEADERS + 10)
            .map(|i| format!("x-{i}: v\r\n"))
            .collect();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET / HTTP/1.1\r\nhost: x\r\n{many}connection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let reply = read_all(&mut s).await;
        assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
        assert!(get_once(addr, "/").await.ends_with("hello"));
    }

    #[tokio::test]
    async fn a_slow_body_is_cut_off_by_the_request_timeout() {
        let limits = ServeLimits {
            request_timeout: Duration::from_millis(300),
            ..ServeLimits::default()
        };
        let (addr, _, _shutdown) = start(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
            .await
            .unwrap();
        let reply = read_all(&mut s).await;
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    }

    /// A TLS server on 127.0.0.1:0 with `pki`'s certificate.
    async fn start_tls(
        limits: ServeLimits,
        pki: &crate::testing::TestPki,
    ) -> (SocketAddr, ConnectionCount, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", get(|| async { "hello" }));
        let acceptor = crate::tls::acceptor(&pki.cert_file(), &pki.key_file()).unwrap();
        let count = ConnectionCount::default();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_counted_tls(
            listener,
            router,
            limits,
            shutdown.clone(),
            count.clone(),
            Some(acceptor),
        ));
        (addr, count, shutdown)
    }

    /// GET / over TLS, trusting `ca` (or only the public roots).
    async fn get_tls(addr: SocketAddr, ca: Option<&std::path::Path>) -> io::Result<String> {
        let config = crate::tls::client_config(ca).unwrap();
        let connector = tokio_rustls::TlsConnector::from(config);
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        // The server may end without close_notify after `connection: close`.
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[tokio::test]
    async fn tls_serves_clients_that_trust_the_ca_and_refuses_the_others() {
        let pki = crate::testing::TestPki::generate().unwrap();
        let (addr, count, _shutdown) = start_tls(ServeLimits::default(), &pki).await;
        let reply = get_tls(addr, Some(&pki.ca_file())).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("hello"), "{reply}");
        let refused = get_tls(addr, None).await.unwrap_err();
        assert!(
            refused.to_string().to_lowercase().contains("certificate"),
            "{refused}"
        );
        // Plain HTTP on the TLS port gets no answer.
        let plain = get_once(addr, "/").await;
        assert!(!plain.contains("hello"), "{plain}");
        wait_for("connections to close", || count.open() == 0).await;
    }

    #[tokio::test]
    async fn a_silent_tls_peer_neither_blocks_others_nor_stays_past_the_timeout() {
        let pki = crate::testing::TestPki::generate().unwrap();
        let limits = ServeLimits {
            request_head_timeout: Duration::from_millis(300),
            max_connections_per_address: 2,
            ..ServeLimits::default()
        };
        let (addr, count, _shutdown) = start_tls(limits, &pki).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        wait_for("the silent connection", || count.open() == 1).await;
        // While it sits in its handshake, another client is served.
        let reply = get_tls(addr, Some(&pki.ca_file())).await.unwrap();
        assert!(reply.ends_with("hello"), "{reply}");
        // The silent one is closed after the timeout, and its place given back.
        let started = std::time::Instant::now();
        let _ = read_all(&mut silent).await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        wait_for("connections to close", || count.open() == 0).await;
    }

    #[tokio::test]
    async fn tls_connections_count_against_the_limits() {
        let pki = crate::testing::TestPki::generate().unwrap();
        let limits = ServeLimits {
            max_connections_per_address: 1,
            ..ServeLimits::default()
        };
        let (addr, count, _shutdown) = start_tls(limits, &pki).await;
        let _hold = TcpStream::connect(addr).await.unwrap();
        wait_for("one connection", || count.open() == 1).await;
        assert!(get_tls(addr, Some(&pki.ca_file())).await.is_err());
        drop(_hold);
        wait_for("connections to close", || count.open() == 0).await;
        let reply = get_tls(addr, Some(&pki.ca_file())).await.unwrap();
        assert!(reply.ends_with("hello"), "{reply}");
    }

    #[tokio::test]
    async fn unread_data_does_not_turn_the_answer_into_a_reset() {
        // The server answers and closes while the client is still sending: the client must
        // still read the whole answer (a reset would destroy it).
        let limits = ServeLimits {
            max_connections_per_address: 1,
            ..ServeLimits::default()
        };
        let (addr, _, _shutdown) = start_with_buffer(limits, Some(16 * 1024)).await;
        let _hold = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(16 * 1024).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        // Far more than the socket buffers hold: the client is still sending when the server
        // closes.
        let junk = vec![b'x'; LINGER_BYTES / 4];
        s.write_all(&junk)
            .await
            .expect("the peer must be able to finish sending: no reset");
        let reply = read_all(&mut s).await;
        assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
    }
}
