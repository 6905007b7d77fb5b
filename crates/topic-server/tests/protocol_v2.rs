//! Protocol version 2 on the wire, with a raw client: version negotiation, sequence numbers,
//! the limits in `connected`, heartbeats both ways, resuming a session (and every way a resume
//! is refused), and the distinct error codes of undecodable requests.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::time::{Duration, Instant};

use common::{Client, Event, TestServer};
use diffusion_core::protocol::{ErrorCode, ServerMessage, SessionLimits};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(300);

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.heartbeat_interval = INTERVAL;
        c.heartbeat_timeout = TIMEOUT;
        c.reconnect_window = Duration::from_secs(30);
    })
    .await
}

/// The token of a `connected`, checking the fields every version-2 `connected` has.
fn token_of(connected: &ServerMessage) -> String {
    match connected {
        ServerMessage::Connected {
            version: 2,
            token: Some(token),
            limits: Some(limits),
            ..
        } => {
            assert_eq!(token.len(), 32, "{token}");
            assert_eq!(
                *limits,
                SessionLimits {
                    max_message_bytes: 1024 * 1024,
                    queue_limit_bytes: 1024 * 1024,
                    heartbeat_interval_ms: 300,
                    heartbeat_timeout_ms: 300,
                    reconnect_window_ms: limits.reconnect_window_ms,
                }
            );
            token.clone()
        }
        other => panic!("expected a version-2 connected, got {other:?}"),
    }
}

