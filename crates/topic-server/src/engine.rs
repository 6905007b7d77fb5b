//! The topic engine: every protocol operation on topics and subscriptions, under one lock.
//!
//! Operations take the lock, change the topic store and subscription state, and push
//! pre-encoded messages into the affected sessions' bounded queues; they never touch a socket,
//! so the lock is held only for in-memory work. Work that needs no shared state (parsing
//! selectors, converting values) happens before the lock is taken.
//!
//! A topic update is prepared once ([`Topic::update`]: the `value` message and, where allowed,
//! the `delta` message) and the same [`TopicUpdate`] is handed to every subscriber's queue,
//! which decides delta or full value and applies the topic's conflation policy. When back
//! pressure makes a queue drop an `unsubscribe`-policy topic, the engine ends that
//! subscription after the fan-out loop and tells the session (reason `back_pressure`); the
//! topic then stays unsubscribed for that session, although its selectors still select it,
//! until the session subscribes again with a selector that selects it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use diffusion_core::conflation::{PushOutcome, TopicUpdate};
use diffusion_core::protocol::{ErrorCode, FetchedTopic, ServerMessage, encode_server_message};
use diffusion_core::{Selector, TopicPath, TopicProperties, TopicType, TopicValue};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::outbound::{PushError, SessionOutbound};
use crate::stats::QueueStats;
use crate::subscriptions::{SessionId, Subscriptions};
use crate::topics::{Topic, TopicStore};

/// A request that failed: the code and message of the `error` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub(crate) struct OpError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl OpError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

mod reference;

#[derive(Default)]
struct Tree {
    topics: TopicStore,
    subscriptions: Subscriptions,
    /// Topic views and what they derive.
    views: crate::views::ViewRegistry,
    /// Throttle state of reference topics whose view throttles.
    throttles:
        std::collections::HashMap<String, diffusion_core::view::ThrottleState<Option<TopicValue>>>,
    /// View results waiting for their `delay by`, in due order.
    delayed: BTreeMap<(tokio::time::Instant, u64), reference::DelayedClaims>,
    /// Tie-breaker for `delayed` keys.
    delay_seq: u64,
}

/// Subscriptions that back pressure ended during one operation, as (session, topic id); the
/// engine settles them before it releases the lock.
type Dropped = Vec<(SessionId, u64)>;

/// Topics plus subscriptions, shared by every session of one server.
pub(crate) struct Engine {
    tree: Mutex<Tree>,
    /// This engine, for timers (throttle, delay) that call back into it later.
    me: std::sync::Weak<Engine>,
    metrics: Metrics,
    conflations: AtomicU64,
    back_pressure_unsubscriptions: AtomicU64,
    /// Highest queue high-water mark among sessions that have closed.
    closed_peak_bytes: AtomicUsize,
}

fn parse_selector(text: &str) -> Result<Selector, OpError> {
    Selector::parse(text).map_err(|e| OpError::new(ErrorCode::InvalidSelector, e.to_string()))
}

fn to_value(
    topic_type: TopicType,
    validate_values: bool,
    value: &Value,
) -> Result<Option<TopicValue>, OpError> {
    crate::values::convert(topic_type, validate_values, value)
        .map_err(|e| OpError::new(ErrorCode::InvalidValue, e.to_string()))
}

fn read_only(path: &str) -> OpError {
    OpError::new(
        ErrorCode::ReadOnlyTopic,
        format!("'{path}' is a reference topic of a view: it changes only with its source"),
    )
}

fn unsubscribed_message(topic: &Topic, reason: &str) -> Bytes {
    encode_server_message(&ServerMessage::Unsubscribed {
        id: topic.id,
        path: topic.path.as_str().to_owned(),
        reason: reason.to_owned(),
    })
}

