//! The topic server's HTTP side: slow and idle peers, oversized and odd requests, what the
//! static file server will and will not serve.

use std::time::{Duration, Instant};

use anyhow::bail;
use hostile_tests::{STEP, attacker, http_get, http_raw, metric, parse_response};

use super::{Case, metrics, shorten};
use crate::case;

const HTTP: &str = "topic-server HTTP";

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "slow request head",
            HTTP,
            "`GET / HTTP/1.1\\r\\nhost` and then nothing",
            "connection closed after the request-head timeout (2 s here)",
            |ctx| {
                let started = Instant::now();
                let (text, closed) = http_raw(
                    ctx.topic_server.addr,
                    attacker(50),
                    b"GET / HTTP/1.1\r\nhost",
                    Duration::from_secs(8),
                )
                .await?;
                if !closed {
                    bail!("still open after 8 s");
                }
                Ok(format!(
                    "closed after {:.1} s {}",
                    started.elapsed().as_secs_f64(),
                    shorten(&text, 40)
                ))
            }
        ),
        case!(
            "idle keep-alive",
            HTTP,
            "one `GET /healthz` on a keep-alive connection, then silence",
            "answered, then closed after the request-head timeout",
            |ctx| {
                let started = Instant::now();
                let (text, closed) = http_raw(
                    ctx.topic_server.addr,
                    attacker(50),
                    b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
                    Duration::from_secs(8),
                )
                .await?;
                if !closed || !text.starts_with("HTTP/1.1 200") {
                    bail!("closed={closed}: {}", shorten(&text, 100));
                }
                Ok(format!(
                    "200, then closed after {:.1} s",
                    started.elapsed().as_secs_f64()
                ))
            }
        ),
        case!(
            "development files",
            HTTP,
            "GET /package.json, /package-lock.json, /README.md, /test/page.test.mjs, /node_modules/.package-lock.json, /node_modules/uplot/package.json",
            "404 for every one",
            |ctx| {
                for path in [
                    "/package.json",
                    "/package-lock.json",
                    "/README.md",
                    "/test/page.test.mjs",
                    "/node_modules/.package-lock.json",
                    "/node_modules/uplot/package.json",
                ] {
                    let (status, _, _) =
                        http_get(ctx.topic_server.addr, attacker(51), path).await?;
                    if status != 404 {
                        bail!("{path}: {status}");
                    }
                }
                Ok("404 ×6".to_owned())
            }
        ),
        case!(
            "path traversal",
            HTTP,
            "GET /../../etc/passwd, /js/../../Cargo.toml, /%2e%2e/%2e%2e/etc/passwd",
            "404",
            |ctx| {
                for path in [
                    "/../../etc/passwd",
                    "/js/../../Cargo.toml",
                    "/%2e%2e/%2e%2e/etc/passwd",
                ] {
                    let (status, _, body) =
                        http_get(ctx.topic_server.addr, attacker(51), path).await?;
                    if status != 404 || body.contains("root:") {
                        bail!("{path}: {status}");
                    }
                }
                Ok("404 ×3".to_owned())
            }
        ),
        case!(
            "security headers",
            HTTP,
            "GET / and GET /js/main.js",
            "Content-Security-Policy (frame-ancestors 'none'), X-Content-Type-Options, Referrer-Policy, X-Frame-Options",
            |ctx| {
                for path in ["/", "/js/main.js"] {
                    let (status, head, _) =
                        http_get(ctx.topic_server.addr, attacker(51), path).await?;
                    for header in [
                        "content-security-policy:",
                        "frame-ancestors 'none'",
                        "x-content-type-options: nosniff",
                        "referrer-policy: no-referrer",
                        "x-frame-options: deny",
                    ] {
                        if !head.contains(header) {
                            bail!("{path} ({status}) lacks {header}");
                        }
                    }
                }
                Ok("all four on both".to_owned())
            }
        ),
        case!(
            "oversized header",
            HTTP,
            "a request with a 200 KB header; one with 100 headers",
            "431 for both (heads ≤ 64 KiB, ≤ 64 headers)",
            |ctx| {
                let request = format!(
                    "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n",
                    "a".repeat(200_000)
                );
                let (text, _) = http_raw(
                    ctx.topic_server.addr,
                    attacker(52),
                    request.as_bytes(),
                    STEP,
                )
                .await?;
                let many: String = (0..100).map(|i| format!("x-{i}: v\r\n")).collect();
                let request =
                    format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}connection: close\r\n\r\n");
                let (text2, _) = http_raw(
                    ctx.topic_server.addr,
                    attacker(52),
                    request.as_bytes(),
                    STEP,
                )
                .await?;
                if !text.starts_with("HTTP/1.1 431") || !text2.starts_with("HTTP/1.1 431") {
                    bail!("{} / {}", shorten(&text, 60), shorten(&text2, 60));
                }
                Ok("431 ×2".to_owned())
            }
        ),
        case!("wrong method", HTTP, "POST / with a body", "405", |ctx| {
            let (text, _) = http_raw(
                ctx.topic_server.addr,
                attacker(52),
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
                STEP,
            )
            .await?;
            let (status, _, _) = parse_response(&text)?;
            if status != 405 {
                bail!("{status}");
            }
            Ok("405".to_owned())
        }),
        case!(
            "bad WebSocket upgrade",
            HTTP,
            "GET /ws with Upgrade but Sec-WebSocket-Version 99 and no key",
            "a 4xx answer, no upgrade",
            |ctx| {
                let request = b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade, close\r\nupgrade: websocket\r\nsec-websocket-version: 99\r\n\r\n";
                let (text, _) =
                    http_raw(ctx.topic_server.addr, attacker(52), request, STEP).await?;
                let (status, _, _) = parse_response(&text)?;
                if !(400..500).contains(&status) {
                    bail!("{status}");
                }
                Ok(format!("{status}"))
            }
        ),
        case!(
            "1,000 pipelined requests",
            HTTP,
            "1,000 `GET /healthz` in one write on one connection",
            "all answered in order; nothing else disturbed",
            |ctx| {
                let one = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
                let mut many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 999).collect();
                many.extend_from_slice(
                    b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                );
                let (text, _) = http_raw(
                    ctx.topic_server.addr,
                    attacker(53),
                    &many,
                    Duration::from_secs(15),
                )
                .await?;
                let answered = text.matches("HTTP/1.1 200").count();
                if answered != 1_000 {
                    bail!("{answered} answered");
                }
                Ok("1,000 × 200".to_owned())
            }
        ),
        case!(
            "lock-hold histogram",
            HTTP,
            "GET /metrics",
            "topic_server_engine_lock_hold_seconds histogram with buckets",
            |ctx| {
                let body = metrics(&ctx).await?;
                let count = metric(&body, "topic_server_engine_lock_hold_seconds_count");
                if !body.contains("topic_server_engine_lock_hold_seconds_bucket{le=\"0.001\"}")
                    || count < 1.0
                {
                    bail!("no histogram");
                }
                Ok(format!("{count} holdings recorded"))
            }
        ),
    ]
}
