//! The real `topic-cli` binary: offline selector matching, input validation, and the server
//! commands against the scripted fake server.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use diffusion_core::protocol::{ClientMessage, ErrorCode, FetchedTopic, ServerMessage};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use topic_client::TopicType;
use topic_client::testing::{FakeServer, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_topic-cli");

/// Runs the binary with no server reachable (nothing listens on the URL it is given).
fn cli(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("TOPIC_SERVER_URL", "ws://127.0.0.1:9/")
        .env_remove("TOPIC_PRINCIPAL")
        .env_remove("TOPIC_CREDENTIALS")
        .env_remove("TOPIC_TOKEN")
        .env_remove("TOPIC_CA_FILE")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn selector_match_prints_matching_arguments_in_input_order() {
    let out = cli(
        &[
            "selector", "match", "?a/.*", "a/z", "b/x", "a/b", "a", "a/b/c", "a/a",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "a/z\na/b\na/a\n");
}

#[test]
fn selector_match_reads_stdin_when_no_paths_are_given() {
    let input = "z/9\nredis/bitcoin\r\n\nalpha/beta/gamma\nredis\nalpha/beta\n";
    let out = cli(
        &[
            "selector",
            "match",
            "#>redis////?redis/.*////*alpha/beta/.+",
        ],
        Some(input),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "redis/bitcoin\nalpha/beta/gamma\nredis\n");
}

#[test]
fn selector_match_with_no_match_succeeds_quietly() {
    let out = cli(&["selector", "match", ">x/y", "x", "x/y/z"], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
    let out = cli(&["selector", "match", ">x/y"], Some(""));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
}

#[test]
fn invalid_selector_exits_2_with_the_reason() {
    for bad in ["?a/(b", "", "$x", "?a//b"] {
        let out = cli(&["selector", "match", bad, "a/b"], None);
        assert_eq!(out.status.code(), Some(2), "selector {bad:?}");
        assert_eq!(stdout(&out), "");
        assert!(
            stderr(&out).contains("<SELECTOR>"),
            "selector {bad:?}: {}",
            stderr(&out)
        );
    }
    let out = cli(&["selector", "match", "?a/(b", "a/b"], None);
    assert!(
        stderr(&out).contains("invalid regular expression"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn invalid_input_paths_are_reported_and_the_rest_still_matched() {
    let out = cli(
        &["selector", "match", "*.*"],
        Some("ok/1\nbad//path\nok/2\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "ok/1\nok/2\n");
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
}

#[test]
fn set_with_invalid_json_exits_2_without_a_server() {
    let out = cli(&["set", "a/b", "{not json"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));
    // An unquoted word is not JSON either, and the hint says how to write a string.
    let out = cli(&["set", "a/b", "hello"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("'\"text\"'"), "{}", stderr(&out));
}

#[test]
fn other_bad_arguments_exit_2() {
    for args in [
        &["add", "a/b", "TIME"][..],
        &["add", "a/b", "JSON", "--property", "NOPE=1"],
        &["add", "a/b", "JSON", "--value", "{"],
        &["add", "Diffusion/x", "JSON"],
        &["set", "a//b", "1"],
        &["fetch", "?("],
        &["--timeout", "0", "ping"],
        &["frobnicate"],
    ] {
        let out = cli(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn unreachable_server_exits_1() {
    let out = cli(&["set", "a/b", "1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

#[test]
fn help_documents_the_output_format() {
    let out = cli(&["--help"], None);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    assert!(
        help.contains("PATH<TAB>VALUE") && help.contains("TOPIC_SERVER_URL"),
        "{help}"
    );
}

async fn run_against(url: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command.arg("--url").arg(url).args(args);
    for var in [
        "TOPIC_PRINCIPAL",
        "TOPIC_CREDENTIALS",
        "TOPIC_TOKEN",
        "TOPIC_CA_FILE",
    ] {
        command.env_remove(var);
    }
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn fetch_prints_path_tab_compact_json() {
    let server = FakeServer::start(|mut peer| async move {
        let hello = peer.handshake().await;
        assert!(
            matches!(hello, ClientMessage::Connect { principal: Some(ref p), credentials: Some(ref c), .. } if p == "ops" && c == "pw")
        );
        let fetch = peer.recv().await;
        assert!(matches!(&fetch, ClientMessage::Fetch { selector, .. } if selector == "?t//"));
        let topic = |path: &str, topic_type, value| FetchedTopic {
            path: path.to_owned(),
            topic_type,
            value,
        };
        peer.send(&[ServerMessage::Fetched {
            cid: fetch.cid().unwrap(),
            topics: vec![
                topic(
                    "t/json",
                    TopicType::Json,
                    Some(json!({"b": [1, 2], "a": "x y"})),
                ),
                topic("t/none", TopicType::Int64, None),
                topic("t/text", TopicType::String, Some(json!("tab\there"))),
            ],
            more: false,
        }])
        .await;
        let _ = peer.next().await;
    })
    .await;
    let out = run_against(
        &server.url,
        &["--principal", "ops", "--credentials", "pw", "fetch", "?t//"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "t/json\t{\"a\":\"x y\",\"b\":[1,2]}\nt/none\tnull\nt/text\t\"tab\\there\"\n"
    );
    server.finish().await;
}

#[tokio::test]
async fn server_errors_exit_1_with_the_code() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let set = peer.recv().await;
        peer.send(&[ServerMessage::Error {
            cid: set.cid(),
            code: ErrorCode::NoSuchTopic,
            message: "no topic at a/b".to_owned(),
        }])
        .await;
        let _ = peer.next().await;
    })
    .await;
    let out = run_against(&server.url, &["set", "a/b", "{\"k\":1}"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NO_SUCH_TOPIC"), "{}", stderr(&out));
    server.finish().await;
}

#[tokio::test]
async fn add_sends_type_properties_and_value() {
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
            panic!("{add:?}")
        };
        assert_eq!(path, "feed/price");
        assert_eq!(topic_type, TopicType::Double);
        assert_eq!(
            properties,
            BTreeMap::from([
                ("CONFLATION".to_owned(), "always".to_owned()),
                ("VALIDATE_VALUES".to_owned(), "true".to_owned()),
            ])
        );
        assert_eq!(value, Some(json!(-1.5)));
        peer.send(&[ServerMessage::Ok { cid }]).await;
        let _ = peer.next().await;
    })
    .await;
    let args = [
        "add",
        "feed/price",
        "double",
        "--property",
        "conflation=always",
        "--property",
        "VALIDATE_VALUES=true",
        "--value",
        "-1.5",
    ];
    let out = run_against(&server.url, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    server.finish().await;
}

/// Starts `topic-cli subscribe` and returns it with a line reader on its stdout.
fn spawn_subscriber(
    url: &str,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let mut child = tokio::process::Command::new(BIN)
        .args(["--url", url, "subscribe", "?p//"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

async fn push_two_values(peer: &mut topic_client::testing::Peer) {
    peer.handshake().await;
    let sub = peer.recv().await;
    assert!(matches!(&sub, ClientMessage::Subscribe { selector, .. } if selector == "?p//"));
    peer.send(&[
        ServerMessage::Subscribed {
            id: 4,
            path: "p/q".to_owned(),
            topic_type: TopicType::Json,
            properties: BTreeMap::new(),
        },
        ServerMessage::Value {
            id: 4,
            value: json!({"v": 1}),
        },
        ServerMessage::Ok {
            cid: sub.cid().unwrap(),
        },
    ])
    .await;
    peer.send(&[ServerMessage::Value {
        id: 4,
        value: json!({"v": 2}),
    }])
    .await;
}

#[tokio::test]
async fn subscribe_prints_values_and_fails_when_the_server_ends_the_session_for_good() {
    let (drop_tx, drop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = FakeServer::start(|mut peer| async move {
        push_two_values(&mut peer).await;
        drop_rx.await.unwrap();
        // 4002: another connection took the session over; reconnecting would be pointless.
        peer.close_with(4002).await;
    })
    .await;
    let (child, mut lines) = spawn_subscriber(&server.url);
    let next = async |lines: &mut tokio::io::Lines<_>| {
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(next(&mut lines).await.as_deref(), Some("p/q\t{\"v\":1}"));
    assert_eq!(next(&mut lines).await.as_deref(), Some("p/q\t{\"v\":2}"));
    drop_tx.send(()).unwrap();
    assert_eq!(next(&mut lines).await, None);
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("connection to the topic server was lost"),
        "{}",
        stderr(&out)
    );
    server.finish().await;
}

#[tokio::test]
async fn subscribe_exits_0_on_sigterm() {
    let server = FakeServer::start(|mut peer| async move {
        push_two_values(&mut peer).await;
        assert!(
            peer.closed_by_client().await,
            "the CLI closes politely on SIGTERM"
        );
    })
    .await;
    let (child, mut lines) = spawn_subscriber(&server.url);
    for expected in ["p/q\t{\"v\":1}", "p/q\t{\"v\":2}"] {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line.as_deref(), Some(expected));
    }
    let pid = child.id().unwrap().to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    server.finish().await;
}

#[tokio::test]
async fn sigterm_interrupts_a_waiting_request_with_130() {
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<()>();
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let fetch = peer.recv().await;
        assert!(matches!(fetch, ClientMessage::Fetch { .. }));
        got_tx.send(()).unwrap();
        // Never reply; the CLI must not wait for its 30 s timeout.
        let _ = peer.next().await;
    })
    .await;
    let child = tokio::process::Command::new(BIN)
        .args(["--url", &server.url, "--timeout", "30", "fetch", "?x//"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(PATIENCE, got_rx)
        .await
        .unwrap()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    server.finish().await;
}
