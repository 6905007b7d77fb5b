//! The pure evaluator: one source topic (path + value) in, its reference topics out.
//!
//! Order of work for each result of the path template: transformations in order, then inserts,
//! then `as <value(…)>`, then the `type` conversion. Any step can decide "no reference topic".

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use json_patch::PatchOperation;
use serde_json::Value;

use super::pointer::ArrayWrite;
use super::process::json_equal;
use super::{EvalError, EvalLimits, Insert, JsonPatch, ReferenceValue, Transformation, ViewSpec};
use crate::path::TopicPath;
use crate::topic::TopicType;

/// Counts the bytes of compact JSON without building it.
#[derive(Default)]
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size of `value` as compact JSON.
pub(crate) fn json_size(value: &Value) -> usize {
    let mut counter = ByteCounter::default();
    // Writing to a counter cannot fail, and every map key of a `Value` is a string.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// What one `insert` found for one path, with its size, so that an `insert` into every branch
/// of an `expand` reads, measures and keys into the other topic once, not once per branch.
type Found = Option<(Value, usize)>;

/// One evaluation's state: the byte budget left and what the inserts have already found.
struct Run<'a> {
    spec: &'a ViewSpec,
    source_path: &'a str,
    lookup: &'a dyn Fn(&str) -> Option<Value>,
    /// (insert number, other topic's path) → the part of its value that insert takes.
    found: HashMap<(usize, String), Found>,
    limits: &'a EvalLimits,
    bytes_left: usize,
}

/// See [`ViewSpec::evaluate`].
pub(crate) fn evaluate(
    spec: &ViewSpec,
    source_path: &str,
    source_value: &Value,
    lookup: &dyn Fn(&str) -> Option<Value>,
    limits: &EvalLimits,
) -> Result<Vec<(String, ReferenceValue)>, EvalError> {
    let separator = spec.options.separator.as_deref();
    let topic_type = spec.options.topic_type.unwrap_or(TopicType::Json);
    let branches = spec
        .template
        .evaluate(source_path, source_value, separator, limits.max_results);
    if branches.len() > limits.max_results {
        return Err(EvalError::TooManyResults {
            limit: limits.max_results,
        });
    }
    let mut run = Run {
        spec,
        source_path,
        lookup,
        found: HashMap::new(),
        limits,
        bytes_left: limits.max_output_bytes,
    };
    let mut produced: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for (path, current) in branches {
        if produced.contains(&path) || TopicPath::parse_user(&path).is_err() {
            continue;
        }
        let Some(value) = run.transform(current.clone())? else {
            continue;
        };
        let Some(value) = convert(value, topic_type) else {
            continue;
        };
        run.charge(json_size(&value) + path.len())?;
        produced.insert(path.clone());
        out.push((path, ReferenceValue { topic_type, value }));
    }
    Ok(out)
}

impl Run<'_> {
    fn too_large(&self) -> EvalError {
        EvalError::TooLarge {
            limit: self.limits.max_output_bytes,
        }
    }

    /// Takes `bytes` from the budget, or fails when it is spent.
    fn charge(&mut self, bytes: usize) -> Result<(), EvalError> {
        self.bytes_left = self
            .bytes_left
            .checked_sub(bytes)
            .ok_or_else(|| self.too_large())?;
        Ok(())
    }

    /// Transformations, inserts and `as`, for one expanded value; `Ok(None)`: no topic.
    fn transform(&mut self, mut value: Value) -> Result<Option<Value>, EvalError> {
        for transformation in &self.spec.transformations {
            let changed = match transformation {
                Transformation::Process(statement) => statement.apply(value),
                Transformation::Patch(patch) => apply_patch(patch, value),
            };
            let Some(changed) = changed else {
                return Ok(None);
            };
            value = changed;
        }
        // What this branch's inserts copy in: bounded by the budget before anything is copied.
        let mut inserted = 0;
        for (number, insert) in self.spec.inserts.iter().enumerate() {
            value = self.apply_insert(number, insert, value, &mut inserted)?;
        }
        if let Some(ptr) = &self.spec.options.value_pointer {
            value = ptr.get(&value).cloned().unwrap_or(Value::Null);
        }
        Ok(Some(value))
    }

    fn apply_insert(
        &mut self,
        number: usize,
        insert: &Insert,
        mut value: Value,
        inserted: &mut usize,
    ) -> Result<Value, EvalError> {
        let separator = self.spec.options.separator.as_deref();
        let path = insert
            .path
            .evaluate(self.source_path, &value, separator, 1)
            .into_iter()
            .next()
            .map(|(path, _)| path);
        let found = match path {
            Some(path) => {
                let lookup = self.lookup;
                self.found
                    .entry((number, path))
                    .or_insert_with_key(|(_, path)| {
                        let other = lookup(path)?;
                        let part = match &insert.key {
                            Some(key) => key.get(&other)?.clone(),
                            None => other,
                        };
                        let size = json_size(&part);
                        Some((part, size))
                    })
                    .as_ref()
                    .map(|(part, size)| (part, *size))
            }
            None => None,
        };
        let found = match (found, &insert.default) {
            (Some(found), _) => Some(found),
            (None, Some(default)) => Some((default, json_size(default))),
            (None, None) => None,
        };
        if let Some((found, size)) = found {
            // Checked before anything is copied.
            *inserted += size;
            if *inserted > self.bytes_left {
                return Err(EvalError::TooLarge {
                    limit: self.limits.max_output_bytes,
                });
            }
            let mut updated = value.clone();
            if insert
                .at
                .write(&mut updated, found.clone(), ArrayWrite::Insert)
                .is_ok()
            {
                value = updated;
            }
        }
        Ok(value)
    }
}

/// Applies an RFC 6902 patch; `None` when any operation fails (no reference topic). `test`
/// compares numbers by value (`1` equals `1.0`), as RFC 6902 §4.6 says; the other operations
/// are the json-patch crate's.
fn apply_patch(patch: &JsonPatch, mut value: Value) -> Option<Value> {
    for op in patch.ops.iter() {
        match op {
            PatchOperation::Test(test) => {
                let actual = value.pointer(test.path.as_str())?;
                if !json_equal(actual, &test.value) {
                    return None;
                }
            }
            // Failing patches give no topic, so no need for the library's undo log.
            other => json_patch::patch_unsafe(&mut value, std::slice::from_ref(other)).ok()?,
        }
    }
    Some(value)
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
    limits: &EvalLimits,
) -> Result<BTreeMap<String, Value>, (String, EvalError)> {
    let lookup = |path: &str| topics.get(path).cloned();
    let mut out = BTreeMap::new();
    for (path, value) in topics {
        if !spec.source.matches(path) {
            continue;
        }
        let results = spec
            .evaluate(path, value, &lookup, limits)
            .map_err(|e| (path.clone(), e))?;
        for (reference, result) in results {
            out.entry(reference).or_insert(result.value);
        }
    }
    Ok(out)
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
