//! Shared harness for the integration tests: a feeder running in-process, a Redis subscriber,
//! small local HTTP and WebSocket servers standing in for a JSON API and the bridge.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use data_feeder::{Config, SinkSpec, SourceSpec};
use futures_util::{SinkExt, StreamExt};
use service_kit::redis_subscription::{self, SubscriptionEvent};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// The bound on every wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// A test configuration: 50 ms polls, control API on an ephemeral port, a fixed seed and a new
/// price on every synthetic poll.
pub fn config(source: SourceSpec, sink: SinkSpec) -> Config {
    Config {
        source,
        sink,
        interval: Duration::from_millis(50),
        control_listen: "127.0.0.1:0".parse().unwrap(),
        http_timeout: Duration::from_secs(2),
        seed: Some(7),
        synthetic_change_probability: 1.0,
        ..Config::default()
    }
}

/// A Redis sink spec for a test server.
pub fn redis_sink(url: &str) -> SinkSpec {
    url.parse().unwrap()
}

/// A feeder running in this process.
pub struct Feeder {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    http: reqwest::Client,
}

impl Feeder {
    pub async fn start(config: Config) -> Self {
        let server = data_feeder::bind(config).await.unwrap();
        let addr = server.control_addr();
        assert_eq!(server.local_addr(), addr);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        data_feeder::install_crypto_provider();
        let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
        Self {
            addr,
            shutdown,
            task: Some(task),
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn status(&self) -> serde_json::Value {
        let response = self.http.get(self.url("/status")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        serde_json::from_str(&response.text().await.unwrap()).unwrap()
    }

    pub async fn counter(&self, name: &str) -> u64 {
        self.status().await[name].as_u64().unwrap()
    }

    /// POSTs `body` (as JSON content) and returns the status code and the JSON answer.
    pub async fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }

    /// Waits until the counter `name` in /status reaches `at_least`.
    pub async fn wait_for_counter(&self, name: &str, at_least: u64) {
        service_kit::testing::wait_until(WAIT, || async { self.counter(name).await >= at_least })
            .await
            .unwrap_or_else(|e| panic!("{name} >= {at_least}: {e}"));
    }

    /// Triggers shutdown and checks the feeder stops promptly and cleanly.
    pub async fn shut_down(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        let result = tokio::time::timeout(WAIT, task)
            .await
            .expect("feeder did not stop in time")
            .unwrap();
        result.unwrap();
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A Redis subscriber that survives Redis restarts (the platform's own subscription loop).
pub struct Subscriber {
    events: mpsc::Receiver<SubscriptionEvent>,
    shutdown: CancellationToken,
}

impl Subscriber {
    /// Subscribes to `channel` and waits until the subscription is active.
    pub async fn start(redis_url: &str, channel: &str) -> Self {
        let (sender, mut events) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        tokio::spawn(redis_subscription::run(
            redis_url.to_owned(),
            channel.to_owned(),
            sender,
            shutdown.clone(),
        ));
        let first = tokio::time::timeout(WAIT, events.recv()).await.unwrap();
        assert_eq!(first, Some(SubscriptionEvent::Connected));
        Self { events, shutdown }
    }

    /// The next message, if one arrives within `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<Bytes> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(SubscriptionEvent::Message(payload))) => return Some(payload),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next message; fails the test if none arrives within [`WAIT`].
    pub async fn next(&mut self) -> Bytes {
        self.next_within(WAIT)
            .await
            .expect("no message within the wait bound")
    }

    /// How many messages arrive within `window` (draining them).
    pub async fn count_within(&mut self, window: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + window;
        let mut count = 0;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if matches!(event, SubscriptionEvent::Message(_)) {
                count += 1;
            }
        }
        count
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `router` on 127.0.0.1:0 in the background; returns its base URL.
pub async fn serve_http(router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// One text frame received by the fake bridge: (connection number from 0, text).
pub type Frame = (usize, String);

/// A stand-in for the redis-ws-bridge on `listener`: accepts connections one after another,
/// reports every text frame, echoes it back as the bridge would, and drops connection 0 after
/// `drop_first_after` frames (if set).
pub fn fake_bridge(
    listener: TcpListener,
    drop_first_after: Option<usize>,
) -> mpsc::Receiver<Frame> {
    let (frames, received) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut connection = 0;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let frames = frames.clone();
            let id = connection;
            connection += 1;
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let mut seen = 0;
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(text) = message {
                        if frames.send((id, text.to_string())).await.is_err() {
                            return;
                        }
                        seen += 1;
                        if id == 0 && drop_first_after == Some(seen) {
                            return; // dropping the socket: an abrupt disconnect
                        }
                        if ws.send(Message::Text(text)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    received
}

/// The next frame within [`WAIT`].
pub async fn next_frame(frames: &mut mpsc::Receiver<Frame>) -> Frame {
    tokio::time::timeout(WAIT, frames.recv())
        .await
        .expect("no frame within the wait bound")
        .expect("fake bridge gone")
}

/// Loosely checks the synthetic payload's shape (the unit tests check every field precisely).
pub fn assert_coindesk_shape(payload: &[u8]) {
    let text = std::str::from_utf8(payload).unwrap();
    let shape = regex::Regex::new(concat!(
        r#"^\{"time":\{"updated":"[A-Z][a-z]{2} \d{1,2}, \d{4} \d{2}:\d{2}:\d{2} UTC","#,
        r#""updatedISO":"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00","#,
        r#""updateduk":"[A-Z][a-z]{2} \d{1,2}, \d{4} at \d{2}:\d{2} (BST|GMT)"\},"#,
        r#""disclaimer":"[^"]+","chartName":"Bitcoin","bpi":\{"#,
        r#""USD":\{"code":"USD","symbol":"&#36;","rate":"[\d,]+\.\d{4}","description":"United States Dollar","rate_float":\d+\.\d{4}\},"#,
        r#""GBP":\{"code":"GBP","symbol":"&pound;","rate":"[\d,]+\.\d{4}","description":"British Pound Sterling","rate_float":\d+\.\d{4}\},"#,
        r#""EUR":\{"code":"EUR","symbol":"&euro;","rate":"[\d,]+\.\d{4}","description":"Euro","rate_float":\d+\.\d{4}\}\}\}$"#,
    ))
    .unwrap();
    assert!(shape.is_match(text), "not CoinDesk-shaped: {text}");
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    assert!(value["bpi"]["USD"]["rate_float"].as_f64().unwrap() > 0.0);
}
