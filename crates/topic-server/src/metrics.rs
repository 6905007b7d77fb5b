//! Prometheus metrics: one recorder per process, handles held per server.
//!
//! The `metrics` facade is global, while tests start many servers in one process; so the
//! Prometheus recorder is installed once (kept in a `OnceLock`) and every server renders the same
//! registry. Hot-path counters are registered once and kept as handles, so counting a message is
//! an atomic add, not a registry look-up.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Buckets of the engine lock histogram, in seconds: 1 µs to 1 s.
const LOCK_HOLD_BUCKETS: &[f64] = &[
    1e-6, 4e-6, 16e-6, 64e-6, 256e-6, 1e-3, 4e-3, 16e-3, 64e-3, 0.25, 1.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use. If some other
/// recorder was installed first, the handle still renders (our series then stay empty).
fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // Setting buckets for a fixed, non-empty list cannot fail; keep the default summary
        // if it somehow does.
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("topic_server_engine_lock_hold_seconds".to_owned()),
                LOCK_HOLD_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
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
            "topic_server_socket_writes_total",
            "Batches of frames written to sessions' sockets: path=direct by the thread that produced them, path=writer by the session's writer task (TLS, or a socket that was not taking more)."
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
            "topic_server_sessions",
            "Sessions the engine holds: connected, or waiting to be resumed (measured when /metrics is read)."
        );
        describe_gauge!(
            "topic_server_queued_bytes",
            "Bytes kept by session outbound queues (measured when /metrics is read)."
        );
        describe_gauge!(
            "topic_server_tree_value_bytes",
            "Bytes of values the topic tree retains (measured when /metrics is read)."
        );
        describe_gauge!(
            "topic_server_view_held_results",
            "View results held back by `delay by` (measured when /metrics is read)."
        );
        describe_histogram!(
            "topic_server_engine_lock_hold_seconds",
            "How long each operation held the topic engine's lock."
        );
        describe_counter!(
            "topic_server_limit_refusals_total",
            "Requests refused with LIMIT_EXCEEDED, by limit."
        );
        describe_counter!(
            "topic_server_rate_limited_total",
            "Requests refused with RATE_LIMITED."
        );
        describe_counter!(
            "topic_server_authentication_failures_total",
            "Refused `connect`s, by code (AUTHENTICATION_FAILED, or RATE_LIMITED after repeated failures)."
        );
        describe_counter!(
            "topic_server_security_reloads_total",
            "Reloads of the security file, by outcome (ok, refused)."
        );
        describe_counter!(
            "topic_server_view_evaluation_failures_total",
            "Source updates whose view evaluation passed a limit (the source derived nothing)."
        );
        describe_counter!(
            "topic_server_view_chain_stops_total",
            "Changes stopped after passing through the maximum number of chained views."
        );
        describe_counter!(
            "topic_server_internal_errors_total",
            "Requests that failed inside the server (the session was closed with 1011)."
        );
        describe_counter!(
            "topic_server_cluster_applied_total",
            "Cluster mode: changes accepted by Redis and applied by this node."
        );
        describe_counter!(
            "topic_server_cluster_caught_up_total",
            "Cluster mode: changes this node read from a partition log because the feed skipped them."
        );
        describe_counter!(
            "topic_server_cluster_reloads_total",
            "Cluster mode: partitions reloaded from Redis's state, by reason (trimmed: the log no longer reached back far enough; lost: Redis's counter went backwards)."
        );
        describe_counter!(
            "topic_server_cluster_bad_messages_total",
            "Cluster mode: accepted changes or stored topics that could not be decoded (skipped)."
        );
        describe_counter!(
            "topic_server_cluster_redis_errors_total",
            "Cluster mode: failed Redis requests while applying changes (retried)."
        );
        handle
    })
}

