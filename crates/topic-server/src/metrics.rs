//! Prometheus metrics: one recorder per process, handles held per server.
//!
//! The `metrics` facade is global, while tests start many servers in one process; so the
//! Prometheus recorder is installed once (kept in a `OnceLock`) and every server renders the same
//! registry. Hot-path counters are registered once and kept as handles, so counting a message is
//! an atomic add, not a registry look-up.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use. If some other
/// recorder was installed first, the handle still renders (our series then stay empty).
fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe_gauge!("topic_server_connections", "Open WebSocket sessions.");
        describe_gauge!("topic_server_topics", "Topics in the topic tree.");
        describe_counter!(
            "topic_server_updates_in_total",
            "Accepted value updates (set, and add with a value)."
        );
        describe_counter!(
            "topic_server_messages_out_total",
            "Protocol messages written to sessions."
        );
        describe_counter!(
            "topic_server_bytes_out_total",
            "WebSocket payload bytes written to sessions."
        );
        describe_counter!(
            "topic_server_sessions_closed_total",
            "Sessions closed, by reason."
        );
        describe_counter!(
            "topic_server_conflations_total",
            "Pushes that found a session queue over its limit and conflated it."
        );
        describe_counter!(
            "topic_server_back_pressure_unsubscriptions_total",
            "Subscriptions ended by back pressure (CONFLATION=unsubscribe)."
        );
        describe_gauge!(
            "topic_server_queued_bytes",
            "Bytes waiting in session outbound queues (measured when /metrics is read)."
        );
        handle
    })
}

/// Renders every metric in the Prometheus text format, for `GET /metrics`.
pub(crate) fn render() -> String {
    handle().render()
}

/// The server's metric handles; cheap to clone.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// Open sessions.
    pub connections: Gauge,
    /// Topics that exist.
    pub topics: Gauge,
    /// Accepted updates.
    pub updates_in: Counter,
    /// Messages written to clients.
    pub messages_out: Counter,
    /// Payload bytes written to clients.
    pub bytes_out: Counter,
    /// Pushes that conflated a queue over its limit.
    pub conflations: Counter,
    /// Subscriptions ended by back pressure.
    pub back_pressure_unsubscriptions: Counter,
    /// Bytes queued for sessions; set when /metrics is read.
    pub queued_bytes: Gauge,
}

impl Metrics {
    /// Registers (or finds) the server's series, installing the recorder if needed.
    pub fn new() -> Self {
        handle();
        Self {
            connections: gauge!("topic_server_connections"),
            topics: gauge!("topic_server_topics"),
            updates_in: counter!("topic_server_updates_in_total"),
            messages_out: counter!("topic_server_messages_out_total"),
            bytes_out: counter!("topic_server_bytes_out_total"),
            conflations: counter!("topic_server_conflations_total"),
            back_pressure_unsubscriptions: counter!(
                "topic_server_back_pressure_unsubscriptions_total"
            ),
            queued_bytes: gauge!("topic_server_queued_bytes"),
        }
    }

    /// Counts a closed session; rare enough for a registry look-up.
    pub fn session_closed(&self, reason: &'static str) {
        counter!("topic_server_sessions_closed_total", "reason" => reason).increment(1);
    }
}
