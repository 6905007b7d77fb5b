//! The transport side of security, over real sockets: TLS (a client trusting the test CA
//! connects over `wss://`, others are refused), the Origin check on WebSocket upgrades, and
//! protected mode (a server without a security file accepts protocol sessions from loopback
//! only).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use common::{STEP, TestServer};
use diffusion_core::protocol::{ServerMessage, decode_sequenced_message, split_frame};
use futures_util::{SinkExt, StreamExt};
use service_kit::testing::TestPki;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

/// Sends a version-1 `connect` over an open WebSocket and expects `connected`.
async fn protocol_handshake<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::text(r#"{"type":"connect","version":1}"#))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no answer to connect in time")
            .expect("connection ended")
            .unwrap();
        if let Message::Text(text) = frame {
            let first = split_frame(text.as_str()).next().unwrap();
            let (message, _) = decode_sequenced_message(first).unwrap();
            assert!(
                matches!(message, ServerMessage::Connected { .. }),
                "expected connected, got {message:?}"
            );
            return;
        }
    }
}

/// Opens a WebSocket to `connect_to` for `url` (its Host), with an `Origin` header when given:
/// the stream, or the HTTP status the upgrade was refused with.
async fn upgrade(
    connect_to: SocketAddr,
    url: &str,
    origin: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(connect_to))
        .await
        .unwrap()
        .unwrap();
    match tokio::time::timeout(STEP, tokio_tungstenite::client_async(request, tcp))
        .await
        .expect("no answer to the upgrade in time")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("upgrade failed: {other}"),
    }
}

/// A plain HTTP/1.1 GET to `connect_to`; returns the status.
async fn get_status(connect_to: SocketAddr, path: &str) -> u16 {
    let exchange = async {
        let mut stream = TcpStream::connect(connect_to).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {connect_to}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    };
    let response = tokio::time::timeout(STEP, exchange).await.unwrap();
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A TLS connection to `addr` for `name`, verified with `config`.
async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(STEP, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("TLS handshake took too long")
}

#[tokio::test]
async fn wss_clients_that_trust_the_ca_connect_and_others_are_refused() {
    let pki = TestPki::generate().unwrap();
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(pki.cert_file());
        c.tls_key = Some(pki.key_file());
    })
    .await;
    let port = server.addr.port();
    let trusting = service_kit::tls::client_config(Some(&pki.ca_file())).unwrap();

    // By name and by address: the certificate names both.
    for host in ["localhost", "127.0.0.1"] {
        let tls = tls_connect(server.addr, host, Arc::clone(&trusting))
            .await
            .unwrap();
        let url = format!("wss://{host}:{port}/ws");
        let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::client_async(url, tls))
            .await
            .unwrap()
            .unwrap();
        protocol_handshake(&mut ws).await;
        ws.close(None).await.unwrap();
    }

    // The default roots (the public web roots) do not include the test CA.
    let untrusting = service_kit::tls::client_config(None).unwrap();
    let error = tls_connect(server.addr, "localhost", untrusting)
        .await
        .expect_err("a client that does not trust the CA connected");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");

    // Trusting the CA is not enough for a name the certificate does not carry.
    let error = tls_connect(server.addr, "other.example", trusting)
        .await
        .expect_err("a certificate for another name was accepted");
    assert!(error.to_string().contains("not valid for name"), "{error}");

    // The port speaks only TLS: a plain ws:// upgrade gets no session.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let plain = tokio::time::timeout(
        STEP,
        tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/ws"), tcp),
    )
    .await
    .expect("a plain upgrade to the TLS port hung");
    assert!(
        plain.is_err(),
        "a plain ws:// upgrade succeeded on the TLS port"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Origins

#[tokio::test]
async fn a_foreign_origin_is_refused_the_servers_own_and_none_are_not() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let url = server.ws_url();
    assert_eq!(
        upgrade(addr, &url, Some("http://evil.example")).await.err(),
        Some(403)
    );
    // Same host, other port: another origin.
    let other_port = format!("http://127.0.0.1:{}", addr.port().wrapping_add(1));
    assert_eq!(
        upgrade(addr, &url, Some(&other_port)).await.err(),
        Some(403)
    );
    // `/` upgrades too, and is checked the same way.
    assert_eq!(
        upgrade(addr, &format!("ws://{addr}/"), Some("http://evil.example"))
            .await
            .err(),
        Some(403)
    );
    // The dashboard this server serves (Origin = the Host the request went to).
    for origin in [format!("http://{addr}"), format!("https://{addr}")] {
        let mut ws = upgrade(addr, &url, Some(&origin)).await.unwrap();
        protocol_handshake(&mut ws).await;
    }
    // Not a browser: no Origin at all.
    let mut ws = upgrade(addr, &url, None).await.unwrap();
    protocol_handshake(&mut ws).await;
    server.stop().await;
}

