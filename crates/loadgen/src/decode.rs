//! Turning what a subscriber receives into counted messages and timestamps, per protocol.
//!
//! The decoders do the least work that still yields every payload's stamp: the topic server's
//! frames are split on `\n` and each message's top-level fields are located by a small scanner
//! that builds no tree (values stay byte slices; unknown fields are skipped); `delta` messages
//! are applied to the canonical bytes the connection holds for the topic (as a real client
//! must) so the stamp can be read from the resulting JSON; NATS and Redis streams are parsed
//! incrementally because a message may span frames or reads.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, Bytes, BytesMut};

use crate::payload::{Stamp, read_stamp};

/// Largest value a delta may produce: what the load generator's WebSocket layer accepts as
/// one message, so a full value could not be larger either.
const MAX_VALUE_BYTES: usize = 64 << 20;

/// On a version-2 session, acknowledge after this many numbered messages even without a
/// heartbeat, so the server can free its recovery buffer (as a real client does).
pub const ACK_EVERY: u64 = 256;

/// Something a subscriber received that the benchmark cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A `delta` arrived with no value to apply it to, or did not apply.
    #[error("delta could not be applied: {0}")]
    Delta(String),
    /// The server answered with an error.
    #[error("server error: {0}")]
    Server(String),
    /// The server ended the subscription.
    #[error("unsubscribed by the server: {0}")]
    Unsubscribed(String),
    /// Bytes that do not follow the protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Which wire protocol a subscriber speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Topic server protocol (version 2, or 1 when the server answers with it):
    /// `\n`-separated JSON messages, `value` and `delta` updates, sequence numbers `s`.
    Topic,
    /// One payload per line (`\n`-separated, usually one per frame): the bridges and the limit
    /// server.
    Lines,
    /// NATS client protocol (`MSG … \r\n payload \r\n`), possibly several per frame.
    Nats,
    /// Redis RESP2 pub/sub (`*3 message channel payload`).
    Redis,
}

/// What one frame (or read) held.
#[derive(Debug, Default)]
pub struct FrameOutcome {
    /// Data messages (payload deliveries) in it.
    pub messages: u64,
    /// The stamps read from those messages that carried one.
    pub stamps: Vec<Stamp>,
    /// The subscription was confirmed (`ok`, `PONG`, `subscribe` reply).
    pub acked: bool,
    /// Bytes to send back (the NATS `PONG` answer to a server `PING`).
    pub reply: Option<&'static [u8]>,
    /// Topic server (version 2): send `{"type":"ack","s":N}` with this N, the last sequence
    /// number processed (a heartbeat arrived, or [`ACK_EVERY`] messages since the last ack).
    pub ack: Option<u64>,
    /// The first problem found, if any.
    pub error: Option<DecodeError>,
    /// Topic server: when `Some`, every update decoded is also recorded here (for tests and
    /// tools; off on the benchmark path).
    pub updates: Option<Vec<Update>>,
}

/// One topic update as a topic-server subscriber saw it, recorded when
/// [`FrameOutcome::updates`] is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The topic id.
    pub id: u64,
    /// The message's sequence number (version 2).
    pub seq: Option<u64>,
    /// Whether it was a delta (else a full value).
    pub delta: bool,
    /// The topic's canonical value after the update (`None`: no value).
    pub value: Option<Bytes>,
}

impl FrameOutcome {
    /// Empties the outcome for the next frame, keeping its allocation.
    pub fn clear(&mut self) {
        self.messages = 0;
        self.stamps.clear();
        self.acked = false;
        self.reply = None;
        self.ack = None;
        self.error = None;
        if let Some(updates) = &mut self.updates {
            updates.clear();
        }
    }

    fn fail(&mut self, error: DecodeError) {
        self.error.get_or_insert(error);
    }

    fn payload(&mut self, json: &[u8]) {
        self.messages += 1;
        if let Some(stamp) = read_stamp(json) {
            self.stamps.push(stamp);
        }
    }
}

/// How a topic's wire value maps to the canonical bytes deltas work on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireForm {
    /// JSON, INT64, DOUBLE: the wire JSON is the canonical text.
    Json,
    /// STRING: a JSON string; canonical bytes are its UTF-8 content.
    String,
    /// BINARY: a base64 JSON string; canonical bytes are the decoded bytes.
    Binary,
}

