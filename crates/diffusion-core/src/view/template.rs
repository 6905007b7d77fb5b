//! Path templates: constant text mixed with `<path(…)>`, `<scalar(…)>` and `<expand(…)>`
//! directives, parsed from a clause and evaluated against a source path and value.

use std::borrow::Cow;

use serde_json::Value;

use super::error::ViewSpecError;
use super::lexer::{Clause, Lit, Span, span_of, text_of, trim};
use super::pointer::JsonPointer;
use crate::path::MAX_PATH_BYTES;

/// One piece of a [`PathTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Constant text; `/` in it separates path segments.
    Text(String),
    /// `<path(start[, count])>`: `count` source segments from the 0-based `start` (all the rest
    /// when `count` is absent).
    Path {
        /// 0-based index of the first source segment.
        start: usize,
        /// How many segments; `None` = to the end.
        count: Option<usize>,
    },
    /// `<scalar(/ptr)>`: the scalar at the pointer in the current value.
    Scalar(JsonPointer),
    /// `<expand([/ptr][, /key])>`: one branch per direct child of the object or array at
    /// `pointer`; the fragment is the child's key or index, or the scalar at `key` inside it.
    Expand {
        /// Where the object or array to expand is (the root when empty).
        pointer: JsonPointer,
        /// Optional pointer, inside each child, to the scalar that names it.
        key: Option<JsonPointer>,
    },
}

/// A parsed path template such as `b/<path(1)>` or `individual/<expand(/items, /id)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    parts: Vec<TemplatePart>,
}

/// Which directives a template may use where it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// The view's target path: `path`, `scalar`, `expand`.
    Target,
    /// An `insert` source path: `path`, `scalar`.
    Insert,
}

/// A directive as parsed, before it is checked against its context.
enum Directive {
    Part(TemplatePart),
    Value(JsonPointer),
}

impl PathTemplate {
    /// The template as written in the specification (quotes and escapes included).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The template's pieces in order.
    pub fn parts(&self) -> &[TemplatePart] {
        &self.parts
    }

    /// True when the path depends on the source *value* (`scalar` or `expand`), so a value
    /// change can move the reference topic — what `preserve topics` is about.
    pub fn is_value_derived(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, TemplatePart::Scalar(_) | TemplatePart::Expand { .. }))
    }

    /// Parses a template clause, allowing the directives of `context`.
    pub(crate) fn parse(
        src: &str,
        clause: &Clause,
        context: Context,
    ) -> Result<Self, ViewSpecError> {
        let err = |span: Span, msg: String| ViewSpecError::new(src, span, msg);
        if clause.lits.is_empty() {
            return Err(err(
                clause.span.clone(),
                "expected a path template".to_owned(),
            ));
        }
        let lits = &clause.lits;
        let mut parts: Vec<TemplatePart> = Vec::new();
        let mut segment_has_content = false;
        let mut in_first_segment = true;
        let mut first_segment_constant = true;
        let mut first_segment = String::new();
        let mut i = 0;
        while i < lits.len() {
            let lit = lits[i];
            if lit.is('<') {
                let (directive, next) = parse_directive(src, lits, i, clause.span.end)?;
                let span = lit.start..lits[next - 1].end;
                let part = match (directive, context) {
                    (Directive::Value(_), _) => {
                        return Err(err(
                            span,
                            "<value(…)> only belongs after 'as'; expected <path(…)>, <scalar(…)> or <expand(…)>".to_owned(),
                        ));
                    }
                    (Directive::Part(TemplatePart::Expand { .. }), Context::Insert) => {
                        return Err(err(
                            span,
                            "<expand(…)> cannot be used in an insert path; expected <path(…)> or <scalar(…)>".to_owned(),
                        ));
                    }
                    (Directive::Part(part), _) => part,
                };
                parts.push(part);
                segment_has_content = true;
                first_segment_constant &= !in_first_segment;
                i = next;
                continue;
            }
            if lit.ch == '/' {
                if !segment_has_content {
                    let msg = if i == 0 {
                        "a path template cannot start with '/'"
                    } else {
                        "empty segment ('//') in the path template"
                    };
                    return Err(err(lit.start..lit.end, msg.to_owned()));
                }
                if in_first_segment && first_segment_constant {
                    check_reserved(src, clause, context, &first_segment)?;
                }
                in_first_segment = false;
                segment_has_content = false;
            } else if lit.ch.is_control() {
                return Err(err(
                    lit.start..lit.end,
                    "a path template cannot contain control characters".to_owned(),
                ));
            } else {
                segment_has_content = true;
                if in_first_segment {
                    first_segment.push(lit.ch);
                }
            }
            match parts.last_mut() {
                Some(TemplatePart::Text(text)) => text.push(lit.ch),
                _ => parts.push(TemplatePart::Text(lit.ch.to_string())),
            }
            i += 1;
        }
        if !segment_has_content {
            let last = lits[lits.len() - 1];
            return Err(err(
                last.start..last.end,
                "a path template cannot end with '/'".to_owned(),
            ));
        }
        if in_first_segment && first_segment_constant {
            check_reserved(src, clause, context, &first_segment)?;
        }
        Ok(Self {
            text: src[clause.span.clone()].to_owned(),
            parts,
        })
    }

    /// Evaluates the template: one `(path, current value)` pair per result, in order. The current
    /// value is the innermost expanded child (or `value` itself without `expand`). Results whose
    /// directives cannot be satisfied are left out; the paths are not validated here.
    /// Stops once it has more than `max` results (the caller refuses that), and drops a branch
    /// as soon as its path grows past the longest valid topic path.
    pub(crate) fn evaluate<'v>(
        &self,
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
        walker.walk(&self.parts, value, String::new(), &mut out);
        out
    }
}

