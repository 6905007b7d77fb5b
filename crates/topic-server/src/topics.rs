//! The topic store: every topic by path, with its current value (its subscribers are in
//! [`crate::subscriptions`]).
//!
//! Plain data under the engine's lock. Each topic keeps its messages pre-encoded (the
//! subscription notices and its current value as a [`TopicUpdate`]), and each update is encoded
//! once — the `value` message and, when the topic allows deltas, the `delta` message — so
//! subscribing a thousand sessions or fanning out an update never serialises anything per
//! subscriber.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use diffusion_core::conflation::TopicUpdate;
use diffusion_core::delta;
use diffusion_core::protocol::{
    ServerMessage, encode_delta_message, encode_server_message, encode_value_message,
};
use diffusion_core::{Selector, TopicPath, TopicProperties, TopicType, TopicValue};

/// Reason of the `unsubscribed` notice sent when back pressure ends a subscription.
pub(crate) const BACK_PRESSURE: &str = "back_pressure";

/// One topic.
pub(crate) struct Topic {
    /// Server-wide id, named in `subscribed`/`value`/`delta`/`unsubscribed` messages.
    pub id: u64,
    /// Where it lives.
    pub path: TopicPath,
    /// Its value type.
    pub topic_type: TopicType,
    /// Its behaviour switches.
    pub properties: TopicProperties,
    value: Option<TopicValue>,
    /// Delivered updates so far; the version of the current value.
    version: u64,
    /// The current value as an update (full value only), for new subscribers; `None` when the
    /// topic has no value or retains none.
    current: Option<Arc<TopicUpdate>>,
    subscribed_message: Bytes,
    back_pressure_message: Bytes,
    /// For a reference topic, the precedence order of the view that owns it; `None` for a
    /// normal topic. Reference topics cannot be set or removed by clients.
    pub reference: Option<u64>,
    /// The principal that added it (a normal topic added by a session), for per-principal
    /// topic limits.
    pub owner: Option<Arc<str>>,
}

impl Topic {
    fn new(id: u64, path: TopicPath, topic_type: TopicType, properties: TopicProperties) -> Self {
        let subscribed_message = encode_server_message(&ServerMessage::Subscribed {
            id,
            path: path.as_str().to_owned(),
            topic_type,
            properties: properties.to_map(),
        });
        let back_pressure_message = encode_server_message(&ServerMessage::Unsubscribed {
            id,
            path: path.as_str().to_owned(),
            reason: BACK_PRESSURE.to_owned(),
        });
        Self {
            id,
            path,
            topic_type,
            properties,
            value: None,
            version: 0,
            current: None,
            subscribed_message,
            back_pressure_message,
            reference: None,
            owner: None,
        }
    }

    /// The current value, if the topic has one (never, for `DONT_RETAIN_VALUE`).
    pub fn value(&self) -> Option<&TopicValue> {
        self.value.as_ref()
    }

    /// The current value as a full-value update, what a new subscriber starts from.
    pub fn current(&self) -> Option<&Arc<TopicUpdate>> {
        self.current.as_ref()
    }

    /// The encoded `subscribed` notice, the same for every subscriber.
    pub fn subscribed_message(&self) -> &Bytes {
        &self.subscribed_message
    }

    /// The encoded `unsubscribed` notice with reason `back_pressure`.
    pub fn back_pressure_message(&self) -> &Bytes {
        &self.back_pressure_message
    }

    /// Whether updates of this topic may travel as deltas: a delta-capable type, values
    /// retained (there is a base to apply to), and `PUBLISH_VALUES_ONLY` off.
    pub fn sends_deltas(&self) -> bool {
        self.topic_type.supports_deltas()
            && !self.properties.publish_values_only
            && !self.properties.dont_retain_value
    }

    /// Takes a new value and returns the update to deliver, or `None` when the value equals
    /// the current one (same canonical bytes): an equal value delivers nothing. A
    /// `DONT_RETAIN_VALUE` topic keeps nothing, so it delivers every value.
    ///
    /// The update carries the encoded `value` message and, when the topic sends deltas and
    /// had a value before, the `delta` message from the previous value — only when it is
    /// smaller than the `value` message. Both are computed here, once for all subscribers.
    pub fn update(&mut self, value: Option<TopicValue>) -> Option<Arc<TopicUpdate>> {
        if !self.properties.dont_retain_value && self.value == value {
            return None;
        }
        self.version += 1;
        let value_message = match &value {
            Some(v) => encode_value_message(self.id, &v.wire_json()),
            None => encode_value_message(self.id, b"null"),
        };
        let deltas = self.sends_deltas();
        let canonical = |v: &Option<TopicValue>| {
            deltas
                .then(|| v.as_ref().map(|v| v.canonical().clone()))
                .flatten()
        };
        let (previous, new) = (canonical(&self.value), canonical(&value));
        let delta_message = match (&previous, &new) {
            (Some(old), Some(new)) => delta::diff(old, new)
                .map(|d| encode_delta_message(self.id, &d))
                .filter(|m| m.len() < value_message.len()),
            _ => None,
        };
        let update = TopicUpdate {
            topic: self.id,
            version: self.version,
            policy: self.properties.conflation,
            value: new,
            previous,
            value_message,
            delta_message,
        };
        if !self.properties.dont_retain_value {
            self.current = value.as_ref().map(|_| {
                Arc::new(TopicUpdate {
                    previous: None,
                    delta_message: None,
                    ..update.clone()
                })
            });
            self.value = value;
        }
        Some(Arc::new(update))
    }
}

