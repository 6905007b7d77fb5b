//! The client library against a scripted fake server speaking the wire protocol.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

use std::collections::BTreeMap;
use std::time::Duration;

use diffusion_core::protocol::{ClientMessage, Credentials, FetchedTopic, ServerMessage};
use serde_json::json;
use tokio::time::timeout;
use topic_client::testing::{FakeServer, Incoming, PATIENCE};
use topic_client::{
    ClientConfig, ClientError, ConnectOptions, ErrorCode, TopicClient, TopicEvent, TopicType,
};

fn quick(request_timeout: Duration) -> ClientConfig {
    ClientConfig {
        request_timeout,
        connect_timeout: request_timeout,
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn handshake_sends_identity_and_reads_session() {
    let server = FakeServer::start(|mut peer| async move {
        let hello = peer.handshake().await;
        assert_eq!(
            hello,
            ClientMessage::connect_v2(
                &Credentials::Password {
                    principal: "alice".to_owned(),
                    password: "secret".to_owned()
                },
                None
            )
        );
        assert!(peer.closed_by_client().await, "close() sends a close frame");
    })
    .await;
    let options = ConnectOptions::password("alice", "secret");
    let client = TopicClient::connect(&server.url, options).await.unwrap();
    assert_eq!(client.session(), "session-1");
    assert!(!client.is_closed());
    client.close().await;
    assert!(client.is_closed());
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
    server.finish().await;
}

#[tokio::test]
async fn refused_handshake_is_an_error_with_its_code() {
    let server = FakeServer::start(|mut peer| async move {
        let _hello = peer.recv().await;
        peer.send(&[ServerMessage::Error {
            cid: None,
            code: ErrorCode::AuthenticationFailed,
            message: "bad credentials".to_owned(),
        }])
        .await;
    })
    .await;
    let err = TopicClient::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(topic_client::Refusal::Authentication { code: ErrorCode::AuthenticationFailed, message }) if message == "bad credentials"),
        "{err:?}"
    );
    assert_eq!(err.code(), Some(ErrorCode::AuthenticationFailed));
    server.finish().await;
}

