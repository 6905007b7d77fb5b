//! Turning what a subscriber receives into counted messages and timestamps, per protocol.
//!
//! The decoders do the least work that still yields every payload's stamp: the topic server's
//! frames are split on `\n` and matched on their `type` prefix; `delta` messages are applied to
//! the value the connection holds (as a real client must) so the stamp can be read from the
//! resulting JSON; NATS and Redis streams are parsed incrementally because a message may span
//! frames or reads.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, Bytes, BytesMut};

use crate::payload::{Stamp, read_stamp};

/// Largest value a delta may produce: what the load generator's WebSocket layer accepts as
/// one message, so a full value could not be larger either.
const MAX_VALUE_BYTES: usize = 64 << 20;

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
    /// Topic server protocol v1: `\n`-separated JSON messages, `value` and `delta`.
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
    /// The first problem found, if any.
    pub error: Option<DecodeError>,
}

impl FrameOutcome {
    /// Empties the outcome for the next frame, keeping its allocation.
    pub fn clear(&mut self) {
        self.messages = 0;
        self.stamps.clear();
        self.acked = false;
        self.reply = None;
        self.error = None;
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

/// Per-connection decoding state.
#[derive(Debug)]
pub struct Decoder {
    protocol: Protocol,
    /// Topic server: the value the connection holds (deltas apply to it).
    held: Option<Bytes>,
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
            held: None,
            pending: BytesMut::new(),
        }
    }

    /// Decodes one received frame (or TCP read) into `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut FrameOutcome) {
        match self.protocol {
            Protocol::Topic => {
                for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    self.topic_message(line, out);
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

    fn topic_message(&mut self, line: &[u8], out: &mut FrameOutcome) {
        // Two spellings of the two update messages: the tagged form
        // `{"type":"value","id":N,"value":V}` / `{"type":"delta","id":N,"delta":"B64"}` and the
        // short form `{"i":N,"v":V}` / `{"i":N,"d":"B64"}`.
        let short = line.starts_with(br#"{"i":"#);
        if short
            || line.starts_with(br#"{"type":"value""#)
            || line.starts_with(br#"{"type":"delta""#)
        {
            let value_key: &[u8] = if short { br#","v":"# } else { br#","value":"# };
            let delta_key: &[u8] = if short {
                br#","d":""#
            } else {
                br#","delta":""#
            };
            if let Some(at) = find(line, value_key) {
                let value = line
                    .get(at + value_key.len()..line.len().saturating_sub(1))
                    .unwrap_or(b"");
                self.value(value, out);
            } else if let Some(at) = find(line, delta_key) {
                let encoded = line
                    .get(at + delta_key.len()..line.len().saturating_sub(2))
                    .unwrap_or(b"");
                self.delta(encoded, out);
            } else {
                out.fail(DecodeError::Malformed(
                    String::from_utf8_lossy(line).into_owned(),
                ));
            }
        } else if line.starts_with(br#"{"type":"ok""#) {
            out.acked = true;
        } else if line.starts_with(br#"{"type":"error""#) {
            out.fail(DecodeError::Server(
                String::from_utf8_lossy(line).into_owned(),
            ));
        } else if line.starts_with(br#"{"type":"unsubscribed""#) {
            out.fail(DecodeError::Unsubscribed(
                String::from_utf8_lossy(line).into_owned(),
            ));
        }
        // connected, subscribed, pong: nothing to count.
    }

    /// A full value: counted, and held for the deltas that follow.
    fn value(&mut self, value: &[u8], out: &mut FrameOutcome) {
        if value == b"null" {
            self.held = None;
            return;
        }
        out.payload(value);
        self.held = Some(Bytes::copy_from_slice(value));
    }

    /// A delta (base64 of a fossil delta) against the held value.
    fn delta(&mut self, encoded: &[u8], out: &mut FrameOutcome) {
        let Some(held) = self.held.as_ref() else {
            return out.fail(DecodeError::Delta("no value held".into()));
        };
        let applied = BASE64
            .decode(encoded)
            .map_err(|e| DecodeError::Delta(e.to_string()))
            .and_then(|delta| {
                diffusion_core::delta::apply(held, &delta, MAX_VALUE_BYTES)
                    .map_err(|e| DecodeError::Delta(e.to_string()))
            });
        match applied {
            Ok(value) => {
                out.payload(&value);
                self.held = Some(value);
            }
            Err(error) => {
                self.held = None;
                out.fail(error);
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
