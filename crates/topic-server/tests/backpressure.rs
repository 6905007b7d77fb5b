//! Fan-out under load: with `CONFLATION=off` slow readers are cut off without hurting others,
//! and backlogs are packed into multi-message frames. (Conflation policies: tests/conflation.rs.)

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::time::Duration;

use common::{Client, Event, TestServer, subscribed_id, value_of};
use diffusion_core::protocol::ServerMessage;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn slow_subscriber_of_an_unconflated_topic_is_closed_while_others_receive_everything() {
    const UPDATES: usize = 600;
    const VALUE_BYTES: usize = 16 * 1024;
    let server = TestServer::start_with(|c| c.queue_limit_bytes = 256 * 1024).await;
    let mut publisher = server.client().await;
    let mut good = server.client().await;
    // A small receive buffer keeps the slow reader's backlog in the server's queue rather than
    // in kernel buffers.
    let mut slow = Client::open_with_recv_buffer(&server.ws_url(), Some(8 * 1024)).await;
    slow.handshake().await;

    publisher
        .ok(
            json!({"type":"add","path":"load","topicType":"STRING","value":"start",
                   "properties":{"CONFLATION":"off","PUBLISH_VALUES_ONLY":"true"}}),
        )
        .await;
    for s in [&mut good, &mut slow] {
        s.ok(json!({"type":"subscribe","selector":"load"})).await;
        let id = subscribed_id(&s.next().await, "load");
        assert_eq!(value_of(&s.next().await, id), json!("start"));
    }

    // `slow` now stops reading. Each update is 16 KiB; `good` keeps up with every one.
    let filler = "v".repeat(VALUE_BYTES);
    let run = async {
        for i in 0..UPDATES {
            let value = format!("{i:06}{filler}");
            publisher
                .ok(json!({"type":"set","path":"load","value":value}))
                .await;
            let ServerMessage::Value { value: got, .. } = good.next().await else {
                panic!("good subscriber expected a value");
            };
            assert_eq!(&got.as_str().unwrap()[..6], format!("{i:06}"));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("publishing took too long");

    // The slow subscriber, reading again, finds the backlog cut short and the close frame.
    let drain = async {
        let mut values = 0usize;
        loop {
            match slow.next_event().await {
                Event::Message(ServerMessage::Value { .. }) => values += 1,
                Event::Message(other) => panic!("unexpected {other:?}"),
                Event::Closed(frame) => return (values, frame),
            }
        }
    };
    let (values, frame) = tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("slow subscriber was not closed");
    let frame = frame.expect("close frame with a reason");
    assert_eq!(frame.reason.as_str(), "message queue limit reached");
    assert_eq!(frame.code, CloseCode::Policy);
    eprintln!("slow subscriber got {values} of {UPDATES} values before the close");
    assert!(values < UPDATES, "slow subscriber got {values} values");

    // The rest of the server is unaffected.
    good.ping().await;
    publisher.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn backlog_is_packed_into_multi_message_frames() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for i in 0..200 {
        c.ok(json!({"type":"add","path":format!("many/{i:03}"),"topicType":"INT64","value":i}))
            .await;
    }
    let frames_before = c.frames;
    c.ok(json!({"type":"subscribe","selector":"?many/.*"}))
        .await;
    for i in 0..200 {
        let id = subscribed_id(&c.next().await, &format!("many/{i:03}"));
        assert_eq!(value_of(&c.next().await, id), json!(i));
    }
    let frames = c.frames - frames_before;
    eprintln!(
        "401 messages in {frames} frames, at most {} per frame",
        c.max_messages_per_frame
    );
    assert!(
        c.max_messages_per_frame > 1,
        "no frame carried more than one message"
    );
    assert!(
        frames < 401,
        "401 messages arrived in {frames} frames: nothing was packed"
    );
    server.stop().await;
}
