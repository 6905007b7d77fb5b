//! The topic-server wire protocol, versions 2 and 1 (written down in docs/protocol.md).
//!
//! Every message is one compact JSON object. Clients send one message per WebSocket text frame.
//! The server may pack several messages into one text frame, separated by `\n` (compact JSON
//! never contains a raw newline), so a subscriber with a backlog pays the per-frame cost once for
//! many messages. Version 2 adds a per-session sequence number `s` to every server message after
//! `connected` (except `heartbeat`), heartbeats with `ack`, session recovery and distinct error
//! codes for undecodable requests.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::topic::TopicType;

/// The newest protocol version: sequence numbers, heartbeats, recovery.
pub const PROTOCOL_VERSION: u32 = 2;

/// The first protocol version, still served to clients that offer only it (docs/protocol.md
/// §14 says until when).
pub const PROTOCOL_VERSION_1: u32 = 1;

/// Every version this crate speaks, newest first: what a client offers and a server accepts.
pub const SUPPORTED_VERSIONS: &[u32] = &[PROTOCOL_VERSION, PROTOCOL_VERSION_1];

/// Most versions a `connect` may offer (the list is client input: keep it small).
pub const MAX_OFFERED_VERSIONS: usize = 16;

/// What a reconnecting client presents to take its session back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The `token` its session's `connected` carried.
    pub token: String,
    /// The sequence number of the last message it processed (0: none).
    pub s: u64,
}

/// The server's limits, told to a version-2 client in `connected` so it can size itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionLimits {
    /// Largest client message the server reads.
    pub max_message_bytes: u64,
    /// Bytes the session's outbound queue may hold before the session is closed.
    pub queue_limit_bytes: u64,
    /// The server sends `heartbeat` this often.
    pub heartbeat_interval_ms: u64,
    /// Silence past interval + timeout means the other side is gone.
    pub heartbeat_timeout_ms: u64,
    /// How long a disconnected session waits to be resumed (0: recovery is off).
    pub reconnect_window_ms: u64,
}

/// Separates messages packed into one server frame.
pub const MESSAGE_SEPARATOR: u8 = b'\n';