#[tokio::test]
async fn silent_server_times_out_the_handshake() {
    let server = FakeServer::start(|mut peer| async move {
        let _hello = peer.recv().await;
        // Never answer; wait for the client to give up.
        let _ = peer.next().await;
    })
    .await;
    let err = TopicClient::connect_with(
        &server.url,
        ConnectOptions::default(),
        quick(Duration::from_millis(200)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    server.finish().await;
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let port = service_kit::testing::free_port().unwrap();
    let err = TopicClient::connect(
        &format!("ws://127.0.0.1:{port}/"),
        ConnectOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    let err = TopicClient::connect("not a url", ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn replies_are_routed_by_cid_even_out_of_order() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let first = peer.recv().await;
        let second = peer.recv().await;
        let (fetch, ping) = match (&first, &second) {
            (ClientMessage::Fetch { .. }, ClientMessage::Ping { .. }) => (first, second),
            (ClientMessage::Ping { .. }, ClientMessage::Fetch { .. }) => (second, first),
            other => panic!("unexpected requests {other:?}"),
        };
        let ClientMessage::Fetch { selector, cid: fetch_cid, .. } = fetch else { unreachable!() };
        assert_eq!(selector, "?a/.*");
        // Both replies in one frame, the later request's reply first.
        peer.send(&[
            ServerMessage::Pong { cid: ping.cid().unwrap() },
            ServerMessage::Fetched {
                cid: fetch_cid,
                topics: vec![
                    FetchedTopic {
                        path: "a/b".to_owned(),
                        topic_type: TopicType::Json,
                        value: Some(json!({"x": 1})),
                    },
                    FetchedTopic {
                        path: "a/c".to_owned(),
                        topic_type: TopicType::String,
                        value: None,
                    },
                ],
                more: false,
            },
        ])
        .await;
        // A set answered with a plain ok.
        let set = peer.recv().await;
        assert!(matches!(&set, ClientMessage::Set { path, value, .. } if path == "a/b" && *value == json!(2)));
        peer.send(&[ServerMessage::Ok { cid: set.cid().unwrap() }]).await;
        peer.closed_by_client().await;
    })
    .await;
    let client = TopicClient::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    let (fetched, pinged) = tokio::join!(client.fetch("?a/.*"), client.ping());
    let fetched = fetched.unwrap();
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[0].path, "a/b");
    assert_eq!(fetched[0].value, Some(json!({"x": 1})));
    assert_eq!(fetched[1].value, None);
    assert!(pinged.is_ok());
    client.set("a/b", json!(2)).await.unwrap();
    drop(client);
    server.finish().await;
}

#[tokio::test]
async fn server_errors_carry_their_code() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let add = peer.recv().await;
        let ClientMessage::Add {
            cid,
            path,
            topic_type,
            properties,
            value,
        } = add
        else {
            panic!("expected add, got {add:?}")
        };
        assert_eq!((path.as_str(), topic_type), ("x/y", TopicType::String));
        assert_eq!(
            properties.get("CONFLATION").map(String::as_str),
            Some("always")
        );
        assert_eq!(value, Some(json!("hello")));
        peer.send(&[ServerMessage::Error {
            cid: Some(cid),
            code: ErrorCode::TopicExists,
            message: "x/y exists with type JSON".to_owned(),
        }])
        .await;
        peer.closed_by_client().await;
    })
    .await;
    let client = TopicClient::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    let properties = BTreeMap::from([("CONFLATION".to_owned(), "always".to_owned())]);
    let err = client
        .add_topic_with_value("x/y", TopicType::String, properties, json!("hello"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TopicExists));
    assert!(err.to_string().contains("TOPIC_EXISTS"), "{err}");
    client.close().await;
    server.finish().await;
}

