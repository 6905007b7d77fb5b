//! The topic store: every topic by path, with its current value and its subscribers.
//!
//! Plain data under the engine's lock. Each topic keeps its messages pre-encoded (the
//! subscription notice and the current `value` message), so subscribing a thousand sessions or
//! fanning out an update never serialises anything per subscriber.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use diffusion_core::protocol::{ServerMessage, encode_server_message, encode_value_message};
use diffusion_core::{Selector, TopicPath, TopicProperties, TopicType, TopicValue};

use crate::outbound::SessionOutbound;
use crate::subscriptions::SessionId;

/// One topic.
pub(crate) struct Topic {
    /// Server-wide id, named in `subscribed`/`value`/`unsubscribed` messages.
    pub id: u64,
    /// Where it lives.
    pub path: TopicPath,
    /// Its value type.
    pub topic_type: TopicType,
    /// Its behaviour switches.
    pub properties: TopicProperties,
    value: Option<TopicValue>,
    value_message: Option<Bytes>,
    subscribed_message: Bytes,
    /// Sessions subscribed to it, with their queues.
    pub subscribers: HashMap<SessionId, Arc<SessionOutbound>>,
}

impl Topic {
    fn new(id: u64, path: TopicPath, topic_type: TopicType, properties: TopicProperties) -> Self {
        let subscribed_message = encode_server_message(&ServerMessage::Subscribed {
            id,
            path: path.as_str().to_owned(),
            topic_type,
            properties: properties.to_map(),
        });
        Self {
            id,
            path,
            topic_type,
            properties,
            value: None,
            value_message: None,
            subscribed_message,
            subscribers: HashMap::new(),
        }
    }

    /// The current value, if the topic has one (never, for `DONT_RETAIN_VALUE`).
    pub fn value(&self) -> Option<&TopicValue> {
        self.value.as_ref()
    }

    /// The encoded `value` message for the current value, sent to new subscribers.
    pub fn value_message(&self) -> Option<&Bytes> {
        self.value_message.as_ref()
    }

    /// The encoded `subscribed` notice, the same for every subscriber.
    pub fn subscribed_message(&self) -> &Bytes {
        &self.subscribed_message
    }

    /// Takes a new value and returns the `value` message to deliver, or `None` when the value
    /// equals the current one (same canonical bytes): an equal value delivers nothing.
    /// A `DONT_RETAIN_VALUE` topic keeps nothing, so it delivers every value.
    pub fn update(&mut self, value: Option<TopicValue>) -> Option<Bytes> {
        if !self.properties.dont_retain_value && self.value == value {
            return None;
        }
        let message = match &value {
            Some(v) => encode_value_message(self.id, &v.wire_json()),
            None => encode_value_message(self.id, b"null"),
        };
        if !self.properties.dont_retain_value {
            self.value_message = value.as_ref().map(|_| message.clone());
            self.value = value;
        }
        Some(message)
    }
}

/// All topics, ordered by path (fetch replies and subscription notices come in path order).
#[derive(Default)]
pub(crate) struct TopicStore {
    by_path: BTreeMap<String, Topic>,
    paths_by_id: HashMap<u64, String>,
    next_id: u64,
}

/// Is `path` the selector prefix itself or under it (segment-aware)?
fn under_prefix(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'/')
}

impl TopicStore {
    /// Number of topics.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// The topic at `path`.
    pub fn get(&self, path: &str) -> Option<&Topic> {
        self.by_path.get(path)
    }

    /// The topic at `path`, to change it.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Topic> {
        self.by_path.get_mut(path)
    }

    /// The topic with id `id`, to change it.
    pub fn get_by_id_mut(&mut self, id: u64) -> Option<&mut Topic> {
        let path = self.paths_by_id.get(&id)?;
        self.by_path.get_mut(path)
    }

    /// Creates a topic with a fresh id; the caller has checked the path is free.
    pub fn insert(
        &mut self,
        path: TopicPath,
        topic_type: TopicType,
        properties: TopicProperties,
    ) -> &mut Topic {
        self.next_id += 1;
        let id = self.next_id;
        let key = path.as_str().to_owned();
        self.paths_by_id.insert(id, key.clone());
        self.by_path
            .entry(key)
            .or_insert_with(|| Topic::new(id, path, topic_type, properties))
    }

    /// Removes the topic at `path`.
    pub fn remove(&mut self, path: &str) -> Option<Topic> {
        let topic = self.by_path.remove(path)?;
        self.paths_by_id.remove(&topic.id);
        Some(topic)
    }

    /// The range of paths a selector can select: everything under its literal path prefix
    /// (all topics when it has none). Paths sharing a string prefix are contiguous in the map.
    fn candidates<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Topic)> + 'a {
        self.by_path
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(path, _)| path.starts_with(prefix))
            .filter(move |(path, _)| under_prefix(path, prefix))
    }

    /// The topics a selector selects, in path order.
    pub fn select<'a>(&'a self, selector: &'a Selector) -> impl Iterator<Item = &'a Topic> + 'a {
        self.candidates(selector.path_prefix())
            .filter(|(path, _)| selector.matches(path))
            .map(|(_, topic)| topic)
    }

    /// The paths a selector selects, in path order (for changing those topics afterwards).
    pub fn select_paths(&self, selector: &Selector) -> Vec<String> {
        self.candidates(selector.path_prefix())
            .filter(|(path, _)| selector.matches(path))
            .map(|(path, _)| path.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(paths: &[&str]) -> TopicStore {
        let mut store = TopicStore::default();
        for p in paths {
            store.insert(
                TopicPath::parse(p).unwrap(),
                TopicType::Json,
                TopicProperties::default(),
            );
        }
        store
    }

    #[test]
    fn prefix_range_is_segment_aware_and_complete() {
        let s = store(&["a/b", "a/b!x", "a/b/c", "a/bc", "b"]);
        let sel = Selector::parse("?a/b//").unwrap();
        let got: Vec<_> = s.select(&sel).map(|t| t.path.as_str()).collect();
        assert_eq!(got, ["a/b", "a/b/c"]);
        let all = Selector::parse("*.*").unwrap();
        assert_eq!(s.select_paths(&all).len(), 5);
    }

    #[test]
    fn equal_values_deliver_nothing() {
        let mut s = store(&["a"]);
        let t = s.get_mut("a").unwrap();
        let v = |j| TopicValue::from_json(TopicType::Json, &j).unwrap();
        assert!(t.update(v(json!({"x":1}))).is_some());
        assert!(t.update(v(json!({"x":1}))).is_none());
        assert_eq!(
            t.value_message().unwrap(),
            &Bytes::from_static(br#"{"type":"value","id":1,"value":{"x":1}}"#)
        );
        assert!(t.update(None).is_some());
        assert!(t.value().is_none() && t.value_message().is_none());
    }

    #[test]
    fn ids_are_unique_and_removable() {
        let mut s = store(&["a", "b"]);
        assert_eq!(s.get("b").unwrap().id, 2);
        assert!(s.get_by_id_mut(1).is_some());
        s.remove("a").unwrap();
        assert!(s.get_by_id_mut(1).is_none());
        assert_eq!(s.len(), 1);
    }
}
