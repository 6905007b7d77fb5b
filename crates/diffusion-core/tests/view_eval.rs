//! The pure view evaluator: path directives, scalars, expands, transformations, inserts, `as`,
//! type conversion, and every example of the reference semantics (§4, topic views).

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on purpose

use std::collections::BTreeMap;

use diffusion_core::TopicType;
use diffusion_core::view::{EvalError, EvalLimits, ReferenceValue, ViewSpec, evaluate_all};
use serde_json::{Value, json};

fn spec(text: &str) -> ViewSpec {
    ViewSpec::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse:\n{e}"))
}

fn no_topics(_: &str) -> Option<Value> {
    None
}

/// Evaluates and keeps `(path, value)` pairs, checking every result is JSON-typed.
fn eval(text: &str, path: &str, value: Value) -> Vec<(String, Value)> {
    spec(text)
        .evaluate(path, &value, &no_topics, &EvalLimits::default())
        .unwrap()
        .into_iter()
        .map(|(p, r)| {
            assert_eq!(r.topic_type, TopicType::Json, "{text}");
            (p, r.value)
        })
        .collect()
}

fn paths(results: &[(String, Value)]) -> Vec<&str> {
    results.iter().map(|(p, _)| p.as_str()).collect()
}

fn one(path: &str, value: Value) -> Vec<(String, Value)> {
    vec![(path.to_owned(), value)]
}

// ------------------------------------------------------------------------------------------
// Path directives
// ------------------------------------------------------------------------------------------

