//! The engine's side of cluster mode (see [`crate::cluster`]).
//!
//! In a cluster no node changes its tree when a session asks: the node checks the request
//! exactly as it would alone ([`Engine::propose`]: permission, parsing, types, quotas and
//! limits, all against its copy of the shared tree) and hands the resulting [`Proposal`] to the
//! cluster, which has Redis accept it atomically and in order. Every node, the proposer
//! included, then applies what Redis accepted ([`Engine::apply_replicated`]) through the same
//! ordered update path a single node uses for its own requests, so all nodes fan out the same
//! changes in the same order.

use std::sync::Arc;

use bytes::Bytes;
use diffusion_core::protocol::ClientMessage;
use diffusion_core::view::ViewSpec;
use diffusion_core::{TopicPath, TopicProperties, TopicType, TopicValue};

use super::{AddTopic, Caller, Engine, Limits, Op, OpError, parse_add, parse_selector};
use crate::security::Identity;

/// A value change as it travels between nodes: wire JSON, or the value "none".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireValue {
    /// The topic takes no value.
    Cleared,
    /// The topic takes this value (its wire JSON, exactly as clients receive it).
    To(Bytes),
}

impl WireValue {
    fn of(value: Option<&TopicValue>) -> Self {
        value.map_or(Self::Cleared, |v| Self::To(v.wire_json()))
    }
}

/// A change a session asked for, checked by this node, for the cluster's Redis to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Proposal {
    /// Create a topic (or set the value of an identical one).
    Add {
        path: String,
        topic_type: TopicType,
        properties: TopicProperties,
        /// `None`: no value given.
        value: Option<WireValue>,
        /// The principal adding it, counted against its topic quota on every node.
        owner: Option<String>,
    },
    /// Set a topic's value.
    Set {
        path: String,
        /// The topic's type, so every node decodes the value before it takes the lock.
        topic_type: TopicType,
        /// Its properties: with the type, what the value was checked against (a topic replaced
        /// meanwhile by another kind refuses it).
        properties: TopicProperties,
        value: WireValue,
        /// Whether the topic keeps its value (`DONT_RETAIN_VALUE` topics deliver every set).
        retained: bool,
    },
    /// Remove these normal topics.
    Remove { paths: Vec<String> },
    /// Create or replace a view.
    CreateView {
        name: String,
        spec: String,
        /// Whose permissions the view runs with (`None`: the server's own, every permission).
        creator: Option<Arc<Identity>>,
    },
    /// Remove a view.
    RemoveView { name: String },
}

/// A change the cluster's Redis accepted, decoded and ready to apply, in the order it was
/// accepted.
#[derive(Debug)]
pub(crate) enum Replicated {
    /// A topic added (or an identical topic's value set).
    Add(AddTopic),
    /// A topic's value set.
    Set {
        path: TopicPath,
        topic_type: TopicType,
        value: Option<TopicValue>,
    },
    /// Normal topics removed.
    Remove { paths: Vec<String> },
    /// A view created or replaced.
    CreateView {
        name: String,
        spec: Arc<ViewSpec>,
        creator: Option<Arc<Identity>>,
    },
    /// A view removed.
    RemoveView { name: String },
}

/// Decodes a topic's value from its wire JSON (as [`WireValue::To`] carries it).
pub(crate) fn value_from_wire(
    topic_type: TopicType,
    wire: &[u8],
) -> Result<Option<TopicValue>, String> {
    let json: serde_json::Value = serde_json::from_slice(wire).map_err(|e| e.to_string())?;
    let value = TopicValue::from_json(topic_type, &json).map_err(|e| e.to_string())?;
    Ok(match (value, topic_type) {
        // A JSON value keeps the tree just parsed: nothing parses it again.
        (Some(v), TopicType::Json) => Some(v.with_tree(Arc::new(json))),
        (value, _) => value,
    })
}

