//! Authentication and TLS in the client, against the scripted fake server: what `connect`
//! carries, refusals that end the client for good (close codes 4003 and 4004, no reconnection),
//! and `wss://` with a private CA.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

use std::time::Duration;

use diffusion_core::protocol::{ClientMessage, ServerMessage};
use service_kit::testing::TestPki;
use tokio::time::timeout;
use topic_client::testing::{FakeServer, PATIENCE, Peer};
use topic_client::{
    ClientError, ConnectOptions, Credentials, ErrorCode, Refusal, TopicClient, TopicEvent,
};

/// Long enough for a client that (wrongly) reconnects to dial again: its first back-off is
/// about 100 ms.
const REDIAL_WINDOW: Duration = Duration::from_millis(1500);

/// A test CA and a TLS server configuration whose certificate it signed.
fn pki() -> (TestPki, std::sync::Arc<rustls::ServerConfig>) {
    let pki = TestPki::generate().unwrap();
    let config = service_kit::tls::server_config(&pki.cert_file(), &pki.key_file()).unwrap();
    (pki, config)
}

/// Sends an uncorrelated `error` and closes with `close_code`, as the server refuses a session.
async fn refuse(peer: &mut Peer, code: ErrorCode, message: &str, close_code: u16, reason: &str) {
    peer.send(&[ServerMessage::Error {
        cid: None,
        code,
        message: message.to_owned(),
    }])
    .await;
    peer.send_close(close_code, reason).await;
}

#[tokio::test]
async fn a_token_is_sent_in_connect_and_never_shown_by_debug() {
    let server = FakeServer::start(|mut peer| async move {
        let hello = peer.handshake().await;
        let ClientMessage::Connect {
            token,
            principal,
            credentials,
            ..
        } = hello
        else {
            panic!("expected connect, got {hello:?}");
        };
        assert_eq!(token.as_deref(), Some("header.claims.signature"));
        assert_eq!((principal, credentials), (None, None));
        assert!(peer.closed_by_client().await);
    })
    .await;
    let options = ConnectOptions::token("header.claims.signature");
    assert!(!format!("{options:?}").contains("signature"), "{options:?}");
    let password = ConnectOptions::password("alice", "hunter2");
    let shown = format!("{password:?}");
    assert!(
        shown.contains("alice") && !shown.contains("hunter2"),
        "{shown}"
    );

    let client = TopicClient::connect(&server.url, options).await.unwrap();
    client.close().await;
    server.finish().await;
}

