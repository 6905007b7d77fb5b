//! Path templates: constant text mixed with `<path(…)>`, `<scalar(…)>` and `<expand(…)>`
//! directives, parsed from a clause and evaluated against a source path and value.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

use super::error::ViewSpecError;
use super::lexer::{Clause, Lit, Span, span_of, text_of, trim};
use super::pointer::JsonPointer;
use crate::path::{MAX_PATH_BYTES, TopicPath};

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
    /// For a template of constant text only, whether that text is a path a client may create,
    /// decided once here rather than on every evaluation; `None` when the path is derived.
    constant_path_valid: Option<bool>,
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

    /// Whether `path`, one this template produced, is a path a client may create (not empty,
    /// not too long or deep, no empty segment or control character, not reserved).
    pub(crate) fn produces_valid(&self, path: &str) -> bool {
        self.constant_path_valid
            .unwrap_or_else(|| TopicPath::parse_user(path).is_ok())
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
        let constant_path_valid = match parts.as_slice() {
            [TemplatePart::Text(text)] => Some(TopicPath::parse_user(text).is_ok()),
            _ => None,
        };
        Ok(Self {
            text: src[clause.span.clone()].to_owned(),
            parts,
            constant_path_valid,
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
        let mut out = Vec::new();
        let walker = Walker {
            source_path,
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
        // `arbitrary_precision`: the number's text as it came, which is what it displays as.
        Value::Number(n) => Some(Cow::Borrowed(n.as_str())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Null => Some(Cow::Borrowed("null")),
        Value::Array(_) | Value::Object(_) => None,
    }
}

struct Walker<'s> {
    source_path: &'s str,
    separator: Option<&'s str>,
    /// Results wanted at most; one more is produced so the caller sees the limit was passed.
    max: usize,
}

/// `count` segments of `path` from the 0-based `start` (all the rest when `count` is `None`),
/// with the `/` between them: a slice of `path`, so nothing is joined. `None` when the path
/// does not have them all.
fn segment_range(path: &str, start: usize, count: Option<usize>) -> Option<&str> {
    let segments = path.split('/').count();
    let end = match count {
        Some(n) => start.saturating_add(n),
        None => segments,
    };
    if start >= segments || end > segments {
        return None;
    }
    if end <= start {
        return Some("");
    }
    // Where each segment starts.
    let mut starts = std::iter::once(0).chain(path.match_indices('/').map(|(at, _)| at + 1));
    let from = starts.nth(start)?;
    let to = if end == segments {
        path.len()
    } else {
        starts.nth(end - start - 1)? - 1
    };
    path.get(from..to)
}

impl Walker<'_> {
    fn push_fragment(&self, built: &mut String, fragment: &str) {
        match self.separator {
            Some(sep) => {
                let mut pieces = fragment.split('/');
                if let Some(first) = pieces.next() {
                    built.push_str(first);
                }
                for piece in pieces {
                    built.push_str(sep);
                    built.push_str(piece);
                }
            }
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
                    match segment_range(self.source_path, *start, *count) {
                        Some(text) => built.push_str(text),
                        None => return,
                    }
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
                            let mut index = String::new();
                            for (i, child) in items.iter().enumerate() {
                                index.clear();
                                // Writing to a String cannot fail.
                                let _ = write!(index, "{i}");
                                self.branch(rest, child, &built, &index, key.as_ref(), out);
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
        let mut next = String::with_capacity(built.len() + fragment.len() + 16);
        next.push_str(built);
        self.push_fragment(&mut next, &fragment);
        self.walk(rest, child, next, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_ranges_are_the_joined_segments() {
        for path in ["a", "a/b", "a/b/c/d", "x/yy/zzz", "é/ü/ß"] {
            let segments: Vec<&str> = path.split('/').collect();
            for start in 0..6usize {
                for count in [None, Some(0), Some(1), Some(2), Some(3), Some(usize::MAX)] {
                    let end = count.map_or(segments.len(), |n| start.saturating_add(n));
                    let want = (start < segments.len() && end <= segments.len())
                        .then(|| segments[start..end.max(start)].join("/"));
                    let got = segment_range(path, start, count).map(str::to_owned);
                    assert_eq!(got, want, "{path} {start} {count:?}");
                }
            }
        }
    }
}