/// A request from a client. `cid` is the client's correlation id, echoed in the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    /// First message on every connection.
    Connect {
        /// The one protocol version a version-1 client speaks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        /// The versions the client speaks (version 2 and later); the server picks the highest
        /// it shares.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        versions: Option<Vec<u32>>,
        /// Take back a disconnected session instead of starting a new one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Resume>,
        /// Who the client claims to be; absent for an anonymous session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
        /// The password proving it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<String>,
        /// A signed token (JWT) naming the principal and its roles, instead of `principal`
        /// and `credentials`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Create a topic (optionally with an initial value).
    Add {
        /// Correlation id.
        cid: u64,
        /// The new topic's path.
        path: String,
        /// Its type.
        #[serde(rename = "topicType")]
        topic_type: TopicType,
        /// Its properties, in string form.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        properties: BTreeMap<String, String>,
        /// An initial value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
    /// Set a topic's value.
    Set {
        /// Correlation id.
        cid: u64,
        /// The topic's path.
        path: String,
        /// The new value, in the type's wire form.
        value: Value,
    },
    /// Subscribe to every topic the selector selects, now and later.
    Subscribe {
        /// Correlation id.
        cid: u64,
        /// A topic selector.
        selector: String,
    },
    /// Withdraw a subscription made with exactly this selector.
    Unsubscribe {
        /// Correlation id.
        cid: u64,
        /// The selector as given to `subscribe`.
        selector: String,
    },
    /// Read the current values of the selected topics without subscribing. Replies come in
    /// pages: a `fetched` reply with `more: true` is continued by fetching again with `after`
    /// set to the last path received.
    Fetch {
        /// Correlation id.
        cid: u64,
        /// A topic selector.
        selector: String,
        /// Only topics whose path sorts after this one (the last path of the previous page).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// At most this many topics in the reply (the server may send fewer, and never more
        /// than its own page limits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Remove every topic the selector selects.
    Remove {
        /// Correlation id.
        cid: u64,
        /// A topic selector.
        selector: String,
    },
    /// Create the named topic view, or replace its specification (keeping its precedence).
    #[serde(rename = "createview")]
    CreateView {
        /// Correlation id.
        cid: u64,
        /// The view's name.
        name: String,
        /// The view specification (docs/views.md).
        spec: String,
    },
    /// Remove the named topic view and its reference topics.
    #[serde(rename = "removeview")]
    RemoveView {
        /// Correlation id.
        cid: u64,
        /// The view's name.
        name: String,
    },
    /// List the topic views, in precedence order; answered with `views`.
    #[serde(rename = "listviews")]
    ListViews {
        /// Correlation id.
        cid: u64,
    },
    /// Liveness check; answered with `pong`.
    Ping {
        /// Correlation id.
        cid: u64,
    },
    /// (v2) Every message up to sequence number `s` has been processed: the server may forget
    /// them. The answer to `heartbeat`; also sent unprompted. Not answered.
    Ack {
        /// The last sequence number processed.
        s: u64,
    },
}

/// How a client proves who it is in `connect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No principal: the session gets the security store's anonymous roles.
    #[default]
    Anonymous,
    /// A principal and its password.
    Password {
        /// The principal's name.
        principal: String,
        /// Its password (sent as is: use `wss://` beyond loopback).
        password: String,
    },
    /// A signed token (JWT) whose `sub` is the principal.
    Token(String),
}

impl ClientMessage {
    /// A version-2 `connect` offering every version this crate speaks.
    pub fn connect_v2(credentials: &Credentials, resume: Option<Resume>) -> Self {
        let (principal, password, token) = match credentials {
            Credentials::Anonymous => (None, None, None),
            Credentials::Password {
                principal,
                password,
            } => (Some(principal.clone()), Some(password.clone()), None),
            Credentials::Token(token) => (None, None, Some(token.clone())),
        };
        Self::Connect {
            version: None,
            versions: Some(SUPPORTED_VERSIONS.to_vec()),
            resume,
            principal,
            credentials: password,
            token,
        }
    }
}

/// The version a server speaking `supported` picks for a client offering `version` (v1 form)
/// or `versions`: the highest common one.
pub fn negotiate_version(
    version: Option<u32>,
    versions: Option<&[u32]>,
    supported: &[u32],
) -> Option<u32> {
    let offered: &[u32] = match (versions, &version) {
        (Some(list), _) => list,
        (None, Some(v)) => std::slice::from_ref(v),
        (None, None) => &[],
    };
    offered
        .iter()
        .take(MAX_OFFERED_VERSIONS)
        .filter(|v| supported.contains(v))
        .max()
        .copied()
}

impl ClientMessage {
    /// The correlation id, for messages that have one.
    pub fn cid(&self) -> Option<u64> {
        match self {
            Self::Connect { .. } => None,
            Self::Add { cid, .. }
            | Self::Set { cid, .. }
            | Self::Subscribe { cid, .. }
            | Self::Unsubscribe { cid, .. }
            | Self::Fetch { cid, .. }
            | Self::Remove { cid, .. }
            | Self::CreateView { cid, .. }
            | Self::RemoveView { cid, .. }
            | Self::ListViews { cid }
            | Self::Ping { cid } => Some(*cid),
            Self::Ack { .. } => None,
        }
    }

    /// Whether this request changes the topic tree or its views (`add`, `set`, `remove`,
    /// `createview`, `removeview`): what a cluster of servers must agree on.
    pub fn changes_tree(&self) -> bool {
        matches!(
            self,
            Self::Add { .. }
                | Self::Set { .. }
                | Self::Remove { .. }
                | Self::CreateView { .. }
                | Self::RemoveView { .. }
        )
    }
}

/// Error codes carried by `error` messages; stable strings that clients can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// (v1 only) Not JSON, or JSON of the wrong shape; version 2 says which with the four
    /// codes below.
    MalformedMessage,
    /// (v2) The frame is not JSON.
    NotJson,
    /// (v2) A required field (or `type`) is missing.
    MissingField,
    /// (v2) A field has the wrong type or a value out of its range.
    InvalidField,
    /// (v2) A binary frame: the protocol is JSON in text frames.
    BinaryFrame,
    /// A `type` the server does not know.
    UnknownOperation,
    /// A message other than `connect` before the handshake, or a second `connect`.
    HandshakeRequired,
    /// The client's protocol version is not supported.
    UnsupportedVersion,
    /// Credentials refused.
    AuthenticationFailed,
    /// Not permitted for this session.
    PermissionDenied,
    /// Bad topic path.
    InvalidPath,
    /// Bad topic selector.
    InvalidSelector,
    /// Bad topic properties.
    InvalidProperties,
    /// A topic already exists at that path (with a different type or properties).
    TopicExists,
    /// No topic at that path.
    NoSuchTopic,
    /// The value does not fit the topic's type.
    InvalidValue,
    /// A frame larger than the server accepts.
    MessageTooLarge,
    /// The topic is a reference topic of a view: it cannot be set or removed directly.
    ReadOnlyTopic,
    /// A view specification that does not parse (the message has `line:column` and a caret).
    InvalidView,
    /// No view with that name.
    NoSuchView,
    /// A configured limit would be passed (topics, views, selectors, results…); the message
    /// names the limit. Retrying the same request will fail the same way.
    LimitExceeded,
    /// The session sent requests faster than the server's per-session rate; the request was
    /// not carried out. Retry after a pause.
    RateLimited,
    /// A change could not be carried out because what the server shares it through (a
    /// cluster's Redis) did not answer in time; nothing is known to have changed. Retry later.
    Unavailable,
    /// Something failed inside the server; the details are in its log, never in the message.
    Internal,
}

