//! The polling loop: poll, hand the payload to the sink, wait, repeat — pausable, with a live
//! interval, and with back-off after failures so a broken source is neither hammered nor
//! abandoned.

use std::sync::Arc;
use std::time::Duration;

use service_kit::Backoff;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sink::SinkHandle;
use crate::source::Source;
use crate::state::Shared;

/// The longest wait between retries of a failing source (unless the interval itself is longer).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Completes once polling has been switched off (at once if it already is).
async fn stopped(running: &mut watch::Receiver<bool>) {
    // An error means the control state is gone, which only happens at shutdown: stop too.
    let _ = running.wait_for(|running| !*running).await;
}

/// Runs the loop until shutdown.
pub(crate) async fn run(
    mut source: Source,
    sink: SinkHandle,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut running = shared.running.subscribe();
    let mut interval = shared.interval.subscribe();
    // Present while the source is failing; its delays replace the interval.
    let mut retry: Option<Backoff> = None;
    loop {
        if !*running.borrow_and_update() {
            shared.idle.send_replace(true);
            tracing::info!("polling paused");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                resumed = running.wait_for(|running| *running) => {
                    if resumed.is_err() {
                        return;
                    }
                }
            }
            tracing::info!("polling resumed");
        }
        shared.idle.send_replace(false);

        let started = Instant::now();
        // `biased`: a stop or shutdown that has already happened wins over a ready poll.
        let outcome = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = stopped(&mut running) => continue,
            outcome = source.fetch() => outcome,
        };
        shared.record_poll();

        let wait = match outcome {
            Ok(payload) => {
                if retry.take().is_some() {
                    tracing::info!("source recovered");
                }
                // A stop that raced with the poll wins: the control API promises that nothing
                // is handed over once it has answered.
                if !*running.borrow() {
                    continue;
                }
                sink.offer(payload);
                None
            }
            Err(error) => {
                shared.record_failure();
                let current = *interval.borrow();
                let backoff = retry
                    .get_or_insert_with(|| Backoff::new(current, current.max(MAX_RETRY_DELAY)));
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "poll failed");
                Some(delay)
            }
        };

        // Regular polls keep a fixed rate from the start of each poll; an interval change
        // takes effect at once. Retries wait their back-off delay.
        let mut deadline = match wait {
            Some(delay) => Instant::now() + delay,
            None => started + *interval.borrow_and_update(),
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = stopped(&mut running) => break,
                _ = tokio::time::sleep_until(deadline) => break,
                changed = interval.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let new_interval = *interval.borrow_and_update();
                    if wait.is_none() {
                        deadline = started + new_interval;
                    }
                }
            }
        }
    }
}