#[tokio::test]
async fn packed_frame_becomes_ordered_events() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let sub = peer.recv().await;
        assert!(matches!(&sub, ClientMessage::Subscribe { selector, .. } if selector == "?s//"));
        peer.send(&[
            ServerMessage::Subscribed {
                id: 7,
                path: "s/one".to_owned(),
                topic_type: TopicType::Json,
                properties: BTreeMap::new(),
            },
            ServerMessage::Value { id: 7, value: json!({"n": 1}) },
            ServerMessage::Subscribed {
                id: 9,
                path: "s/two".to_owned(),
                topic_type: TopicType::Int64,
                properties: BTreeMap::new(),
            },
            ServerMessage::Value { id: 9, value: json!(null) },
            ServerMessage::Ok { cid: sub.cid().unwrap() },
            ServerMessage::Value { id: 7, value: json!({"n": 2}) },
        ])
        .await;
        // An unreadable message in a frame is skipped; the rest of the frame still counts.
        peer.send_raw("{\"type\":\"bogus\"}\n{\"type\":\"unsubscribed\",\"id\":7,\"path\":\"s/one\",\"reason\":\"removed\"}")
            .await;
        peer.closed_by_client().await;
    })
    .await;
    let client = TopicClient::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    client.subscribe("?s//").await.unwrap();
    let mut events = Vec::new();
    for _ in 0..6 {
        events.push(
            timeout(PATIENCE, client.next_event())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(
        events,
        vec![
            TopicEvent::Subscribed {
                path: "s/one".to_owned(),
                topic_type: TopicType::Json,
                properties: BTreeMap::new()
            },
            TopicEvent::Value {
                path: "s/one".to_owned(),
                topic_type: TopicType::Json,
                value: json!({"n": 1})
            },
            TopicEvent::Subscribed {
                path: "s/two".to_owned(),
                topic_type: TopicType::Int64,
                properties: BTreeMap::new()
            },
            TopicEvent::Value {
                path: "s/two".to_owned(),
                topic_type: TopicType::Int64,
                value: json!(null)
            },
            TopicEvent::Value {
                path: "s/one".to_owned(),
                topic_type: TopicType::Json,
                value: json!({"n": 2})
            },
            TopicEvent::Unsubscribed {
                path: "s/one".to_owned(),
                reason: "removed".to_owned()
            },
        ]
    );
    client.close().await;
    server.finish().await;
}

#[tokio::test]
async fn a_small_event_buffer_loses_nothing() {
    const COUNT: i64 = 300;
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let sub = peer.recv().await;
        peer.send(&[
            ServerMessage::Ok {
                cid: sub.cid().unwrap(),
            },
            ServerMessage::Subscribed {
                id: 1,
                path: "n".to_owned(),
                topic_type: TopicType::Int64,
                properties: BTreeMap::new(),
            },
        ])
        .await;
        for chunk in (0..COUNT).collect::<Vec<_>>().chunks(10) {
            let values: Vec<_> = chunk
                .iter()
                .map(|i| ServerMessage::Value {
                    id: 1,
                    value: json!(i),
                })
                .collect();
            peer.send(&values).await;
        }
        peer.closed_by_client().await;
    })
    .await;
    let config = ClientConfig {
        event_capacity: 2,
        ..ClientConfig::default()
    };
    let client = TopicClient::connect_with(&server.url, ConnectOptions::default(), config)
        .await
        .unwrap();
    client.subscribe("n").await.unwrap();
    let first = timeout(PATIENCE, client.next_event())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, TopicEvent::Subscribed { .. }));
    for expected in 0..COUNT {
        let event = timeout(PATIENCE, client.next_event())
            .await
            .unwrap()
            .unwrap();
        let TopicEvent::Value { value, .. } = event else {
            panic!("{event:?}")
        };
        assert_eq!(value, json!(expected));
    }
    client.close().await;
    server.finish().await;
}

/// A server that drops the connection when the first request comes; its listener goes with
/// it, so every reconnection attempt is refused.
async fn server_dropping_at_the_first_request() -> FakeServer {
    FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let _request = peer.recv().await;
        peer.drop_connection();
    })
    .await
}

#[tokio::test]
async fn without_reconnection_closed_fires_and_waiting_requests_fail_when_the_server_drops() {
    let server = server_dropping_at_the_first_request().await;
    // A long request timeout: the request must fail because of the drop, not the timeout.
    let client = TopicClient::connect_with(
        &server.url,
        ConnectOptions::default(),
        ClientConfig {
            reconnect: false,
            ..quick(Duration::from_secs(30))
        },
    )
    .await
    .unwrap();
    let closed = client.closed();
    let err = timeout(PATIENCE, client.ping()).await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    timeout(PATIENCE, closed).await.expect("closed() must fire");
    assert!(client.is_closed());
    assert_eq!(timeout(PATIENCE, client.next_event()).await.unwrap(), None);
    assert!(matches!(
        client.subscribe("x").await,
        Err(ClientError::Closed)
    ));
    server.finish().await;
}

/// `close` while the client is reconnecting (its server gone) has no one to say goodbye to:
/// it returns at once instead of waiting out the request timeout (a backend-app whose topic
/// server had gone took 10 s to stop).
#[tokio::test]
async fn close_while_reconnecting_is_prompt() {
    let server = server_dropping_at_the_first_request().await;
    let client = TopicClient::connect_with(
        &server.url,
        ConnectOptions::default(),
        quick(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let err = timeout(PATIENCE, client.ping()).await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::Disconnected), "{err:?}");
    timeout(Duration::from_secs(2), client.close())
        .await
        .expect("close returns without waiting for the request timeout");
    assert!(client.is_closed());
    server.finish().await;
}

