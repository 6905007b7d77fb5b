//! Topic selectors: which topics a subscription, fetch or removal applies to.
//!
//! The language (see docs/protocol.md §9): `>path` (or a bare path), `?split/path/pattern`,
//! `*full.path.pattern`, `#sel1////sel2` sets, with the descendant qualifiers `/` (descendants
//! only) and `//` (topic and descendants) after `?` and `*` patterns. Patterns use the Rust `regex`
//! dialect (linear time, no look-around, no back-references) and are always anchored: a split-path
//! part must match its whole segment, a full-path pattern the whole path.
//!
//! Selectors come from clients, so everything about them is bounded: the text
//! ([`MAX_SELECTOR_BYTES`]), the members of a set ([`MAX_SET_MEMBERS`]), the compiled size of
//! each pattern ([`MAX_REGEX_BYTES`]); parsing never recurses, and matching is one linear pass
//! over the path (the descendant qualifiers are compiled into the pattern instead of testing
//! every ancestor). [`Selector::memory_bytes`] estimates what a selector keeps in memory, so a
//! server can charge it against a per-session budget.

use std::fmt;
use std::sync::Arc;

use regex_automata::meta::{Config, Regex};

use crate::path::{PathError, TopicPath};

/// Longest selector text accepted, in bytes.
pub const MAX_SELECTOR_BYTES: usize = 64 * 1024;
/// Most members in one selector set (nested sets count their members).
pub const MAX_SET_MEMBERS: usize = 1024;
/// Largest compiled size of one pattern (its automaton), in bytes. Unicode classes make
/// automata large quickly (`\w{10}` is over 1 MiB), so a client cannot pin megabytes of memory
/// with a few characters.
pub const MAX_REGEX_BYTES: usize = 1024 * 1024;
/// The lazy DFA cache each pattern may grow while matching; charged to every pattern by
/// [`Selector::memory_bytes`].
const REGEX_CACHE_BYTES: usize = 64 * 1024;

/// Why a selector string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Nothing to parse.
    #[error("selector is empty")]
    Empty,
    /// Longer than [`MAX_SELECTOR_BYTES`].
    #[error("selector of {0} bytes is longer than the limit of {MAX_SELECTOR_BYTES} bytes")]
    TooLong(usize),
    /// A path selector whose path is invalid.
    #[error("invalid path in selector '{selector}': {source}")]
    Path {
        /// The selector text.
        selector: String,
        /// What is wrong with the path.
        source: PathError,
    },
    /// A `?` selector with an empty part (`?a//b` in the middle) or no parts.
    #[error("split-path pattern '{0}' has an empty part")]
    EmptyPart(String),
    /// A regular expression that does not compile, or compiles too large.
    #[error("invalid regular expression in selector '{selector}': {reason}")]
    Regex {
        /// The selector text.
        selector: String,
        /// The regex engine's explanation.
        reason: String,
    },
    /// A set (`#`) with an empty member.
    #[error("selector set '{0}' has an empty member")]
    EmptySetMember(String),
    /// A set with more than [`MAX_SET_MEMBERS`] members.
    #[error("selector set has more than {MAX_SET_MEMBERS} members")]
    TooManyMembers,
    /// A run of slashes in a set that cannot be read one way only (see docs/protocol.md §9).
    #[error("selector set '{set}': {reason}")]
    AmbiguousSet {
        /// The set's text.
        set: String,
        /// Which run of slashes, and how to write it instead.
        reason: String,
    },
    /// Prefix characters reserved by the selector language that we do not implement.
    #[error("selector '{0}' starts with a reserved character ('$', '%', '&' or '<')")]
    Reserved(String),
}

/// Which topics around a pattern match are selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    /// Only the topics whose path matches.
    Matching,
    /// Only strict descendants of matching paths (trailing `/`).
    Descendants,
    /// Matching topics and all their descendants (trailing `//`).
    MatchingAndDescendants,
}

/// One part of a split-path pattern: literal text is compared, not compiled.
#[derive(Debug)]
enum Part {
    Literal(String),
    Pattern(Regex),
}

impl Part {
    fn matches(&self, segment: &str) -> bool {
        match self {
            Self::Literal(text) => text == segment,
            Self::Pattern(regex) => regex.is_match(segment),
        }
    }
}

