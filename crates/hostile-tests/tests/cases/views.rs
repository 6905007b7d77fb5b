//! Topic views: specifications built to overflow a parser's stack, overflow timers, amplify
//! one message into unbounded output, or loop; and the correctness defects found by
//! differential testing.

use std::time::Duration;

use anyhow::bail;
use hostile_tests::{Event, Peer, STEP, metric};
use serde_json::{Value, json};

use super::{Case, attacker_session, clean, error_saying, fetched, metrics, still_open};
use crate::{MAX_DELAYED, MAX_VIEW_OUTPUT_BYTES, MAX_VIEW_RESULTS, case};

const VIEWS: &str = "topic-server views";

/// `createview` must fail with `code` saying `needle`.
async fn view_refused(
    peer: &mut Peer,
    spec: &str,
    code: &str,
    needle: &str,
) -> anyhow::Result<String> {
    let reply = peer
        .request(json!({"type":"createview","name":"hostile","spec":spec}))
        .await?;
    let observed = error_saying(&reply, code, needle)?;
    still_open(peer).await?;
    Ok(observed)
}

/// The current value of the topic at `path`, if it exists.
async fn value_of(peer: &mut Peer, path: &str) -> anyhow::Result<Option<Value>> {
    let reply = peer
        .request(json!({"type":"fetch","selector":format!(">{path}")}))
        .await?;
    Ok(fetched(&reply)?.first().map(|t| t["value"].clone()))
}

