//! `VALIDATE_VALUES`: strict topics take only the type's wire form; lenient ones (the default)
//! also take values that convert.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use common::{Client, TestServer};
use diffusion_core::protocol::{ErrorCode, ServerMessage};
use serde_json::{Value, json};

async fn fetch(c: &mut Client, path: &str) -> Option<Value> {
    match c
        .request(json!({"type":"fetch","selector":format!(">{path}")}))
        .await
    {
        ServerMessage::Fetched { topics, .. } => topics[0].value.clone(),
        other => panic!("expected fetched, got {other:?}"),
    }
}

async fn invalid(c: &mut Client, request: Value) -> String {
    match c.request(request.clone()).await {
        ServerMessage::Error {
            code: ErrorCode::InvalidValue,
            message,
            ..
        } => message,
        other => panic!("{request} -> expected INVALID_VALUE, got {other:?}"),
    }
}

#[tokio::test]
async fn lenient_topics_convert_values() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for (path, ty) in [("s", "STRING"), ("i", "INT64"), ("d", "DOUBLE")] {
        c.ok(json!({"type":"add","path":path,"topicType":ty})).await;
    }
    let cases = [
        ("s", json!(42), json!("42")),
        ("s", json!(2.5), json!("2.5")),
        ("s", json!(true), json!("true")),
        ("i", json!("42"), json!(42)),
        ("i", json!(-7.0), json!(-7)),
        ("d", json!("2.5"), json!(2.5)),
        ("d", json!("-1e3"), json!(-1000.0)),
        // The wire form itself, unchanged.
        ("i", json!(5), json!(5)),
    ];
    for (path, given, held) in cases {
        c.ok(json!({"type":"set","path":path,"value":given})).await;
        assert_eq!(fetch(&mut c, path).await, Some(held), "{path} <- {given}");
    }
    // Initial values on `add` convert too.
    c.ok(json!({"type":"add","path":"i2","topicType":"INT64","value":"9"}))
        .await;
    assert_eq!(fetch(&mut c, "i2").await, Some(json!(9)));

    // What does not convert is refused, and the value is unchanged.
    for (path, bad) in [
        ("i", json!("4.5")),
        ("i", json!(4.5)),
        ("i", json!("1e400")),
        ("d", json!("NaN")),
        ("d", json!("twelve")),
        ("s", json!({"a":1})),
    ] {
        let message = invalid(&mut c, json!({"type":"set","path":path,"value":bad})).await;
        assert!(!message.is_empty());
    }
    assert_eq!(fetch(&mut c, "i").await, Some(json!(5)));
    server.stop().await;
}

#[tokio::test]
async fn strict_topics_take_only_the_wire_form() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let strict = json!({"VALIDATE_VALUES":"true"});
    for (path, ty, value) in [
        ("s", "STRING", json!("x")),
        ("i", "INT64", json!(1)),
        ("d", "DOUBLE", json!(1.5)),
    ] {
        c.ok(json!({"type":"add","path":path,"topicType":ty,"properties":strict,"value":value}))
            .await;
    }
    for (path, convertible) in [
        ("s", json!(42)),
        ("i", json!("42")),
        ("i", json!(42.0)),
        ("d", json!("2.5")),
    ] {
        let message = invalid(
            &mut c,
            json!({"type":"set","path":path,"value":convertible}),
        )
        .await;
        assert!(message.contains("VALIDATE_VALUES"), "{message}");
    }
    assert_eq!(fetch(&mut c, "i").await, Some(json!(1)));
    // `add` with a value that only a lenient topic converts creates nothing.
    invalid(
        &mut c,
        json!({"type":"add","path":"i2","topicType":"INT64","properties":strict,"value":"3"}),
    )
    .await;
    let reply = c.request(json!({"type":"fetch","selector":">i2"})).await;
    assert!(
        matches!(&reply, ServerMessage::Fetched { topics, .. } if topics.is_empty()),
        "{reply:?}"
    );
    // The wire form is fine.
    c.ok(json!({"type":"set","path":"i","value":42})).await;
    assert_eq!(fetch(&mut c, "i").await, Some(json!(42)));
    server.stop().await;
}