/// All topics, ordered by path (fetch replies and subscription notices come in path order),
/// with the bytes of the values they retain counted, so the tree can be bounded.
#[derive(Default)]
pub(crate) struct TopicStore {
    by_path: BTreeMap<String, Topic>,
    paths_by_id: HashMap<u64, String>,
    next_id: u64,
    value_bytes: usize,
}

/// A value that would take the tree's retained values past their byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the topic tree holds at most {limit} bytes of values ({used} in use; this value needs {needed})"
)]
pub(crate) struct TreeFull {
    /// Bytes retained now.
    pub used: usize,
    /// The new value's bytes.
    pub needed: usize,
    /// The limit.
    pub limit: usize,
}

/// The bytes a value occupies in the tree.
pub(crate) fn retained_len(value: Option<&TopicValue>) -> usize {
    value.map_or(0, |v| v.canonical().len())
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

    /// Every topic, in path order.
    pub fn iter(&self) -> impl Iterator<Item = &Topic> {
        self.by_path.values()
    }

    /// The topic at `path`.
    pub fn get(&self, path: &str) -> Option<&Topic> {
        self.by_path.get(path)
    }

    /// The topic at `path`, to change it.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Topic> {
        self.by_path.get_mut(path)
    }

    /// The topic with id `id`.
    pub fn get_by_id(&self, id: u64) -> Option<&Topic> {
        let path = self.paths_by_id.get(&id)?;
        self.by_path.get(path)
    }

    /// Bytes of the values the tree retains.
    pub fn value_bytes(&self) -> usize {
        self.value_bytes
    }

    /// Whether a value of `needed` bytes replacing one of `held` bytes fits under `limit`
    /// (a value no larger than the one it replaces always fits).
    pub fn check_room(&self, held: usize, needed: usize, limit: usize) -> Result<(), TreeFull> {
        if needed <= held || self.value_bytes - held + needed <= limit {
            Ok(())
        } else {
            Err(TreeFull {
                used: self.value_bytes,
                needed,
                limit,
            })
        }
    }

    /// Sets the value of the topic with id `id` (see [`Topic::update`]), keeping the byte
    /// count, or refuses it when the tree's values would pass `limit` bytes. Without
    /// `keep_tree` a JSON value's parsed tree is dropped (no view reads it). `Ok(None)`: no
    /// such topic, or the value is unchanged.
    pub fn update(
        &mut self,
        id: u64,
        value: Option<TopicValue>,
        limit: usize,
        keep_tree: bool,
    ) -> Result<Option<Arc<TopicUpdate>>, TreeFull> {
        let value = if keep_tree {
            value
        } else {
            value.map(TopicValue::without_tree)
        };
        let Some(path) = self.paths_by_id.get(&id) else {
            return Ok(None);
        };
        let Some(topic) = self.by_path.get_mut(path) else {
            return Ok(None);
        };
        let held = retained_len(topic.value());
        let needed = if topic.properties.dont_retain_value {
            0
        } else {
            retained_len(value.as_ref())
        };
        if needed > held && self.value_bytes - held + needed > limit {
            return Err(TreeFull {
                used: self.value_bytes,
                needed,
                limit,
            });
        }
        let update = topic.update(value);
        self.value_bytes = self.value_bytes - held + retained_len(topic.value());
        Ok(update)
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
        self.value_bytes -= retained_len(topic.value());
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
        self.select_after(selector, None)
    }

    /// The topics a selector selects whose path sorts after `after`, in path order: one page
    /// of a fetch starts where the previous one ended.
    pub fn select_after<'a>(
        &'a self,
        selector: &'a Selector,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Topic> + 'a {
        let prefix = selector.path_prefix();
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.by_path
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(move |(path, _)| path.starts_with(prefix))
            .filter(move |(path, _)| under_prefix(path, prefix) && selector.matches(path))
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

    fn v(t: TopicType, j: serde_json::Value) -> Option<TopicValue> {
        TopicValue::from_json(t, &j).unwrap()
    }

    #[test]
    fn equal_values_deliver_nothing() {
        let mut s = store(&["a"]);
        let t = s.get_mut("a").unwrap();
        let first = t.update(v(TopicType::Json, json!({"x":1}))).unwrap();
        assert_eq!(first.version, 1);
        assert!(first.delta_message.is_none(), "no previous value");
        assert!(t.update(v(TopicType::Json, json!({"x":1}))).is_none());
        assert_eq!(
            t.current().unwrap().value_message,
            Bytes::from_static(br#"{"i":1,"v":{"x":1}}"#)
        );
        let cleared = t.update(None).unwrap();
        assert_eq!(cleared.version, 2);
        assert!(t.value().is_none() && t.current().is_none());
    }

    fn big(n: u64) -> serde_json::Value {
        json!({"n": n, "pad": "p".repeat(300)})
    }

    #[test]
    fn small_changes_of_large_values_carry_a_delta() {
        let mut s = store(&["a"]);
        let t = s.get_mut("a").unwrap();
        t.update(v(TopicType::Json, big(1))).unwrap();
        let u = t.update(v(TopicType::Json, big(2))).unwrap();
        let message = u.delta_message.clone().unwrap();
        assert!(message.len() < u.value_message.len());
        let expected = serde_json::to_vec(&big(2)).unwrap();
        assert_eq!(u.value.as_deref(), Some(&expected[..]));
        assert_eq!(
            u.previous.as_deref(),
            Some(&serde_json::to_vec(&big(1)).unwrap()[..])
        );
        // The current value kept for new subscribers holds no delta.
        let current = t.current().unwrap();
        assert_eq!(current.version, 2);
        assert!(current.delta_message.is_none() && current.previous.is_none());
    }

    #[test]
    fn some_topics_never_send_deltas() {
        let cases = [
            (
                TopicType::Int64,
                TopicProperties::default(),
                json!(1),
                json!(2),
            ),
            (
                TopicType::String,
                TopicProperties::default(),
                json!("abcde"),
                json!("abcdf"),
            ),
            (
                TopicType::Json,
                TopicProperties {
                    publish_values_only: true,
                    ..TopicProperties::default()
                },
                big(1),
                big(2),
            ),
            (
                TopicType::Json,
                TopicProperties {
                    dont_retain_value: true,
                    ..TopicProperties::default()
                },
                big(1),
                big(2),
            ),
        ];
        for (ty, props, a, b) in cases {
            let mut s = TopicStore::default();
            let t = s.insert(TopicPath::parse("t").unwrap(), ty, props);
            t.update(v(ty, a)).unwrap();
            let u = t.update(v(ty, b)).unwrap();
            assert!(u.delta_message.is_none(), "{ty} {props:?}");
            assert_eq!(u.version, 2);
        }
    }

    #[test]
    fn pages_start_after_a_path() {
        let s = store(&["a/1", "a/2", "a/3", "ab", "b/1"]);
        let sel = Selector::parse("?a//").unwrap();
        let after = |a: Option<&str>| -> Vec<String> {
            s.select_after(&sel, a)
                .map(|t| t.path.as_str().to_owned())
                .collect()
        };
        assert_eq!(after(None), ["a/1", "a/2", "a/3"]);
        assert_eq!(after(Some("a/1")), ["a/2", "a/3"]);
        assert_eq!(after(Some("a/25")), ["a/3"]);
        assert!(after(Some("a/3")).is_empty());
        assert_eq!(after(Some("0")), ["a/1", "a/2", "a/3"]);
        assert!(after(Some("z")).is_empty());
    }

    #[test]
    fn value_bytes_are_counted_and_bounded() {
        let mut s = store(&["a", "b"]);
        let (a, b) = (s.get("a").unwrap().id, s.get("b").unwrap().id);
        let text = |n: usize| v(TopicType::Json, json!("x".repeat(n)));
        s.update(a, text(98), 250, false).unwrap();
        assert_eq!(s.value_bytes(), 100);
        s.update(b, text(98), 250, false).unwrap();
        assert_eq!(s.value_bytes(), 200);
        let err = s.update(b, text(198), 250, false).unwrap_err();
        assert_eq!((err.used, err.needed), (200, 200));
        assert_eq!(s.value_bytes(), 200, "a refused value changes nothing");
        // Shrinking always fits; removal gives the bytes back.
        s.update(b, text(8), 1, false).unwrap();
        assert_eq!(s.value_bytes(), 110);
        s.remove("a");
        assert_eq!(s.value_bytes(), 10);
        s.update(b, None, 0, false).unwrap();
        assert_eq!(s.value_bytes(), 0);
    }

    #[test]
    fn ids_are_unique_and_removable() {
        let mut s = store(&["a", "b"]);
        assert_eq!(s.get("b").unwrap().id, 2);
        assert!(s.get_by_id(1).is_some());
        s.remove("a").unwrap();
        assert!(s.get_by_id(1).is_none());
        assert_eq!(s.len(), 1);
    }
}
