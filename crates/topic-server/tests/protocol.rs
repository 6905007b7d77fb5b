//! The protocol's happy paths, over real WebSocket connections.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::collections::BTreeMap;

use common::{Client, TestServer, subscribed_id, value_of};
use diffusion_core::TopicType;
use diffusion_core::protocol::{ErrorCode, ServerMessage};
use serde_json::json;

#[tokio::test]
async fn handshake_at_ws_and_at_root() {
    let server = TestServer::start().await;
    let mut at_ws = Client::open(&server.ws_url()).await;
    at_ws.handshake().await;
    at_ws.ping().await;
    // `ws://host:port` (path `/`) upgrades too.
    let mut at_root = Client::open(&format!("ws://{}", server.addr)).await;
    at_root
        .send_json(&json!({"type":"connect","version":1,"principal":"alice","credentials":"x"}))
        .await;
    assert!(matches!(
        at_root.next().await,
        ServerMessage::Connected { version: 1, .. }
    ));
    at_root.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn add_set_subscribe_delivers_notice_then_value() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut subscriber = server.client().await;
    publisher
        .ok(
            json!({"type":"add","path":"redis/bitcoin","topicType":"JSON",
                   "properties":{"CONFLATION":"always"}}),
        )
        .await;
    publisher
        .ok(json!({"type":"set","path":"redis/bitcoin","value":{"usd":1.5,"a":[1]}}))
        .await;
    subscriber
        .ok(json!({"type":"subscribe","selector":">redis/bitcoin"}))
        .await;
    let notice = subscriber.next().await;
    let ServerMessage::Subscribed {
        id,
        path,
        topic_type,
        properties,
    } = notice
    else {
        panic!("expected subscribed, got {notice:?}");
    };
    assert_eq!(path, "redis/bitcoin");
    assert_eq!(topic_type, TopicType::Json);
    assert_eq!(properties["CONFLATION"], "always");
    assert_eq!(properties["DONT_RETAIN_VALUE"], "false");
    assert_eq!(
        value_of(&subscriber.next().await, id),
        json!({"a":[1],"usd":1.5})
    );

    publisher
        .ok(json!({"type":"set","path":"redis/bitcoin","value":{"usd":2}}))
        .await;
    assert_eq!(value_of(&subscriber.next().await, id), json!({"usd":2}));
    server.stop().await;
}

#[tokio::test]
async fn value_wire_forms_per_type() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let cases = [
        ("t/string", "STRING", json!("héllo \"q\"")),
        ("t/int", "INT64", json!(-42)),
        ("t/double", "DOUBLE", json!(2.5)),
        ("t/binary", "BINARY", json!("AAEC/w==")),
        ("t/json", "JSON", json!([1, {"b":2,"a":1}])),
    ];
    for (path, ty, value) in &cases {
        c.ok(json!({"type":"add","path":path,"topicType":ty,"value":value}))
            .await;
    }
    c.ok(json!({"type":"subscribe","selector":"?t/.*"})).await;
    // Subscription notices come in path order.
    let mut sorted = cases.to_vec();
    sorted.sort_by_key(|c| c.0);
    for (path, _, value) in &sorted {
        let id = subscribed_id(&c.next().await, path);
        let got = value_of(&c.next().await, id);
        if *path == "t/json" {
            assert_eq!(got, json!([1, {"a":1,"b":2}]));
        } else {
            assert_eq!(&got, value, "{path}");
        }
    }
    // Null clears a scalar topic's value: subscribers see `null`.
    c.ok(json!({"type":"set","path":"t/int","value":null}))
        .await;
    let ServerMessage::Value { value, .. } = c.next().await else {
        panic!("expected a value")
    };
    assert!(value.is_null());
    server.stop().await;
}

#[tokio::test]
async fn late_subscriber_gets_current_value_at_once() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    publisher
        .ok(json!({"type":"add","path":"a/b","topicType":"INT64","value":1}))
        .await;
    for v in 2..=5 {
        publisher
            .ok(json!({"type":"set","path":"a/b","value":v}))
            .await;
    }
    let mut late = server.client().await;
    late.ok(json!({"type":"subscribe","selector":"a/b"})).await;
    let id = subscribed_id(&late.next().await, "a/b");
    assert_eq!(value_of(&late.next().await, id), json!(5));
    assert_eq!(late.pending(), 0, "only the current value, no history");
    server.stop().await;
}

