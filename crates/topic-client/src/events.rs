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
}

impl TopicEvent {
    /// The path of the topic the event is about.
    pub fn path(&self) -> &str {
        match self {
            Self::Subscribed { path, .. }
            | Self::Value { path, .. }
            | Self::Unsubscribed { path, .. } => path,
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
/// When the protocol gains a delta message, [`TopicTable::apply`] gets one more arm: apply the
/// delta to the entry's canonical `last` value, rebuild it with `TopicValue::from_canonical`, and
/// emit an ordinary [`TopicEvent::Value`] carrying the full value, so applications never see
/// deltas.
#[derive(Debug, Default)]
pub(crate) struct TopicTable {
    topics: HashMap<u64, TopicEntry>,
}

impl TopicTable {
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
            ServerMessage::Unsubscribed { id, path, reason } => {
                self.topics.remove(&id);
                Some(TopicEvent::Unsubscribed { path, reason })
            }
            _ => None,
        }
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
        let mut table = TopicTable::default();
        let event = table
            .apply(subscribed(3, "a/b", TopicType::Json, &[]))
            .unwrap();
        assert_eq!(event.path(), "a/b");
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
        assert_eq!(event.path(), "a/b");
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
        let mut table = TopicTable::default();
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

    #[test]
    fn replies_are_not_events() {
        let mut table = TopicTable::default();
        assert!(table.apply(ServerMessage::Ok { cid: 1 }).is_none());
    }
}
