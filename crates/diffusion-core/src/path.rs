//! Topic paths: `/`-separated, case-sensitive segments with no empty segment.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid topic path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path has no segments at all.
    #[error("topic path is empty")]
    Empty,
    /// Two `/` in a row, or a leading/trailing `/` where the caller did not normalise.
    #[error("topic path '{0}' has an empty segment")]
    EmptySegment(String),
    /// The path starts with a prefix reserved for the server itself.
    #[error(
        "topic path '{0}' is reserved (paths starting with 'Diffusion' or '$' are the server's)"
    )]
    Reserved(String),
    /// Control characters make paths unprintable in logs and CLI output.
    #[error("topic path '{0}' contains a control character")]
    ControlCharacter(String),
    /// Longer than [`MAX_PATH_BYTES`]: every selector match and index probe is linear in the
    /// path, so the length is bounded for all of them.
    #[error("topic path of {0} bytes is longer than the limit of {MAX_PATH_BYTES} bytes")]
    TooLong(usize),
    /// More segments than [`MAX_PATH_SEGMENTS`].
    #[error("topic path has {0} segments, more than the limit of {MAX_PATH_SEGMENTS}")]
    TooDeep(usize),
}

/// Longest topic path, in bytes (UTF-8). Part of the protocol (docs/protocol.md §7.1).
pub const MAX_PATH_BYTES: usize = 4096;
/// Most segments in a topic path. Part of the protocol (docs/protocol.md §7.1).
pub const MAX_PATH_SEGMENTS: usize = 128;

/// A validated topic path such as `redis/bitcoin`.
///
/// Kept as one `String` (not a `Vec` of segments) because paths are compared, hashed and sent far
/// more often than they are split.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicPath(String);

impl TopicPath {
    /// Validates `path` exactly as given: no leading or trailing `/`, no empty segment.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(path.len()));
        }
        let segments = path.bytes().filter(|b| *b == b'/').count() + 1;
        if segments > MAX_PATH_SEGMENTS {
            return Err(PathError::TooDeep(segments));
        }
        if path.split('/').any(str::is_empty) {
            return Err(PathError::EmptySegment(path.to_owned()));
        }
        if path.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter(path.to_owned()));
        }
        Ok(Self(path.to_owned()))
    }

    /// Like [`TopicPath::parse`] but first strips one leading and one trailing `/`, the way a
    /// path selector (`>/a/b/`) is normalised.
    pub fn parse_lenient(path: &str) -> Result<Self, PathError> {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        Self::parse(trimmed)
    }

    /// Validates a path that a client wants to create: also refuses the reserved prefixes.
    pub fn parse_user(path: &str) -> Result<Self, PathError> {
        let parsed = Self::parse(path)?;
        if parsed.is_reserved() {
            return Err(PathError::Reserved(path.to_owned()));
        }
        Ok(parsed)
    }

    /// True for paths under the server's reserved prefixes (`Diffusion/…`, `$…`).
    pub fn is_reserved(&self) -> bool {
        self.segments().next() == Some("Diffusion") || self.0.starts_with('$')
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments in order.
    pub fn segments(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// Number of segments.
    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// True when `self` is a strict descendant of `ancestor` (`a/b/c` of `a/b`, not `a/bc`).
    pub fn is_descendant_of(&self, ancestor: &str) -> bool {
        self.0.len() > ancestor.len()
            && self.0.starts_with(ancestor)
            && self.0.as_bytes()[ancestor.len()] == b'/'
    }
}

impl fmt::Display for TopicPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TopicPath {
    type Error = PathError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TopicPath> for String {
    fn from(value: TopicPath) -> Self {
        value.0
    }
}

impl AsRef<str> for TopicPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        assert_eq!(TopicPath::parse("redis/bitcoin").unwrap().depth(), 2);
        assert_eq!(TopicPath::parse("a").unwrap().as_str(), "a");
    }

    #[test]
    fn rejects_empty_segments() {
        assert_eq!(TopicPath::parse(""), Err(PathError::Empty));
        assert!(matches!(
            TopicPath::parse("a//b"),
            Err(PathError::EmptySegment(_))
        ));
        assert!(matches!(
            TopicPath::parse("/a"),
            Err(PathError::EmptySegment(_))
        ));
        assert!(matches!(
            TopicPath::parse("a/"),
            Err(PathError::EmptySegment(_))
        ));
    }

    #[test]
    fn lenient_strips_one_slash_each_side() {
        assert_eq!(TopicPath::parse_lenient("/a/b/").unwrap().as_str(), "a/b");
    }

    #[test]
    fn reserved_prefix_refused_for_users() {
        assert!(matches!(
            TopicPath::parse_user("Diffusion/x"),
            Err(PathError::Reserved(_))
        ));
        assert!(TopicPath::parse_user("Diffusionx/y").is_ok());
    }

    #[test]
    fn length_and_depth_are_bounded() {
        let long = "a".repeat(MAX_PATH_BYTES + 1);
        assert_eq!(TopicPath::parse(&long), Err(PathError::TooLong(long.len())));
        assert!(TopicPath::parse(&"a".repeat(MAX_PATH_BYTES)).is_ok());
        let deep = vec!["a"; MAX_PATH_SEGMENTS + 1].join("/");
        assert_eq!(
            TopicPath::parse(&deep),
            Err(PathError::TooDeep(MAX_PATH_SEGMENTS + 1))
        );
        assert!(TopicPath::parse(&vec!["a"; MAX_PATH_SEGMENTS].join("/")).is_ok());
    }

    #[test]
    fn descendant_is_segment_aware() {
        let p = TopicPath::parse("a/b/c").unwrap();
        assert!(p.is_descendant_of("a/b"));
        assert!(!p.is_descendant_of("a/b/c"));
        assert!(!TopicPath::parse("a/bc").unwrap().is_descendant_of("a/b"));
    }
}