#[test]
fn path_directive_takes_source_segments() {
    let v = json!({"x": 1});
    for (template, want) in [
        ("<path(1,2)>", Some("b/c")),
        ("<path(2)>", Some("c/d")),
        ("<path(0)>", Some("a/b/c/d")),
        ("<path(3, 1)>", Some("d")),
        ("<path(4)>", None),
        ("<path(3, 2)>", None),
        ("summary/<path(1)>_x", Some("summary/b/c/d_x")),
        ("s/<path(0,1)><path(3,1)>", Some("s/ad")),
    ] {
        let got = eval(&format!("map a/b/c/d to {template}"), "a/b/c/d", v.clone());
        match want {
            Some(p) => assert_eq!(got, one(p, v.clone()), "{template}"),
            None => assert!(got.is_empty(), "{template}: {got:?}"),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Scalars
// ------------------------------------------------------------------------------------------

#[test]
fn scalar_directive_renders_scalars_and_refuses_containers() {
    for (value, want) in [
        (json!({"k": "text"}), Some("r/text")),
        (json!({"k": 12.57}), Some("r/12.57")),
        (json!({"k": -3}), Some("r/-3")),
        (json!({"k": true}), Some("r/true")),
        (json!({"k": null}), Some("r/null")),
        (json!({"k": "x/y"}), Some("r/x/y")),
        (json!({"k": {"a": 1}}), None),
        (json!({"k": [1]}), None),
        (json!({}), None),
        (json!(5), None),
        // An empty string would make an empty segment: no topic.
        (json!({"k": ""}), None),
        (json!({"k": "a//b"}), None),
    ] {
        let got = eval("map s to r/<scalar(/k)>", "s", value.clone());
        match want {
            Some(p) => assert_eq!(got, one(p, value.clone()), "{value}"),
            None => assert!(got.is_empty(), "{value}: {got:?}"),
        }
    }
}

#[test]
fn separator_replaces_slashes_in_produced_text_only() {
    let v = json!({"k": "x/y", "m": {"p/q": 1}});
    assert_eq!(
        paths(&eval(
            "map s/t to r/<path(0)>/<scalar(/k)> separator '_'",
            "s/t",
            v.clone()
        )),
        ["r/s/t/x_y"]
    );
    assert_eq!(
        paths(&eval(
            "map s to r/<expand(/m)> separator ''",
            "s",
            v.clone()
        )),
        ["r/pq"]
    );
    assert_eq!(paths(&eval("map s to r/<expand(/m)>", "s", v)), ["r/p/q"]);
}

#[test]
fn reserved_derived_paths_give_no_topic() {
    let got = eval("map s to <scalar(/k)>/x", "s", json!({"k": "Diffusion"}));
    assert!(got.is_empty(), "{got:?}");
    let got = eval("map s to <scalar(/k)>/x", "s", json!({"k": "fine"}));
    assert_eq!(paths(&got), ["fine/x"]);
}

// ------------------------------------------------------------------------------------------
// Expand
// ------------------------------------------------------------------------------------------

#[test]
fn expand_objects_arrays_keys_and_nesting() {
    let v = json!({
        "items": [
            {"id": "a1", "qty": 2, "parts": {"p": 1, "q": 2}},
            {"id": "b2", "qty": 5, "parts": {"r": 3}},
            {"qty": 9},
            {"id": {"no": "scalar"}},
        ]
    });
    let got = eval("map o to i/<expand(/items, /id)>", "o", v.clone());
    assert_eq!(
        got,
        vec![
            ("i/a1".to_owned(), v["items"][0].clone()),
            ("i/b2".to_owned(), v["items"][1].clone()),
        ]
    );
    let got = eval("map o to i/<expand(/items)>", "o", v.clone());
    assert_eq!(paths(&got), ["i/0", "i/1", "i/2", "i/3"]);
    // Later directives read the expanded child; nested expands go deeper.
    let got = eval(
        "map o to i/<expand(/items, /id)>/q<scalar(/qty)>/<expand(/parts)>",
        "o",
        v.clone(),
    );
    assert_eq!(
        got,
        vec![
            ("i/a1/q2/p".to_owned(), json!(1)),
            ("i/a1/q2/q".to_owned(), json!(2)),
            ("i/b2/q5/r".to_owned(), json!(3)),
        ]
    );
    // Nothing to expand: no topics.
    assert!(eval("map o to i/<expand(/missing)>", "o", v.clone()).is_empty());
    assert!(eval("map o to i/<expand(/items/0/qty)>", "o", v.clone()).is_empty());
    assert!(eval("map o to i/<expand()>", "o", json!([])).is_empty());
    // Root expand of a scalar array, with the fragment next to constant text.
    assert_eq!(
        eval("map o to v<expand()>x", "o", json!([true, null])),
        vec![
            ("v0x".to_owned(), json!(true)),
            ("v1x".to_owned(), json!(null))
        ]
    );
}

#[test]
fn first_of_two_children_with_the_same_path_wins() {
    let v = json!([{"id": "x", "n": 1}, {"id": "x", "n": 2}, {"id": "y", "n": 3}]);
    let got = eval("map o to i/<expand(, /id)>", "o", v);
    assert_eq!(
        got,
        vec![
            ("i/x".to_owned(), json!({"id": "x", "n": 1})),
            ("i/y".to_owned(), json!({"id": "y", "n": 3})),
        ]
    );
    // A child that fails its transformation does not claim the path.
    let v = json!([{"id": "x", "n": 1}, {"id": "x", "n": 2}]);
    let got = eval(
        "map o to i/<expand(, /id)> process {if '/n = 2' continue}",
        "o",
        v,
    );
    assert_eq!(got, one("i/x", json!({"id": "x", "n": 2})));
}

#[test]
fn transformations_and_as_apply_per_expanded_child() {
    let v = json!({"rows": {"r1": {"p": 10, "q": 3}, "r2": {"p": 70, "q": 1}}});
    let got = eval(
        r#"map s to t/<expand(/rows)> process {set(/total, calc "/p * /q")} as <value(/total)>"#,
        "s",
        v,
    );
    assert_eq!(
        got,
        vec![
            ("t/r1".to_owned(), json!(30)),
            ("t/r2".to_owned(), json!(70))
        ]
    );
}

// ------------------------------------------------------------------------------------------
// Transformations
// ------------------------------------------------------------------------------------------

#[test]
fn process_runs_in_order_and_can_drop_the_topic() {
    let text = r#"map s to t process {set(/a, 1)} process {set(/b, calc "/a + 1")} process {if '/b = 2' remove(/a) else continue}"#;
    assert_eq!(eval(text, "s", json!({})), one("t", json!({"b": 2})));
    // A set whose parent is missing drops the topic.
    assert!(eval("map s to t process {set(/x/y, 1)}", "s", json!({})).is_empty());
    // calc over a non-integer drops the topic.
    assert!(
        eval(
            r#"map s to t process {set(/x, calc "/p * 2")}"#,
            "s",
            json!({"p": 1.5})
        )
        .is_empty()
    );
    // A process on a scalar value cannot set a field.
    assert!(eval("map s to t process {set(/x, 1)}", "s", json!(3)).is_empty());
    // Conditions read missing fields as absent.
    assert_eq!(
        eval(
            "map s to t process {if '/nope != 1' set(/ok, true)}",
            "s",
            json!({})
        ),
        one("t", json!({"ok": true}))
    );
}

#[test]
fn patch_is_atomic_and_failure_drops_the_topic() {
    let text = r#"map s to t patch '[{"op":"test","path":"/v","value":1},{"op":"add","path":"/w","value":[1]},{"op":"move","from":"/v","path":"/m"},{"op":"copy","from":"/w","path":"/c"},{"op":"replace","path":"/c/0","value":9},{"op":"remove","path":"/w"}]'"#;
    assert_eq!(
        eval(text, "s", json!({"v": 1})),
        one("t", json!({"m": 1, "c": [9]}))
    );
    assert!(eval(text, "s", json!({"v": 2})).is_empty());
    let failing_late =
        r#"map s to t patch '[{"op":"add","path":"/a","value":1},{"op":"remove","path":"/nope"}]'"#;
    assert!(eval(failing_late, "s", json!({})).is_empty());
}

// ------------------------------------------------------------------------------------------
// Inserts
// ------------------------------------------------------------------------------------------

#[test]
fn inserts_read_other_topics() {
    let others: BTreeMap<String, Value> = [
        (
            "rates/USD".to_owned(),
            json!({"rate": 1.0, "name": "dollar"}),
        ),
        ("rates/GBP".to_owned(), json!({"rate": 0.72})),
        ("meta".to_owned(), json!("m")),
    ]
    .into_iter()
    .collect();
    let lookup = |p: &str| others.get(p).cloned();
    let run = |text: &str, value: Value| -> Vec<(String, Value)> {
        spec(text)
            .evaluate("accounts/1", &value, &lookup, &EvalLimits::default())
            .unwrap()
            .into_iter()
            .map(|(p, r)| (p, r.value))
            .collect()
    };
    let v = json!({"cur": "USD", "list": [0]});
    assert_eq!(
        run(
            "map a to b insert rates/<scalar(/cur)> key /rate at /rate",
            v.clone()
        ),
        one("b", json!({"cur": "USD", "list": [0], "rate": 1.0}))
    );
    assert_eq!(
        run(
            "map a to b insert meta at /list/- insert meta at /list/0",
            v.clone()
        ),
        one("b", json!({"cur": "USD", "list": ["m", 0, "m"]}))
    );
    // Missing topic or key: the default, else unchanged.
    assert_eq!(
        run("map a to b insert rates/EUR at /rate default 1", v.clone()),
        one("b", json!({"cur": "USD", "list": [0], "rate": 1}))
    );
    assert_eq!(
        run(
            "map a to b insert rates/GBP key /name at /n default 'n/a'",
            v.clone()
        ),
        one("b", json!({"cur": "USD", "list": [0], "n": "n/a"}))
    );
    assert_eq!(
        run("map a to b insert rates/EUR at /rate", v.clone()),
        one("b", v.clone())
    );
    // A path that cannot be built counts as missing.
    assert_eq!(
        run(
            "map a to b insert rates/<scalar(/nope)> at /r default 0",
            v.clone()
        ),
        one("b", json!({"cur": "USD", "list": [0], "r": 0}))
    );
    // Nowhere to put it: unchanged.
    assert_eq!(
        run("map a to b insert meta at /no/where", v.clone()),
        one("b", v.clone())
    );
    // <path> in an insert path reads the source path.
    assert_eq!(
        run(
            "map a to b insert rates/<path(1)> at /r default 0",
            v.clone()
        ),
        one("b", json!({"cur": "USD", "list": [0], "r": 0}))
    );
    // Inserts come after process, and scalars in the insert path read the current value.
    assert_eq!(
        run(
            "map a to b process {set(/cur, 'GBP')} insert rates/<scalar(/cur)> key /rate at /rate as <value(/rate)>",
            v
        ),
        one("b", json!(0.72))
    );
}

// ------------------------------------------------------------------------------------------
// as and type
// ------------------------------------------------------------------------------------------

#[test]
fn as_value_picks_a_part_or_null() {
    let v = json!({"balance": {"amount": 1}});
    assert_eq!(
        eval("map s to t as <value(/balance)>", "s", v.clone()),
        one("t", json!({"amount": 1}))
    );
    assert_eq!(
        eval("map s to t as <value(/none)>", "s", v.clone()),
        one("t", json!(null))
    );
    assert_eq!(eval("map s to t as <value()>", "s", v.clone()), one("t", v));
}

#[test]
fn type_conversion_decides_value_and_existence() {
    let run = |text: &str, value: Value| -> Vec<(String, ReferenceValue)> {
        spec(text)
            .evaluate("s", &value, &no_topics, &EvalLimits::default())
            .unwrap()
    };
    let r = run("map s to t as <value(/p)> type INT64", json!({"p": 2.5}));
    assert_eq!(
        r[0].1,
        ReferenceValue {
            topic_type: TopicType::Int64,
            value: json!(3)
        }
    );
    let r = run(
        "map s to t as <value(/p)> type double",
        json!({"p": "56189.3483"}),
    );
    assert_eq!(r[0].1.value, json!(56189.3483));
    assert_eq!(r[0].1.topic_type, TopicType::Double);
    assert!(
        run(
            "map s to t as <value(/p)> type double",
            json!({"p": "56,189.3483"})
        )
        .is_empty()
    );
    let r = run(
        "map s to t as <value(/p)> type string",
        json!({"p": 40530.3322}),
    );
    assert_eq!(r[0].1.value, json!("40530.3322"));
    assert!(run("map s to t type string", json!({"p": 1})).is_empty());
    let r = run("map s to t as <value(/missing)> type string", json!({}));
    assert_eq!(r[0].1.value, json!(null));
    let r = run("map s to t as <value(/p)> type binary", json!({"p": "hi"}));
    assert_eq!(
        r[0].1,
        ReferenceValue {
            topic_type: TopicType::Binary,
            value: json!("aGk=")
        }
    );
    // Every result is acceptable to TopicValue::from_json for its type.
    for (text, v) in [
        ("map s to t as <value(/p)> type int64", json!({"p": "12"})),
        ("map s to t as <value(/p)> type double", json!({"p": 12})),
        (
            "map s to t as <value(/p)> type binary",
            json!({"p": {"a": [1]}}),
        ),
        ("map s to t as <value(/p)> type string", json!({"p": true})),
    ] {
        for (_, r) in run(text, v) {
            diffusion_core::TopicValue::from_json(r.topic_type, &r.value)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }
}

// ------------------------------------------------------------------------------------------
// evaluate_all
// ------------------------------------------------------------------------------------------

#[test]
fn evaluate_all_selects_sources_and_the_first_source_wins() {
    let topics: BTreeMap<String, Value> = [
        ("a/x".to_owned(), json!({"owner": "bob", "v": 1})),
        ("a/y".to_owned(), json!({"owner": "bob", "v": 2})),
        ("a/z".to_owned(), json!({"owner": "ann", "v": 3})),
        ("other".to_owned(), json!({"owner": "zed"})),
        ("lookup".to_owned(), json!(42)),
    ]
    .into_iter()
    .collect();
    let s = spec("map ?a/ to by-owner/<scalar(/owner)> insert lookup at /extra");
    let out = evaluate_all(&s, &topics, &EvalLimits::default()).unwrap();
    assert_eq!(
        out.into_iter().collect::<Vec<_>>(),
        vec![
            (
                "by-owner/ann".to_owned(),
                json!({"owner": "ann", "v": 3, "extra": 42})
            ),
            (
                "by-owner/bob".to_owned(),
                json!({"owner": "bob", "v": 1, "extra": 42})
            ),
        ]
    );
}

// ------------------------------------------------------------------------------------------
// Every example of the reference, §4
// ------------------------------------------------------------------------------------------

#[test]
fn example_mirror() {
    let v = json!({"n": 1});
    assert_eq!(
        eval("map ?a// to b/<path(1)>", "a/x/y/z", v.clone()),
        one("b/x/y/z", v.clone())
    );
    // `a` itself is selected too, but has no segment 1: no reference topic.
    let s = spec("map ?a// to b/<path(1)>");
    assert!(s.source.matches("a"));
    assert!(eval("map ?a// to b/<path(1)>", "a", v).is_empty());
}

#[test]
fn example_accounts_balance() {
    let v = json!({"account": "1234", "balance": {"amount": 12.57, "currency": "USD"}});
    assert_eq!(
        eval(
            "map ?accounts// to balances/<scalar(/account)> as <value(/balance)>",
            "accounts/1",
            v
        ),
        one("balances/1234", json!({"amount": 12.57, "currency": "USD"}))
    );
}

#[test]
fn example_currency_account_scalars() {
    let v = json!({"account": "1234", "balance": {"amount": 12.57, "currency": "USD"}});
    assert_eq!(
        paths(&eval(
            "map ?accounts// to currency/<scalar(/balance/currency)>/account/<scalar(/account)>",
            "accounts/1",
            v
        )),
        ["currency/USD/account/1234"]
    );
}

#[test]
fn example_throttle() {
    let s = spec("map ?a// to b/<path(1)> throttle to 2 updates every 5 seconds");
    let t = s.options.throttle.unwrap();
    assert_eq!((t.updates, t.period.as_secs()), (2, 5));
    // The evaluator ignores throttling.
    assert_eq!(
        paths(
            &s.evaluate("a/q", &json!(1), &no_topics, &EvalLimits::default())
                .unwrap()
                .into_iter()
                .map(|(p, r)| (p, r.value))
                .collect::<Vec<_>>()
        ),
        ["b/q"]
    );
}

#[test]
fn example_orders_expand_items_by_id() {
    let v = json!({"items": [{"id": "A7", "qty": 1}, {"id": "B3", "qty": 4}]});
    assert_eq!(
        eval(
            "map orders to individual/<expand(/items, /id)>",
            "orders",
            v
        ),
        vec![
            ("individual/A7".to_owned(), json!({"id": "A7", "qty": 1})),
            ("individual/B3".to_owned(), json!({"id": "B3", "qty": 4})),
        ]
    );
}

#[test]
fn example_price_filter() {
    let text = "map ?a// to b/<path(1)> process {if '/Price gt 50' continue}";
    assert_eq!(
        eval(text, "a/x", json!({"Price": 60})),
        one("b/x", json!({"Price": 60}))
    );
    assert!(eval(text, "a/x", json!({"Price": 50})).is_empty());
    assert!(eval(text, "a/x", json!({"Price": "60"})).is_empty());
}

#[test]
fn example_tier() {
    let text = "map ?a// to b/<path(1)> process {if '/Price lt 50' set(/Tier, 1) elseif '/Price gt 50' set(/Tier, 2)}";
    assert_eq!(
        eval(text, "a/x", json!({"Price": 10})),
        one("b/x", json!({"Price": 10, "Tier": 1}))
    );
    assert_eq!(
        eval(text, "a/x", json!({"Price": 99.5})),
        one("b/x", json!({"Price": 99.5, "Tier": 2}))
    );
    // Exactly 50 satisfies no branch and there is no else: no reference topic.
    assert!(eval(text, "a/x", json!({"Price": 50})).is_empty());
}

#[test]
fn example_cars_by_owner() {
    let text = "map ?Cars/ to <scalar(/owner)>/<path(1)> preserve topics";
    let s = spec(text);
    assert!(s.options.preserve_topics);
    assert!(s.template.is_value_derived());
    assert!(!s.source.matches("Cars"));
    assert_eq!(
        eval(text, "Cars/ford", json!({"owner": "bob", "colour": "red"})),
        one("bob/ford", json!({"owner": "bob", "colour": "red"}))
    );
    assert_eq!(
        paths(&eval(text, "Cars/vw/golf", json!({"owner": "ann"}))),
        ["ann/vw/golf"]
    );
}

#[test]
fn example_coindesk_bpi_expand() {
    let sample: Value =
        serde_json::from_str(include_str!("../testdata/coindesk-bpi-sample.json")).unwrap();
    let got = eval(
        "map redis/bitcoin to redis/views/bitcoin/<expand(/bpi)>",
        "redis/bitcoin",
        sample.clone(),
    );
    assert_eq!(
        paths(&got),
        [
            "redis/views/bitcoin/EUR",
            "redis/views/bitcoin/GBP",
            "redis/views/bitcoin/USD"
        ]
    );
    for (path, value) in &got {
        let code = path.rsplit('/').next().unwrap();
        assert_eq!(value, &sample["bpi"][code], "{path}");
    }
    assert_eq!(got[2].1["rate_float"], json!(56189.3483));
    // A typical refinement: just the USD rate as a DOUBLE topic.
    let s = spec(
        "map redis/bitcoin to redis/views/bitcoin/<expand(/bpi)>/rate as <value(/rate_float)> type DOUBLE",
    );
    let got = s
        .evaluate("redis/bitcoin", &sample, &no_topics, &EvalLimits::default())
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].0, "redis/views/bitcoin/USD/rate");
    assert_eq!(
        got[2].1,
        ReferenceValue {
            topic_type: TopicType::Double,
            value: json!(56189.3483)
        }
    );
}

#[test]
fn example_values_array_expand() {
    assert_eq!(
        eval(
            "map s to value<expand(/values)>",
            "s",
            json!({"values": [1, 5, 7]})
        ),
        vec![
            ("value0".to_owned(), json!(1)),
            ("value1".to_owned(), json!(5)),
            ("value2".to_owned(), json!(7)),
        ]
    );
}

#[test]
fn expand_is_bounded_by_the_result_limit() {
    let limits = EvalLimits {
        max_results: 100,
        max_output_bytes: 1 << 20,
    };
    let children = |n: usize| Value::Array((0..n).map(|i| json!(i)).collect());
    let s = spec("map s to r/<expand()>");
    assert_eq!(
        s.evaluate("s", &children(100), &no_topics, &limits)
            .unwrap()
            .len(),
        100
    );
    assert_eq!(
        s.evaluate("s", &children(101), &no_topics, &limits),
        Err(EvalError::TooManyResults { limit: 100 })
    );
    // Nested expands multiply: 20 × 20 = 400 > 100, refused without building all 400.
    let grid = Value::Array((0..20).map(|_| children(20)).collect());
    let s = spec("map s to r/<expand()>/<expand()>");
    assert!(matches!(
        s.evaluate("s", &grid, &no_topics, &limits),
        Err(EvalError::TooManyResults { .. })
    ));
}

#[test]
fn insert_amplification_is_bounded_by_the_byte_limit() {
    let limits = EvalLimits {
        max_results: 10_000,
        max_output_bytes: 1 << 20,
    };
    // 1,000 branches each copying a 10 KB topic would be 10 MB of output.
    let big = json!("x".repeat(10_000));
    let lookup = |p: &str| (p == "big").then(|| big.clone());
    let source = Value::Array((0..1_000).map(|i| json!({ "n": i })).collect());
    let s = spec("map s to r/<expand()> insert big at /copy");
    assert_eq!(
        s.evaluate("s", &source, &lookup, &limits),
        Err(EvalError::TooLarge { limit: 1 << 20 })
    );
    // The same view within the budget works.
    let small = Value::Array((0..50).map(|i| json!({ "n": i })).collect());
    let out = s.evaluate("s", &small, &lookup, &limits).unwrap();
    assert_eq!(out.len(), 50);
    assert_eq!(out[0].1.value["copy"], big);
}

#[test]
fn insert_reads_each_topic_once_per_evaluation() {
    let calls = std::cell::Cell::new(0);
    let lookup = |p: &str| {
        calls.set(calls.get() + 1);
        (p == "other").then(|| json!(7))
    };
    let source = Value::Array((0..100).map(|i| json!({ "n": i })).collect());
    let s = spec("map s to r/<expand()> insert other at /o insert missing at /m");
    let out = s
        .evaluate("s", &source, &lookup, &EvalLimits::default())
        .unwrap();
    assert_eq!(out.len(), 100);
    assert_eq!(out[99].1.value, json!({"n": 99, "o": 7}));
    assert_eq!(calls.get(), 2, "one read of 'other' and one of 'missing'");
}

#[test]
fn patch_test_compares_numbers_by_value() {
    // RFC 6902 §4.6: numbers are equal when their values are numerically equal.
    let s = spec(
        r#"map s to r patch '[{"op":"test","path":"/a","value":1.0},{"op":"add","path":"/ok","value":true}]'"#,
    );
    let out = s
        .evaluate("s", &json!({"a": 1}), &no_topics, &EvalLimits::default())
        .unwrap();
    assert_eq!(out[0].1.value, json!({"a": 1, "ok": true}));
    let out = s
        .evaluate("s", &json!({"a": 2}), &no_topics, &EvalLimits::default())
        .unwrap();
    assert!(out.is_empty(), "a failing test gives no topic");
    let nested = spec(r#"map s to r patch '[{"op":"test","path":"/a","value":{"x":[1,2.0]}}]'"#);
    let out = nested
        .evaluate(
            "s",
            &json!({"a": {"x": [1.0, 2]}}),
            &no_topics,
            &EvalLimits::default(),
        )
        .unwrap();
    assert_eq!(out.len(), 1);
}
