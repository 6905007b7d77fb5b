//! Quotas and back pressure: one client trying to take more than its share — topics, bytes,
//! views, selectors, connections, requests, control frames, queued updates, fetch replies.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::future::join_all;
use hostile_tests::{Event, Peer, STEP, attacker, raw_frame};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use super::{
    Case, attacker_session, clean, error_saying, fetched, metric, metrics, shorten, still_open,
};
use crate::{
    MAX_CONNECTIONS, MAX_FETCH_BYTES, MAX_PER_ADDRESS, MAX_SELECTORS, MAX_TOPICS,
    MAX_VIEW_SPEC_BYTES, MAX_VIEWS, QUEUE_LIMIT, RATE, case,
};

const LIMITS: &str = "topic-server limits";

/// Sends requests from several sessions (each under its own rate) until one is refused;
/// returns how many succeeded and the refusal.
async fn until_refused(
    ctx: &crate::Ctx,
    address: u8,
    max: usize,
    request: impl Fn(usize) -> Value,
) -> anyhow::Result<(usize, Value)> {
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(attacker_session(ctx, address).await?);
    }
    for i in 0..max {
        let session = &mut sessions[(i / 500) % 4];
        let reply = session.request(request(i)).await?;
        if reply["type"] != "ok" {
            return Ok((i, reply));
        }
    }
    bail!("{max} requests and no refusal")
}

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "unlimited topics",
            LIMITS,
            "`add` topics until refused",
            "LIMIT_EXCEEDED at the configured maximum (1,500 here), naming it",
            |ctx| {
                let (added, refusal) = until_refused(&ctx, 30, MAX_TOPICS + 100, |i| {
                json!({"type":"add","path":format!("hostile/t/{i}"),"topicType":"INT64","value":i})
            })
            .await?;
                let observed = error_saying(&refusal, "LIMIT_EXCEEDED", &MAX_TOPICS.to_string())?;
                clean(&ctx, "hostile").await?;
                Ok(format!("{added} added, then {observed}"))
            }
        ),
        case!(
            "unlimited value bytes",
            LIMITS,
            "`add` 1 MB values until refused",
            "LIMIT_EXCEEDED at the tree's byte limit (32 MiB here)",
            |ctx| {
                let value = "x".repeat(1_000_000);
                let (added, refusal) = until_refused(&ctx, 31, 100, |i| {
                json!({"type":"add","path":format!("hostile/b/{i}"),"topicType":"STRING","value":value})
            })
            .await?;
                let observed = error_saying(&refusal, "LIMIT_EXCEEDED", "bytes")?;
                clean(&ctx, "hostile").await?;
                Ok(format!("{added} added, then {observed}"))
            }
        ),
        case!(
            "unlimited views",
            LIMITS,
            "`createview` until refused",
            "LIMIT_EXCEEDED at the maximum (20 here)",
            |ctx| {
                let mut p = attacker_session(&ctx, 32).await?;
                let mut refusal = None;
                let mut made = 0;
                for i in 0..MAX_VIEWS + 5 {
                    let reply = p.request(json!({"type":"createview","name":format!("v{i}"),"spec":format!("map hostile/v{i} to hostile/vref{i}")})).await?;
                    if reply["type"] != "ok" {
                        refusal = Some(reply);
                        break;
                    }
                    made += 1;
                }
                for i in 0..made {
                    p.ok(json!({"type":"removeview","name":format!("v{i}")}))
                        .await?;
                }
                let Some(refusal) = refusal else {
                    bail!("no refusal")
                };
                let observed = error_saying(&refusal, "LIMIT_EXCEEDED", &MAX_VIEWS.to_string())?;
                Ok(format!("{made} views, then {observed}"))
            }
        ),
        case!(
            "a giant listviews",
            LIMITS,
            "20 views of 8 KB specifications, then `listviews`",
            "a reply bounded by views × specification bytes",
            |ctx| {
                let mut p = attacker_session(&ctx, 32).await?;
                let padding = "x".repeat(MAX_VIEW_SPEC_BYTES - 100);
                for i in 0..MAX_VIEWS {
                    p.ok(json!({"type":"createview","name":format!("g{i}"),"spec":format!("map hostile/g{i} to hostile/gref{i} separator '{padding}'")})).await?;
                }
                let reply = p.request(json!({"type":"listviews"})).await?;
                let size = reply.to_string().len();
                for i in 0..MAX_VIEWS {
                    p.ok(json!({"type":"removeview","name":format!("g{i}")}))
                        .await?;
                }
                let bound = MAX_VIEWS * (MAX_VIEW_SPEC_BYTES + 100);
                if size > bound {
                    bail!("listviews was {size} bytes (bound {bound})");
                }
                Ok(format!("{size} bytes ≤ {bound}"))
            }
        ),
        case!(
            "tens of thousands of selectors",
            LIMITS,
            "one session subscribes 600 distinct selectors, then disconnects",
            "LIMIT_EXCEEDED at 500 (here); disconnecting stalls nobody",
            |ctx| {
                let mut p = attacker_session(&ctx, 33).await?;
                let mut refusal = None;
                for i in 0..MAX_SELECTORS + 100 {
                    let reply = p.request(json!({"type":"subscribe","selector":format!("#>hostile/s/{i}////>hostile/z/{i}")})).await?;
                    if reply["type"] != "ok" {
                        refusal = Some((i, reply));
                        break;
                    }
                }
                drop(p);
                let Some((held, refusal)) = refusal else {
                    bail!("no refusal")
                };
                let observed =
                    error_saying(&refusal, "LIMIT_EXCEEDED", &MAX_SELECTORS.to_string())?;
                Ok(format!("{held} held, then {observed}"))
            }
        ),
        case!(
            "selector memory",
            LIMITS,
            r"one session subscribes `?hostile/\w/x{i}` patterns (≈120 KB of automaton each)",
            "LIMIT_EXCEEDED when the session's selectors pass 4 MiB (here)",
            |ctx| {
                let mut p = attacker_session(&ctx, 33).await?;
                for i in 0..200 {
                    let reply = p
                        .request(
                            json!({"type":"subscribe","selector":format!(r"?hostile/\w/x{i}")}),
                        )
                        .await?;
                    if reply["type"] != "ok" {
                        let observed = error_saying(&reply, "LIMIT_EXCEEDED", "at most")?;
                        return Ok(format!("{i} patterns held, then {observed}"));
                    }
                }
                bail!("200 patterns and no refusal")
            }
        ),
        case!(
            "connections from one address",
            LIMITS,
            "101 WebSocket connections from one address",
            "the 101st gets HTTP 429 naming the limit (100 here)",
            |ctx| {
                let mut peers = Vec::new();
                for _ in 0..MAX_PER_ADDRESS {
                    peers.push(Peer::open(&ctx.ws(), attacker(40)).await?);
                }
                let reply = hostile_tests::http_raw(
                    ctx.topic_server.addr,
                    attacker(40),
                    b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
                    STEP,
                )
                .await?
                .0;
                drop(peers);
                if !reply.starts_with("HTTP/1.1 429")
                    || !reply.contains(&MAX_PER_ADDRESS.to_string())
                {
                    bail!("got {}", shorten(&reply, 200));
                }
                Ok(shorten(reply.lines().last().unwrap_or_default(), 100))
            }
        ),
        case!(
            "connections in total",
            LIMITS,
            "300 connections from three addresses",
            "HTTP 503 naming the limit once 300 are open (here)",
            |ctx| {
                let mut peers = Vec::new();
                let mut refused = None;
                'open: for address in 41..45u8 {
                    for _ in 0..MAX_PER_ADDRESS - 1 {
                        match Peer::open(&ctx.ws(), attacker(address)).await {
                            Ok(peer) => peers.push(peer),
                            Err(error) => {
                                refused = Some(error.to_string());
                                break 'open;
                            }
                        }
                    }
                }
                let open = peers.len();
                let reply = hostile_tests::http_raw(
                    ctx.topic_server.addr,
                    attacker(46),
                    b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
                    STEP,
                )
                .await?
                .0;
                drop(peers);
                if !reply.starts_with("HTTP/1.1 503") || refused.is_none() {
                    bail!("{open} open; then {}", shorten(&reply, 200));
                }
                Ok(format!(
                    "{open} of our connections open (limit {MAX_CONNECTIONS} with the suite's own); then 503: {}",
                    shorten(reply.lines().last().unwrap_or_default(), 80)
                ))
            }
        ),
        case!(
            "request flood",
            LIMITS,
            "5,000 `ping`s in one write",
            "RATE_LIMITED for those over the rate (1,000/s, burst 2,000 here); reading pauses; session open",
            |ctx| {
                let mut p = attacker_session(&ctx, 34).await?;
                for cid in 0..5_000u64 {
                    p.feed(Message::text(json!({"type":"ping","cid":cid}).to_string()))
                        .await?;
                }
                p.flush().await?;
                let (mut pongs, mut limited) = (0, 0);
                let deadline = Instant::now() + Duration::from_secs(15);
                while pongs + limited < 5_000 && Instant::now() < deadline {
                    match p.next(STEP).await {
                        Event::Message(m) if m["type"] == "pong" => pongs += 1,
                        Event::Message(m) if m["code"] == "RATE_LIMITED" => limited += 1,
                        other => bail!("unexpected {other:?}"),
                    }
                }
                if limited == 0 || pongs == 0 {
                    bail!("{pongs} pongs, {limited} refusals");
                }
                tokio::time::sleep(Duration::from_millis(1_100)).await;
                still_open(&mut p).await?;
                Ok(format!(
                    "{pongs} answered, {limited} RATE_LIMITED (rate {RATE}/s); session open"
                ))
            }
        ),
        case!(
            "ping flood, never reading",
            LIMITS,
            "200,000 WebSocket pings (125 B each), the client never reads",
            "pongs wait in a bounded buffer: the connection is closed or paced, memory stays bounded",
            |ctx| {
                let mut p = Peer::open_with(&ctx.ws(), attacker(35), Some(4096), None).await?;
                let rss_before = ctx.topic_server.rss_bytes();
                let ping = raw_frame(0x9, true, &[b'p'; 125]);
                let batch: Vec<u8> = ping
                    .iter()
                    .copied()
                    .cycle()
                    .take(ping.len() * 1000)
                    .collect();
                let mut sent = 0;
                let deadline = Instant::now() + Duration::from_secs(20);
                while sent < 200 && Instant::now() < deadline {
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        p.stream_mut().write_all(&batch),
                    )
                    .await
                    {
                        Ok(Ok(())) => sent += 1,
                        Ok(Err(_)) => break,
                        Err(_) => break,
                    }
                }
                let growth = ctx.topic_server.rss_bytes().saturating_sub(rss_before);
                drop(p);
                if growth > 64 * 1024 * 1024 {
                    bail!("RSS grew by {} MiB", growth >> 20);
                }
                Ok(format!(
                    "{} k pings written before the server stopped taking them; RSS +{} MiB",
                    sent,
                    growth >> 20
                ))
            }
        ),
        case!(
            "stalled subscriber of large values",
            LIMITS,
            "a subscriber that never reads while a 100 KB value changes slightly 100 times (small deltas)",
            "its queue counts the values its deltas keep alive: conflated within the queue limit (1 MiB here); RSS bounded",
            |ctx| {
                let mut publisher = attacker_session(&ctx, 36).await?;
                let doc = |n: usize| json!({"n": n, "pad": "p".repeat(100_000)});
                publisher.ok(json!({"type":"add","path":"hostile/large","topicType":"JSON","value":doc(0)})).await?;
                let mut stalled =
                    Peer::open_with(&ctx.ws(), attacker(36), Some(4096), None).await?;
                stalled
                    .send_json(&json!({"type":"connect","version":1}))
                    .await?;
                stalled
                    .send_json(&json!({"type":"subscribe","cid":1,"selector":">hostile/large"}))
                    .await?;
                let rss_before = ctx.topic_server.rss_bytes();
                let mut most_queued = 0.0f64;
                for n in 1..=100 {
                    publisher
                        .ok(json!({"type":"set","path":"hostile/large","value":doc(n)}))
                        .await?;
                    if n % 10 == 0 {
                        most_queued = most_queued
                            .max(metric(&metrics(&ctx).await?, "topic_server_queued_bytes"));
                    }
                }
                let growth = ctx.topic_server.rss_bytes().saturating_sub(rss_before);
                drop(stalled);
                clean(&ctx, "hostile").await?;
                if growth > 64 * 1024 * 1024 || most_queued > (2 * QUEUE_LIMIT) as f64 {
                    bail!(
                        "RSS +{} MiB; queued up to {most_queued} bytes",
                        growth >> 20
                    );
                }
                Ok(format!(
                    "queued at most {:.0} KiB (all sessions); RSS +{} MiB",
                    most_queued / 1024.0,
                    growth >> 20
                ))
            }
        ),
        case!(
            "concurrent fetch of everything",
            LIMITS,
            "1,000 topics of 1 KB; four sessions `fetch *.*` at once",
            "each reply one page ≤ 256 KiB with `more: true`",
            |ctx| {
                let mut setup = attacker_session(&ctx, 37).await?;
                let mut second = attacker_session(&ctx, 37).await?;
                for i in 0..1_000 {
                    let p = if i < 500 { &mut setup } else { &mut second };
                    p.ok(json!({"type":"add","path":format!("hostile/f/{i:04}"),"topicType":"STRING","value":"v".repeat(1_000)})).await?;
                }
                let mut peers = Vec::new();
                for _ in 0..4 {
                    peers.push(attacker_session(&ctx, 38).await?);
                }
                let replies = join_all(
                    peers
                        .iter_mut()
                        .map(|p| p.request(json!({"type":"fetch","selector":"*.*"}))),
                )
                .await;
                let mut sizes = Vec::new();
                for reply in replies {
                    let reply = reply?;
                    let size = reply.to_string().len();
                    if reply["more"] != true
                        || size > MAX_FETCH_BYTES + 4096
                        || fetched(&reply)?.is_empty()
                    {
                        bail!("a reply of {size} bytes, more={}", reply["more"]);
                    }
                    sizes.push(size);
                }
                clean(&ctx, "hostile").await?;
                Ok(format!("4 pages of {sizes:?} bytes, each with more=true"))
            }
        ),
        case!(
            "slow reader",
            LIMITS,
            "a subscriber that never reads a conflation-off, values-only topic updated up to 3,000 times (6 KB each, more than the kernel buffers)",
            "closed for \"message queue limit reached\" (1008; if it still does not read, its socket goes after the close grace period); the others unaffected",
            |ctx| {
                let mut publishers = Vec::new();
                for _ in 0..3 {
                    publishers.push(attacker_session(&ctx, 39).await?);
                }
                let closed_before = metric(
                    &metrics(&ctx).await?,
                    "topic_server_sessions_closed_total{reason=\"queue_limit\"}",
                );
                // Full values every time (no deltas), so the updates fill the kernel's buffers.
                publishers[0].ok(json!({"type":"add","path":"hostile/busy","topicType":"STRING","properties":{"CONFLATION":"off","PUBLISH_VALUES_ONLY":"true"},"value":"0"})).await?;
                let mut slow = Peer::open_with(&ctx.ws(), attacker(39), Some(4096), None).await?;
                slow.send_json(&json!({"type":"connect","version":1}))
                    .await?;
                slow.send_json(&json!({"type":"subscribe","cid":1,"selector":">hostile/busy"}))
                    .await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut sent = 0;
                for n in 0..3_000 {
                    publishers[n % 3].ok(json!({"type":"set","path":"hostile/busy","value":format!("{n}{}", "x".repeat(6_000))})).await?;
                    sent += 1;
                    if n % 100 == 99
                        && metric(
                            &metrics(&ctx).await?,
                            "topic_server_sessions_closed_total{reason=\"queue_limit\"}",
                        ) > closed_before
                    {
                        break;
                    }
                }
                clean(&ctx, "hostile").await?;
                // A session is counted once its writer is done: a client that does not read
                // keeps it for the close grace period (10 s).
                let counted = super::eventually_within(
                    "the close to be counted",
                    Duration::from_secs(15),
                    || async {
                        Ok(metric(
                            &metrics(&ctx).await?,
                            "topic_server_sessions_closed_total{reason=\"queue_limit\"}",
                        ) > closed_before)
                    },
                )
                .await;
                if counted.is_err() {
                    bail!("not closed after {sent} updates");
                }
                // The client reads at last: the backlog already in the kernel, then the close.
                let end = match slow.close_code(std::time::Duration::from_secs(15)).await {
                    Ok((1008, reason)) => format!("closed 1008 \"{reason}\""),
                    Ok((code, reason)) => bail!("closed {code} {reason}"),
                    Err(Event::Ended(e)) => format!("connection ended ({e})"),
                    Err(other) => bail!("still open: {other:?}"),
                };
                Ok(format!(
                    "closed for the queue limit after {sent} updates; the client then saw: {end}"
                ))
            }
        ),
    ]
}
