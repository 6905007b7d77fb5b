//! backend-app when the topic server refuses it: it stops with a clear error and a non-zero
//! status instead of retrying for ever (refused authentication, expired token, no permission
//! for its topic, unusable CA file) — against topic-client's scripted fake server.

#![allow(clippy::unwrap_used)] // a test: failures should stop it

use std::time::Duration;

use backend_app::{Config, Relay, SourceUrl};
use diffusion_core::protocol::{ClientMessage, ErrorCode, ServerMessage};
use tokio_util::sync::CancellationToken;
use topic_client::cli::IdentityArgs;
use topic_client::testing::{FakeServer, PATIENCE, Peer};

/// Long enough for a relay that (wrongly) retries to dial again: its first back-off is about
/// 100 ms.
const REDIAL_WINDOW: Duration = Duration::from_millis(1500);

/// A bridge URL where nothing listens: the source keeps retrying in the background, which is
/// all these tests need of it.
const NO_BRIDGE: &str = "ws://127.0.0.1:9/";

fn config(topic_server: &str, identity: IdentityArgs) -> Config {
    Config {
        from: SourceUrl::Bridge(NO_BRIDGE.to_owned()),
        channel: "unused".to_owned(),
        topic_server: topic_server.to_owned(),
        topic: "relay/latest".to_owned(),
        identity,
        redis_ca_file: None,
        max_message_bytes: 1024,
    }
}

/// Runs the relay until it ends by itself (it must, within [`PATIENCE`]).
async fn run_to_the_end(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::time::timeout(PATIENCE, Relay::new(config).run(shutdown))
        .await
        .expect("the relay kept running after a refusal")
}

/// Answers the relay's `add` and `subscribe` with `ok`.
async fn accept_the_relay(peer: &mut Peer) {
    for expected in ["add", "subscribe"] {
        let request = peer.recv().await;
        let kind = match request {
            ClientMessage::Add { .. } => "add",
            ClientMessage::Subscribe { .. } => "subscribe",
            _ => "other",
        };
        assert_eq!(kind, expected, "{request:?}");
        peer.send(&[ServerMessage::Ok {
            cid: request.cid().unwrap(),
        }])
        .await;
    }
}

#[tokio::test]
async fn refused_authentication_exits_1_with_the_code_and_no_retry() {
    let server = FakeServer::start(|mut peer| async move {
        let hello = peer.recv().await;
        assert!(
            matches!(&hello, ClientMessage::Connect { principal: Some(p), credentials: Some(c), .. } if p == "backend" && c == "wrong"),
            "{hello:?}"
        );
        peer.send(&[ServerMessage::Error {
            cid: None,
            code: ErrorCode::AuthenticationFailed,
            message: "authentication failed".to_owned(),
        }])
        .await;
        peer.send_close(4003, "authentication failed").await;
        assert!(
            !peer.dials_again_within(REDIAL_WINDOW).await,
            "backend-app dialled again after 4003"
        );
    })
    .await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_backend-app"));
    command
        .args(["--from", NO_BRIDGE, "--topic-server", &server.url])
        .args(["--principal", "backend"])
        .env("TOPIC_CREDENTIALS", "wrong")
        .env_remove("TOPIC_TOKEN")
        .env_remove("TOPIC_CA_FILE")
        .kill_on_drop(true);
    let out = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("backend-app kept running after a refused authentication")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("AUTHENTICATION_FAILED"), "{stderr}");
    server.finish().await;
}

#[tokio::test]
async fn an_expired_token_ends_the_relay_without_reconnecting() {
    let server = FakeServer::start(|mut peer| async move {
        let hello = peer.handshake().await;
        assert!(
            matches!(&hello, ClientMessage::Connect { token: Some(t), .. } if t == "the.jwt"),
            "{hello:?}"
        );
        accept_the_relay(&mut peer).await;
        peer.send_close(4004, "token expired").await;
        assert!(
            !peer.dials_again_within(REDIAL_WINDOW).await,
            "backend-app dialled again after 4004"
        );
    })
    .await;
    let identity = IdentityArgs {
        token: Some("the.jwt".to_owned()),
        ..IdentityArgs::default()
    };
    let err = run_to_the_end(config(&server.url, identity))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("token expired"), "{err}");
    server.finish().await;
}

#[tokio::test]
async fn no_permission_for_its_topic_ends_the_relay() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let add = peer.recv().await;
        assert!(matches!(add, ClientMessage::Add { .. }), "{add:?}");
        peer.send(&[ServerMessage::Error {
            cid: add.cid(),
            code: ErrorCode::PermissionDenied,
            message: "MODIFY_TOPIC is needed".to_owned(),
        }])
        .await;
        // backend-app closes the refused connection and does not come back.
        let _ = peer.next().await;
        assert!(!peer.dials_again_within(REDIAL_WINDOW).await);
    })
    .await;
    let err = run_to_the_end(config(&server.url, IdentityArgs::default()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("PERMISSION_DENIED"), "{err}");
    server.finish().await;
}

#[tokio::test]
async fn bad_identity_flags_or_ca_file_stop_it_before_connecting() {
    let principal_only = IdentityArgs {
        principal: Some("backend".to_owned()),
        ..IdentityArgs::default()
    };
    // Nothing listens on the topic server's URL: the errors must come before any dialling.
    let err = run_to_the_end(config("ws://127.0.0.1:9/", principal_only))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--credentials"), "{err}");

    let missing_ca = IdentityArgs {
        ca_file: Some(std::env::temp_dir().join("backend-app-no-such-ca.pem")),
        ..IdentityArgs::default()
    };
    let err = run_to_the_end(config("wss://127.0.0.1:9/", missing_ca))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("backend-app-no-such-ca.pem"),
        "{err}"
    );
}