impl Engine {
    /// An empty topic tree.
    pub fn new(metrics: Metrics) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            tree: Mutex::new(Tree::default()),
            me: me.clone(),
            metrics,
            conflations: AtomicU64::new(0),
            back_pressure_unsubscriptions: AtomicU64::new(0),
            closed_peak_bytes: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        // Operations do not panic half-way through a change, so a poisoned tree is consistent.
        self.tree.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accounts for one push: counts conflation, logs a session closed by its queue limit, and
    /// collects the subscriptions back pressure ended.
    fn settle(
        &self,
        session: SessionId,
        result: Result<PushOutcome, PushError>,
        dropped: &mut Dropped,
    ) {
        match result {
            Ok(outcome) => {
                if outcome.conflated {
                    self.conflations.fetch_add(1, Ordering::Relaxed);
                    self.metrics.conflations.increment(1);
                }
                dropped.extend(outcome.unsubscribed.into_iter().map(|id| (session, id)));
            }
            Err(PushError::LimitReached(limit)) => {
                tracing::info!(session, %limit, "closing session: message queue limit reached");
            }
            Err(PushError::Closing) => {}
        }
    }

    /// Delivers an update to every subscriber of `topic`: the same shared update to each.
    fn fan_out(&self, topic: &Topic, update: &Arc<TopicUpdate>, dropped: &mut Dropped) {
        for (session, outbound) in &topic.subscribers {
            self.settle(*session, outbound.push_update(update), dropped);
        }
    }

    /// Subscribes one session to one topic: notice, then current value if any.
    fn subscribe_one(
        &self,
        topic: &mut Topic,
        subscriptions: &mut Subscriptions,
        session: SessionId,
        outbound: &Arc<SessionOutbound>,
        dropped: &mut Dropped,
    ) {
        topic.subscribers.insert(session, Arc::clone(outbound));
        subscriptions.note_subscribed(session, topic.id);
        let notice = outbound.push_control(topic.subscribed_message().clone());
        self.settle(session, notice, dropped);
        let initial = outbound.push_initial(topic.id, topic.current());
        self.settle(session, initial, dropped);
    }

    /// Ends one subscription (not for back pressure): forgets what the queue tracks for the
    /// topic, drops its queued updates when the topic is `TIDY_ON_UNSUBSCRIBE`, then queues
    /// the notice.
    fn end_subscription(
        &self,
        topic: &Topic,
        session: SessionId,
        outbound: &SessionOutbound,
        notice: &Bytes,
        dropped: &mut Dropped,
    ) {
        outbound.remove_topic(topic.id, topic.properties.tidy_on_unsubscribe);
        self.settle(session, outbound.push_control(notice.clone()), dropped);
    }

    /// Ends the subscriptions back pressure dropped and tells each session, with reason
    /// `back_pressure`. Telling a session can itself drop more (the notice is queued too), so
    /// this runs until nothing is left; each round ends a live subscription, so it stops.
    fn settle_dropped(
        &self,
        topics: &mut TopicStore,
        subscriptions: &mut Subscriptions,
        mut dropped: Dropped,
    ) {
        while let Some((session, id)) = dropped.pop() {
            let Some(topic) = topics.get_by_id_mut(id) else {
                continue;
            };
            let Some(outbound) = topic.subscribers.remove(&session) else {
                continue;
            };
            subscriptions.note_unsubscribed(session, id);
            self.back_pressure_unsubscriptions
                .fetch_add(1, Ordering::Relaxed);
            self.metrics.back_pressure_unsubscriptions.increment(1);
            tracing::debug!(session, topic = %topic.path, "unsubscribed by back pressure");
            let notice = outbound.push_control(topic.back_pressure_message().clone());
            self.settle(session, notice, &mut dropped);
        }
    }

    /// Makes a session (after its handshake) able to subscribe.
    pub fn register_session(&self, session: SessionId, outbound: Arc<SessionOutbound>) {
        self.lock().subscriptions.register(session, outbound);
    }

    /// Accounts for a push the session made itself (a reply): when it made the queue drop
    /// subscriptions, ends them and tells the session.
    pub fn settle_push(&self, session: SessionId, result: Result<PushOutcome, PushError>) {
        let mut dropped = Dropped::new();
        self.settle(session, result, &mut dropped);
        if dropped.is_empty() {
            return;
        }
        let mut tree = self.lock();
        let Tree {
            topics,
            subscriptions,
            ..
        } = &mut *tree;
        self.settle_dropped(topics, subscriptions, dropped);
    }

