//! The view specification parser: every construct into its AST, and every error with its
//! line:column, caret and expectation.

use std::time::Duration;

use diffusion_core::TopicType;
use diffusion_core::view::{
    CompareOp, Condition, Operand, Operation, SetValue, Statement, TemplatePart, Transformation,
    ViewSpec, ViewSpecError,
};
use serde_json::json;

fn parse(text: &str) -> ViewSpec {
    ViewSpec::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse:\n{e}"))
}

/// Asserts the error's position, the caret line under the source line, and part of the message.
#[track_caller]
fn assert_error(text: &str, line: usize, column: usize, caret: &str, expected: &str) {
    let err: ViewSpecError = match ViewSpec::parse(text) {
        Ok(spec) => panic!("{text:?} should not parse, got {spec:?}"),
        Err(e) => e,
    };
    let shown = err.to_string();
    assert_eq!(
        (err.line(), err.column()),
        (line, column),
        "position for {text:?}:\n{shown}"
    );
    assert_eq!(err.caret_line(), caret, "caret for {text:?}:\n{shown}");
    assert!(
        err.message().contains(expected),
        "message for {text:?} should contain {expected:?}:\n{shown}"
    );
    assert!(shown.starts_with(&format!("{line}:{column}: ")), "{shown}");
    assert!(
        shown.contains(&format!("\n  {}\n  {caret}", err.source_line())),
        "{shown}"
    );
}

// ------------------------------------------------------------------------------------------
// Constructs
// ------------------------------------------------------------------------------------------

#[test]
fn minimal_view_keeps_its_text() {
    let text = "map ?a// to b/<path(1)>";
    let spec = parse(text);
    assert_eq!(spec.source.as_str(), "?a//");
    assert_eq!(spec.as_str(), text);
    assert_eq!(spec.to_string(), text);
    assert_eq!(spec.template.as_str(), "b/<path(1)>");
    assert_eq!(
        spec.template.parts(),
        &[
            TemplatePart::Text("b/".into()),
            TemplatePart::Path {
                start: 1,
                count: None
            }
        ]
    );
    assert!(spec.transformations.is_empty() && spec.inserts.is_empty());
    assert_eq!(spec.options, Default::default());
    assert!(!spec.template.is_value_derived());
    assert_eq!(text.parse::<ViewSpec>().unwrap(), spec);
}

#[test]
fn directives_and_constant_text_mix_inside_segments() {
    let spec = parse(r"map a to summary/<path(1, 2)>_x/<scalar(/a\)b)>v<expand(/items, /id)>");
    let parts = spec.template.parts();
    assert_eq!(parts.len(), 6, "{parts:?}");
    assert_eq!(parts[0], TemplatePart::Text("summary/".into()));
    assert_eq!(
        parts[1],
        TemplatePart::Path {
            start: 1,
            count: Some(2)
        }
    );
    assert_eq!(parts[2], TemplatePart::Text("_x/".into()));
    let TemplatePart::Scalar(p) = &parts[3] else {
        panic!("{parts:?}")
    };
    assert_eq!(p.as_str(), "/a)b");
    let TemplatePart::Expand { pointer, key } = &parts[5] else {
        panic!("{parts:?}")
    };
    assert_eq!(pointer.as_str(), "/items");
    assert_eq!(key.as_ref().unwrap().as_str(), "/id");
    assert!(spec.template.is_value_derived());
}

#[test]
fn expand_arguments_are_optional() {
    for (text, ptr, key) in [
        ("map a to x<expand()>", "", None),
        ("map a to x<expand(/v)>", "/v", None),
        ("map a to x<expand(, /id)>", "", Some("/id")),
        ("map a to x<expand( /v ,  /id )>", "/v", Some("/id")),
    ] {
        let spec = parse(text);
        let TemplatePart::Expand { pointer, key: k } = &spec.template.parts()[1] else {
            panic!("{text}")
        };
        assert_eq!(pointer.as_str(), ptr, "{text}");
        assert_eq!(k.as_ref().map(|k| k.as_str()), key, "{text}");
    }
}

