//! The pipeline's other inputs: whatever arrives on the Redis channel (read by the bridge and
//! by backend-app), someone removing the relay's topic, and a malicious server feeding a
//! client.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hostile_tests::{Event, Peer, STEP, attacker, binary, http_raw};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use super::{Case, attacker_session};
use crate::case;

const CHANNEL: &str = "Redis channel";

async fn publish(ctx: &crate::Ctx, payload: &[u8]) -> anyhow::Result<()> {
    let mut redis = ctx.redis.connection().await?;
    let _: i64 = redis::cmd("PUBLISH")
        .arg("app:notifications")
        .arg(payload)
        .query_async(&mut redis)
        .await?;
    Ok(())
}

/// Waits until `peer` (subscribed to redis/bitcoin) receives `value`.
async fn receives(peer: &mut Peer, value: &Value) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match peer.next(left).await {
            Event::Message(m) if m.get("v") == Some(value) => return Ok(()),
            Event::Message(_) => {}
            other => bail!("waiting for {value}: {other:?}"),
        }
    }
}

/// A topic-server session subscribed to redis/bitcoin, its first messages read.
async fn bitcoin_subscriber(ctx: &crate::Ctx) -> anyhow::Result<Peer> {
    let mut peer = attacker_session(ctx, 80).await?;
    peer.ok(json!({"type":"subscribe","selector":">redis/bitcoin"}))
        .await?;
    Ok(peer)
}

