//! Browser origin allow-lists (`--allowed-origins`), one implementation for every tier.
//!
//! Browsers send an `Origin` header with every WebSocket upgrade and every cross-site request,
//! and a page cannot forge it; checking it is what keeps another web page a user has open from
//! driving a service on their machine or network. Requests without `Origin` come from
//! non-browser clients (curl, the platform's own tiers) and are not the allow-list's business.

use std::sync::Arc;

use axum::http::HeaderValue;

/// Canonical form of an origin for comparison: browsers send `scheme://host[:port]`, and scheme
/// and host are case-insensitive. Trailing slashes and surrounding blanks are dropped.
pub fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// A clap value parser for one entry of `--allowed-origins`: blank (ignored later), or
/// `http://…`/`https://…` without a path. Anything else could never match a browser's `Origin`
/// and is refused at start-up instead of silently refusing every browser.
pub fn parse_origin(input: &str) -> Result<String, String> {
    let origin = normalize(input);
    if origin.is_empty() {
        return Ok(origin);
    }
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(origin),
        _ => Err(format!(
            "{input:?} is not an origin: expected scheme://host[:port], e.g. http://localhost:8080"
        )),
    }
}

/// Which browser origins may call a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// Normalized, non-blank entries.
    list: Arc<[String]>,
    /// Whether an empty list means "every origin" (rather than "no browser origin").
    any_when_empty: bool,
}

impl AllowedOrigins {
    /// Only the listed origins; an empty list allows no browser at all.
    pub fn only(list: &[String]) -> Self {
        Self::build(list, false)
    }

    /// The listed origins, or every origin when the list is empty (the redis-ws-bridge's
    /// documented default, kept for compatibility).
    pub fn any_if_empty(list: &[String]) -> Self {
        Self::build(list, true)
    }

    fn build(list: &[String], any_when_empty: bool) -> Self {
        let list: Vec<String> = list
            .iter()
            .map(|origin| normalize(origin))
            .filter(|origin| !origin.is_empty())
            .collect();
        Self {
            list: list.into(),
            any_when_empty,
        }
    }

    /// The normalized entries (for CORS answers).
    pub fn list(&self) -> &[String] {
        &self.list
    }

    /// Whether a request with this `Origin` header may proceed. No header (a non-browser
    /// client) is always allowed; a header that is not ASCII never matches.
    pub fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.list.is_empty() {
            return self.any_when_empty;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = normalize(origin);
        self.list.contains(&origin)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_empty_list_means_what_the_service_chose() {
        let evil = HeaderValue::from_static("http://evil");
        assert!(AllowedOrigins::any_if_empty(&[]).allows(Some(&evil)));
        assert!(!AllowedOrigins::only(&[]).allows(Some(&evil)));
        assert!(AllowedOrigins::only(&list(&["", " "])).list().is_empty());
        // Non-browser clients are never the allow-list's business.
        assert!(AllowedOrigins::only(&[]).allows(None));
    }

    #[test]
    fn listed_origins_match_case_insensitively() {
        let allowed = AllowedOrigins::only(&list(&["HTTP://Localhost:8080/"]));
        assert_eq!(allowed.list(), ["http://localhost:8080"]);
        assert!(allowed.allows(Some(&HeaderValue::from_static("http://LOCALHOST:8080"))));
        assert!(!allowed.allows(Some(&HeaderValue::from_static("http://localhost:8081"))));
        assert!(!allowed.allows(Some(&HeaderValue::from_static("null"))));
        let weird = HeaderValue::from_bytes(b"http://\xffhost").unwrap();
        assert!(!allowed.allows(Some(&weird)));
    }

    #[test]
    fn origin_flags_are_checked() {
        assert_eq!(
            parse_origin(" HTTPS://App.Example/ ").unwrap(),
            "https://app.example"
        );
        assert_eq!(parse_origin("").unwrap(), "");
        for bad in ["localhost:8080", "http://", "ftp://x", "http://x/path", "*"] {
            let error = parse_origin(bad).unwrap_err();
            assert!(error.contains("scheme://host"), "{bad}: {error}");
        }
    }
}
