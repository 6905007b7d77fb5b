//! Topic views: the view specification language and its pure evaluator.
//!
//! A view maps *source topics*, chosen by a selector, to read-only *reference topics* whose paths
//! and values are derived from the source's path and value. This module parses the specification
//! ([`ViewSpec::parse`]) and evaluates it for one source topic ([`ViewSpec::evaluate`]); the
//! topic server's view engine owns the lifecycle (creation, removal, throttle, delay,
//! precedence), which is why throttle, delay, `preserve topics` and properties are only carried
//! in [`ViewOptions`] here.
//!
//! # The language
//!
//! ```text
//! map SELECTOR to PATH_TEMPLATE transformation* insert* option*
//!
//! PATH_TEMPLATE  constant text and directives; '/' separates segments
//!   <path(START[, COUNT])>       source path segments, 0-based
//!   <scalar(/ptr)>               a scalar of the current value
//!   <expand([/ptr][, /key])>     one reference topic per child of the object/array at /ptr
//! transformation
//!   process { OPS }  or  process { if 'COND' OPS (elseif 'COND' OPS)* [else OPS] }
//!       OPS := op (; op)*    op := set(/p, CONST) | set(/p, calc "EXPR") | remove(/p) | continue
//!       COND := /ptr OP (CONST | /ptr), combined with and/&, or/|, not, brackets;
//!               OP is = eq != ne > gt < lt >= ge <= le
//!   patch '[RFC 6902 operations]'
//! insert PATH_TEMPLATE [key /k] at /p [default VALUE]
//! option (each at most once, any order)
//!   with properties KEY:VALUE, ...   as <value(/ptr)>   separator 'TEXT'   preserve topics
//!   throttle to N update(s) every (N UNIT | second | minute | hour)
//!   delay by N UNIT                  type JSON|STRING|INT64|DOUBLE|BINARY
//! ```
//!
//! Clauses are separated by whitespace; quotes (`'` or `"`) group a clause containing spaces and
//! `\` escapes the next character. Examples:
//! `map ?a// to b/<path(1)>`,
//! `map ?accounts// to balances/<scalar(/account)> as <value(/balance)>`,
//! `map orders to individual/<expand(/items, /id)>`,
//! `map ?a// to b/<path(1)> process {if '/Price lt 50' set(/Tier, 1) elseif '/Price gt 50' set(/Tier, 2)}`,
//! `map redis/bitcoin to redis/views/bitcoin/<expand(/bpi)>`.
//!
//! # Choices where the reference is open
//!
//! The reference semantics this project follows (its §4, "Topic views") leave these points
//! open; this is what we do.
//!
//! ## Syntax
//!
//! 1. **Keywords are case-insensitive** (`MAP … TO …`, `Process`, `ELSEIF`, `AND`, `GT`, units);
//!    directive names (`path`, `scalar`, `expand`, `value`) are lower-case only.
//! 2. **Quoting is shell-like and works anywhere in a clause**: `'a b'c` reads as `a bc`, and the
//!    quote characters are removed. `\` escapes the next character everywhere, inside quotes
//!    too — so a regular-expression backslash in a selector is written `\\` (`?a\\.b//`) and a
//!    literal quote is `\'` or `\"`. A lone `\` at the end is an error.
//! 3. **Inside a path template**, quotes keep whitespace literal but do not protect structure:
//!    `<`, `(`, `)`, `,` and `>` of a directive are structural unless escaped with `\`. An
//!    unescaped `<` always starts a directive (write `\<` for a literal one); `,` separates
//!    directive arguments (`\,` is a literal comma). Whitespace inside a directive's brackets
//!    does not end the template, so `<expand(/items, /id)>` needs no quotes.
//! 4. **Templates are checked when parsed**: no leading or trailing `/`, no empty segment, no
//!    control characters, and a constant first segment may not be `Diffusion` or start with `$`
//!    (reserved). `<path(s, 0)>` is refused (the count must be at least 1).
//! 5. **The empty pointer** (`<scalar()>`, `<expand()>`, `<expand(, /key)>`, `<value()>`,
//!    `key ''`) means the whole current value; `set`, `remove` and `insert … at` need a pointer to
//!    a field.
//! 6. **Order is enforced as the grammar shows it**: `process`/`patch` before any `insert`,
//!    transformations and inserts before any option; anything else is an error saying so.
//! 7. **Constants** (in `set` and in conditions) are integers, decimals, quoted strings, `true`,
//!    `false` and `null` — the reference names integers, strings and booleans; decimals and
//!    `null` are accepted as well. An unquoted word is never a string (`set(/a, abc)` is an
//!    error).
//! 8. **Conditions must be quoted.** A string inside a condition uses the other quote character
//!    (`'/name = "Bob"'`) or an escaped one, and cannot contain its own delimiter. A pointer in a
//!    condition ends at whitespace or one of `= ! < > ( ) & |`. `else if` is refused with a hint
//!    to write `elseif`. A trailing `;` before `}`, `elseif` or `else` is allowed.
//! 9. **calc**: a pointer ends at whitespace or one of `+ * ( )`; `-` and `/` continue it (keys
//!    like `/rate-float`), so write spaces around `-` and `/` after a pointer (`/a / 2`). Unary
//!    minus is allowed; division truncates toward zero.
//! 10. **patch** takes one clause (quote it) holding a JSON array of RFC 6902 operations; it is
//!     parsed and checked (operation names, pointers) when the view is parsed, and a JSON error
//!     points at the offending character.
//! 11. **insert … default V**: V is used as JSON when it parses as JSON (`default 0`,
//!     `default '{"a":1}'`), otherwise as a string (`default 'n/a'`); the string `"1"` is written
//!     `default '"1"'`.
//! 12. **with properties**: names are matched case-insensitively (stored upper-case) and checked
//!     with [`TopicProperties::from_map`](crate::TopicProperties::from_map) at parse time, so an
//!     unknown property or a bad value is an error at that property; a repeated property is an
//!     error. A value ends at `,` or whitespace (quote it to include spaces).
//! 13. **throttle**: `update` and `updates` are both accepted whatever N is; N is 1 to 2³²−1;
//!     the period is `N seconds|minutes|hours` (singular allowed) or a bare
//!     `second|minute|hour`. **delay** needs `N UNIT` with N ≥ 1 (leave the option out for no
//!     delay). Zero, negative and overflowing numbers are errors, and so is a period or delay
//!     longer than [`MAX_VIEW_DURATION`] (24 hours).
//! 14. **type TIME_SERIES is refused** at parse time as not supported; the other names map to
//!     [`TopicType`].
//! 15. **separator** may be empty (`separator ''` removes `/` from produced text). It applies to
//!     text produced by `<scalar>` and `<expand>` (in the view path and in insert paths), never to
//!     `<path>`, whose segments are real path segments.
//!
//! ## Evaluation
//!
//! 16. **`<path(s[, n])>` past the end** of the source path gives no reference topic.
//! 17. **Scalar text**: strings as they are, numbers as serde_json prints them (`12.57`, `3`),
//!     `true`/`false`, and `null` for null.
//! 18. **expand order**: arrays by index; objects in key order as serde_json's map holds them,
//!     which is sorted (the workspace does not enable `preserve_order`), so the CoinDesk `bpi`
//!     expands as EUR, GBP, USD. Expanding a missing pointer or a scalar gives nothing; a child
//!     whose `/key` is missing or not a scalar gives nothing.
//! 19. **Invalid derived paths** (an empty segment from an empty string scalar, a reserved
//!     prefix, a control character) give no reference topic for that branch.
//! 20. **Duplicate paths**: the first result (in expansion order) that actually produces a topic
//!     wins; a branch that fails its transformations does not block a later one.
//! 21. **Order of work** per result: transformations as written, then inserts, then `as`, then
//!     the `type` conversion.
//! 22. **Comparisons**: `=`/`!=` compare JSON values, numbers by value (`1 = 1.0`); a missing
//!     pointer equals nothing, so `=` is false and `!=` true. `> < >= <=` hold only when both
//!     sides are numbers.
//! 23. **calc** operands must be JSON integers (64-bit); a missing or non-integer operand,
//!     division by zero or overflow fails the `set`, so no reference topic.
//! 24. **set** on an array element replaces it (index = length or `-` appends); a missing parent
//!     or a scalar parent fails. **remove** of a missing field or index does nothing.
//! 25. **insert**: in its path, `<path>` reads the source path and `<scalar>` reads the current
//!     value at that point (the expanded child after earlier transformations and inserts). A path
//!     that cannot be built counts as a missing topic. The value is written like JSON Patch `add`
//!     (an array index inserts before, `-` appends, an object key is replaced). When the `at`
//!     location's parent is missing or not an object/array the insert is skipped and the value is
//!     unchanged, as for a missing topic without `default`.
//! 26. **as <value(/p)>** reads the value after transformations and inserts.
//! 27. **type conversions**: `null` stays `null` (a topic with no value) for STRING, INT64 and
//!     DOUBLE; booleans become `"true"`/`"false"` for STRING and give no topic for INT64/DOUBLE;
//!     DOUBLE→INT64 rounds half away from zero (out of range: no topic); a string converts to
//!     INT64 when it is integer text, or decimal text which is then rounded; to DOUBLE when it is
//!     a finite number in Rust's float syntax (no thousands separators: `"56,189.3"` gives no
//!     topic). BINARY holds the bytes of a string (UTF-8), of a number's or boolean's text, or of
//!     an object's/array's compact JSON, carried base64-encoded as BINARY values are on the wire;
//!     `null` gives no BINARY topic.
//! 28. **[`evaluate_all`]** makes one pass: reference topics it produces are not fed back as
//!     sources, and it does not give topics in the input map precedence over derived paths (the
//!     server's engine decides precedence).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::selector::Selector;
use crate::topic::TopicType;

