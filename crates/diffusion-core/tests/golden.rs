//! Golden protocol transcripts: `fixtures/protocol/*.json` at the repository root.
//!
//! Every transcript is built here, deterministically, with this crate's own encoders (the
//! same calls the topic server makes), and written in the format of the protocol v2 decision
//! ("Golden fixtures"). Other decoders (the load generator, the client library, the web page)
//! read the same files, so all of them are tested against the same bytes.
//!
//! `UPDATE_GOLDEN=1 cargo test -p diffusion-core --test golden` rewrites the files; without it
//! the test fails when a file differs from what this code generates. A second test decodes
//! every generated transcript with [`decode_sequenced_message`] and checks the listed messages
//! and final values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use diffusion_core::protocol::{
    ClientMessage, Credentials, DecodeError, ErrorCode, PROTOCOL_VERSION, PROTOCOL_VERSION_1,
    Resume, ServerMessage, SessionLimits, decode_client_message, decode_sequenced_message,
    encode_delta_message, encode_server_message, encode_value_message, pack_sequenced_frames,
    split_frame, with_sequence,
};
use diffusion_core::{TopicProperties, TopicType, TopicValue};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const OTHER_TOKEN: &str = "fedcba9876543210fedcba9876543210";
const SESSION: &str = "5f2a91c3-1";
const OTHER_SESSION: &str = "5f2a91c3-2";
/// The topic server's largest frame when it packs messages (its default).
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// An unknown field, as a later protocol version might add one.
const FUTURE_FIELD: &str = r#""x-future":{"a":[1]}"#;

/// A JSON value with some numbers only an exact decoder keeps: a double that needs 17
/// significant digits, 2^53 + 1, i64::MIN and an integer past 64 bits.
const BIG_NUMBERS: &str = r#"{"big":123456789012345678901234567890,"desc":"A reading of the golden sensor; this text pads the document so that a delta is smaller than the whole value.","max":9007199254740993,"min":-9223372036854775808,"price":930192.7818915497,"seq":1}"#;

/// A file of `fixtures/protocol`, field order as in the format's description.
#[derive(Serialize)]
struct Fixture {
    name: &'static str,
    description: &'static str,
    version: u32,
    frames: Vec<Frame>,
    /// Topic id → its value after every frame (`null`: no value).
    values: BTreeMap<u64, Box<RawValue>>,
}

/// One WebSocket frame of a transcript.
#[derive(Serialize)]
struct Frame {
    from: &'static str,
    text: String,
    /// Server frames: the normalised messages, each on one line of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<Box<RawValue>>>,
}

/// One server message to be framed: its wire bytes and the message a decoder must read.
struct Out {
    wire: Bytes,
    expected: ServerMessage,
}

impl Out {
    fn new(wire: Bytes, expected: ServerMessage) -> Self {
        Self { wire, expected }
    }

    fn reply(expected: ServerMessage) -> Self {
        Self::new(encode_server_message(&expected), expected)
    }

    /// The same message with a field no decoder knows added at its end (before `s`).
    fn with_future_field(mut self) -> Self {
        let body = self.wire.strip_suffix(b"}").expect("an object");
        self.wire = Bytes::from([body, b",", FUTURE_FIELD.as_bytes(), b"}"].concat());
        self
    }
}

/// Builds one transcript frame by frame, holding what the server side knows: the session's
/// next sequence number and each subscribed topic's type and value.
struct Transcript {
    fixture: Fixture,
    next_seq: u64,
    /// A `connected` has been sent: messages are numbered from here on (version 2).
    connected: bool,
    topics: BTreeMap<u64, (TopicType, Option<TopicValue>)>,
}

fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).expect("valid JSON")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON")
}

fn limits() -> SessionLimits {
    SessionLimits {
        max_message_bytes: 1024 * 1024,
        queue_limit_bytes: 16 * 1024 * 1024,
        heartbeat_interval_ms: 15_000,
        heartbeat_timeout_ms: 10_000,
        reconnect_window_ms: 60_000,
    }
}

fn connected(session: &str, token: Option<&str>, recovered: Option<bool>) -> ServerMessage {
    ServerMessage::Connected {
        version: PROTOCOL_VERSION,
        session: session.to_owned(),
        token: token.map(str::to_owned),
        recovered,
        reason: (recovered == Some(false)).then(|| "unknown_session".to_owned()),
        limits: Some(limits()),
    }
}