#[test]
fn quoting_and_escaping() {
    let spec = parse(r#"map "?a b//" to 'x y/<path(1)>' separator '\'|\''"#);
    assert_eq!(spec.source.as_str(), "?a b//");
    assert_eq!(spec.template.parts()[0], TemplatePart::Text("x y/".into()));
    assert_eq!(spec.options.separator.as_deref(), Some("'|'"));
    // `\` escapes everywhere: a regex backslash is written twice.
    let spec = parse(r"map ?a\\.b// to x\<y");
    assert_eq!(spec.source.as_str(), r"?a\.b//");
    assert_eq!(spec.template.parts(), &[TemplatePart::Text("x<y".into())]);
    // Quotes may sit inside a clause.
    let spec = parse("map a to b separator x'  'y");
    assert_eq!(spec.options.separator.as_deref(), Some("x  y"));
    let spec = parse("map a to b separator ''");
    assert_eq!(spec.options.separator.as_deref(), Some(""));
}

#[test]
fn keywords_are_case_insensitive_and_lines_may_break_anywhere() {
    let spec =
        parse("MAP ?a//\n  TO b/<path(1)>\n  Throttle To 1 Update Every Minute\n  TYPE int64\n");
    assert_eq!(spec.options.topic_type, Some(TopicType::Int64));
    assert_eq!(
        spec.options.throttle.map(|t| (t.updates, t.period)),
        Some((1, Duration::from_secs(60)))
    );
}

#[test]
fn every_option_in_any_order() {
    let spec = parse(
        "map ?a// to b/<path(1)> type double preserve topics separator '_' \
         delay by 2 minutes as <value(/x/y)> throttle to 2 updates every 5 seconds \
         with properties CONFLATION:always, publish_values_only : true",
    );
    let o = &spec.options;
    assert_eq!(o.topic_type, Some(TopicType::Double));
    assert!(o.preserve_topics);
    assert_eq!(o.separator.as_deref(), Some("_"));
    assert_eq!(o.delay, Some(Duration::from_secs(120)));
    assert_eq!(o.value_pointer.as_ref().unwrap().as_str(), "/x/y");
    let t = o.throttle.unwrap();
    assert_eq!((t.updates, t.period), (2, Duration::from_secs(5)));
    assert_eq!(o.properties.len(), 2);
    assert_eq!(o.properties["CONFLATION"], "always");
    assert_eq!(o.properties["PUBLISH_VALUES_ONLY"], "true");
}

#[test]
fn throttle_and_delay_forms() {
    for (text, updates, secs) in [
        ("throttle to 1 update every second", 1, 1),
        ("throttle to 3 updates every hour", 3, 3600),
        ("throttle to 10 updates every 1 minute", 10, 60),
        ("throttle to 4 updates every 2 hours", 4, 7200),
    ] {
        let spec = parse(&format!("map a to b {text}"));
        let t = spec.options.throttle.unwrap();
        assert_eq!((t.updates, t.period.as_secs()), (updates, secs), "{text}");
    }
    for (text, secs) in [
        ("delay by 1 second", 1),
        ("delay by 5 seconds", 5),
        ("delay by 3 hours", 10_800),
    ] {
        let spec = parse(&format!("map a to b {text}"));
        assert_eq!(
            spec.options.delay,
            Some(Duration::from_secs(secs)),
            "{text}"
        );
    }
}

#[test]
fn every_topic_type() {
    for (name, t) in [
        ("JSON", TopicType::Json),
        ("string", TopicType::String),
        ("Int64", TopicType::Int64),
        ("DOUBLE", TopicType::Double),
        ("binary", TopicType::Binary),
    ] {
        assert_eq!(
            parse(&format!("map a to b type {name}")).options.topic_type,
            Some(t)
        );
    }
}

#[test]
fn process_statements() {
    let spec = parse(
        "map ?a// to b/<path(1)> process {if '/Price lt 50' set(/Tier, 1) elseif '/Price gt 50' set(/Tier, 2)}",
    );
    let [
        Transformation::Process(Statement::Conditional {
            branches,
            otherwise,
        }),
    ] = spec.transformations.as_slice()
    else {
        panic!("{:?}", spec.transformations)
    };
    assert!(otherwise.is_none());
    assert_eq!(branches.len(), 2);
    let Condition::Compare { left, op, right } = &branches[0].condition else {
        panic!()
    };
    assert_eq!(
        (left.as_str(), *op, right),
        ("/Price", CompareOp::Lt, &Operand::Constant(json!(50)))
    );
    let [Operation::Set { target, value }] = branches[1].operations.as_slice() else {
        panic!()
    };
    assert_eq!(target.as_str(), "/Tier");
    assert_eq!(value, &SetValue::Constant(json!(2)));

    let spec = parse(
        r#"map a to b process { set(/a, "x"); set(/n, calc "/a * /b + 3"); remove(/c); continue } process{continue}"#,
    );
    assert_eq!(spec.transformations.len(), 2);
    let Transformation::Process(Statement::Operations(ops)) = &spec.transformations[0] else {
        panic!()
    };
    assert_eq!(ops.len(), 4);
    assert!(matches!(
        &ops[1],
        Operation::Set {
            value: SetValue::Calc(_),
            ..
        }
    ));
    assert!(matches!(&ops[2], Operation::Remove(p) if p.as_str() == "/c"));
    assert_eq!(ops[3], Operation::Continue);
}

#[test]
fn patches_and_inserts() {
    let spec = parse(
        r#"map a to b patch '[{"op":"add","path":"/x","value":1},{"op":"remove","path":"/y"}]' insert other/<path(1)> key /k at /into default 0 insert c at /l/-"#,
    );
    let [Transformation::Patch(p)] = spec.transformations.as_slice() else {
        panic!()
    };
    assert_eq!(p.len(), 2);
    assert!(p.as_str().starts_with(r#"[{"op":"add""#));
    assert_eq!(spec.inserts.len(), 2);
    let first = &spec.inserts[0];
    assert_eq!(first.path.as_str(), "other/<path(1)>");
    assert_eq!(first.key.as_ref().unwrap().as_str(), "/k");
    assert_eq!(first.at.as_str(), "/into");
    assert_eq!(first.default, Some(json!(0)));
    assert_eq!(spec.inserts[1].at.as_str(), "/l/-");
    assert_eq!(spec.inserts[1].default, None);
    for (default, want) in [
        ("'n/a'", json!("n/a")),
        ("'{\"a\": [1]}'", json!({"a": [1]})),
        ("'\"1\"'", json!("1")),
        ("true", json!(true)),
    ] {
        let spec = parse(&format!("map a to b insert c at /d default {default}"));
        assert_eq!(spec.inserts[0].default, Some(want), "{default}");
    }
}

#[test]
fn transformations_then_inserts_then_options() {
    let spec =
        parse("map a to b process {continue} patch '[]' insert c at /d insert e at /f type string");
    assert_eq!(spec.transformations.len(), 2);
    assert_eq!(spec.inserts.len(), 2);
    assert_eq!(spec.options.topic_type, Some(TopicType::String));
}

// ------------------------------------------------------------------------------------------
// Errors: where, the caret, and what was expected
// ------------------------------------------------------------------------------------------

#[test]
fn structure_errors() {
    assert_error("", 1, 1, "^", "starts with 'map'");
    assert_error("mapp a to b", 1, 1, "^^^^", "starts with 'map'");
    assert_error("map", 1, 4, "   ^", "expected a topic selector");
    assert_error(
        "map ?a// too b",
        1,
        10,
        "         ^^^",
        "expected 'to' after the source selector",
    );
    assert_error("map ?a//\n  too b", 2, 3, "  ^^^", "expected 'to'");
    assert_error("map a", 1, 6, "     ^", "expected 'to'");
    assert_error(
        "map a to",
        1,
        9,
        "        ^",
        "expected a path template after 'to'",
    );
    assert_error(
        "map a to b foo",
        1,
        12,
        "           ^^^",
        "expected a transformation (process, patch, insert) or an option",
    );
    assert_error("map 'a b to c", 1, 5, "    ^^^^^^^^^", "unterminated quote");
    assert_error(
        "map a to b\\",
        1,
        11,
        "          ^",
        "must be followed by the character",
    );
}

#[test]
fn selector_errors() {
    assert_error(
        "map ?a(// to b",
        1,
        5,
        "    ^^^^^",
        "invalid source selector: invalid regular expression in selector '?a(//': unclosed group",
    );
    let err = ViewSpec::parse("map ?a(// to b").unwrap_err();
    assert_eq!(err.to_string().lines().count(), 3, "{err}");
    assert_error("map ?a//b to x", 1, 5, "    ^^^^^", "empty part");
    assert_error("map $x to b", 1, 5, "    ^^", "reserved");
}

#[test]
fn template_errors() {
    assert_error("map a to /b", 1, 10, "         ^", "cannot start with '/'");
    assert_error("map a to b//c", 1, 12, "           ^", "empty segment");
    assert_error("map a to b/", 1, 11, "          ^", "cannot end with '/'");
    assert_error(
        "map a to b/<nope(1)>",
        1,
        12,
        "           ^^^^^",
        "unknown directive <nope",
    );
    assert_error(
        "map a to b/<path(x)>",
        1,
        18,
        "                 ^",
        "expected a whole number",
    );
    assert_error(
        "map a to b/<path(-1)>",
        1,
        18,
        "                 ^^",
        "expected a whole number",
    );
    assert_error(
        "map a to b/<path(1, 0)>",
        1,
        21,
        "                    ^",
        "at least 1",
    );
    assert_error(
        "map a to b/<path(1,2,3)>",
        1,
        18,
        "                 ^^^^^",
        "takes a start",
    );
    assert_error(
        "map a to b/<path()>",
        1,
        18,
        "                 ^",
        "expected a whole number",
    );
    assert_error(
        "map a to b/<path(1",
        1,
        12,
        "           ^^^^^^^",
        "unclosed directive",
    );
    assert_error(
        "map a to b/<path(1)x",
        1,
        20,
        "                   ^",
        "expected '>'",
    );
    assert_error(
        "map a to b/<path(1)",
        1,
        20,
        "                   ^",
        "expected '>'",
    );
    assert_error(
        "map a to b/<path 1>",
        1,
        12,
        "           ^^^^^",
        "expected '(' after '<path'",
    );
    assert_error(
        "map a to b/<",
        1,
        12,
        "           ^",
        "expected a directive",
    );
    assert_error(
        "map a to b/<1>",
        1,
        12,
        "           ^",
        "expected a directive",
    );
    assert_error(
        "map a to b/<scalar(account)>",
        1,
        20,
        "                   ^^^^^^^",
        "invalid JSON pointer 'account': a JSON pointer must be empty or start with '/'",
    );
    assert_error(
        "map a to b/<scalar(/a~2)>",
        1,
        20,
        "                   ^^^^",
        "'~' must be followed by 0 or 1",
    );
    assert_error(
        "map a to b/<scalar(/a, /b)>",
        1,
        12,
        "           ^^^^^^^^^^^^^^^^",
        "takes one JSON pointer",
    );
    assert_error(
        "map a to b/<expand(/a, /b, /c)>",
        1,
        12,
        "           ^^^^^^^^^^^^^^^^^^^^",
        "<expand(…)> takes",
    );
    assert_error(
        "map a to b/<expand(/a, )>",
        1,
        12,
        "           ^^^^^^^^^^^^^^",
        "<expand(…)> takes",
    );
    assert_error(
        "map a to b/<value(/a)>",
        1,
        12,
        "           ^^^^^^^^^^^",
        "only belongs after 'as'",
    );
    assert_error(
        "map a to Diffusion/x",
        1,
        10,
        "         ^^^^^^^^^^^",
        "reserved",
    );
    assert_error(
        "map a to $x/<path(0)>",
        1,
        10,
        "         ^^^^^^^^^^^^",
        "reserved",
    );
    assert_error(
        "map a to 'b\tc'",
        1,
        12,
        "           ^",
        "control characters",
    );
}

#[test]
fn option_errors() {
    assert_error(
        "map a to b type x",
        1,
        17,
        "                ^",
        "unknown topic type 'x'",
    );
    assert_error(
        "map a to b type",
        1,
        16,
        "               ^",
        "expected a topic type",
    );
    assert_error(
        "map a to b type time_series",
        1,
        17,
        "                ^^^^^^^^^^^",
        "not supported",
    );
    assert_error(
        "map a to b type json type string",
        1,
        22,
        "                     ^^^^",
        "the 'type' option may be given only once (first given at 1:12)",
    );
    assert_error(
        "map a to b preserve topics\n separator _ preserve topics",
        2,
        14,
        "             ^^^^^^^^",
        "'preserve topics' option may be given only once (first given at 1:12)",
    );
    assert_error(
        "map a to b as <value(/x)> as <value(/y)>",
        1,
        27,
        "                          ^^",
        "'as' option may be given only once",
    );
    assert_error(
        "map a to b separator '_' separator '-'",
        1,
        26,
        "                         ^^^^^^^^^",
        "only once",
    );
    assert_error(
        "map a to b as",
        1,
        14,
        "             ^",
        "expected <value(/pointer)> after 'as'",
    );
    assert_error(
        "map a to b as <scalar(/x)>",
        1,
        15,
        "              ^^^^^^^^^^^^",
        "expected <value(/pointer)>",
    );
    assert_error(
        "map a to b as <value(/x)>x",
        1,
        15,
        "              ^^^^^^^^^^^^",
        "expected <value(/pointer)>",
    );
    assert_error(
        "map a to b as <value(x)>",
        1,
        22,
        "                     ^",
        "invalid JSON pointer",
    );
    assert_error(
        "map a to b separator",
        1,
        21,
        "                    ^",
        "expected the separator text",
    );
    assert_error(
        "map a to b preserve",
        1,
        20,
        "                   ^",
        "expected 'topics'",
    );
    assert_error(
        "map a to b preserve values",
        1,
        21,
        "                    ^^^^^^",
        "expected 'topics'",
    );
    assert_error(
        "map a to b with x",
        1,
        17,
        "                ^",
        "expected 'properties'",
    );
}

#[test]
fn throttle_and_delay_errors() {
    let pre = "map a to b ";
    let at = |col: usize, width: usize| format!("{}{}", " ".repeat(col - 1), "^".repeat(width));
    let cases: &[(&str, usize, usize, &str)] = &[
        ("throttle to 0 updates every second", 24, 1, "not zero"),
        (
            "throttle to -1 updates every second",
            24,
            2,
            "not a negative one",
        ),
        (
            "throttle to x updates every second",
            24,
            1,
            "positive whole number",
        ),
        ("throttle 2 updates every second", 21, 1, "expected 'to'"),
        (
            "throttle to 2 times every second",
            26,
            5,
            "expected 'updates'",
        ),
        (
            "throttle to 2 updates per second",
            34,
            3,
            "expected 'every'",
        ),
        ("throttle to 2 updates every 0 seconds", 40, 1, "not zero"),
        (
            "throttle to 2 updates every fortnight",
            40,
            9,
            "expected a period",
        ),
        (
            "throttle to 2 updates every seconds",
            40,
            7,
            "expected a period",
        ),
        (
            "throttle to 2 updates every 5 days",
            42,
            4,
            "expected a time unit",
        ),
        (
            "throttle to 99999999999 updates every second",
            24,
            11,
            "too many updates",
        ),
        (
            "throttle to 99999999999999999999999 updates every second",
            24,
            23,
            "too large",
        ),
        (
            "throttle to 1 update every 9999999999999999999 hours",
            39,
            19,
            "too long",
        ),
        (
            "throttle to 1 update every 25 hours",
            39,
            2,
            "too long: at most 24 hours",
        ),
        (
            "delay by 86401 seconds",
            21,
            5,
            "too long: at most 24 hours",
        ),
        ("delay by 9223372036854775807 seconds", 21, 19, "too long"),
        ("delay 5 seconds", 18, 1, "expected 'by'"),
        ("delay by 5", 22, 1, "expected a time unit"),
        ("delay by 0 seconds", 21, 1, "not zero"),
        ("delay by second", 21, 6, "positive whole number"),
    ];
    for (option, col, width, msg) in cases {
        assert_error(&format!("{pre}{option}"), 1, *col, &at(*col, *width), msg);
    }
}

#[test]
fn property_errors() {
    assert_error(
        "map a to b with properties CONFLATION:sometimes",
        1,
        28,
        "                           ^^^^^^^^^^^^^^^^^^^^",
        "CONFLATION cannot be 'sometimes'",
    );
    assert_error(
        "map a to b with properties NOPE:1",
        1,
        28,
        "                           ^^^^^^",
        "unknown topic property 'NOPE'",
    );
    assert_error(
        "map a to b with properties CONFLATION:off, conflation:always",
        1,
        44,
        "                                           ^^^^^^^^^^",
        "property CONFLATION is given twice (first at 1:28)",
    );
    assert_error(
        "map a to b with properties CONFLATION",
        1,
        38,
        "                                     ^",
        "expected ':'",
    );
    assert_error(
        "map a to b with properties",
        1,
        27,
        "                          ^",
        "KEY:VALUE",
    );
    assert_error(
        "map a to b with properties A:",
        1,
        30,
        "                             ^",
        "expected a property value",
    );
}

#[test]
fn transformation_errors() {
    assert_error(
        "map a to b type json process {continue}",
        1,
        22,
        "                     ^^^^^^^",
        "'process' must come before the options",
    );
    assert_error(
        "map a to b insert x at /y patch '[]'",
        1,
        27,
        "                          ^^^^^",
        "'patch' must come before the inserts",
    );
    assert_error(
        "map a to b separator x insert y at /z",
        1,
        24,
        "                       ^^^^^^",
        "'insert' must come before the options",
    );
    assert_error(
        "map a to b process continue",
        1,
        20,
        "                   ^^^^^^^^",
        "expected '{'",
    );
    assert_error(
        "map a to b process {set(/a, 1)",
        1,
        31,
        "                              ^",
        "'}'",
    );
    assert_error(
        "map a to b process {if '/a = 1' continue\n  elsif '/a = 2' continue}",
        2,
        3,
        "  ^^^^^",
        "expected ';' and another operation, 'elseif', 'else' or '}'",
    );
    assert_error(
        "map a to b process {set(/a, 1);; }",
        1,
        32,
        "                               ^",
        "expected an operation",
    );
    assert_error(
        "map a to b process {}",
        1,
        21,
        "                    ^",
        "expected an operation",
    );
    assert_error(
        "map a to b process {set(/a/~, 1)}",
        1,
        25,
        "                        ^^^^",
        "invalid JSON pointer",
    );
    assert_error(
        "map a to b process {if '/a =' continue}",
        1,
        29,
        "                            ^",
        "expected a constant",
    );
    assert_error(
        "map a to b process {if '/a = 1 and' continue}",
        1,
        35,
        "                                  ^",
        "expected a comparison",
    );
    assert_error(
        "map a to b process {if 'a = 1' continue}",
        1,
        25,
        "                        ^",
        "expected a comparison",
    );
}

#[test]
fn patch_errors() {
    assert_error(
        r#"map a to b patch '[{"op":"nope","path":"/a"}]'"#,
        1,
        31,
        "                              ^",
        "invalid JSON Patch (RFC 6902): unknown variant `nope`, expected one of `add`, `remove`, `replace`, `move`, `copy`, `test`",
    );
    assert_error(
        r#"map a to b patch '[{"op":"add","path":"a","value":1}]'"#,
        1,
        53,
        "                                                    ^",
        "invalid JSON Patch",
    );
    let err = ViewSpec::parse(r#"map a to b patch '[{"op":"nope"}]'"#).unwrap_err();
    assert!(!err.message().contains("at line"), "{err}");
    assert_error("map a to b patch '['", 1, 19, "                  ^", "EOF");
    assert_error(
        "map a to b patch [{\"op\": \"remove\"}]",
        1,
        21,
        "                    ^",
        "quote the whole patch",
    );
    assert_error(
        "map a to b patch",
        1,
        17,
        "                ^",
        "expected a quoted JSON Patch",
    );
    assert_error(
        "map a to b patch '{}'",
        1,
        19,
        "                  ^",
        "invalid JSON Patch",
    );
}

#[test]
fn insert_errors() {
    assert_error(
        "map a to b insert x/<expand()> at /y",
        1,
        21,
        "                    ^^^^^^^^^^",
        "cannot be used in an insert path",
    );
    assert_error(
        "map a to b insert x",
        1,
        20,
        "                   ^",
        "expected 'at'",
    );
    assert_error(
        "map a to b insert x to /y",
        1,
        21,
        "                    ^^",
        "expected 'at'",
    );
    assert_error(
        "map a to b insert x at ''",
        1,
        25,
        "                        ^",
        "needs a pointer to a field",
    );
    assert_error(
        "map a to b insert x key y at /z",
        1,
        25,
        "                        ^",
        "invalid JSON pointer 'y'",
    );
    assert_error(
        "map a to b insert x at /y default",
        1,
        34,
        "                                 ^",
        "expected a value after 'default'",
    );
    assert_error(
        "map a to b insert",
        1,
        18,
        "                 ^",
        "expected the path of the topic to insert",
    );
    assert_error(
        "map a to b insert /x at /y",
        1,
        19,
        "                  ^",
        "cannot start with '/'",
    );
}