    /// Forgets a session, its selectors and its subscriptions.
    pub fn close_session(&self, session: SessionId) {
        let mut tree = self.lock();
        let Tree {
            topics,
            subscriptions,
            ..
        } = &mut *tree;
        if let Some(outbound) = subscriptions.outbound(session) {
            self.closed_peak_bytes
                .fetch_max(outbound.peak_queued_bytes(), Ordering::Relaxed);
        }
        for id in subscriptions.deregister(session) {
            if let Some(topic) = topics.get_by_id_mut(id) {
                topic.subscribers.remove(&session);
            }
        }
    }

    /// `add`: creates a topic, subscribing every session whose selectors select it. Adding an
    /// identical topic (same type and properties) again succeeds and, when a value is given,
    /// sets it; a different one is refused. A normal topic wins over a reference topic: adding
    /// one where a view's reference topic stands replaces that reference topic.
    pub fn add(
        &self,
        path: &str,
        topic_type: TopicType,
        properties: &BTreeMap<String, String>,
        value: Option<&Value>,
    ) -> Result<(), OpError> {
        let path = TopicPath::parse_user(path)
            .map_err(|e| OpError::new(ErrorCode::InvalidPath, e.to_string()))?;
        let properties = TopicProperties::from_map(properties)
            .map_err(|e| OpError::new(ErrorCode::InvalidProperties, e.to_string()))?;
        let value = match value {
            Some(v) => Some(to_value(topic_type, properties.validate_values, v)?),
            None => None,
        };

        let mut tree = self.lock();
        let mut dropped = Dropped::new();
        match tree.topics.get(path.as_str()).map(|t| t.reference) {
            Some(None) => {
                let existing = tree.topics.get_mut(path.as_str()).ok_or_else(|| {
                    OpError::new(ErrorCode::Internal, "topic vanished under the lock")
                })?;
                if existing.topic_type != topic_type || existing.properties != properties {
                    return Err(OpError::new(
                        ErrorCode::TopicExists,
                        format!(
                            "topic '{path}' already exists as a {} topic with different type or properties",
                            existing.topic_type
                        ),
                    ));
                }
                if let Some(value) = value {
                    self.metrics.updates_in.increment(1);
                    if let Some(update) = existing.update(value) {
                        self.fan_out(existing, &update, &mut dropped);
                        self.source_changed(&mut tree, path.as_str(), 0, &mut dropped);
                    }
                }
            }
            Some(Some(_)) => {
                self.remove_topic_at(&mut tree, path.as_str(), "replaced", &mut dropped);
                self.create_topic(
                    &mut tree,
                    path.clone(),
                    topic_type,
                    properties,
                    value,
                    None,
                    &mut dropped,
                );
                self.source_changed(&mut tree, path.as_str(), 0, &mut dropped);
            }
            None => {
                self.create_topic(
                    &mut tree,
                    path.clone(),
                    topic_type,
                    properties,
                    value,
                    None,
                    &mut dropped,
                );
                self.source_changed(&mut tree, path.as_str(), 0, &mut dropped);
            }
        }
        self.settle_tree(&mut tree, dropped);
        Ok(())
    }

    /// Creates a topic (normal, or a reference topic of view `reference`) and subscribes the
    /// sessions whose selectors select it. The path must be free.
    #[allow(clippy::too_many_arguments)]
    fn create_topic(
        &self,
        tree: &mut Tree,
        path: TopicPath,
        topic_type: TopicType,
        properties: TopicProperties,
        value: Option<Option<TopicValue>>,
        reference: Option<u64>,
        dropped: &mut Dropped,
    ) {
        let Tree {
            topics,
            subscriptions,
            ..
        } = tree;
        let selecting = subscriptions.sessions_selecting(path.as_str());
        let topic = topics.insert(path, topic_type, properties);
        topic.reference = reference;
        self.metrics.topics.increment(1.0);
        // A retained initial value is part of the state new subscribers receive; a
        // DONT_RETAIN_VALUE topic's initial value is delivered once, after the notices.
        let transient = match value {
            Some(value) => {
                self.metrics.updates_in.increment(1);
                topic.update(value)
            }
            None => None,
        };
        for (session, outbound) in &selecting {
            self.subscribe_one(topic, subscriptions, *session, outbound, dropped);
        }
        if topic.properties.dont_retain_value
            && let Some(update) = transient
        {
            self.fan_out(topic, &update, dropped);
        }
    }

