//! A client given several servers moves to the next when its own goes away: two independent
//! servers (as two nodes would be), the Rust client connected to the first with both URLs;
//! when the first stops, the client reconnects to the second by itself, is told its session
//! was not recovered there, subscribes again and receives the second server's values.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};
use topic_client::{ClientConfig, ConnectOptions, TopicClient, TopicEvent, TopicType};

/// How long the client may take to notice the loss and move on.
const MOVE_LIMIT: Duration = Duration::from_secs(20);

async fn server_with(value: i64) -> TestServer {
    let server = TestServer::start().await;
    let publisher = TopicClient::connect(&server.ws_url(), ConnectOptions::default())
        .await
        .unwrap();
    publisher
        .add_topic_with_value("node/x", TopicType::Int64, BTreeMap::new(), json!(value))
        .await
        .unwrap();
    publisher.close().await;
    server
}

/// The next value event, skipping others; `reconnected` records reconnections seen on the way.
async fn next_value(client: &TopicClient, reconnected: &mut Vec<bool>) -> Value {
    tokio::time::timeout(MOVE_LIMIT, async {
        loop {
            match client.next_event().await {
                Some(TopicEvent::Value { value, .. }) => return value,
                Some(TopicEvent::Reconnected { recovered }) => reconnected.push(recovered),
                Some(_) => {}
                None => panic!("the client closed"),
            }
        }
    })
    .await
    .expect("a value in time")
}

#[tokio::test]
async fn a_client_moves_to_the_next_server_when_its_own_goes_away() {
    let first = server_with(1).await;
    let second = server_with(2).await;
    let urls = format!("{}, {}", first.ws_url(), second.ws_url());
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let client = TopicClient::connect_with(&urls, ConnectOptions::default(), config)
        .await
        .unwrap();
    client.subscribe("node/x").await.unwrap();
    let mut reconnected = Vec::new();
    assert_eq!(next_value(&client, &mut reconnected).await, json!(1));

    first.stop().await;
    assert_eq!(
        next_value(&client, &mut reconnected).await,
        json!(2),
        "the second server's value"
    );
    assert_eq!(reconnected, [false], "a new session on the second server");
    // Requests and updates go to the second server now.
    client.set("node/x", json!(3)).await.unwrap();
    assert_eq!(next_value(&client, &mut reconnected).await, json!(3));
    client.close().await;
    second.stop().await;
}

#[tokio::test]
async fn the_first_server_that_answers_is_used_and_an_empty_list_is_refused() {
    let server = server_with(7).await;
    // Nothing listens on the first address.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let urls = format!("ws://{dead}/ws,{}", server.ws_url());
    let client = TopicClient::connect(&urls, ConnectOptions::default())
        .await
        .unwrap();
    client.subscribe("node/x").await.unwrap();
    assert_eq!(next_value(&client, &mut Vec::new()).await, json!(7));
    client.close().await;
    assert!(matches!(
        TopicClient::connect(" , ", ConnectOptions::default()).await,
        Err(topic_client::ClientError::InvalidUrl(_))
    ));
    server.stop().await;
}
