//! `Selector::parse` on arbitrary UTF-8. Input: the selector on the first line, optional paths
//! to test on the following lines. For a selector that parses:
//!
//! - `matches`, `path_prefix`, `memory_bytes`, `exact_path` never panic;
//! - every valid topic path it matches starts with its `path_prefix()` segment-wise (an empty
//!   prefix means "anywhere");
//! - an exact path selector matches its path and nothing else;
//! - re-parsing `as_str()` gives the same selector (text, prefix, matches);
//! - a single `*` or `?` selector matches exactly what an independent implementation with the
//!   `regex` crate (testing every ancestor for the `/` and `//` qualifiers) matches.

#![no_main]

use diffusion_core::{Selector, TopicPath};
use libfuzzer_sys::{Corpus, fuzz_target};

const FIXED: &[&str] = &[
    "a",
    "b",
    "a/b",
    "a/b/c",
    "ab/c",
    "x/a",
    "alpha/beta",
    "alpha/beta/gamma",
    "redis/bitcoin",
    "redis/views/bitcoin/USD",
    "sensors/t1",
    "Diffusion/x",
    "é/ü/ß",
];

/// Candidate paths derived from the selector text: each set member without its kind character
/// and qualifier, with and without regex metacharacters, and one level below.
fn derived(text: &str, selector: &Selector) -> Vec<String> {
    let mut out = Vec::new();
    for member in text.trim_start_matches('#').split("////") {
        let member = member.trim_start_matches('#');
        let body = member
            .strip_prefix(['>', '?', '*'])
            .unwrap_or(member)
            .trim_end_matches('/')
            .trim_start_matches('/');
        let plain: String = body
            .chars()
            .filter(|c| !"\\.+*?()|[]{}^$".contains(*c))
            .collect();
        // Each `/` left out in turn: a pattern may make a separator optional (`*a/?b`).
        let joined = plain
            .match_indices('/')
            .take(8)
            .map(|(i, _)| format!("{}{}", &plain[..i], &plain[i + 1..]))
            .collect::<Vec<_>>();
        for candidate in [body.to_owned(), plain].into_iter().chain(joined) {
            out.push(format!("{candidate}/x"));
            out.push(candidate);
        }
    }
    let prefix = selector.path_prefix();
    out.push(prefix.to_owned());
    out.push(format!("{prefix}/z"));
    out.push(format!("{prefix}z"));
    if let Some(path) = selector.exact_path() {
        out.push(path.as_str().to_owned());
        out.push(format!("{path}/child"));
    }
    out
}

/// The `/` / `//` qualifier at the end of a `?` or `*` selector, as the language defines it.
fn split_qualifier(rest: &str) -> (&str, u8) {
    if let Some(body) = rest.strip_suffix("//") {
        (body, 2)
    } else if let Some(body) = rest.strip_suffix('/') {
        (body, 1)
    } else {
        (rest, 0)
    }
}

fn anchored(pattern: &str) -> Option<regex::Regex> {
    regex::Regex::new(&format!("^(?:{pattern})$")).ok()
}

/// A matcher for topic paths.
type Matcher = Box<dyn Fn(&str) -> bool>;

/// An independent matcher for a single `*` or `?` selector; `None` when there is none.
fn reference(text: &str) -> Option<Matcher> {
    if let Some(rest) = text.strip_prefix('*') {
        let (body, qualifier) = split_qualifier(rest);
        let exact = anchored(body)?;
        Some(Box::new(move |path: &str| {
            let ancestor = || {
                path.match_indices('/')
                    .any(|(i, _)| exact.is_match(&path[..i]))
            };
            match qualifier {
                0 => exact.is_match(path),
                1 => ancestor(),
                _ => exact.is_match(path) || ancestor(),
            }
        }))
    } else if let Some(rest) = text.strip_prefix('?') {
        let (body, qualifier) = split_qualifier(rest);
        let parts: Vec<regex::Regex> = body.split('/').map(anchored).collect::<Option<_>>()?;
        Some(Box::new(move |path: &str| {
            let segments: Vec<&str> = path.split('/').collect();
            if segments.len() < parts.len()
                || !parts.iter().zip(&segments).all(|(p, s)| p.is_match(s))
            {
                return false;
            }
            let more = segments.len() > parts.len();
            match qualifier {
                0 => !more,
                1 => more,
                _ => true,
            }
        }))
    } else {
        None
    }
}

fn under_prefix(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path[prefix.len()..].starts_with('/'))
}

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(input) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let (text, extra) = input.split_once('\n').unwrap_or((input, ""));
    let selector = match Selector::parse(text) {
        Ok(selector) => selector,
        Err(error) => {
            let _ = error.to_string();
            return Corpus::Keep;
        }
    };
    let prefix = selector.path_prefix();
    assert!(
        selector.memory_bytes() >= selector.as_str().len(),
        "memory_bytes {} < text length for {text:?}",
        selector.memory_bytes()
    );

    let mut paths: Vec<String> = FIXED.iter().map(|p| (*p).to_owned()).collect();
    paths.extend(extra.lines().map(str::to_owned));
    paths.extend(derived(text, &selector));

    let reparsed = Selector::parse(selector.as_str()).unwrap_or_else(|e| {
        panic!(
            "as_str() {:?} of {text:?} does not parse again: {e}",
            selector.as_str()
        )
    });
    assert_eq!(
        reparsed.as_str(),
        selector.as_str(),
        "as_str() is not stable for {text:?}"
    );
    assert_eq!(
        reparsed.path_prefix(),
        prefix,
        "path_prefix changes on re-parse of {text:?}"
    );
    let reference = reference(text);

    for path in &paths {
        let matched = selector.matches(path);
        assert_eq!(
            reparsed.matches(path),
            matched,
            "re-parsed {:?} disagrees with {text:?} on {path:?}",
            selector.as_str()
        );
        if TopicPath::parse(path).is_err() {
            continue;
        }
        if matched {
            assert!(
                under_prefix(path, prefix),
                "selector {text:?} matches {path:?} outside its path_prefix {prefix:?}"
            );
        }
        if let Some(exact) = selector.exact_path() {
            assert_eq!(
                matched,
                exact.as_str() == path,
                "path selector {text:?} ({exact}) on {path:?}"
            );
        }
        if let Some(reference) = &reference {
            assert_eq!(
                matched,
                reference(path),
                "selector {text:?} on {path:?} disagrees with the regex-crate reference"
            );
        }
    }
    Corpus::Keep
});
