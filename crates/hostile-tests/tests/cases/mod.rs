//! The cases, grouped by the surface they attack. Each returns what it observed (one line for
//! the report) after asserting the attacker's documented outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, bail};
pub use hostile_tests::metric;
use hostile_tests::{Event, Peer, STEP, attacker, http_get};
use serde_json::{Value, json};

use crate::Ctx;

mod bridge;
mod feeder;
mod http;
mod limits;
mod pipeline;
mod protocol;
mod views;

/// A case's body.
pub type Run = fn(Arc<Ctx>) -> Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send>>;

/// One hostile input and what the platform must do with it.
pub struct Case {
    /// Short name.
    pub name: &'static str,
    /// The surface attacked.
    pub surface: &'static str,
    /// What is sent, for the report.
    pub input: String,
    /// The documented outcome, for the report.
    pub expected: &'static str,
    /// The attack and its assertions.
    pub run: Run,
}

/// Builds a [`Case`] from a body written as `|ctx| { … Ok(observed) }`.
#[macro_export]
macro_rules! case {
    ($name:expr, $surface:expr, $input:expr, $expected:expr, |$ctx:ident| $body:block) => {
        $crate::cases::Case {
            name: $name,
            surface: $surface,
            input: ($input).into(),
            expected: $expected,
            run: |$ctx| {
                Box::pin(async move {
                    let result: anyhow::Result<String> = async move { $body }.await;
                    result
                })
            },
        }
    };
}

/// Every case, in the order they run.
pub fn all() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(protocol::cases());
    cases.extend(views::cases());
    cases.extend(limits::cases());
    cases.extend(http::cases());
    cases.extend(bridge::cases());
    cases.extend(feeder::cases());
    cases.extend(pipeline::cases());
    cases
}

/// The reply must be an error with `code`; returns `CODE: message` (shortened) for the report.
pub fn error_with(reply: &Value, code: &str) -> anyhow::Result<String> {
    if reply["type"] != "error" || reply["code"] != code {
        bail!(
            "expected error {code}, got {}",
            shorten(&reply.to_string(), 300)
        );
    }
    let message = reply["message"].as_str().unwrap_or_default();
    Ok(format!("{code}: {}", shorten(message, 90)))
}

/// The reply must be an error with `code` whose message contains `needle`.
pub fn error_saying(reply: &Value, code: &str, needle: &str) -> anyhow::Result<String> {
    let observed = error_with(reply, code)?;
    let message = reply["message"].as_str().unwrap_or_default();
    if !message.contains(needle) {
        bail!("{code} without '{needle}': {}", shorten(message, 300));
    }
    Ok(observed)
}

/// At most `n` characters of `text`, on one line.
pub fn shorten(text: &str, n: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(n) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// A connected attacker session from attacker address `n`.
pub async fn attacker_session(ctx: &Ctx, n: u8) -> anyhow::Result<Peer> {
    Peer::connected(&ctx.ws(), attacker(n)).await
}

/// The session must still answer a ping.
pub async fn still_open(peer: &mut Peer) -> anyhow::Result<()> {
    let reply = peer.request(json!({"type":"ping"})).await?;
    if reply["type"] != "pong" {
        bail!("the session did not answer a ping: {reply}");
    }
    Ok(())
}

/// The topic server's `/metrics` body.
pub async fn metrics(ctx: &Ctx) -> anyhow::Result<String> {
    let addr = ctx
        .topic_server
        .ready_addr("metrics")
        .context("the topic server did not say where /metrics listens")?;
    let (status, _, body) = http_get(addr, attacker(250), "/metrics").await?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    Ok(body)
}

/// Waits for the peer's close; it must carry `code`.
pub async fn closed_with(peer: &mut Peer, code: u16) -> anyhow::Result<String> {
    match peer.close_code(STEP).await {
        Ok((got, reason)) if got == code => Ok(format!("closed {got} \"{reason}\"")),
        Ok((got, reason)) => bail!("closed with {got} \"{reason}\", expected {code}"),
        Err(Event::Ended(e)) => bail!("connection ended without a close frame: {e}"),
        Err(other) => bail!("no close: {other:?}"),
    }
}

/// Removes every topic under `prefix`.
pub async fn clean(ctx: &Ctx, prefix: &str) -> anyhow::Result<()> {
    let mut peer = attacker_session(ctx, 249).await?;
    let reply = peer
        .request(json!({"type":"remove","selector":format!("?{prefix}//")}))
        .await?;
    if reply["type"] != "ok" {
        bail!("cleaning {prefix} failed: {reply}");
    }
    Ok(())
}

/// Polls `probe` until it is true (bounded by [`STEP`]).
pub async fn eventually<F, Fut>(what: &str, probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    eventually_within(what, STEP, probe).await
}

/// Polls `probe` until it is true, for at most `within`.
pub async fn eventually_within<F, Fut>(
    what: &str,
    within: std::time::Duration,
    mut probe: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if probe().await? {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Reads a fetch page's topics.
pub fn fetched(reply: &Value) -> anyhow::Result<&Vec<Value>> {
    reply["topics"]
        .as_array()
        .with_context(|| format!("not a fetched reply: {}", shorten(&reply.to_string(), 200)))
}
