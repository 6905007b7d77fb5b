//! The shared reconnect loop: how it paces attempts, when it resets, when it stops.
//!
//! A scripted connector plays each attempt's outcome and records the back-off delays the loop
//! asks it to wait (answering at once), so the pacing is checked without real waiting.

#![allow(clippy::unwrap_used)] // a test: failures should stop it

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::Duration;

use service_kit::{Backoff, Connector, Reconnect, SessionEnd};
use tokio_util::sync::CancellationToken;

/// What one connection attempt does.
#[derive(Debug, Clone, Copy)]
enum Attempt {
    /// Connecting fails.
    Fail,
    /// Connects; the session is lost at once.
    ConnectThenLose,
    /// Connects; the session finishes the loop.
    ConnectThenFinish,
    /// Connecting never completes.
    Hang,
}

#[derive(Default)]
struct Scripted {
    script: VecDeque<Attempt>,
    /// The delay of every pause, in order.
    delays: Vec<Duration>,
    connects: usize,
    sessions: usize,
    interruptions: usize,
    /// Cancelled during the pause with this index, if set.
    cancel_in_pause: Option<(usize, CancellationToken)>,
    /// `interrupted` answers `Break` from this interruption on, if set.
    break_at_interruption: Option<usize>,
}

impl Scripted {
    fn new(script: &[Attempt]) -> Self {
        Self {
            script: script.iter().copied().collect(),
            ..Self::default()
        }
    }
}

impl Connector for Scripted {
    type Connection = Attempt;
    type Error = &'static str;

    async fn connect(&mut self) -> Result<Attempt, &'static str> {
        self.connects += 1;
        match self.script.pop_front() {
            Some(Attempt::Fail) => Err("refused"),
            Some(Attempt::Hang) | None => std::future::pending().await,
            Some(session) => Ok(session),
        }
    }

    async fn serve(&mut self, session: Attempt, _shutdown: &CancellationToken) -> SessionEnd {
        self.sessions += 1;
        match session {
            Attempt::ConnectThenFinish => SessionEnd::Finished,
            _ => SessionEnd::Lost("dropped".to_owned()),
        }
    }

    async fn interrupted(&mut self) -> ControlFlow<()> {
        self.interruptions += 1;
        match self.break_at_interruption {
            Some(n) if self.interruptions >= n => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }

    async fn pause(&mut self, delay: Duration) {
        self.delays.push(delay);
        if let Some((index, token)) = &self.cancel_in_pause
            && *index + 1 == self.delays.len()
        {
            token.cancel();
            // Only the cancellation can end this pause.
            std::future::pending::<()>().await;
        }
    }
}

/// 100 ms doubling to 1.6 s; jitter is ±20%.
fn reconnect() -> Reconnect {
    Reconnect::new("scripted peer").with_backoff(Backoff::new(
        Duration::from_millis(100),
        Duration::from_millis(1600),
    ))
}

/// Whether `delay` is `nominal_ms` give or take the jitter.
fn about(delay: Duration, nominal_ms: u64) -> bool {
    let ms = delay.as_secs_f64() * 1000.0;
    let nominal = nominal_ms as f64;
    ms >= nominal * 0.79 && ms <= nominal * 1.21
}

async fn run_to_end(connector: &mut Scripted, shutdown: &CancellationToken) {
    tokio::time::timeout(Duration::from_secs(5), reconnect().run(connector, shutdown))
        .await
        .expect("the loop returned");
}

#[tokio::test]
async fn back_off_grows_while_attempts_fail_up_to_the_cap() {
    use Attempt::*;
    let mut connector = Scripted::new(&[Fail, Fail, Fail, Fail, Fail, Fail, ConnectThenFinish]);
    run_to_end(&mut connector, &CancellationToken::new()).await;
    let nominal = [100, 200, 400, 800, 1600, 1600];
    assert_eq!(
        connector.delays.len(),
        nominal.len(),
        "{:?}",
        connector.delays
    );
    for (delay, nominal) in connector.delays.iter().zip(nominal) {
        assert!(
            about(*delay, nominal),
            "{delay:?} for {nominal} ms: {:?}",
            connector.delays
        );
    }
    assert_eq!(connector.connects, 7);
    assert_eq!(connector.interruptions, 6);
    assert_eq!(connector.sessions, 1);
}

#[tokio::test]
async fn back_off_starts_over_after_a_connection_that_worked() {
    use Attempt::*;
    let mut connector = Scripted::new(&[
        Fail,
        Fail,
        Fail,
        ConnectThenLose,
        Fail,
        ConnectThenLose,
        ConnectThenFinish,
    ]);
    run_to_end(&mut connector, &CancellationToken::new()).await;
    // 100, 200, 400 while failing; the session resets: 100 after losing it, 200 after the next
    // failure; the second session resets again: 100.
    let nominal = [100, 200, 400, 100, 200, 100];
    assert_eq!(
        connector.delays.len(),
        nominal.len(),
        "{:?}",
        connector.delays
    );
    for (delay, nominal) in connector.delays.iter().zip(nominal) {
        assert!(
            about(*delay, nominal),
            "{delay:?} for {nominal} ms: {:?}",
            connector.delays
        );
    }
    assert_eq!(connector.sessions, 3);
}

#[tokio::test]
async fn cancelling_stops_a_connection_attempt() {
    let mut connector = Scripted::new(&[Attempt::Hang]);
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
    });
    run_to_end(&mut connector, &shutdown).await;
    assert_eq!(connector.connects, 1);
    assert_eq!(connector.sessions, 0);
}

#[tokio::test]
async fn cancelling_stops_the_back_off() {
    use Attempt::*;
    let shutdown = CancellationToken::new();
    let mut connector = Scripted::new(&[Fail, Fail, Fail, Fail]);
    connector.cancel_in_pause = Some((1, shutdown.clone()));
    run_to_end(&mut connector, &shutdown).await;
    assert_eq!(connector.delays.len(), 2, "{:?}", connector.delays);
    assert_eq!(connector.connects, 2, "no attempt after the cancel");
}

#[tokio::test]
async fn a_cancelled_token_means_no_attempt_at_all() {
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let mut connector = Scripted::new(&[Attempt::ConnectThenFinish]);
    run_to_end(&mut connector, &shutdown).await;
    assert_eq!(connector.connects, 0);
}

#[tokio::test]
async fn interrupted_can_stop_the_loop() {
    use Attempt::*;
    let mut connector = Scripted::new(&[Fail, ConnectThenLose, Fail, Fail]);
    connector.break_at_interruption = Some(2);
    run_to_end(&mut connector, &CancellationToken::new()).await;
    assert_eq!(connector.connects, 2);
    assert_eq!(connector.sessions, 1);
    assert_eq!(connector.delays.len(), 1);
}