    /// Removes the topic at `path`, telling its subscribers why. Returns whether it existed.
    fn remove_topic_at(
        &self,
        tree: &mut Tree,
        path: &str,
        reason: &str,
        dropped: &mut Dropped,
    ) -> bool {
        let Some(topic) = tree.topics.remove(path) else {
            return false;
        };
        tree.throttles.remove(path);
        self.metrics.topics.decrement(1.0);
        let notice = unsubscribed_message(&topic, reason);
        for (session, outbound) in &topic.subscribers {
            tree.subscriptions.note_unsubscribed(*session, topic.id);
            self.end_subscription(&topic, *session, outbound, &notice, dropped);
        }
        true
    }

    /// Settles back-pressure drops with the whole tree borrowed.
    fn settle_tree(&self, tree: &mut Tree, dropped: Dropped) {
        let Tree {
            topics,
            subscriptions,
            ..
        } = tree;
        self.settle_dropped(topics, subscriptions, dropped);
    }

    /// `set`: changes a topic's value and delivers it to the subscribers, unless it equals the
    /// current value. Reference topics are read-only.
    pub fn set(&self, path: &str, value: &Value) -> Result<(), OpError> {
        let path = TopicPath::parse(path)
            .map_err(|e| OpError::new(ErrorCode::InvalidPath, e.to_string()))?;
        let no_such_topic =
            || OpError::new(ErrorCode::NoSuchTopic, format!("no topic at path '{path}'"));
        // Convert the value outside the lock; only the topic's id, type and validation switch
        // are needed first.
        let (id, topic_type, validate_values) = {
            let tree = self.lock();
            let topic = tree.topics.get(path.as_str()).ok_or_else(no_such_topic)?;
            if topic.reference.is_some() {
                return Err(read_only(path.as_str()));
            }
            (topic.id, topic.topic_type, topic.properties.validate_values)
        };
        let value = to_value(topic_type, validate_values, value)?;

        let mut tree = self.lock();
        let topic = tree.topics.get_by_id_mut(id).ok_or_else(no_such_topic)?;
        self.metrics.updates_in.increment(1);
        let mut dropped = Dropped::new();
        if let Some(update) = topic.update(value) {
            self.fan_out(topic, &update, &mut dropped);
            self.source_changed(&mut tree, path.as_str(), 0, &mut dropped);
        }
        self.settle_tree(&mut tree, dropped);
        Ok(())
    }

    /// `subscribe`: retains the selector and subscribes the session to every selected topic it
    /// is not already subscribed to, in path order (this also restores topics that back
    /// pressure unsubscribed).
    pub fn subscribe(&self, session: SessionId, selector: &str) -> Result<(), OpError> {
        let selector = parse_selector(selector)?;
        let mut tree = self.lock();
        let Tree {
            topics,
            subscriptions,
            ..
        } = &mut *tree;
        let outbound = subscriptions
            .outbound(session)
            .cloned()
            .ok_or_else(|| OpError::new(ErrorCode::Internal, "session is not registered"))?;
        let mut dropped = Dropped::new();
        for path in topics.select_paths(&selector) {
            if let Some(topic) = topics.get_mut(&path)
                && !topic.subscribers.contains_key(&session)
            {
                self.subscribe_one(topic, subscriptions, session, &outbound, &mut dropped);
            }
        }
        subscriptions.add_selector(session, selector);
        self.settle_dropped(topics, subscriptions, dropped);
        Ok(())
    }

