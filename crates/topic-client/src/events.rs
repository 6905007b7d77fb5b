//! Subscription events: what the application sees, and the per-connection topic table that turns
//! the server's id-based messages into path-based events.

use std::collections::{BTreeMap, HashMap};

use diffusion_core::protocol::ServerMessage;
use diffusion_core::{TopicProperties, TopicType, TopicValue};
use serde_json::Value;

/// Something that happened to one of this session's subscriptions, in the order the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicEvent {
    /// The session is now subscribed to the topic at `path`; values follow.
    Subscribed {
        /// The topic's path.
        path: String,
        /// Its type, which says how to read its values.
        topic_type: TopicType,
        /// Its properties in string form (all of them, defaults included).
        properties: BTreeMap<String, String>,
    },
    /// The topic's full current value. The client always delivers full values, even when the
    /// server sends a change as a delta.
    Value {
        /// The topic's path.
        path: String,
        /// Its type.
        topic_type: TopicType,
        /// The value in the type's JSON wire form (`null`: the topic has no value).
        value: Value,
    },
    /// The session is no longer subscribed to the topic; no more values will come for it.
    Unsubscribed {
        /// The topic's path.
        path: String,
        /// Why: `removed`, `unsubscribed`, `back_pressure`, …
        reason: String,
    },
    /// The connection was lost and is back. `recovered`: the session was resumed and nothing
    /// was missed. Otherwise the server could not resume it (reconnect window passed, server
    /// restarted): the client has subscribed again with its selectors, every topic will be
    /// announced again with `Subscribed` and its current value, and updates made while it was
    /// away may be missing.
    Reconnected {
        /// Whether the session was resumed without loss.
        recovered: bool,
    },
}

impl TopicEvent {
    /// The path of the topic the event is about (`None` for [`TopicEvent::Reconnected`]).
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Subscribed { path, .. }
            | Self::Value { path, .. }
            | Self::Unsubscribed { path, .. } => Some(path),
            Self::Reconnected { .. } => None,
        }
    }
}

/// What the client remembers about one subscribed topic.
#[derive(Debug)]
struct TopicEntry {
    path: String,
    topic_type: TopicType,
    /// Whether the server may send deltas for this topic, so the last value must be kept.
    keeps_value: bool,
    /// The last full value, in canonical form: the base a delta will be applied to.
    last: Option<TopicValue>,
}

/// Maps the server's topic ids to paths and types for one connection, and keeps the last value
/// of every topic that can receive deltas. Owned by the connection's reader task.
///
/// A `delta` message is applied to the entry's canonical `last` value and turned into an
/// ordinary [`TopicEvent::Value`] carrying the full value, so applications never see deltas.
#[derive(Debug)]
pub(crate) struct TopicTable {
    topics: HashMap<u64, TopicEntry>,
    /// Largest value a delta may produce: a delta declaring more is refused before anything
    /// is allocated (a broken or hostile server must not be able to exhaust our memory).
    max_value_bytes: usize,
}

/// Applies a base64 fossil delta to the value the client holds.
fn apply_delta(
    last: Option<&TopicValue>,
    topic_type: TopicType,
    delta: &str,
    max_value_bytes: usize,
) -> Result<TopicValue, String> {
    use base64::Engine as _;
    let base = last.ok_or("no value held for this topic")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(delta)
        .map_err(|e| format!("delta is not base64: {e}"))?;
    let bytes = diffusion_core::delta::apply(base.canonical(), &raw, max_value_bytes)
        .map_err(|e| e.to_string())?;
    TopicValue::from_canonical(topic_type, bytes).map_err(|e| e.to_string())
}

impl TopicTable {
    /// An empty table whose deltas may produce values of up to `max_value_bytes` (the largest
    /// message the connection accepts: a full value could not be larger).
    pub(crate) fn new(max_value_bytes: usize) -> Self {
        Self {
            topics: HashMap::new(),
            max_value_bytes,
        }
    }

