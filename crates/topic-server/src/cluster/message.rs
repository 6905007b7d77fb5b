//! The messages nodes exchange through Redis: what a node proposes (the arguments of the
//! update script) and what Redis accepted (published on a partition's channel and kept in its
//! log), decoded back into changes for the engine.
//!
//! An accepted change is one JSON object: `s` (the partition's sequence number), `e` (the
//! epoch of its counter), `p` (the id of the partition's change before it), `i` (its own id)
//! and `t` (the topic's sequence number, 0 for removals and views) are put first by the
//! script, then the proposer's body:
//!
//! ```text
//! {"s":41,"e":"9f0c2a51d3b7e604","p":"1c0ffee0ddba11ad","i":"5eed2b1ac4a7f00d","t":7,"op":"set","node":"n1","path":"md/AAPL","type":"json","value":{"price":191.2}}
//! {"s":42,"e":"9f0c2a51d3b7e604","p":"5eed2b1ac4a7f00d","i":"77aa10fe0b3c9d21","t":1,"op":"add","node":"n1","path":"md/MSFT","type":"json","properties":{},"owner":"feed"}
//! {"s":43,"e":"9f0c2a51d3b7e604","p":"77aa10fe0b3c9d21","i":"0d15ea5e8badf00d","t":0,"op":"remove","node":"n2","paths":["md/MSFT","md/IBM"]}
//! {"s":9,"e":"51aa07c2e9d0f318","p":"3a9b","i":"c0de","t":0,"op":"view","node":"n1","name":"v","spec":"map ?md// to view/<path(1)>","creator":{"principal":"ops","roles":{"token":["ADMIN"]}}}
//! ```
//!
//! Values travel as the wire JSON clients receive (never re-encoded, so numbers keep their
//! exact value); `"cleared":true` sets "no value".

use std::collections::BTreeMap;
use std::sync::Arc;

use diffusion_core::view::ViewSpec;
use diffusion_core::{TopicPath, TopicProperties, TopicType};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::engine::{AddTopic, Proposal, Replicated, WireValue, value_from_wire};
use crate::security::{Identity, RoleSource};

/// Why an accepted message could not be applied (it is skipped, counted and logged).
#[derive(Debug, thiserror::Error)]
pub(crate) enum MessageError {
    /// Not the JSON this module writes.
    #[error("not a change message: {0}")]
    Json(#[from] serde_json::Error),
    /// A field the operation needs is missing or wrong.
    #[error("bad '{op}' message: {reason}")]
    Invalid { op: String, reason: String },
}

/// One change for the update script: the key it changes and the checks it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScriptCall {
    /// `add`, `set`, `remove`, `view` or `unview`.
    pub op: &'static str,
    /// The stream (partition, or the views) it belongs to.
    pub stream: usize,
    /// The topic path or view name (empty for `remove`, whose paths are in `spec`).
    pub name: String,
    /// `add`: the type and properties an existing topic must have; `view`: the definition;
    /// `remove`: the paths (a JSON array).
    pub spec: String,
    /// The value to store, when `mode` is `set`.
    pub value: Vec<u8>,
    /// `keep` (no value given), `set` or `clear`.
    pub mode: &'static str,
    /// Whether the topic keeps its value (else every set is delivered and nothing stored).
    pub retained: bool,
    /// The principal that adds the topic.
    pub owner: String,
    /// The message body after `{"s":…,"e":"…","p":"…","i":"…","t":…,`.
    pub body: String,
}

impl ScriptCall {
    /// A call that stores no value and checks no specification (a removal, or a view
    /// operation before its definition is set), for `name` in `stream`.
    fn plain(
        op: &'static str,
        stream: usize,
        name: &str,
        body: &Body<'_>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            op,
            stream,
            name: name.to_owned(),
            spec: String::new(),
            value: Vec::new(),
            mode: "keep",
            retained: true,
            owner: String::new(),
            body: body.finish()?,
        })
    }
}

/// How a view's creator is written down: enough to compute its grant on every node.
#[derive(Debug, Serialize, Deserialize)]
struct CreatorRecord {
    principal: Option<String>,
    roles: RolesRecord,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RolesRecord {
    Open,
    Anonymous,
    Principal,
    Token(Vec<String>),
}

impl CreatorRecord {
    fn of(identity: &Identity) -> Self {
        Self {
            principal: identity.principal.clone(),
            roles: match &identity.roles {
                RoleSource::Open => RolesRecord::Open,
                RoleSource::Anonymous => RolesRecord::Anonymous,
                RoleSource::Principal => RolesRecord::Principal,
                RoleSource::Token(roles) => RolesRecord::Token(roles.clone()),
            },
        }
    }

