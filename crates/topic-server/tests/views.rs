//! Topic views over the protocol: reference topics follow their sources, views are created,
//! replaced, listed and removed, and the precedence rules hold.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use diffusion_core::TopicType;
use diffusion_core::protocol::ErrorCode;
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use topic_client::{ConnectOptions, TopicClient, TopicEvent};

const BITCOIN: &str = include_str!("../testdata/coindesk-bpi-sample.json");

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Server {
    async fn start(views_file: Option<std::path::PathBuf>) -> Self {
        let server = topic_server::bind(topic_server::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            views: views_file,
            ..topic_server::Config::default()
        })
        .await
        .unwrap();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        tokio::spawn(server.run(shutdown.clone()));
        Self { addr, shutdown }
    }

    async fn client(&self) -> TopicClient {
        TopicClient::connect(&format!("ws://{}", self.addr), ConnectOptions::default())
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Collects events until `done` says the picture is complete (bounded in time).
async fn events_until(
    client: &TopicClient,
    mut done: impl FnMut(&[TopicEvent]) -> bool,
) -> Vec<TopicEvent> {
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, client.next_event()).await {
            Ok(Some(event)) => events.push(event),
            other => panic!("events so far {events:#?}; then {other:?}"),
        }
    }
    events
}

fn latest_values(events: &[TopicEvent]) -> BTreeMap<String, Value> {
    let mut values = BTreeMap::new();
    for event in events {
        match event {
            TopicEvent::Value { path, value, .. } => {
                values.insert(path.clone(), value.clone());
            }
            TopicEvent::Unsubscribed { path, .. } => {
                values.remove(path);
            }
            TopicEvent::Subscribed { .. } | TopicEvent::Reconnected { .. } => {}
        }
    }
    values
}

async fn fetch(client: &TopicClient, selector: &str) -> BTreeMap<String, Value> {
    client
        .fetch(selector)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.path, t.value.unwrap_or(Value::Null)))
        .collect()
}

fn bitcoin() -> Value {
    serde_json::from_str(BITCOIN).unwrap()
}

#[tokio::test]
async fn reference_topics_follow_their_source() {
    let server = Server::start(None).await;
    let admin = server.client().await;
    let watcher = server.client().await;
    watcher.subscribe("?redis/views//").await.unwrap();
    admin
        .create_view(
            "currencies",
            "map redis/bitcoin to redis/views/<expand(/bpi)>",
        )
        .await
        .unwrap();
    admin
        .add_topic_with_value("redis/bitcoin", TopicType::Json, BTreeMap::new(), bitcoin())
        .await
        .unwrap();
    let events = events_until(&watcher, |e| latest_values(e).len() == 3).await;
    let values = latest_values(&events);
    assert_eq!(values["redis/views/USD"], bitcoin()["bpi"]["USD"]);
    assert_eq!(values["redis/views/EUR"]["code"], "EUR");

    // Update: only USD changes; the watcher sees exactly that change.
    let mut next = bitcoin();
    next["bpi"]["USD"]["rate_float"] = json!(60000.5);
    admin.set("redis/bitcoin", next.clone()).await.unwrap();
    let events = events_until(&watcher, |e| {
        e.iter().any(|ev| matches!(ev, TopicEvent::Value { value, .. } if value["rate_float"] == json!(60000.5)))
    })
    .await;
    let changed: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e, TopicEvent::Value { .. }))
        .filter_map(TopicEvent::path)
        .collect();
    assert_eq!(changed, ["redis/views/USD"]);

    // Removing the source removes its reference topics.
    admin.remove("redis/bitcoin").await.unwrap();
    let events = events_until(&watcher, |e| {
        e.iter()
            .filter(|ev| matches!(ev, TopicEvent::Unsubscribed { .. }))
            .count()
            == 3
    })
    .await;
    assert!(
        events
            .iter()
            .all(|e| matches!(e, TopicEvent::Unsubscribed { reason, .. } if reason == "removed"))
    );
    assert!(fetch(&admin, "?redis//").await.is_empty());
}

#[tokio::test]
async fn views_are_replaced_listed_and_removed() {
    let server = Server::start(None).await;
    let admin = server.client().await;
    admin
        .add_topic_with_value(
            "a/x",
            TopicType::Json,
            BTreeMap::new(),
            json!({"v": 1, "w": 2}),
        )
        .await
        .unwrap();
    admin
        .create_view("first", "map ?a// to b/<path(1)>")
        .await
        .unwrap();
    admin
        .create_view("second", "map ?a// to c/<path(1)>")
        .await
        .unwrap();
    assert_eq!(fetch(&admin, "?[bc]//").await.len(), 2);

    // Replacing keeps precedence (list order) and swaps the reference topics.
    admin
        .create_view("first", "map ?a// to d/<path(1)> as <value(/w)>")
        .await
        .unwrap();
    let names: Vec<String> = admin
        .list_views()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["first", "second"]);
    let topics = fetch(&admin, "?[bcd]//").await;
    assert_eq!(
        topics,
        BTreeMap::from([
            ("c/x".to_owned(), json!({"v":1,"w":2})),
            ("d/x".to_owned(), json!(2))
        ])
    );

    admin.remove_view("first").await.unwrap();
    assert_eq!(
        fetch(&admin, "?[bcd]//").await.keys().collect::<Vec<_>>(),
        ["c/x"]
    );
    let err = admin.remove_view("first").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoSuchView));
}

