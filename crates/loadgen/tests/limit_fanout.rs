//! The limit server's protocol, end to end over loopback with tokio-tungstenite clients:
//! subscribers to everything and to some topics (percent-encoded) each get exactly their
//! messages, in order, including a subscriber that does not read for a while (its socket fills
//! up and the server keeps the rest for it), a close is answered, and shutdown ends the server.
#![allow(clippy::unwrap_used)] // a test panics on purpose

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use loadgen::limit::{LimitConfig, bind};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const SYNC: &str = "sync";
const ROUNDS: usize = 1500;

type Ws = WebSocketStream<TcpStream>;

/// A subscriber: its request path, the topics it gets (None: all), its receive buffer.
struct Client {
    path: &'static str,
    topics: Option<&'static [&'static str]>,
    receive_buffer: Option<u32>,
}

async fn connect(addr: std::net::SocketAddr, path: &str, receive_buffer: Option<u32>) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream)
        .await
        .unwrap();
    ws
}

/// What round `i` publishes: (frame sent, topic it is on).
fn round(i: usize) -> Vec<(String, Option<&'static str>)> {
    let padding = "p".repeat(5000);
    vec![
        (format!("all-{i}-{padding}"), None),
        (format!("x\nx-{i}"), Some("x")),
        (format!("y\ny-{i}"), Some("y")),
        (format!("x/z\nxz-{i}"), Some("x/z")),
    ]
}

/// The payloads a subscriber to `topics` (None: everything) gets, in order.
fn expected(topics: Option<&[&str]>) -> Vec<String> {
    (0..ROUNDS)
        .flat_map(round)
        .filter(|(_, topic)| match (topics, topic) {
            (None, _) => true,
            (Some(list), Some(topic)) => list.contains(topic),
            (Some(_), None) => false,
        })
        .map(|(frame, topic)| match topic {
            Some(_) => frame.split_once('\n').unwrap().1.to_owned(),
            None => frame,
        })
        .collect()
}

/// Reads `want` payloads (frames may pack several, `\n`-separated), ignoring sync messages;
/// says when the first sync arrived (the subscriber is registered), then waits for `go`.
async fn read(
    mut ws: Ws,
    want: usize,
    ready: mpsc::UnboundedSender<()>,
    go: oneshot::Receiver<()>,
) -> (Ws, Vec<String>) {
    let mut got = Vec::new();
    let mut go = Some(go);
    while got.len() < want {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("connection ended after {} messages", got.len());
        };
        for line in text.as_str().split('\n') {
            if line == SYNC {
                if let Some(go) = go.take() {
                    ready.send(()).unwrap();
                    go.await.unwrap();
                }
            } else {
                got.push(line.to_owned());
            }
        }
    }
    (ws, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_its_messages_in_order() {
    let server = bind(LimitConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        log_messages: 100_000,
        ..LimitConfig::default()
    })
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let counters = server.counters();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(server.run(shutdown.clone()));

    let client = |path, topics, receive_buffer| Client {
        path,
        topics,
        receive_buffer,
    };
    let subscribers = [
        client("/", None, None),
        client("/?topics=x", Some(&["x"]), None),
        client("/?topics=y,x%2Fz", Some(&["y", "x/z"]), None),
        // Slow: a small receive buffer, and it reads only after everything was published.
        client("/", None, Some(4096)),
    ];
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let mut readers = Vec::new();
    let mut slow_go = None;
    for (i, subscriber) in subscribers.iter().enumerate() {
        let ws = connect(addr, subscriber.path, subscriber.receive_buffer).await;
        let (go_tx, go) = oneshot::channel();
        if i == 3 {
            slow_go = Some(go_tx);
        } else {
            let _ = go_tx.send(());
        }
        let want = expected(subscriber.topics);
        let reader = tokio::spawn(read(ws, want.len(), ready_tx.clone(), go));
        readers.push((reader, want));
    }
    // A client that goes away at once is forgotten.
    drop(connect(addr, "/", None).await);

    let mut publisher = connect(addr, "/publish", None).await;
    // Subscribers register after their handshake: publish sync messages until all have one.
    let mut registered = 0;
    while registered < subscribers.len() {
        for frame in [SYNC.to_owned(), format!("x\n{SYNC}"), format!("y\n{SYNC}")] {
            publisher.send(Message::text(frame)).await.unwrap();
        }
        let wait = tokio::time::sleep(Duration::from_millis(20));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                Some(()) = ready.recv() => registered += 1,
                () = &mut wait => break,
            }
        }
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        for i in 0..ROUNDS {
            for (frame, _) in round(i) {
                publisher.send(Message::text(frame)).await.unwrap();
            }
        }
    })
    .await
    .expect("published in time");
    slow_go.unwrap().send(()).unwrap();

    let mut results = Vec::new();
    for (reader, want) in readers {
        let (ws, got) = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("read in time")
            .unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "messages differ from the ones expected");
        results.push(ws);
    }
    assert!(
        counters.fell_behind.load(Ordering::Relaxed) > 0,
        "the slow subscriber's socket filled up"
    );
    assert_eq!(counters.skipped.load(Ordering::Relaxed), 0);
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);

    // A close is answered with a close.
    let mut first = results.remove(0);
    first.send(Message::Close(None)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match first.next().await {
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return false,
            }
        }
    })
    .await
    .expect("close answered in time");
    assert!(answer, "a close frame came back");

    support::stop(shutdown, server).await;
}
