//! Topic values: the canonical bytes a topic holds and how they appear on the JSON wire.
//!
//! Canonical bytes are what equality ("setting an equal value delivers nothing") and deltas work
//! on: JSON values are compact JSON with object keys sorted (serde_json's default map), strings
//! are their UTF-8 bytes, numbers their shortest decimal text, binaries their raw bytes.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::Value;

use crate::topic::TopicType;

/// A value that does not fit the topic's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The JSON given is of the wrong shape for the type.
    #[error("a {topic_type} topic cannot hold {found}")]
    WrongType {
        /// The topic's type.
        topic_type: TopicType,
        /// A short description of what was given.
        found: String,
    },
    /// BINARY values travel as base64 strings; this one did not decode.
    #[error("BINARY value is not valid base64: {0}")]
    Base64(String),
    /// Canonical bytes that are not valid for the type (a corrupted delta, say).
    #[error("bytes are not a valid {0} value")]
    Corrupt(TopicType),
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// One value of a topic, held as its canonical bytes. Cheap to clone (`Bytes`, `Arc`).
///
/// A JSON value may also carry its parsed tree, when whoever made it already had one (a
/// request's value, a view's result): views read values as trees, and keeping the tree means a
/// value is parsed once, not once per view per update. Equality is on the canonical bytes.
#[derive(Debug, Clone)]
pub struct TopicValue {
    topic_type: TopicType,
    canonical: Bytes,
    tree: Option<Arc<Value>>,
}

impl PartialEq for TopicValue {
    fn eq(&self, other: &Self) -> bool {
        self.topic_type == other.topic_type && self.canonical == other.canonical
    }
}

impl Eq for TopicValue {}

impl TopicValue {
    /// Converts a JSON wire value into a topic value. `Ok(None)` means "no value" (JSON `null`
    /// on a STRING, INT64 or DOUBLE topic); a JSON topic holds `null` as a value.
    pub fn from_json(topic_type: TopicType, value: &Value) -> Result<Option<Self>, ValueError> {
        let wrong = || ValueError::WrongType {
            topic_type,
            found: describe(value),
        };
        let canonical: Bytes = match (topic_type, value) {
            (TopicType::Json, v) => serde_json::to_vec(v).map_err(|_| wrong())?.into(),
            (TopicType::String | TopicType::Int64 | TopicType::Double, Value::Null) => {
                return Ok(None);
            }
            (TopicType::String, Value::String(s)) => Bytes::copy_from_slice(s.as_bytes()),
            (TopicType::Int64, Value::Number(n)) => {
                n.as_i64().ok_or_else(wrong)?.to_string().into()
            }
            (TopicType::Double, Value::Number(n)) => {
                let f = n.as_f64().ok_or_else(wrong)?;
                serde_json::to_vec(&f).map_err(|_| wrong())?.into()
            }
            (TopicType::Binary, Value::String(s)) => BASE64
                .decode(s)
                .map_err(|e| ValueError::Base64(e.to_string()))?
                .into(),
            _ => return Err(wrong()),
        };
        Ok(Some(Self {
            topic_type,
            canonical,
            tree: None,
        }))
    }

    /// Keeps `tree`, the parsed form of this JSON value (what it was made from), for
    /// [`TopicValue::json`]. The caller vouches that the tree is this value.
    pub fn with_tree(mut self, tree: Arc<Value>) -> Self {
        if self.topic_type == TopicType::Json {
            self.tree = Some(tree);
        }
        self
    }

    /// Drops the kept tree (nothing reads this value as a tree: save the memory).
    pub fn without_tree(mut self) -> Self {
        self.tree = None;
        self
    }

    /// Whether a parsed tree is kept.
    pub fn has_tree(&self) -> bool {
        self.tree.is_some()
    }

    /// The value as a JSON tree: the kept one, or parsed now.
    pub fn json(&self) -> Arc<Value> {
        match &self.tree {
            Some(tree) => Arc::clone(tree),
            None => Arc::new(self.to_json()),
        }
    }

    /// Rebuilds a value from canonical bytes (after applying a delta), checking they are valid.
    pub fn from_canonical(topic_type: TopicType, canonical: Bytes) -> Result<Self, ValueError> {
        let valid = match topic_type {
            TopicType::Json => serde_json::from_slice::<Value>(&canonical).is_ok(),
            TopicType::String => std::str::from_utf8(&canonical).is_ok(),
            TopicType::Int64 => std::str::from_utf8(&canonical)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .is_some(),
            TopicType::Double => std::str::from_utf8(&canonical)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .is_some(),
            TopicType::Binary => true,
        };
        if valid {
            Ok(Self {
                topic_type,
                canonical,
                tree: None,
            })
        } else {
            Err(ValueError::Corrupt(topic_type))
        }
    }

    /// The topic type this value belongs to.
    pub fn topic_type(&self) -> TopicType {
        self.topic_type
    }

    /// The canonical bytes (what deltas are computed over).
    pub fn canonical(&self) -> &Bytes {
        &self.canonical
    }

    /// The value as JSON text for the wire: JSON, INT64 and DOUBLE are their canonical bytes
    /// already; STRING becomes a JSON string and BINARY a base64 JSON string.
    pub fn wire_json(&self) -> Bytes {
        match self.topic_type {
            TopicType::Json | TopicType::Int64 | TopicType::Double => self.canonical.clone(),
            TopicType::String => {
                let text = String::from_utf8_lossy(&self.canonical);
                serde_json::to_vec(&text)
                    .map(Bytes::from)
                    .unwrap_or_else(|_| Bytes::from_static(b"null"))
            }
            TopicType::Binary => {
                Bytes::from(format!("\"{}\"", BASE64.encode(&self.canonical)).into_bytes())
            }
        }
    }