mod budget;
mod error;
mod evaluate;
mod file;
mod lexer;
#[cfg(test)]
mod oracle;
mod parser;
mod pointer;
mod process;
mod size;
mod template;
mod throttle;

pub use error::ViewSpecError;
pub use file::{ViewsFileError, parse_views_file};
pub use parser::MAX_VIEW_DURATION;
pub use pointer::{JsonPointer, PointerError};
pub use process::{
    Branch, Calc, CalcOp, CompareOp, Condition, MAX_EXPRESSION_NESTING, Operand, Operation,
    SetValue, Statement,
};
pub use template::{PathTemplate, TemplatePart};
pub use throttle::{Offer, ThrottleState};

/// A parsed view specification: what the server stores for a named view.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSpec {
    /// Which topics are sources.
    pub source: Selector,
    /// How a source's path and value become reference topic paths.
    pub template: PathTemplate,
    /// `process` and `patch`, applied in order to each result.
    pub transformations: Vec<Transformation>,
    /// `insert` clauses, applied after the transformations.
    pub inserts: Vec<Insert>,
    /// Everything after the transformations.
    pub options: ViewOptions,
    text: String,
}

/// A `process` or `patch` transformation.
#[derive(Debug, Clone, PartialEq)]
pub enum Transformation {
    /// `process { … }`.
    Process(Statement),
    /// `patch '[…]'`.
    Patch(JsonPatch),
}

