//! The top-level grammar: `map SELECTOR to TEMPLATE transformation* option*`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::error::ViewSpecError;
use super::lexer::{Clause, ClauseKind, Scanner, Span};
use super::process;
use super::template::{self, Context, PathTemplate};
use super::{Insert, JsonPatch, Throttle, Transformation, ViewOptions, ViewSpec};
use crate::selector::{Selector, SelectorError};
use crate::topic::{TopicProperties, TopicType};

const AFTER_TEMPLATE: &str = "expected a transformation (process, patch, insert) or an option \
     (with properties, as, throttle, delay, separator, preserve topics, type)";

/// Longest `delay by` and `throttle … every` period: a day. Timers and held results live for
/// that long, so the range is checked where the text is read.
pub const MAX_VIEW_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The keywords that start an option.
const OPTIONS: &[&str] = &[
    "with",
    "as",
    "throttle",
    "delay",
    "separator",
    "preserve",
    "type",
];

/// Parses a whole specification.
pub(crate) fn parse(text: &str) -> Result<ViewSpec, ViewSpecError> {
    let mut s = Scanner::new(text);
    s.expect_keyword(
        "map",
        "a view specification starts with 'map', e.g. map ?a// to b/<path(1)>",
    )?;
    s.skip_ws();
    let selector_clause = s.read_clause(ClauseKind::Plain, &[])?;
    if selector_clause.is_missing() {
        return Err(s.error_here("expected a topic selector after 'map'"));
    }
    let source = Selector::parse(&selector_clause.text()).map_err(|e| {
        let why = match &e {
            // The regex engine's explanation spans several lines; its last line says what is wrong.
            SelectorError::Regex { selector, reason } => format!(
                "invalid regular expression in selector '{selector}': {}",
                reason
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or(reason)
                    .trim()
                    .trim_start_matches("error: ")
            ),
            other => other.to_string(),
        };
        s.error(
            selector_clause.span.clone(),
            format!("invalid source selector: {why}"),
        )
    })?;
    s.expect_keyword("to", "expected 'to' after the source selector")?;
    s.skip_ws();
    let template_clause = s.read_clause(ClauseKind::Template, &[])?;
    if template_clause.is_missing() {
        return Err(s.error_here("expected a path template after 'to'"));
    }
    let template = PathTemplate::parse(text, &template_clause, Context::Target)?;

    let mut transformations = Vec::new();
    let mut inserts = Vec::new();
    let mut options = ViewOptions::default();
    let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
    loop {
        s.skip_ws();
        if s.at_end() {
            break;
        }
        let word = s.next_word_span();
        if let Some(kw) = ["process", "patch", "insert"]
            .into_iter()
            .find(|kw| s.peek_keyword(kw))
        {
            if !seen.is_empty() {
                return Err(s.error(
                    word,
                    format!(
                        "'{kw}' must come before the options (transformations first, then options)"
                    ),
                ));
            }
            if kw != "insert" && !inserts.is_empty() {
                return Err(s.error(
                    word,
                    format!("'{kw}' must come before the inserts (inserts come last)"),
                ));
            }
            s.eat_keyword(kw);
            match kw {
                "process" => {
                    transformations.push(Transformation::Process(process::parse_block(&mut s)?))
                }
                "patch" => transformations.push(Transformation::Patch(parse_patch(&mut s)?)),
                _ => inserts.push(parse_insert(&mut s)?),
            }
            continue;
        }
        let Some(kw) = OPTIONS.iter().copied().find(|kw| s.peek_keyword(kw)) else {
            return Err(s.error(word, AFTER_TEMPLATE));
        };
        if let Some(first) = seen.get(kw) {
            let first = s.error(first.clone(), "");
            return Err(s.error(
                word,
                format!(
                    "the '{}' option may be given only once (first given at {}:{})",
                    option_name(kw),
                    first.line(),
                    first.column()
                ),
            ));
        }
        seen.insert(kw, word.clone());
        s.eat_keyword(kw);
        match kw {
            "with" => {
                s.expect_keyword("properties", "expected 'properties' after 'with'")?;
                options.properties = parse_properties(&mut s)?;
            }
            "as" => {
                s.skip_ws();
                let clause = s.read_clause(ClauseKind::Template, &[])?;
                if clause.is_missing() {
                    return Err(s.error_here("expected <value(/pointer)> after 'as'"));
                }
                options.value_pointer = Some(template::parse_value_directive(text, &clause)?);
            }
            "throttle" => options.throttle = Some(parse_throttle(&mut s)?),
            "delay" => {
                s.expect_keyword("by", "expected 'by' after 'delay', e.g. delay by 5 seconds")?;
                let (n, span) = count(&mut s, "after 'delay by'")?;
                let unit = unit(&mut s, true)?;
                options.delay = Some(duration(&s, n, unit, span, "delay")?);
            }
            "separator" => {
                s.skip_ws();
                let clause = s.read_clause(ClauseKind::Plain, &[])?;
                if clause.is_missing() {
                    return Err(s.error_here(
                        "expected the separator text after 'separator', e.g. separator '_'",
                    ));
                }
                options.separator = Some(clause.text());
            }
            "preserve" => {
                s.expect_keyword("topics", "expected 'topics' after 'preserve'")?;
                options.preserve_topics = true;
            }
            _ => options.topic_type = Some(parse_type(&mut s)?),
        }
    }
    Ok(ViewSpec {
        source,
        template,
        transformations,
        inserts,
        options,
        text: text.to_owned(),
    })
}