    fn identity(self) -> Identity {
        Identity {
            principal: self.principal,
            roles: match self.roles {
                RolesRecord::Open => RoleSource::Open,
                RolesRecord::Anonymous => RoleSource::Anonymous,
                RolesRecord::Principal => RoleSource::Principal,
                RolesRecord::Token(roles) => RoleSource::Token(roles),
            },
            // A view outlives its creator's token; its roles are what the token named.
            expires_at: None,
        }
    }
}

/// The body a node writes; `s` and `t` are added by the script.
#[derive(Serialize)]
struct Body<'a> {
    op: &'static str,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paths: Option<Vec<&'a str>>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    topic_type: Option<TopicType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cleared: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spec: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    creator: Option<CreatorRecord>,
}

impl<'a> Body<'a> {
    fn new(op: &'static str, node: &'a str) -> Self {
        Self {
            op,
            node,
            path: None,
            paths: None,
            topic_type: None,
            properties: None,
            owner: None,
            value: None,
            cleared: false,
            name: None,
            spec: None,
            creator: None,
        }
    }

    /// The JSON object without its opening brace (the script writes the numbers and ids
    /// first).
    fn finish(&self) -> Result<String, serde_json::Error> {
        let mut text = serde_json::to_string(self)?;
        text.remove(0);
        Ok(text)
    }
}

/// What an accepted message holds.
#[derive(Deserialize)]
struct Accepted<'a> {
    s: u64,
    op: String,
    path: Option<String>,
    paths: Option<Vec<String>>,
    #[serde(rename = "type")]
    topic_type: Option<TopicType>,
    properties: Option<BTreeMap<String, String>>,
    owner: Option<String>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    #[serde(default)]
    cleared: bool,
    name: Option<String>,
    spec: Option<String>,
    creator: Option<CreatorRecord>,
}

/// The type and properties of a topic as the script compares them: canonical JSON (the
/// properties' map is sorted), so equal specifications are equal strings.
pub(crate) fn topic_spec(topic_type: TopicType, properties: &TopicProperties) -> String {
    serde_json::json!({ "type": topic_type, "properties": properties.to_map() }).to_string()
}

/// Reads a spec written by [`topic_spec`].
pub(crate) fn parse_topic_spec(text: &[u8]) -> Result<(TopicType, TopicProperties), String> {
    #[derive(Deserialize)]
    struct Spec {
        #[serde(rename = "type")]
        topic_type: TopicType,
        properties: BTreeMap<String, String>,
    }
    let spec: Spec = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let properties = TopicProperties::from_map(&spec.properties).map_err(|e| e.to_string())?;
    Ok((spec.topic_type, properties))
}

/// A view's definition as stored in the views' hash.
pub(crate) fn view_definition(spec: &str, creator: Option<&Identity>) -> String {
    serde_json::json!({ "spec": spec, "creator": creator.map(CreatorRecord::of) }).to_string()
}

/// Reads a definition written by [`view_definition`]: the specification's text and creator.
pub(crate) fn parse_view_definition(
    text: &[u8],
) -> Result<(String, Option<Arc<Identity>>), String> {
    #[derive(Deserialize)]
    struct Definition {
        spec: String,
        creator: Option<CreatorRecord>,
    }
    let definition: Definition = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    Ok((
        definition.spec,
        definition.creator.map(|c| Arc::new(c.identity())),
    ))
}

