//! Conflation policies with a real socket that stops reading: the stalled session's queue stays
//! bounded (`conflate`), loses the topic (`unsubscribe`), and `TIDY_ON_UNSUBSCRIBE` drops queued
//! updates. (`CONFLATION=off` closing the session: tests/backpressure.rs.)

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::time::Duration;

use common::{Client, Held, TestServer, canonical_json};
use diffusion_core::protocol::ServerMessage;
use serde_json::{Value, json};

/// Receive buffer of a stalled client: small, so its backlog piles up in the server's queue
/// rather than in the kernel.
const STALLED_RECV_BUFFER: u32 = 8 * 1024;

/// Deterministic pseudo-random hex text: content that a delta cannot copy from anywhere.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    out
}

/// A 12 KiB document whose updates change 4 KiB: the delta (about 5.5 KiB in base64) is
/// smaller than the value, so in-step sessions get deltas. Large updates fill the kernel's
/// socket buffers (megabytes on loopback) in few round trips.
fn doc(topic: usize, n: u64) -> Value {
    json!({
        "seq": n,
        "topic": topic,
        "blob": noise(topic as u64 * 1_000_003 + n, 4096),
        "pad": "p".repeat(8192),
    })
}

/// Upper bound on one `value` message for `doc`.
fn max_message_bytes(value: &Value) -> usize {
    canonical_json(value).len() + 64
}

async fn stalled_client(server: &TestServer) -> Client {
    let mut client =
        Client::open_with_recv_buffer(&server.ws_url(), Some(STALLED_RECV_BUFFER)).await;
    client.handshake().await;
    client
}

/// Subscribes and takes everything the subscription delivered into `held`.
async fn subscribe(client: &mut Client, held: &mut Held, selector: &str) {
    client
        .ok(json!({"type":"subscribe","selector":selector}))
        .await;
    for m in client.until_pong().await {
        held.apply(&m);
    }
}

