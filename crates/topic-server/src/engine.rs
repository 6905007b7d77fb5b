//! The topic engine: every protocol operation on topics and subscriptions, under one lock.
//!
//! Operations take the lock, change the topic store and subscription state, and push
//! pre-encoded messages into the affected sessions' bounded queues; they never touch a socket,
//! so the lock is held only for in-memory work. Work that needs no shared state (parsing
//! selectors, converting values) happens before the lock is taken.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use diffusion_core::protocol::{ErrorCode, FetchedTopic, ServerMessage, encode_server_message};
use diffusion_core::{Selector, TopicPath, TopicProperties, TopicType, TopicValue};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::outbound::{PushError, SessionOutbound};
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

#[derive(Default)]
struct Tree {
    topics: TopicStore,
    subscriptions: Subscriptions,
}

/// Topics plus subscriptions, shared by every session of one server.
pub(crate) struct Engine {
    tree: Mutex<Tree>,
    metrics: Metrics,
}

fn parse_selector(text: &str) -> Result<Selector, OpError> {
    Selector::parse(text).map_err(|e| OpError::new(ErrorCode::InvalidSelector, e.to_string()))
}

fn to_value(topic_type: TopicType, value: &Value) -> Result<Option<TopicValue>, OpError> {
    TopicValue::from_json(topic_type, value)
        .map_err(|e| OpError::new(ErrorCode::InvalidValue, e.to_string()))
}

/// Pushes one shared message to a session, logging (not failing) when that closes it.
fn push(session: SessionId, outbound: &SessionOutbound, topic: Option<u64>, message: &Bytes) {
    if let Err(PushError::LimitReached(limit)) = outbound.push(topic, message.clone()) {
        tracing::info!(session, %limit, "closing session: message queue limit reached");
    }
}

/// Delivers an update to every subscriber of `topic`: the same bytes to each.
fn fan_out(topic: &Topic, message: &Bytes) {
    for (session, outbound) in &topic.subscribers {
        push(*session, outbound, Some(topic.id), message);
    }
}