fn option_name(kw: &str) -> &str {
    match kw {
        "with" => "with properties",
        "preserve" => "preserve topics",
        other => other,
    }
}

fn parse_patch(s: &mut Scanner<'_>) -> Result<JsonPatch, ViewSpecError> {
    s.skip_ws();
    let clause = s.read_clause(ClauseKind::Plain, &[])?;
    if clause.is_missing() {
        return Err(s.error_here(
            "expected a quoted JSON Patch after 'patch', e.g. patch '[{\"op\":\"remove\",\"path\":\"/x\"}]'",
        ));
    }
    let json = clause.text();
    let ops: json_patch::Patch = serde_json::from_str(&json).map_err(|e| {
        let at = json_error_span(&clause, &json, &e);
        // Our caret shows the position; drop serde's own " at line … column …".
        let e = e.to_string();
        let e = e.rfind(" at line ").map_or(e.as_str(), |i| &e[..i]);
        let hint = if s.src()[clause.span.clone()].starts_with(['\'', '"']) {
            ""
        } else {
            " (quote the whole patch, e.g. patch '[…]')"
        };
        s.error(at, format!("invalid JSON Patch (RFC 6902): {e}{hint}"))
    })?;
    Ok(JsonPatch { text: json, ops })
}

/// Maps a serde_json error position back to the source characters of the clause.
fn json_error_span(clause: &Clause, json: &str, err: &serde_json::Error) -> Span {
    let line_start: usize = json
        .split_inclusive('\n')
        .take(err.line().saturating_sub(1))
        .map(str::len)
        .sum();
    let byte = line_start + err.column().saturating_sub(1);
    let index = json
        .char_indices()
        .take_while(|(i, _)| *i < byte)
        .count()
        .min(clause.lits.len().saturating_sub(1));
    match clause.lits.get(index) {
        Some(l) => l.start..l.end,
        None => clause.span.clone(),
    }
}

fn parse_insert(s: &mut Scanner<'_>) -> Result<Insert, ViewSpecError> {
    s.skip_ws();
    let clause = s.read_clause(ClauseKind::Template, &[])?;
    if clause.is_missing() {
        return Err(s.error_here("expected the path of the topic to insert after 'insert'"));
    }
    let path = PathTemplate::parse(s.src(), &clause, Context::Insert)?;
    s.skip_ws();
    let key = if s.eat_keyword("key").is_some() {
        Some(pointer_clause(s, "after 'key'")?)
    } else {
        None
    };
    s.expect_keyword(
        "at",
        "expected 'at' and a JSON pointer for where to insert, e.g. at /extra",
    )?;
    let at = pointer_clause(s, "after 'at'")?;
    if at.is_root() {
        return Err(s.error(
            s.pos().saturating_sub(1)..s.pos(),
            "'at' needs a pointer to a field, e.g. /extra (an insert cannot replace the whole value)",
        ));
    }
    s.skip_ws();
    let default = if s.eat_keyword("default").is_some() {
        s.skip_ws();
        let clause = s.read_clause(ClauseKind::Plain, &[])?;
        if clause.is_missing() {
            return Err(s.error_here("expected a value after 'default'"));
        }
        let text = clause.text();
        Some(serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)))
    } else {
        None
    };
    Ok(Insert {
        path,
        key,
        at,
        default,
    })
}

fn pointer_clause(s: &mut Scanner<'_>, place: &str) -> Result<super::JsonPointer, ViewSpecError> {
    s.skip_ws();
    let clause = s.read_clause(ClauseKind::Plain, &[])?;
    if clause.is_missing() {
        return Err(s.error_here(format!("expected a JSON pointer {place}, e.g. /price")));
    }
    template::pointer(s.src(), &clause.lits, clause.span.clone())
}

