//! The bridge's security: only clients presenting the publish token publish, a bridge without
//! one is read-only, browsers from foreign origins are refused, and `wss://` works for clients
//! that trust the server's CA and fails for the others.

// Test helpers outside `#[test]` functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;

use common::*;
use futures_util::{SinkExt, StreamExt};
use redis_ws_bridge::{Config, PROTOCOL, close};
use service_kit::testing::{RedisServer, TestPki};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A Redis subscriber on the bridge's channel.
async fn subscriber(redis: &RedisServer) -> redis::aio::PubSub {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(CHANNEL).await.unwrap();
    pubsub
}

/// The next payload `pubsub` receives.
async fn next_published(pubsub: &mut redis::aio::PubSub) -> String {
    let message = timeout(STEP, pubsub.on_message().next())
        .await
        .expect("a message in time")
        .expect("subscription open");
    String::from_utf8(message.get_payload_bytes().to_vec()).unwrap()
}

/// An upgrade request the way a browser makes it: an `Origin`, and the token (if any) as a
/// subprotocol offered next to the bridge's own.
fn browser_request(bridge: &Running, origin: &'static str, token: Option<&str>) -> Request {
    let mut request = bridge.url().into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Origin", HeaderValue::from_static(origin));
    if let Some(token) = token {
        let offer = format!("{PROTOCOL}, publish-token.{token}");
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&offer).unwrap(),
        );
    }
    request
}

#[tokio::test]
async fn a_client_without_the_token_cannot_publish_and_is_told_why() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;
    let mut pubsub = subscriber(&redis).await;

    let mut reader = bridge.connect_read_only().await;
    // A read-only client still gets the channel.
    publish(&redis, "for everyone").await;
    assert_eq!(next_data(&mut reader).await, Message::text("for everyone"));
    assert_eq!(next_published(&mut pubsub).await, "for everyone");

    reader.send(Message::text("forbidden")).await.unwrap();
    let (code, reason, _) = expect_close(&mut reader).await;
    assert_eq!((code, reason.as_str()), close::PUBLISH_NEEDS_TOKEN);

    // What a publisher sends next is the first client message on the channel: the refused one
    // never reached Redis.
    let mut publisher = bridge.connect().await;
    publisher.send(Message::text("allowed")).await.unwrap();
    assert_eq!(next_published(&mut pubsub).await, "allowed");
    assert_eq!(bridge.stats.snapshot().published, 1);
    bridge.stop([publisher]).await;
}

#[tokio::test]
async fn a_client_with_the_token_publishes_by_header_or_by_subprotocol() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |c| {
        c.allowed_origins = vec!["http://localhost:8080".into()];
    })
    .await;
    let mut pubsub = subscriber(&redis).await;

    let mut cli = bridge.connect().await;
    cli.send(Message::text("by header")).await.unwrap();
    assert_eq!(next_published(&mut pubsub).await, "by header");

    let request = browser_request(&bridge, "http://localhost:8080", Some(TOKEN));
    let (mut browser, response) = timeout(STEP, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    // The bridge answers with its own subprotocol, never echoing the token.
    assert_eq!(response.headers()["sec-websocket-protocol"], PROTOCOL);
    browser.send(Message::text("by subprotocol")).await.unwrap();
    assert_eq!(next_published(&mut pubsub).await, "by subprotocol");
    assert_eq!(bridge.stats.snapshot().published, 2);
    bridge.stop([cli, browser]).await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_at_the_upgrade() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;
    let wrong = "test-publish-token-0123456780";
    assert_eq!(
        bridge.refused_status(bridge.request(Some(wrong))).await,
        401
    );
    let browser = browser_request(&bridge, "http://localhost:8080", Some(wrong));
    assert_eq!(bridge.refused_status(browser).await, 401);
    // A right bearer token does not excuse a wrong one beside it.
    let mut both = browser_request(&bridge, "http://localhost:8080", Some(wrong));
    both.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    assert_eq!(bridge.refused_status(both).await, 401);
    let (status, body) = http_get(bridge.addr, "/healthz").await;
    assert_eq!(
        (status, body.contains("\"clients\":0")),
        (200, true),
        "{body}"
    );
    bridge.stop(Vec::new()).await;
}

#[tokio::test]
async fn a_bridge_without_a_token_is_read_only() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |c| c.publish_token = None).await;
    // Presenting a token to a bridge that has none is a configuration mistake: refused.
    assert_eq!(
        bridge.refused_status(bridge.request(Some(TOKEN))).await,
        401
    );

    let mut client = bridge.connect_read_only().await;
    publish(&redis, "still delivered").await;
    assert_eq!(
        next_data(&mut client).await,
        Message::text("still delivered")
    );
    client.send(Message::text("refused")).await.unwrap();
    let (code, reason, _) = expect_close(&mut client).await;
    assert_eq!((code, reason.as_str()), close::BRIDGE_READ_ONLY);
    assert_eq!(bridge.stats.snapshot().published, 0);
    bridge.stop(Vec::new()).await;
}