/// One topic in a `fetched` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedTopic {
    /// The topic's path.
    pub path: String,
    /// Its type.
    #[serde(rename = "topicType")]
    pub topic_type: TopicType,
    /// Its current value, absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// One view in a `views` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewInfo {
    /// The view's name.
    pub name: String,
    /// Its specification, as given.
    pub spec: String,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// The handshake succeeded.
    Connected {
        /// Protocol version in use.
        version: u32,
        /// The session's id (for logs and support).
        session: String,
        /// (v2) The secret that resumes this session after a disconnection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// (v2, after a `resume`) Whether the old session was taken back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// (v2, when `recovered` is false) Why not: `unknown_session`, `gap` or `bad_sequence`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// (v2) The server's limits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limits: Option<SessionLimits>,
    },
    /// (v2) The server is alive; answer with `ack`. Carries no sequence number.
    Heartbeat,
    /// A request succeeded.
    Ok {
        /// Correlation id of the request.
        cid: u64,
    },
    /// A request failed; `cid` is absent when the request could not even be read.
    Error {
        /// Correlation id of the request, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<u64>,
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// The session is now subscribed to a topic; later messages name it by `id`.
    Subscribed {
        /// Server-wide topic id, valid while the topic exists.
        id: u64,
        /// The topic's path.
        path: String,
        /// Its type.
        #[serde(rename = "topicType")]
        topic_type: TopicType,
        /// Its properties in string form.
        properties: BTreeMap<String, String>,
    },
    /// A topic's full value.
    Value {
        /// Topic id from `subscribed`.
        id: u64,
        /// The value in the type's wire form (`null`: the topic has no value).
        value: Value,
    },
    /// A change to a topic's value: a fossil delta (base64) from the value the session holds to
    /// the new one, computed over canonical bytes. Sent instead of `value` when smaller.
    Delta {
        /// Topic id from `subscribed`.
        id: u64,
        /// Base64 of the fossil-format delta.
        delta: String,
    },
    /// The session is no longer subscribed to a topic.
    Unsubscribed {
        /// Topic id from `subscribed`.
        id: u64,
        /// The topic's path.
        path: String,
        /// Why: `removed`, `unsubscribed`, `back_pressure`, …
        reason: String,
    },
    /// Reply to `fetch`: one page of the selected topics.
    Fetched {
        /// Correlation id of the request.
        cid: u64,
        /// The selected topics, in path order.
        topics: Vec<FetchedTopic>,
        /// More topics follow: fetch again with `after` = the last path of this page.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// Reply to `listviews`, in precedence order.
    Views {
        /// Correlation id of the request.
        cid: u64,
        /// The views.
        views: Vec<ViewInfo>,
    },
    /// Reply to `ping`.
    Pong {
        /// Correlation id of the request.
        cid: u64,
    },
}

/// Why a frame could not be read as a client message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but no string `type` field.
    #[error("message has no string 'type' field")]
    MissingType,
    /// A `type` that is not part of the protocol.
    #[error("unknown operation '{0}'")]
    UnknownOperation(String),
    /// A known `type` without a field it needs.
    #[error("malformed '{operation}' message: {reason}")]
    MissingField {
        /// The message type.
        operation: String,
        /// What serde found missing.
        reason: String,
    },
    /// A known `type` with an ill-typed or out-of-range field.
    #[error("malformed '{operation}' message: {reason}")]
    InvalidField {
        /// The message type.
        operation: String,
        /// What serde found wrong.
        reason: String,
    },
}

impl DecodeError {
    /// The error code to report for this failure to a session speaking `version`.
    pub fn code(&self, version: u32) -> ErrorCode {
        match (self, version >= PROTOCOL_VERSION) {
            (Self::UnknownOperation(_), _) => ErrorCode::UnknownOperation,
            (_, false) => ErrorCode::MalformedMessage,
            (Self::NotJson(_), true) => ErrorCode::NotJson,
            (Self::MissingType | Self::MissingField { .. }, true) => ErrorCode::MissingField,
            (Self::InvalidField { .. }, true) => ErrorCode::InvalidField,
        }
    }
}

const CLIENT_OPERATIONS: &[&str] = &[
    "connect",
    "add",
    "set",
    "subscribe",
    "unsubscribe",
    "fetch",
    "remove",
    "createview",
    "removeview",
    "listviews",
    "ping",
    "ack",
];