/// The script calls that carry out `proposal` (a `remove` of several topics is one per
/// topic), proposed by node `node`.
pub(crate) fn script_calls(
    proposal: &Proposal,
    node: &str,
) -> Result<Vec<ScriptCall>, serde_json::Error> {
    use super::keys::{VIEWS, partition_of};
    let raw = |value: &WireValue| match value {
        WireValue::To(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| RawValue::from_string(text.to_owned()).ok()),
        WireValue::Cleared => None,
    };
    let stored = |value: Option<&WireValue>| match value {
        Some(WireValue::To(bytes)) => (bytes.to_vec(), "set"),
        Some(WireValue::Cleared) => (Vec::new(), "clear"),
        None => (Vec::new(), "keep"),
    };
    Ok(match proposal {
        Proposal::Add {
            path,
            topic_type,
            properties,
            value,
            owner,
        } => {
            let value_raw = value.as_ref().and_then(raw);
            let mut body = Body::new("add", node);
            body.path = Some(path);
            body.topic_type = Some(*topic_type);
            body.properties = Some(properties.to_map());
            body.owner = owner.as_deref();
            body.value = value_raw.as_deref();
            body.cleared = matches!(value, Some(WireValue::Cleared));
            let (stored_value, mode) = stored(value.as_ref());
            vec![ScriptCall {
                op: "add",
                stream: partition_of(path),
                name: path.clone(),
                spec: topic_spec(*topic_type, properties),
                value: stored_value,
                mode,
                retained: !properties.dont_retain_value,
                owner: owner.clone().unwrap_or_default(),
                body: body.finish()?,
            }]
        }
        Proposal::Set {
            path,
            topic_type,
            properties,
            value,
            retained,
        } => {
            let value_raw = raw(value);
            let mut body = Body::new("set", node);
            body.path = Some(path);
            body.topic_type = Some(*topic_type);
            body.value = value_raw.as_deref();
            body.cleared = matches!(value, WireValue::Cleared);
            let (stored_value, mode) = stored(Some(value));
            vec![ScriptCall {
                op: "set",
                stream: partition_of(path),
                name: path.clone(),
                spec: topic_spec(*topic_type, properties),
                value: stored_value,
                mode,
                retained: *retained,
                owner: String::new(),
                body: body.finish()?,
            }]
        }
        Proposal::Remove { paths } => {
            // One call per partition: its topics go in one atomic step.
            let mut by_partition: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
            for path in paths {
                by_partition
                    .entry(partition_of(path))
                    .or_default()
                    .push(path);
            }
            by_partition
                .into_iter()
                .map(|(partition, paths)| {
                    let mut body = Body::new("remove", node);
                    body.paths = Some(paths.clone());
                    let mut call = ScriptCall::plain("remove", partition, "", &body)?;
                    call.spec = serde_json::to_string(&paths)?;
                    Ok(call)
                })
                .collect::<Result<_, serde_json::Error>>()?
        }
        Proposal::CreateView {
            name,
            spec,
            creator,
        } => {
            let mut body = Body::new("view", node);
            body.name = Some(name);
            body.spec = Some(spec);
            body.creator = creator.as_deref().map(CreatorRecord::of);
            let mut call = ScriptCall::plain("view", VIEWS, name, &body)?;
            call.spec = view_definition(spec, creator.as_deref());
            vec![call]
        }
        Proposal::RemoveView { name } => {
            let mut body = Body::new("unview", node);
            body.name = Some(name);
            vec![ScriptCall::plain("unview", VIEWS, name, &body)?]
        }
    })
}

