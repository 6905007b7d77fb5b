//! Topic selectors: which topics a subscription, fetch or removal applies to.
//!
//! The language (see docs/protocol.md): `>path` (or a bare path), `?split/path/pattern`,
//! `*full.path.pattern`, `#sel1////sel2` sets, with the descendant qualifiers `/` (descendants
//! only) and `//` (topic and descendants) after `?` and `*` patterns. Patterns use the Rust `regex`
//! dialect (linear time, no look-around, no back-references) and are always anchored: a split-path
//! part must match its whole segment, a full-path pattern the whole path.

use std::fmt;

use regex::Regex;

use crate::path::{PathError, TopicPath};

/// Why a selector string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Nothing to parse.
    #[error("selector is empty")]
    Empty,
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
    /// A regular expression that does not compile.
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

#[derive(Debug, Clone)]
enum Kind {
    Path(TopicPath),
    Split {
        parts: Vec<Regex>,
        qualifier: Qualifier,
    },
    Full {
        regex: Regex,
        qualifier: Qualifier,
    },
    Set(Vec<Selector>),
}

/// A parsed topic selector. Compare selectors by [`Selector::as_str`] (their source text).
#[derive(Debug, Clone)]
pub struct Selector {
    text: String,
    prefix: String,
    kind: Kind,
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

fn compile(selector: &str, pattern: &str) -> Result<Regex, SelectorError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| SelectorError::Regex {
        selector: selector.to_owned(),
        reason: e.to_string(),
    })
}

fn common_prefix(a: &str, b: &str) -> String {
    a.split('/')
        .zip(b.split('/'))
        .take_while(|(x, y)| x == y && !x.is_empty())
        .map(|(x, _)| x)
        .collect::<Vec<_>>()
        .join("/")
}

impl Selector {
    /// Parses a selector, reporting exactly what is wrong with an invalid one.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let Some(first) = text.chars().next() else {
            return Err(SelectorError::Empty);
        };
        let rest = &text[first.len_utf8()..];
        match first {
            '#' => Self::parse_set(text, rest),
            '>' => Self::parse_path(text, rest),
            '?' => Self::parse_split(text, rest),
            '*' => Self::parse_full(text, rest),
            '$' | '%' | '&' | '<' => Err(SelectorError::Reserved(text.to_owned())),
            _ => Self::parse_path(text, text),
        }
    }

    /// A path selector for exactly `path`.
    pub fn for_path(path: &TopicPath) -> Self {
        Self {
            text: format!(">{path}"),
            prefix: path.as_str().to_owned(),
            kind: Kind::Path(path.clone()),
        }
    }

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
        let parts = raw
            .iter()
            .map(|p| compile(text, p))
            .collect::<Result<Vec<_>, _>>()?;
        let prefix = raw
            .iter()
            .take_while(|p| is_literal(p))
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        Ok(Self {
            text: text.to_owned(),
            prefix,
            kind: Kind::Split { parts, qualifier },
        })
    }

    fn parse_full(text: &str, rest: &str) -> Result<Self, SelectorError> {
        let (body, qualifier) = split_qualifier(rest);
        if body.is_empty() {
            return Err(SelectorError::Regex {
                selector: text.to_owned(),
                reason: "empty pattern".to_owned(),
            });
        }
        let regex = compile(text, body)?;
        // A top-level alternation can match under any prefix, so only a `|`-free pattern has one.
        // The last segment only counts when the whole pattern is literal.
        let segments: Vec<&str> = body.split('/').collect();
        let prefix = if body.contains('|') {
            String::new()
        } else {
            let literal = segments.iter().take_while(|s| is_literal(s)).count();
            let keep = if literal == segments.len() {
                literal
            } else {
                literal.min(segments.len() - 1)
            };
            segments[..keep].join("/")
        };
        Ok(Self {
            text: text.to_owned(),
            prefix,
            kind: Kind::Full { regex, qualifier },
        })
    }

    fn parse_set(text: &str, rest: &str) -> Result<Self, SelectorError> {
        let mut members = Vec::new();
        for member in rest.split("////") {
            if member.is_empty() {
                return Err(SelectorError::EmptySetMember(text.to_owned()));
            }
            let parsed = Self::parse(member)?;
            match parsed.kind {
                Kind::Set(inner) => members.extend(inner),
                _ => members.push(parsed),
            }
        }
        let prefix = members
            .iter()
            .map(|m| m.prefix.clone())
            .reduce(|a, b| common_prefix(&a, &b))
            .unwrap_or_default();
        Ok(Self {
            text: text.to_owned(),
            prefix,
            kind: Kind::Set(members),
        })
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
        match &self.kind {
            Kind::Path(p) => Some(p),
            _ => None,
        }
    }

    /// Does this selector select the topic at `path`?
    pub fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Path(p) => p.as_str() == path,
            Kind::Split { parts, qualifier } => {
                let segments: Vec<&str> = path.split('/').collect();
                let n = parts.len();
                let depth_ok = match qualifier {
                    Qualifier::Matching => segments.len() == n,
                    Qualifier::Descendants => segments.len() > n,
                    Qualifier::MatchingAndDescendants => segments.len() >= n,
                };
                depth_ok
                    && parts
                        .iter()
                        .zip(&segments)
                        .all(|(re, seg)| re.is_match(seg))
            }
            Kind::Full { regex, qualifier } => {
                let ancestors = || {
                    path.match_indices('/')
                        .map(|(i, _)| &path[..i])
                        .any(|a| regex.is_match(a))
                };
                match qualifier {
                    Qualifier::Matching => regex.is_match(path),
                    Qualifier::Descendants => ancestors(),
                    Qualifier::MatchingAndDescendants => regex.is_match(path) || ancestors(),
                }
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

    #[test]
    fn bare_and_slashed_paths_normalise() {
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
    fn sets_union_and_flatten() {
        let s = sel("#>a////?b/.*////#*c//");
        assert!(s.matches("a") && s.matches("b/x") && s.matches("c/d") && s.matches("c"));
        assert!(!s.matches("b"));
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
    }
}