#[tokio::test]
async fn conflate_keeps_a_stalled_session_bounded_and_current() {
    // The limit counts what queued updates keep alive: a merged update of one topic holds
    // its message, its value message, its base and its value (about four documents), so
    // four topics need room for sixteen.
    const LIMIT: usize = 256 * 1024;
    const TOPICS: usize = 4;
    const MAX_ROUNDS: u64 = 3000;
    const ROUNDS_AFTER_FIRST_CONFLATION: u64 = 100;
    let server = TestServer::start_with(|c| c.queue_limit_bytes = LIMIT).await;
    let mut publisher = server.client().await;
    let mut healthy = server.client().await;
    let mut stalled = stalled_client(&server).await;
    for t in 0..TOPICS {
        publisher
            .ok(json!({"type":"add","path":format!("c/{t}"),"topicType":"JSON","value":doc(t, 0)}))
            .await;
    }
    let (mut held_healthy, mut held_stalled) = (Held::default(), Held::default());
    subscribe(&mut healthy, &mut held_healthy, "?c/.*").await;
    subscribe(&mut stalled, &mut held_stalled, "?c/.*").await;
    let ids: Vec<u64> = (0..TOPICS)
        .map(|t| held_stalled.id(&format!("c/{t}")).unwrap())
        .collect();
    let one_message = max_message_bytes(&doc(0, 0));

    // `stalled` stops reading; `healthy` must get every update, in step, as it happens.
    let run = async {
        let mut rounds = 0u64;
        let mut first_conflation = None;
        loop {
            rounds += 1;
            for (t, id) in ids.iter().enumerate() {
                let value = doc(t, rounds);
                publisher
                    .ok(json!({"type":"set","path":format!("c/{t}"),"value":value}))
                    .await;
                let m = healthy.next().await;
                assert!(
                    matches!(m, ServerMessage::Delta { id: got, .. } if got == *id),
                    "healthy subscriber expected a delta for {id}, got {m:?}"
                );
                held_healthy.apply(&m);
                assert_eq!(held_healthy.value(*id).unwrap(), value);
            }
            let stats = server.stats.queues();
            assert_eq!(stats.sessions, 3, "no session may be closed: {stats:?}");
            assert!(
                stats.peak_queued_bytes <= LIMIT.max(4 * one_message),
                "queue grew past the limit: {stats:?}"
            );
            if first_conflation.is_none() && stats.conflations > 0 {
                first_conflation = Some(rounds);
            }
            if first_conflation.is_some_and(|at| rounds >= at + ROUNDS_AFTER_FIRST_CONFLATION) {
                return (rounds, first_conflation);
            }
            assert!(rounds < MAX_ROUNDS, "no conflation after {rounds} rounds");
        }
    };
    let (rounds, first_conflation) = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("publishing took too long");
    let stats = server.stats.queues();
    eprintln!("{rounds} rounds; first conflation in round {first_conflation:?}; {stats:?}");

    // The stalled client reads again: it is still connected, and ends up holding the latest
    // value of every topic, having received far fewer updates than were published.
    let backlog = tokio::time::timeout(Duration::from_secs(10), stalled.until_pong())
        .await
        .expect("stalled client could not catch up");
    let mut updates = 0;
    for m in &backlog {
        assert!(
            matches!(m, ServerMessage::Value { .. } | ServerMessage::Delta { .. }),
            "unexpected {m:?}"
        );
        held_stalled.apply(m);
        updates += 1;
    }
    for (t, id) in ids.iter().enumerate() {
        assert_eq!(
            held_stalled.value(*id).unwrap(),
            doc(t, rounds),
            "topic c/{t}"
        );
    }
    let published = rounds as usize * TOPICS;
    eprintln!(
        "stalled session received {updates} of {published} updates ({} deltas)",
        held_stalled.deltas.values().sum::<usize>()
    );
    assert!(updates < published, "nothing was conflated");
    // Back in step: the next update is a delta again.
    publisher
        .ok(json!({"type":"set","path":"c/0","value":doc(0, rounds + 1)}))
        .await;
    let m = stalled.next().await;
    assert!(matches!(m, ServerMessage::Delta { .. }), "{m:?}");
    held_stalled.apply(&m);
    assert_eq!(held_stalled.value(ids[0]).unwrap(), doc(0, rounds + 1));
    healthy.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn unsubscribe_policy_drops_the_topic_for_a_stalled_session() {
    const LIMIT: usize = 64 * 1024;
    const MAX_UPDATES: u64 = 5000;
    let server = TestServer::start_with(|c| c.queue_limit_bytes = LIMIT).await;
    let mut publisher = server.client().await;
    let mut stalled = stalled_client(&server).await;
    publisher
        .ok(json!({"type":"add","path":"u/noisy","topicType":"JSON",
                   "properties":{"CONFLATION":"unsubscribe"},"value":doc(0, 0)}))
        .await;
    publisher
        .ok(json!({"type":"add","path":"u/calm","topicType":"INT64","value":0}))
        .await;
    let mut held = Held::default();
    subscribe(&mut stalled, &mut held, "?u/.*").await;
    let noisy = held.id("u/noisy").unwrap();
    let calm = held.id("u/calm").unwrap();

    let run = async {
        for n in 1..=MAX_UPDATES {
            publisher
                .ok(json!({"type":"set","path":"u/noisy","value":doc(0, n)}))
                .await;
            if server.stats.queues().back_pressure_unsubscriptions > 0 {
                return n;
            }
        }
        panic!("no back-pressure unsubscription after {MAX_UPDATES} updates");
    };
    let dropped_at = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("publishing took too long");
    assert_eq!(server.stats.queues().sessions, 2, "the session stays open");
    // Later updates of the dropped topic do not reach the session; other topics still do.
    for n in 1..=3 {
        publisher
            .ok(json!({"type":"set","path":"u/noisy","value":doc(0, dropped_at + n)}))
            .await;
    }
    publisher
        .ok(json!({"type":"set","path":"u/calm","value":1}))
        .await;

    let backlog = tokio::time::timeout(Duration::from_secs(10), stalled.until_pong())
        .await
        .expect("stalled client could not catch up");
    let notice = backlog
        .iter()
        .position(|m| matches!(m, ServerMessage::Unsubscribed { id, .. } if *id == noisy))
        .expect("no unsubscribed notice for u/noisy");
    let ServerMessage::Unsubscribed { path, reason, .. } = &backlog[notice] else {
        unreachable!()
    };
    assert_eq!(
        (path.as_str(), reason.as_str()),
        ("u/noisy", "back_pressure")
    );
    let after: Vec<_> = backlog[notice + 1..].iter().collect();
    assert!(
        after.iter().all(|m| match m {
            ServerMessage::Value { id, .. } | ServerMessage::Delta { id, .. } => *id != noisy,
            _ => true,
        }),
        "u/noisy updates after its unsubscription: {after:?}"
    );
    assert!(
        after.iter().any(
            |m| matches!(m, ServerMessage::Value { id, value } if *id == calm && *value == json!(1))
        ),
        "u/calm update missing: {after:?}"
    );
    eprintln!(
        "dropped after {dropped_at} updates; {} noisy updates arrived before the notice",
        notice
    );

    // The retained selector still selects u/noisy, but the session stays unsubscribed ...
    publisher
        .ok(json!({"type":"set","path":"u/noisy","value":doc(0, 0)}))
        .await;
    assert!(stalled.until_pong().await.is_empty());
    // ... until it subscribes again.
    stalled
        .ok(json!({"type":"subscribe","selector":"?u/.*"}))
        .await;
    let again = stalled.until_pong().await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(matches!(&again[0], ServerMessage::Subscribed { id, .. } if *id == noisy));
    assert!(
        matches!(&again[1], ServerMessage::Value { id, value } if *id == noisy && *value == doc(0, 0))
    );
    server.stop().await;
}

#[tokio::test]
async fn tidy_on_unsubscribe_drops_the_queued_updates_of_that_topic() {
    const LIMIT: usize = 8 * 1024 * 1024;
    const BACKLOG: usize = 1024 * 1024;
    const MAX_ROUNDS: usize = 2000;
    let server = TestServer::start_with(|c| c.queue_limit_bytes = LIMIT).await;
    let mut publisher = server.client().await;
    let mut stalled = stalled_client(&server).await;
    // Full values, never merged: every update of a topic stays queued, in order.
    for (path, tidy) in [("tidy", "true"), ("keep", "false")] {
        publisher
            .ok(json!({"type":"add","path":path,"topicType":"STRING",
                       "properties":{"CONFLATION":"off","PUBLISH_VALUES_ONLY":"true",
                                     "TIDY_ON_UNSUBSCRIBE":tidy}}))
            .await;
    }
    let mut held = Held::default();
    subscribe(&mut stalled, &mut held, ">tidy").await;
    subscribe(&mut stalled, &mut held, ">keep").await;
    let (tidy, keep) = (held.id("tidy").unwrap(), held.id("keep").unwrap());

    let filler = "f".repeat(8 * 1024);
    let run = async {
        for round in 1..=MAX_ROUNDS {
            for path in ["tidy", "keep"] {
                publisher
                    .ok(json!({"type":"set","path":path,"value":format!("{round:06}{filler}")}))
                    .await;
            }
            if server.stats.queues().max_queued_bytes >= BACKLOG {
                return round;
            }
        }
        panic!("backlog never reached {BACKLOG} bytes");
    };
    let rounds = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("publishing took too long");

    // Still not reading, the session withdraws both subscriptions.
    for selector in [">tidy", ">keep"] {
        stalled
            .send_json(&json!({"type":"unsubscribe","cid":1000,"selector":selector}))
            .await;
    }
    let backlog = tokio::time::timeout(Duration::from_secs(10), stalled.until_pong())
        .await
        .expect("stalled client could not catch up");
    let mut seen = std::collections::HashMap::<u64, Vec<String>>::new();
    let mut unsubscribed = Vec::new();
    for m in &backlog {
        match m {
            ServerMessage::Value { id, value } => {
                assert!(
                    !unsubscribed.contains(id),
                    "an update of topic {id} after its unsubscription"
                );
                seen.entry(*id)
                    .or_default()
                    .push(value.as_str().unwrap()[..6].to_owned());
            }
            ServerMessage::Unsubscribed { id, reason, .. } => {
                assert_eq!(reason, "unsubscribed");
                unsubscribed.push(*id);
            }
            ServerMessage::Ok { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(unsubscribed, [tidy, keep]);
    let expected: Vec<String> = (1..=rounds).map(|r| format!("{r:06}")).collect();
    assert_eq!(
        seen[&keep], expected,
        "without tidying every queued update arrives"
    );
    let tidy_seen = seen.get(&tidy).map_or(0, Vec::len);
    eprintln!("{rounds} rounds: tidy topic delivered {tidy_seen}, the other {rounds}");
    assert!(
        tidy_seen < rounds,
        "the tidy topic's queued updates were delivered"
    );
    assert_eq!(
        seen.get(&tidy).cloned().unwrap_or_default()[..],
        expected[..tidy_seen],
        "what did arrive is a prefix, in order"
    );
    server.stop().await;
}