/// The partition sequence number of an accepted message, and the change it carries.
pub(crate) fn decode(message: &[u8]) -> Result<(u64, Replicated), MessageError> {
    let accepted: Accepted<'_> = serde_json::from_slice(message)?;
    let op = accepted.op.clone();
    let invalid = |reason: &str| MessageError::Invalid {
        op: op.clone(),
        reason: reason.to_owned(),
    };
    let path = || {
        let text = accepted.path.as_deref().ok_or_else(|| invalid("no path"))?;
        TopicPath::parse(text).map_err(|e| invalid(&e.to_string()))
    };
    let value = |topic_type: TopicType| -> Result<_, MessageError> {
        match (accepted.value, accepted.cleared) {
            (Some(raw), _) => value_from_wire(topic_type, raw.get().as_bytes())
                .map(Some)
                .map_err(|e| invalid(&e)),
            (None, true) => Ok(Some(None)),
            (None, false) => Ok(None),
        }
    };
    let change = match accepted.op.as_str() {
        "add" => {
            let topic_type = accepted.topic_type.ok_or_else(|| invalid("no type"))?;
            let properties =
                TopicProperties::from_map(&accepted.properties.clone().unwrap_or_default())
                    .map_err(|e| invalid(&e.to_string()))?;
            Replicated::Add(AddTopic {
                path: path()?,
                topic_type,
                properties,
                value: value(topic_type)?,
                owner: accepted.owner.as_deref().map(Arc::from),
            })
        }
        "set" => {
            let topic_type = accepted.topic_type.ok_or_else(|| invalid("no type"))?;
            Replicated::Set {
                path: path()?,
                topic_type,
                value: value(topic_type)?.flatten(),
            }
        }
        "remove" => Replicated::Remove {
            paths: accepted.paths.clone().ok_or_else(|| invalid("no paths"))?,
        },
        "view" => {
            let name = accepted.name.clone().ok_or_else(|| invalid("no name"))?;
            let text = accepted.spec.as_deref().ok_or_else(|| invalid("no spec"))?;
            let spec = ViewSpec::parse(text).map_err(|e| invalid(&e.to_string()))?;
            Replicated::CreateView {
                name,
                spec: Arc::new(spec),
                creator: accepted.creator.map(|c| Arc::new(c.identity())),
            }
        }
        "unview" => Replicated::RemoveView {
            name: accepted.name.clone().ok_or_else(|| invalid("no name"))?,
        },
        _ => return Err(invalid("unknown operation")),
    };
    Ok((accepted.s, change))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the update script makes of a call: its numbers, then the body.
    fn accepted(call: &ScriptCall, seq: u64) -> Vec<u8> {
        format!(
            "{{\"s\":{seq},\"e\":\"00ff\",\"p\":\"aa\",\"i\":\"bb\",\"t\":1,{}",
            call.body
        )
        .into_bytes()
    }

    fn properties() -> TopicProperties {
        TopicProperties::from_map(&BTreeMap::from([(
            "CONFLATION".to_owned(),
            "off".to_owned(),
        )]))
        .unwrap()
    }

    #[test]
    fn proposals_come_back_as_the_same_changes() {
        let wire = br#"{"n":123456789012345678901234,"price":97123.45678901234}"#;
        let add = Proposal::Add {
            path: "md/X".to_owned(),
            topic_type: TopicType::Json,
            properties: properties(),
            value: Some(WireValue::To(bytes::Bytes::from_static(wire))),
            owner: Some("feed".to_owned()),
        };
        let calls = script_calls(&add, "n1").unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].op, calls[0].mode), ("add", "set"));
        assert_eq!(calls[0].value, wire, "stored as sent");
        assert_eq!(calls[0].spec, topic_spec(TopicType::Json, &properties()));
        let (seq, change) = decode(&accepted(&calls[0], 7)).unwrap();
        assert_eq!(seq, 7);
        let Replicated::Add(add) = change else {
            panic!("{change:?}")
        };
        assert_eq!(add.path.as_str(), "md/X");
        assert_eq!(add.properties, properties());
        assert_eq!(add.owner.as_deref(), Some("feed"));
        let value = add.value.flatten().unwrap();
        assert_eq!(
            &value.wire_json()[..],
            wire,
            "numbers keep their exact value"
        );

        let cleared = Proposal::Set {
            path: "md/X".to_owned(),
            topic_type: TopicType::Json,
            properties: properties(),
            value: WireValue::Cleared,
            retained: true,
        };
        let calls = script_calls(&cleared, "n1").unwrap();
        assert_eq!(calls[0].mode, "clear");
        let (_, change) = decode(&accepted(&calls[0], 8)).unwrap();
        assert!(
            matches!(change, Replicated::Set { value: None, .. }),
            "{change:?}"
        );

        let paths: Vec<String> = (0..40).map(|i| format!("r/{i}")).collect();
        let remove = Proposal::Remove {
            paths: paths.clone(),
        };
        let calls = script_calls(&remove, "n1").unwrap();
        assert!(calls.len() <= 16, "one call per partition");
        let mut removed = Vec::new();
        for call in &calls {
            let listed: Vec<String> = serde_json::from_str(&call.spec).unwrap();
            assert!(
                listed
                    .iter()
                    .all(|p| super::super::keys::partition_of(p) == call.stream)
            );
            let (_, change) = decode(&accepted(call, 3)).unwrap();
            let Replicated::Remove { paths } = change else {
                panic!("{change:?}")
            };
            assert_eq!(paths, listed);
            removed.extend(paths);
        }
        removed.sort();
        let mut expected = paths;
        expected.sort();
        assert_eq!(removed, expected);

        let creator = Identity {
            principal: Some("ops".to_owned()),
            roles: RoleSource::Token(vec!["ADMIN".to_owned()]),
            expires_at: None,
        };
        let view = Proposal::CreateView {
            name: "v".to_owned(),
            spec: "map ?md// to view/<path(1)>".to_owned(),
            creator: Some(Arc::new(creator.clone())),
        };
        let calls = script_calls(&view, "n1").unwrap();
        assert_eq!(calls[0].stream, super::super::keys::VIEWS);
        let (_, change) = decode(&accepted(&calls[0], 1)).unwrap();
        let Replicated::CreateView {
            name,
            spec,
            creator: got,
        } = change
        else {
            panic!("{change:?}")
        };
        assert_eq!(
            (name.as_str(), spec.as_str()),
            ("v", "map ?md// to view/<path(1)>")
        );
        assert_eq!(got.as_deref(), Some(&creator));
        let (text, stored) = parse_view_definition(calls[0].spec.as_bytes()).unwrap();
        assert_eq!(
            (text.as_str(), stored.as_deref()),
            ("map ?md// to view/<path(1)>", Some(&creator))
        );
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        assert!(decode(b"not json").is_err());
        let error = decode(br#"{"s":1,"e":"0","t":1,"op":"set","path":"a"}"#).unwrap_err();
        assert!(error.to_string().contains("no type"), "{error}");
        let error = decode(br#"{"s":1,"e":"0","t":1,"op":"explode"}"#).unwrap_err();
        assert!(error.to_string().contains("unknown operation"), "{error}");
        let error =
            decode(br#"{"s":1,"e":"0","t":1,"op":"view","name":"v","spec":"map ("}"#).unwrap_err();
        assert!(error.to_string().contains("bad 'view' message"), "{error}");
    }
}