fn check_reserved(
    src: &str,
    clause: &Clause,
    context: Context,
    first_segment: &str,
) -> Result<(), ViewSpecError> {
    if context == Context::Target
        && (first_segment == "Diffusion" || first_segment.starts_with('$'))
    {
        return Err(ViewSpecError::new(
            src,
            clause.span.clone(),
            "reference topics cannot be created under 'Diffusion' or '$' (reserved for the server)",
        ));
    }
    Ok(())
}

/// Parses the directive whose `<` is at `lits[open]`; returns it and the index just past `>`.
fn parse_directive(
    src: &str,
    lits: &[Lit],
    open: usize,
    clause_end: usize,
) -> Result<(Directive, usize), ViewSpecError> {
    let err = |span: Span, msg: String| ViewSpecError::new(src, span, msg);
    let lt = lits[open];
    let mut i = open + 1;
    let name_start = i;
    while i < lits.len() && lits[i].ch.is_ascii_alphabetic() && !lits[i].escaped {
        i += 1;
    }
    let name = text_of(&lits[name_start..i]);
    let name_span = lt.start..lits[i - 1].end;
    if name.is_empty() {
        return Err(err(
            lt.start..lt.end,
            "expected a directive such as <path(1)> after '<' (write \\< for a literal '<')"
                .to_owned(),
        ));
    }
    if !matches!(name.as_str(), "path" | "scalar" | "expand" | "value") {
        return Err(err(
            name_span,
            format!(
                "unknown directive <{name}(…)>: expected <path(…)>, <scalar(…)> or <expand(…)>"
            ),
        ));
    }
    if !lits.get(i).is_some_and(|l| l.is('(')) {
        return Err(err(name_span, format!("expected '(' after '<{name}'")));
    }
    let paren = lits[i];
    i += 1;
    let mut args: Vec<&[Lit]> = Vec::new();
    let mut arg_start = i;
    loop {
        let Some(lit) = lits.get(i) else {
            return Err(err(
                lt.start..clause_end,
                format!("unclosed directive <{name}(…: expected ')' (write \\) for a literal ')')"),
            ));
        };
        if lit.is(')') || lit.is(',') {
            args.push(trim(&lits[arg_start..i]));
            arg_start = i + 1;
            if lit.is(')') {
                break;
            }
        }
        i += 1;
    }
    let close = lits[i];
    i += 1;
    if !lits.get(i).is_some_and(|l| l.is('>')) {
        let at = lits.get(i).map_or(close.end..close.end, |l| l.start..l.end);
        return Err(err(at, format!("expected '>' to close <{name}(…)")));
    }
    i += 1;
    let whole = lt.start..lits[i - 1].end;
    let inside = paren.end..close.start;
    let directive = match name.as_str() {
        "path" => Directive::Part(path_directive(src, &args, inside)?),
        "scalar" => {
            let [ptr] = args.as_slice() else {
                return Err(err(
                    whole,
                    "<scalar(…)> takes one JSON pointer, e.g. <scalar(/account)>".to_owned(),
                ));
            };
            Directive::Part(TemplatePart::Scalar(pointer(src, ptr, inside)?))
        }
        "expand" => {
            let (ptr, key) = match args.as_slice() {
                [ptr] => (pointer(src, ptr, inside.clone())?, None),
                [ptr, key] if !key.is_empty() => (
                    pointer(src, ptr, inside.clone())?,
                    Some(pointer(src, key, inside)?),
                ),
                _ => {
                    return Err(err(
                        whole,
                        "<expand(…)> takes an optional JSON pointer and an optional key pointer, e.g. <expand(/items, /id)>".to_owned(),
                    ));
                }
            };
            Directive::Part(TemplatePart::Expand { pointer: ptr, key })
        }
        _ => {
            let [ptr] = args.as_slice() else {
                return Err(err(
                    whole,
                    "<value(…)> takes one JSON pointer, e.g. <value(/balance)>".to_owned(),
                ));
            };
            Directive::Value(pointer(src, ptr, inside)?)
        }
    };
    Ok((directive, i))
}