/// DNS rebinding: a page on a name the attacker points at 127.0.0.1 sends Origin = Host =
/// that name. Without a security store (everyone may do everything) only loopback names count
/// as the server's own pages; with one, the name does not matter.
#[tokio::test]
async fn a_rebound_name_is_not_the_servers_own_page_in_protected_mode() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let rebound = format!("evil.example:{}", addr.port());
    let url = format!("ws://{rebound}/ws");
    assert_eq!(
        upgrade(addr, &url, Some(&format!("http://{rebound}")))
            .await
            .err(),
        Some(403)
    );
    let local = format!("ws://localhost:{}/ws", addr.port());
    let mut ws = upgrade(
        addr,
        &local,
        Some(&format!("http://localhost:{}", addr.port())),
    )
    .await
    .unwrap();
    protocol_handshake(&mut ws).await;
    server.stop().await;

    let server = TestServer::start_with(|c| c.insecure_open = true).await;
    let rebound = format!("evil.example:{}", server.addr.port());
    let mut ws = upgrade(
        server.addr,
        &format!("ws://{rebound}/ws"),
        Some(&format!("http://{rebound}")),
    )
    .await
    .unwrap();
    protocol_handshake(&mut ws).await;
    server.stop().await;
}

#[tokio::test]
async fn allowed_origins_lets_those_pages_in() {
    let server = TestServer::start_with(|c| {
        c.allowed_origins = vec!["http://app.example".to_owned()];
    })
    .await;
    let addr = server.addr;
    let url = server.ws_url();
    let mut ws = upgrade(addr, &url, Some("http://app.example"))
        .await
        .unwrap();
    protocol_handshake(&mut ws).await;
    for foreign in [
        "http://evil.example",
        "https://app.example",
        "http://app.example:8080",
    ] {
        assert_eq!(
            upgrade(addr, &url, Some(foreign)).await.err(),
            Some(403),
            "{foreign}"
        );
    }
    let mut ws = upgrade(addr, &url, None).await.unwrap();
    protocol_handshake(&mut ws).await;
    server.stop().await;

    let server = TestServer::start_with(|c| c.allowed_origins = vec!["*".to_owned()]).await;
    let mut ws = upgrade(server.addr, &server.ws_url(), Some("http://evil.example"))
        .await
        .unwrap();
    protocol_handshake(&mut ws).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Protected mode

/// An address of this machine that is not loopback, if it has one: the source address of a
/// route to a public address (a UDP `connect` sends nothing).
fn non_loopback_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn without_a_security_file_only_loopback_clients_get_sessions() {
    let server = TestServer::start_with(|c| c.listen = "0.0.0.0:0".parse().unwrap()).await;
    let port = server.addr.port();
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    let mut ws = upgrade(loopback, &format!("ws://{loopback}/ws"), None)
        .await
        .unwrap();
    protocol_handshake(&mut ws).await;
    assert_eq!(get_status(loopback, "/healthz").await, 200);

    let Some(ip) = non_loopback_address() else {
        println!("no non-loopback address on this machine: the refusal from afar is not tested");
        server.stop().await;
        return;
    };
    let afar = SocketAddr::new(ip, port);
    let url = format!("ws://{afar}/ws");
    assert_eq!(upgrade(afar, &url, None).await.err(), Some(403));
    assert_eq!(
        upgrade(afar, &format!("ws://{afar}/"), None).await.err(),
        Some(403)
    );
    // Only protocol sessions: /healthz and the dashboard answer everyone.
    assert_eq!(get_status(afar, "/healthz").await, 200);
    assert_eq!(get_status(afar, "/index.html").await, 200);
    server.stop().await;

    // --insecure-open lets everyone in.
    let server = TestServer::start_with(|c| {
        c.listen = "0.0.0.0:0".parse().unwrap();
        c.insecure_open = true;
    })
    .await;
    let afar = SocketAddr::new(ip, server.addr.port());
    let mut ws = upgrade(afar, &format!("ws://{afar}/ws"), None)
        .await
        .unwrap();
    protocol_handshake(&mut ws).await;
    server.stop().await;

    // So does a security file, which then decides who may do what.
    let dir = std::env::temp_dir().join(format!("topic-server-protected-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("security.toml");
    std::fs::write(&file, "anonymous = [\"R\"]\n[roles.R]\n").unwrap();
    let server = TestServer::start_with(|c| {
        c.listen = "0.0.0.0:0".parse().unwrap();
        c.security = Some(file);
    })
    .await;
    let afar = SocketAddr::new(ip, server.addr.port());
    let mut ws = upgrade(afar, &format!("ws://{afar}/ws"), None)
        .await
        .unwrap();
    protocol_handshake(&mut ws).await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