    /// The value as a JSON value, for clients and tools.
    pub fn to_json(&self) -> Value {
        serde_json::from_slice(&self.wire_json()).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_is_canonical_with_sorted_keys() {
        let a = TopicValue::from_json(TopicType::Json, &json!({"b":1,"a":[1,2]}))
            .unwrap()
            .unwrap();
        assert_eq!(&a.canonical()[..], br#"{"a":[1,2],"b":1}"#);
        assert_eq!(a.to_json(), json!({"a":[1,2],"b":1}));
    }

    #[test]
    fn scalar_types_convert_and_refuse_wrong_shapes() {
        let s = TopicValue::from_json(TopicType::String, &json!("hi \"x\""))
            .unwrap()
            .unwrap();
        assert_eq!(&s.canonical()[..], b"hi \"x\"");
        assert_eq!(&s.wire_json()[..], br#""hi \"x\"""#);
        assert!(
            TopicValue::from_json(TopicType::String, &json!(null))
                .unwrap()
                .is_none()
        );
        let i = TopicValue::from_json(TopicType::Int64, &json!(42))
            .unwrap()
            .unwrap();
        assert_eq!(&i.wire_json()[..], b"42");
        assert!(TopicValue::from_json(TopicType::Int64, &json!(4.5)).is_err());
        assert!(TopicValue::from_json(TopicType::Int64, &json!("4")).is_err());
        let d = TopicValue::from_json(TopicType::Double, &json!(4))
            .unwrap()
            .unwrap();
        assert_eq!(d.to_json(), json!(4.0));
        let b = TopicValue::from_json(TopicType::Binary, &json!("AAEC"))
            .unwrap()
            .unwrap();
        assert_eq!(&b.canonical()[..], &[0, 1, 2]);
        assert_eq!(b.to_json(), json!("AAEC"));
        assert!(matches!(
            TopicValue::from_json(TopicType::Binary, &json!("!!")),
            Err(ValueError::Base64(_))
        ));
    }

    /// Found by fuzzing: a double's text must parse back to exactly the same double (it used to
    /// come back one unit in the last place off), so values never change meaning on the way.
    #[test]
    fn doubles_keep_their_exact_value() {
        for text in [
            "8070080700080700",
            "930192.7818915497",
            "1e-310",
            "0.1",
            "1.7976931348623157e308",
        ] {
            let wire: Value = serde_json::from_str(text).unwrap();
            let v = TopicValue::from_json(TopicType::Double, &wire)
                .unwrap()
                .unwrap();
            let back: f64 = std::str::from_utf8(v.canonical()).unwrap().parse().unwrap();
            let want: f64 = text.parse().unwrap();
            assert_eq!(back.to_bits(), want.to_bits(), "{text}");
            let again = TopicValue::from_json(TopicType::Double, &v.to_json())
                .unwrap()
                .unwrap();
            assert_eq!(again, v, "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn random_doubles_round_trip_exactly(bits in proptest::prelude::any::<u64>()) {
            let f = f64::from_bits(bits);
            proptest::prop_assume!(f.is_finite());
            let text = serde_json::to_string(&f).unwrap();
            let wire: Value = serde_json::from_str(&text).unwrap();
            for t in [TopicType::Double, TopicType::Json] {
                let v = TopicValue::from_json(t, &wire).unwrap().unwrap();
                let again = TopicValue::from_json(t, &v.to_json()).unwrap().unwrap();
                proptest::prop_assert_eq!(&again, &v);
                let back: f64 = serde_json::from_slice(v.canonical()).unwrap();
                proptest::prop_assert_eq!(back.to_bits(), f.to_bits());
            }
        }
    }

    #[test]
    fn a_kept_tree_is_the_value_and_does_not_change_equality() {
        let wire = json!({"b": [1, 2], "a": 9007199254740993_u64});
        let plain = TopicValue::from_json(TopicType::Json, &wire)
            .unwrap()
            .unwrap();
        let kept = plain.clone().with_tree(Arc::new(wire.clone()));
        assert!(kept.has_tree() && !plain.has_tree());
        assert_eq!(kept, plain);
        assert_eq!(*kept.json(), wire);
        assert_eq!(*plain.json(), wire);
        assert!(!kept.without_tree().has_tree());
        // Only JSON values keep trees.
        let s = TopicValue::from_json(TopicType::String, &json!("x"))
            .unwrap()
            .unwrap();
        assert!(!s.with_tree(Arc::new(json!("x"))).has_tree());
    }

    #[test]
    fn integers_of_any_size_keep_their_exact_value() {
        for text in [
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "0.1000000000000000000001",
        ] {
            let wire: Value = serde_json::from_str(&format!("{{\"n\":{text}}}")).unwrap();
            let v = TopicValue::from_json(TopicType::Json, &wire)
                .unwrap()
                .unwrap();
            assert_eq!(
                v.canonical().as_ref(),
                format!("{{\"n\":{text}}}").as_bytes()
            );
        }
        // Past f64's range a number is still the number written (serde_json spells the
        // exponent's sign), never infinity or null.
        let wire: Value = serde_json::from_str("[1e400]").unwrap();
        let v = TopicValue::from_json(TopicType::Json, &wire)
            .unwrap()
            .unwrap();
        assert_eq!(v.canonical().as_ref(), b"[1e+400]");
    }

    #[test]
    fn canonical_bytes_are_checked() {
        assert!(TopicValue::from_canonical(TopicType::Json, Bytes::from_static(b"{")).is_err());
        assert!(TopicValue::from_canonical(TopicType::Int64, Bytes::from_static(b"12")).is_ok());
    }
}