/// An RFC 6902 JSON Patch, checked at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPatch {
    text: String,
    ops: json_patch::Patch,
}

impl JsonPatch {
    /// The patch's JSON text as written (after quote removal).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True for `[]`.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// `insert PATH [key /k] at /p [default V]`: copy (part of) another topic's value in.
#[derive(Debug, Clone, PartialEq)]
pub struct Insert {
    /// The other topic's path (`<path>` and `<scalar>` only).
    pub path: PathTemplate,
    /// The part of the other topic's value to take (all of it when absent).
    pub key: Option<JsonPointer>,
    /// Where to put it in the current value (`/-` appends to an array).
    pub at: JsonPointer,
    /// Used when the topic or key is missing; without it the value is left unchanged.
    pub default: Option<Value>,
}

/// The options of a view. Only `value_pointer`, `separator` and `topic_type` affect
/// [`ViewSpec::evaluate`]; the others are for the server's view engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewOptions {
    /// `with properties K:V, …` — upper-case names, validated against
    /// [`TopicProperties`](crate::TopicProperties).
    pub properties: BTreeMap<String, String>,
    /// `as <value(/ptr)>`.
    pub value_pointer: Option<JsonPointer>,
    /// `throttle to N updates every P`.
    pub throttle: Option<Throttle>,
    /// `delay by P`.
    pub delay: Option<Duration>,
    /// `separator 'X'`.
    pub separator: Option<String>,
    /// `preserve topics`.
    pub preserve_topics: bool,
    /// `type T`; `None` means JSON.
    pub topic_type: Option<TopicType>,
}

