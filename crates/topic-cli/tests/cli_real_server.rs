//! `topic-cli` as a real process against a real topic server (in this test process, on a free
//! loopback port): the commands users run while the demo is up.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

async fn start_server() -> (String, CancellationToken) {
    let server = topic_server::bind(topic_server::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        ..topic_server::Config::default()
    })
    .await
    .expect("bind");
    let url = format!("ws://{}", server.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    (url, shutdown)
}

async fn cli(url: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_topic-cli"));
    command
        .arg("--url")
        .arg(url)
        .args(args)
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().expect("run topic-cli"))
        .await
        .expect("join")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_set_fetch_and_views_through_the_cli() {
    let (url, shutdown) = start_server().await;
    stdout(&cli(&url, &["add", "redis/bitcoin", "JSON"]).await);
    stdout(
        &cli(
            &url,
            &[
                "set",
                "redis/bitcoin",
                r#"{"bpi":{"USD":{"rate_float":1.5}},"a":[1]}"#,
            ],
        )
        .await,
    );
    assert_eq!(
        stdout(&cli(&url, &["fetch", "redis/bitcoin"]).await),
        "redis/bitcoin\t{\"a\":[1],\"bpi\":{\"USD\":{\"rate_float\":1.5}}}\n"
    );
    stdout(
        &cli(
            &url,
            &[
                "view",
                "create",
                "usd",
                "map redis/bitcoin to redis/views/usd as <value(/bpi/USD/rate_float)>",
            ],
        )
        .await,
    );
    assert_eq!(
        stdout(&cli(&url, &["view", "list"]).await),
        "usd\tmap redis/bitcoin to redis/views/usd as <value(/bpi/USD/rate_float)>\n"
    );
    assert_eq!(
        stdout(&cli(&url, &["fetch", "?redis//"]).await),
        "redis/bitcoin\t{\"a\":[1],\"bpi\":{\"USD\":{\"rate_float\":1.5}}}\nredis/views/usd\t1.5\n"
    );
    let refused = cli(&url, &["set", "redis/views/usd", "2"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("READ_ONLY_TOPIC"));
    let bad = cli(&url, &["view", "create", "x", "map a too b"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("1:7"));
    stdout(&cli(&url, &["view", "remove", "usd"]).await);
    assert_eq!(stdout(&cli(&url, &["fetch", "redis/views/usd"]).await), "");
    let missing = cli(&url, &["set", "nope", "1"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NO_SUCH_TOPIC"));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_prints_each_value_until_terminated() {
    let (url, shutdown) = start_server().await;
    stdout(&cli(&url, &["add", "n", "INT64", "--value", "1"]).await);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_topic-cli"))
        .args(["--url", &url, "subscribe", "n"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    ));
    let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await;
    assert_eq!(
        first.expect("in time").expect("read").as_deref(),
        Some("n\t1")
    );
    stdout(&cli(&url, &["set", "n", "2"]).await);
    let second = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await;
    assert_eq!(
        second.expect("in time").expect("read").as_deref(),
        Some("n\t2")
    );
    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits on SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_prints_each_value_exactly_once_across_reconnections() {
    const LAST: u64 = 600;
    let (url, shutdown) = start_server().await;
    let address = url.trim_start_matches("ws://").parse().expect("address");
    let proxy = topic_client::testing::CutProxy::start(address).await;
    stdout(
        &cli(
            &url,
            &[
                "add",
                "n",
                "STRING",
                "--value",
                "\"0\"",
                "--property",
                "CONFLATION=off",
            ],
        )
        .await,
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_topic-cli"))
        .args(["--url", &proxy.url(), "subscribe", "n"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    ));
    let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await;
    assert_eq!(
        first.expect("in time").expect("read").as_deref(),
        Some("n\t\"0\"")
    );
    let publisher =
        topic_client::TopicClient::connect(&url, topic_client::ConnectOptions::default())
            .await
            .expect("publisher");
    let publishing = tokio::spawn(async move {
        for n in 1..=LAST {
            publisher
                .set("n", serde_json::json!(n.to_string()))
                .await
                .expect("set");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let cuts = async {
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            proxy.cut(Duration::from_secs(1));
        }
    };
    let reading = async {
        let mut printed = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            printed.push(line);
            if printed
                .last()
                .is_some_and(|l| *l == format!("n\t\"{LAST}\""))
            {
                break;
            }
        }
        printed
    };
    let (printed, ()) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(reading, cuts)
    })
    .await
    .expect("every value printed in time");
    publishing.await.expect("publisher");
    let expected: Vec<String> = (1..=LAST).map(|n| format!("n\t\"{n}\"")).collect();
    assert_eq!(printed.len(), expected.len(), "no value lost or repeated");
    assert!(printed == expected, "values out of order");
    shutdown.cancel();
}