/// Subscribes one session to one topic: notice, then current value if any.
fn subscribe_one(
    topic: &mut Topic,
    subscriptions: &mut Subscriptions,
    session: SessionId,
    outbound: &Arc<SessionOutbound>,
) {
    topic.subscribers.insert(session, Arc::clone(outbound));
    subscriptions.note_subscribed(session, topic.id);
    push(
        session,
        outbound,
        Some(topic.id),
        topic.subscribed_message(),
    );
    if let Some(value) = topic.value_message() {
        push(session, outbound, Some(topic.id), value);
    }
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
    pub fn new(metrics: Metrics) -> Self {
        Self {
            tree: Mutex::new(Tree::default()),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        // Operations do not panic half-way through a change, so a poisoned tree is consistent.
        self.tree.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a session (after its handshake) able to subscribe.
    pub fn register_session(&self, session: SessionId, outbound: Arc<SessionOutbound>) {
        self.lock().subscriptions.register(session, outbound);
    }

    /// Forgets a session and its subscriptions.
    pub fn close_session(&self, session: SessionId) {
        let mut tree = self.lock();
        let Tree {
            topics,
            subscriptions,
        } = &mut *tree;
        for id in subscriptions.deregister(session) {
            if let Some(topic) = topics.get_by_id_mut(id) {
                topic.subscribers.remove(&session);
            }
        }
    }

    /// `add`: creates a topic, subscribing every session whose selectors select it. Adding an
    /// identical topic (same type and properties) again succeeds and, when a value is given,
    /// sets it; a different one is refused.
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
            Some(v) => Some(to_value(topic_type, v)?),
            None => None,
        };

        let mut tree = self.lock();
        let Tree {
            topics,
            subscriptions,
        } = &mut *tree;
        if let Some(existing) = topics.get_mut(path.as_str()) {
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
                if let Some(message) = existing.update(value) {
                    fan_out(existing, &message);
                }
            }
            return Ok(());
        }

        let selecting = subscriptions.sessions_selecting(path.as_str());
        let topic = topics.insert(path, topic_type, properties);
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
            subscribe_one(topic, subscriptions, *session, outbound);
        }
        if topic.properties.dont_retain_value
            && let Some(message) = transient
        {
            fan_out(topic, &message);
        }
        Ok(())
    }

    /// `set`: changes a topic's value and delivers it to the subscribers, unless it equals the
    /// current value.
    pub fn set(&self, path: &str, value: &Value) -> Result<(), OpError> {
        let path = TopicPath::parse(path)
            .map_err(|e| OpError::new(ErrorCode::InvalidPath, e.to_string()))?;
        let no_such_topic =
            || OpError::new(ErrorCode::NoSuchTopic, format!("no topic at path '{path}'"));
        // Convert the value outside the lock; only the topic's type and id are needed first.
        let (id, topic_type) = {
            let tree = self.lock();
            let topic = tree.topics.get(path.as_str()).ok_or_else(no_such_topic)?;
            (topic.id, topic.topic_type)
        };
        let value = to_value(topic_type, value)?;

        let mut tree = self.lock();
        let topic = tree.topics.get_by_id_mut(id).ok_or_else(no_such_topic)?;
        self.metrics.updates_in.increment(1);
        if let Some(message) = topic.update(value) {
            fan_out(topic, &message);
        }
        Ok(())
    }

    /// `subscribe`: retains the selector and subscribes the session to every selected topic it
    /// is not already subscribed to, in path order.
    pub fn subscribe(&self, session: SessionId, selector: &str) -> Result<(), OpError> {
        let selector = parse_selector(selector)?;
        let mut tree = self.lock();
        let Tree {
            topics,
            subscriptions,
        } = &mut *tree;
        let outbound = subscriptions
            .outbound(session)
            .cloned()
            .ok_or_else(|| OpError::new(ErrorCode::Internal, "session is not registered"))?;
        for path in topics.select_paths(&selector) {
            if let Some(topic) = topics.get_mut(&path)
                && !topic.subscribers.contains_key(&session)
            {
                subscribe_one(topic, subscriptions, session, &outbound);
            }
        }
        subscriptions.add_selector(session, selector);
        Ok(())
    }

    /// `unsubscribe`: drops the retained selector with this text and unsubscribes the session
    /// from the topics none of its remaining selectors selects.
    pub fn unsubscribe(&self, session: SessionId, selector: &str) -> Result<(), OpError> {
        let selector = parse_selector(selector)?;
        let mut tree = self.lock();
        let Tree {
            topics,
            subscriptions,
        } = &mut *tree;
        let Some(removed) = subscriptions.remove_selector(session, selector.as_str()) else {
            return Ok(());
        };
        for path in topics.select_paths(&removed) {
            if subscriptions.selects(session, &path) {
                continue;
            }
            if let Some(topic) = topics.get_mut(&path)
                && let Some(outbound) = topic.subscribers.remove(&session)
            {
                subscriptions.note_unsubscribed(session, topic.id);
                let message = unsubscribed_message(topic, "unsubscribed");
                push(session, &outbound, Some(topic.id), &message);
            }
        }
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

    /// `remove`: removes every selected topic, telling its subscribers. Returns how many.
    pub fn remove(&self, selector: &str) -> Result<usize, OpError> {
        let selector = parse_selector(selector)?;
        let mut tree = self.lock();
        let Tree {
            topics,
            subscriptions,
        } = &mut *tree;
        let paths = topics.select_paths(&selector);
        for path in &paths {
            let Some(topic) = topics.remove(path) else {
                continue;
            };
            let message = unsubscribed_message(&topic, "removed");
            for (session, outbound) in &topic.subscribers {
                subscriptions.note_unsubscribed(*session, topic.id);
                push(*session, outbound, Some(topic.id), &message);
            }
        }
        self.metrics.topics.decrement(paths.len() as f64);
        Ok(paths.len())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The gauge is process-wide; take this server's topics out of it when it goes away.
        let count = self.lock().topics.len();
        self.metrics.topics.decrement(count as f64);
    }
}
