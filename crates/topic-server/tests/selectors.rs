//! Retained selectors through the selector index: unsubscribing removes exactly what a selector
//! added, and topics added later are matched against every session's selectors.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use common::{Held, TestServer};
use diffusion_core::protocol::ServerMessage;
use serde_json::json;

#[tokio::test]
async fn unsubscribing_one_selector_keeps_topics_another_still_selects() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for p in ["a/b", "a/c"] {
        c.ok(json!({"type":"add","path":p,"topicType":"INT64","value":0}))
            .await;
    }
    let mut held = Held::default();
    c.ok(json!({"type":"subscribe","selector":"?a/.*"})).await;
    c.ok(json!({"type":"subscribe","selector":">a/b"})).await;
    for m in c.until_pong().await {
        held.apply(&m);
    }
    let (b, cc) = (held.id("a/b").unwrap(), held.id("a/c").unwrap());
    assert_eq!(held.value(b), Some(json!(0)));

    c.ok(json!({"type":"unsubscribe","selector":"?a/.*"})).await;
    let notices = c.until_pong().await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        matches!(&notices[0], ServerMessage::Unsubscribed { id, reason, .. }
            if *id == cc && reason == "unsubscribed"),
        "{notices:?}"
    );
    c.ok(json!({"type":"set","path":"a/b","value":1})).await;
    c.ok(json!({"type":"set","path":"a/c","value":1})).await;
    let updates = c.until_pong().await;
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert!(matches!(&updates[0], ServerMessage::Value { id, .. } if *id == b));

    // Withdrawing a selector the session does not hold (any more) changes nothing.
    c.ok(json!({"type":"unsubscribe","selector":"?a/.*"})).await;
    c.ok(json!({"type":"unsubscribe","selector":"?a/.+"})).await;
    assert!(c.until_pong().await.is_empty());
    // A topic added under the withdrawn selector is not picked up; the remaining one still is
    // (path selectors compare after normalising).
    c.ok(json!({"type":"add","path":"a/d","topicType":"INT64","value":0}))
        .await;
    assert!(c.until_pong().await.is_empty());
    c.ok(json!({"type":"unsubscribe","selector":">/a/b/"}))
        .await;
    let last = c.until_pong().await;
    assert!(matches!(&last[..], [ServerMessage::Unsubscribed { id, .. }] if *id == b));
    server.stop().await;
}

#[tokio::test]
async fn topics_added_later_reach_exactly_the_sessions_that_select_them() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut subscribers = Vec::new();
    // Sessions spread over many prefixes, plus one that selects everything.
    for i in 0..20 {
        let mut s = server.client().await;
        s.ok(json!({"type":"subscribe","selector":format!("?x/{i}/.*//")}))
            .await;
        subscribers.push(s);
    }
    let mut everything = server.client().await;
    everything
        .ok(json!({"type":"subscribe","selector":"*.*"}))
        .await;

    let added = [
        "x/3/y",   // selected by session 3
        "x/3/y/z", // and its descendant
        "x/3",     // not: `?x/3/.*//` needs a segment after x/3
        "x/13/y",  // session 13, not 1 or 3
        "x/3y/z",  // nobody but `*.*`: 3y is not the segment 3
        "xx/3/y",  // nobody but `*.*`
    ];
    for path in added {
        publisher
            .ok(json!({"type":"add","path":path,"topicType":"STRING","value":path}))
            .await;
    }
    for (i, s) in subscribers.iter_mut().enumerate() {
        let got: Vec<String> = s
            .until_pong()
            .await
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::Subscribed { path, .. } => Some(path),
                _ => None,
            })
            .collect();
        let expected: Vec<&str> = match i {
            3 => vec!["x/3/y", "x/3/y/z"],
            13 => vec!["x/13/y"],
            _ => vec![],
        };
        assert_eq!(got, expected, "session {i}");
    }
    let all = everything.until_pong().await;
    assert_eq!(all.len(), 2 * added.len(), "notice and value each");
    server.stop().await;
}
