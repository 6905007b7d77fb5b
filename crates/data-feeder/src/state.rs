//! State shared by the poller, the sink and the control API: the pause switch, the interval,
//! and the counters `/status` reports.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::watch;

/// The shared state. Switches are `watch` channels so the poller wakes the moment they change.
#[derive(Debug)]
pub(crate) struct Shared {
    /// What the source is, for `/status` (password-free).
    pub source_label: String,
    /// What the sink is, for `/status` (password-free).
    pub sink_label: String,
    /// Whether polling is wanted (set by the control API).
    pub running: watch::Sender<bool>,
    /// True while the poller is parked (no poll in flight, none about to be handed to the sink).
    pub idle: watch::Sender<bool>,
    /// Time between polls.
    pub interval: watch::Sender<Duration>,
    polls: AtomicU64,
    published: AtomicU64,
    failures: AtomicU64,
    last: Mutex<Option<(Bytes, DateTime<Utc>)>>,
}

/// The body of `GET /status` (and of the POST answers).
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    running: bool,
    source: String,
    sink: String,
    interval_ms: u64,
    polls: u64,
    published: u64,
    failures: u64,
    last_payload: Option<serde_json::Value>,
    last_published_at: Option<String>,
}

impl Shared {
    pub fn new(
        source_label: String,
        sink_label: String,
        running: bool,
        interval: Duration,
    ) -> Self {
        Self {
            source_label,
            sink_label,
            running: watch::Sender::new(running),
            // The poller is idle until it starts its first poll.
            idle: watch::Sender::new(true),
            interval: watch::Sender::new(interval),
            polls: AtomicU64::new(0),
            published: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// A poll finished (successfully or not).
    pub fn record_poll(&self) {
        self.polls.fetch_add(1, Ordering::Relaxed);
    }

    /// A poll or a publish failed.
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The sink delivered `payload`.
    pub fn record_published(&self, payload: &Bytes) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *last = Some((payload.clone(), Utc::now()));
    }

    /// A snapshot for `/status`.
    pub fn status(&self) -> Status {
        let last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let (last_payload, last_published_at) = match last {
            Some((payload, at)) => (
                // Payloads were checked to be JSON before publishing; `null` if that ever fails.
                serde_json::from_slice(&payload).ok(),
                Some(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            ),
            None => (None, None),
        };
        Status {
            running: *self.running.borrow(),
            source: self.source_label.clone(),
            sink: self.sink_label.clone(),
            interval_ms: u64::try_from(self.interval.borrow().as_millis()).unwrap_or(u64::MAX),
            polls: self.polls.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_payload,
            last_published_at,
        }
    }
}