fn parse_properties(s: &mut Scanner<'_>) -> Result<BTreeMap<String, String>, ViewSpecError> {
    let mut map = BTreeMap::new();
    let mut spans: BTreeMap<String, Span> = BTreeMap::new();
    loop {
        s.skip_ws();
        let key = s.read_clause(ClauseKind::Plain, &[':', ','])?;
        if key.is_missing() || key.lits.is_empty() {
            return Err(s.error_here("expected a property as KEY:VALUE, e.g. CONFLATION:off"));
        }
        s.expect_char(':', "expected ':' between the property name and its value")?;
        s.skip_ws();
        let value = s.read_clause(ClauseKind::Plain, &[','])?;
        if value.is_missing() {
            return Err(s.error_here("expected a property value after ':'"));
        }
        let name = key.text().to_ascii_uppercase();
        if let Some(first) = spans.get(&name) {
            let first = s.error(first.clone(), "");
            return Err(s.error(
                key.span.clone(),
                format!(
                    "property {name} is given twice (first at {}:{})",
                    first.line(),
                    first.column()
                ),
            ));
        }
        spans.insert(name.clone(), key.span.start..value.span.end);
        map.insert(name, value.text());
        s.skip_ws();
        if !s.eat_char(',') {
            break;
        }
    }
    if let Err(e) = TopicProperties::from_map(&map) {
        let key = match &e {
            crate::topic::PropertyError::UnknownKey(k) => k,
            crate::topic::PropertyError::BadValue { key, .. } => key,
        };
        let span = spans.get(key).cloned().unwrap_or(0..0);
        return Err(s.error(span, e.to_string()));
    }
    Ok(map)
}

fn parse_type(s: &mut Scanner<'_>) -> Result<TopicType, ViewSpecError> {
    s.skip_ws();
    let clause = s.read_clause(ClauseKind::Plain, &[])?;
    if clause.is_missing() {
        return Err(s.error_here(
            "expected a topic type after 'type': JSON, STRING, INT64, DOUBLE or BINARY",
        ));
    }
    let name = clause.text();
    if name.eq_ignore_ascii_case("TIME_SERIES") {
        return Err(s.error(
            clause.span,
            "TIME_SERIES reference topics are not supported by this server; use JSON, STRING, INT64, DOUBLE or BINARY",
        ));
    }
    name.parse::<TopicType>()
        .map_err(|e| s.error(clause.span, e.to_string()))
}

fn parse_throttle(s: &mut Scanner<'_>) -> Result<Throttle, ViewSpecError> {
    s.expect_keyword(
        "to",
        "expected 'to' after 'throttle', e.g. throttle to 2 updates every 5 seconds",
    )?;
    let (n, n_span) = count(s, "after 'throttle to'")?;
    let updates =
        u32::try_from(n).map_err(|_| s.error(n_span.clone(), "too many updates per period"))?;
    s.skip_ws();
    if s.eat_keyword("updates").is_none() && s.eat_keyword("update").is_none() {
        return Err(s.error_here("expected 'updates' (or 'update') after the number"));
    }
    s.expect_keyword(
        "every",
        "expected 'every' and a period, e.g. every 5 seconds",
    )?;
    s.skip_ws();
    let period = if s
        .peek()
        .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+')
    {
        let (p, p_span) = count(s, "after 'every'")?;
        let unit = unit(s, true)?;
        duration(s, p, unit, p_span, "throttle period")?
    } else {
        let unit = unit(s, false)?;
        Duration::from_secs(unit)
    };
    Ok(Throttle { updates, period })
}

/// A positive whole number (never zero).
fn count(s: &mut Scanner<'_>, place: &str) -> Result<(u64, Span), ViewSpecError> {
    s.skip_ws();
    let clause = s.read_clause(ClauseKind::Plain, &[])?;
    let text = clause.text();
    let span = if clause.is_missing() {
        s.next_word_span()
    } else {
        clause.span.clone()
    };
    if let Some(digits) = text.strip_prefix('-')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(s.error(
            span,
            format!("expected a positive whole number {place}, not a negative one"),
        ));
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(s.error(span, format!("expected a positive whole number {place}")));
    }
    let n: u64 = text
        .parse()
        .map_err(|_| s.error(span.clone(), format!("the number {place} is too large")))?;
    if n == 0 {
        return Err(s.error(
            span,
            format!("expected a positive whole number {place}, not zero"),
        ));
    }
    Ok((n, span))
}

/// A time unit, in seconds. With `plural_ok` the plural forms are accepted too.
fn unit(s: &mut Scanner<'_>, plural_ok: bool) -> Result<u64, ViewSpecError> {
    s.skip_ws();
    let units: [(&str, u64); 6] = [
        ("seconds", 1),
        ("second", 1),
        ("minutes", 60),
        ("minute", 60),
        ("hours", 3600),
        ("hour", 3600),
    ];
    for (name, secs) in units {
        if (plural_ok || !name.ends_with('s')) && s.eat_keyword(name).is_some() {
            return Ok(secs);
        }
    }
    Err(s.error_here(if plural_ok {
        "expected a time unit: seconds, minutes or hours"
    } else {
        "expected a period: a number and a unit (5 seconds), or second, minute or hour"
    }))
}

fn duration(
    s: &Scanner<'_>,
    n: u64,
    unit: u64,
    span: Span,
    what: &str,
) -> Result<Duration, ViewSpecError> {
    n.checked_mul(unit)
        .filter(|secs| *secs <= MAX_VIEW_DURATION.as_secs())
        .map(Duration::from_secs)
        .ok_or_else(|| {
            s.error(
                span,
                format!(
                    "the {what} is too long: at most {} hours",
                    MAX_VIEW_DURATION.as_secs() / 3600
                ),
            )
        })
}