fn path_directive(src: &str, args: &[&[Lit]], inside: Span) -> Result<TemplatePart, ViewSpecError> {
    let number = |lits: &[Lit]| -> Result<usize, ViewSpecError> {
        let text = text_of(lits);
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ViewSpecError::new(
                src,
                span_of(lits, inside.clone()),
                "expected a whole number: <path(start)> or <path(start, count)>, segments counted from 0",
            ));
        }
        text.parse().map_err(|_| {
            ViewSpecError::new(src, span_of(lits, inside.clone()), "number is too large")
        })
    };
    match args {
        [start] => Ok(TemplatePart::Path {
            start: number(start)?,
            count: None,
        }),
        [start, count] => {
            let start = number(start)?;
            let n = number(count)?;
            if n == 0 {
                return Err(ViewSpecError::new(
                    src,
                    span_of(count, inside),
                    "the segment count of <path(start, count)> must be at least 1",
                ));
            }
            Ok(TemplatePart::Path {
                start,
                count: Some(n),
            })
        }
        _ => Err(ViewSpecError::new(
            src,
            inside,
            "<path(…)> takes a start and an optional count: <path(1)> or <path(1, 2)>",
        )),
    }
}

/// Parses a pointer argument (empty = root).
pub(crate) fn pointer(
    src: &str,
    lits: &[Lit],
    fallback: Span,
) -> Result<JsonPointer, ViewSpecError> {
    let text = text_of(lits);
    JsonPointer::parse(&text).map_err(|e| {
        ViewSpecError::new(
            src,
            span_of(lits, fallback),
            format!("invalid JSON pointer '{text}': {e}"),
        )
    })
}

/// Parses the clause after `as`: exactly one `<value(/ptr)>`.
pub(crate) fn parse_value_directive(
    src: &str,
    clause: &Clause,
) -> Result<JsonPointer, ViewSpecError> {
    let expected = || {
        ViewSpecError::new(
            src,
            clause.span.clone(),
            "expected <value(/pointer)> after 'as'",
        )
    };
    let lits = &clause.lits;
    if !lits.first().is_some_and(|l| l.is('<')) {
        return Err(expected());
    }
    let (directive, next) = parse_directive(src, lits, 0, clause.span.end)?;
    match directive {
        Directive::Value(ptr) if next == lits.len() => Ok(ptr),
        _ => Err(expected()),
    }
}

/// The text a scalar contributes to a path: strings as they are, numbers and booleans as JSON
/// text, `null` as `null`; objects and arrays have none.
pub(crate) fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
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
