//! The topic server's WebSocket protocol: malformed, oversized and out-of-order messages,
//! invalid paths, values and selectors.

use std::time::{Duration, Instant};

use anyhow::bail;
use hostile_tests::{Event, Peer, STEP, attacker, raw_frame};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use super::{
    Case, attacker_session, clean, closed_with, error_saying, error_with, fetched, still_open,
};
use crate::{MAX_MESSAGE_BYTES, case};

const WS: &str = "topic-server WebSocket";

/// Sends `text` and expects an error with `code`, the session staying open.
async fn refused(peer: &mut Peer, text: &str, code: &str) -> anyhow::Result<String> {
    peer.send_text(text).await?;
    let observed = match peer.next(STEP).await {
        Event::Message(m) => error_with(&m, code)?,
        other => bail!("no error reply: {other:?}"),
    };
    still_open(peer).await?;
    Ok(format!("{observed}; session open"))
}

/// A request whose reply must be an error with `code` saying `needle`; the session stays open.
async fn request_refused(
    peer: &mut Peer,
    request: Value,
    code: &str,
    needle: &str,
) -> anyhow::Result<String> {
    let reply = peer.request(request).await?;
    let observed = error_saying(&reply, code, needle)?;
    still_open(peer).await?;
    Ok(observed)
}

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "not JSON",
            WS,
            "text `this is not json`",
            "MALFORMED_MESSAGE; session open",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                refused(&mut p, "this is not json", "MALFORMED_MESSAGE").await
            }
        ),
        case!(
            "JSON array",
            WS,
            "text `[1,2,3]`",
            "MALFORMED_MESSAGE; session open",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                refused(&mut p, "[1,2,3]", "MALFORMED_MESSAGE").await
            }
        ),
        case!(
            "no type",
            WS,
            r#"`{"cid":1}`"#,
            "MALFORMED_MESSAGE; session open",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                refused(&mut p, r#"{"cid":1}"#, "MALFORMED_MESSAGE").await
            }
        ),
        case!(
            "unknown type",
            WS,
            r#"`{"type":"explode","cid":9}`"#,
            "UNKNOWN_OPERATION with cid 9; session open",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                p.send_text(r#"{"type":"explode","cid":9}"#).await?;
                let Event::Message(m) = p.next(STEP).await else {
                    bail!("no reply")
                };
                if m["cid"] != 9 {
                    bail!("cid not echoed: {m}");
                }
                let observed = error_with(&m, "UNKNOWN_OPERATION")?;
                still_open(&mut p).await?;
                Ok(format!("{observed} (cid 9); session open"))
            }
        ),
        case!(
            "type is a number",
            WS,
            r#"`{"type":7}`"#,
            "MALFORMED_MESSAGE; session open",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                refused(&mut p, r#"{"type":7}"#, "MALFORMED_MESSAGE").await
            }
        ),
        case!(
            "cid is a string",
            WS,
            r#"`{"type":"ping","cid":"x"}`"#,
            "MALFORMED_MESSAGE without cid; session open",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                refused(&mut p, r#"{"type":"ping","cid":"x"}"#, "MALFORMED_MESSAGE").await
            }
        ),
        case!(
            "10,000-deep JSON",
            WS,
            "`[[[[…]]]]` nested 10,000 deep (20 KB)",
            "MALFORMED_MESSAGE (JSON recursion limit); no stack overflow",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
                refused(&mut p, &deep, "MALFORMED_MESSAGE").await
            }
        ),
        case!(
            "message over the limit",
            WS,
            "1.2 MiB `set` (limit 1 MiB)",
            "MESSAGE_TOO_LARGE, then close 1009",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                let big = json!({"type":"set","cid":1,"path":"a","value":"x".repeat(MAX_MESSAGE_BYTES + MAX_MESSAGE_BYTES / 5)});
                p.send_json(&big).await?;
                let Event::Message(m) = p.next(STEP).await else {
                    bail!("no error before the close")
                };
                let observed = error_with(&m, "MESSAGE_TOO_LARGE")?;
                Ok(format!("{observed}; {}", closed_with(&mut p, 1009).await?))
            }
        ),
        case!(
            "frame far over the limit",
            WS,
            "one 4 MiB frame (beyond the WebSocket layer's limit)",
            "close 1009; the client can finish sending (no TCP reset)",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                let frame = raw_frame(0x1, true, &vec![b' '; 4 * 1024 * 1024]);
                let write = p.stream_mut().write_all(&frame).await;
                if let Err(e) = write {
                    bail!("the server reset the connection while the client was sending: {e}");
                }
                closed_with(&mut p, 1009).await
            }
        ),
        case!(
            "binary frame",
            WS,
            "binary frame of 3 bytes",
            "MALFORMED_MESSAGE; session open",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                p.send_raw(Message::binary(vec![1u8, 2, 3])).await?;
                let Event::Message(m) = p.next(STEP).await else {
                    bail!("no reply")
                };
                let observed = error_with(&m, "MALFORMED_MESSAGE")?;
                still_open(&mut p).await?;
                Ok(format!("{observed}; session open"))
            }
        ),
        case!(
            "invalid UTF-8",
            WS,
            "text frame with bytes `ff fe` (not UTF-8)",
            "close 1007 (RFC 6455)",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                p.stream_mut()
                    .write_all(&raw_frame(0x1, true, b"{\"type\":\"ping\xff\xfe"))
                    .await?;
                closed_with(&mut p, 1007).await
            }
        ),
        case!(
            "10,000 fragments",
            WS,
            "a 10 KB `ping` in 10,000 one-byte continuation frames",
            "answered (pong); bounded",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                let mut text = br#"{"type":"ping","cid":77}"#.to_vec();
                text.resize(10_000, b' ');
                let mut bytes = Vec::new();
                for (i, b) in text.iter().enumerate() {
                    let opcode = if i == 0 { 0x1 } else { 0x0 };
                    bytes.extend(raw_frame(opcode, i + 1 == text.len(), &[*b]));
                }
                p.stream_mut().write_all(&bytes).await?;
                match p.next(STEP).await {
                    Event::Message(m) if m["type"] == "pong" && m["cid"] == 77 => {
                        Ok("pong".to_owned())
                    }
                    other => bail!("expected pong, got {other:?}"),
                }
            }
        ),
        case!(
            "request before connect",
            WS,
            "`subscribe` as the first message",
            "HANDSHAKE_REQUIRED; session open",
            |ctx| {
                let mut p = Peer::open(&ctx.ws(), attacker(1)).await?;
                p.send_json(&json!({"type":"subscribe","cid":3,"selector":"a"}))
                    .await?;
                let Event::Message(m) = p.next(STEP).await else {
                    bail!("no reply")
                };
                let observed = error_with(&m, "HANDSHAKE_REQUIRED")?;
                p.send_json(&json!({"type":"connect","version":1})).await?;
                match p.next(STEP).await {
                    Event::Message(m) if m["type"] == "connected" => {
                        Ok(format!("{observed}; connect still works"))
                    }
                    other => bail!("connect failed afterwards: {other:?}"),
                }
            }
        ),
        case!(
            "second connect",
            WS,
            "`connect` twice",
            "HANDSHAKE_REQUIRED; session open",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                refused(
                    &mut p,
                    r#"{"type":"connect","version":1}"#,
                    "HANDSHAKE_REQUIRED",
                )
                .await
            }
        ),
        case!(
            "unknown version",
            WS,
            r#"`{"type":"connect","version":99}`"#,
            "UNSUPPORTED_VERSION, close 1002",
            |ctx| {
                let mut p = Peer::open(&ctx.ws(), attacker(1)).await?;
                p.send_json(&json!({"type":"connect","version":99})).await?;
                let Event::Message(m) = p.next(STEP).await else {
                    bail!("no reply")
                };
                let observed = error_with(&m, "UNSUPPORTED_VERSION")?;
                Ok(format!("{observed}; {}", closed_with(&mut p, 1002).await?))
            }
        ),
        case!(
            "never connects",
            WS,
            "WebSocket opened, nothing sent",
            "closed 1008 after the handshake timeout (2 s here)",
            |ctx| {
                let mut p = Peer::open(&ctx.ws(), attacker(1)).await?;
                let started = Instant::now();
                let observed = closed_with(&mut p, 1008).await?;
                Ok(format!(
                    "{observed} after {:.1} s",
                    started.elapsed().as_secs_f64()
                ))
            }
        ),
        case!(
            "unknown property",
            WS,
            "`add` with property `NOPE:1`",
            "INVALID_PROPERTIES",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                request_refused(&mut p, json!({"type":"add","path":"hostile/p","topicType":"JSON","properties":{"NOPE":"1"}}), "INVALID_PROPERTIES", "NOPE").await
            }
        ),
        case!(
            "unknown topic type",
            WS,
            "`add` with topicType `TABLE`",
            "MALFORMED_MESSAGE",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                request_refused(
                    &mut p,
                    json!({"type":"add","path":"hostile/p","topicType":"TABLE"}),
                    "MALFORMED_MESSAGE",
                    "TABLE",
                )
                .await
            }
        ),
        case!(
            "number out of range",
            WS,
            "`set` of `1e400` on a DOUBLE topic, and inside a JSON value",
            "INVALID_VALUE; the JSON value keeps the number exactly (never infinity or null)",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                p.ok(json!({"type":"add","path":"hostile/dbl","topicType":"DOUBLE"}))
                    .await?;
                let observed = refused(
                    &mut p,
                    r#"{"type":"set","cid":1,"path":"hostile/dbl","value":1e400}"#,
                    "INVALID_VALUE",
                )
                .await?;
                p.ok(json!({"type":"add","path":"hostile/huge","topicType":"JSON"}))
                    .await?;
                p.send_text(r#"{"type":"set","cid":2,"path":"hostile/huge","value":[1e400]}"#)
                    .await?;
                match p.next(STEP).await {
                    Event::Message(m) if m["type"] == "ok" => {}
                    other => bail!("set of [1e400] on a JSON topic: {other:?}"),
                }
                let fetched = p
                    .request(json!({"type":"fetch","selector":"hostile/huge"}))
                    .await?;
                let value = fetched["topics"][0]["value"].to_string();
                if value != "[1e+400]" {
                    bail!("the JSON topic holds {value}, not the number set");
                }
                Ok(format!("{observed}; JSON topic holds {value}"))
            }
        ),
        case!(
            "reserved path",
            WS,
            "`add` at `Diffusion/x` and `$x`",
            "INVALID_PATH for both",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                let a = request_refused(
                    &mut p,
                    json!({"type":"add","path":"Diffusion/x","topicType":"JSON"}),
                    "INVALID_PATH",
                    "reserved",
                )
                .await?;
                request_refused(
                    &mut p,
                    json!({"type":"add","path":"$x","topicType":"JSON"}),
                    "INVALID_PATH",
                    "reserved",
                )
                .await?;
                Ok(a)
            }
        ),
        case!(
            "control character in a path",
            WS,
            "`add` at `a\\u0007b`",
            "INVALID_PATH",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                request_refused(
                    &mut p,
                    json!({"type":"add","path":"a\u{7}b","topicType":"JSON"}),
                    "INVALID_PATH",
                    "control",
                )
                .await
            }
        ),
        case!(
            "deep path",
            WS,
            "`add` at a path of 200,000 segments (400 KB)",
            "INVALID_PATH at once (paths ≤ 4096 bytes, ≤ 128 segments)",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                let path = vec!["a"; 200_000].join("/");
                let started = Instant::now();
                let observed = request_refused(
                    &mut p,
                    json!({"type":"add","path":path,"topicType":"JSON"}),
                    "INVALID_PATH",
                    "longer than",
                )
                .await?;
                let deep_ok = vec!["d"; 128].join("/");
                p.ok(json!({"type":"add","path":format!("hostile/{}", &deep_ok[..deep_ok.len() - 16]),"topicType":"JSON"})).await?;
                clean(&ctx, "hostile").await?;
                Ok(format!(
                    "{observed} in {} ms; a 120-segment path is fine",
                    started.elapsed().as_millis()
                ))
            }
        ),
        case!(
            "INT64 past its range",
            WS,
            "`set` INT64 to -9223372036854775809 and to 9223372036854775808",
            "INVALID_VALUE for both (never stored as a different number)",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                p.ok(json!({"type":"add","path":"hostile/int","topicType":"INT64","value":5}))
                    .await?;
                let mut seen = Vec::new();
                for text in ["-9223372036854775809", "9223372036854775808"] {
                    p.send_text(format!(
                        r#"{{"type":"set","cid":100,"path":"hostile/int","value":{text}}}"#
                    ))
                    .await?;
                    let Event::Message(m) = p.next(STEP).await else {
                        bail!("no reply")
                    };
                    seen.push(error_with(&m, "INVALID_VALUE")?);
                }
                let reply = p
                    .request(json!({"type":"fetch","selector":"hostile/int"}))
                    .await?;
                if fetched(&reply)?[0]["value"] != 5 {
                    bail!("the value changed: {reply}");
                }
                clean(&ctx, "hostile").await?;
                Ok(format!("{}; value still 5", seen.join("; ")))
            }
        ),
        case!(
            "bad base64",
            WS,
            "`add` BINARY with value `!!!`",
            "INVALID_VALUE",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                request_refused(
                    &mut p,
                    json!({"type":"add","path":"hostile/bin","topicType":"BINARY","value":"!!!"}),
                    "INVALID_VALUE",
                    "base64",
                )
                .await
            }
        ),
        case!(
            "empty selector",
            WS,
            "`subscribe` with selector ``",
            "INVALID_SELECTOR",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                request_refused(
                    &mut p,
                    json!({"type":"subscribe","selector":""}),
                    "INVALID_SELECTOR",
                    "empty",
                )
                .await
            }
        ),
        case!(
            "70 KB selector",
            WS,
            "`subscribe` with a 70,000-byte path selector",
            "INVALID_SELECTOR (selectors ≤ 64 KiB)",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                request_refused(
                    &mut p,
                    json!({"type":"subscribe","selector":format!(">{}", "a".repeat(70_000))}),
                    "INVALID_SELECTOR",
                    "longer than",
                )
                .await
            }
        ),
        case!(
            "selector set nested 60,000 deep",
            WS,
            "`subscribe` with `#` × 60,000 then `>hostile/a`",
            "ok: nested sets flatten without recursion (was: stack overflow, SIGABRT)",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                p.ok(json!({"type":"subscribe","selector":format!("{}>hostile/a", "#".repeat(60_000))})).await?;
                still_open(&mut p).await?;
                Ok("ok".to_owned())
            }
        ),
        case!(
            "huge regex automaton",
            WS,
            r"`subscribe` with `?\w{100}` (15 bytes)",
            "INVALID_SELECTOR: compiled pattern over 1 MiB (was: ~12 MB retained per selector)",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                request_refused(
                    &mut p,
                    json!({"type":"subscribe","selector":r"?\w{100}"}),
                    "INVALID_SELECTOR",
                    "larger than",
                )
                .await
            }
        ),
        case!(
            "backtracking-style regex",
            WS,
            "`subscribe` with `*(a|aa)+$|(a+)+b`, then `add` a 4,000-byte path of `a`s",
            "both ok, quickly: the regex engine is linear",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                p.ok(json!({"type":"subscribe","selector":"*hostile/((a|aa)+|(a+)+b)"}))
                    .await?;
                let path = format!("hostile/{}", "a".repeat(4_000));
                let started = Instant::now();
                p.ok(json!({"type":"add","path":path,"topicType":"JSON"}))
                    .await?;
                let took = started.elapsed();
                clean(&ctx, "hostile").await?;
                Ok(format!("ok; add answered in {} ms", took.as_millis()))
            }
        ),
        case!(
            "ambiguous set separator",
            WS,
            "`subscribe` `#?a/////b` (5 slashes, bare path next); and `#?hostile/q//////>hostile/r`",
            "INVALID_SELECTOR for the first; the second keeps `?hostile/q`'s `//` qualifier",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                let observed = request_refused(
                    &mut p,
                    json!({"type":"subscribe","selector":"#?a/////b"}),
                    "INVALID_SELECTOR",
                    "could end",
                )
                .await?;
                p.ok(json!({"type":"add","path":"hostile/q/child","topicType":"INT64","value":1}))
                    .await?;
                // The notices come before the reply: read both.
                p.send_json(
                    &json!({"type":"subscribe","cid":500,"selector":"#?hostile/q//////>hostile/r"}),
                )
                .await?;
                let mut subscribed = false;
                loop {
                    match p.next(STEP).await {
                        Event::Message(m)
                            if m["type"] == "subscribed" && m["path"] == "hostile/q/child" =>
                        {
                            subscribed = true
                        }
                        Event::Message(m) if m["cid"] == 500 => break,
                        Event::Message(_) => {}
                        other => bail!("no reply to subscribe: {other:?}"),
                    }
                }
                clean(&ctx, "hostile").await?;
                if !subscribed {
                    bail!("the qualifier of the first member was dropped");
                }
                Ok(format!(
                    "{observed}; six slashes: subscribed to hostile/q/child"
                ))
            }
        ),
        case!(
            "fetch page limits",
            WS,
            "`fetch` with `limit` 0 and `limit` 10^15",
            "at least one topic per page, never more than the server's page",
            |ctx| {
                let mut p = attacker_session(&ctx, 1).await?;
                for i in 0..3 {
                    p.ok(json!({"type":"add","path":format!("hostile/fl/{i}"),"topicType":"INT64","value":i})).await?;
                }
                let zero = p
                    .request(json!({"type":"fetch","selector":"?hostile/fl/.*","limit":0}))
                    .await?;
                let huge = p.request(json!({"type":"fetch","selector":"?hostile/fl/.*","limit":1_000_000_000_000_000_u64})).await?;
                let (z, h) = (fetched(&zero)?.len(), fetched(&huge)?.len());
                clean(&ctx, "hostile").await?;
                if z != 1 || zero["more"] != true || h != 3 {
                    bail!("limit 0 gave {z} (more={}), huge gave {h}", zero["more"]);
                }
                Ok("limit 0: 1 topic and more=true; huge: all 3".to_owned())
            }
        ),
        case!(
            "abrupt reset mid-frame",
            WS,
            "half a frame, then TCP RST (SO_LINGER 0), × 50",
            "sessions cleaned up: descriptors back to where they were",
            |ctx| {
                let before = ctx.topic_server.open_fds();
                for _ in 0..50 {
                    let mut p = attacker_session(&ctx, 2).await?;
                    let frame = raw_frame(0x1, true, br#"{"type":"ping","cid":1}"#);
                    p.stream_mut().write_all(&frame[..10]).await?;
                    // A zero linger makes the close a reset, and does not block.
                    #[allow(deprecated)]
                    p.stream_mut().set_linger(Some(Duration::ZERO))?;
                    drop(p);
                }
                super::eventually("descriptors to come back", || async {
                    Ok(ctx.topic_server.open_fds() <= before + 2)
                })
                .await?;
                Ok(format!(
                    "descriptors {before} → {}",
                    ctx.topic_server.open_fds()
                ))
            }
        ),
        case!(
            "connection churn",
            WS,
            "300 sessions opened, handshaken and dropped, 10 at a time",
            "no descriptor or memory left behind",
            |ctx| {
                let before = ctx.topic_server.open_fds();
                let rss_before = ctx.topic_server.rss_bytes();
                for round in 0..30u8 {
                    let mut peers = Vec::new();
                    for _ in 0..10 {
                        peers.push(attacker_session(&ctx, 10 + round % 5).await?);
                    }
                    drop(peers);
                }
                super::eventually("descriptors to come back", || async {
                    Ok(ctx.topic_server.open_fds() <= before + 2)
                })
                .await?;
                Ok(format!(
                    "descriptors {before} → {}; RSS {} → {} MiB",
                    ctx.topic_server.open_fds(),
                    rss_before >> 20,
                    ctx.topic_server.rss_bytes() >> 20
                ))
            }
        ),
    ]
}