#[tokio::test]
async fn a_request_times_out_and_the_connection_stays_usable() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let ignored = peer.recv().await;
        let answered = peer.recv().await;
        // The late reply to the timed-out request must not be mistaken for the second's.
        peer.send(&[ServerMessage::Pong {
            cid: ignored.cid().unwrap(),
        }])
        .await;
        peer.send(&[ServerMessage::Ok {
            cid: answered.cid().unwrap(),
        }])
        .await;
        peer.closed_by_client().await;
    })
    .await;
    let client = TopicClient::connect_with(
        &server.url,
        ConnectOptions::default(),
        quick(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    client.remove("gone").await.unwrap();
    assert!(!client.is_closed());
    client.close().await;
    server.finish().await;
}

#[tokio::test]
async fn wrong_reply_type_is_a_protocol_error() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let fetch = peer.recv().await;
        peer.send(&[ServerMessage::Ok {
            cid: fetch.cid().unwrap(),
        }])
        .await;
        peer.closed_by_client().await;
    })
    .await;
    let client = TopicClient::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    let err = client.fetch(">a").await.unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    client.close().await;
    server.finish().await;
}

#[tokio::test]
async fn dropping_the_last_clone_closes_politely() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let unsub = peer.recv().await;
        assert!(
            matches!(&unsub, ClientMessage::Unsubscribe { selector, .. } if selector == "?a//")
        );
        peer.send(&[ServerMessage::Ok {
            cid: unsub.cid().unwrap(),
        }])
        .await;
        assert!(peer.closed_by_client().await, "expected a close frame");
    })
    .await;
    let client = TopicClient::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    let clone = client.clone();
    let closed = client.closed();
    drop(client);
    clone.unsubscribe("?a//").await.unwrap();
    drop(clone);
    timeout(PATIENCE, closed)
        .await
        .expect("closed() fires after the last drop");
    server.finish().await;
}

#[tokio::test]
async fn replies_after_connected_in_the_same_frame_are_not_lost() {
    let server = FakeServer::start(|mut peer| async move {
        let _hello = peer.recv().await;
        peer.send(&[
            ServerMessage::Connected {
                version: 1,
                session: "packed".to_owned(),
                token: None,
                recovered: None,
                reason: None,
                limits: None,
            },
            ServerMessage::Subscribed {
                id: 1,
                path: "early".to_owned(),
                topic_type: TopicType::String,
                properties: BTreeMap::new(),
            },
        ])
        .await;
        match peer.next().await {
            Incoming::Close | Incoming::Gone => {}
            Incoming::Message(m) => panic!("unexpected {m:?}"),
        }
    })
    .await;
    let client = TopicClient::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    assert_eq!(client.session(), "packed");
    let event = timeout(PATIENCE, client.next_event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.path(), Some("early"));
    client.close().await;
    server.finish().await;
}

#[tokio::test]
async fn close_is_prompt_even_with_unread_events() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let sub = peer.recv().await;
        let mut burst = vec![
            ServerMessage::Ok {
                cid: sub.cid().unwrap(),
            },
            ServerMessage::Subscribed {
                id: 1,
                path: "busy".to_owned(),
                topic_type: TopicType::Int64,
                properties: BTreeMap::new(),
            },
        ];
        burst.extend((0..50).map(|i| ServerMessage::Value {
            id: 1,
            value: json!(i),
        }));
        peer.send(&burst).await;
        assert!(peer.closed_by_client().await);
    })
    .await;
    let config = ClientConfig {
        event_capacity: 1,
        ..quick(Duration::from_secs(30))
    };
    let client = TopicClient::connect_with(&server.url, ConnectOptions::default(), config)
        .await
        .unwrap();
    client.subscribe(">busy").await.unwrap();
    // The reader is now stuck on the full event buffer; close must not wait 30 s for it.
    timeout(PATIENCE, client.close())
        .await
        .expect("close() was not prompt");
    assert!(client.is_closed());
    server.finish().await;
}
