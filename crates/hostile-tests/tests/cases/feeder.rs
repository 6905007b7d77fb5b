//! The data feeder's control API: malformed and oversized requests, odd routes, slow and
//! greedy clients.

use std::time::{Duration, Instant};

use anyhow::bail;
use hostile_tests::{STEP, attacker, http_raw, parse_response, tcp};

use super::{Case, shorten};
use crate::case;

const FEEDER: &str = "data-feeder control API";

/// POSTs `body` to `path`; returns (status, body).
async fn post(ctx: &crate::Ctx, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let (text, _) = http_raw(ctx.feeder.addr, attacker(70), &request, STEP).await?;
    let (status, _, body) = parse_response(&text)?;
    Ok((status, body))
}

async fn interval_ms(ctx: &crate::Ctx) -> anyhow::Result<u64> {
    let (text, _) = http_raw(
        ctx.feeder.addr,
        attacker(70),
        b"GET /status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        STEP,
    )
    .await?;
    let (_, _, body) = parse_response(&text)?;
    let status: serde_json::Value = serde_json::from_str(&body)?;
    status["interval_ms"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no interval in {body}"))
}

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "malformed interval",
            FEEDER,
            "POST /interval with `{nope`",
            "400 with a reason; interval unchanged",
            |ctx| {
                let before = interval_ms(&ctx).await?;
                let (status, body) = post(&ctx, "/interval", b"{nope").await?;
                if status != 400 || interval_ms(&ctx).await? != before {
                    bail!("{status} {body}");
                }
                Ok(format!("400 {}", shorten(&body, 70)))
            }
        ),
        case!(
            "interval out of range",
            FEEDER,
            "POST /interval with `{\"interval_ms\": 0}` and `18446744073709551615`",
            "400 for both; interval unchanged",
            |ctx| {
                let before = interval_ms(&ctx).await?;
                for body in [
                    &b"{\"interval_ms\": 0}"[..],
                    b"{\"interval_ms\": 18446744073709551615}",
                ] {
                    let (status, text) = post(&ctx, "/interval", body).await?;
                    if status != 400 {
                        bail!("{status} {text}");
                    }
                }
                if interval_ms(&ctx).await? != before {
                    bail!("the interval changed");
                }
                Ok("400 ×2; unchanged".to_owned())
            }
        ),
        case!(
            "oversized body",
            FEEDER,
            "POST /interval with a 64 KB body",
            "413",
            |ctx| {
                let body = format!(
                    "{{\"interval_ms\": 5000, \"pad\": \"{}\"}}",
                    "x".repeat(64 * 1024)
                );
                let (status, _) = post(&ctx, "/interval", body.as_bytes()).await?;
                if status != 413 {
                    bail!("{status}");
                }
                Ok("413".to_owned())
            }
        ),
        case!(
            "unknown route and wrong method",
            FEEDER,
            "GET /admin; DELETE /start",
            "404 and 405",
            |ctx| {
                let (text, _) = http_raw(
                    ctx.feeder.addr,
                    attacker(70),
                    b"GET /admin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                    STEP,
                )
                .await?;
                let (a, _, _) = parse_response(&text)?;
                let (text, _) = http_raw(
                    ctx.feeder.addr,
                    attacker(70),
                    b"DELETE /start HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                    STEP,
                )
                .await?;
                let (b, _, _) = parse_response(&text)?;
                if (a, b) != (404, 405) {
                    bail!("{a} and {b}");
                }
                Ok("404 and 405".to_owned())
            }
        ),
        case!(
            "slow request head",
            FEEDER,
            "`POST /start HTTP/1.1\\r\\nhost` and then nothing",
            "closed after the request-head timeout (10 s)",
            |ctx| {
                let started = Instant::now();
                let (_, closed) = http_raw(
                    ctx.feeder.addr,
                    attacker(71),
                    b"POST /start HTTP/1.1\r\nhost",
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
        case!(
            "slow body",
            FEEDER,
            "POST /interval declaring 100 bytes and sending 3",
            "408 after the request timeout (10 s)",
            |ctx| {
                let started = Instant::now();
                let (text, _) = http_raw(
                    ctx.feeder.addr,
                    attacker(71),
                    b"POST /interval HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc",
                    Duration::from_secs(15),
                )
                .await?;
                let (status, _, _) = parse_response(&text)?;
                if status != 408 {
                    bail!("{status}");
                }
                Ok(format!(
                    "408 after {:.1} s",
                    started.elapsed().as_secs_f64()
                ))
            }
        ),
        case!(
            "connections from one address",
            FEEDER,
            "17 connections from one address",
            "the 17th gets HTTP 429 (limit 16)",
            |ctx| {
                let mut held = Vec::new();
                for _ in 0..16 {
                    held.push(tcp(ctx.feeder.addr, attacker(72), None).await?);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (text, _) = http_raw(
                    ctx.feeder.addr,
                    attacker(72),
                    b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n",
                    STEP,
                )
                .await?;
                drop(held);
                if !text.starts_with("HTTP/1.1 429") {
                    bail!("{}", shorten(&text, 100));
                }
                Ok(shorten(text.lines().last().unwrap_or_default(), 80))
            }
        ),
    ]
}