    /// Turns a subscription message into an event, updating the table. Returns `None` for
    /// messages that are not about subscriptions, and for values naming an unknown id (logged:
    /// that is a server bug, and the value cannot be attributed to a path).
    pub(crate) fn apply(&mut self, message: ServerMessage) -> Option<TopicEvent> {
        match message {
            ServerMessage::Subscribed {
                id,
                path,
                topic_type,
                properties,
            } => {
                let keeps_value = topic_type.supports_deltas()
                    && TopicProperties::from_map(&properties)
                        .map(|p| !p.publish_values_only && !p.dont_retain_value)
                        .unwrap_or(true);
                self.topics.insert(
                    id,
                    TopicEntry {
                        path: path.clone(),
                        topic_type,
                        keeps_value,
                        last: None,
                    },
                );
                Some(TopicEvent::Subscribed {
                    path,
                    topic_type,
                    properties,
                })
            }
            ServerMessage::Value { id, value } => {
                let Some(entry) = self.topics.get_mut(&id) else {
                    tracing::warn!(id, "value for a topic id this session is not subscribed to");
                    return None;
                };
                if entry.keeps_value {
                    entry.last = match TopicValue::from_json(entry.topic_type, &value) {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!(path = %entry.path, error = %e, "server sent a value that does not fit the topic type");
                            None
                        }
                    };
                }
                Some(TopicEvent::Value {
                    path: entry.path.clone(),
                    topic_type: entry.topic_type,
                    value,
                })
            }
            ServerMessage::Delta { id, delta } => {
                let Some(entry) = self.topics.get_mut(&id) else {
                    tracing::warn!(id, "delta for a topic id this session is not subscribed to");
                    return None;
                };
                let applied = apply_delta(
                    entry.last.as_ref(),
                    entry.topic_type,
                    &delta,
                    self.max_value_bytes,
                );
                match applied {
                    Ok(value) => {
                        let json = value.to_json();
                        entry.last = Some(value);
                        Some(TopicEvent::Value {
                            path: entry.path.clone(),
                            topic_type: entry.topic_type,
                            value: json,
                        })
                    }
                    Err(reason) => {
                        // Without a correct base the topic's value is unknown until the next
                        // full value; say so loudly rather than hand out a wrong value.
                        tracing::error!(path = %entry.path, %reason, "cannot apply delta");
                        entry.last = None;
                        None
                    }
                }
            }
            ServerMessage::Unsubscribed { id, path, reason } => {
                self.topics.remove(&id);
                Some(TopicEvent::Unsubscribed { path, reason })
            }
            _ => None,
        }
    }

    /// Forgets every topic: the session they belonged to is gone.
    pub(crate) fn clear(&mut self) {
        self.topics.clear();
    }

    /// Number of topics currently subscribed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.topics.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subscribed(
        id: u64,
        path: &str,
        topic_type: TopicType,
        props: &[(&str, &str)],
    ) -> ServerMessage {
        ServerMessage::Subscribed {
            id,
            path: path.to_owned(),
            topic_type,
            properties: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn ids_become_paths_until_unsubscribed() {
        let mut table = TopicTable::new(1 << 20);
        let event = table
            .apply(subscribed(3, "a/b", TopicType::Json, &[]))
            .unwrap();
        assert_eq!(event.path(), Some("a/b"));
        let event = table
            .apply(ServerMessage::Value {
                id: 3,
                value: json!({"x": 1}),
            })
            .unwrap();
        assert_eq!(
            event,
            TopicEvent::Value {
                path: "a/b".to_owned(),
                topic_type: TopicType::Json,
                value: json!({"x": 1})
            }
        );
        assert!(
            table.topics[&3].last.is_some(),
            "JSON topics keep the delta base"
        );
        let event = table
            .apply(ServerMessage::Unsubscribed {
                id: 3,
                path: "a/b".to_owned(),
                reason: "removed".to_owned(),
            })
            .unwrap();
        assert_eq!(event.path(), Some("a/b"));
        assert_eq!(table.len(), 0);
        assert!(
            table
                .apply(ServerMessage::Value {
                    id: 3,
                    value: json!(1)
                })
                .is_none()
        );
    }

    #[test]
    fn only_delta_capable_topics_keep_their_last_value() {
        let mut table = TopicTable::new(1 << 20);
        table.apply(subscribed(1, "n", TopicType::Int64, &[]));
        table.apply(subscribed(
            2,
            "s",
            TopicType::String,
            &[("PUBLISH_VALUES_ONLY", "true")],
        ));
        table.apply(subscribed(3, "t", TopicType::String, &[]));
        for id in 1..=3 {
            let value = if id == 1 { json!(5) } else { json!("x") };
            assert!(table.apply(ServerMessage::Value { id, value }).is_some());
        }
        assert!(table.topics[&1].last.is_none());
        assert!(table.topics[&2].last.is_none());
        assert!(table.topics[&3].last.is_some());
    }

    fn delta(old: &Value, new: &Value) -> String {
        use base64::Engine as _;
        let old = serde_json::to_vec(old).unwrap();
        let new = serde_json::to_vec(new).unwrap();
        let d = diffusion_core::delta::diff(&old, &new).unwrap();
        base64::engine::general_purpose::STANDARD.encode(d)
    }

    #[test]
    fn deltas_become_full_values() {
        let mut table = TopicTable::new(1 << 20);
        table.apply(subscribed(4, "doc", TopicType::Json, &[]));
        let v1 = json!({"name": "x".repeat(100), "price": 1});
        let v2 = json!({"name": "x".repeat(100), "price": 2});
        let v3 = json!({"name": "x".repeat(100), "price": 3, "extra": true});
        table.apply(ServerMessage::Value {
            id: 4,
            value: v1.clone(),
        });
        for (old, new) in [(&v1, &v2), (&v2, &v3)] {
            let event = table
                .apply(ServerMessage::Delta {
                    id: 4,
                    delta: delta(old, new),
                })
                .unwrap();
            assert_eq!(
                event,
                TopicEvent::Value {
                    path: "doc".to_owned(),
                    topic_type: TopicType::Json,
                    value: new.clone()
                }
            );
        }
    }

    #[test]
    fn a_delta_without_the_right_base_is_refused() {
        let mut table = TopicTable::new(1 << 20);
        table.apply(subscribed(4, "doc", TopicType::Json, &[]));
        let v1 = json!({"name": "x".repeat(100), "price": 1});
        let v2 = json!({"name": "x".repeat(100), "price": 2});
        // No value held yet.
        assert!(
            table
                .apply(ServerMessage::Delta {
                    id: 4,
                    delta: delta(&v1, &v2)
                })
                .is_none()
        );
        // Held value differs from the delta's base: the checksum catches it.
        table.apply(ServerMessage::Value {
            id: 4,
            value: json!({"other": "y".repeat(90)}),
        });
        assert!(
            table
                .apply(ServerMessage::Delta {
                    id: 4,
                    delta: delta(&v1, &v2)
                })
                .is_none()
        );
        assert!(
            table
                .apply(ServerMessage::Delta {
                    id: 4,
                    delta: "@@not base64".into()
                })
                .is_none()
        );
    }

    #[test]
    fn replies_are_not_events() {
        let mut table = TopicTable::new(1 << 20);
        assert!(table.apply(ServerMessage::Ok { cid: 1 }).is_none());
    }
}