/// How often recorded histogram samples are folded into their buckets. The recorder keeps
/// every sample until then (or until `/metrics` is rendered), so a server nobody scrapes would
/// grow by one sample per engine lock hold, for ever.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every few seconds until `shutdown`.
pub(crate) async fn run_upkeep(shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(UPKEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => handle().run_upkeep(),
        }
    }
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
    /// Writes made straight onto a session's socket by the thread that produced them.
    pub direct_writes: Counter,
    /// Batches written by a session's writer task.
    pub writer_writes: Counter,
    /// Pushes that conflated a queue over its limit.
    pub conflations: Counter,
    /// Subscriptions ended by back pressure.
    pub back_pressure_unsubscriptions: Counter,
    /// Sessions registered in the engine (connected or waiting to be resumed); set when
    /// /metrics is read. Beside `connections` it shows sessions that outlive their connection,
    /// and any that outlive their end.
    pub sessions: Gauge,
    /// Bytes queued for sessions; set when /metrics is read.
    pub queued_bytes: Gauge,
    /// Bytes of values the topic tree retains; set when /metrics is read.
    pub tree_value_bytes: Gauge,
    /// View results held back by `delay by`; set when /metrics is read.
    pub view_held_results: Gauge,
    /// How long each holding of the engine lock lasted, in seconds.
    pub lock_hold: Histogram,
    /// Requests refused with RATE_LIMITED.
    pub rate_limited: Counter,
    /// Source updates whose view evaluation passed a limit.
    pub view_evaluation_failures: Counter,
    /// Changes stopped at the view chain limit.
    pub view_chain_stops: Counter,
    /// Requests that panicked inside the server.
    pub internal_errors: Counter,
    /// Cluster changes applied.
    pub cluster_applied: Counter,
    /// Cluster changes read from a log.
    pub cluster_caught_up: Counter,
    /// Cluster changes that could not be decoded.
    pub cluster_bad_messages: Counter,
    /// Failed Redis requests of the cluster applier.
    pub cluster_redis_errors: Counter,
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
            direct_writes: counter!("topic_server_socket_writes_total", "path" => "direct"),
            writer_writes: counter!("topic_server_socket_writes_total", "path" => "writer"),
            conflations: counter!("topic_server_conflations_total"),
            back_pressure_unsubscriptions: counter!(
                "topic_server_back_pressure_unsubscriptions_total"
            ),
            sessions: gauge!("topic_server_sessions"),
            queued_bytes: gauge!("topic_server_queued_bytes"),
            tree_value_bytes: gauge!("topic_server_tree_value_bytes"),
            view_held_results: gauge!("topic_server_view_held_results"),
            lock_hold: histogram!("topic_server_engine_lock_hold_seconds"),
            rate_limited: counter!("topic_server_rate_limited_total"),
            view_evaluation_failures: counter!("topic_server_view_evaluation_failures_total"),
            view_chain_stops: counter!("topic_server_view_chain_stops_total"),
            internal_errors: counter!("topic_server_internal_errors_total"),
            cluster_applied: counter!("topic_server_cluster_applied_total"),
            cluster_caught_up: counter!("topic_server_cluster_caught_up_total"),
            cluster_bad_messages: counter!("topic_server_cluster_bad_messages_total"),
            cluster_redis_errors: counter!("topic_server_cluster_redis_errors_total"),
        }
    }

    /// Counts a request refused by a limit; rare enough for a registry look-up.
    pub fn limit_refused(&self, limit: &'static str) {
        counter!("topic_server_limit_refusals_total", "limit" => limit).increment(1);
    }

    /// Counts a partition reload by reason (`trimmed`, `lost`); rare.
    pub fn cluster_reloaded(&self, reason: &'static str) {
        counter!("topic_server_cluster_reloads_total", "reason" => reason).increment(1);
    }

    /// Counts a resume attempt by outcome (`recovered`, `unknown_session`, `gap`,
    /// `bad_sequence`); rare enough for a registry look-up.
    pub fn session_resumed(&self, outcome: &'static str) {
        counter!("topic_server_session_resumes_total", "outcome" => outcome).increment(1);
    }

    /// Counts a refused `connect`; rare enough for a registry look-up.
    pub fn authentication_failed(&self, code: diffusion_core::protocol::ErrorCode) {
        let code = match code {
            diffusion_core::protocol::ErrorCode::RateLimited => "RATE_LIMITED",
            _ => "AUTHENTICATION_FAILED",
        };
        counter!("topic_server_authentication_failures_total", "code" => code).increment(1);
    }

    /// Counts a reload of the security file by outcome (`ok`, `refused`).
    pub fn security_reloaded(&self, outcome: &'static str) {
        counter!("topic_server_security_reloads_total", "outcome" => outcome).increment(1);
    }

    /// Counts a closed session; rare enough for a registry look-up.
    pub fn session_closed(&self, reason: &'static str) {
        counter!("topic_server_sessions_closed_total", "reason" => reason).increment(1);
    }
}