#[derive(Debug)]
enum Kind {
    Path(TopicPath),
    Split {
        parts: Vec<Part>,
        qualifier: Qualifier,
    },
    /// The qualifier is compiled into the regex, so matching is one pass over the path.
    Full(Regex),
    /// A pattern with an end anchor (`$`, `\z`) and a descendant qualifier: the anchor must
    /// hold at the end of the *ancestor*, so each ancestor is matched on its own (at most
    /// 128 of them, paths being bounded).
    FullByAncestor {
        /// The pattern, anchored on its own.
        exact: Regex,
        /// `Descendants` or `MatchingAndDescendants`.
        qualifier: Qualifier,
    },
    Set(Vec<Selector>),
}

/// A parsed topic selector. Compare selectors by [`Selector::as_str`] (their source text).
/// Cloning is cheap and clones share compiled patterns (and their match caches).
#[derive(Debug, Clone)]
pub struct Selector {
    text: Arc<str>,
    prefix: Arc<str>,
    kind: Arc<Kind>,
    memory: usize,
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for Selector {}

impl std::hash::Hash for Selector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

const REGEX_META: &[char] = &[
    '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
];

/// Characters that start a selector of a given kind (and so may follow a separator in a set).
const KIND_PREFIXES: &[char] = &['>', '?', '*', '#'];

fn is_literal(segment: &str) -> bool {
    !segment.contains(REGEX_META)
}

fn split_qualifier(rest: &str) -> (&str, Qualifier) {
    if let Some(body) = rest.strip_suffix("//") {
        (body, Qualifier::MatchingAndDescendants)
    } else if let Some(body) = rest.strip_suffix('/') {
        (body, Qualifier::Descendants)
    } else {
        (rest, Qualifier::Matching)
    }
}

/// Whether a pattern holds an end anchor (`$`, `\z`, or a multi-line `$`): such a pattern means
/// something else once text follows it in a larger regex.
fn has_end_anchor(selector: &str, pattern: &str) -> Result<bool, SelectorError> {
    use regex_syntax::hir::Look;
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .map_err(|e| SelectorError::Regex {
            selector: selector.to_owned(),
            reason: last_line(&e.to_string()),
        })?;
    let looks = hir.properties().look_set();
    Ok(looks.contains(Look::End) || looks.contains(Look::EndLF) || looks.contains(Look::EndCRLF))
}

/// Compiles `pattern` anchored, wrapped as `^(?:pattern)SUFFIX$`. The pattern is checked on
/// its own first, so an unbalanced `)` cannot escape the anchoring group.
fn compile(selector: &str, pattern: &str, suffix: &str) -> Result<Regex, SelectorError> {
    let error = |reason: String| SelectorError::Regex {
        selector: selector.to_owned(),
        reason,
    };
    regex_syntax::ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| error(last_line(&e.to_string())))?;
    let config = Config::new()
        .nfa_size_limit(Some(MAX_REGEX_BYTES))
        .onepass_size_limit(Some(REGEX_CACHE_BYTES))
        .dfa_size_limit(Some(REGEX_CACHE_BYTES))
        .hybrid_cache_capacity(REGEX_CACHE_BYTES);
    Regex::builder()
        .configure(config)
        .build(&format!("^(?:{pattern}){suffix}$"))
        .map_err(|e| {
            if e.size_limit().is_some() {
                error(format!(
                    "the compiled pattern is larger than {} KiB (Unicode classes such as \\w are large: try [a-zA-Z0-9_])",
                    MAX_REGEX_BYTES / 1024
                ))
            } else {
                error(last_line(&e.to_string()))
            }
        })
}

/// The regex parser's explanation spans several lines; its last line says what is wrong.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
}

fn regex_memory(regex: &Regex) -> usize {
    regex.memory_usage() + REGEX_CACHE_BYTES
}

fn common_prefix(a: &str, b: &str) -> String {
    a.split('/')
        .zip(b.split('/'))
        .take_while(|(x, y)| x == y && !x.is_empty())
        .map(|(x, _)| x)
        .collect::<Vec<_>>()
        .join("/")
}

/// The literal path prefix of a full-path pattern: its leading segments that contain no regex
/// metacharacter, each followed by a `/` that no quantifier applies to (`a/?b` matches `ab`, so
/// its prefix is empty, not `a`). The last segment counts only when the whole pattern is
/// literal; a top-level alternation can match under any prefix, so a pattern with `|` has none.
fn full_pattern_prefix(body: &str) -> String {
    if body.contains('|') {
        return String::new();
    }
    let segments: Vec<&str> = body.split('/').collect();
    let mut keep = 0;
    for (i, segment) in segments.iter().enumerate() {
        if !is_literal(segment) {
            break;
        }
        match segments.get(i + 1) {
            // The `/` after this segment is literal unless a quantifier follows it.
            Some(next) if !next.starts_with(['?', '*', '+', '{']) => keep = i + 1,
            Some(_) => break,
            None => keep = segments.len(),
        }
    }
    segments[..keep].join("/")
}