#[tokio::test]
async fn refused_authentication_at_connect_is_a_refusal_with_its_code() {
    let server = FakeServer::start(|mut peer| async move {
        let _hello = peer.recv().await;
        refuse(
            &mut peer,
            ErrorCode::AuthenticationFailed,
            "authentication failed",
            4003,
            "authentication failed",
        )
        .await;
    })
    .await;
    let err = TopicClient::connect(&server.url, ConnectOptions::password("alice", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "authentication refused (AUTHENTICATION_FAILED): authentication failed"
    );
    assert!(
        matches!(
            &err,
            ClientError::Refused(Refusal::Authentication {
                code: ErrorCode::AuthenticationFailed,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), Some(ErrorCode::AuthenticationFailed));
    server.finish().await;
}

#[tokio::test]
async fn rate_limited_at_connect_and_a_bare_4003_are_refusals_too() {
    let server = FakeServer::start(|mut peer| async move {
        let _hello = peer.recv().await;
        refuse(
            &mut peer,
            ErrorCode::RateLimited,
            "too many failed attempts",
            4003,
            "authentication failed",
        )
        .await;
    })
    .await;
    let err = TopicClient::connect(&server.url, ConnectOptions::password("alice", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err:?}");
    server.finish().await;

    // A close frame alone (no `error` before it) says the same.
    let server = FakeServer::start(|mut peer| async move {
        let _hello = peer.recv().await;
        peer.send_close(4003, "authentication failed").await;
    })
    .await;
    let err = TopicClient::connect(&server.url, ConnectOptions::token("expired"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(Refusal::Authentication { code: ErrorCode::AuthenticationFailed, message }) if message == "authentication failed"),
        "{err:?}"
    );
    server.finish().await;
}

#[tokio::test]
async fn a_session_refused_with_4003_ends_without_reconnecting() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        refuse(
            &mut peer,
            ErrorCode::AuthenticationFailed,
            "principal removed",
            4003,
            "authentication failed",
        )
        .await;
        assert!(
            !peer.dials_again_within(REDIAL_WINDOW).await,
            "the refused client dialled again"
        );
    })
    .await;
    let client = TopicClient::connect(&server.url, ConnectOptions::password("alice", "secret"))
        .await
        .unwrap();
    timeout(PATIENCE, client.closed())
        .await
        .expect("the client did not close after 4003");
    let expected = Refusal::Authentication {
        code: ErrorCode::AuthenticationFailed,
        message: "principal removed".to_owned(),
    };
    assert_eq!(client.refusal(), Some(expected.clone()));
    assert_eq!(client.next_event().await, None);
    match client.ping().await {
        Err(ClientError::Refused(refusal)) => assert_eq!(refusal, expected),
        other => panic!("expected the refusal, got {other:?}"),
    }
    server.finish().await;
}

#[tokio::test]
async fn an_expired_token_fails_the_request_in_flight_and_ends_without_reconnecting() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        // A request arrives; the token expires before it is answered.
        assert!(matches!(peer.recv().await, ClientMessage::Ping { .. }));
        peer.send_close(4004, "token expired").await;
        assert!(
            !peer.dials_again_within(REDIAL_WINDOW).await,
            "the expired client dialled again"
        );
    })
    .await;
    let client = TopicClient::connect(&server.url, ConnectOptions::token("a.b.c"))
        .await
        .unwrap();
    let expired = Refusal::TokenExpired {
        reason: "token expired".to_owned(),
    };
    match client.ping().await {
        Err(ClientError::Refused(refusal)) => assert_eq!(refusal, expired),
        other => panic!("expected the token's expiry, got {other:?}"),
    }
    assert!(client.is_closed());
    assert_eq!(client.refusal(), Some(expired));
    assert_eq!(
        client.ping().await.unwrap_err().to_string(),
        "the session's token expired (close code 4004): token expired"
    );
    server.finish().await;
}

/// The control for the two tests above: the same check sees a client that does reconnect.
#[tokio::test]
async fn after_an_ordinary_close_the_client_dials_again() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        peer.send_close(4001, "heartbeat timeout").await;
        assert!(
            peer.dials_again_within(PATIENCE).await,
            "the client did not reconnect"
        );
    })
    .await;
    let client = TopicClient::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    server.finish().await;
    assert_eq!(client.refusal(), None);
    drop(client);
}

#[tokio::test]
async fn wss_with_the_private_ca_connects_and_authenticates() {
    let (pki, tls) = pki();
    let server = FakeServer::start_tls(tls, |mut peer| async move {
        let hello = peer.handshake().await;
        assert_eq!(
            hello,
            ClientMessage::connect_v2(&Credentials::Token("a.b.c".to_owned()), None)
        );
        peer.send(&[ServerMessage::Subscribed {
            id: 1,
            path: "secure/topic".to_owned(),
            topic_type: topic_client::TopicType::Json,
            properties: Default::default(),
        }])
        .await;
        assert!(peer.closed_by_client().await);
    })
    .await;
    assert!(server.url.starts_with("wss://127.0.0.1:"), "{}", server.url);
    let client = TopicClient::connect(
        &server.url,
        ConnectOptions::token("a.b.c").with_ca_file(pki.ca_file()),
    )
    .await
    .unwrap();
    let event = timeout(PATIENCE, client.next_event()).await.unwrap();
    assert!(
        matches!(&event, Some(TopicEvent::Subscribed { path, .. }) if path == "secure/topic"),
        "{event:?}"
    );
    client.close().await;
    server.finish().await;
}

#[tokio::test]
async fn wss_without_the_ca_refuses_the_server_certificate() {
    let (_pki, tls) = pki();
    // Never reaches the script: the client refuses the certificate during the TLS handshake.
    let server = FakeServer::start_tls(tls, |_peer| async {}).await;
    let err = TopicClient::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreadable_ca_file_is_reported_before_dialling() {
    let (pki, _) = pki();
    let missing = pki.dir().join("absent.pem");
    // Nothing listens there: the error must come from the CA file, not the network.
    let err = TopicClient::connect(
        "wss://127.0.0.1:9/",
        ConnectOptions::default().with_ca_file(&missing),
    )
    .await
    .unwrap_err();
    assert!(matches!(&err, ClientError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("absent.pem"), "{err}");
}
