//! Every bad input gets its own error code, and (except where the protocol says the session
//! ends) the session stays usable.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use common::{Client, TestServer};
use diffusion_core::protocol::{ErrorCode, ServerMessage};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn expect_error(message: ServerMessage, code: ErrorCode, cid: Option<u64>) -> String {
    match message {
        ServerMessage::Error {
            cid: got_cid,
            code: got,
            message,
        } => {
            assert_eq!(got, code, "{message}");
            if cid.is_some() {
                assert_eq!(got_cid, cid, "{message}");
            }
            assert!(!message.is_empty());
            message
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

async fn request_error(client: &mut Client, request: Value, code: ErrorCode) -> String {
    let reply = client.request(request).await;
    expect_error(reply, code, None)
}

#[tokio::test]
async fn messages_before_connect_need_the_handshake() {
    let server = TestServer::start().await;
    let mut c = Client::open(&server.ws_url()).await;
    c.send_json(&json!({"type":"subscribe","cid":7,"selector":"a"}))
        .await;
    expect_error(c.next().await, ErrorCode::HandshakeRequired, Some(7));
    // Decoding errors keep their own codes even before the handshake.
    c.send_text("{nope").await;
    expect_error(c.next().await, ErrorCode::MalformedMessage, None);
    // The session is still open and can connect now; a second connect is refused.
    c.handshake().await;
    c.send_json(&json!({"type":"connect","version":1})).await;
    expect_error(c.next().await, ErrorCode::HandshakeRequired, None);
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_version_is_refused_and_closed() {
    let server = TestServer::start().await;
    let mut c = Client::open(&server.ws_url()).await;
    c.send_json(&json!({"type":"connect","version":99})).await;
    let text = expect_error(c.next().await, ErrorCode::UnsupportedVersion, None);
    assert!(text.contains("99"), "{text}");
    let frame = c.expect_close().await;
    assert_eq!(frame.code, CloseCode::Protocol);
    server.stop().await;
}

#[tokio::test]
async fn each_bad_request_gets_its_code_and_the_session_survives() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.ok(json!({"type":"add","path":"ok/int","topicType":"INT64","value":1}))
        .await;

    // Not JSON at all.
    c.send_text("this is not json").await;
    let text = expect_error(c.next().await, ErrorCode::MalformedMessage, None);
    assert!(text.contains("not valid JSON"), "{text}");
    c.ping().await;

    // Unknown operation: the cid is still echoed.
    c.send_json(&json!({"type":"explode","cid":41})).await;
    let text = expect_error(c.next().await, ErrorCode::UnknownOperation, Some(41));
    assert!(text.contains("explode"), "{text}");
    c.ping().await;

    // A known operation with missing / ill-typed fields.
    c.send_json(&json!({"type":"set","cid":42,"path":"ok/int"}))
        .await;
    expect_error(c.next().await, ErrorCode::MalformedMessage, Some(42));
    c.send_json(&json!({"type":"add","cid":43,"path":"x","topicType":"TIME"}))
        .await;
    expect_error(c.next().await, ErrorCode::MalformedMessage, Some(43));
    c.send_json(&json!({"cid":44})).await;
    expect_error(c.next().await, ErrorCode::MalformedMessage, Some(44));
    c.ping().await;

    // Invalid and reserved paths.
    for path in ["a//b", "/a", "", "Diffusion/metrics", "$sys"] {
        let text = request_error(
            &mut c,
            json!({"type":"add","path":path,"topicType":"JSON"}),
            ErrorCode::InvalidPath,
        )
        .await;
        assert!(!text.is_empty());
    }
    request_error(
        &mut c,
        json!({"type":"set","path":"a//b","value":1}),
        ErrorCode::InvalidPath,
    )
    .await;

    // Invalid selectors, for every operation that takes one.
    for op in ["subscribe", "unsubscribe", "fetch", "remove"] {
        for selector in ["?a/(", "", "#>a////", "$x"] {
            request_error(
                &mut c,
                json!({"type":op,"selector":selector}),
                ErrorCode::InvalidSelector,
            )
            .await;
        }
    }

    // Bad properties: unknown key, bad value.
    let text = request_error(
        &mut c,
        json!({"type":"add","path":"p","topicType":"JSON","properties":{"NOPE":"1"}}),
        ErrorCode::InvalidProperties,
    )
    .await;
    assert!(text.contains("NOPE"), "{text}");
    request_error(
        &mut c,
        json!({"type":"add","path":"p","topicType":"JSON","properties":{"CONFLATION":"sometimes"}}),
        ErrorCode::InvalidProperties,
    )
    .await;

    // Values of the wrong type, on set and on add (where nothing is created).
    let text = request_error(
        &mut c,
        json!({"type":"set","path":"ok/int","value":"seven"}),
        ErrorCode::InvalidValue,
    )
    .await;
    assert!(text.contains("INT64"), "{text}");
    request_error(
        &mut c,
        json!({"type":"set","path":"ok/int","value":1.5}),
        ErrorCode::InvalidValue,
    )
    .await;
    request_error(
        &mut c,
        json!({"type":"add","path":"bin","topicType":"BINARY","value":"not base64!"}),
        ErrorCode::InvalidValue,
    )
    .await;
    request_error(
        &mut c,
        json!({"type":"set","path":"bin","value":"AA=="}),
        ErrorCode::NoSuchTopic,
    )
    .await;

    // Missing topic.
    let text = request_error(
        &mut c,
        json!({"type":"set","path":"missing/topic","value":1}),
        ErrorCode::NoSuchTopic,
    )
    .await;
    assert!(text.contains("missing/topic"), "{text}");

    // Binary frames are not part of the protocol.
    c.send_raw(Message::binary(vec![1, 2, 3])).await;
    expect_error(c.next().await, ErrorCode::MalformedMessage, None);

    // Nothing was lost: the good topic still has its value and the session works.
    let reply = c.request(json!({"type":"fetch","selector":"*.*"})).await;
    let ServerMessage::Fetched { topics, .. } = reply else {
        panic!("expected fetched, got {reply:?}")
    };
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].value, Some(json!(1)));
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn oversize_message_is_refused_and_closed_with_1009() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 4096).await;
    let mut c = server.client().await;
    let big = format!(
        r#"{{"type":"set","cid":1,"path":"a","value":"{}"}}"#,
        "x".repeat(5000)
    );
    c.send_text(&big).await;
    let text = expect_error(c.next().await, ErrorCode::MessageTooLarge, None);
    assert!(text.contains("4096"), "{text}");
    let frame = c.expect_close().await;
    assert_eq!(frame.code, CloseCode::Size);

    // Far past the limit, the WebSocket layer refuses the frame itself; still the same answer.
    let mut c = server.client().await;
    c.send_text(&"y".repeat(200_000)).await;
    expect_error(c.next().await, ErrorCode::MessageTooLarge, None);
    assert_eq!(c.expect_close().await.code, CloseCode::Size);

    // A message just under the limit is fine.
    let mut c = server.client().await;
    c.ok(json!({"type":"add","path":"a","topicType":"STRING","value":"z".repeat(3000)}))
        .await;
    server.stop().await;
}
