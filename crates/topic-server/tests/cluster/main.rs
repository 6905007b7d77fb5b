//! Cluster mode with real processes: topic-server nodes started with `--cluster` on a real
//! redis-server (or a real 3-master Redis Cluster), killed, paused and restarted; clients are
//! the Rust client over real WebSockets.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

#[path = "../common/mod.rs"]
mod common;
mod node;

use std::collections::BTreeMap;
use std::time::Duration;

use diffusion_core::protocol::ServerMessage;
use node::{Node, client_of};
use serde_json::{Value, json};
use service_kit::testing::{RedisCluster, RedisServer, wait_until};
use topic_client::{TopicClient, TopicEvent, TopicType};

/// How long a value may take to reach a subscriber on another node.
const DELIVERY_LIMIT: Duration = Duration::from_secs(30);

/// Properties of a topic whose every update is delivered (no conflation).
fn every_update() -> BTreeMap<String, String> {
    BTreeMap::from([("CONFLATION".to_owned(), "off".to_owned())])
}

/// Subscribes `client` to `path` and waits for the subscription to be confirmed.
async fn subscribed(client: &TopicClient, path: &str) {
    client.subscribe(path).await.unwrap();
    tokio::time::timeout(DELIVERY_LIMIT, async {
        loop {
            match client.next_event().await {
                Some(TopicEvent::Subscribed { path: p, .. }) if p == path => return,
                Some(_) => {}
                None => panic!("the client closed"),
            }
        }
    })
    .await
    .expect("subscribed in time");
}

/// A client of the nodes at `urls` (comma-separated), subscribed to `path`.
async fn subscriber(urls: &str, path: &str) -> TopicClient {
    let client = client_of(urls).await;
    subscribed(&client, path).await;
    client
}

/// Adds the integer topic `path`, every update of which is delivered, through `writer`.
async fn add_counter(writer: &TopicClient, path: &str) {
    writer
        .add_topic(path, TopicType::Int64, every_update())
        .await
        .unwrap();
}

/// Writes 1..=`last` to `path` through `writer` in the background, 5 ms apart; the writer
/// comes back when it is done.
fn spawn_sequence(
    writer: TopicClient,
    path: &'static str,
    last: i64,
) -> tokio::task::JoinHandle<TopicClient> {
    tokio::spawn(async move {
        write_sequence(&writer, path, last, Duration::from_millis(5)).await;
        writer
    })
}

/// The integer values `client` receives for `path` until one reaches `last`.
async fn values_until(client: &TopicClient, path: &str, last: i64) -> Vec<i64> {
    let mut seen = Vec::new();
    let received = tokio::time::timeout(DELIVERY_LIMIT, async {
        loop {
            match client.next_event().await {
                Some(TopicEvent::Value { path: p, value, .. }) if p == path => {
                    let n = value.as_i64().unwrap();
                    seen.push(n);
                    if n >= last {
                        return;
                    }
                }
                Some(_) => {}
                None => panic!("the client closed"),
            }
        }
    })
    .await;
    assert!(
        received.is_ok(),
        "only {} values, last {:?}",
        seen.len(),
        seen.last()
    );
    seen
}

/// Waits until a fetch of `selector` through `client` finds `count` topics: another node
/// applies a change a little after the writer's node answered, so reads there settle.
async fn settles_at(client: &TopicClient, selector: &str, count: usize) {
    let settled = wait_until(DELIVERY_LIMIT, || async {
        client.fetch(selector).await.unwrap().len() == count
    })
    .await;
    let found = client.fetch(selector).await.unwrap().len();
    assert!(settled.is_ok(), "{selector}: {found} topics, not {count}");
}

/// The current value of `path` on a node.
async fn fetched(client: &TopicClient, path: &str) -> Option<Value> {
    client
        .fetch(path)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.path == path)
        .and_then(|t| t.value)
}