fn error_code(message: &ServerMessage) -> ErrorCode {
    match message {
        ServerMessage::Error { code, message, .. } => {
            assert!(!message.is_empty());
            *code
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn versions_are_negotiated() {
    let server = server().await;
    // A version-1 client keeps version 1: no token, no sequence numbers.
    let mut v1 = Client::open(&server.ws_url()).await;
    v1.handshake().await;
    v1.ping().await;
    assert!(v1.seqs.is_empty(), "{:?}", v1.seqs);
    // A client offering both gets the highest.
    let mut v2 = Client::open(&server.ws_url()).await;
    let connected = v2.handshake_v2(json!({})).await;
    token_of(&connected);
    assert!(v2.seqs.is_empty(), "connected carries no sequence number");
    v2.ping().await;
    v2.ping().await;
    assert_eq!(v2.seqs, [1, 2]);
    // Offering only unknown versions is refused clearly, then closed with 1002.
    let mut v9 = Client::open(&server.ws_url()).await;
    v9.send_json(&json!({"type":"connect","versions":[9, 3]}))
        .await;
    let refusal = v9.next().await;
    assert_eq!(error_code(&refusal), ErrorCode::UnsupportedVersion);
    assert!(format!("{refusal:?}").contains("[9, 3]"), "{refusal:?}");
    assert_eq!(v9.expect_close().await.code, CloseCode::Protocol);
    server.stop().await;
}

#[tokio::test]
async fn every_message_after_connected_is_numbered_in_order() {
    let server = server().await;
    let mut c = Client::open(&server.ws_url()).await;
    c.handshake_v2(json!({})).await;
    c.ok(json!({"type":"add","path":"a","topicType":"STRING","value":"x"}))
        .await;
    c.ok(json!({"type":"subscribe","selector":"a"})).await;
    c.ok(json!({"type":"set","path":"a","value":"y"})).await;
    let before_pong = c.until_pong().await;
    assert!(before_pong.len() >= 2, "{before_pong:?}"); // subscribed + values
    let expected: Vec<u64> = (1..=c.seqs.len() as u64).collect();
    assert_eq!(c.seqs, expected, "one number per message, from 1, no gaps");
    server.stop().await;
}

#[tokio::test]
async fn undecodable_requests_get_distinct_codes_in_version_2() {
    let server = server().await;
    let mut c = Client::open(&server.ws_url()).await;
    c.handshake_v2(json!({})).await;
    let cases: [(Message, ErrorCode); 7] = [
        (Message::text("{not json"), ErrorCode::NotJson),
        (
            Message::text(r#"{"type":"explode","cid":1}"#),
            ErrorCode::UnknownOperation,
        ),
        (Message::text(r#"{"cid":2}"#), ErrorCode::MissingField),
        (
            Message::text(r#"{"type":"set","cid":3,"value":1}"#),
            ErrorCode::MissingField,
        ),
        (
            Message::text(r#"{"type":"subscribe","cid":4,"selector":7}"#),
            ErrorCode::InvalidField,
        ),
        (Message::binary(vec![1u8, 2, 3]), ErrorCode::BinaryFrame),
        // An ack of a message never sent.
        (
            Message::text(r#"{"type":"ack","s":999}"#),
            ErrorCode::InvalidField,
        ),
    ];
    for (frame, code) in cases {
        c.send_raw(frame.clone()).await;
        let reply = c.next().await;
        assert_eq!(error_code(&reply), code, "{frame:?}");
    }
    // The session is still usable.
    c.ping().await;
    // A version-1 session keeps MALFORMED_MESSAGE for the same inputs, and has no `ack`.
    let mut v1 = server.client().await;
    v1.send_text("{not json").await;
    assert_eq!(error_code(&v1.next().await), ErrorCode::MalformedMessage);
    v1.send_raw(Message::binary(vec![1u8])).await;
    assert_eq!(error_code(&v1.next().await), ErrorCode::MalformedMessage);
    v1.send_text(r#"{"type":"ack","s":0}"#).await;
    assert_eq!(error_code(&v1.next().await), ErrorCode::UnknownOperation);
    server.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_interval_plus_timeout() {
    let server = server().await;
    let mut c = Client::open(&server.ws_url()).await;
    c.handshake_v2(json!({})).await;
    let started = Instant::now();
    // Read (heartbeats arrive) but never answer.
    let frame = match c.next_event().await {
        Event::Closed(Some(frame)) => frame,
        Event::Closed(None) => panic!("closed without a close frame"),
        Event::Message(m) => panic!("unexpected {m:?}"),
    };
    let took = started.elapsed();
    assert_eq!(u16::from(frame.code), 4001, "{frame:?}");
    assert!(c.heartbeats >= 1, "heartbeats were sent first");
    assert!(took >= INTERVAL + TIMEOUT, "{took:?}");
    assert!(
        took < INTERVAL + TIMEOUT + Duration::from_secs(2),
        "{took:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_slow_client_that_answers_heartbeats_stays() {
    let server = server().await;
    let mut c = Client::open(&server.ws_url()).await;
    c.handshake_v2(json!({})).await;
    let until = Instant::now() + (INTERVAL + TIMEOUT) * 4;
    let mut answered = 0;
    while Instant::now() < until {
        let seen = c.heartbeats;
        // A slow reader: it wakes up now and then, and answers what it finds.
        tokio::time::sleep(INTERVAL / 2).await;
        c.ping().await;
        if c.heartbeats > seen {
            c.send_json(&json!({"type":"ack","s":c.seqs.last().copied().unwrap_or(0)}))
                .await;
            answered += 1;
        }
    }
    assert!(answered >= 3, "{answered}");
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn a_version_1_client_gets_websocket_pings_and_is_closed_when_silent() {
    let server = server().await;
    let mut c = server.client().await;
    // The raw client's WebSocket layer answers pings only while it reads; not reading at all
    // is silence.
    tokio::time::sleep(INTERVAL + TIMEOUT + Duration::from_millis(300)).await;
    // Everything queued until the close: the pings were answered late, when read now.
    let frame = c.expect_close().await;
    assert_eq!(u16::from(frame.code), 4001);
    server.stop().await;
}

/// Opens a version-2 session subscribed to a STRING topic `t`, returns the client and token.
async fn subscribed_session(server: &TestServer, topic_properties: Value) -> (Client, String) {
    let mut c = Client::open(&server.ws_url()).await;
    let token = token_of(&c.handshake_v2(json!({})).await);
    c.ok(json!({"type":"add","path":"t","topicType":"STRING","properties":topic_properties,"value":"v0"}))
        .await;
    c.ok(json!({"type":"subscribe","selector":"t"})).await;
    c.ping().await;
    (c, token)
}

async fn set(server: &TestServer, value: &str) {
    let mut publisher = server.client().await;
    publisher
        .ok(json!({"type":"set","path":"t","value":value}))
        .await;
}

#[tokio::test]
async fn a_resumed_session_gets_exactly_what_it_missed() {
    let server = server().await;
    let (c, token) = subscribed_session(
        &server,
        json!({"CONFLATION":"off","PUBLISH_VALUES_ONLY":"true"}),
    )
    .await;
    let processed = *c.seqs.last().unwrap();
    // The connection drops without a close frame... and updates go on meanwhile.
    drop(c);
    for n in 1..=5 {
        set(&server, &format!("v{n}")).await;
    }
    let mut back = Client::open(&server.ws_url()).await;
    let connected = back
        .handshake_v2(json!({"resume":{"token":token,"s":processed}}))
        .await;
    assert!(
        matches!(connected, ServerMessage::Connected { recovered: Some(true), token: Some(ref t), .. } if *t == token),
        "{connected:?}"
    );
    let missed = back.until_pong().await;
    let values: Vec<Value> = missed
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Value { value, .. } => Some(value.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["v1", "v2", "v3", "v4", "v5"]);
    assert_eq!(back.seqs[0], processed + 1, "numbering goes on");
    server.stop().await;
}

#[tokio::test]
async fn resuming_replaces_a_half_open_connection() {
    let server = server().await;
    let (mut old, token) = subscribed_session(&server, json!({})).await;
    let processed = *old.seqs.last().unwrap();
    let mut new = Client::open(&server.ws_url()).await;
    let connected = new
        .handshake_v2(json!({"resume":{"token":token,"s":processed}}))
        .await;
    assert!(matches!(
        connected,
        ServerMessage::Connected {
            recovered: Some(true),
            ..
        }
    ));
    let frame = loop {
        match old.next_event().await {
            Event::Message(_) => {}
            Event::Closed(frame) => break frame.unwrap(),
        }
    };
    assert_eq!(u16::from(frame.code), 4002, "{frame:?}");
    set(&server, "after").await;
    let update = new.next().await;
    assert!(
        matches!(update, ServerMessage::Value { ref value, .. } if value == "after"),
        "{update:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_refused_resume_says_why_and_starts_a_new_session() {
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = INTERVAL;
        c.heartbeat_timeout = TIMEOUT;
        c.reconnect_window = Duration::from_millis(200);
    })
    .await;
    let refused = |connected: &ServerMessage, why: &str| match connected {
        ServerMessage::Connected {
            recovered: Some(false),
            reason: Some(reason),
            token: Some(_),
            ..
        } => assert_eq!(reason, why),
        other => panic!("expected recovered:false ({why}), got {other:?}"),
    };
    // A token nobody issued.
    let mut c = Client::open(&server.ws_url()).await;
    let connected = c
        .handshake_v2(json!({"resume":{"token":"00000000000000000000000000000000","s":0}}))
        .await;
    refused(&connected, "unknown_session");
    c.ping().await;
    // A sequence number ahead of what was sent.
    let (mut a, token) = subscribed_session(&server, json!({})).await;
    let ahead = a.seqs.last().unwrap() + 10;
    let mut b = Client::open(&server.ws_url()).await;
    refused(
        &b.handshake_v2(json!({"resume":{"token":token,"s":ahead}}))
            .await,
        "bad_sequence",
    );
    // The session ends with its connection when the client closes normally.
    a.send_raw(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    })))
    .await;
    let _ = a.next_event().await;
    let mut c2 = Client::open(&server.ws_url()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    // (The close is handled asynchronously: retry until the session is gone.)
    loop {
        let connected = c2
            .handshake_v2(json!({"resume":{"token":token,"s":0}}))
            .await;
        match connected {
            ServerMessage::Connected {
                recovered: Some(false),
                ..
            } => {
                refused(&connected, "unknown_session");
                break;
            }
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "session outlived its normal close"
                );
                c2 = Client::open(&server.ws_url()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // After the reconnect window a dropped session is gone too.
    let (d, token) = subscribed_session(&server, json!({})).await;
    drop(d);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut e = Client::open(&server.ws_url()).await;
    refused(
        &e.handshake_v2(json!({"resume":{"token":token,"s":1}}))
            .await,
        "unknown_session",
    );
    server.stop().await;
}
