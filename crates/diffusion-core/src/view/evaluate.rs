//! The pure evaluator: one source topic (path + value) in, its reference topics out.
//!
//! Order of work for each result of the path template: transformations in order, then inserts,
//! then `as <value(…)>`, then the `type` conversion. Any step can decide "no reference topic".

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use super::pointer::ArrayWrite;
use super::{Insert, ReferenceValue, Transformation, ViewSpec};
use crate::path::TopicPath;
use crate::topic::TopicType;

/// See [`ViewSpec::evaluate`].
pub(crate) fn evaluate(
    spec: &ViewSpec,
    source_path: &str,
    source_value: &Value,
    lookup: &dyn Fn(&str) -> Option<Value>,
) -> Vec<(String, ReferenceValue)> {
    let separator = spec.options.separator.as_deref();
    let topic_type = spec.options.topic_type.unwrap_or(TopicType::Json);
    let mut produced: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for (path, current) in spec.template.evaluate(source_path, source_value, separator) {
        if produced.contains(&path) || TopicPath::parse_user(&path).is_err() {
            continue;
        }
        let Some(value) = transform(spec, source_path, current.clone(), lookup) else {
            continue;
        };
        let Some(value) = convert(value, topic_type) else {
            continue;
        };
        produced.insert(path.clone());
        out.push((path, ReferenceValue { topic_type, value }));
    }
    out
}

/// Transformations, inserts and `as`, for one expanded value.
fn transform(
    spec: &ViewSpec,
    source_path: &str,
    mut value: Value,
    lookup: &dyn Fn(&str) -> Option<Value>,
) -> Option<Value> {
    for transformation in &spec.transformations {
        value = match transformation {
            Transformation::Process(statement) => statement.apply(value)?,
            Transformation::Patch(patch) => {
                // Failing patches give no topic, so no need for the library's undo log.
                json_patch::patch_unsafe(&mut value, &patch.ops).ok()?;
                value
            }
        };
    }
    for insert in &spec.inserts {
        value = apply_insert(spec, insert, source_path, value, lookup);
    }
    if let Some(ptr) = &spec.options.value_pointer {
        value = ptr.get(&value).cloned().unwrap_or(Value::Null);
    }
    Some(value)
}

fn apply_insert(
    spec: &ViewSpec,
    insert: &Insert,
    source_path: &str,
    mut value: Value,
    lookup: &dyn Fn(&str) -> Option<Value>,
) -> Value {
    let separator = spec.options.separator.as_deref();
    let found = insert
        .path
        .evaluate(source_path, &value, separator)
        .into_iter()
        .next()
        .and_then(|(path, _)| lookup(&path))
        .and_then(|other| match &insert.key {
            Some(key) => key.get(&other).cloned(),
            None => Some(other),
        })
        .or_else(|| insert.default.clone());
    if let Some(found) = found {
        let mut updated = value.clone();
        if insert
            .at
            .write(&mut updated, found, ArrayWrite::Insert)
            .is_ok()
        {
            value = updated;
        }
    }
    value
}

/// Converts a JSON value to the reference topic's type; `None` = no reference topic. A JSON
/// `null` stays `null` for STRING, INT64 and DOUBLE (a topic with no value).
pub(crate) fn convert(value: Value, to: TopicType) -> Option<Value> {
    match to {
        TopicType::Json => Some(value),
        TopicType::String => match value {
            Value::Null | Value::String(_) => Some(value),
            Value::Number(n) => Some(Value::String(n.to_string())),
            Value::Bool(b) => Some(Value::String(b.to_string())),
            Value::Array(_) | Value::Object(_) => None,
        },
        TopicType::Int64 => match value {
            Value::Null => Some(Value::Null),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Some(Value::from(i)),
                None => round_to_i64(n.as_f64()?).map(Value::from),
            },
            Value::String(s) => match s.parse::<i64>() {
                Ok(i) => Some(Value::from(i)),
                Err(_) => round_to_i64(parse_finite(&s)?).map(Value::from),
            },
            Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
        },
        TopicType::Double => match value {
            Value::Null => Some(Value::Null),
            Value::Number(n) => Some(Value::from(n.as_f64()?)),
            Value::String(s) => Some(Value::from(parse_finite(&s)?)),
            Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
        },
        TopicType::Binary => {
            let bytes = match value {
                Value::Null => return None,
                Value::String(s) => s.into_bytes(),
                Value::Number(n) => n.to_string().into_bytes(),
                Value::Bool(b) => b.to_string().into_bytes(),
                other => serde_json::to_vec(&other).ok()?,
            };
            Some(Value::String(BASE64.encode(bytes)))
        }
    }
}

fn parse_finite(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Rounds half away from zero; `None` outside the INT64 range.
fn round_to_i64(f: f64) -> Option<i64> {
    let r = f.round();
    // 2^63 is exactly representable; every finite f64 below it (and >= -2^63) fits.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if r.is_finite() && (-LIMIT..LIMIT).contains(&r) {
        Some(r as i64)
    } else {
        None
    }
}

/// See [`super::evaluate_all`].
pub(crate) fn evaluate_all(
    spec: &ViewSpec,
    topics: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    let lookup = |path: &str| topics.get(path).cloned();
    let mut out = BTreeMap::new();
    for (path, value) in topics {
        if !spec.source.matches(path) {
            continue;
        }
        for (reference, result) in spec.evaluate(path, value, &lookup) {
            out.entry(reference).or_insert(result.value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversions() {
        use TopicType::*;
        let cases: Vec<(Value, TopicType, Option<Value>)> = vec![
            (json!({"a": 1}), Json, Some(json!({"a": 1}))),
            (json!(12.5), String, Some(json!("12.5"))),
            (json!(12), String, Some(json!("12"))),
            (json!(true), String, Some(json!("true"))),
            (json!(null), String, Some(json!(null))),
            (json!([1]), String, None),
            (json!("42"), Int64, Some(json!(42))),
            (json!("4.5"), Int64, Some(json!(5))),
            (json!("-4.5"), Int64, Some(json!(-5))),
            (json!("x"), Int64, None),
            (json!("inf"), Int64, None),
            (json!(2.4), Int64, Some(json!(2))),
            (json!(2.5), Int64, Some(json!(3))),
            (json!(1e300), Int64, None),
            (json!(u64::MAX), Int64, None),
            (json!(true), Int64, None),
            (json!({"a": 1}), Int64, None),
            (json!(null), Int64, Some(json!(null))),
            (json!(4), Double, Some(json!(4.0))),
            (json!("56189.3483"), Double, Some(json!(56189.3483))),
            (json!("NaN"), Double, None),
            (json!("1,000"), Double, None),
            (json!([1.0]), Double, None),
            (json!("AB"), Binary, Some(json!("QUI="))),
            (json!(7), Binary, Some(json!("Nw=="))),
            (json!({"a": 1}), Binary, Some(json!("eyJhIjoxfQ=="))),
            (json!(null), Binary, None),
        ];
        for (input, to, want) in cases {
            assert_eq!(convert(input.clone(), to), want, "{input} as {to}");
        }
    }

    #[test]
    fn rounding_limits() {
        assert_eq!(round_to_i64(-9.223_372_036_854_776e18), Some(i64::MIN));
        assert_eq!(round_to_i64(9.223_372_036_854_776e18), None);
        assert_eq!(round_to_i64(f64::NAN), None);
    }
}
