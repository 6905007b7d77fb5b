//! `topic-cli security …`: the operator's tools for the topic server's security file, which run
//! without a server — hashing a password for a `[principals.NAME]` entry, and issuing a signed
//! token (HS256) that the server's `[jwt]` section accepts.

use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use clap::Subcommand;
use serde::Serialize;

use crate::cli::CliError;

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as the hash
/// output (256 bits); a shorter one can be guessed offline from any token it signed.
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest password read from stdin: a hash of a megabyte-long "password" is a mistake (a file
/// piped in by accident), not a credential.
const MAX_PASSWORD_BYTES: u64 = 4096;

/// The security tools (no server needed).
#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// Read a password from stdin (up to the first newline, which is not part of it) and print
    /// its argon2id hash as a PHC string (`$argon2id$v=19$…`), the form the security file's
    /// `password` key takes. Each run uses a fresh random salt. Pipe the password in rather than
    /// typing it (the terminal would echo it): `printf %s "$PW" | topic-cli security
    /// hash-password`.
    HashPassword,
    /// Print a signed token (JWT, HS256) for a principal: claims `sub` (the principal), `roles`,
    /// `iat`, `exp` (`iat` + TTL) and `aud` when given. The secret is read from an environment
    /// variable (never a command-line argument, which other local users can see) and must be at
    /// least 32 bytes.
    Token {
        /// The principal the token names (its `sub` claim).
        #[arg(long, value_name = "NAME")]
        principal: String,
        /// The roles it grants, comma-separated (its `roles` claim); none when absent.
        #[arg(long, value_name = "A,B", value_delimiter = ',')]
        roles: Vec<String>,
        /// How long the token is valid, in whole seconds from now.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=31_622_400))]
        ttl: u64,
        /// The environment variable holding the HS256 secret (the same one the server's
        /// `hs256_secret_env` names).
        #[arg(long, value_name = "VAR")]
        secret_env: String,
        /// The audience (`aud` claim) the server expects, if it checks one.
        #[arg(long, value_name = "AUD")]
        audience: Option<String>,
    },
}

/// The claims of a token this tool issues (what the server reads from one).
#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: &'a str,
    roles: &'a [String],
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Runs one security command, printing its result (one line) to `out`.
pub fn run(
    command: SecurityCommand,
    input: impl Read,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let line = match command {
        SecurityCommand::HashPassword => hash_password(&read_password(input)?)?,
        SecurityCommand::Token {
            principal,
            roles,
            ttl,
            secret_env,
            audience,
        } => {
            let secret = std::env::var(&secret_env).map_err(|_| {
                CliError::Invalid(format!(
                    "the environment variable {secret_env} (--secret-env) is not set or not UTF-8"
                ))
            })?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| CliError::Runtime(format!("the clock is before 1970: {e}")))?;
            token(
                secret.as_bytes(),
                &principal,
                &roles,
                now,
                Duration::from_secs(ttl),
                audience.as_deref(),
            )?
        }
    };
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// The password: the input up to its first line break.
fn read_password(input: impl Read) -> Result<String, CliError> {
    let mut text = String::new();
    input
        .take(MAX_PASSWORD_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| CliError::Invalid(format!("cannot read the password from stdin: {e}")))?;
    if text.len() as u64 > MAX_PASSWORD_BYTES {
        return Err(CliError::Invalid(format!(
            "the password on stdin is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        return Err(CliError::Invalid(
            "no password on stdin (an empty password is refused)".to_owned(),
        ));
    }
    Ok(password)
}

/// The argon2id (v19, default cost) PHC string of `password`, with a random salt.
fn hash_password(password: &str) -> Result<String, CliError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| CliError::Runtime(format!("cannot hash the password: {e}")))
}

/// An HS256 token for `principal` with `roles`, issued at `now` (since the epoch) for `ttl`.
fn token(
    secret: &[u8],
    principal: &str,
    roles: &[String],
    now: Duration,
    ttl: Duration,
    audience: Option<&str>,
) -> Result<String, CliError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(CliError::Invalid(format!(
            "the HS256 secret has {} bytes; at least {MIN_SECRET_BYTES} are needed",
            secret.len()
        )));
    }
    if principal.is_empty() || roles.iter().any(String::is_empty) {
        return Err(CliError::Invalid(
            "the principal and every role must be non-empty".to_owned(),
        ));
    }
    let iat = now.as_secs();
    let claims = Claims {
        sub: principal,
        roles,
        iat,
        exp: iat.saturating_add(ttl.as_secs()),
        aud: audience,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret)
        .map_err(|e| CliError::Runtime(format!("unusable secret: {e}")))?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|e| CliError::Runtime(format!("cannot sign the token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_ends_at_the_first_line_break() {
        assert_eq!(
            read_password("pw one\r\nignored".as_bytes()).unwrap(),
            "pw one"
        );
        assert_eq!(read_password("pw".as_bytes()).unwrap(), "pw");
        assert!(matches!(
            read_password("\n".as_bytes()),
            Err(CliError::Invalid(_))
        ));
        let long = "x".repeat(5000);
        assert!(matches!(
            read_password(long.as_bytes()),
            Err(CliError::Invalid(_))
        ));
    }

    #[test]
    fn short_secrets_and_empty_names_are_refused() {
        let day = Duration::from_secs(86_400);
        let roles = ["A".to_owned()];
        let err = token(b"short", "p", &roles, day, day, None).unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");
        let secret = [7u8; 32];
        assert!(token(&secret, "", &roles, day, day, None).is_err());
        assert!(token(&secret, "p", &["".to_owned()], day, day, None).is_err());
        assert!(token(&secret, "p", &roles, day, day, None).is_ok());
    }
}
