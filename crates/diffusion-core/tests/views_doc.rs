//! Every worked example in docs/views.md is evaluated and compared with the result it shows.

use std::collections::BTreeMap;

use diffusion_core::view::{EvalLimits, ViewSpec, evaluate_all};
use serde_json::Value;

const DOC: &str = include_str!("../../../docs/views.md");

/// The fenced blocks of the document, as (info string, body).
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let mut body = String::new();
            for inner in lines.by_ref() {
                if inner.starts_with("```") {
                    break;
                }
                body.push_str(inner);
                body.push('\n');
            }
            out.push((info.trim().to_owned(), body));
        }
    }
    out
}

#[test]
fn every_documented_example_evaluates_as_shown() {
    let blocks = blocks(DOC);
    let mut checked = 0;
    for (i, (info, body)) in blocks.iter().enumerate() {
        if info != "view" {
            continue;
        }
        let spec = ViewSpec::parse(body.trim())
            .unwrap_or_else(|e| panic!("example {body} does not parse:\n{e}"));
        let (topics_info, topics) = &blocks[i + 1];
        let (result_info, result) = &blocks[i + 2];
        assert_eq!(topics_info, "json topics", "block after {body}");
        assert_eq!(result_info, "json result", "second block after {body}");
        let topics: BTreeMap<String, Value> = serde_json::from_str(topics).unwrap();
        let expected: BTreeMap<String, Value> = serde_json::from_str(result).unwrap();
        assert_eq!(
            evaluate_all(&spec, &topics, &EvalLimits::default()).unwrap(),
            expected,
            "example: {body}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} examples found");
}

#[test]
fn the_documented_error_is_what_the_parser_says() {
    let err = ViewSpec::parse("map redis/bitcoin too x")
        .unwrap_err()
        .to_string();
    assert!(
        DOC.contains(&err),
        "docs/views.md shows a different error than:\n{err}"
    );
}
