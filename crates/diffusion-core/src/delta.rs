//! Binary deltas between two versions of a value's canonical bytes.
//!
//! The format is the fossil delta format (copy-range and insert-bytes commands with a checksum),
//! produced and applied by the `fossil-delta` crate; the npm package of the same name applies it
//! in browsers, byte-compatible. The server computes a delta once per topic update and shares it
//! with every subscriber that holds the previous value.

use bytes::Bytes;

/// A delta that cannot be applied to the bytes given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delta does not apply: {0}")]
pub struct DeltaError(pub String);

/// Computes the delta turning `old` into `new`, or `None` when sending `new` whole would be no
/// larger (or when nothing changed: a "no change" delta is never sent).
pub fn diff(old: &[u8], new: &[u8]) -> Option<Bytes> {
    if old == new {
        return None;
    }
    let delta = fossil_delta::delta(new, old);
    (delta.len() < new.len()).then(|| Bytes::from(delta))
}

/// Applies `delta` to `old`, producing at most `max_output` bytes. A corrupt or mismatched
/// delta is an error, never a crash, and a delta declaring a larger output is refused before
/// anything is allocated (the format states its output size up front, and the decoder would
/// otherwise reserve whatever a hostile or broken peer declares).
pub fn apply(old: &[u8], delta: &[u8], max_output: usize) -> Result<Bytes, DeltaError> {
    // fossil-delta indexes without bounds checks on malformed input; contain that here so
    // that bytes from the network can never bring a process down.
    // The crate also accepts a delta cut short before its checksum; insist on the terminator
    // and on the declared output size.
    if delta.last() != Some(&b';') {
        return Err(DeltaError("delta is truncated".to_owned()));
    }
    let declared = declared_size(delta)?;
    if declared > max_output {
        return Err(DeltaError(format!(
            "delta declares {declared} output bytes, more than the limit of {max_output}"
        )));
    }
    let outcome = std::panic::catch_unwind(|| fossil_delta::apply(old, delta));
    match outcome {
        // The size is compared with our own reading of the header: the crate reads it in
        // 32-bit arithmetic, where 4 GiB + 3 passes as 3.
        Ok(Ok(bytes)) if declared == bytes.len() => Ok(Bytes::from(bytes)),
        Ok(Ok(_)) => Err(DeltaError("delta output has the wrong size".to_owned())),
        Ok(Err(e)) => Err(DeltaError(format!("{e:?}"))),
        Err(_) => Err(DeltaError("malformed delta".to_owned())),
    }
}

/// The output size a fossil delta declares: base-64 digits (`0-9A-Za-z_~`) up to a newline.
fn declared_size(delta: &[u8]) -> Result<usize, DeltaError> {
    let header = delta
        .iter()
        .position(|b| *b == b'\n')
        .map(|end| &delta[..end])
        .filter(|digits| !digits.is_empty() && digits.len() <= 12)
        .ok_or_else(|| DeltaError("delta has no output size".to_owned()))?;
    header.iter().try_fold(0usize, |size, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'Z' => b - b'A' + 10,
            b'_' => 36,
            b'a'..=b'z' => b - b'a' + 37,
            b'~' => 63,
            _ => return Err(DeltaError("delta output size is not a number".to_owned())),
        };
        Ok(size.saturating_mul(64).saturating_add(usize::from(digit)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = include_str!("../testdata/coindesk-bpi-sample.json");

    #[test]
    fn bitcoin_update_delta_is_small_and_applies() {
        let old = SAMPLE.trim().as_bytes();
        let new_text = SAMPLE
            .trim()
            .replace("56,189.3483", "56,201.0042")
            .replace("56189.3483", "56201.0042");
        let delta = diff(old, new_text.as_bytes()).unwrap();
        assert!(delta.len() < 60, "delta is {} bytes", delta.len());
        assert_eq!(apply(old, &delta, 1 << 20).unwrap(), new_text.as_bytes());
    }

    #[test]
    fn no_delta_for_equal_or_unrelated_values() {
        assert_eq!(diff(b"same", b"same"), None);
        assert_eq!(diff(b"abc", b"xyz"), None);
    }

    #[test]
    fn corrupt_deltas_are_errors() {
        let old = b"hello world, hello world, hello world";
        let new = b"hello world, hello there, hello world";
        let delta = diff(old, new).unwrap();
        assert!(apply(b"something else entirely", &delta, 1 << 20).is_err());
        assert!(apply(old, b"", 1 << 20).is_err());
        assert!(apply(old, b"zz@@@", 1 << 20).is_err());
        let mut truncated = delta.to_vec();
        truncated.truncate(delta.len() / 2);
        assert!(apply(old, &truncated, 1 << 20).is_err());
    }

    #[test]
    fn declared_sizes_past_the_limit_are_refused_before_allocating() {
        let old = b"hello world, hello world, hello world";
        let new = b"hello world, hello there, hello world";
        let delta = diff(old, new).unwrap();
        assert_eq!(declared_size(&delta).unwrap(), new.len());
        assert!(apply(old, &delta, new.len()).is_ok());
        let err = apply(old, &delta, new.len() - 1).unwrap_err();
        assert!(err.0.contains("more than the limit"), "{err}");
        // A delta declaring ~68 GB (what crashed topic-cli): refused, nothing reserved.
        let hostile = b"~~~~~~\n0,1:x;";
        let err = apply(old, hostile, 64 << 20).unwrap_err();
        assert!(err.0.contains("more than the limit"), "{err}");
        assert!(apply(old, b";", 100).is_err());
        // A valid delta to "abc" whose header says 4 GiB + 3, which wraps to 3 in 32-bit
        // arithmetic: never taken for a 3-byte output.
        let valid = String::from_utf8(fossil_delta::delta(b"abc", b"")).unwrap();
        assert!(valid.starts_with("3\n"), "{valid}");
        assert_eq!(apply(b"", valid.as_bytes(), 100).unwrap(), &b"abc"[..]);
        let wrapped = valid.replacen("3\n", "400003\n", 1);
        assert!(apply(b"", wrapped.as_bytes(), usize::MAX).is_err());
        assert!(apply(old, b"?\n;", 100).is_err());
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-zA-Z0-9 ,.é€]{0,30}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,8}", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn apply_inverts_diff_for_json_pairs(a in json_value(), b in json_value()) {
            let old = serde_json::to_vec(&a).unwrap();
            let new = serde_json::to_vec(&b).unwrap();
            if let Some(delta) = diff(&old, &new) {
                prop_assert!(delta.len() < new.len());
                prop_assert_eq!(apply(&old, &delta, new.len()).unwrap(), Bytes::from(new));
            } else {
                prop_assert!(old == new || fossil_delta::delta(&new, &old).len() >= new.len());
            }
        }

        #[test]
        fn apply_inverts_diff_for_edited_documents(a in json_value(), edit in json_value()) {
            // A realistic update: the same document with one field changed.
            let mut doc = serde_json::json!({"payload": a.clone(), "padding": "x".repeat(200)});
            let old = serde_json::to_vec(&doc).unwrap();
            doc["edit"] = edit;
            let new = serde_json::to_vec(&doc).unwrap();
            let delta = diff(&old, &new);
            if let Some(delta) = delta {
                prop_assert_eq!(apply(&old, &delta, new.len()).unwrap(), Bytes::from(new));
            }
        }
    }
}