impl Engine {
    /// Checks a request that changes the shared tree, as [`Engine::add`], [`Engine::set`],
    /// [`Engine::remove`], [`Engine::create_view`] and [`Engine::remove_view`] would, without
    /// changing anything. `Ok(None)`: nothing to propose (a `remove` that selects nothing).
    /// Other requests are not proposals: this refuses them.
    pub fn propose(
        &self,
        caller: Caller,
        request: &ClientMessage,
    ) -> Result<Option<Proposal>, OpError> {
        match request {
            ClientMessage::Add {
                path,
                topic_type,
                properties,
                value,
                ..
            } => {
                let (path, properties, value) =
                    parse_add(path, *topic_type, properties, value.clone())?;
                let tree = self.lock();
                let owner = self.check_add(
                    &tree,
                    caller,
                    &path,
                    *topic_type,
                    &properties,
                    value.as_ref(),
                )?;
                Ok(Some(Proposal::Add {
                    path: path.as_str().to_owned(),
                    topic_type: *topic_type,
                    properties,
                    value: value.as_ref().map(|v| WireValue::of(v.as_ref())),
                    owner: owner.map(|o| o.to_string()),
                }))
            }
            ClientMessage::Set { path, value, .. } => {
                let checked = self.check_set(caller, path, value.clone())?;
                let tree = self.lock();
                let topic = tree
                    .topics
                    .get_by_id(checked.id)
                    .ok_or_else(|| super::no_such_topic(checked.path.as_str()))?;
                let (retained, topic_type, properties) = (
                    !topic.properties.dont_retain_value,
                    topic.topic_type,
                    topic.properties,
                );
                let held = super::retained_len(topic.value());
                let needed = super::retained_len(checked.value.as_ref());
                tree.topics
                    .check_room(held, needed, self.limits.max_tree_bytes)
                    .map_err(|e| {
                        self.metrics.limit_refused("tree_bytes");
                        OpError::limit(e.to_string())
                    })?;
                Ok(Some(Proposal::Set {
                    path: checked.path.as_str().to_owned(),
                    topic_type,
                    properties,
                    value: WireValue::of(checked.value.as_ref()),
                    retained,
                }))
            }
            ClientMessage::Remove { selector, .. } => {
                let selector = parse_selector(selector)?;
                let tree = self.lock();
                let paths = self.check_remove(&tree, caller, &selector)?;
                Ok((!paths.is_empty()).then_some(Proposal::Remove { paths }))
            }
            ClientMessage::CreateView { name, spec, .. } => {
                // Parsed here so a bad specification is refused before Redis sees it; every
                // node parses the accepted text again.
                self.parse_view_spec(caller, spec)?;
                let tree = self.lock();
                let access = self.check_view(&tree, caller, name)?;
                let creator = match caller {
                    Caller::Server => None,
                    Caller::Session(_) => Some(access.identity),
                };
                Ok(Some(Proposal::CreateView {
                    name: name.clone(),
                    spec: spec.clone(),
                    creator,
                }))
            }
            ClientMessage::RemoveView { name, .. } => {
                let tree = self.lock();
                self.check_remove_view(&tree, caller, name)?;
                Ok(Some(Proposal::RemoveView { name: name.clone() }))
            }
            _ => Err(OpError::new(
                diffusion_core::protocol::ErrorCode::Internal,
                "not a change to the shared tree",
            )),
        }
    }

    /// Applies a change the cluster's Redis accepted, whatever this node's limits say (the
    /// proposing node checked them; every node must hold the same tree).
    pub fn apply_replicated(&self, change: Replicated) {
        let mut tree = self.lock();
        let mut op = Op::default();
        match change {
            Replicated::Add(add) => {
                let path = add.path.as_str().to_owned();
                if let Err(error) = self.apply_add(&mut tree, add, Limits::Ignore, &mut op) {
                    tracing::warn!(path, error = %error.message, "replicated add not applied");
                }
            }
            Replicated::Set {
                path,
                topic_type,
                value,
            } => {
                let held = tree.topics.get(path.as_str()).map(|t| t.topic_type);
                if held != Some(topic_type) {
                    tracing::warn!(path = %path, "replicated set for a topic this node holds with another type (or not at all): skipped");
                } else if let Err(error) =
                    self.apply_set(&mut tree, &path, value, Limits::Ignore, &mut op)
                {
                    tracing::warn!(path = %path, error = %error.message, "replicated set not applied");
                }
            }
            Replicated::Remove { paths } => {
                for path in paths {
                    self.apply_remove(&mut tree, &path, &mut op);
                }
            }
            Replicated::CreateView {
                name,
                spec,
                creator,
            } => {
                let access = match creator {
                    Some(identity) => self.access_for(identity),
                    None => self.open_access.clone(),
                };
                self.apply_view(&mut tree, &name, spec, access);
            }
            Replicated::RemoveView { name } => {
                self.apply_remove_view(&mut tree, &name);
            }
        }
        self.finish(&mut tree, op);
    }

    /// The paths of the normal topics for which `keep` holds (a reload compares them with
    /// what Redis holds).
    pub fn normal_topics_where(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let tree = self.lock();
        tree.topics
            .iter()
            .filter(|t| t.reference.is_none() && keep(t.path.as_str()))
            .map(|t| t.path.as_str().to_owned())
            .collect()
    }

    /// The names and specification texts of the views installed now.
    pub fn view_specs(&self) -> Vec<(String, String)> {
        let tree = self.lock();
        tree.views
            .views()
            .map(|v| (v.name.clone(), v.spec.as_str().to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every topic type's value survives the trip through its wire JSON exactly.
    #[test]
    fn values_cross_the_wire_unchanged() {
        let cases = [
            (
                TopicType::Json,
                json!({"price": 97_123.456_789_012_34, "n": 18_446_744_073_709_551_615_u64, "s": "é"}),
            ),
            (TopicType::String, json!("hello \"world\"")),
            (TopicType::Int64, json!(-9_223_372_036_854_775_808_i64)),
            (TopicType::Double, json!(0.1_f64 + 0.2_f64)),
            (TopicType::Binary, json!("AAEC/w==")),
        ];
        for (topic_type, raw) in cases {
            let value = TopicValue::from_json(topic_type, &raw).unwrap().unwrap();
            let wire = value.wire_json();
            let back = value_from_wire(topic_type, &wire).unwrap().unwrap();
            assert_eq!(back.wire_json(), wire, "{topic_type}");
        }
    }
}
