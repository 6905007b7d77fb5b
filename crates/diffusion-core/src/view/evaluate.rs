//! The pure evaluator: one source topic (path + value) in, its reference topics out.
//!
//! Order of work for each result of the path template: transformations in order, then inserts,
//! then `as <value(…)>`, then the `type` conversion. Any step can decide "no reference topic".

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use json_patch::PatchOperation;
use serde_json::Value;

use super::budget::Budget;
use super::pointer::ArrayWrite;
use super::process::json_equal;
use super::size::json_size;
use super::{EvalError, EvalLimits, Insert, JsonPatch, ReferenceValue, Transformation, ViewSpec};
use crate::topic::TopicType;

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
    budget: Budget,
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
        budget: Budget::new(limits.max_output_bytes),
    };
    let mut produced = Produced::default();
    let mut out: Vec<(String, ReferenceValue)> = Vec::with_capacity(branches.len());
    for (path, current) in branches {
        if produced.contains(&out, &path) || !spec.template.produces_valid(&path) {
            continue;
        }
        let Some(value) = run.transform(current, &out)? else {
            continue;
        };
        let Some(value) = convert(value, topic_type) else {
            continue;
        };
        // Charged before a borrowed result is copied out of the source.
        run.budget.charge(&value, &path, &out)?;
        produced.insert(&out, &path);
        out.push((
            path,
            ReferenceValue {
                topic_type,
                value: value.into_owned(),
            },
        ));
    }
    Ok(out)
}

/// The paths already produced, for "the first result with a path wins": a look along the
/// results while they are few (no allocation, the common case of one or a handful), a hash set
/// once they are many.
#[derive(Default)]
struct Produced {
    many: Option<HashSet<String>>,
}

impl Produced {
    /// Results past which paths are also kept in a hash set.
    const FEW: usize = 16;

    fn contains(&self, out: &[(String, ReferenceValue)], path: &str) -> bool {
        match &self.many {
            Some(set) => set.contains(path),
            None => out.iter().any(|(produced, _)| produced == path),
        }
    }

    /// Records `path`, about to be pushed onto `out`.
    fn insert(&mut self, out: &[(String, ReferenceValue)], path: &str) {
        match &mut self.many {
            Some(set) => {
                set.insert(path.to_owned());
            }
            None if out.len() >= Self::FEW => {
                let mut set: HashSet<String> = out.iter().map(|(p, _)| p.clone()).collect();
                set.insert(path.to_owned());
                self.many = Some(set);
            }
            None => {}
        }
    }
}

impl Run<'_> {
    /// Transformations, inserts and `as`, for one expanded value; `Ok(None)`: no topic. The
    /// value is borrowed from the source until something changes it, so a view that only
    /// selects (`as`, `expand`, a `process` that decides nothing changes) copies no more than
    /// its result.
    /// `produced`: the results so far, for the byte budget.
    fn transform<'v>(
        &mut self,
        current: &'v Value,
        produced: &[(String, ReferenceValue)],
    ) -> Result<Option<Cow<'v, Value>>, EvalError> {
        let mut value = Cow::Borrowed(current);
        for transformation in &self.spec.transformations {
            let changed = match transformation {
                Transformation::Process(statement) => statement.apply(value),
                Transformation::Patch(patch) => {
                    apply_patch(patch, value.into_owned()).map(Cow::Owned)
                }
            };
            let Some(changed) = changed else {
                return Ok(None);
            };
            value = changed;
        }
        // What this branch's inserts copy in: bounded by the budget before anything is copied.
        let mut inserted = 0;
        for (number, insert) in self.spec.inserts.iter().enumerate() {
            value = self.apply_insert(number, insert, value, &mut inserted, produced)?;
        }
        if let Some(ptr) = &self.spec.options.value_pointer {
            value = match value {
                Cow::Borrowed(whole) => Cow::Borrowed(ptr.get(whole).unwrap_or(&Value::Null)),
                Cow::Owned(mut whole) => Cow::Owned(ptr.take(&mut whole).unwrap_or(Value::Null)),
            };
        }
        Ok(Some(value))
    }

    fn apply_insert<'v>(
        &mut self,
        number: usize,
        insert: &Insert,
        value: Cow<'v, Value>,
        inserted: &mut usize,
        produced: &[(String, ReferenceValue)],
    ) -> Result<Cow<'v, Value>, EvalError> {
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
        let Some((found, size)) = found else {
            return Ok(value);
        };
        // Checked before anything is copied.
        *inserted += size;
        self.budget.check_fits(*inserted, produced)?;
        // A write that fails leaves the value as it was.
        let mut updated = value.into_owned();
        let _ = insert
            .at
            .write(&mut updated, found.clone(), ArrayWrite::Insert);
        Ok(Cow::Owned(updated))
    }
}

/// Applies an RFC 6902 patch; `None` when any operation fails (no reference topic). `test`
/// compares numbers by value (`1` equals `1.0`), as RFC 6902 §4.6 says; the other operations
/// are the json-patch crate's.
pub(super) fn apply_patch(patch: &JsonPatch, mut value: Value) -> Option<Value> {
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
/// `null` stays `null` for STRING, INT64 and DOUBLE (a topic with no value). A JSON result is
/// passed through as it is (still borrowed when it was).
pub(crate) fn convert(value: Cow<'_, Value>, to: TopicType) -> Option<Cow<'_, Value>> {
    let converted = match (to, &*value) {
        (TopicType::Json, _)
        | (TopicType::String | TopicType::Int64 | TopicType::Double, Value::Null)
        | (TopicType::String, Value::String(_)) => return Some(value),
        (TopicType::String, Value::Number(n)) => Value::String(n.as_str().to_owned()),
        (TopicType::String, Value::Bool(b)) => Value::String(b.to_string()),
        (TopicType::Int64, Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(round_to_i64(n.as_f64()?)?),
        },
        (TopicType::Int64, Value::String(s)) => match s.parse::<i64>() {
            Ok(i) => Value::from(i),
            Err(_) => Value::from(round_to_i64(parse_finite(s)?)?),
        },
        (TopicType::Double, Value::Number(n)) => Value::from(n.as_f64()?),
        (TopicType::Double, Value::String(s)) => Value::from(parse_finite(s)?),
        (TopicType::Binary, Value::Null) => return None,
        (TopicType::Binary, other) => {
            let encoded = match other {
                Value::String(s) => BASE64.encode(s),
                Value::Number(n) => BASE64.encode(n.as_str()),
                Value::Bool(b) => BASE64.encode(b.to_string()),
                other => BASE64.encode(serde_json::to_vec(other).ok()?),
            };
            Value::String(encoded)
        }
        (
            TopicType::String | TopicType::Int64 | TopicType::Double,
            Value::Bool(_) | Value::Array(_) | Value::Object(_),
        ) => return None,
    };
    Some(Cow::Owned(converted))
}

pub(super) fn parse_finite(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Rounds half away from zero; `None` outside the INT64 range.
pub(super) fn round_to_i64(f: f64) -> Option<i64> {
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
            let got = convert(Cow::Borrowed(&input), to).map(Cow::into_owned);
            assert_eq!(got, want, "{input} as {to}");
        }
    }

    #[test]
    fn rounding_limits() {
        assert_eq!(round_to_i64(-9.223_372_036_854_776e18), Some(i64::MIN));
        assert_eq!(round_to_i64(9.223_372_036_854_776e18), None);
        assert_eq!(round_to_i64(f64::NAN), None);
    }
}