fn connect_v2(resume: Option<Resume>) -> ClientMessage {
    ClientMessage::connect_v2(&Credentials::Anonymous, resume)
}

fn ok(cid: u64) -> Out {
    Out::reply(ServerMessage::Ok { cid })
}

fn error(cid: Option<u64>, code: ErrorCode, message: &str) -> Out {
    Out::reply(ServerMessage::Error {
        cid,
        code,
        message: message.to_owned(),
    })
}

/// The error reply the server gives a session speaking `version` for a frame it cannot decode.
fn decode_error(text: &str, version: u32) -> Out {
    let (cid, err): (Option<u64>, DecodeError) =
        decode_client_message(text).expect_err("a bad request");
    error(cid, err.code(version), &err.to_string())
}

impl Transcript {
    fn new(name: &'static str, description: &'static str, version: u32) -> Self {
        Self {
            fixture: Fixture {
                name,
                description,
                version,
                frames: Vec::new(),
                values: BTreeMap::new(),
            },
            next_seq: 1,
            connected: false,
            topics: BTreeMap::new(),
        }
    }

    fn client_text(&mut self, text: &str) {
        self.fixture.frames.push(Frame {
            from: "client",
            text: text.to_owned(),
            messages: None,
        });
    }

    fn client(&mut self, message: &ClientMessage) {
        let text = serde_json::to_string(message).expect("serialises");
        self.client_text(&text);
    }

    /// One server frame holding `messages`, numbered as a version-2 session numbers them and
    /// packed as the server packs them. A `connected` that did not recover a session starts a
    /// new one: sequence numbers and topics start again.
    fn server(&mut self, messages: Vec<Out>) {
        let mut entries = Vec::new();
        let mut normalised = Vec::new();
        for out in messages {
            let seq = match &out.expected {
                ServerMessage::Connected { recovered, .. } => {
                    if *recovered != Some(true) {
                        self.next_seq = 1;
                        self.topics.clear();
                    }
                    self.connected = true;
                    None
                }
                ServerMessage::Heartbeat => None,
                // Before `connected` (a refused handshake) nothing is numbered either.
                _ if self.fixture.version < PROTOCOL_VERSION || !self.connected => None,
                _ => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    Some(seq)
                }
            };
            let text = serde_json::to_vec(&out.expected).expect("serialises");
            let text = match seq {
                Some(seq) => with_sequence(&text, seq).to_vec(),
                None => text,
            };
            normalised.push(raw(String::from_utf8(text).expect("UTF-8")));
            entries.push((seq, out.wire));
        }
        let frames = pack_sequenced_frames(entries, MAX_FRAME_BYTES);
        assert_eq!(frames.len(), 1, "one frame");
        self.fixture.frames.push(Frame {
            from: "server",
            text: String::from_utf8(frames[0].to_vec()).expect("UTF-8"),
            messages: Some(normalised),
        });
    }

    /// `subscribed` for a topic with default properties.
    fn subscribed(&mut self, id: u64, path: &str, topic_type: TopicType) -> Out {
        self.topics.insert(id, (topic_type, None));
        Out::reply(ServerMessage::Subscribed {
            id,
            path: path.to_owned(),
            topic_type,
            properties: TopicProperties::default().to_map(),
        })
    }

    fn topic_type(&self, id: u64) -> TopicType {
        self.topics.get(&id).expect("a subscribed topic").0
    }

    /// A full value update (`null`: the topic now has no value).
    fn value(&mut self, id: u64, value: &str) -> Out {
        let topic_type = self.topic_type(id);
        let value = TopicValue::from_json(topic_type, &json(value)).expect("fits the type");
        let wire = value
            .as_ref()
            .map_or(Bytes::from_static(b"null"), TopicValue::wire_json);
        let expected = ServerMessage::Value {
            id,
            value: value.as_ref().map_or(Value::Null, TopicValue::to_json),
        };
        self.topics.insert(id, (topic_type, value));
        Out::new(encode_value_message(id, &wire), expected)
    }

    /// A delta update from the value held to `value`, over canonical bytes, as the server
    /// computes it.
    fn delta(&mut self, id: u64, value: &str) -> Out {
        let topic_type = self.topic_type(id);
        let new = TopicValue::from_json(topic_type, &json(value))
            .expect("fits the type")
            .expect("a value");
        let old = self.topics[&id].1.as_ref().expect("a value held");
        let delta = diffusion_core::delta::diff(old.canonical(), new.canonical())
            .expect("a delta smaller than the value");
        self.topics.insert(id, (topic_type, Some(new)));
        Out::new(
            encode_delta_message(id, &delta),
            ServerMessage::Delta {
                id,
                delta: BASE64.encode(&delta),
            },
        )
    }

    fn finish(mut self) -> Fixture {
        self.fixture.values = self
            .topics
            .iter()
            .map(|(id, (_, value))| {
                let json = value.as_ref().map_or(Value::Null, TopicValue::to_json);
                (*id, raw(serde_json::to_string(&json).expect("serialises")))
            })
            .collect();
        self.fixture
    }
}

