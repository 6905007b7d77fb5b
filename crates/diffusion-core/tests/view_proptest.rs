//! Properties of the view language: the parser never panics and always points inside the text;
//! quoting and escaping round-trip arbitrary text; evaluation never panics and yields unique,
//! valid paths.

use std::collections::HashSet;

use diffusion_core::TopicPath;
use diffusion_core::view::{EvalLimits, ViewSpec, ViewSpecError};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Fragments that drive the parser deep into its grammar, mixed with noise.
fn spec_like() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "map ",
        "to ",
        "?a// ",
        "b/",
        "<path(",
        "<scalar(",
        "<expand(",
        "<value(",
        ")",
        ">",
        ",",
        "/x",
        "1",
        "0",
        "-",
        " ",
        "\n",
        "'",
        "\"",
        "\\",
        "process ",
        "{",
        "}",
        "if ",
        "elseif ",
        "else ",
        "set(",
        "remove(",
        "continue",
        ";",
        "calc ",
        "'/p gt 5'",
        "and ",
        "not ",
        "(",
        "patch ",
        "'[]'",
        "insert ",
        "key ",
        "at ",
        "default ",
        "with properties ",
        "CONFLATION:off",
        "as ",
        "throttle to ",
        "updates ",
        "every ",
        "second",
        "delay by ",
        "separator ",
        "preserve ",
        "topics",
        "type ",
        "json",
        "é",
        "~",
        "~1",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
}

fn assert_error_is_well_formed(text: &str, err: &ViewSpecError) {
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        err.line() >= 1 && err.line() <= lines.len().max(1),
        "{text:?}: {err}"
    );
    let line = lines.get(err.line() - 1).copied().unwrap_or("");
    assert!(
        err.column() >= 1 && err.column() <= line.trim_end_matches('\r').chars().count() + 1,
        "{text:?}: {err}"
    );
    assert!(err.caret_line().ends_with('^'), "{text:?}: {err}");
    assert_eq!(err.to_string().lines().count(), 3, "{text:?}: {err}");
}

/// Writes `text` as one quoted clause.
fn quote(text: &str) -> String {
    let mut out = String::from("'");
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Writes a JSON object key as a pointer token and escapes it for a template directive.
fn pointer_arg(key: &str) -> String {
    let token = key.replace('~', "~0").replace('/', "~1");
    let mut out = String::from("/");
    for c in token.chars() {
        if matches!(c, '\\' | '\'' | '"' | '<' | '>' | '(' | ')' | ',') || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-z/ ]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z/]{0,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parser_never_panics_on_arbitrary_text(text in "\\PC{0,80}") {
        if let Err(e) = ViewSpec::parse(&text) {
            assert_error_is_well_formed(&text, &e);
        }
    }

    #[test]
    fn parser_never_panics_on_grammar_fragments(text in spec_like()) {
        match ViewSpec::parse(&text) {
            Ok(spec) => prop_assert_eq!(spec.as_str(), text.as_str()),
            Err(e) => assert_error_is_well_formed(&text, &e),
        }
    }

    #[test]
    fn quoted_clauses_round_trip(text in "\\PC{0,30}") {
        let spec = ViewSpec::parse(&format!("map a to b separator {}", quote(&text))).unwrap();
        prop_assert_eq!(spec.options.separator.as_deref(), Some(text.as_str()));
        let spec = ViewSpec::parse(&format!("map a to b process {{set(/s, {})}}", quote(&text))).unwrap();
        let out = spec.evaluate("a", &json!({}), &|_| None, &EvalLimits::default()).unwrap();
        prop_assert_eq!(&out[0].1.value, &json!({"s": text}));
    }

    #[test]
    fn escaped_pointer_keys_round_trip(key in "\\PC{0,12}") {
        let text = format!("map a to b/<scalar({})>", pointer_arg(&key));
        let spec = ViewSpec::parse(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
        let value = json!({ key.clone(): "v" });
        let out = spec.evaluate("a", &value, &|_| None, &EvalLimits::default()).unwrap();
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(out[0].0.as_str(), "b/v");
    }

    #[test]
    fn evaluation_yields_unique_valid_paths(value in json_value()) {
        for text in [
            "map a to r/<expand()>",
            "map a to r/<expand()>/<expand()>",
            "map a to r/<expand(, /a)>/x",
            "map a to r/<scalar(/a)>/<scalar(/b)>",
            "map a to r/<expand()> process {if '/a = 1 or not /b > 0' set(/c, calc \"/a * 2\") else remove(/a)} separator '-'",
            "map a to r/<expand()> patch '[{\"op\":\"add\",\"path\":\"/z\",\"value\":1}]' as <value(/z)> type int64",
            "map a to r type string",
            "map a to r type binary",
        ] {
            let spec = ViewSpec::parse(text).unwrap();
            let out = spec.evaluate("a", &value, &|_| Some(json!(1)), &EvalLimits::default()).unwrap();
            let mut seen = HashSet::new();
            for (path, reference) in &out {
                prop_assert!(TopicPath::parse_user(path).is_ok(), "{}: {}", text, path);
                prop_assert!(seen.insert(path.clone()), "{}: duplicate {}", text, path);
                prop_assert!(
                    diffusion_core::TopicValue::from_json(reference.topic_type, &reference.value).is_ok(),
                    "{}: {:?}", text, reference
                );
            }
        }
    }
}