#[tokio::test]
async fn equal_value_is_not_resent() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut subscriber = server.client().await;
    publisher
        .ok(json!({"type":"add","path":"eq","topicType":"JSON","value":{"x":1,"y":2}}))
        .await;
    subscriber
        .ok(json!({"type":"subscribe","selector":">eq"}))
        .await;
    let id = subscribed_id(&subscriber.next().await, "eq");
    assert_eq!(value_of(&subscriber.next().await, id), json!({"x":1,"y":2}));
    // Same value, different key order: same canonical bytes, so nothing is delivered.
    publisher
        .ok(json!({"type":"set","path":"eq","value":{"y":2,"x":1}}))
        .await;
    publisher
        .ok(json!({"type":"set","path":"eq","value":{"x":3}}))
        .await;
    assert_eq!(value_of(&subscriber.next().await, id), json!({"x":3}));
    server.stop().await;
}

#[tokio::test]
async fn selector_subscription_picks_up_topics_added_later() {
    let server = TestServer::start().await;
    let mut subscriber = server.client().await;
    let mut publisher = server.client().await;
    subscriber
        .ok(json!({"type":"subscribe","selector":"?sensors/.*//"}))
        .await;
    publisher
        .ok(json!({"type":"add","path":"sensors/t1","topicType":"DOUBLE","value":20.5}))
        .await;
    publisher
        .ok(json!({"type":"add","path":"other/t1","topicType":"DOUBLE","value":1.0}))
        .await;
    publisher
        .ok(json!({"type":"add","path":"sensors/t2/deep","topicType":"STRING"}))
        .await;
    let id1 = subscribed_id(&subscriber.next().await, "sensors/t1");
    assert_eq!(value_of(&subscriber.next().await, id1), json!(20.5));
    // A topic without a value: notice only.
    let id2 = subscribed_id(&subscriber.next().await, "sensors/t2/deep");
    publisher
        .ok(json!({"type":"set","path":"sensors/t2/deep","value":"on"}))
        .await;
    assert_eq!(value_of(&subscriber.next().await, id2), json!("on"));
    subscriber.ping().await;
    assert_eq!(subscriber.pending(), 0, "other/t1 must not arrive");
    server.stop().await;
}

#[tokio::test]
async fn remove_sends_unsubscribed_with_reason() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.ok(json!({"type":"add","path":"r/a","topicType":"STRING","value":"x"}))
        .await;
    c.ok(json!({"type":"add","path":"r/b","topicType":"STRING"}))
        .await;
    c.ok(json!({"type":"subscribe","selector":">r/a"})).await;
    let id = subscribed_id(&c.next().await, "r/a");
    value_of(&c.next().await, id);
    c.ok(json!({"type":"remove","selector":"?r/.*"})).await;
    match c.next().await {
        ServerMessage::Unsubscribed {
            id: gone,
            path,
            reason,
        } => {
            assert_eq!(gone, id);
            assert_eq!(path, "r/a");
            assert_eq!(reason, "removed");
        }
        other => panic!("expected unsubscribed, got {other:?}"),
    }
    let reply = c
        .request(json!({"type":"set","path":"r/a","value":"y"}))
        .await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::NoSuchTopic,
                ..
            }
        ),
        "{reply:?}"
    );
    let reply = c.request(json!({"type":"fetch","selector":"?r//"})).await;
    assert!(matches!(reply, ServerMessage::Fetched { ref topics, .. } if topics.is_empty()));
    server.stop().await;
}

#[tokio::test]
async fn unsubscribe_keeps_topics_another_selector_still_selects() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for p in ["u/a", "u/b"] {
        c.ok(json!({"type":"add","path":p,"topicType":"INT64","value":1}))
            .await;
    }
    c.ok(json!({"type":"subscribe","selector":"?u/.*"})).await;
    c.ok(json!({"type":"subscribe","selector":"u/a"})).await;
    let a = subscribed_id(&c.next().await, "u/a");
    value_of(&c.next().await, a);
    let b = subscribed_id(&c.next().await, "u/b");
    value_of(&c.next().await, b);
    c.ping().await;
    assert_eq!(c.pending(), 0, "u/a is not subscribed twice");

    c.ok(json!({"type":"unsubscribe","selector":"?u/.*"})).await;
    match c.next().await {
        ServerMessage::Unsubscribed { id, reason, .. } => {
            assert_eq!(id, b);
            assert_eq!(reason, "unsubscribed");
        }
        other => panic!("expected unsubscribed, got {other:?}"),
    }
    // u/a is still selected by `>u/a` (given as the bare path `u/a`).
    c.ok(json!({"type":"set","path":"u/a","value":2})).await;
    c.ok(json!({"type":"set","path":"u/b","value":2})).await;
    assert_eq!(value_of(&c.next().await, a), json!(2));
    c.ping().await;
    assert_eq!(c.pending(), 0);
    c.ok(json!({"type":"unsubscribe","selector":">u/a"})).await;
    assert!(matches!(c.next().await, ServerMessage::Unsubscribed { id, .. } if id == a));
    server.stop().await;
}