impl WireForm {
    fn of(topic_type: &[u8]) -> Self {
        match topic_type {
            b"STRING" => Self::String,
            b"BINARY" => Self::Binary,
            _ => Self::Json,
        }
    }
}

/// What a topic-server connection holds for one topic.
#[derive(Debug, Clone)]
struct Held {
    form: WireForm,
    /// Canonical bytes of the last value (deltas apply to them); `None`: no value.
    value: Option<Bytes>,
}

/// Per-connection decoding state.
#[derive(Debug)]
pub struct Decoder {
    protocol: Protocol,
    /// Topic server: what the connection holds per topic id (deltas apply to it).
    topics: HashMap<u64, Held>,
    /// Topic server: the last sequence number `s` received (0: none yet).
    last_seq: u64,
    /// Topic server: numbered messages since the last ack.
    unacked: u64,
    /// NATS / Redis: bytes not yet parsed.
    pending: BytesMut,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Decoder {
    /// A decoder for `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            topics: HashMap::new(),
            last_seq: 0,
            unacked: 0,
            pending: BytesMut::new(),
        }
    }

    /// Topic server: the last sequence number received (0 before the first), what an `ack`
    /// carries.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Topic server: the canonical bytes held for topic `id` (`None`: not subscribed, or no
    /// value).
    pub fn value(&self, id: u64) -> Option<&Bytes> {
        self.topics.get(&id).and_then(|held| held.value.as_ref())
    }

    /// Topic server: the ids of the topics the connection is subscribed to (or has received
    /// updates for), in no particular order.
    pub fn topic_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.topics.keys().copied()
    }

    /// Decodes one received frame (or TCP read) into `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut FrameOutcome) {
        match self.protocol {
            Protocol::Topic => {
                let mut heartbeat = false;
                for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    heartbeat |= self.topic_message(line, out);
                }
                if heartbeat || self.unacked >= ACK_EVERY {
                    self.unacked = 0;
                    out.ack = Some(self.last_seq);
                }
            }
            Protocol::Lines => {
                for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    out.payload(line);
                }
            }
            Protocol::Nats => {
                self.pending.extend_from_slice(data);
                self.nats_messages(out);
            }
            Protocol::Redis => {
                self.pending.extend_from_slice(data);
                self.redis_messages(out);
            }
        }
    }

    /// Handles one topic-server message; returns whether it was a `heartbeat`.
    fn topic_message(&mut self, line: &[u8], out: &mut FrameOutcome) -> bool {
        let Some(m) = Fields::scan(line) else {
            out.fail(DecodeError::Malformed(
                String::from_utf8_lossy(line).into_owned(),
            ));
            return false;
        };
        if let Some(seq) = m.seq {
            self.last_seq = seq;
            self.unacked += 1;
        }
        let text = || String::from_utf8_lossy(line).into_owned();
        match m.kind {
            // The short update form `{"i":N,"v":V}` / `{"i":N,"d":"B64"}`, or the tagged form
            // `{"type":"value","id":N,"value":V}` / `{"type":"delta","id":N,"delta":"B64"}`.
            None | Some(b"value" | b"delta") => {
                let applied = match (m.id, m.value, m.delta) {
                    (Some(id), Some(value), None) => {
                        self.apply_value(id, value, out).then_some((id, false))
                    }
                    (Some(id), None, Some(delta)) => {
                        self.apply_delta(id, delta, out).then_some((id, true))
                    }
                    // An object with neither `i` nor `type`: not a message we know.
                    (None, None, None) if m.kind.is_none() => return false,
                    _ => {
                        out.fail(DecodeError::Malformed(text()));
                        None
                    }
                };
                if let (Some((id, delta)), Some(updates)) = (applied, &mut out.updates) {
                    updates.push(Update {
                        id,
                        seq: m.seq,
                        delta,
                        value: self.value(id).cloned(),
                    });
                }
            }
            Some(b"ok") => out.acked = true,
            Some(b"error") => out.fail(DecodeError::Server(text())),
            Some(b"unsubscribed") => {
                if let Some(id) = m.id {
                    self.topics.remove(&id);
                }
                out.fail(DecodeError::Unsubscribed(text()));
            }
            Some(b"subscribed") => {
                if let Some(id) = m.id {
                    let form = WireForm::of(m.topic_type.unwrap_or(b""));
                    self.topics.insert(id, Held { form, value: None });
                }
            }
            // A new session (not a resumed one): topic ids and numbering start again.
            Some(b"connected") if !m.recovered => {
                self.topics.clear();
                self.last_seq = 0;
                self.unacked = 0;
            }
            Some(b"heartbeat") => return true,
            // connected (resumed), pong, fetched, views, and types from later versions.
            Some(_) => {}
        }
        false
    }

    /// A full value: counted, and held for the deltas that follow. `false`: it could not be
    /// read (reported in `out`).
    fn apply_value(&mut self, id: u64, wire: &[u8], out: &mut FrameOutcome) -> bool {
        let held = self.topics.entry(id).or_insert(Held {
            form: WireForm::Json,
            value: None,
        });
        if wire == b"null" {
            held.value = None;
            return true;
        }
        let canonical = match held.form {
            WireForm::Json => Some(Bytes::copy_from_slice(wire)),
            WireForm::String => string_content(wire).map(Bytes::from),
            WireForm::Binary => string_content(wire)
                .and_then(|b64| BASE64.decode(b64).ok())
                .map(Bytes::from),
        };
        let Some(canonical) = canonical else {
            held.value = None;
            out.fail(DecodeError::Malformed(format!(
                "value of topic {id}: {}",
                String::from_utf8_lossy(wire)
            )));
            return false;
        };
        out.payload(&canonical);
        held.value = Some(canonical);
        true
    }

    /// A delta (base64 of a fossil delta, a JSON string) against the value held for the topic.
    /// `false`: it did not apply (reported in `out`).
    fn apply_delta(&mut self, id: u64, field: &[u8], out: &mut FrameOutcome) -> bool {
        let Some(base) = self.topics.get(&id).and_then(|held| held.value.as_ref()) else {
            out.fail(DecodeError::Delta(format!("no value held for topic {id}")));
            return false;
        };
        let applied = unquote(field)
            .ok_or_else(|| DecodeError::Delta("delta is not a string".into()))
            .and_then(|encoded| {
                BASE64
                    .decode(encoded)
                    .map_err(|e| DecodeError::Delta(e.to_string()))
            })
            .and_then(|delta| {
                diffusion_core::delta::apply(base, &delta, MAX_VALUE_BYTES)
                    .map_err(|e| DecodeError::Delta(e.to_string()))
            });
        let Some(held) = self.topics.get_mut(&id) else {
            return false;
        };
        match applied {
            Ok(value) => {
                out.payload(&value);
                held.value = Some(value);
                true
            }
            Err(error) => {
                held.value = None;
                out.fail(error);
                false
            }
        }
    }

    fn nats_messages(&mut self, out: &mut FrameOutcome) {
        while let Some(eol) = find(&self.pending, b"\r\n") {
            let line = &self.pending[..eol];
            if line.starts_with(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let size = std::str::from_utf8(line)
                    .ok()
                    .and_then(|l| l.split_ascii_whitespace().last())
                    .and_then(|n| n.parse::<usize>().ok());
                let Some(size) = size else {
                    out.fail(DecodeError::Malformed(
                        String::from_utf8_lossy(line).into_owned(),
                    ));
                    self.pending.clear();
                    return;
                };
                let total = eol + 2 + size + 2;
                if self.pending.len() < total {
                    return; // the payload is still on its way
                }
                let payload = self.pending.split_to(total);
                out.payload(&payload[eol + 2..eol + 2 + size]);
                continue;
            }
            if line.starts_with(b"PING") {
                out.reply = Some(b"PONG\r\n");
            } else if line.starts_with(b"PONG") {
                out.acked = true;
            } else if line.starts_with(b"-ERR") {
                out.fail(DecodeError::Server(
                    String::from_utf8_lossy(line).into_owned(),
                ));
            }
            // INFO and +OK need nothing.
            self.pending.advance(eol + 2);
        }
    }

    fn redis_messages(&mut self, out: &mut FrameOutcome) {
        loop {
            match parse_resp_array(&self.pending) {
                Ok(Some((consumed, items))) => {
                    let kind = items.first().map(|r| &self.pending[r.clone()]);
                    match kind {
                        Some(b"message") => {
                            if let Some(range) = items.get(2) {
                                let payload = self.pending[range.clone()].to_vec();
                                out.payload(&payload);
                            }
                        }
                        Some(b"subscribe") => out.acked = true,
                        _ => {}
                    }
                    self.pending.advance(consumed);
                }
                Ok(None) => return,
                Err(error) => {
                    out.fail(error);
                    self.pending.clear();
                    return;
                }
            }
        }
    }
}