async fn remove_views(peer: &mut Peer, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        peer.ok(json!({"type":"removeview","name":name})).await?;
    }
    Ok(())
}

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "condition in 4,000 brackets",
            VIEWS,
            "`process {if '((((… /a = 1 …))))' continue}`, 4,000 deep (8 KB)",
            "INVALID_VIEW: nested more than 32 levels (was: stack overflow, SIGABRT)",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                let cond = format!("{}/a = 1{}", "(".repeat(4_000), ")".repeat(4_000));
                view_refused(
                    &mut p,
                    &format!("map a to b process {{if '{cond}' continue}}"),
                    "INVALID_VIEW",
                    "nested more than",
                )
                .await
            }
        ),
        case!(
            "2,000 chained `not`",
            VIEWS,
            "`if 'not not … /a = 1'`, 2,000 `not`s",
            "INVALID_VIEW: nested more than 32 levels",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                let cond = format!("{}/a = 1", "not ".repeat(2_000));
                view_refused(
                    &mut p,
                    &format!("map a to b process {{if '{cond}' continue}}"),
                    "INVALID_VIEW",
                    "nested more than",
                )
                .await
            }
        ),
        case!(
            "calc in 4,000 brackets",
            VIEWS,
            "`set(/x, calc '((((1))))')`, 4,000 deep",
            "INVALID_VIEW: nested more than 32 levels",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                let expr = format!("{}1{}", "(".repeat(4_000), ")".repeat(4_000));
                view_refused(
                    &mut p,
                    &format!("map a to b process {{set(/x, calc '{expr}')}}"),
                    "INVALID_VIEW",
                    "nested more than",
                )
                .await
            }
        ),
        case!(
            "calc with 8,000 unary minuses",
            VIEWS,
            "`calc '--------…1'`",
            "INVALID_VIEW: nested more than 32 levels",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                let expr = format!("{}1", "-".repeat(8_000));
                view_refused(
                    &mut p,
                    &format!("map a to b process {{set(/x, calc '{expr}')}}"),
                    "INVALID_VIEW",
                    "nested more than",
                )
                .await
            }
        ),
        case!(
            "100 KB specification",
            VIEWS,
            "a condition in 50,000 brackets (100 KB)",
            "LIMIT_EXCEEDED: specifications ≤ 8 KiB, refused before parsing",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                let cond = format!("{}/a = 1{}", "(".repeat(50_000), ")".repeat(50_000));
                view_refused(
                    &mut p,
                    &format!("map a to b process {{if '{cond}' continue}}"),
                    "LIMIT_EXCEEDED",
                    "at most",
                )
                .await
            }
        ),
        case!(
            "delay of 3,000 years",
            VIEWS,
            "`delay by 99999999999 seconds`",
            "INVALID_VIEW: at most 24 hours (was: Instant overflow panic under the engine lock, server frozen)",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                view_refused(
                    &mut p,
                    "map a to b delay by 99999999999 seconds",
                    "INVALID_VIEW",
                    "too long",
                )
                .await
            }
        ),
        case!(
            "throttle period of 10^15 s",
            VIEWS,
            "`throttle to 1 update every 1000000000000000 seconds`",
            "INVALID_VIEW: at most 24 hours",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                view_refused(
                    &mut p,
                    "map a to b throttle to 1 update every 1000000000000000 seconds",
                    "INVALID_VIEW",
                    "too long",
                )
                .await
            }
        ),
        case!(
            "held results outlive their view",
            VIEWS,
            "`delay by 1 hour` view, 1,200 source updates, then view and sources removed",
            "held results bounded (1,000 here) and released with the view",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                p.ok(json!({"type":"createview","name":"held","spec":"map ?hostile/d/ to hostile/dref/<path(2)> delay by 1 hour"})).await?;
                p.ok(json!({"type":"add","path":"hostile/d/x","topicType":"INT64","value":0}))
                    .await?;
                p.ok(json!({"type":"add","path":"hostile/d/y","topicType":"INT64","value":0}))
                    .await?;
                for n in 1..=600 {
                    p.ok(json!({"type":"set","path":"hostile/d/x","value":n}))
                        .await?;
                    p.ok(json!({"type":"set","path":"hostile/d/y","value":n}))
                        .await?;
                }
                let held = metric(&metrics(&ctx).await?, "topic_server_view_held_results");
                remove_views(&mut p, &["held"]).await?;
                clean(&ctx, "hostile").await?;
                let after = metric(&metrics(&ctx).await?, "topic_server_view_held_results");
                if held > (MAX_DELAYED + 2) as f64 || after != 0.0 {
                    bail!("held {held} (limit {MAX_DELAYED}), {after} after removal");
                }
                Ok(format!("{held} held at most; {after} after removal"))
            }
        ),
        case!(
            "expand into 200,000 topics",
            VIEWS,
            "view `<expand()>` over a 400 KB array of 200,000 numbers",
            "the source derives nothing (1,000 results at most here); no topic created",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                p.ok(json!({"type":"add","path":"hostile/exp","topicType":"JSON"}))
                    .await?;
                p.ok(json!({"type":"createview","name":"exp","spec":"map hostile/exp to hostile/expref/<expand()>"})).await?;
                let failures = metric(
                    &metrics(&ctx).await?,
                    "topic_server_view_evaluation_failures_total",
                );
                let topics = metric(&metrics(&ctx).await?, "topic_server_topics");
                let array = Value::Array(vec![json!(0); 200_000]);
                p.ok(json!({"type":"set","path":"hostile/exp","value":array}))
                    .await?;
                let body = metrics(&ctx).await?;
                let (failures_after, topics_after) = (
                    metric(&body, "topic_server_view_evaluation_failures_total"),
                    metric(&body, "topic_server_topics"),
                );
                remove_views(&mut p, &["exp"]).await?;
                clean(&ctx, "hostile").await?;
                if failures_after < failures + 1.0 || topics_after > topics + 1.0 {
                    bail!(
                        "failures {failures} → {failures_after}, topics {topics} → {topics_after}"
                    );
                }
                Ok(format!(
                    "refused (limit {MAX_VIEW_RESULTS}); topics {topics} → {topics_after}"
                ))
            }
        ),
        case!(
            "insert amplification",
            VIEWS,
            "view `<expand()> insert hostile/big at /copy`: 900 branches × a 600 KB topic (540 MB)",
            "the source derives nothing (4 MiB per source here)",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                p.ok(json!({"type":"add","path":"hostile/big","topicType":"JSON","value":"x".repeat(600_000)})).await?;
                p.ok(json!({"type":"add","path":"hostile/ins","topicType":"JSON"}))
                    .await?;
                p.ok(json!({"type":"createview","name":"ins","spec":"map hostile/ins to hostile/insref/<expand()> insert hostile/big at /copy"})).await?;
                let before = metric(
                    &metrics(&ctx).await?,
                    "topic_server_view_evaluation_failures_total",
                );
                let source = Value::Array((0..900).map(|i| json!({"n": i})).collect());
                p.ok(json!({"type":"set","path":"hostile/ins","value":source}))
                    .await?;
                let after = metric(
                    &metrics(&ctx).await?,
                    "topic_server_view_evaluation_failures_total",
                );
                let created = value_of(&mut p, "hostile/insref/0").await?.is_some();
                remove_views(&mut p, &["ins"]).await?;
                clean(&ctx, "hostile").await?;
                if after < before + 1.0 || created {
                    bail!("failures {before} → {after}; reference created: {created}");
                }
                Ok(format!(
                    "refused (limit {} MiB); nothing created",
                    MAX_VIEW_OUTPUT_BYTES >> 20
                ))
            }
        ),
        case!(
            "chain of nine views",
            VIEWS,
            "views c/0→c/1→…→c/9",
            "exactly 8 reference topics (docs: a change passes through at most 8 views)",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                let names: Vec<String> = (0..9).map(|i| format!("chain{i}")).collect();
                for (i, name) in names.iter().enumerate() {
                    p.ok(json!({"type":"createview","name":name,"spec":format!("map hostile/c/{i} to hostile/c/{}", i + 1)})).await?;
                }
                p.ok(json!({"type":"add","path":"hostile/c/0","topicType":"JSON","value":1}))
                    .await?;
                let mut made = 0;
                for i in 1..=9 {
                    if value_of(&mut p, &format!("hostile/c/{i}")).await?.is_some() {
                        made += 1;
                    }
                }
                remove_views(
                    &mut p,
                    &names.iter().map(String::as_str).collect::<Vec<_>>(),
                )
                .await?;
                clean(&ctx, "hostile").await?;
                if made != 8 {
                    bail!("{made} reference topics");
                }
                Ok("8 reference topics".to_owned())
            }
        ),
        case!(
            "cycle of views",
            VIEWS,
            "views a→b and b→a (incrementing /n on the way)",
            "the ripple stops after 8 views; counted in topic_server_view_chain_stops_total",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                let before = metric(&metrics(&ctx).await?, "topic_server_view_chain_stops_total");
                p.ok(json!({"type":"createview","name":"ab","spec":"map hostile/cy/a to hostile/cy/b"})).await?;
                p.ok(json!({"type":"createview","name":"ba","spec":"map hostile/cy/b to hostile/cy/a process {set(/n, calc \"/n + 1\")}"})).await?;
                p.ok(json!({"type":"createview","name":"seed","spec":"map hostile/cy/src to hostile/cy/a"})).await?;
                p.ok(json!({"type":"add","path":"hostile/cy/src","topicType":"JSON","value":{"n":0}})).await?;
                let after = metric(&metrics(&ctx).await?, "topic_server_view_chain_stops_total");
                let a = value_of(&mut p, "hostile/cy/a").await?;
                remove_views(&mut p, &["ab", "ba", "seed"]).await?;
                clean(&ctx, "hostile").await?;
                if after < before + 1.0 {
                    bail!("no chain stop counted ({before} → {after})");
                }
                Ok(format!("stopped; a = {}", a.unwrap_or_default()))
            }
        ),
        case!(
            "patch `test` with 1 vs 1.0",
            VIEWS,
            r#"`patch '[{"op":"test","path":"/a","value":1.0}, …]'` on `{"a":1}`"#,
            "the test passes (RFC 6902 §4.6: numbers compare by value)",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                p.ok(json!({"type":"add","path":"hostile/pt","topicType":"JSON","value":{"a":1}}))
                    .await?;
                p.ok(json!({"type":"createview","name":"pt","spec":r#"map hostile/pt to hostile/ptref patch '[{"op":"test","path":"/a","value":1.0},{"op":"add","path":"/ok","value":true}]'"#})).await?;
                let value = value_of(&mut p, "hostile/ptref").await?;
                remove_views(&mut p, &["pt"]).await?;
                clean(&ctx, "hostile").await?;
                match value {
                    Some(v) if v == json!({"a":1,"ok":true}) => Ok(format!("reference topic {v}")),
                    other => bail!("got {other:?}"),
                }
            }
        ),
        case!(
            "large integer vs float",
            VIEWS,
            "`if '/i > /f'` with i = 2^53 + 1 and f = 2^53 (9007199254740992.0)",
            "true: compared exactly, not through f64",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                p.send_text(r#"{"type":"add","cid":1,"path":"hostile/num","topicType":"JSON","value":{"i":9007199254740993,"f":9007199254740992.0}}"#).await?;
                let Event::Message(m) = p.next(STEP).await else {
                    bail!("no reply")
                };
                if m["type"] != "ok" {
                    bail!("add failed: {m}");
                }
                p.ok(json!({"type":"createview","name":"num","spec":"map hostile/num to hostile/numref process {if '/i > /f' continue}"})).await?;
                let made = value_of(&mut p, "hostile/numref").await?.is_some();
                remove_views(&mut p, &["num"]).await?;
                clean(&ctx, "hostile").await?;
                if !made {
                    bail!("the condition was false");
                }
                Ok("condition true; reference topic made".to_owned())
            }
        ),
        case!(
            "bad view name",
            VIEWS,
            "`createview` named `two words`",
            "INVALID_VIEW",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                let reply = p
                    .request(json!({"type":"createview","name":"two words","spec":"map a to b"}))
                    .await?;
                error_saying(&reply, "INVALID_VIEW", "not a view name")
            }
        ),
        case!(
            "remove an unknown view",
            VIEWS,
            "`removeview` of `nothing-here`",
            "NO_SUCH_VIEW",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                let reply = p
                    .request(json!({"type":"removeview","name":"nothing-here"}))
                    .await?;
                error_saying(&reply, "NO_SUCH_VIEW", "nothing-here")
            }
        ),
        case!(
            "view into a reserved path",
            VIEWS,
            "`map a to Diffusion/x`",
            "INVALID_VIEW",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                view_refused(&mut p, "map a to Diffusion/x", "INVALID_VIEW", "reserved").await
            }
        ),
        case!(
            "set a reference topic",
            VIEWS,
            "`set` on a view's reference topic",
            "READ_ONLY_TOPIC",
            |ctx| {
                let mut p = attacker_session(&ctx, 3).await?;
                p.ok(json!({"type":"add","path":"hostile/ro","topicType":"JSON","value":1}))
                    .await?;
                p.ok(json!({"type":"createview","name":"ro","spec":"map hostile/ro to hostile/roref"})).await?;
                let reply = p
                    .request(json!({"type":"set","path":"hostile/roref","value":2}))
                    .await?;
                let observed = error_saying(&reply, "READ_ONLY_TOPIC", "reference topic");
                remove_views(&mut p, &["ro"]).await?;
                clean(&ctx, "hostile").await?;
                tokio::time::sleep(Duration::ZERO).await;
                observed
            }
        ),
    ]
}