/// Reads one client message, telling apart "not JSON", "unknown operation" and "bad fields".
/// Also returns the `cid` when one could be read, so even a bad request gets a correlated error.
pub fn decode_client_message(text: &str) -> Result<ClientMessage, (Option<u64>, DecodeError)> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| (None, DecodeError::NotJson(e.to_string())))?;
    let cid = value.get("cid").and_then(Value::as_u64);
    let Some(op) = value.get("type").and_then(Value::as_str) else {
        return Err((cid, DecodeError::MissingType));
    };
    if !CLIENT_OPERATIONS.contains(&op) {
        return Err((cid, DecodeError::UnknownOperation(op.to_owned())));
    }
    let op = op.to_owned();
    // serde's internally tagged enums buffer fields in a form that cannot hold numbers past
    // 64 bits exactly, so the one free-form field, `value`, is kept aside and put back.
    let mut value = value;
    let payload = value
        .as_object_mut()
        .and_then(|fields| fields.get_mut("value"))
        .map(Value::take);
    let mut message: ClientMessage = serde_json::from_value(value).map_err(|e| {
        let reason = e.to_string();
        let error = if reason.starts_with("missing field") {
            DecodeError::MissingField {
                operation: op.clone(),
                reason,
            }
        } else {
            DecodeError::InvalidField {
                operation: op.clone(),
                reason,
            }
        };
        (cid, error)
    })?;
    if let ClientMessage::Connect {
        versions: Some(list),
        ..
    } = &message
        && list.len() > MAX_OFFERED_VERSIONS
    {
        return Err((
            cid,
            DecodeError::InvalidField {
                operation: op,
                reason: format!("'versions' offers more than {MAX_OFFERED_VERSIONS} versions"),
            },
        ));
    }
    if let Some(payload) = payload {
        match &mut message {
            ClientMessage::Set { value, .. } => *value = payload,
            ClientMessage::Add { value, .. } => *value = (!payload.is_null()).then_some(payload),
            _ => {}
        }
    }
    Ok(message)
}

