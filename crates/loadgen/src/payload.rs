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
                // xorshift64: cheap, and good enough to make every pad different.
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                *byte = b'a' + (self.state % 26) as u8;
            }
        }
        let pad = String::from_utf8_lossy(&self.pad);
        format!(r#"{{"pad":"{pad}","seq":{seq},"ts":{ts_ns}}}"#)
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
    fn foreign_json_has_no_stamp() {
        assert_eq!(read_stamp(br#"{"bpi":{"USD":{"rate":"1"}}}"#), None);
        assert_eq!(read_stamp(br#"{"seq":"x","ts":1}"#), None);
        assert_eq!(read_stamp(b""), None);
    }
}