/// `throttle to N updates every P`: at most `updates` publications per `period` per reference
/// topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// N, at least 1.
    pub updates: u32,
    /// P, at least one second.
    pub period: Duration,
}

/// The value of one reference topic, with the topic type it is published as.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceValue {
    /// JSON unless the view says `type …`.
    pub topic_type: TopicType,
    /// The value in the form [`TopicValue::from_json`](crate::TopicValue::from_json) takes for
    /// that type (`null` = no value for STRING, INT64 and DOUBLE; base64 text for BINARY).
    pub value: Value,
}

impl ViewSpec {
    /// Parses a specification, explaining exactly where and why an invalid one is wrong.
    pub fn parse(text: &str) -> Result<Self, ViewSpecError> {
        parser::parse(text)
    }

    /// The specification as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The reference topics that the source topic at `source_path` with `source_value` produces:
    /// zero, one or many `(path, value)` pairs, in expansion order, paths unique. `lookup` reads
    /// other topics' current values for `insert` (each path at most once per call). Pure: the
    /// same inputs give the same output. Does not check that `source_path` matches
    /// [`ViewSpec::source`]. Refuses, rather than produces, more than `limits` allow.
    pub fn evaluate(
        &self,
        source_path: &str,
        source_value: &Value,
        lookup: &dyn Fn(&str) -> Option<Value>,
        limits: &EvalLimits,
    ) -> Result<Vec<(String, ReferenceValue)>, EvalError> {
        evaluate::evaluate(self, source_path, source_value, lookup, limits)
    }
}

impl fmt::Display for ViewSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for ViewSpec {
    type Err = ViewSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Evaluates `spec` over a whole set of topics, for offline tools (`topic-cli view eval`): every
/// topic the selector selects is a source, inserts read from the same map, and when two sources
/// derive the same path the first source **in path order** wins — the server's rule for the
/// sources of one view, so the offline answer is the server's. Values only (their types follow
/// from `spec.options.topic_type`). Fails with the source that went past `limits`.
pub fn evaluate_all(
    spec: &ViewSpec,
    topics: &BTreeMap<String, Value>,
    limits: &EvalLimits,
) -> Result<BTreeMap<String, Value>, (String, EvalError)> {
    evaluate::evaluate_all(spec, topics, limits)
}

/// Bounds on what one evaluation (one source topic through one view) may produce. A view is
/// written by a client, and one source value can otherwise fan out into any number of
/// reference topics (`expand`) or copy other topics into every branch (`insert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalLimits {
    /// Most reference topics one source may produce.
    pub max_results: usize,
    /// Most bytes one source may produce: the compact JSON and path of every result, checked
    /// as each is made, and what `insert` copies into a branch, checked before it is copied.
    pub max_output_bytes: usize,
}

impl Default for EvalLimits {
    /// 10,000 reference topics and 16 MiB per source: far above what a source normally
    /// derives, far below what hurts a server.
    fn default() -> Self {
        Self {
            max_results: 10_000,
            max_output_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A source whose evaluation went past [`EvalLimits`]. It derives nothing, as when a
/// transformation fails: the server logs it and releases that source's reference topics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// `expand` (or several) would produce too many reference topics.
    #[error("more than {limit} reference topics from one source")]
    TooManyResults {
        /// The limit passed.
        limit: usize,
    },
    /// The results, or what `insert` copies in, are too large.
    #[error("more than {limit} bytes of reference topics from one source")]
    TooLarge {
        /// The limit passed.
        limit: usize,
    },
}