/// Encodes a `set` request around a value that is already JSON text, without parsing it into
/// a tree: what a relay forwarding payloads it did not produce sends.
pub fn encode_set_raw(cid: u64, path: &str, value: &serde_json::value::RawValue) -> String {
    let mut out = String::with_capacity(path.len() + value.get().len() + 48);
    out.push_str(r#"{"type":"set","cid":"#);
    out.push_str(&cid.to_string());
    out.push_str(r#","path":"#);
    // A string always serialises.
    out.push_str(&serde_json::to_string(path).unwrap_or_default());
    out.push_str(r#","value":"#);
    out.push_str(value.get());
    out.push('}');
    out
}

/// Encodes any server message as compact JSON bytes. Topic updates (`Value`, `Delta`) take the
/// short update form (see [`encode_value_message`]); everything else is tagged by `type`.
pub fn encode_server_message(message: &ServerMessage) -> Bytes {
    match message {
        ServerMessage::Value { id, value } => match serde_json::to_vec(value) {
            Ok(wire) => encode_value_message(*id, &wire),
            Err(_) => encode_value_message(*id, b"null"),
        },
        ServerMessage::Delta { id, delta } => {
            let field = serde_json::to_vec(delta).unwrap_or_else(|_| b"\"\"".to_vec());
            encode_update(*id, b"d", &field)
        }
        // Serialising these types cannot fail: all map keys are strings.
        other => serde_json::to_vec(other)
            .map(Bytes::from)
            .unwrap_or_else(|_| {
                Bytes::from_static(
                    br#"{"type":"error","code":"INTERNAL","message":"encoding failed"}"#,
                )
            }),
    }
}

/// `{"i":ID,"KEY":FIELD}`: the update form.
fn encode_update(id: u64, key: &[u8], field: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(field.len() + 24);
    buf.put_slice(br#"{"i":"#);
    put_decimal(&mut buf, id);
    buf.put_slice(b",\"");
    buf.put_slice(key);
    buf.put_slice(b"\":");
    buf.put_slice(field);
    buf.put_u8(b'}');
    buf.freeze()
}

/// Encodes a topic's full value as the short update message `{"i":ID,"v":VALUE}` around
/// already-encoded wire JSON, without re-parsing it. Updates are what a server sends most, so
/// they carry no `type` and one-letter keys: the envelope is 12 bytes plus the id. The server
/// calls this once per update and shares the bytes with every subscriber.
pub fn encode_value_message(id: u64, wire_json: &[u8]) -> Bytes {
    encode_update(id, b"v", wire_json)
}

/// Encodes a delta update, `{"i":ID,"d":"BASE64"}`: `delta` (fossil format) turns the value the
/// subscriber holds into the new one. Base64 keeps the frame valid UTF-8 whatever bytes the
/// delta inserts. Called once per update; the bytes are shared by every subscriber in step.
pub fn encode_delta_message(id: u64, delta: &[u8]) -> Bytes {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(delta);
    let mut field = Vec::with_capacity(encoded.len() + 2);
    field.push(b'"');
    field.extend_from_slice(encoded.as_bytes());
    field.push(b'"');
    encode_update(id, b"d", &field)
}

/// Decodes one server message: the short update form (an object whose first key is `i`) or a
/// message tagged by `type`. Fields it does not know (the sequence number `s` among them) are
/// ignored; [`decode_sequenced_message`] also returns `s`.
pub fn decode_server_message(text: &str) -> Result<ServerMessage, serde_json::Error> {
    decode_sequenced_message(text).map(|(message, _)| message)
}

/// Decodes one server message and its version-2 sequence number `s` (absent on `connected`,
/// `heartbeat` and every version-1 message).
pub fn decode_sequenced_message(
    text: &str,
) -> Result<(ServerMessage, Option<u64>), serde_json::Error> {
    let mut fields: serde_json::Map<String, Value> = serde_json::from_str(text)?;
    let seq = match fields.remove("s") {
        None => None,
        Some(s) => Some(
            s.as_u64()
                .ok_or_else(|| serde::de::Error::custom("\"s\" is not an unsigned integer"))?,
        ),
    };
    if !fields.contains_key("i") || fields.contains_key("type") {
        return decode_tagged(fields).map(|m| (m, seq));
    }
    let id = fields
        .get("i")
        .and_then(Value::as_u64)
        .ok_or_else(|| serde::de::Error::custom("update without a numeric \"i\""))?;
    match (fields.remove("v"), fields.remove("d")) {
        (Some(value), None) => Ok((ServerMessage::Value { id, value }, seq)),
        (None, Some(Value::String(delta))) => Ok((ServerMessage::Delta { id, delta }, seq)),
        _ => Err(serde::de::Error::custom(
            "an update needs exactly one of \"v\" (value) and \"d\" (delta, a string)",
        )),
    }
}

/// Decodes a message tagged by `type`. serde's internally tagged enums buffer fields in a form
/// that cannot hold numbers past 64 bits exactly, so topic values are kept aside and put back.
fn decode_tagged(
    mut fields: serde_json::Map<String, Value>,
) -> Result<ServerMessage, serde_json::Error> {
    let value = fields.get_mut("value").map(Value::take);
    let fetched_values: Vec<Option<Value>> = match fields.get_mut("topics") {
        Some(Value::Array(topics)) => topics
            .iter_mut()
            .map(|topic| topic.as_object_mut().and_then(|t| t.remove("value")))
            .collect(),
        _ => Vec::new(),
    };
    let mut message: ServerMessage = serde_json::from_value(Value::Object(fields))?;
    match &mut message {
        ServerMessage::Value { value: slot, .. } => *slot = value.unwrap_or(Value::Null),
        ServerMessage::Fetched { topics, .. } => {
            for (topic, value) in topics.iter_mut().zip(fetched_values) {
                topic.value = value.filter(|v| !v.is_null());
            }
        }
        _ => {}
    }
    Ok(message)
}

/// One topic of a `fetched` reply as the server holds it: its value already in wire JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedRaw {
    /// The topic's path.
    pub path: String,
    /// Its type.
    pub topic_type: TopicType,
    /// Its current value as wire JSON, absent when it has none.
    pub wire_value: Option<Bytes>,
}

/// Encodes a `fetched` reply around values that are already wire JSON, without turning them
/// into trees and back: the same bytes as [`encode_server_message`] gives for
/// [`ServerMessage::Fetched`].
pub fn encode_fetched(cid: u64, topics: &[FetchedRaw], more: bool) -> Bytes {
    let size: usize = topics
        .iter()
        .map(|t| t.path.len() + t.wire_value.as_ref().map_or(0, Bytes::len) + 48)
        .sum();
    let mut buf = BytesMut::with_capacity(size + 48);
    buf.put_slice(br#"{"type":"fetched","cid":"#);
    buf.put_slice(cid.to_string().as_bytes());
    buf.put_slice(br#","topics":["#);
    for (i, topic) in topics.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(br#"{"path":"#);
        // A string always serialises.
        buf.put_slice(&serde_json::to_vec(&topic.path).unwrap_or_default());
        buf.put_slice(br#","topicType":""#);
        buf.put_slice(topic.topic_type.name().as_bytes());
        buf.put_u8(b'"');
        if let Some(value) = &topic.wire_value {
            buf.put_slice(br#","value":"#);
            buf.put_slice(value);
        }
        buf.put_u8(b'}');
    }
    buf.put_u8(b']');
    if more {
        buf.put_slice(br#","more":true"#);
    }
    buf.put_u8(b'}');
    buf.freeze()
}

/// Splits a server frame into its messages.
pub fn split_frame(frame: &str) -> impl Iterator<Item = &str> {
    frame.split('\n').filter(|m| !m.is_empty())
}

/// Decodes every message in a server frame.
pub fn decode_server_frame(frame: &str) -> Result<Vec<ServerMessage>, serde_json::Error> {
    split_frame(frame).map(decode_server_message).collect()
}

/// Packs queued messages into frames of at most `max_frame_bytes` (a single larger message gets
/// a frame of its own). A frame holding one message reuses that message's bytes: no copy.
pub fn pack_frames(
    messages: impl IntoIterator<Item = Bytes>,
    max_frame_bytes: usize,
) -> Vec<Bytes> {
    pack_sequenced_frames(messages.into_iter().map(|m| (None, m)), max_frame_bytes)
}

/// The message with `,"s":SEQ` added before its closing brace: the sequence number goes onto
/// a copy made while framing, so the encoded update itself stays shared by every subscriber.
pub fn with_sequence(message: &[u8], seq: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(message.len() + 24);
    put_with_sequence(&mut buf, message, seq);
    buf.freeze()
}

fn put_with_sequence(buf: &mut BytesMut, message: &[u8], seq: u64) {
    match message.split_last() {
        Some((b'}', body)) => {
            buf.put_slice(body);
            // `{}` has no field before the one we add.
            if body.len() > 1 {
                buf.put_u8(b',');
            }
            buf.put_slice(b"\"s\":");
            put_decimal(buf, seq);
            buf.put_u8(b'}');
        }
        // Every message is a JSON object; anything else goes out as it is.
        _ => buf.put_slice(message),
    }
}

/// Writes `n` in decimal without allocating.
fn put_decimal(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[at..]);
}

fn framed_len(message: &(Option<u64>, Bytes)) -> usize {
    message.1.len() + if message.0.is_some() { 26 } else { 0 }
}

/// Room a packed frame starts with; it grows as messages join it. Sized for a few messages,
/// not for the largest frame: a frame waiting on a slow socket keeps its whole buffer alive.
const PACKED_FRAME_START_BYTES: usize = 4 * 1024;

/// Packs messages into frames like [`pack_frames`], giving each message that has a sequence
/// number its `"s"` field (version 2).
pub fn pack_sequenced_frames(
    messages: impl IntoIterator<Item = (Option<u64>, Bytes)>,
    max_frame_bytes: usize,
) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut pending: Option<Bytes> = None;
    let mut building: Option<BytesMut> = None;
    for entry in messages {
        let message = match entry.0 {
            None => entry.1,
            Some(seq) if building.is_some() || pending.is_some() => {
                // Joining a frame: add it there directly, without an intermediate copy.
                let len = building
                    .as_ref()
                    .map(BytesMut::len)
                    .or(pending.as_ref().map(Bytes::len))
                    .unwrap_or(0);
                if len + 1 + framed_len(&entry) <= max_frame_bytes {
                    let buf = building.get_or_insert_with(|| {
                        let first = pending.take().unwrap_or_default();
                        let mut b =
                            BytesMut::with_capacity(max_frame_bytes.min(PACKED_FRAME_START_BYTES));
                        b.put_slice(&first);
                        b
                    });
                    buf.put_u8(MESSAGE_SEPARATOR);
                    put_with_sequence(buf, &entry.1, seq);
                    continue;
                }
                with_sequence(&entry.1, seq)
            }
            Some(seq) => with_sequence(&entry.1, seq),
        };
        let current_len = building
            .as_ref()
            .map(BytesMut::len)
            .or(pending.as_ref().map(Bytes::len));
        match current_len {
            None => pending = Some(message),
            Some(len) if len + 1 + message.len() > max_frame_bytes => {
                if let Some(b) = building.take() {
                    frames.push(b.freeze());
                } else if let Some(p) = pending.take() {
                    frames.push(p);
                }
                pending = Some(message);
            }
            Some(_) => {
                let buf = building.get_or_insert_with(|| {
                    let first = pending.take().unwrap_or_default();
                    let mut b =
                        BytesMut::with_capacity(max_frame_bytes.min(PACKED_FRAME_START_BYTES));
                    b.put_slice(&first);
                    b
                });
                buf.put_u8(MESSAGE_SEPARATOR);
                buf.put_slice(&message);
            }
        }
    }
    if let Some(b) = building {
        frames.push(b.freeze());
    } else if let Some(p) = pending {
        frames.push(p);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_message_matches_serde_encoding() {
        let fast = encode_value_message(7, br#"{"a":1}"#);
        let slow = encode_server_message(&ServerMessage::Value {
            id: 7,
            value: json!({"a":1}),
        });
        assert_eq!(fast, slow);
    }

    #[test]
    fn delta_message_matches_serde_encoding() {
        use base64::Engine as _;
        let fast = encode_delta_message(9, b"3\n2@0,1:x;");
        let slow = encode_server_message(&ServerMessage::Delta {
            id: 9,
            delta: base64::engine::general_purpose::STANDARD.encode(b"3\n2@0,1:x;"),
        });
        assert_eq!(fast, slow);
    }

    #[test]
    fn updates_use_the_short_form_and_round_trip() {
        assert_eq!(
            &encode_value_message(2, b"56189.3483")[..],
            br#"{"i":2,"v":56189.3483}"#
        );
        let messages = [
            ServerMessage::Value {
                id: 2,
                value: json!({"a": [1, null]}),
            },
            ServerMessage::Value {
                id: 3,
                value: Value::Null,
            },
            ServerMessage::Delta {
                id: 4,
                delta: "QUJD".to_owned(),
            },
            ServerMessage::Pong { cid: 5 },
        ];
        for message in messages {
            let text = String::from_utf8(encode_server_message(&message).to_vec()).unwrap();
            assert_eq!(decode_server_message(&text).unwrap(), message, "{text}");
        }
        for bad in [
            r#"{"i":1}"#,
            r#"{"i":1,"v":1,"d":"x"}"#,
            r#"{"i":"x","v":1}"#,
            r#"{"i":1,"d":2}"#,
        ] {
            assert!(decode_server_message(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decode_distinguishes_failures() {
        assert!(matches!(
            decode_client_message("nope"),
            Err((None, DecodeError::NotJson(_)))
        ));
        assert!(matches!(
            decode_client_message(r#"{"cid":3}"#),
            Err((Some(3), DecodeError::MissingType))
        ));
        let (cid, err) = decode_client_message(r#"{"type":"explode","cid":4}"#).unwrap_err();
        assert_eq!(cid, Some(4));
        assert_eq!(err.code(2), ErrorCode::UnknownOperation);
        assert_eq!(err.code(1), ErrorCode::UnknownOperation);
        let (cid, err) = decode_client_message(r#"{"type":"set","cid":5}"#).unwrap_err();
        assert_eq!(cid, Some(5));
        assert_eq!(err.code(1), ErrorCode::MalformedMessage);
        assert_eq!(err.code(2), ErrorCode::MissingField);
        let (_, err) =
            decode_client_message(r#"{"type":"set","cid":5,"path":7,"value":1}"#).unwrap_err();
        assert_eq!(err.code(2), ErrorCode::InvalidField);
        let (_, err) = decode_client_message(r#"{"cid":5}"#).unwrap_err();
        assert_eq!(err.code(2), ErrorCode::MissingField);
        let (_, err) = decode_client_message("{").unwrap_err();
        assert_eq!(err.code(2), ErrorCode::NotJson);
        assert_eq!(err.code(1), ErrorCode::MalformedMessage);
        let many = format!(r#"{{"type":"connect","versions":{:?}}}"#, vec![2; 17]);
        let (_, err) = decode_client_message(&many).unwrap_err();
        assert_eq!(err.code(2), ErrorCode::InvalidField);
        let ok = decode_client_message(r#"{"type":"add","cid":1,"path":"a","topicType":"JSON"}"#)
            .unwrap();
        assert!(matches!(
            ok,
            ClientMessage::Add {
                topic_type: TopicType::Json,
                ..
            }
        ));
    }

    #[test]
    fn frames_pack_and_split() {
        let msgs: Vec<Bytes> = (0..5)
            .map(|i| encode_server_message(&ServerMessage::Pong { cid: i }))
            .collect();
        let frames = pack_frames(msgs.clone(), 1024);
        assert_eq!(frames.len(), 1);
        let text = std::str::from_utf8(&frames[0]).unwrap();
        let decoded = decode_server_frame(text).unwrap();
        assert_eq!(decoded.len(), 5);
        assert_eq!(decoded[4], ServerMessage::Pong { cid: 4 });
        // Small frame limit: one message per frame, each reusing the message bytes.
        let frames = pack_frames(msgs.clone(), 10);
        assert_eq!(frames, msgs);
    }

    #[test]
    fn fetched_encodes_like_serde() {
        let raw = vec![
            FetchedRaw {
                path: "a/\"q\"".to_owned(),
                topic_type: TopicType::Json,
                wire_value: Some(Bytes::from_static(br#"{"x":[1,2]}"#)),
            },
            FetchedRaw {
                path: "b".to_owned(),
                topic_type: TopicType::String,
                wire_value: None,
            },
        ];
        for more in [false, true] {
            let fast = encode_fetched(9, &raw, more);
            let slow = encode_server_message(&ServerMessage::Fetched {
                cid: 9,
                topics: vec![
                    FetchedTopic {
                        path: "a/\"q\"".to_owned(),
                        topic_type: TopicType::Json,
                        value: Some(json!({"x": [1, 2]})),
                    },
                    FetchedTopic {
                        path: "b".to_owned(),
                        topic_type: TopicType::String,
                        value: None,
                    },
                ],
                more,
            });
            assert_eq!(fast, slow);
        }
        assert_eq!(
            &encode_fetched(1, &[], false)[..],
            br#"{"type":"fetched","cid":1,"topics":[]}"#
        );
    }

    #[test]
    fn versions_negotiate_to_the_highest_common_one() {
        assert_eq!(
            negotiate_version(Some(1), None, SUPPORTED_VERSIONS),
            Some(1)
        );
        assert_eq!(
            negotiate_version(None, Some(&[1, 2, 9]), SUPPORTED_VERSIONS),
            Some(2)
        );
        assert_eq!(negotiate_version(Some(3), None, SUPPORTED_VERSIONS), None);
        assert_eq!(negotiate_version(None, Some(&[]), SUPPORTED_VERSIONS), None);
        assert_eq!(negotiate_version(None, None, SUPPORTED_VERSIONS), None);
        // `versions` wins over the version-1 field.
        assert_eq!(
            negotiate_version(Some(1), Some(&[2]), SUPPORTED_VERSIONS),
            Some(2)
        );
        let hello = ClientMessage::connect_v2(&Credentials::Anonymous, None);
        let text = serde_json::to_string(&hello).unwrap();
        assert_eq!(text, r#"{"type":"connect","versions":[2,1]}"#);
        assert_eq!(decode_client_message(&text).unwrap(), hello);
    }

    #[test]
    fn sequence_numbers_go_last_and_decode() {
        let update = encode_value_message(4, b"17");
        assert_eq!(&with_sequence(&update, 7)[..], br#"{"i":4,"v":17,"s":7}"#);
        assert_eq!(&with_sequence(b"{}", 0)[..], br#"{"s":0}"#);
        let (message, seq) = decode_sequenced_message(r#"{"i":4,"v":17,"s":7}"#).unwrap();
        assert_eq!(
            message,
            ServerMessage::Value {
                id: 4,
                value: json!(17)
            }
        );
        assert_eq!(seq, Some(7));
        let (message, seq) =
            decode_sequenced_message(r#"{"type":"ok","cid":3,"s":18446744073709551615}"#).unwrap();
        assert_eq!(message, ServerMessage::Ok { cid: 3 });
        assert_eq!(seq, Some(u64::MAX));
        let (message, seq) = decode_sequenced_message(r#"{"type":"heartbeat"}"#).unwrap();
        assert_eq!((message, seq), (ServerMessage::Heartbeat, None));
        assert!(decode_sequenced_message(r#"{"i":4,"v":17,"s":-1}"#).is_err());
        // Unknown fields are ignored, in updates too.
        let (message, _) =
            decode_sequenced_message(r#"{"i":4,"v":17,"future":[1],"s":2}"#).unwrap();
        assert_eq!(
            message,
            ServerMessage::Value {
                id: 4,
                value: json!(17)
            }
        );
    }

    #[test]
    fn sequenced_frames_pack_like_unsequenced_ones() {
        let msgs: Vec<(Option<u64>, Bytes)> = (0..5)
            .map(|i| {
                let seq = (i % 2 == 0).then_some(100 + i);
                (seq, encode_server_message(&ServerMessage::Pong { cid: i }))
            })
            .collect();
        for limit in [10, 40, 60, 1024] {
            let frames = pack_sequenced_frames(msgs.clone(), limit);
            let mut decoded = Vec::new();
            for frame in &frames {
                let text = std::str::from_utf8(frame).unwrap();
                for part in split_frame(text) {
                    decoded.push(decode_sequenced_message(part).unwrap());
                }
            }
            let expected: Vec<_> = (0..5)
                .map(|i| {
                    (
                        ServerMessage::Pong { cid: i },
                        (i % 2 == 0).then_some(100 + i),
                    )
                })
                .collect();
            assert_eq!(decoded, expected, "limit {limit}");
        }
        assert_eq!(pack_sequenced_frames(msgs, 1024).len(), 1);
    }

    #[test]
    fn replies_keep_numbers_past_64_bits() {
        let text = r#"{"type":"fetched","cid":1,"topics":[{"path":"a","topicType":"JSON","value":{"n":123456789012345678901234567890,"d":930192.7818915497}},{"path":"b","topicType":"STRING"}],"s":3}"#;
        let (message, seq) = decode_sequenced_message(text).unwrap();
        assert_eq!(seq, Some(3));
        let ServerMessage::Fetched { topics, .. } = message else {
            panic!("{message:?}")
        };
        assert_eq!(
            serde_json::to_string(&topics[0].value).unwrap(),
            r#"{"d":930192.7818915497,"n":123456789012345678901234567890}"#
        );
        assert_eq!(topics[1].value, None);
        let (message, _) =
            decode_sequenced_message(r#"{"type":"value","id":2,"value":-99999999999999999999}"#)
                .unwrap();
        assert_eq!(
            serde_json::to_string(&message).unwrap(),
            r#"{"type":"value","id":2,"value":-99999999999999999999}"#
        );
        let (message, _) =
            decode_sequenced_message(r#"{"i":2,"v":18446744073709551616,"s":1}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&message).unwrap(),
            r#"{"type":"value","id":2,"value":18446744073709551616}"#
        );
    }

    #[test]
    fn raw_set_is_a_set() {
        let raw = serde_json::value::RawValue::from_string(
            r#"{"price":930192.7818915497,"big":123456789012345678901234567890}"#.to_owned(),
        )
        .unwrap();
        let text = encode_set_raw(3, "redis/\"x\"", &raw);
        match decode_client_message(&text).unwrap() {
            ClientMessage::Set { cid, path, value } => {
                assert_eq!((cid, path.as_str()), (3, "redis/\"x\""));
                assert_eq!(
                    serde_json::to_string(&value).unwrap(),
                    r#"{"big":123456789012345678901234567890,"price":930192.7818915497}"#
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn single_message_frame_is_not_copied() {
        let m = Bytes::from_static(b"{\"type\":\"pong\",\"cid\":1}");
        let frames = pack_frames([m.clone()], 1024);
        assert_eq!(frames[0].as_ptr(), m.as_ptr());
    }
}