/// The top-level fields of a topic-server message the decoder reads, as slices of the message:
/// no tree, no allocation. Fields it does not know are skipped, wherever they are.
#[derive(Debug, Default)]
struct Fields<'a> {
    /// `type`, without its quotes (absent in the short update form).
    kind: Option<&'a [u8]>,
    /// `i` (short update form) or `id`.
    id: Option<u64>,
    /// `v` or `value`: the raw JSON value.
    value: Option<&'a [u8]>,
    /// `d` or `delta`: the raw JSON (a string, quotes included).
    delta: Option<&'a [u8]>,
    /// `s`: the sequence number (version 2).
    seq: Option<u64>,
    /// `topicType`, without its quotes.
    topic_type: Option<&'a [u8]>,
    /// `recovered` is `true`.
    recovered: bool,
}

impl<'a> Fields<'a> {
    /// Scans one message; `None` when it is not a JSON object.
    fn scan(text: &'a [u8]) -> Option<Self> {
        let mut fields = Self::default();
        let mut at = skip_ws(text, 0);
        if text.get(at) != Some(&b'{') {
            return None;
        }
        at = skip_ws(text, at + 1);
        if text.get(at) == Some(&b'}') {
            return (skip_ws(text, at + 1) == text.len()).then_some(fields);
        }
        loop {
            let key_end = string_end(text, at)?;
            let key = text.get(at + 1..key_end - 1)?;
            at = skip_ws(text, key_end);
            if text.get(at) != Some(&b':') {
                return None;
            }
            at = skip_ws(text, at + 1);
            let end = value_end(text, at)?;
            fields.set(key, text.get(at..end)?);
            at = skip_ws(text, end);
            match text.get(at) {
                Some(b',') => at = skip_ws(text, at + 1),
                Some(b'}') => return (skip_ws(text, at + 1) == text.len()).then_some(fields),
                _ => return None,
            }
        }
    }