/// Splits the body of a set (`#` removed) into members, by the rule of docs/protocol.md §9: a
/// run of four slashes separates members; in a run of five or six, the first one or two are
/// the qualifier of the member before (`#?a//////>b` is `?a//` and `>b`), which is only
/// unambiguous when the next member starts with `>`, `?`, `*` or `#`; longer runs are refused.
fn split_set<'a>(set: &str, body: &'a str) -> Result<Vec<&'a str>, SelectorError> {
    let ambiguous = |reason: String| SelectorError::AmbiguousSet {
        set: set.to_owned(),
        reason,
    };
    let bytes = body.as_bytes();
    let mut members = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'/' {
            i += 1;
            continue;
        }
        let run_start = i;
        while i < bytes.len() && bytes[i] == b'/' {
            i += 1;
        }
        let run = i - run_start;
        if run < 4 {
            continue;
        }
        if run > 6 {
            return Err(ambiguous(format!(
                "a run of {run} slashes at byte {run_start} is neither a separator (////) nor a qualifier (/ or //) followed by one"
            )));
        }
        if run > 4 && !body[i..].starts_with(KIND_PREFIXES) {
            return Err(ambiguous(format!(
                "the {run} slashes at byte {run_start} could end the member before them or start the one after: write the next member with its '>', '?' or '*'"
            )));
        }
        members.push(&body[start..run_start + run - 4]);
        start = i;
        if members.len() >= MAX_SET_MEMBERS {
            return Err(SelectorError::TooManyMembers);
        }
    }
    members.push(&body[start..]);
    Ok(members)
}