fn add(cid: u64, path: &str, topic_type: TopicType, value: Option<&str>) -> ClientMessage {
    ClientMessage::Add {
        cid,
        path: path.to_owned(),
        topic_type,
        properties: BTreeMap::new(),
        value: value.map(json),
    }
}

fn set(cid: u64, path: &str, value: &str) -> ClientMessage {
    ClientMessage::Set {
        cid,
        path: path.to_owned(),
        value: json(value),
    }
}

fn subscribe(cid: u64, selector: &str) -> ClientMessage {
    ClientMessage::Subscribe {
        cid,
        selector: selector.to_owned(),
    }
}

/// A document of a JSON topic that deltas shrink: `BIG_NUMBERS` with `seq` and `price`
/// changed.
fn reading(seq: u64, price: &str) -> String {
    BIG_NUMBERS
        .replace(r#""seq":1"#, &format!(r#""seq":{seq}"#))
        .replace("930192.7818915497", price)
}

const LONG_TEXT: &str = "The quick brown fox jumps over the lazy dog; the lazy dog sleeps on.";

fn handshake_and_updates() -> Fixture {
    let mut t = Transcript::new(
        "handshake-and-updates",
        "Version-2 handshake, topics of every type added and subscribed to, then full-value \
         updates. Every server message after `connected` carries `s`, from 1 up. BINARY has no \
         value until it is set; a STRING set to null has no value.",
        2,
    );
    t.client(&connect_v2(None));
    t.server(vec![Out::reply(connected(SESSION, Some(TOKEN), None))]);
    let topics = [
        (1, "golden/json", TopicType::Json, Some(BIG_NUMBERS)),
        (
            2,
            "golden/string",
            TopicType::String,
            Some(r#""hello, \"world\" é€""#),
        ),
        (
            3,
            "golden/int64",
            TopicType::Int64,
            Some("-9223372036854775808"),
        ),
        (
            4,
            "golden/double",
            TopicType::Double,
            Some("930192.7818915497"),
        ),
        (5, "golden/binary", TopicType::Binary, None),
    ];
    for (cid, path, topic_type, value) in topics {
        t.client(&add(cid, path, topic_type, value));
        t.server(vec![ok(cid)]);
    }
    t.client(&subscribe(6, "?golden//"));
    // Path order; the BINARY topic has no value yet, so no value message.
    let mut frame = Vec::new();
    let mut by_path = topics.to_vec();
    by_path.sort_by_key(|topic| topic.1);
    for (id, path, topic_type, value) in by_path {
        frame.push(t.subscribed(id, path, topic_type));
        if let Some(value) = value {
            frame.push(t.value(id, value));
        }
    }
    frame.push(ok(6));
    t.server(frame);
    let updates = [
        (7, 3, "golden/int64", "9223372036854775807"),
        (8, 4, "golden/double", "0.1"),
        (9, 4, "golden/double", "-1.5e-300"),
        (10, 2, "golden/string", r#""short""#),
        (11, 5, "golden/binary", r#""AAECAwQFBgcICQ==""#),
        (
            12,
            1,
            "golden/json",
            r#"{"list":[1,2.5,"x",null,true],"nested":{"z":{}}}"#,
        ),
        (13, 2, "golden/string", "null"),
    ];
    for (cid, id, path, value) in updates {
        t.client(&set(cid, path, value));
        let update = t.value(id, value);
        t.server(vec![update, ok(cid)]);
    }
    t.finish()
}

fn deltas() -> Fixture {
    let mut t = Transcript::new(
        "deltas",
        "Fossil deltas (base64, `d`) on a JSON, a STRING and a BINARY topic, computed over the \
         canonical bytes of the value held (JSON: compact, keys sorted, numbers as written; \
         STRING: the UTF-8 bytes, not the JSON-escaped form; BINARY: the raw bytes). Apply them \
         to reach `values`.",
        2,
    );
    t.client(&connect_v2(None));
    t.server(vec![Out::reply(connected(SESSION, Some(TOKEN), None))]);
    t.client(&subscribe(1, "?golden//"));
    let binary_1 = BASE64.encode((0u8..64).collect::<Vec<_>>());
    let binary_2 = BASE64.encode(
        (0u8..64)
            .map(|b| if b == 40 { 255 } else { b })
            .collect::<Vec<_>>(),
    );
    let string_1 = format!(r#""{LONG_TEXT} \"quoted\" é€""#);
    let frame = vec![
        t.subscribed(5, "golden/binary", TopicType::Binary),
        t.value(5, &format!("\"{binary_1}\"")),
        t.subscribed(1, "golden/json", TopicType::Json),
        t.value(1, BIG_NUMBERS),
        t.subscribed(2, "golden/string", TopicType::String),
        t.value(2, &string_1),
        ok(1),
    ];
    t.server(frame);
    let d = t.delta(1, &reading(2, "930201.0042"));
    t.server(vec![d]);
    let d = t.delta(1, &reading(3, "930192.7818915497"));
    t.server(vec![d]);
    let d = t.delta(2, &string_1.replace("lazy dog sleeps", "lazy cat sleeps"));
    t.server(vec![d]);
    let d = t.delta(2, &string_1.replace("quick", "slow"));
    t.server(vec![d]);
    let d = t.delta(5, &format!("\"{binary_2}\""));
    t.server(vec![d]);
    t.finish()
}

fn batching() -> Fixture {
    let mut t = Transcript::new(
        "batching",
        "Several messages packed into one frame, separated by a newline: subscription replies, \
         then value, delta and ok messages for three sets in a row. Split on newline, decode \
         each message in order.",
        2,
    );
    t.client(&connect_v2(None));
    t.server(vec![Out::reply(connected(SESSION, Some(TOKEN), None))]);
    t.client(&add(1, "golden/json", TopicType::Json, Some(BIG_NUMBERS)));
    t.server(vec![ok(1)]);
    t.client(&subscribe(2, "golden/json"));
    let frame = vec![
        t.subscribed(1, "golden/json", TopicType::Json),
        t.value(1, BIG_NUMBERS),
        ok(2),
    ];
    t.server(frame);
    let second = reading(2, "930201.0042");
    let third = reading(3, "930199.5");
    t.client(&set(3, "golden/json", &second));
    t.client(&set(4, "golden/json", &third));
    t.client(&set(5, "golden/json", "[1]"));
    let frame = vec![
        t.delta(1, &second),
        ok(3),
        t.delta(1, &third),
        ok(4),
        // A tiny value always travels whole.
        t.value(1, "[1]"),
        ok(5),
        Out::reply(ServerMessage::Pong { cid: 6 }),
    ];
    t.client_text(r#"{"type":"ping","cid":6}"#);
    t.server(frame);
    t.finish()
}

/// The first connection of both recovery transcripts: subscribed to a JSON and a STRING topic,
/// messages 1 to 6 received.
fn first_connection(t: &mut Transcript) {
    t.client(&connect_v2(None));
    t.server(vec![Out::reply(connected(SESSION, Some(TOKEN), None))]);
    t.client(&subscribe(1, "?golden//"));
    let string = format!(r#""{LONG_TEXT}""#);
    let frame = vec![
        t.subscribed(1, "golden/json", TopicType::Json),
        t.value(1, BIG_NUMBERS),
        t.subscribed(2, "golden/string", TopicType::String),
        t.value(2, &string),
        ok(1),
    ];
    t.server(frame);
    let d = t.delta(1, &reading(2, "930201.0042"));
    t.server(vec![d]);
}

fn recovery_recovered() -> Fixture {
    let mut t = Transcript::new(
        "recovery-recovered",
        "A session, then (after its connection dropped) a second connection that resumes it \
         with the token and the last `s` processed (6). `recovered: true`: same session, same \
         topic ids, values kept; the messages after 6 follow (replayed, then new), deltas \
         included.",
        2,
    );
    first_connection(&mut t);
    t.client(&connect_v2(Some(Resume {
        token: TOKEN.to_owned(),
        s: 6,
    })));
    t.server(vec![Out::reply(connected(
        SESSION,
        Some(TOKEN),
        Some(true),
    ))]);
    let frame = vec![
        t.delta(1, &reading(3, "930199.5")),
        t.delta(2, &format!(r#""{}""#, LONG_TEXT.replace("fox", "cat"))),
    ];
    t.server(frame);
    let d = t.delta(1, &reading(4, "930192.7818915497"));
    t.server(vec![d]);
    t.client(&ClientMessage::Ack { s: 9 });
    t.finish()
}

fn recovery_not_recovered() -> Fixture {
    let mut t = Transcript::new(
        "recovery-not-recovered",
        "A session, then a second connection that tries to resume it. `recovered: false` (with \
         a `reason`): a new session with a new token; sequence numbers start again at 1, old \
         topic ids mean nothing (reset the topic table), the client subscribes again. `values` \
         holds only the new session's topics.",
        2,
    );
    first_connection(&mut t);
    t.client(&connect_v2(Some(Resume {
        token: TOKEN.to_owned(),
        s: 6,
    })));
    t.server(vec![Out::reply(connected(
        OTHER_SESSION,
        Some(OTHER_TOKEN),
        Some(false),
    ))]);
    t.client(&subscribe(1, "golden/json"));
    let frame = vec![
        t.subscribed(9, "golden/json", TopicType::Json),
        t.value(9, &reading(5, "930199.5")),
        ok(1),
    ];
    t.server(frame);
    t.finish()
}

fn heartbeat_ack() -> Fixture {
    let mut t = Transcript::new(
        "heartbeat-ack",
        "Heartbeats carry no `s`; the client answers each with `ack` and the last `s` it \
         processed. A heartbeat may share a frame with other messages. An `ack` may also be \
         sent unprompted; it gets no reply.",
        2,
    );
    t.client(&connect_v2(None));
    t.server(vec![Out::reply(connected(SESSION, Some(TOKEN), None))]);
    t.client(&subscribe(1, "golden/int64"));
    let frame = vec![
        t.subscribed(3, "golden/int64", TopicType::Int64),
        t.value(3, "1"),
        ok(1),
    ];
    t.server(frame);
    t.server(vec![Out::reply(ServerMessage::Heartbeat)]);
    t.client(&ClientMessage::Ack { s: 3 });
    let frame = vec![t.value(3, "2"), Out::reply(ServerMessage::Heartbeat)];
    t.server(frame);
    t.client(&ClientMessage::Ack { s: 4 });
    let v = t.value(3, "3");
    t.server(vec![v]);
    t.client(&ClientMessage::Ack { s: 5 });
    t.finish()
}

fn errors_v2() -> Fixture {
    let mut t = Transcript::new(
        "errors-v2",
        "Error replies of a version-2 session. A request before `connect` gets \
         HANDSHAKE_REQUIRED without `s` (nothing is numbered before `connected`). Undecodable \
         requests get NOT_JSON, UNKNOWN_OPERATION, MISSING_FIELD or INVALID_FIELD, with the \
         `cid` when it could be read. BINARY_FRAME answers a binary frame from the client \
         (bytes 00 01 02; not listed, the format holds text frames only). INTERNAL carries no \
         details and ends the session (close 1011).",
        2,
    );
    t.client(&ClientMessage::Ping { cid: 1 });
    t.server(vec![error(
        Some(1),
        ErrorCode::HandshakeRequired,
        "the first message must be 'connect'",
    )]);
    t.client(&connect_v2(None));
    t.server(vec![Out::reply(connected(SESSION, Some(TOKEN), None))]);
    for text in [
        "nope",
        r#"{"type":"explode","cid":2}"#,
        r#"{"cid":3}"#,
        r#"{"type":"set","cid":4}"#,
        r#"{"type":"set","cid":5,"path":7,"value":1}"#,
    ] {
        t.client_text(text);
        t.server(vec![decode_error(text, 2)]);
    }
    t.server(vec![error(
        None,
        ErrorCode::BinaryFrame,
        "binary frames are not part of the protocol: send JSON in text frames",
    )]);
    let requests: Vec<(ClientMessage, ErrorCode, &str)> = vec![
        (
            connect_v2(None),
            ErrorCode::HandshakeRequired,
            "the session is already connected",
        ),
        (
            add(6, "a//b", TopicType::Json, None),
            ErrorCode::InvalidPath,
            "topic path 'a//b' has an empty segment",
        ),
        (
            ClientMessage::Add {
                cid: 7,
                path: "golden/props".to_owned(),
                topic_type: TopicType::Json,
                properties: BTreeMap::from([("NOPE".to_owned(), "1".to_owned())]),
                value: None,
            },
            ErrorCode::InvalidProperties,
            "unknown topic property 'NOPE'",
        ),
        (
            add(8, "golden/json", TopicType::String, None),
            ErrorCode::TopicExists,
            "a topic of another type or with other properties exists at 'golden/json'",
        ),
        (
            set(9, "golden/missing", "1"),
            ErrorCode::NoSuchTopic,
            "no topic at 'golden/missing'",
        ),
        (
            set(9, "golden/locked", "1"),
            ErrorCode::PermissionDenied,
            "UPDATE_TOPIC is needed at 'golden/locked'",
        ),
        (
            set(10, "golden/int64", r#""x""#),
            ErrorCode::InvalidValue,
            "a INT64 topic cannot hold a string",
        ),
        (
            subscribe(11, "?golden/["),
            ErrorCode::InvalidSelector,
            "invalid selector '?golden/[': unclosed character class",
        ),
        (
            ClientMessage::RemoveView {
                cid: 12,
                name: "missing".to_owned(),
            },
            ErrorCode::NoSuchView,
            "no view named 'missing'",
        ),
        (
            ClientMessage::CreateView {
                cid: 13,
                name: "v".to_owned(),
                spec: "map ?a// to".to_owned(),
            },
            ErrorCode::InvalidView,
            "1:12: expected a path template\nmap ?a// to\n           ^",
        ),
        (
            set(14, "views/golden", "1"),
            ErrorCode::ReadOnlyTopic,
            "'views/golden' is a reference topic of a view",
        ),
        (
            add(15, "golden/many", TopicType::Json, None),
            ErrorCode::LimitExceeded,
            "max-topics (100000) reached",
        ),
        (
            ClientMessage::Ping { cid: 16 },
            ErrorCode::RateLimited,
            "more than 1000 requests per second",
        ),
        (
            ClientMessage::Remove {
                cid: 17,
                selector: ">golden".to_owned(),
            },
            ErrorCode::PermissionDenied,
            "not permitted",
        ),
        (
            ClientMessage::ListViews { cid: 18 },
            ErrorCode::Internal,
            "internal error",
        ),
        (
            ClientMessage::Set {
                cid: 19,
                path: "golden/json".to_owned(),
                value: serde_json::json!(1),
            },
            ErrorCode::Unavailable,
            "the cluster's Redis failed (it did not answer in time): the change may or may not have been made; fetch to see",
        ),
    ];
    for (request, code, message) in requests {
        t.client(&request);
        t.server(vec![error(request.cid(), code, message)]);
    }
    t.finish()
}

fn handshake_refused() -> Fixture {
    let mut t = Transcript::new(
        "handshake-refused",
        "A connect offering no version the server speaks: UNSUPPORTED_VERSION (no `s`: there is \
         no session), then the server closes with 1002.",
        2,
    );
    t.client_text(r#"{"type":"connect","versions":[3]}"#);
    t.server(vec![error(
        None,
        ErrorCode::UnsupportedVersion,
        "no protocol version offered is supported; this server speaks versions 2 and 1",
    )]);
    t.finish()
}

fn authentication_refused() -> Fixture {
    let mut t = Transcript::new(
        "authentication-refused",
        "A connect with a signed token (`token`; a password goes in `principal` + \
         `credentials`) that the security store refuses: AUTHENTICATION_FAILED (no `s`: there \
         is no session), then the server closes with 4003 and the client must not retry.",
        2,
    );
    t.client(&ClientMessage::connect_v2(
        &Credentials::Token("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl".to_owned()),
        None,
    ));
    t.server(vec![error(
        None,
        ErrorCode::AuthenticationFailed,
        "token refused: ExpiredSignature",
    )]);
    t.finish()
}

fn v1_session() -> Fixture {
    let mut t = Transcript::new(
        "v1-session",
        "A version-1 client (`version: 1`): no `token`, no `limits`, no `s`, no heartbeats; \
         updates and deltas as in version 2; undecodable requests get MALFORMED_MESSAGE.",
        1,
    );
    t.client_text(r#"{"type":"connect","version":1}"#);
    t.server(vec![Out::reply(ServerMessage::Connected {
        version: PROTOCOL_VERSION_1,
        session: SESSION.to_owned(),
        token: None,
        recovered: None,
        reason: None,
        limits: None,
    })]);
    t.client(&add(1, "golden/json", TopicType::Json, Some(BIG_NUMBERS)));
    t.server(vec![ok(1)]);
    t.client(&subscribe(2, "?golden//"));
    let frame = vec![
        t.subscribed(1, "golden/json", TopicType::Json),
        t.value(1, BIG_NUMBERS),
        ok(2),
    ];
    t.server(frame);
    let next = reading(2, "930201.0042");
    t.client(&set(3, "golden/json", &next));
    let frame = vec![t.delta(1, &next), ok(3)];
    t.server(frame);
    for text in [
        "nope",
        r#"{"type":"set","cid":4}"#,
        r#"{"type":"explode","cid":5}"#,
    ] {
        t.client_text(text);
        t.server(vec![decode_error(text, 1)]);
    }
    t.finish()
}

fn unknown_fields() -> Fixture {
    let mut t = Transcript::new(
        "unknown-fields",
        "Fields a decoder does not know (`x-future`, a new limit) in `connected`, `subscribed`, \
         an update, a delta and a reply. Decoders ignore them: the normalised messages leave \
         them out.",
        2,
    );
    t.client(&connect_v2(None));
    let hello = Out::reply(connected(SESSION, Some(TOKEN), None));
    let wire = String::from_utf8(hello.wire.to_vec())
        .expect("UTF-8")
        .replace(
            r#""reconnectWindowMs":60000"#,
            r#""reconnectWindowMs":60000,"maxFutureThings":3"#,
        );
    t.server(vec![
        Out::new(Bytes::from(wire), hello.expected).with_future_field(),
    ]);
    t.client(&subscribe(1, "?golden//"));
    let frame = vec![
        t.subscribed(1, "golden/json", TopicType::Json)
            .with_future_field(),
        t.value(1, BIG_NUMBERS).with_future_field(),
        ok(1).with_future_field(),
    ];
    t.server(frame);
    let d = t.delta(1, &reading(2, "930201.0042")).with_future_field();
    t.server(vec![d]);
    t.client(&ClientMessage::Ping { cid: 2 });
    t.server(vec![
        Out::reply(ServerMessage::Pong { cid: 2 }).with_future_field(),
    ]);
    t.finish()
}

fn fixtures() -> Vec<Fixture> {
    vec![
        handshake_and_updates(),
        deltas(),
        batching(),
        recovery_recovered(),
        recovery_not_recovered(),
        heartbeat_ack(),
        errors_v2(),
        handshake_refused(),
        authentication_refused(),
        v1_session(),
        unknown_fields(),
    ]
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/protocol")
}

/// Every fixture as the text of its file.
fn rendered() -> Vec<(String, String)> {
    fixtures()
        .into_iter()
        .map(|f| {
            let text = serde_json::to_string_pretty(&f).expect("serialises") + "\n";
            (format!("{}.json", f.name), text)
        })
        .collect()
}

#[test]
fn fixtures_are_current() {
    let dir = fixture_dir();
    let files = rendered();
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        return;
    }
    let mut problems = Vec::new();
    for (name, text) in &files {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(on_disk) if on_disk == *text => {}
            Ok(_) => problems.push(format!("fixture {name} is stale")),
            Err(_) => problems.push(format!("fixture {name} is missing")),
        }
    }
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !files.iter().any(|(n, _)| *n == name) {
            problems.push(format!("fixture {name} is no longer generated: delete it"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}: run UPDATE_GOLDEN=1 cargo test -p diffusion-core --test golden",
        problems.join("; ")
    );
}

/// What a decoder holds for one topic: its type and canonical value.
type Held = BTreeMap<u64, (TopicType, Option<TopicValue>)>;

/// Applies one decoded message to what a client holds, as docs/protocol.md §5.1 says.
fn apply(held: &mut Held, message: &ServerMessage) {
    match message {
        ServerMessage::Connected { recovered, .. } if *recovered != Some(true) => held.clear(),
        ServerMessage::Subscribed { id, topic_type, .. } => {
            held.insert(*id, (*topic_type, None));
        }
        ServerMessage::Unsubscribed { id, .. } => {
            held.remove(id);
        }
        ServerMessage::Value { id, value } => {
            let (topic_type, slot) = held.get_mut(id).expect("a subscribed topic");
            *slot = TopicValue::from_json(*topic_type, value).expect("fits the type");
        }
        ServerMessage::Delta { id, delta } => {
            let (topic_type, slot) = held.get_mut(id).expect("a subscribed topic");
            let base = slot.as_ref().expect("a value to apply the delta to");
            let delta = BASE64.decode(delta).expect("base64");
            let bytes = diffusion_core::delta::apply(base.canonical(), &delta, 1 << 20)
                .expect("the delta applies");
            *slot = Some(TopicValue::from_canonical(*topic_type, bytes).expect("valid"));
        }
        _ => {}
    }
}

#[test]
fn rust_decoder_reads_every_fixture() {
    for (name, text) in rendered() {
        let fixture: Value = serde_json::from_str(&text).unwrap();
        let mut held = Held::new();
        let mut seqs = Vec::new();
        for frame in fixture["frames"].as_array().unwrap() {
            if frame["from"] != "server" {
                continue;
            }
            let listed = frame["messages"].as_array().unwrap();
            let parts: Vec<&str> = split_frame(frame["text"].as_str().unwrap()).collect();
            assert_eq!(parts.len(), listed.len(), "{name}: {frame}");
            for (part, expected) in parts.into_iter().zip(listed) {
                let (message, seq) = decode_sequenced_message(part).unwrap();
                let mut normalised = serde_json::to_value(&message).unwrap();
                if let Some(seq) = seq {
                    normalised["s"] = seq.into();
                    seqs.push(seq);
                }
                assert_eq!(&normalised, expected, "{name}: {part}");
                apply(&mut held, &message);
            }
        }
        let values: BTreeMap<String, Value> = held
            .iter()
            .map(|(id, (_, v))| {
                (
                    id.to_string(),
                    v.as_ref().map_or(Value::Null, TopicValue::to_json),
                )
            })
            .collect();
        assert_eq!(
            serde_json::to_value(values).unwrap(),
            fixture["values"],
            "{name}: values"
        );
        // Exact numbers: the file holds them as written.
        if text.contains("\"big\"") {
            assert!(text.contains("123456789012345678901234567890"), "{name}");
            assert!(text.contains("930192.7818915497"), "{name}");
        }
        // Sequence numbers grow by one within a session and start at 1.
        assert!(seqs.first().is_none_or(|s| *s == 1), "{name}: {seqs:?}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1 || w[1] == 1),
            "{name}: {seqs:?}"
        );
    }
}

#[test]
fn client_frames_decode() {
    for fixture in fixtures() {
        for frame in fixture.frames.iter().filter(|f| f.from == "client") {
            let decoded = decode_client_message(&frame.text);
            let deliberate = fixture.name == "errors-v2" || fixture.name == "v1-session";
            assert!(
                decoded.is_ok() || deliberate,
                "{}: {}",
                fixture.name,
                frame.text
            );
        }
    }
}
