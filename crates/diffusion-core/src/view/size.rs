//! The size of a value as compact JSON, counted without writing it.
//!
//! Every result of a view is charged its compact JSON size against
//! [`EvalLimits::max_output_bytes`](super::EvalLimits); counting by serialising the result to a
//! byte counter formatted every number and escaped every string on each source update, which
//! cost as much as the rest of an evaluation. This counts the same bytes from the tree: a
//! number is the text it holds (`arbitrary_precision`), a string its UTF-8 bytes plus what
//! serde_json's escaping adds. The tests hold it to `serde_json::to_vec(v).len()`.

use serde_json::Value;

/// Extra bytes serde_json's compact writer spends on each byte of a string: `"` and `\` and
/// the short escapes (`\b \t \n \f \r`) take one more byte, the other control characters are
/// written `\u00XX` (five more), everything else (all of UTF-8 above 0x1F) is written as is.
const EXTRA: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = 5;
        byte += 1;
    }
    table[0x08] = 1;
    table[0x09] = 1;
    table[0x0A] = 1;
    table[0x0C] = 1;
    table[0x0D] = 1;
    table[b'"' as usize] = 1;
    table[b'\\' as usize] = 1;
    table
};

/// The length of `value` as compact JSON (`serde_json::to_vec(value).len()`). Recurses once
/// per level of nesting, as serialising does: values are at most as deep as the parser and
/// the view's own constants allow.
pub(crate) fn json_size(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => n.as_str().len(),
        Value::String(s) => string_size(s),
        Value::Array(items) => {
            let commas = items.len().saturating_sub(1);
            2 + commas + items.iter().map(json_size).sum::<usize>()
        }
        Value::Object(map) => {
            let commas = map.len().saturating_sub(1);
            // Each member is `"key":value`.
            2 + commas
                + map
                    .iter()
                    .map(|(key, member)| string_size(key) + 1 + json_size(member))
                    .sum::<usize>()
        }
    }
}

/// The length of `text` as a JSON string literal, quotes included.
fn string_size(text: &str) -> usize {
    let bytes = text.as_bytes();
    // Most text needs no escape: look at 8 bytes at a time and count escapes byte by byte only
    // in the words that hold one.
    let mut words = bytes.chunks_exact(8);
    let mut extra = 0;
    for word in words.by_ref() {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        if may_escape(u64::from_le_bytes(eight)) {
            extra += escapes(word);
        }
    }
    text.len() + 2 + extra + escapes(words.remainder())
}

/// What escaping adds to `bytes`.
fn escapes(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .map(|&b| usize::from(EXTRA[usize::from(b)]))
        .sum()
}

/// Whether any of the 8 bytes in `word` is below 0x20, `"` or `\` (it may report a word that
/// has none; never misses one).
fn may_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte is zero / below n when subtracting borrows into its high bit (the classic
    // "has zero byte" test; bytes of 0x80 and above are excluded by `!word`).
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * u64::from(b'\\')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn serialised(value: &Value) -> usize {
        serde_json::to_vec(value).map_or(0, |bytes| bytes.len())
    }

    #[test]
    fn every_byte_of_a_string_counts_as_serde_json_writes_it() {
        for byte in 0u8..=0x7F {
            let text = format!("a{}b", char::from(byte));
            let value = Value::String(text);
            assert_eq!(json_size(&value), serialised(&value), "byte {byte:#04x}");
        }
        for text in ["", "é", "€uro", "\u{10FFFF}", "\u{7F}\u{80}", "\"\\/"] {
            let value = json!(text);
            assert_eq!(json_size(&value), serialised(&value), "{text:?}");
        }
    }

    #[test]
    fn escapes_are_found_at_every_offset_of_long_text() {
        for escape in ['"', '\\', '\n', '\u{1}', '\u{1F}'] {
            for at in 0..24 {
                let mut text: String = "abcdefghijklmnopqrstuvwé".chars().collect();
                text.insert(at.min(text.len() - 2), escape);
                let value = Value::String(text);
                assert_eq!(json_size(&value), serialised(&value), "{escape:?} at {at}");
            }
        }
    }

    #[test]
    fn numbers_count_as_the_text_they_hold() {
        let text = r#"[0, -0, 1e400, -1.5E-7, 56189.3483, 18446744073709551615,
            -9223372036854775808, 123456789012345678901234567890, 0.1, 5e-324]"#;
        let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        assert!(value.is_array());
        assert_eq!(json_size(&value), serialised(&value));
        for f in [0.1, 1.0 / 3.0, f64::MAX, f64::MIN_POSITIVE, -2.5e-310] {
            let value = json!(f);
            assert_eq!(json_size(&value), serialised(&value), "{f}");
        }
    }

    #[test]
    fn containers_count_brackets_commas_and_colons() {
        for value in [
            json!([]),
            json!({}),
            json!([null, true, false]),
            json!({"a": {"": [1, {"\n": "x"}]}, "b": []}),
        ] {
            assert_eq!(json_size(&value), serialised(&value), "{value}");
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn size_is_the_serialised_length(value in any_json()) {
            prop_assert_eq!(json_size(&value), serialised(&value));
        }
    }
}
