//! The evaluator as it was before it borrowed the source (commit 62e8a43), kept only as a
//! test oracle: the tests feed every view of the test suites, over many values, to both and
//! require the same results — paths, types and the exact bytes of every value.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use super::evaluate::{apply_patch, parse_finite, round_to_i64};
use super::pointer::{ArrayWrite, JsonPointer};
use super::process::{Operation, SetValue, Statement};
use super::template::{PathTemplate, TemplatePart};
use super::{EvalError, EvalLimits, Insert, ReferenceValue, Transformation, ViewSpec};
use crate::path::{MAX_PATH_BYTES, TopicPath};
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
fn json_size(value: &Value) -> usize {
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
pub(super) fn evaluate(
    spec: &ViewSpec,
    source_path: &str,
    source_value: &Value,
    lookup: &dyn Fn(&str) -> Option<Value>,
    limits: &EvalLimits,
) -> Result<Vec<(String, ReferenceValue)>, EvalError> {
    let separator = spec.options.separator.as_deref();
    let topic_type = spec.options.topic_type.unwrap_or(TopicType::Json);
    let branches = template_evaluate(
        &spec.template,
        source_path,
        source_value,
        separator,
        limits.max_results,
    );
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
                Transformation::Process(statement) => apply_statement(statement, value),
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
        let path = template_evaluate(&insert.path, self.source_path, &value, separator, 1)
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

/// Converts a JSON value to the reference topic's type; `None` = no reference topic. A JSON
/// `null` stays `null` for STRING, INT64 and DOUBLE (a topic with no value).
fn convert(value: Value, to: TopicType) -> Option<Value> {
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

enum Planned<'a> {
    Set(&'a JsonPointer, Value),
    Remove(&'a JsonPointer),
}

/// `Statement::apply` as it was.
fn apply_statement(statement: &Statement, input: Value) -> Option<Value> {
    let operations = match statement {
        Statement::Operations(ops) => ops,
        Statement::Conditional {
            branches,
            otherwise,
        } => match branches.iter().find(|b| b.condition.holds(&input)) {
            Some(branch) => &branch.operations,
            None => otherwise.as_ref()?,
        },
    };
    // Every operation reads the input as it was; then all are applied together.
    let mut planned = Vec::with_capacity(operations.len());
    for op in operations {
        match op {
            Operation::Set { target, value } => {
                let value = match value {
                    SetValue::Constant(v) => v.clone(),
                    SetValue::Calc(calc) => Value::from(calc.eval(&input)?),
                };
                planned.push(Planned::Set(target, value));
            }
            Operation::Remove(target) => planned.push(Planned::Remove(target)),
            Operation::Continue => {}
        }
    }
    let mut output = input;
    for step in planned {
        match step {
            Planned::Set(target, value) => {
                target.write(&mut output, value, ArrayWrite::Replace).ok()?;
            }
            Planned::Remove(target) => target.remove(&mut output),
        }
    }
    Some(output)
}

/// `PathTemplate::evaluate` as it was.
fn template_evaluate<'v>(
    template: &PathTemplate,
    source_path: &str,
    value: &'v Value,
    separator: Option<&str>,
    max: usize,
) -> Vec<(String, &'v Value)> {
    let segments: Vec<&str> = source_path.split('/').collect();
    let mut out = Vec::new();
    let walker = Walker {
        segments: &segments,
        separator,
        max,
    };
    walker.walk(template.parts(), value, String::new(), &mut out);
    out
}

fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Null => Some(Cow::Borrowed("null")),
        Value::Array(_) | Value::Object(_) => None,
    }
}

struct Walker<'s> {
    segments: &'s [&'s str],
    separator: Option<&'s str>,
    /// Results wanted at most; one more is produced so the caller sees the limit was passed.
    max: usize,
}