/// What every kind of Redis must give three nodes: updates made through one node reach the
/// subscribers of another in order and exactly once; every node fetches the latest values;
/// topics spread over every partition; a view created through one node derives on another.
async fn one_tree_across(nodes: &[Node]) {
    let [a, b, c] = nodes else {
        panic!("three nodes")
    };
    let writer = a.client().await;
    add_counter(&writer, "seq/n").await;
    let reader = subscriber(&c.url(), "seq/n").await;
    for n in 1..=1000 {
        writer.set("seq/n", json!(n)).await.unwrap();
    }
    let seen = values_until(&reader, "seq/n", 1000).await;
    assert_eq!(
        seen,
        (1..=1000).collect::<Vec<_>>(),
        "in order, exactly once"
    );
    let fetcher = b.client().await;
    wait_until(DELIVERY_LIMIT, || {
        let fetcher = &fetcher;
        async move { fetched(fetcher, "seq/n").await == Some(json!(1000)) }
    })
    .await
    .expect("b fetches the latest value");

    for i in 0..64 {
        writer
            .add_topic_with_value(
                format!("spread/{i}"),
                TopicType::Json,
                BTreeMap::new(),
                json!({ "i": i }),
            )
            .await
            .unwrap();
    }
    settles_at(&fetcher, "?spread//", 64).await;

    writer
        .create_view("mirror", "map ?spread// to mirror/<path(1)>")
        .await
        .unwrap();
    let mirrored = c.client().await;
    settles_at(&mirrored, "?mirror//", 64).await;
    assert_eq!(
        fetched(&mirrored, "mirror/7").await,
        Some(json!({ "i": 7 }))
    );

    // One remove through b, over every partition: gone everywhere, with what views derived.
    fetcher.remove("?spread//").await.unwrap();
    for node in nodes {
        let client = node.client().await;
        settles_at(&client, "?(spread|mirror)//", 0).await;
        client.close().await;
    }
    for client in [writer, reader, fetcher, mirrored] {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_redis_share_one_tree() {
    let redis = RedisServer::start().await.unwrap();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(Node::start(name, &redis.url(), &[]).await);
    }
    one_tree_across(&nodes).await;
    // The 64 topics spread over every partition (each counted changes).
    let mut connection = redis.connection().await.unwrap();
    let partitions: Vec<String> = redis::cmd("KEYS")
        .arg("topic-server:{p*}:seq")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(partitions.len(), 16, "{partitions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_redis_cluster_share_one_tree() {
    let redis = RedisCluster::start(3).await.unwrap();
    let urls = redis.urls().join(",");
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(Node::start(name, &urls, &[]).await);
    }
    assert!(
        nodes[0].log().contains("sharded=true"),
        "{}",
        nodes[0].log()
    );
    one_tree_across(&nodes).await;
    // Every shard holds some of the partitions.
    let mut held = 0;
    for url in redis.urls() {
        let mut connection = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let partitions: Vec<String> = redis::cmd("KEYS")
            .arg("topic-server:{p*}:seq")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(!partitions.is_empty(), "a shard without partitions");
        held += partitions.len();
    }
    assert_eq!(held, 16);
}

/// Sets `path` to 1..=last through `writer`, a little apart, retrying a value until it is
/// accepted (a node answers UNAVAILABLE while its Redis is away).
async fn write_sequence(writer: &TopicClient, path: &str, last: i64, pause: Duration) {
    for n in 1..=last {
        let deadline = tokio::time::Instant::now() + DELIVERY_LIMIT;
        while let Err(error) = writer.set(path, json!(n)).await {
            assert!(tokio::time::Instant::now() < deadline, "set {n}: {error}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_move_on_and_the_others_see_no_gap() {
    let redis = RedisServer::start().await.unwrap();
    let mut a = Node::start("a", &redis.url(), &[]).await;
    let b = Node::start("b", &redis.url(), &[]).await;
    let c = Node::start("c", &redis.url(), &[]).await;
    let writer = c.client().await;
    add_counter(&writer, "live/n").await;
    let moving = subscriber(&format!("{},{}", a.url(), b.url()), "live/n").await;
    let on_b = subscriber(&b.url(), "live/n").await;
    let on_c = subscriber(&c.url(), "live/n").await;

    let last = 400;
    let writing = spawn_sequence(writer, "live/n", last);
    let before = values_until(&moving, "live/n", 100).await;
    assert_eq!(before, (1..=100).collect::<Vec<_>>());
    a.kill().await;
    let after = values_until(&moving, "live/n", last).await;
    assert!(
        after.windows(2).all(|w| w[0] < w[1]),
        "moved to b and kept receiving, in order"
    );
    for other in [&on_b, &on_c] {
        assert_eq!(
            values_until(other, "live/n", last).await,
            (1..=last).collect::<Vec<_>>(),
            "no gap on the nodes that stayed"
        );
    }
    writing.await.unwrap().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_catch_up_after_redis_is_killed_and_restarted() {
    let mut redis = RedisServer::start_persistent().await.unwrap();
    let a = Node::start("a", &redis.url(), &[]).await;
    let b = Node::start("b", &redis.url(), &[]).await;
    let writer = a.client().await;
    add_counter(&writer, "r/n").await;
    let on_a = subscriber(&a.url(), "r/n").await;
    let on_b = subscriber(&b.url(), "r/n").await;

    let last = 300;
    let writing = spawn_sequence(writer, "r/n", last);
    let first = values_until(&on_b, "r/n", 100).await;
    redis.kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart().await.unwrap();
    let rest = values_until(&on_b, "r/n", last).await;
    let seen: Vec<i64> = first.into_iter().chain(rest).collect();
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "b: once each, in order"
    );
    assert_eq!(
        values_until(&on_a, "r/n", last).await,
        (1..=last).collect::<Vec<_>>(),
        "a: once each, in order"
    );
    let writer = writing.await.unwrap();
    for node in [&a, &b] {
        let client = node.client().await;
        assert_eq!(fetched(&client, "r/n").await, Some(json!(last)));
        client.close().await;
    }
    writer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_value_and_view_survives_restarting_every_node() {
    let redis = RedisServer::start_persistent().await.unwrap();
    let mut a = Node::start("a", &redis.url(), &[]).await;
    let mut b = Node::start("b", &redis.url(), &[]).await;
    let writer = a.client().await;
    for i in 0..20 {
        writer
            .add_topic_with_value(
                format!("keep/{i}"),
                TopicType::Json,
                BTreeMap::new(),
                json!({ "n": i, "big": 123_456_789_012_345_678_u64, "x": 0.1 + f64::from(i) }),
            )
            .await
            .unwrap();
    }
    writer
        .add_topic_with_value(
            "keep/text",
            TopicType::String,
            BTreeMap::new(),
            json!("héllo"),
        )
        .await
        .unwrap();
    writer.remove("keep/19").await.unwrap();
    writer
        .create_view("copy", "map ?keep/[0-9]+ to copy/<path(1)>")
        .await
        .unwrap();
    let before = writer.fetch("?(keep|copy)//").await.unwrap();
    assert_eq!(before.len(), 20 + 19);
    writer.close().await;

    a.stop().await;
    b.stop().await;
    b.restart().await;
    a.restart().await;
    for node in [&a, &b] {
        let client = node.client().await;
        let after = client.fetch("?(keep|copy)//").await.unwrap();
        assert_eq!(after, before, "node {}", node.name);
        let views = client.list_views().await.unwrap();
        assert_eq!(views.len(), 1);
        client.close().await;
    }
}

/// Node c goes away while 1,000 updates are made through node a: paused, and its
/// subscription cut, so what is published meanwhile is lost to it and only the partition's
/// log and latest state remain. Returns what c's subscriber received after c came back, and
/// c.
async fn node_away_during_1000_updates(extra: &[&str]) -> (Vec<i64>, Node) {
    let redis = RedisServer::start().await.unwrap();
    let a = Node::start("a", &redis.url(), extra).await;
    let mut c = Node::start("c", &redis.url(), extra).await;
    let writer = a.client().await;
    add_counter(&writer, "away/n").await;
    let on_c = subscriber(&c.url(), "away/n").await;

    c.pause(true);
    let mut connection = redis.connection().await.unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut connection)
        .await
        .unwrap();
    write_sequence(&writer, "away/n", 1000, Duration::ZERO).await;
    c.pause(false);

    let seen = values_until(&on_c, "away/n", 1000).await;
    writer.close().await;
    on_c.close().await;
    (seen, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_updates_catches_up_from_the_log() {
    let (seen, c) = node_away_during_1000_updates(&[]).await;
    assert_eq!(
        seen,
        (1..=1000).collect::<Vec<_>>(),
        "every update, once, in order"
    );
    assert!(c.metric("topic_server_cluster_caught_up_total").await >= 1.0);
    assert_eq!(
        c.metric("topic_server_cluster_reloads_total").await,
        0.0,
        "the log reached back far enough"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_was_trimmed_while_away_reloads_the_latest_values() {
    let (seen, c) = node_away_during_1000_updates(&["--cluster-log-length", "100"]).await;
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    assert!(
        seen.len() < 1000,
        "the trimmed part was skipped, not replayed"
    );
    wait_until(DELIVERY_LIMIT, || async {
        c.metric("topic_server_cluster_reloads_total{reason=\"trimmed\"}")
            .await
            >= 1.0
    })
    .await
    .expect("the reload is counted");
    assert!(
        c.log().contains("reloaded the partition's latest state"),
        "{}",
        c.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_a_redis_that_lost_its_data() {
    let mut redis = RedisServer::start().await.unwrap();
    let a = Node::start("a", &redis.url(), &[]).await;
    let b = Node::start("b", &redis.url(), &[]).await;
    let writer = a.client().await;
    for i in 0..3 {
        writer
            .add_topic_with_value(
                format!("gone/{i}"),
                TopicType::Int64,
                every_update(),
                json!(i),
            )
            .await
            .unwrap();
    }
    let on_b = b.client().await;
    subscribed(&on_b, "gone/0").await;

    // Redis without persistence restarts empty: its counters start again.
    redis.restart().await.unwrap();
    wait_until(DELIVERY_LIMIT, || async {
        b.metric("topic_server_cluster_reloads_total{reason=\"lost\"}")
            .await
            >= 1.0
    })
    .await
    .expect("b notices that Redis lost its data");
    let reader = b.client().await;
    wait_until(DELIVERY_LIMIT, || {
        let reader = &reader;
        async move { reader.fetch("?gone//").await.unwrap().is_empty() }
    })
    .await
    .expect("b no longer holds what Redis lost");

    // New changes, numbered from 1 again, are applied, not mistaken for old ones.
    let mut added = false;
    for _ in 0..100 {
        if writer
            .add_topic_with_value("gone/0", TopicType::Int64, every_update(), json!(42))
            .await
            .is_ok()
        {
            added = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(added, "a's changes are accepted again");
    assert_eq!(values_until(&on_b, "gone/0", 42).await.last(), Some(&42));
    assert_eq!(fetched(&reader, "gone/0").await, Some(json!(42)));
    for client in [writer, on_b, reader] {
        client.close().await;
    }
}

/// docs/security.md advises a Redis user limited to topic-server's keys and channels: a node
/// runs with one (and the user can touch nothing else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_as_a_redis_user_limited_to_its_keys_and_channels() {
    let redis = RedisServer::start().await.unwrap();
    let mut admin = redis.connection().await.unwrap();
    let _: String = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("ts")
        .arg("on")
        .arg(">secret")
        .arg("~topic-server:*")
        .arg("&topic-server:*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://ts:secret@127.0.0.1:{}/", redis.port());
    let a = Node::start("a", &url, &[]).await;
    let b = Node::start("b", &url, &[]).await;
    let writer = a.client().await;
    writer
        .add_topic_with_value("acl/x", TopicType::Int64, BTreeMap::new(), json!(7))
        .await
        .unwrap();
    let reader = b.client().await;
    wait_until(DELIVERY_LIMIT, || {
        let reader = &reader;
        async move { fetched(reader, "acl/x").await == Some(json!(7)) }
    })
    .await
    .expect("b has the topic a added");

    let mut limited = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("other")
        .arg("1")
        .query_async(&mut limited)
        .await;
    assert!(
        refused.is_err(),
        "the user is limited to topic-server's keys"
    );
    writer.close().await;
    reader.close().await;
}

/// Redis that lost its last changes (a crash with `appendfsync everysec`, a failover to a
/// lagging replica) numbers new changes with numbers the nodes have already applied: they must
/// see that those are other changes and reload, not skip them as duplicates (and then hold a
/// topic Redis no longer has) — whether they hear the new changes as they come (a, b) or read
/// them from the log after being away (c).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_notice_when_redis_lost_its_last_changes() {
    let redis = RedisServer::start().await.unwrap();
    let a = Node::start("a", &redis.url(), &[]).await;
    let b = Node::start("b", &redis.url(), &[]).await;
    let mut c = Node::start("c", &redis.url(), &[]).await;
    let writer = a.client().await;
    add_counter(&writer, "lost/x").await;
    write_sequence(&writer, "lost/x", 10, Duration::ZERO).await;

    // The last change of lost/x's partition: adding a topic there that Redis then loses.
    let mut admin = redis.connection().await.unwrap();
    let holds = |admin: &mut redis::aio::MultiplexedConnection, n: usize, path: String| {
        let mut admin = admin.clone();
        async move {
            redis::cmd("HEXISTS")
                .arg(format!("topic-server:{{p{n}}}:topics"))
                .arg(format!("s:{path}"))
                .query_async::<bool>(&mut admin)
                .await
                .unwrap()
        }
    };
    let mut n = 0;
    while !holds(&mut admin, n, "lost/x".to_owned()).await {
        n += 1;
    }
    let mut doomed = None;
    for i in 0..200 {
        let path = format!("lost/y{i}");
        add_counter(&writer, &path).await;
        if holds(&mut admin, n, path.clone()).await {
            doomed = Some(path);
            break;
        }
    }
    let doomed = doomed.expect("a topic in lost/x's partition");
    // c goes away (paused, its subscription cut): it will read what follows from the log.
    wait_until(DELIVERY_LIMIT, || {
        let c = &c;
        let doomed = doomed.clone();
        async move {
            let client = c.client().await;
            let held = !client.fetch(doomed.as_str()).await.unwrap().is_empty();
            client.close().await;
            held
        }
    })
    .await
    .expect("c applied the change Redis is about to lose");
    c.pause(true);
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    let seq: u64 = redis::cmd("GET")
        .arg(format!("topic-server:{{p{n}}}:seq"))
        .query_async(&mut admin)
        .await
        .unwrap();
    // What Redis holds had it lost that change: counter, log and state one step back.
    let log = format!("topic-server:{{p{n}}}:log");
    let before: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&log)
        .arg(format!("{}-1", seq - 1))
        .arg(format!("{}-1", seq - 1))
        .query_async(&mut admin)
        .await
        .unwrap();
    let Some(redis::Value::BulkString(message)) = before.ids[0].map.get("m") else {
        panic!("the change before the lost one is in the log")
    };
    let text = String::from_utf8_lossy(message).into_owned();
    let id = text
        .split("\"i\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let _: () = redis::cmd("SET")
        .arg(format!("topic-server:{{p{n}}}:last"))
        .arg(id)
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XDEL")
        .arg(&log)
        .arg(format!("{seq}-1"))
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("XSETID")
        .arg(&log)
        .arg(format!("{}-1", seq - 1))
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("topic-server:{{p{n}}}:seq"))
        .arg(seq - 1)
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: i64 = redis::cmd("HDEL")
        .arg(format!("topic-server:{{p{n}}}:topics"))
        .arg(format!("s:{doomed}"))
        .arg(format!("t:{doomed}"))
        .arg(format!("o:{doomed}"))
        .query_async(&mut admin)
        .await
        .unwrap();

    // The next change takes the lost change's number; two more follow it.
    for n in 100..=102 {
        writer.set("lost/x", json!(n)).await.unwrap();
    }
    c.pause(false);
    for node in [&a, &b, &c] {
        let client = node.client().await;
        wait_until(DELIVERY_LIMIT, || {
            let client = &client;
            async move { fetched(client, "lost/x").await == Some(json!(102)) }
        })
        .await
        .unwrap_or_else(|_| panic!("node {} took the new change", node.name));
        let gone = client.fetch(doomed.as_str()).await.unwrap();
        assert!(
            gone.is_empty(),
            "node {} dropped what Redis lost",
            node.name
        );
        assert!(
            node.metric("topic_server_cluster_reloads_total{reason=\"lost\"}")
                .await
                >= 1.0
        );
        client.close().await;
    }
    writer.close().await;
}

/// A value is accepted only for the kind of topic it was checked against: a topic replaced
/// meanwhile by one of another type (here: behind the node's back) refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_checked_against_a_replaced_topic_is_refused() {
    let redis = RedisServer::start().await.unwrap();
    let a = Node::start("a", &redis.url(), &[]).await;
    let writer = a.client().await;
    writer
        .add_topic_with_value("kind/t", TopicType::String, BTreeMap::new(), json!("s"))
        .await
        .unwrap();
    let mut admin = redis.connection().await.unwrap();
    let mut replaced = 0;
    for n in 0..16 {
        let key = format!("topic-server:{{p{n}}}:topics");
        let set: i64 = redis::cmd("HSET")
            .arg(&key)
            .arg("s:kind/t")
            .arg(r#"{"properties":{},"type":"int64"}"#)
            .query_async(&mut admin)
            .await
            .unwrap();
        if set == 0 {
            replaced += 1; // the field existed: this is the topic's partition
        } else {
            let _: i64 = redis::cmd("HDEL")
                .arg(&key)
                .arg("s:kind/t")
                .query_async(&mut admin)
                .await
                .unwrap();
        }
    }
    assert_eq!(replaced, 1);
    let refused = writer.set("kind/t", json!("other")).await.unwrap_err();
    assert!(
        matches!(&refused, topic_client::ClientError::Server { code, message }
            if *code == topic_client::ErrorCode::NoSuchTopic && message.contains("replaced")),
        "{refused:?}"
    );
    assert_eq!(fetched(&writer, "kind/t").await, Some(json!("s")));
    writer.close().await;
}

/// A session's sets are pipelined through Redis (several on their way at once) and still
/// applied and answered in the order they were sent; a request after them sees their effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_sets_are_pipelined_in_order() {
    let redis = RedisServer::start().await.unwrap();
    let a = Node::start("a", &redis.url(), &[]).await;
    let b = Node::start("b", &redis.url(), &[]).await;
    let setup = a.client().await;
    add_counter(&setup, "pipe/n").await;
    setup.close().await;
    let on_b = subscriber(&b.url(), "pipe/n").await;

    // A raw session: 500 sets written back to back, no reply awaited in between.
    let mut writer = common::Client::open(&a.url()).await;
    writer.handshake().await;
    for n in 1..=500 {
        writer
            .send_json(&json!({"type": "set", "cid": n, "path": "pipe/n", "value": n}))
            .await;
    }
    writer
        .send_json(&json!({"type": "fetch", "cid": 501, "selector": "pipe/n"}))
        .await;
    let mut answered = Vec::new();
    let fetched_value = loop {
        match writer.next().await {
            ServerMessage::Ok { cid } => answered.push(cid),
            ServerMessage::Fetched { topics, .. } => break topics[0].value.clone(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        answered,
        (1..=500).collect::<Vec<u64>>(),
        "answered in order"
    );
    assert_eq!(
        fetched_value,
        Some(json!(500)),
        "a request after them sees them"
    );
    assert_eq!(
        values_until(&on_b, "pipe/n", 500).await,
        (1..=500).collect::<Vec<_>>(),
        "every set, once, in the order sent"
    );
    on_b.close().await;
}