#[tokio::test]
async fn invalid_specs_and_writes_to_reference_topics_are_refused() {
    let server = Server::start(None).await;
    let admin = server.client().await;
    let err = admin.create_view("bad", "map ?a// to").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidView));
    assert!(err.to_string().contains("1:"), "{err}");
    let err = admin
        .create_view("has space", "map a to b")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidView));

    admin
        .add_topic_with_value("a", TopicType::Json, BTreeMap::new(), json!(1))
        .await
        .unwrap();
    admin.create_view("v", "map a to r").await.unwrap();
    assert_eq!(fetch(&admin, "r").await["r"], json!(1));
    let err = admin.set("r", json!(2)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ReadOnlyTopic));
    let err = admin.remove("r").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ReadOnlyTopic));
    // A wildcard removal skips reference topics.
    admin.remove("*.*").await.unwrap();
    assert!(
        fetch(&admin, "*.*").await.is_empty(),
        "source gone, so its reference too"
    );
}

#[tokio::test]
async fn normal_topics_win_and_the_earliest_view_wins() {
    let server = Server::start(None).await;
    let admin = server.client().await;
    admin
        .add_topic_with_value("src/one", TopicType::Json, BTreeMap::new(), json!("one"))
        .await
        .unwrap();
    admin
        .add_topic_with_value(
            "other/one",
            TopicType::Json,
            BTreeMap::new(),
            json!("other"),
        )
        .await
        .unwrap();
    admin
        .create_view("early", "map ?src// to r/<path(1)>")
        .await
        .unwrap();
    admin
        .create_view("late", "map ?other// to r/<path(1)>")
        .await
        .unwrap();
    assert_eq!(fetch(&admin, "r/one").await["r/one"], json!("one"));
    admin.remove_view("early").await.unwrap();
    assert_eq!(
        fetch(&admin, "r/one").await["r/one"],
        json!("other"),
        "the later view takes over"
    );

    // A normal topic replaces the reference topic, and gives the path back when removed.
    admin
        .add_topic_with_value("r/one", TopicType::String, BTreeMap::new(), json!("normal"))
        .await
        .unwrap();
    assert_eq!(fetch(&admin, "r/one").await["r/one"], json!("normal"));
    admin.set("r/one", json!("still normal")).await.unwrap();
    admin.remove("r/one").await.unwrap();
    assert_eq!(fetch(&admin, "r/one").await["r/one"], json!("other"));
}

#[tokio::test]
async fn views_chain_and_derived_paths_move_unless_preserved() {
    let server = Server::start(None).await;
    let admin = server.client().await;
    admin
        .create_view("owners", "map ?cars/ to owners/<scalar(/owner)>/<path(1)>")
        .await
        .unwrap();
    admin
        .create_view(
            "kept",
            "map ?cars/ to kept/<scalar(/owner)>/<path(1)> preserve topics",
        )
        .await
        .unwrap();
    // A view of a view's reference topics.
    admin
        .create_view(
            "chained",
            "map ?owners// to names/<path(2)> as <value(/owner)>",
        )
        .await
        .unwrap();
    admin
        .add_topic_with_value(
            "cars/1",
            TopicType::Json,
            BTreeMap::new(),
            json!({"owner": "ann"}),
        )
        .await
        .unwrap();
    assert_eq!(fetch(&admin, "owners/ann/1").await.len(), 1);
    assert_eq!(fetch(&admin, "names/1").await["names/1"], json!("ann"));

    admin.set("cars/1", json!({"owner": "bob"})).await.unwrap();
    let owners = fetch(&admin, "?owners//").await;
    assert_eq!(owners.keys().collect::<Vec<_>>(), ["owners/bob/1"]);
    assert_eq!(fetch(&admin, "names/1").await["names/1"], json!("bob"));
    let kept = fetch(&admin, "?kept//").await;
    assert_eq!(
        kept.keys().collect::<Vec<_>>(),
        ["kept/ann/1", "kept/bob/1"]
    );

    admin.remove("cars/1").await.unwrap();
    assert!(fetch(&admin, "?(owners|kept|names)//").await.is_empty());
}

#[tokio::test]
async fn views_file_is_loaded_at_start_up() {
    let dir = std::env::temp_dir().join(format!("views-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("views.txt");
    std::fs::write(
        &file,
        "# demo views\nusd: map redis/bitcoin to redis/views/usd\n    as <value(/bpi/USD/rate_float)>\n",
    )
    .unwrap();
    let server = Server::start(Some(file.clone())).await;
    let admin = server.client().await;
    assert_eq!(admin.list_views().await.unwrap()[0].name, "usd");
    admin
        .add_topic_with_value("redis/bitcoin", TopicType::Json, BTreeMap::new(), bitcoin())
        .await
        .unwrap();
    assert_eq!(
        fetch(&admin, "redis/views/usd").await["redis/views/usd"],
        json!(56189.3483)
    );

    std::fs::write(&file, "usd: map redis/bitcoin too x\n").unwrap();
    let err = topic_server::bind(topic_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        views: Some(file.clone()),
        ..topic_server::Config::default()
    })
    .await
    .err()
    .expect("a bad views file stops the start-up");
    assert!(format!("{err:#}").contains("views.txt:1:"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}
