//! Shared secrets a tier checks on every request — the bridge's publish token, the feeder's
//! control-API token — read from an environment variable (never a flag: command lines are
//! visible to every user of the machine), compared in constant time, never logged.
//!
//! A token must be at least [`MIN_TOKEN_LEN`] characters from `A-Z a-z 0-9 - . _ ~ +`, so it
//! travels unchanged in an `Authorization: Bearer` header and in a WebSocket subprotocol name
//! (`openssl rand -hex 32` makes a good one).

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// The shortest token accepted: shorter ones could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The environment variable named by a `--…-env` flag is not set, or empty.
    #[error("environment variable {var} is not set or empty: it must hold the token")]
    Unset {
        /// The variable.
        var: String,
    },
    /// The environment variable holds something that is not UTF-8.
    #[error("environment variable {var} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        var: String,
    },
    /// The token is too short to resist guessing.
    #[error(
        "the token in {origin} has {len} characters; at least {MIN_TOKEN_LEN} are needed \
         (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// Where the token came from (e.g. "environment variable X").
        origin: String,
        /// Its length.
        len: usize,
    },
    /// The token has a character that cannot travel in a header or subprotocol name.
    #[error(
        "the token in {origin} has a character not allowed at position {position}: use only \
         letters, digits and - . _ ~ + (e.g. `openssl rand -hex 32`)"
    )]
    BadCharacter {
        /// Where the token came from.
        origin: String,
        /// Position of the first bad character, from 1 (the character itself is not shown).
        position: usize,
    },
}

/// A validated token. `Debug` shows no part of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Whether `c` may appear in a token (see the module documentation).
fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+')
}

impl Secret {
    /// Validates `value`, which came from `origin` (named in errors).
    pub fn new(value: &str, origin: &str) -> Result<Self, SecretError> {
        if let Some(position) = value.chars().position(|c| !token_char(c)) {
            return Err(SecretError::BadCharacter {
                origin: origin.to_owned(),
                position: position + 1,
            });
        }
        if value.len() < MIN_TOKEN_LEN {
            return Err(SecretError::TooShort {
                origin: origin.to_owned(),
                len: value.len(),
            });
        }
        Ok(Self(Arc::from(value)))
    }

    /// Reads and validates the token in environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, SecretError> {
        match std::env::var(var) {
            Ok(value) if !value.is_empty() => {
                Self::new(&value, &format!("environment variable {var}"))
            }
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(SecretError::Unset {
                var: var.to_owned(),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::NotUnicode {
                var: var.to_owned(),
            }),
        }
    }

    /// The token a service uses: `given` (set in code, e.g. by a test embedding the service),
    /// else the one in the environment variable `env_var` (from a `--…-token-env` flag), else
    /// none.
    pub fn resolve(
        given: Option<&Secret>,
        env_var: Option<&str>,
    ) -> Result<Option<Secret>, SecretError> {
        match (given, env_var) {
            (Some(secret), _) => Ok(Some(secret.clone())),
            (None, Some(var)) => Self::from_env(var).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// The token itself, for a client that must present it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (scheme case-insensitive), if the
/// request has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(token.trim_ascii())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::http::HeaderValue;

    const GOOD: &str = "0123456789abcdef-._~+XYZ";

    #[test]
    fn a_valid_token_matches_only_itself() {
        let secret = Secret::new(GOOD, "test").unwrap();
        assert!(secret.matches(GOOD.as_bytes()));
        assert!(!secret.matches(b"0123456789abcdef-._~+XYz"));
        assert!(!secret.matches(b"0123456789abcdef-._~+XY"));
        assert!(!secret.matches(b"0123456789abcdef-._~+XYZZ"));
        assert!(!secret.matches(b""));
        assert_eq!(secret.expose(), GOOD);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn short_tokens_and_bad_characters_are_refused_without_showing_them() {
        let error = Secret::new("short", "X").unwrap_err();
        assert_eq!(
            error,
            SecretError::TooShort {
                origin: "X".into(),
                len: 5
            }
        );
        let error = Secret::new("0123456789abcdef/", "X").unwrap_err();
        assert_eq!(
            error,
            SecretError::BadCharacter {
                origin: "X".into(),
                position: 17
            }
        );
        let error = Secret::new("0123456789 abcdefgh", "X").unwrap_err();
        assert!(!error.to_string().contains("abcdef"), "{error}");
    }

    #[test]
    fn a_given_token_wins_over_the_variable() {
        let given = Secret::new(GOOD, "test").unwrap();
        assert_eq!(Secret::resolve(None, None), Ok(None));
        assert_eq!(
            Secret::resolve(Some(&given), Some("SERVICE_KIT_TEST_SURELY_UNSET_VARIABLE")),
            Ok(Some(given))
        );
        assert!(Secret::resolve(None, Some("SERVICE_KIT_TEST_SURELY_UNSET_VARIABLE")).is_err());
    }

    #[test]
    fn an_unset_variable_is_named() {
        let error = Secret::from_env("SERVICE_KIT_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("SERVICE_KIT_TEST_SURELY_UNSET_VARIABLE"),
            "{error}"
        );
    }

    #[test]
    fn bearer_tokens_are_found_only_with_the_bearer_scheme() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(bearer_token(&with("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer_token(&with("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer_token(&with("Basic abc")), None);
        assert_eq!(bearer_token(&with("Bearer")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