#[tokio::test]
async fn a_browser_from_a_foreign_origin_is_refused_even_with_the_token() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |c| {
        c.allowed_origins = vec!["http://localhost:8080".into()];
    })
    .await;
    let foreign = browser_request(&bridge, "http://evil.example", Some(TOKEN));
    assert_eq!(bridge.refused_status(foreign).await, 403);
    let foreign = browser_request(&bridge, "http://localhost:8081", None);
    assert_eq!(bridge.refused_status(foreign).await, 403);
    let allowed = bridge
        .connect_with(browser_request(&bridge, "http://localhost:8080", None))
        .await;
    bridge.wait_clients(1).await;
    bridge.stop([allowed]).await;
}

/// A `wss://` client connection (TLS under the WebSocket).
type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Opens a `wss://` connection to `bridge` (named `localhost`), trusting `ca` (or only the
/// public roots), presenting the publish token.
async fn connect_wss(
    bridge: &Running,
    ca: Option<&std::path::Path>,
) -> Result<Wss, Box<dyn std::error::Error>> {
    let config = service_kit::tls::client_config(ca)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = TcpStream::connect(bridge.addr).await?;
    let tls = timeout(
        STEP,
        connector.connect(ServerName::try_from("localhost")?, tcp),
    )
    .await??;
    let url = format!("wss://localhost:{}/", bridge.addr.port());
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {TOKEN}"))?,
    );
    let (ws, _) = timeout(STEP, tokio_tungstenite::client_async(request, tls)).await??;
    Ok(ws)
}

/// The next data message on a `wss://` connection.
async fn next_wss_data(ws: &mut Wss) -> Message {
    loop {
        match timeout(STEP, ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn wss_clients_that_trust_the_test_ca_connect_and_others_are_refused() {
    let pki = TestPki::generate().unwrap();
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |c| {
        c.tls_cert = Some(pki.cert_file());
        c.tls_key = Some(pki.key_file());
    })
    .await;

    let mut trusting = connect_wss(&bridge, Some(&pki.ca_file())).await.unwrap();
    trusting.send(Message::text("over tls")).await.unwrap();
    assert_eq!(
        next_wss_data(&mut trusting).await,
        Message::text("over tls")
    );

    let error = connect_wss(&bridge, None).await.unwrap_err();
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
    // Plain ws:// to the TLS port is not served either.
    assert!(
        timeout(STEP, tokio_tungstenite::connect_async(bridge.url()))
            .await
            .unwrap()
            .is_err()
    );
    trusting.close(None).await.unwrap();
    bridge.wait_clients(0).await;
    bridge.stop(Vec::new()).await;
}

#[tokio::test]
async fn bind_refuses_bad_tls_and_token_settings_naming_them() {
    let pki = TestPki::generate().unwrap();
    let base = || {
        let mut config = Config::new("redis://127.0.0.1:1/");
        config.listen = "127.0.0.1:0".parse().unwrap();
        config
    };
    let message = |config: Config| async move {
        format!("{:#}", redis_ws_bridge::bind(config).await.unwrap_err())
    };

    let mut half = base();
    half.tls_cert = Some(pki.cert_file());
    assert!(message(half).await.contains("--tls-key"));

    let mut missing = base();
    missing.tls_cert = Some(pki.dir().join("absent.pem"));
    missing.tls_key = Some(pki.key_file());
    assert!(message(missing).await.contains("absent.pem"));

    let mut unset = base();
    unset.publish_token_env = Some("REDIS_WS_BRIDGE_TEST_UNSET_TOKEN".into());
    let text = message(unset).await;
    assert!(text.contains("REDIS_WS_BRIDGE_TEST_UNSET_TOKEN"), "{text}");

    let mut ca_without_tls = base();
    ca_without_tls.redis_ca_file = Some(pki.ca_file());
    assert!(message(ca_without_tls).await.contains("rediss://"));
}

/// Runs the real binary with `args` and `env`; it must exit (with failure) on its own.
async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_redis-ws-bridge"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("BRIDGE_PUBLISH_TOKEN_ENV")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = timeout(STEP, command.output())
        .await
        .expect("the bridge exits by itself")
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_binary_refuses_to_start_with_half_a_tls_setup_or_a_bad_token() {
    let (ok, stderr) = run_binary(&["--tls-cert", "cert.pem"], &[]).await;
    assert!(!ok);
    assert!(stderr.contains("--tls-key"), "{stderr}");

    let (ok, stderr) = run_binary(&["--publish-token-env", "BRIDGE_TEST_TOKEN"], &[]).await;
    assert!(!ok);
    assert!(stderr.contains("BRIDGE_TEST_TOKEN"), "{stderr}");

    let (ok, stderr) = run_binary(
        &["--publish-token-env", "BRIDGE_TEST_TOKEN"],
        &[("BRIDGE_TEST_TOKEN", "short")],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("at least 16"), "{stderr}");
    assert!(
        !stderr.contains("short\""),
        "the token must not be shown: {stderr}"
    );
}

#[tokio::test]
async fn a_rediss_server_with_a_private_ca_serves_both_publishing_and_the_subscription() {
    let pki = TestPki::generate().unwrap();
    let redis = RedisServer::start_tls(&pki).await.unwrap();
    let mut config = test_config(&redis);
    config.redis_ca_file = Some(pki.ca_file());
    let bridge = Running::start(config).await;
    bridge.wait_redis(true).await;
    let mut client = bridge.connect().await;
    client
        .send(Message::text("through tls redis"))
        .await
        .unwrap();
    assert_eq!(
        next_data(&mut client).await,
        Message::text("through tls redis")
    );
    bridge.stop([client]).await;
}
