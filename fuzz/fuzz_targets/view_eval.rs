//! `ViewSpec::evaluate` and `evaluate_all`. Input: a view specification on the first line, a
//! JSON source value on the rest (the CoinDesk sample when the rest is blank). Every reference
//! topic produced has a valid user path, a value that `TopicValue::from_json` accepts for its
//! type, unique paths, and stays within the `EvalLimits`; evaluation is deterministic.
#![no_main]

use std::collections::{BTreeMap, HashSet};

use diffusion_core::view::{EvalLimits, ViewSpec, evaluate_all};
use diffusion_core::{TopicPath, TopicType, TopicValue};
use libfuzzer_sys::{Corpus, fuzz_target};
use serde_json::{Value, json};

const SAMPLE: &str = include_str!("../../crates/diffusion-core/testdata/coindesk-bpi-sample.json");

const LIMITS: EvalLimits = EvalLimits {
    max_results: 1000,
    max_output_bytes: 1 << 20,
};

/// What `insert` reads: fixed values for a few paths.
fn lookup(path: &str) -> Option<Value> {
    match path {
        "rates/USD" => Some(json!({"rate": 1.0, "code": "USD"})),
        "rates/EUR" => Some(json!({"rate": 0.83, "code": "EUR"})),
        "other/b" => Some(json!([1, "two", null, {"k": true}])),
        "c" => Some(json!("text")),
        _ => None,
    }
}

fn check_value(spec: &ViewSpec, path: &str, topic_type: TopicType, value: &Value) {
    assert!(
        TopicPath::parse_user(path).is_ok(),
        "{:?} produced the invalid path {path:?}",
        spec.as_str()
    );
    assert_eq!(
        topic_type,
        spec.options.topic_type.unwrap_or(TopicType::Json)
    );
    if let Err(e) = TopicValue::from_json(topic_type, value) {
        panic!(
            "{:?} produced {path:?} = {value} which a {topic_type} topic refuses: {e}",
            spec.as_str()
        );
    }
}

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(input) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let (spec_text, value_text) = input.split_once('\n').unwrap_or((input, ""));
    let Ok(spec) = ViewSpec::parse(spec_text) else {
        return Corpus::Keep;
    };
    let value: Value = if value_text.trim().is_empty() {
        serde_json::from_str(SAMPLE).expect("the sample is JSON")
    } else {
        match serde_json::from_str(value_text) {
            Ok(value) => value,
            Err(_) => return Corpus::Keep,
        }
    };

    let result = spec.evaluate("a/b", &value, &lookup, &LIMITS);
    let again = spec.evaluate("a/b", &value, &lookup, &LIMITS);
    assert_eq!(
        result, again,
        "evaluation is not deterministic for {spec_text:?}"
    );
    if let Ok(results) = result {
        assert!(results.len() <= LIMITS.max_results);
        let mut seen = HashSet::new();
        let mut bytes = 0;
        for (path, reference) in &results {
            assert!(
                seen.insert(path.as_str()),
                "duplicate path {path:?} from {spec_text:?}"
            );
            check_value(&spec, path, reference.topic_type, &reference.value);
            bytes += path.len() + serde_json::to_vec(&reference.value).map_or(0, |v| v.len());
        }
        assert!(
            bytes <= LIMITS.max_output_bytes,
            "{bytes} bytes of results past the limit for {spec_text:?}"
        );
    }

    let topic_type = spec.options.topic_type.unwrap_or(TopicType::Json);
    let mut topics = BTreeMap::new();
    topics.insert("a/b".to_owned(), value.clone());
    topics.insert(
        "a/c".to_owned(),
        json!({"a": {"b": [1, 2.5, "x"]}, "name": "c"}),
    );
    topics.insert(
        "redis/bitcoin".to_owned(),
        serde_json::from_str(SAMPLE).expect("JSON"),
    );
    topics.insert("rates/EUR".to_owned(), json!({"rate": 0.83}));
    topics.insert("x".to_owned(), json!(42));
    if let Ok(all) = evaluate_all(&spec, &topics, &LIMITS) {
        for (path, value) in &all {
            check_value(&spec, path, topic_type, value);
        }
    }
    Corpus::Keep
});
