//! redis-ws-bridge: frames it must refuse, browsers it must refuse, clients that take too much.

use std::time::{Duration, Instant};

use anyhow::bail;
use hostile_tests::{Event, Peer, STEP, attacker, http_raw, raw_frame};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use super::{Case, closed_with, shorten};
use crate::{BRIDGE_MAX_MESSAGE, BRIDGE_PER_ADDRESS, case};

const BRIDGE: &str = "redis-ws-bridge";

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "binary frame",
            BRIDGE,
            "a binary frame",
            "close 1003; nothing published",
            |ctx| {
                let mut p = Peer::open(&ctx.bridge_ws(), attacker(60)).await?;
                p.send_raw(Message::binary(vec![0u8, 1, 2])).await?;
                closed_with(&mut p, 1003).await
            }
        ),
        case!(
            "invalid UTF-8",
            BRIDGE,
            "a text frame with bytes `ff fe`",
            "close 1007",
            |ctx| {
                let mut p = Peer::open(&ctx.bridge_ws(), attacker(60)).await?;
                p.stream_mut()
                    .write_all(&raw_frame(0x1, true, b"\xff\xfe"))
                    .await?;
                closed_with(&mut p, 1007).await
            }
        ),
        case!(
            "2 MiB frame",
            BRIDGE,
            "one 2 MiB text frame (limit 1 MiB)",
            "close 1009 with the limit; the client finishes sending (was: TCP reset)",
            |ctx| {
                let mut p = Peer::open(&ctx.bridge_ws(), attacker(60)).await?;
                let frame = raw_frame(0x1, true, &vec![b'x'; 2 * BRIDGE_MAX_MESSAGE]);
                if let Err(e) = p.stream_mut().write_all(&frame).await {
                    bail!("the bridge reset the connection while the client was sending: {e}");
                }
                closed_with(&mut p, 1009).await
            }
        ),
        case!(
            "foreign origin",
            BRIDGE,
            "WebSocket upgrade with `Origin: http://evil.example`",
            "HTTP 403",
            |ctx| {
                let request = format!(
                    "GET / HTTP/1.1\r\nhost: {}\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\norigin: http://evil.example\r\n\r\n",
                    ctx.bridge.addr
                );
                let (text, _) = http_raw(
                    ctx.bridge.addr,
                    attacker(60),
                    request.as_bytes(),
                    Duration::from_secs(1),
                )
                .await?;
                if !text.starts_with("HTTP/1.1 403") {
                    bail!("{}", shorten(&text, 100));
                }
                Ok("403 origin not allowed".to_owned())
            }
        ),
        case!(
            "connections from one address",
            BRIDGE,
            "51 connections from one address",
            "the 51st gets HTTP 429 (limit 50 here)",
            |ctx| {
                let mut peers = Vec::new();
                for _ in 0..BRIDGE_PER_ADDRESS {
                    peers.push(Peer::open(&ctx.bridge_ws(), attacker(61)).await?);
                }
                let (text, _) = http_raw(
                    ctx.bridge.addr,
                    attacker(61),
                    b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
                    STEP,
                )
                .await?;
                drop(peers);
                if !text.starts_with("HTTP/1.1 429") {
                    bail!("{}", shorten(&text, 100));
                }
                Ok(shorten(text.lines().last().unwrap_or_default(), 80))
            }
        ),
        case!(
            "slow reader",
            BRIDGE,
            "a client that never reads while 40 MB go through the channel",
            "closed 1008 \"send queue full\"; a reading client unaffected",
            |ctx| {
                let mut slow =
                    Peer::open_with(&ctx.bridge_ws(), attacker(62), Some(4096), None).await?;
                let mut healthy = Peer::open(&ctx.bridge_ws(), attacker(63)).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut redis = ctx.redis.connection().await?;
                let chunk = format!("{{\"pad\":\"{}\"}}", "q".repeat(16_000));
                let reader = tokio::spawn(async move {
                    let mut got = 0;
                    while got < 2_500 {
                        match healthy.next(STEP).await {
                            Event::Message(_) => got += 1,
                            Event::Nothing => break,
                            other => return Err(anyhow::anyhow!("healthy client: {other:?}")),
                        }
                    }
                    Ok(got)
                });
                for _ in 0..2_500 {
                    let _: i64 = redis::cmd("PUBLISH")
                        .arg("app:notifications")
                        .arg(&chunk)
                        .query_async(&mut redis)
                        .await?;
                }
                let outcome = closed_with(&mut slow, 1008).await?;
                let healthy_got = reader.await??;
                if healthy_got < 2_500 {
                    bail!("the healthy client got only {healthy_got}");
                }
                Ok(format!(
                    "{outcome}; the healthy client got all {healthy_got}"
                ))
            }
        ),
        case!(
            "slow request head",
            BRIDGE,
            "`GET / HTTP/1.1\\r\\nhost` and then nothing",
            "closed after the request-head timeout (10 s)",
            |ctx| {
                let started = Instant::now();
                let (_, closed) = http_raw(
                    ctx.bridge.addr,
                    attacker(60),
                    b"GET / HTTP/1.1\r\nhost",
                    Duration::from_secs(15),
                )
                .await?;
                if !closed {
                    bail!("still open after 15 s");
                }
                Ok(format!(
                    "closed after {:.1} s",
                    started.elapsed().as_secs_f64()
                ))
            }
        ),
    ]
}