    fn set(&mut self, key: &[u8], value: &'a [u8]) {
        match key {
            b"type" => self.kind = unquote(value),
            b"i" | b"id" => self.id = number(value),
            b"v" | b"value" => self.value = Some(value),
            b"d" | b"delta" => self.delta = Some(value),
            b"s" => self.seq = number(value),
            b"topicType" => self.topic_type = unquote(value),
            b"recovered" => self.recovered = value == b"true",
            _ => {}
        }
    }
}

/// The index of the first byte at or after `at` that is not JSON whitespace.
fn skip_ws(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The index just past the JSON string starting at `at` (which must be its opening quote).
fn string_end(text: &[u8], at: usize) -> Option<usize> {
    if text.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        // Jump to the next quote or backslash (payload strings are long runs of neither).
        i += text
            .get(i..)?
            .iter()
            .position(|b| *b == b'"' || *b == b'\\')?;
        match text.get(i)? {
            b'"' => return Some(i + 1),
            _ => i += 2,
        }
    }
}

/// The index just past the JSON value starting at `at`.
fn value_end(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at)? {
        b'"' => string_end(text, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match text.get(i)? {
                    b'"' => {
                        i = string_end(text, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        // A number, `true`, `false` or `null`: up to the next delimiter.
        _ => {
            let len = text
                .get(at..)?
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(text.len() - at);
            (len > 0).then_some(at + len)
        }
    }
}

/// A JSON string's raw content (no unescaping: for names and tags).
fn unquote(value: &[u8]) -> Option<&[u8]> {
    value.strip_prefix(b"\"")?.strip_suffix(b"\"")
}

/// A non-negative JSON integer.
fn number(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The content of a JSON string, unescaped (only strings with escapes pay for a parse).
fn string_content(wire: &[u8]) -> Option<Vec<u8>> {
    let inner = unquote(wire)?;
    if !inner.contains(&b'\\') {
        return Some(inner.to_vec());
    }
    serde_json::from_slice::<String>(wire)
        .ok()
        .map(String::into_bytes)
}

/// A parsed RESP array: bytes consumed and the byte ranges of its elements.
type RespArray = (usize, Vec<std::ops::Range<usize>>);

/// Parses one RESP2 array of bulk strings and integers at the start of `buf`: `Ok(None)` while
/// incomplete, otherwise the bytes consumed and the ranges of the elements.
fn parse_resp_array(buf: &[u8]) -> Result<Option<RespArray>, DecodeError> {
    fn line_end(buf: &[u8], from: usize) -> Option<usize> {
        find(buf.get(from..)?, b"\r\n").map(|i| from + i)
    }
    fn number(bytes: &[u8]) -> Result<i64, DecodeError> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| DecodeError::Malformed("bad RESP length".into()))
    }
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        let end = line_end(buf, 0).unwrap_or(buf.len());
        return Err(DecodeError::Malformed(
            String::from_utf8_lossy(&buf[..end]).into_owned(),
        ));
    }
    let Some(end) = line_end(buf, 1) else {
        return Ok(None);
    };
    let count = number(&buf[1..end])?;
    let mut at = end + 2;
    let mut items = Vec::new();
    for _ in 0..count.max(0) {
        let Some(&tag) = buf.get(at) else {
            return Ok(None);
        };
        let Some(end) = line_end(buf, at + 1) else {
            return Ok(None);
        };
        match tag {
            b'$' => {
                let len = usize::try_from(number(&buf[at + 1..end])?)
                    .map_err(|_| DecodeError::Malformed("negative bulk length".into()))?;
                let start = end + 2;
                if buf.len() < start + len + 2 {
                    return Ok(None);
                }
                items.push(start..start + len);
                at = start + len + 2;
            }
            b':' => {
                items.push(at + 1..end);
                at = end + 2;
            }
            other => {
                return Err(DecodeError::Malformed(format!(
                    "unexpected RESP type {:?}",
                    other as char
                )));
            }
        }
    }
    Ok(Some((at, items)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::PayloadBuilder;

    fn decode(decoder: &mut Decoder, data: &[u8]) -> FrameOutcome {
        let mut out = FrameOutcome::default();
        decoder.feed(data, &mut out);
        out
    }

    #[test]
    fn topic_values_and_deltas_yield_stamps() {
        let mut builder = PayloadBuilder::new(100, false);
        let first = builder.build(1, 1000);
        let second = builder.build(2, 2000);
        let delta = diffusion_core::delta::diff(first.as_bytes(), second.as_bytes()).unwrap();
        let frame = [
            diffusion_core::protocol::encode_value_message(4, first.as_bytes()),
            diffusion_core::protocol::encode_delta_message(4, &delta),
            Bytes::from_static(br#"{"type":"ok","cid":1}"#),
        ]
        .join(&b'\n');
        let mut decoder = Decoder::new(Protocol::Topic);
        let out = decode(&mut decoder, &frame);
        assert_eq!(out.messages, 2);
        assert!(out.acked);
        assert!(out.error.is_none());
        assert_eq!(
            out.stamps[1],
            Stamp {
                seq: 2,
                ts_ns: 2000
            }
        );
    }

    #[test]
    fn both_update_spellings_are_read() {
        let mut builder = PayloadBuilder::new(100, false);
        let first = builder.build(1, 1000);
        let second = builder.build(2, 2000);
        let delta = diffusion_core::delta::diff(first.as_bytes(), second.as_bytes()).unwrap();
        let encoded = BASE64.encode(&delta);
        for (value, delta) in [
            (
                format!(r#"{{"type":"value","id":4,"value":{first}}}"#),
                format!(r#"{{"type":"delta","id":4,"delta":"{encoded}"}}"#),
            ),
            (
                format!(r#"{{"i":4,"v":{first}}}"#),
                format!(r#"{{"i":4,"d":"{encoded}"}}"#),
            ),
        ] {
            let mut decoder = Decoder::new(Protocol::Topic);
            let frame = format!("{value}\n{delta}");
            let out = decode(&mut decoder, frame.as_bytes());
            assert_eq!(out.messages, 2, "{frame}");
            assert!(out.error.is_none(), "{frame}");
            assert_eq!(
                out.stamps[1],
                Stamp {
                    seq: 2,
                    ts_ns: 2000
                }
            );
        }
        let out = decode(&mut Decoder::new(Protocol::Topic), br#"{"i":4,"x":1}"#);
        assert!(matches!(out.error, Some(DecodeError::Malformed(_))));
    }

    #[test]
    fn delta_without_value_is_an_error() {
        let frame = diffusion_core::protocol::encode_delta_message(4, b"3\n2@0,1:x;");
        let out = decode(&mut Decoder::new(Protocol::Topic), &frame);
        assert!(matches!(out.error, Some(DecodeError::Delta(_))));
        let out = decode(
            &mut Decoder::new(Protocol::Topic),
            br#"{"type":"error","code":"X","message":"m"}"#,
        );
        assert!(matches!(out.error, Some(DecodeError::Server(_))));
    }

    #[test]
    fn version_2_sequence_numbers_heartbeats_and_unknown_fields() {
        let mut builder = PayloadBuilder::new(100, false);
        let first = builder.build(1, 1000);
        let second = builder.build(2, 2000);
        let delta = diffusion_core::delta::diff(first.as_bytes(), second.as_bytes()).unwrap();
        let encoded = BASE64.encode(&delta);
        let frame = format!(
            "{{\"type\":\"connected\",\"version\":2,\"session\":\"a\",\"token\":\"t\"}}\n\
             {{\"type\":\"subscribed\",\"id\":4,\"path\":\"p\",\"topicType\":\"JSON\",\
             \"properties\":{{}},\"s\":1}}\n\
             {{\"i\":4,\"x-future\":{{\"a\":[\"}}\\\"\"]}},\"v\":{first},\"s\":2}}\n\
             {{\"type\":\"ok\",\"cid\":1,\"x-future\":1,\"s\":3}}\n\
             {{\"type\":\"from-the-future\",\"id\":\"x\",\"s\":4}}\n\
             {{\"i\":4,\"d\":\"{encoded}\",\"s\":5}}\n\
             {{\"type\":\"heartbeat\"}}"
        );
        let mut decoder = Decoder::new(Protocol::Topic);
        let out = decode(&mut decoder, frame.as_bytes());
        assert!(out.error.is_none(), "{:?}", out.error);
        assert!(out.acked);
        assert_eq!(out.messages, 2);
        assert_eq!(out.stamps[1].seq, 2);
        assert_eq!(out.ack, Some(5));
        assert_eq!(decoder.last_seq(), 5);
        assert_eq!(&decoder.value(4).unwrap()[..], second.as_bytes());
        // A version-1 session: no `s`, no acks.
        let mut decoder = Decoder::new(Protocol::Topic);
        let out = decode(
            &mut decoder,
            b"{\"type\":\"connected\",\"version\":1,\"session\":\"a\"}\n{\"i\":1,\"v\":2}",
        );
        assert_eq!((out.messages, out.ack, decoder.last_seq()), (1, None, 0));
    }

    #[test]
    fn acks_go_out_unprompted_every_so_often() {
        let mut decoder = Decoder::new(Protocol::Topic);
        let frame: Vec<String> = (1..=ACK_EVERY)
            .map(|s| format!("{{\"i\":1,\"v\":{s},\"s\":{s}}}"))
            .collect();
        let out = decode(&mut decoder, frame[..10].join("\n").as_bytes());
        assert_eq!(out.ack, None);
        let out = decode(&mut decoder, frame[10..].join("\n").as_bytes());
        assert_eq!(out.ack, Some(ACK_EVERY));
        let out = decode(&mut decoder, b"{\"i\":1,\"v\":0,\"s\":1000}");
        assert_eq!(out.ack, None);
    }

    #[test]
    fn string_and_binary_deltas_apply_to_canonical_bytes() {
        let old = "a long enough string with \"quotes\" and é, to make a delta worth it";
        let new = old.replace("quotes", "QUOTES");
        let delta = diffusion_core::delta::diff(old.as_bytes(), new.as_bytes()).unwrap();
        let bytes: Vec<u8> = (0u8..80).collect();
        let mut changed = bytes.clone();
        changed[50] = 0xff;
        let bin_delta = diffusion_core::delta::diff(&bytes, &changed).unwrap();
        let frame = format!(
            "{{\"type\":\"subscribed\",\"id\":2,\"path\":\"s\",\"topicType\":\"STRING\",\"properties\":{{}}}}\n\
             {{\"type\":\"subscribed\",\"id\":3,\"path\":\"b\",\"topicType\":\"BINARY\",\"properties\":{{}}}}\n\
             {{\"i\":2,\"v\":{}}}\n{{\"i\":2,\"d\":\"{}\"}}\n\
             {{\"i\":3,\"v\":\"{}\"}}\n{{\"i\":3,\"d\":\"{}\"}}",
            serde_json::to_string(old).unwrap(),
            BASE64.encode(&delta),
            BASE64.encode(&bytes),
            BASE64.encode(&bin_delta),
        );
        let mut decoder = Decoder::new(Protocol::Topic);
        let out = decode(&mut decoder, frame.as_bytes());
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(&decoder.value(2).unwrap()[..], new.as_bytes());
        assert_eq!(&decoder.value(3).unwrap()[..], &changed[..]);
        let out = decode(&mut decoder, br#"{"i":2,"v":null}"#);
        assert!(out.error.is_none());
        assert_eq!(decoder.value(2), None);
    }

    #[test]
    fn the_scanner_refuses_what_is_not_an_object() {
        for bad in [
            &b"nope"[..],
            b"{",
            b"{\"i\":1",
            b"{\"i\" 1}",
            b"{\"i\":1}}",
            b"[1]",
        ] {
            let out = decode(&mut Decoder::new(Protocol::Topic), bad);
            assert!(
                matches!(out.error, Some(DecodeError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let out = decode(&mut Decoder::new(Protocol::Topic), b"{}\n{\"x\":[{}]}");
        assert!(out.error.is_none());
    }

    #[test]
    fn nats_messages_may_span_frames() {
        let mut decoder = Decoder::new(Protocol::Nats);
        let payload = br#"{"pad":"x","seq":5,"ts":9}"#;
        let mut stream = b"INFO {}\r\nPING\r\n".to_vec();
        stream.extend_from_slice(format!("MSG bench.t 1 {}\r\n", payload.len()).as_bytes());
        stream.extend_from_slice(payload);
        stream.extend_from_slice(b"\r\nPONG\r\n");
        let (a, b) = stream.split_at(40);
        let first = decode(&mut decoder, a);
        assert_eq!(first.messages, 0);
        assert_eq!(first.reply, Some(&b"PONG\r\n"[..]));
        let second = decode(&mut decoder, b);
        assert_eq!(second.messages, 1);
        assert!(second.acked);
        assert_eq!(second.stamps[0].seq, 5);
        let bad = decode(&mut Decoder::new(Protocol::Nats), b"MSG a 1 zz\r\n");
        assert!(matches!(bad.error, Some(DecodeError::Malformed(_))));
    }

    #[test]
    fn redis_pubsub_is_parsed() {
        let mut decoder = Decoder::new(Protocol::Redis);
        let stream = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$5\r\nhello\r\n";
        let (a, b) = stream.split_at(50);
        let first = decode(&mut decoder, a);
        assert!(first.acked);
        assert_eq!(first.messages, 0);
        assert_eq!(decode(&mut decoder, b).messages, 1);
        let bad = decode(&mut Decoder::new(Protocol::Redis), b"-ERR nope\r\n");
        assert!(matches!(bad.error, Some(DecodeError::Malformed(_))));
    }

    #[test]
    fn lines_count_every_payload() {
        let out = decode(
            &mut Decoder::new(Protocol::Lines),
            b"{\"seq\":1,\"ts\":2}\n{}\n",
        );
        assert_eq!(out.messages, 2);
        assert_eq!(out.stamps.len(), 1);
    }
}