impl Walker<'_> {
    fn push_fragment(&self, built: &mut String, fragment: &str) {
        match self.separator {
            Some(sep) => built.push_str(&fragment.replace('/', sep)),
            None => built.push_str(fragment),
        }
    }

    fn walk<'v>(
        &self,
        parts: &[TemplatePart],
        current: &'v Value,
        mut built: String,
        out: &mut Vec<(String, &'v Value)>,
    ) {
        for (index, part) in parts.iter().enumerate() {
            if out.len() > self.max || built.len() > MAX_PATH_BYTES {
                return;
            }
            match part {
                TemplatePart::Text(text) => built.push_str(text),
                TemplatePart::Path { start, count } => {
                    let end = match count {
                        Some(n) => start.saturating_add(*n),
                        None => self.segments.len(),
                    };
                    if *start >= self.segments.len() || end > self.segments.len() {
                        return;
                    }
                    built.push_str(&self.segments[*start..end].join("/"));
                }
                TemplatePart::Scalar(ptr) => match ptr.get(current).and_then(scalar_text) {
                    Some(text) => self.push_fragment(&mut built, &text),
                    None => return,
                },
                TemplatePart::Expand { pointer, key } => {
                    let rest = &parts[index + 1..];
                    match pointer.get(current) {
                        Some(Value::Object(map)) => {
                            for (name, child) in map {
                                self.branch(rest, child, &built, name, key.as_ref(), out);
                            }
                        }
                        Some(Value::Array(items)) => {
                            for (i, child) in items.iter().enumerate() {
                                self.branch(rest, child, &built, &i.to_string(), key.as_ref(), out);
                            }
                        }
                        _ => {}
                    }
                    return;
                }
            }
        }
        if out.len() <= self.max && built.len() <= MAX_PATH_BYTES {
            out.push((built, current));
        }
    }

    fn branch<'v>(
        &self,
        rest: &[TemplatePart],
        child: &'v Value,
        built: &str,
        name: &str,
        key: Option<&JsonPointer>,
        out: &mut Vec<(String, &'v Value)>,
    ) {
        let fragment = match key {
            Some(key) => match key.get(child).and_then(scalar_text) {
                Some(text) => text,
                None => return,
            },
            None => Cow::Borrowed(name),
        };
        let mut next = built.to_owned();
        self.push_fragment(&mut next, &fragment);
        self.walk(rest, child, next, out);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Every view written in the crate's and the server's view tests and the benchmark (those
    /// that do not parse are skipped).
    const VIEWS: &[&str] = &[
        r##"map ?Cars/ to <scalar(/owner)>/<path(1)> preserve topics"##,
        r##"map ?a/ to by-owner/<scalar(/owner)> insert lookup at /extra"##,
        r##"map ?a// to"##,
        r##"map ?a// to b/<path(1)>"##,
        r##"map ?a// to b/<path(1)> process {if '/Price gt 50' continue}"##,
        r##"map ?a// to b/<path(1)> process {if '/Price lt 50' set(/Tier, 1) elseif '/Price gt 50' set(/Tier, 2)}"##,
        r##"map ?a// to b/<path(1)> throttle to 2 updates every 5 seconds"##,
        r##"map ?a// to c/<path(1)>"##,
        r##"map ?a// to d/<path(1)> as <value(/w)>"##,
        r##"map ?accounts// to balances/<scalar(/account)> as <value(/balance)>"##,
        r##"map ?accounts// to currency/<scalar(/balance/currency)>/account/<scalar(/account)>"##,
        r##"map ?cars/ to kept/<scalar(/owner)>/<path(1)> preserve topics"##,
        r##"map ?cars/ to owners/<scalar(/owner)>/<path(1)>"##,
        r##"map ?other// to r/<path(1)>"##,
        r##"map ?owners// to names/<path(2)> as <value(/owner)>"##,
        r##"map ?src// to r/<path(1)>"##,
        r##"map a to b"##,
        r##"map a to b insert meta at /list/- insert meta at /list/0"##,
        r##"map a to b insert meta at /no/where"##,
        r##"map a to b insert rates/<path(1)> at /r default 0"##,
        r##"map a to b insert rates/<scalar(/cur)> key /rate at /rate"##,
        r##"map a to b insert rates/<scalar(/nope)> at /r default 0"##,
        r##"map a to b insert rates/EUR at /rate"##,
        r##"map a to b insert rates/EUR at /rate default 1"##,
        r##"map a to b insert rates/GBP key /name at /n default 'n/a'"##,
        r##"map a to b process {set(/cur, 'GBP')} insert rates/<scalar(/cur)> key /rate at /rate as <value(/rate)>"##,
        r##"map a to r"##,
        r##"map o to i/<expand()>"##,
        r##"map o to i/<expand(, /id)>"##,
        r##"map o to i/<expand(, /id)> process {if '/n = 2' continue}"##,
        r##"map o to i/<expand(/items)>"##,
        r##"map o to i/<expand(/items, /id)>"##,
        r##"map o to i/<expand(/items, /id)>/q<scalar(/qty)>/<expand(/parts)>"##,
        r##"map o to i/<expand(/items/0/qty)>"##,
        r##"map o to i/<expand(/missing)>"##,
        r##"map o to v<expand()>x"##,
        r##"map orders to individual/<expand(/items, /id)>"##,
        r##"map redis/bitcoin to redis/views/<expand(/bpi)>"##,
        r##"map redis/bitcoin to redis/views/bitcoin/<expand(/bpi)>"##,
        r##"map redis/bitcoin to redis/views/bitcoin/<expand(/bpi)>/rate as <value(/rate_float)> type DOUBLE"##,
        r##"map redis/bitcoin to redis/views/tiered process {if '/bpi/USD/rate_float gt 50000' set(/tier, 2) else set(/tier, 1); remove(/disclaimer)}"##,
        r##"map redis/bitcoin to redis/views/usd as <value(/bpi/USD/rate_float)>"##,
        r##"map redis/bitcoin too x"##,
        r##"map s to <scalar(/k)>/x"##,
        r##"map s to r patch '[{"op":"test","path":"/a","value":1.0},{"op":"add","path":"/ok","value":true}]'"##,
        r##"map s to r patch '[{"op":"test","path":"/a","value":{"x":[1,2.0]}}]'"##,
        r##"map s to r/<expand()>"##,
        r##"map s to r/<expand()> insert big at /copy"##,
        r##"map s to r/<expand()> insert other at /o insert missing at /m"##,
        r##"map s to r/<expand()>/<expand()>"##,
        r##"map s to r/<expand(/m)>"##,
        r##"map s to r/<expand(/m)> separator ''"##,
        r##"map s to r/<scalar(/k)>"##,
        r##"map s to t as <value()>"##,
        r##"map s to t as <value(/balance)>"##,
        r##"map s to t as <value(/missing)> type string"##,
        r##"map s to t as <value(/none)>"##,
        r##"map s to t as <value(/p)> type INT64"##,
        r##"map s to t as <value(/p)> type binary"##,
        r##"map s to t as <value(/p)> type double"##,
        r##"map s to t as <value(/p)> type int64"##,
        r##"map s to t as <value(/p)> type string"##,
        r##"map s to t patch '[{"op":"add","path":"/a","value":1},{"op":"remove","path":"/nope"}]'"##,
        r##"map s to t patch '[{"op":"test","path":"/v","value":1},{"op":"add","path":"/w","value":[1]},{"op":"move","from":"/v","path":"/m"},{"op":"copy","from":"/w","path":"/c"},{"op":"replace","path":"/c/0","value":9},{"op":"remove","path":"/w"}]'"##,
        r##"map s to t process {if '/nope != 1' set(/ok, true)}"##,
        r##"map s to t process {set(/a, 1)} process {set(/b, calc "/a + 1")} process {if '/b = 2' remove(/a) else continue}"##,
        r##"map s to t process {set(/x, 1)}"##,
        r##"map s to t process {set(/x, calc "/p * 2")}"##,
        r##"map s to t process {set(/x/y, 1)}"##,
        r##"map s to t type string"##,
        r##"map s to t/<expand(/rows)> process {set(/total, calc "/p * /q")} as <value(/total)>"##,
        r##"map s to value<expand(/values)>"##,
        r##"map s/t to r/<path(0)>/<scalar(/k)> separator '_'"##,
    ];

    /// Source paths the views are evaluated at (each view at all of them: the evaluator does
    /// not check that its selector matches).
    const SOURCES: &[&str] = &[
        "s",
        "a",
        "o",
        "s/t",
        "a/b/c/d",
        "redis/bitcoin",
        "cars/1",
        "Diffusion/x",
    ];

    /// Keys the views read, so random values hit their pointers.
    const KEYS: &[&str] = &[
        "a",
        "b",
        "k",
        "m",
        "n",
        "p",
        "q",
        "v",
        "w",
        "id",
        "qty",
        "items",
        "parts",
        "rows",
        "values",
        "owner",
        "account",
        "balance",
        "currency",
        "cur",
        "rate",
        "rate_float",
        "name",
        "bpi",
        "USD",
        "EUR",
        "Price",
        "disclaimer",
        "x",
        "0",
        "1",
        "-",
        "",
        "Diffusion",
        "$x",
        "a/b",
        "\u{1}",
    ];

    /// Other topics that `insert` reads.
    const OTHERS: &[&str] = &[
        "lookup",
        "meta",
        "rates/EUR",
        "rates/GBP",
        "rates/x",
        "big",
        "other",
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..60).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            (0.0f64..100_000.0).prop_map(Value::from),
            // Numbers as written: exponents, big integers, trailing zeros.
            prop::sample::select(vec![
                "1e400",
                "-0",
                "1.50",
                "123456789012345678901234567890",
                "5e-324"
            ])
            .prop_map(|text| serde_json::from_str(text).unwrap_or(Value::Null)),
            prop::sample::select(KEYS).prop_map(|k| Value::String(k.to_owned())),
            "\\PC{0,6}".prop_map(Value::String),
        ]
    }

    fn object(
        inner: impl Strategy<Value = Value>,
        size: std::ops::Range<usize>,
    ) -> impl Strategy<Value = Value> {
        prop::collection::btree_map(prop::sample::select(KEYS), inner, size)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                object(inner, 0..6),
            ]
        })
    }

    /// A source value: an object holding many of the keys the views read.
    fn source() -> impl Strategy<Value = Value> {
        prop_oneof![1 => value(), 4 => object(value(), 4..16)]
    }

    /// The results as comparable data: paths, types and the exact bytes of every value.
    fn bytes(
        results: Result<Vec<(String, ReferenceValue)>, EvalError>,
    ) -> Result<Vec<(String, TopicType, Vec<u8>)>, EvalError> {
        results.map(|all| {
            all.into_iter()
                .map(|(path, r)| {
                    let json = serde_json::to_vec(&r.value).unwrap_or_default();
                    (path, r.topic_type, json)
                })
                .collect()
        })
    }

    fn compare(value: &Value, others: &BTreeMap<&str, Value>, limits: &EvalLimits) {
        let lookup = |path: &str| others.get(path).cloned();
        for text in VIEWS {
            let Ok(spec) = ViewSpec::parse(text) else {
                continue;
            };
            for source in SOURCES {
                let now = bytes(spec.evaluate(source, value, &lookup, limits));
                let before = bytes(evaluate(&spec, source, value, &lookup, limits));
                assert_eq!(now, before, "{text} at {source} over {value}");
            }
        }
    }

    #[test]
    fn the_views_of_the_test_suites_parse() {
        let parsed = VIEWS.iter().filter(|t| ViewSpec::parse(t).is_ok()).count();
        assert!(
            parsed + 3 >= VIEWS.len(),
            "only {parsed} of {} parse",
            VIEWS.len()
        );
    }

    #[test]
    fn hand_made_values_give_what_they_gave() {
        let others: BTreeMap<&str, Value> = [
            (
                "rates/EUR",
                serde_json::json!({"rate": 1.25, "name": "euro"}),
            ),
            ("meta", serde_json::json!([1, "x"])),
            ("lookup", serde_json::json!({"a": null})),
        ]
        .into_iter()
        .collect();
        for value in [
            serde_json::json!({"k": "a/b", "m": {"x/y": 1, "z": [true]}, "p": 2.5, "q": 4}),
            serde_json::json!({"k": "", "m": ["a", "b/c"], "p": "7.5", "cur": "EUR", "list": []}),
            serde_json::json!({"items": [{"id": "a/b", "qty": 2, "parts": [1, 2]}, {"id": 3}]}),
            serde_json::json!({"rows": [{"p": 2, "q": 3}, {"p": 9_223_372_036_854_775_807_i64, "q": 2}]}),
            serde_json::json!({"owner": "Diffusion", "account": "$a", "balance": {"currency": "\u{7f}"}}),
            // Duplicate derived paths: the first wins.
            serde_json::json!({"a": {"id": "x"}, "b": {"id": "x"}, "items": [{"id": 1}, {"id": 1}]}),
            serde_json::json!({"Price": 50, "a": 1.0, "b": 2, "v": 1, "w": [0], "values": {"1": 2}}),
        ] {
            compare(&value, &others, &EvalLimits::default());
            compare(
                &value,
                &others,
                &EvalLimits {
                    max_results: 1,
                    max_output_bytes: 30,
                },
            );
        }
    }

    #[test]
    fn the_bitcoin_sample_gives_what_it_gave() {
        let sample: Value =
            serde_json::from_str(include_str!("../../testdata/coindesk-bpi-sample.json"))
                .unwrap_or(Value::Null);
        assert!(sample.is_object());
        compare(&sample, &BTreeMap::new(), &EvalLimits::default());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_view_gives_what_it_gave(
            value in source(),
            others in prop::collection::btree_map(prop::sample::select(OTHERS), value(), 0..5),
            max_results in prop::sample::select(vec![1usize, 3, 10_000]),
            max_output_bytes in prop::sample::select(vec![40usize, 300, 16 << 20]),
        ) {
            let limits = EvalLimits { max_results, max_output_bytes };
            compare(&value, &others, &limits);
        }
    }
}