async fn feeder(ctx: &crate::Ctx, action: &str) -> anyhow::Result<()> {
    let request = format!(
        "POST /{action} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let (text, _) = http_raw(ctx.feeder.addr, attacker(81), request.as_bytes(), STEP).await?;
    if !text.starts_with("HTTP/1.1 200") {
        bail!("feeder /{action}: {text}");
    }
    Ok(())
}

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "non-JSON on the channel",
            CHANNEL,
            "PUBLISH `not json {` to app:notifications",
            "bridge clients get it as sent; backend-app skips it (logged); the next JSON message is relayed",
            |ctx| {
                let mut bridge_client = Peer::open(&ctx.bridge_ws(), attacker(82)).await?;
                let mut topics = bitcoin_subscriber(&ctx).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                publish(&ctx, b"not json {").await?;
                let mut seen = false;
                for _ in 0..5 {
                    if let Event::Message(m) = bridge_client.next(STEP).await
                        && m.get("unparsable").is_some()
                    {
                        seen = true;
                        break;
                    }
                }
                let after = json!({"hostile": "after non-JSON"});
                publish(&ctx, after.to_string().as_bytes()).await?;
                receives(&mut topics, &after).await?;
                if !seen || !ctx.backend.log_contains("not JSON") {
                    bail!(
                        "bridge saw it: {seen}; backend logged it: {}",
                        ctx.backend.log_contains("not JSON")
                    );
                }
                Ok("bridge delivered it; backend-app skipped it and relayed the next".to_owned())
            }
        ),
        case!(
            "non-UTF-8 on the channel",
            CHANNEL,
            "PUBLISH bytes `ff fe 00` to app:notifications",
            "bridge clients get a binary frame; backend-app skips it",
            |ctx| {
                let mut bridge_client = Peer::open(&ctx.bridge_ws(), attacker(82)).await?;
                let mut topics = bitcoin_subscriber(&ctx).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                publish(&ctx, b"\xff\xfe\x00").await?;
                let mut binary_seen = false;
                for _ in 0..5 {
                    if let Event::Binary(3) = bridge_client.next(STEP).await {
                        binary_seen = true;
                        break;
                    }
                }
                let after = json!({"hostile": "after bytes"});
                publish(&ctx, after.to_string().as_bytes()).await?;
                receives(&mut topics, &after).await?;
                if !binary_seen {
                    bail!("the bridge client saw no binary frame");
                }
                Ok("binary frame to bridge clients; backend-app relayed the next".to_owned())
            }
        ),
        case!(
            "2 MiB on the channel",
            CHANNEL,
            "PUBLISH a 2 MiB JSON document",
            "backend-app skips it (over its 1 MiB limit, logged); bridge clients get it; the topic server is untouched",
            |ctx| {
                let mut bridge_client = Peer::open(&ctx.bridge_ws(), attacker(82)).await?;
                let mut topics = bitcoin_subscriber(&ctx).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let big = format!("{{\"big\":\"{}\"}}", "b".repeat(2 * 1024 * 1024));
                publish(&ctx, big.as_bytes()).await?;
                let mut delivered = false;
                for _ in 0..5 {
                    if let Event::Message(m) = bridge_client.next(STEP).await
                        && m.get("big").is_some()
                    {
                        delivered = true;
                        break;
                    }
                }
                let after = json!({"hostile": "after big"});
                publish(&ctx, after.to_string().as_bytes()).await?;
                receives(&mut topics, &after).await?;
                if !delivered || !ctx.backend.log_contains("larger than the limit") {
                    bail!(
                        "bridge delivered: {delivered}; backend skipped: {}",
                        ctx.backend.log_contains("larger than the limit")
                    );
                }
                Ok("bridge delivered it; backend-app skipped it".to_owned())
            }
        ),
        case!(
            "the relay's topic removed",
            "topic-server + backend-app",
            "`remove redis/bitcoin` while the feeder is paused",
            "backend-app puts it back at once with its last value (was: the demo stopped for good)",
            |ctx| {
                let mut topics = bitcoin_subscriber(&ctx).await?;
                feeder(&ctx, "stop").await?;
                let last = json!({"hostile": "last before removal"});
                publish(&ctx, last.to_string().as_bytes()).await?;
                receives(&mut topics, &last).await?;
                let mut vandal = attacker_session(&ctx, 83).await?;
                let started = Instant::now();
                vandal
                    .ok(json!({"type":"remove","selector":">redis/bitcoin"}))
                    .await?;
                let mut removed = false;
                let restored = loop {
                    match topics.next(STEP).await {
                        Event::Message(m) if m["type"] == "unsubscribed" => removed = true,
                        Event::Message(m) if removed && m.get("v") == Some(&last) => {
                            break started.elapsed();
                        }
                        Event::Message(_) => {}
                        other => {
                            feeder(&ctx, "start").await?;
                            bail!("not restored: {other:?}");
                        }
                    }
                };
                feeder(&ctx, "start").await?;
                Ok(format!(
                    "restored with its last value after {} ms",
                    restored.as_millis()
                ))
            }
        ),
        case!(
            "crafted delta to topic-cli",
            "topic-cli (client)",
            "a fake server sends `topic-cli subscribe` a delta declaring 68 GB, then a full value",
            "the delta is refused before allocating; topic-cli keeps going and prints the next value (was: abort on a 67 GB allocation)",
            |_ctx| {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let server = tokio::spawn(async move {
                    let (stream, _) = listener.accept().await?;
                    let mut ws = tokio_tungstenite::accept_async(stream).await?;
                    let mut subscribe_cid = None;
                    while let Some(Ok(Message::Text(text))) = ws.next().await {
                        let request: Value = serde_json::from_str(text.as_str())?;
                        match request["type"].as_str() {
                            Some("connect") => {
                                ws.send(Message::text(
                                    r#"{"type":"connected","version":1,"session":"fake"}"#,
                                ))
                                .await?;
                            }
                            Some("subscribe") => {
                                subscribe_cid = request["cid"].as_u64();
                                break;
                            }
                            _ => {}
                        }
                    }
                    let cid = subscribe_cid.context("no subscribe")?;
                    let hostile =
                        base64::engine::general_purpose::STANDARD.encode(b"~~~~~~\n0,1:x;");
                    for message in [
                    json!({"type":"ok","cid":cid}).to_string(),
                    r#"{"type":"subscribed","id":1,"path":"x","topicType":"JSON","properties":{}}"#.to_owned(),
                    r#"{"i":1,"v":{"a":"base"}}"#.to_owned(),
                    format!(r#"{{"i":1,"d":"{hostile}"}}"#),
                    r#"{"i":1,"v":{"a":"after"}}"#.to_owned(),
                ] {
                    ws.send(Message::text(message)).await?;
                }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    anyhow::Ok(())
                });
                let mut cli = tokio::process::Command::new(binary("topic-cli")?)
                    .args(["--url", &format!("ws://{addr}"), "subscribe", "x"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()?;
                let mut stdout = cli.stdout.take().context("no stdout")?;
                let mut printed = String::new();
                let mut buf = [0u8; 4096];
                let deadline = Instant::now() + STEP;
                while !printed.contains("after") && Instant::now() < deadline {
                    match tokio::time::timeout(Duration::from_millis(200), stdout.read(&mut buf))
                        .await
                    {
                        Ok(Ok(0)) => break,
                        Ok(Ok(n)) => printed.push_str(&String::from_utf8_lossy(&buf[..n])),
                        Ok(Err(e)) => bail!("reading topic-cli: {e}"),
                        Err(_) => {}
                    }
                }
                let exited = cli.try_wait()?;
                let _ = cli.kill().await;
                server.abort();
                if let Some(status) = exited {
                    bail!("topic-cli exited: {status}");
                }
                if !printed.contains("base") || !printed.contains("after") {
                    bail!("topic-cli printed {printed:?}");
                }
                Ok(
                    "delta refused; topic-cli printed `base` then `after` and kept running"
                        .to_owned(),
                )
            }
        ),
    ]
}