#[tokio::test]
async fn fetch_returns_selected_topics_in_path_order() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.ok(json!({"type":"add","path":"f/z","topicType":"INT64","value":26}))
        .await;
    c.ok(json!({"type":"add","path":"f/a","topicType":"STRING","value":"first"}))
        .await;
    c.ok(json!({"type":"add","path":"f/m","topicType":"JSON",
                "properties":{"DONT_RETAIN_VALUE":"true"},"value":{"k":1}}))
        .await;
    c.ok(json!({"type":"add","path":"g/x","topicType":"INT64","value":0}))
        .await;
    let reply = c.request(json!({"type":"fetch","selector":"?f/.*"})).await;
    let ServerMessage::Fetched { topics, .. } = reply else {
        panic!("expected fetched, got {reply:?}");
    };
    let paths: Vec<_> = topics.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(paths, ["f/a", "f/m", "f/z"]);
    assert_eq!(topics[0].value, Some(json!("first")));
    assert_eq!(topics[0].topic_type, TopicType::String);
    assert_eq!(topics[1].value, None, "DONT_RETAIN_VALUE keeps no value");
    assert_eq!(topics[2].value, Some(json!(26)));
    c.pending();
    assert_eq!(c.pending(), 0, "fetch does not subscribe");
    server.stop().await;
}

#[tokio::test]
async fn dont_retain_value_topics_deliver_every_update() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.ok(json!({"type":"subscribe","selector":"events"})).await;
    c.ok(json!({"type":"add","path":"events","topicType":"STRING",
                "properties":{"DONT_RETAIN_VALUE":"true"},"value":"first"}))
        .await;
    let id = subscribed_id(&c.next().await, "events");
    assert_eq!(value_of(&c.next().await, id), json!("first"));
    c.ok(json!({"type":"set","path":"events","value":"same"}))
        .await;
    c.ok(json!({"type":"set","path":"events","value":"same"}))
        .await;
    assert_eq!(value_of(&c.next().await, id), json!("same"));
    assert_eq!(value_of(&c.next().await, id), json!("same"));
    server.stop().await;
}

#[tokio::test]
async fn add_is_idempotent_for_identical_topics() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let props = BTreeMap::from([("PUBLISH_VALUES_ONLY", "true")]);
    c.ok(json!({"type":"add","path":"i","topicType":"INT64","properties":props,"value":1}))
        .await;
    // Same type and properties ("TRUE" parses to the same property): ok, and the value is set.
    c.ok(json!({"type":"add","path":"i","topicType":"INT64",
                "properties":{"PUBLISH_VALUES_ONLY":"TRUE"},"value":2}))
        .await;
    let reply = c.request(json!({"type":"fetch","selector":"i"})).await;
    assert!(
        matches!(&reply, ServerMessage::Fetched { topics, .. } if topics[0].value == Some(json!(2))),
        "{reply:?}"
    );
    for conflicting in [
        json!({"type":"add","path":"i","topicType":"STRING","properties":props}),
        json!({"type":"add","path":"i","topicType":"INT64"}),
    ] {
        let reply = c.request(conflicting).await;
        assert!(
            matches!(
                reply,
                ServerMessage::Error {
                    code: ErrorCode::TopicExists,
                    ..
                }
            ),
            "{reply:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn closing_a_subscriber_leaves_others_unaffected() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut leaving = server.client().await;
    let mut staying = server.client().await;
    publisher
        .ok(json!({"type":"add","path":"c","topicType":"INT64","value":0}))
        .await;
    for s in [&mut leaving, &mut staying] {
        s.ok(json!({"type":"subscribe","selector":"c"})).await;
        let id = subscribed_id(&s.next().await, "c");
        value_of(&s.next().await, id);
    }
    drop(leaving);
    for v in 1..=20 {
        publisher
            .ok(json!({"type":"set","path":"c","value":v}))
            .await;
    }
    for v in 1..=20 {
        let ServerMessage::Value { value, .. } = staying.next().await else {
            panic!("expected a value")
        };
        assert_eq!(value, json!(v));
    }
    server.stop().await;
}
