//! The benchmark payload and the timestamp it carries.
//!
//! Every published message is a small JSON object `{"pad":"…","seq":N,"ts":T}` with its keys
//! already sorted, so the text the publisher sends is byte for byte the canonical form the topic
//! server keeps (compact JSON, sorted keys). `ts` is the publish time in nanoseconds since the
//! Unix epoch (all processes share this machine's clock); `seq` numbers the messages so that a
//! subscriber can tell how far it has got even when a server merges (conflates) updates.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of a payload besides the padding, with a 13-digit `seq` and a 19-digit `ts`.
const FIXED_BYTES: usize = r#"{"pad":"","seq":,"ts":}"#.len() + 13 + 19;

/// Nanoseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a subscriber reads back from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The message's sequence number.
    pub seq: u64,
    /// Its publish time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
}

/// Builds payloads of a fixed size, so every system carries the same bytes.
#[derive(Debug, Clone)]
pub struct PayloadBuilder {
    pad: Vec<u8>,
    random: bool,
    state: u64,
}

impl PayloadBuilder {
    /// Payloads of about `target_bytes` bytes. With `random_pad` the padding changes on every
    /// message, which defeats the topic server's deltas (its subscribers then get full values).
    pub fn new(target_bytes: usize, random_pad: bool) -> Self {
        let len = target_bytes.saturating_sub(FIXED_BYTES).max(1);
        Self {
            pad: vec![b'x'; len],
            random: random_pad,
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// The payload for message `seq`, stamped with `ts_ns`.
    pub fn build(&mut self, seq: u64, ts_ns: u64) -> String {
        if self.random {
            for byte in &mut self.pad {
                *byte = b'a' + (xorshift(&mut self.state) % 26) as u8;
            }
        }
        let pad = String::from_utf8_lossy(&self.pad);
        format!(r#"{{"pad":"{pad}","seq":{seq},"ts":{ts_ns}}}"#)
    }
}

/// Steps a xorshift64 generator: cheap, and random enough for padding and price moves.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Builds market ticks, one price per topic moving a few cents each tick:
/// `{"px":{"ask":A,"bid":B},"seq":N,"size":S,"ts":T}` (about 90 bytes, keys sorted, numbers as
/// serde_json writes them, so the text is the topic server's canonical form). Price and size
/// change on every tick of a topic while the shape stays, so the topic server's deltas apply.
#[derive(Debug, Clone)]
pub struct TickBuilder {
    /// Bid price of each topic, in cents.
    bid_cents: Vec<u64>,
    state: u64,
}

impl TickBuilder {
    /// Ticks for `topics` topics, their prices starting between 10.00 and 1,009.99.
    pub fn new(topics: usize) -> Self {
        let mut state = 0x2545_F491_4F6C_DD1D;
        let bid_cents = (0..topics.max(1))
            .map(|_| 1_000 + xorshift(&mut state) % 100_000)
            .collect();
        Self { bid_cents, state }
    }

    /// The next tick of topic `topic`, numbered `seq` and stamped `ts_ns`.
    pub fn build(&mut self, topic: usize, seq: u64, ts_ns: u64) -> String {
        let step = xorshift(&mut self.state);
        let count = self.bid_cents.len();
        let bid = &mut self.bid_cents[topic % count];
        // A move of -5..=+5 cents, never below 1.00.
        *bid = (*bid + (step % 11)).saturating_sub(5).max(100);
        let spread = 1 + (step >> 8) % 4;
        let size = 100 * (1 + (step >> 16) % 50);
        let price = |cents: u64| serde_json::Value::from(cents as f64 / 100.0);
        format!(
            r#"{{"px":{{"ask":{},"bid":{}}},"seq":{seq},"size":{size},"ts":{ts_ns}}}"#,
            price(*bid + spread),
            price(*bid)
        )
    }
}

/// The payloads of a run: fixed-size padded messages on one topic, or market ticks.
#[derive(Debug, Clone)]
pub enum Payloads {
    /// `{"pad":…,"seq":…,"ts":…}` of a fixed size ([`PayloadBuilder`]).
    Padded(PayloadBuilder),
    /// Market ticks, one price per topic ([`TickBuilder`]).
    Ticks(TickBuilder),
}

impl Payloads {
    /// The payload of message `seq` on topic `topic`, stamped `ts_ns`.
    pub fn build(&mut self, topic: usize, seq: u64, ts_ns: u64) -> String {
        match self {
            Self::Padded(builder) => builder.build(seq, ts_ns),
            Self::Ticks(builder) => builder.build(topic, seq, ts_ns),
        }
    }
}

/// Finds the last occurrence of `needle` in `haystack` (the stamp fields are at the end).
fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Reads the decimal number that starts at `at`.
fn number_at(bytes: &[u8], at: usize) -> Option<u64> {
    let digits = bytes.get(at..)?;
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Reads `seq` and `ts` from a payload's JSON text without parsing the whole document; `None`
/// for anything that is not a benchmark payload (the bitcoin feed, say).
pub fn read_stamp(json: &[u8]) -> Option<Stamp> {
    let ts_at = rfind(json, br#""ts":"#)? + 5;
    let seq_at = rfind(json, br#""seq":"#)? + 6;
    Some(Stamp {
        seq: number_at(json, seq_at)?,
        ts_ns: number_at(json, ts_at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_canonical_and_about_the_target_size() {
        let mut builder = PayloadBuilder::new(100, false);
        let text = builder.build(1_764_000_000_000, 1_764_000_000_000_000_000);
        assert_eq!(text.len(), 100, "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
    }

    #[test]
    fn stamp_round_trips() {
        let mut builder = PayloadBuilder::new(100, true);
        let a = builder.build(7, 123_456_789);
        let b = builder.build(8, 123_456_790);
        assert_ne!(a[..60], b[..60]);
        assert_eq!(
            read_stamp(a.as_bytes()),
            Some(Stamp {
                seq: 7,
                ts_ns: 123_456_789
            })
        );
    }

    #[test]
    fn ticks_are_canonical_move_and_carry_their_stamp() {
        let mut ticks = TickBuilder::new(3);
        let first = ticks.build(1, 10, 1_764_000_000_000_000_000);
        let value: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), first);
        assert!(value["px"]["ask"].as_f64().unwrap() > value["px"]["bid"].as_f64().unwrap());
        assert_eq!(
            read_stamp(first.as_bytes()),
            Some(Stamp {
                seq: 10,
                ts_ns: 1_764_000_000_000_000_000
            })
        );
        let later: Vec<String> = (11..20).map(|seq| ticks.build(1, seq, 5)).collect();
        assert!(
            later.iter().any(|t| t[..30] != first[..30]),
            "the price moves"
        );
        assert!(first.len() < 110, "{first}");
        let mut payloads = Payloads::Ticks(TickBuilder::new(2));
        assert!(payloads.build(5, 1, 2).starts_with(r#"{"px":"#));
    }

    #[test]
    fn foreign_json_has_no_stamp() {
        assert_eq!(read_stamp(br#"{"bpi":{"USD":{"rate":"1"}}}"#), None);
        assert_eq!(read_stamp(br#"{"seq":"x","ts":1}"#), None);
        assert_eq!(read_stamp(b""), None);
    }
}