impl Selector {
    /// Parses a selector, reporting exactly what is wrong with an invalid one.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        if text.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError::TooLong(text.len()));
        }
        match text.strip_prefix('#') {
            Some(body) => Self::parse_set(text, body),
            None => Self::parse_single(text),
        }
    }

    /// Parses a selector that is not a set.
    fn parse_single(text: &str) -> Result<Self, SelectorError> {
        let Some(first) = text.chars().next() else {
            return Err(SelectorError::Empty);
        };
        let rest = &text[first.len_utf8()..];
        match first {
            '>' => Self::parse_path(text, rest),
            '?' => Self::parse_split(text, rest),
            '*' => Self::parse_full(text, rest),
            '$' | '%' | '&' | '<' => Err(SelectorError::Reserved(text.to_owned())),
            _ => Self::parse_path(text, text),
        }
    }

    fn build(text: &str, prefix: String, kind: Kind, memory: usize) -> Self {
        Self {
            memory: memory + text.len() + prefix.len() + std::mem::size_of::<Kind>(),
            text: Arc::from(text),
            prefix: Arc::from(prefix),
            kind: Arc::new(kind),
        }
    }

    /// A path selector for exactly `path`.
    pub fn for_path(path: &TopicPath) -> Self {
        let text = format!(">{path}");
        let memory = path.as_str().len();
        Self::build(
            &text,
            path.as_str().to_owned(),
            Kind::Path(path.clone()),
            memory,
        )
    }

    /// A path selector; its text is normalised to `>path`, so `a/b`, `>a/b` and `>/a/b/` are
    /// the same selector (to unsubscribe, say).
    fn parse_path(text: &str, path: &str) -> Result<Self, SelectorError> {
        let path = TopicPath::parse_lenient(path).map_err(|source| SelectorError::Path {
            selector: text.to_owned(),
            source,
        })?;
        Ok(Self::for_path(&path))
    }

    fn parse_split(text: &str, rest: &str) -> Result<Self, SelectorError> {
        let (body, qualifier) = split_qualifier(rest);
        if body.is_empty() {
            return Err(SelectorError::EmptyPart(text.to_owned()));
        }
        let raw: Vec<&str> = body.split('/').collect();
        if raw.iter().any(|p| p.is_empty()) {
            return Err(SelectorError::EmptyPart(text.to_owned()));
        }
        let mut memory = 0;
        let mut parts = Vec::with_capacity(raw.len());
        for part in &raw {
            if is_literal(part) {
                memory += part.len();
                parts.push(Part::Literal((*part).to_owned()));
            } else {
                let regex = compile(text, part, "")?;
                memory += regex_memory(&regex);
                parts.push(Part::Pattern(regex));
            }
        }
        let prefix = raw
            .iter()
            .take_while(|p| is_literal(p))
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        Ok(Self::build(
            text,
            prefix,
            Kind::Split { parts, qualifier },
            memory,
        ))
    }

    fn parse_full(text: &str, rest: &str) -> Result<Self, SelectorError> {
        let (body, qualifier) = split_qualifier(rest);
        if body.is_empty() {
            return Err(SelectorError::Regex {
                selector: text.to_owned(),
                reason: "empty pattern".to_owned(),
            });
        }
        // An ancestor matching the pattern, followed by `/` and the rest of the path (paths
        // have no empty segment, so the rest is never empty) — unless an end anchor in the
        // pattern must hold at the ancestor's end, which the combined regex cannot express.
        let by_ancestor = qualifier != Qualifier::Matching && has_end_anchor(text, body)?;
        let suffix = match qualifier {
            _ if by_ancestor => "",
            Qualifier::Matching => "",
            Qualifier::Descendants => "/(?s:.+)",
            Qualifier::MatchingAndDescendants => "(?:/(?s:.+))?",
        };
        let regex = compile(text, body, suffix)?;
        let prefix = full_pattern_prefix(body);
        let memory = regex_memory(&regex);
        let kind = if by_ancestor {
            Kind::FullByAncestor {
                exact: regex,
                qualifier,
            }
        } else {
            Kind::Full(regex)
        };
        Ok(Self::build(text, prefix, kind, memory))
    }

    fn parse_set(text: &str, body: &str) -> Result<Self, SelectorError> {
        let mut members = Vec::new();
        for member in split_set(text, body)? {
            // A nested set's members are separated by the same `////`: it only adds `#`s.
            let member = member.trim_start_matches('#');
            if member.is_empty() {
                return Err(SelectorError::EmptySetMember(text.to_owned()));
            }
            members.push(Self::parse_single(member)?);
        }
        let prefix = members
            .iter()
            .map(|m| m.prefix.to_string())
            .reduce(|a, b| common_prefix(&a, &b))
            .unwrap_or_default();
        let memory = members.iter().map(|m| m.memory).sum();
        Ok(Self::build(text, prefix, Kind::Set(members), memory))
    }

    /// The selector's source text, which identifies it (unsubscribe uses it).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The longest run of leading literal segments: every selected topic is this path or under
    /// it. Empty when the selector can match anywhere. Used for indexing and permission checks.
    pub fn path_prefix(&self) -> &str {
        &self.prefix
    }

    /// The single path this selector names, when it is a path selector.
    pub fn exact_path(&self) -> Option<&TopicPath> {
        match &*self.kind {
            Kind::Path(p) => Some(p),
            _ => None,
        }
    }

    /// An estimate of the memory this selector keeps: its text and every compiled pattern with
    /// the match cache it may grow. What a server charges against a session's selector budget.
    pub fn memory_bytes(&self) -> usize {
        self.memory
    }

    /// Does this selector select the topic at `path`? Linear in the length of `path`.
    pub fn matches(&self, path: &str) -> bool {
        match &*self.kind {
            Kind::Path(p) => p.as_str() == path,
            Kind::Split { parts, qualifier } => {
                let mut segments = path.split('/');
                let leading_match = parts
                    .iter()
                    .all(|part| segments.next().is_some_and(|seg| part.matches(seg)));
                let more = segments.next().is_some();
                leading_match
                    && match qualifier {
                        Qualifier::Matching => !more,
                        Qualifier::Descendants => more,
                        Qualifier::MatchingAndDescendants => true,
                    }
            }
            Kind::Full(regex) => regex.is_match(path),
            Kind::FullByAncestor { exact, qualifier } => {
                let ancestor = path
                    .match_indices('/')
                    .any(|(i, _)| exact.is_match(&path[..i]));
                ancestor
                    || (*qualifier == Qualifier::MatchingAndDescendants && exact.is_match(path))
            }
            Kind::Set(members) => members.iter().any(|m| m.matches(path)),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    /// The reference truth table for `alpha/beta` and `alpha/beta/gamma`.
    #[test]
    fn reference_truth_table() {
        let table: &[(&str, bool, bool)] = &[
            (">alpha/beta", true, false),
            ("?alpha/beta", true, false),
            ("?beta", false, false),
            ("?.*", false, false),
            ("?.*/.*", true, false),
            ("?alpha/beta/", false, true),
            ("?alpha/beta//", true, true),
            ("?alpha/.*//", true, true),
            ("*alpha/beta", true, false),
            ("*beta", false, false),
            ("*.*beta", true, false),
            ("*.*", true, true),
            ("*alpha/beta/", false, true),
            ("*alpha/beta//", true, true),
        ];
        for (s, ab, abg) in table {
            let selector = sel(s);
            assert_eq!(selector.matches("alpha/beta"), *ab, "{s} on alpha/beta");
            assert_eq!(
                selector.matches("alpha/beta/gamma"),
                *abg,
                "{s} on alpha/beta/gamma"
            );
        }
    }

    /// The qualifiers compiled into one pattern agree with the definition (test every
    /// ancestor), over patterns that can match across segments.
    #[test]
    fn compiled_qualifiers_agree_with_testing_each_ancestor() {
        let patterns = [
            "a", "a/b", "a.*", ".*b", "a/.*", "[ab]+", "a|b/c", "(a/)+b", "a$", "(?m)a$", r"a\z",
            r"a\b", "^a", "a/?b",
        ];
        let paths = [
            "a", "b", "a/b", "a/b/c", "ab/c", "b/c", "a/a/b", "x/a", "a/b/b/d",
        ];
        for pattern in patterns {
            let exact = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
            let ancestor = |path: &str| {
                path.match_indices('/')
                    .map(|(i, _)| &path[..i])
                    .any(|a| exact.is_match(a))
            };
            for path in paths {
                let cases = [
                    ("", exact.is_match(path)),
                    ("/", ancestor(path)),
                    ("//", exact.is_match(path) || ancestor(path)),
                ];
                for (qualifier, want) in cases {
                    let text = format!("*{pattern}{qualifier}");
                    assert_eq!(sel(&text).matches(path), want, "{text} on {path}");
                }
            }
        }
    }

    #[test]
    fn bare_and_slashed_paths_normalise() {
        assert_eq!(sel("a/b"), sel(">/a/b/"));
        assert_eq!(sel("/a/b").as_str(), ">a/b");
        assert!(sel("alpha/beta").matches("alpha/beta"));
        assert!(sel(">/alpha/beta/").matches("alpha/beta"));
        assert_eq!(sel("/a/b/").exact_path().unwrap().as_str(), "a/b");
    }

    #[test]
    fn alternation_is_anchored_as_a_group() {
        let s = sel("*a|b");
        assert!(s.matches("a"));
        assert!(s.matches("b"));
        assert!(!s.matches("ab"));
        assert!(!s.matches("xb"));
        assert!(!s.matches("ax"));
        let s = sel("?x|y/z");
        assert!(s.matches("x/z") && s.matches("y/z") && !s.matches("xy/z"));
    }

    #[test]
    fn an_unbalanced_bracket_cannot_escape_the_anchors() {
        assert!(matches!(
            Selector::parse("*a)|(.*"),
            Err(SelectorError::Regex { .. })
        ));
        assert!(matches!(
            Selector::parse("?a)|(x"),
            Err(SelectorError::Regex { .. })
        ));
    }

    #[test]
    fn sets_union_and_flatten() {
        let s = sel("#>a////?b/.*////#*c//");
        assert!(s.matches("a") && s.matches("b/x") && s.matches("c/d") && s.matches("c"));
        assert!(!s.matches("b"));
    }

    #[test]
    fn deeply_nested_sets_do_not_recurse() {
        let text = format!("{}>a", "#".repeat(MAX_SELECTOR_BYTES - 2));
        let s = sel(&text);
        assert!(s.matches("a") && !s.matches("b"));
        let text = format!("#>b////{}>a", "#".repeat(50_000));
        assert!(sel(&text).matches("a"));
    }

    #[test]
    fn qualifiers_of_non_last_set_members_are_kept() {
        // A `?`/`*` member's qualifier followed by the separator: five or six slashes.
        let s = sel("#?a//////>b");
        assert!(s.matches("a") && s.matches("a/x") && s.matches("b"));
        let s = sel("#*a/////?b");
        assert!(!s.matches("a") && s.matches("a/x") && s.matches("b"));
        let s = sel("#?a////>b");
        assert!(s.matches("a") && !s.matches("a/x"));
    }

    #[test]
    fn ambiguous_slash_runs_are_refused() {
        for text in ["#?a/////b", "#?a//////b", "#>a///////>b", "#?a/////////?b"] {
            let err = Selector::parse(text).unwrap_err();
            assert!(
                matches!(err, SelectorError::AmbiguousSet { .. }),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn sizes_are_bounded() {
        let long = format!(">{}", "a".repeat(MAX_SELECTOR_BYTES));
        assert!(matches!(
            Selector::parse(&long),
            Err(SelectorError::TooLong(_))
        ));
        let many = format!("#{}", vec![">a"; MAX_SET_MEMBERS + 1].join("////"));
        assert!(matches!(
            Selector::parse(&many),
            Err(SelectorError::TooManyMembers)
        ));
        let ok = format!("#{}", vec![">a"; MAX_SET_MEMBERS].join("////"));
        assert!(Selector::parse(&ok).is_ok());
        let err = Selector::parse(r"?\w{100}").unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        let err = Selector::parse(r"*.{10000}").unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn memory_estimate_counts_patterns() {
        let path = sel(">a/b");
        let pattern = sel("?a/.*");
        assert!(path.memory_bytes() < 1024, "{}", path.memory_bytes());
        assert!(pattern.memory_bytes() > REGEX_CACHE_BYTES);
        let set = sel("#?a/.*////?b/.*");
        assert!(set.memory_bytes() > 2 * REGEX_CACHE_BYTES);
        // Literal parts of a split-path pattern cost no automaton.
        assert!(sel("?a/b/c").memory_bytes() < 1024);
    }

    /// Found by fuzzing: `*a$/` must select `a/b` (the `$` holds at the end of the ancestor `a`).
    #[test]
    fn end_anchors_hold_at_the_ancestor() {
        assert!(sel("*a$/").matches("a/b"));
        assert!(sel("*a$//").matches("a/b") && sel("*a$//").matches("a"));
        assert!(!sel("*a$/").matches("ab/c"));
    }

    /// Found by fuzzing: `*a/?b` selects `ab`, so its prefix cannot be `a`.
    #[test]
    fn a_quantified_slash_ends_the_prefix() {
        for (text, path) in [
            ("*a/?b", "ab"),
            ("*a/*b", "ab"),
            ("*x/a/+b", "x/a/b"),
            ("*a/{0,1}b", "ab"),
        ] {
            let s = sel(text);
            assert!(s.matches(path), "{text} on {path}");
            let prefix = s.path_prefix();
            assert!(
                prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/")),
                "{text}: prefix {prefix:?} does not cover {path}"
            );
        }
        assert_eq!(sel("*x/a/?b").path_prefix(), "x");
        assert_eq!(sel("*a/b").path_prefix(), "a/b");
    }

    #[test]
    fn path_prefixes() {
        assert_eq!(sel("?foo/bar/baz/.*/bing").path_prefix(), "foo/bar/baz");
        assert_eq!(sel(">a/b").path_prefix(), "a/b");
        assert_eq!(sel("*foo/bar.*").path_prefix(), "foo");
        assert_eq!(sel("*a/b|c/d").path_prefix(), "");
        assert_eq!(sel("#?a/b/c////?a/b/d").path_prefix(), "a/b");
        assert_eq!(sel("#>x////>y").path_prefix(), "");
    }

    #[test]
    fn invalid_selectors_are_explained() {
        assert_eq!(Selector::parse(""), Err(SelectorError::Empty));
        assert!(matches!(
            Selector::parse("?a//b"),
            Err(SelectorError::EmptyPart(_))
        ));
        assert!(matches!(
            Selector::parse("?("),
            Err(SelectorError::Regex { .. })
        ));
        assert!(matches!(
            Selector::parse("*"),
            Err(SelectorError::Regex { .. })
        ));
        assert!(matches!(
            Selector::parse("#>a////"),
            Err(SelectorError::EmptySetMember(_))
        ));
        assert!(matches!(
            Selector::parse("#"),
            Err(SelectorError::EmptySetMember(_))
        ));
        assert!(matches!(
            Selector::parse("$x"),
            Err(SelectorError::Reserved(_))
        ));
        assert!(matches!(
            Selector::parse(">a//b"),
            Err(SelectorError::Path { .. })
        ));
        let err = Selector::parse("?a/(b").unwrap_err().to_string();
        assert!(err.contains("?a/(b"), "{err}");
    }

    #[test]
    fn descendants_are_segment_aware() {
        let s = sel("*a/b/");
        assert!(s.matches("a/b/c"));
        assert!(!s.matches("a/bc"));
        assert!(!s.matches("a/b"));
        let s = sel("?a/b/");
        assert!(s.matches("a/b/c") && s.matches("a/b/c/d"));
        assert!(!s.matches("a/bc") && !s.matches("a/b"));
    }
}