    /// `unsubscribe`: drops the retained selector with this text and unsubscribes the session
    /// from the topics it selects that no other retained selector of the session selects.
    pub fn unsubscribe(&self, session: SessionId, selector: &str) -> Result<(), OpError> {
        let selector = parse_selector(selector)?;
        let mut tree = self.lock();
        let Tree {
            topics,
            subscriptions,
            ..
        } = &mut *tree;
        let leaving: Vec<String> = topics
            .select_paths(&selector)
            .into_iter()
            .filter(|path| !subscriptions.selects(session, path, Some(&selector)))
            .collect();
        if !subscriptions.remove_selector(session, &selector) {
            return Ok(());
        }
        let mut dropped = Dropped::new();
        for path in leaving {
            if let Some(topic) = topics.get_mut(&path)
                && let Some(outbound) = topic.subscribers.remove(&session)
            {
                subscriptions.note_unsubscribed(session, topic.id);
                let notice = unsubscribed_message(topic, "unsubscribed");
                self.end_subscription(topic, session, &outbound, &notice, &mut dropped);
            }
        }
        self.settle_dropped(topics, subscriptions, dropped);
        Ok(())
    }

    /// `fetch`: the selected topics in path order, with their values.
    pub fn fetch(&self, selector: &str) -> Result<Vec<FetchedTopic>, OpError> {
        let selector = parse_selector(selector)?;
        let selected: Vec<(String, TopicType, Option<TopicValue>)> = {
            let tree = self.lock();
            tree.topics
                .select(&selector)
                .map(|t| (t.path.as_str().to_owned(), t.topic_type, t.value().cloned()))
                .collect()
        };
        Ok(selected
            .into_iter()
            .map(|(path, topic_type, value)| FetchedTopic {
                path,
                topic_type,
                value: value.map(|v| v.to_json()),
            })
            .collect())
    }

    /// `remove`: removes every selected normal topic, telling its subscribers. Returns how
    /// many. Reference topics are skipped (a path selector naming one is refused): they go
    /// with their source or their view.
    pub fn remove(&self, selector: &str) -> Result<usize, OpError> {
        let selector = parse_selector(selector)?;
        let mut tree = self.lock();
        if let Some(path) = selector.exact_path()
            && tree
                .topics
                .get(path.as_str())
                .is_some_and(|t| t.reference.is_some())
        {
            return Err(read_only(path.as_str()));
        }
        let paths: Vec<String> = tree
            .topics
            .select(&selector)
            .filter(|t| t.reference.is_none())
            .map(|t| t.path.as_str().to_owned())
            .collect();
        let mut dropped = Dropped::new();
        for path in &paths {
            self.remove_topic_at(&mut tree, path, "removed", &mut dropped);
            // Views derived from it let go; a view claiming this very path may now take it.
            self.source_changed(&mut tree, path, 0, &mut dropped);
            self.apply_reference(&mut tree, path, 0, &mut dropped);
        }
        self.settle_tree(&mut tree, dropped);
        Ok(paths.len())
    }

    /// The outbound queues of the registered sessions, measured now.
    pub fn queue_stats(&self) -> QueueStats {
        let tree = self.lock();
        let mut stats = QueueStats {
            peak_queued_bytes: self.closed_peak_bytes.load(Ordering::Relaxed),
            conflations: self.conflations.load(Ordering::Relaxed),
            back_pressure_unsubscriptions: self
                .back_pressure_unsubscriptions
                .load(Ordering::Relaxed),
            ..QueueStats::default()
        };
        for (_, outbound) in tree.subscriptions.sessions() {
            let queued = outbound.queued_bytes();
            stats.sessions += 1;
            stats.queued_bytes += queued;
            stats.max_queued_bytes = stats.max_queued_bytes.max(queued);
            stats.peak_queued_bytes = stats.peak_queued_bytes.max(outbound.peak_queued_bytes());
        }
        stats
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The gauge is process-wide; take this server's topics out of it when it goes away.
        let count = self.lock().topics.len();
        self.metrics.topics.decrement(count as f64);
    }
}
