//! Who a session is and what it may do: the security store loaded from `--security FILE`
//! (reloaded on SIGHUP), password and token authentication, and the per-address brake on
//! failed attempts. Without a store the server is open: every session may do everything, and
//! `crate::http` accepts clients from loopback only unless `--insecure-open` says otherwise.
//!
//! Passwords are argon2id hashes checked on the blocking pool, a few at a time (each check
//! takes ~19 MiB and tens of milliseconds, so a flood of attempts must queue rather than
//! spawn hundreds of them); an unknown principal costs the same check against a dummy hash,
//! so the answer's timing does not tell which principals exist. Tokens are JWTs verified with
//! exactly the algorithm of the key configured for them: `alg: none` cannot be expressed, and
//! an HS256 token is checked only against the HS256 secret, never against an RSA or EC public
//! key (algorithm confusion).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use arc_swap::ArcSwap;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use diffusion_core::security::{ANONYMOUS, Grant, JwtSettings, SecurityStore};
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Semaphore;

/// Failed authentications one source address may make per [`FAILURE_WINDOW`] before its
/// attempts are refused unchecked (`RATE_LIMITED`) until the window ends.
pub(crate) const MAX_FAILURES_PER_WINDOW: u32 = 10;
/// See [`MAX_FAILURES_PER_WINDOW`].
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; past it, addresses whose window has ended are forgotten first.
const MAX_TRACKED_ADDRESSES: usize = 65_536;
/// Password checks running at once.
const CONCURRENT_PASSWORD_CHECKS: usize = 4;

/// How a session's roles are found, again after every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoleSource {
    /// No security store: everything is allowed.
    Open,
    /// The store's anonymous roles.
    Anonymous,
    /// The roles the store gives the principal.
    Principal,
    /// The roles a token named (tokens are not re-read).
    Token(Vec<String>),
}

/// Who a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The principal; `None` for an anonymous session.
    pub principal: Option<String>,
    /// Where its roles come from.
    pub roles: RoleSource,
    /// When its token expires, for a session authenticated by one.
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// The identity of a session when nothing is checked.
    pub fn open(principal: Option<String>) -> Self {
        Self {
            principal,
            roles: RoleSource::Open,
            expires_at: None,
        }
    }

    /// The name in logs and per-principal limits (`ANONYMOUS` for anonymous sessions).
    pub fn name(&self) -> &str {
        self.principal.as_deref().unwrap_or(ANONYMOUS)
    }
}

/// A session's identity with what it may do under the store in force: what the engine keeps
/// for each session (and each view, which runs with its creator's access).
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// Who.
    pub identity: Arc<Identity>,
    /// What it may do; replaced after a reload.
    pub grant: Arc<Grant>,
}

impl Access {
    /// Everything allowed (no security store, or the server's own views file).
    pub fn open() -> Self {
        Self {
            identity: Arc::new(Identity::open(None)),
            grant: Arc::new(Grant::everything()),
        }
    }
}

/// What a client presented in `connect`.
#[derive(Default)]
pub(crate) struct Presented {
    /// `principal`.
    pub principal: Option<String>,
    /// `credentials` (a password).
    pub password: Option<String>,
    /// `token` (a JWT).
    pub token: Option<String>,
}

/// Why a `connect` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// Refused: the message is safe to tell the client.
    #[error("{0}")]
    Refused(String),
    /// Too many failures from this address lately.
    #[error("too many failed authentications from this address: retry in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
}

/// The keys tokens are checked with.
struct TokenKeys {
    settings: JwtSettings,
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    es256: Option<DecodingKey>,
    /// From the JWKS file: (key id, algorithm, key).
    jwks: Vec<(Option<String>, Algorithm, DecodingKey)>,
}

/// One loaded version of the store with everything derived from it.
struct Loaded {
    /// `None`: no security file, everything allowed.
    store: Option<SecurityStore>,
    tokens: Option<TokenKeys>,
}

/// The server's security: the current store and the authentication machinery.
pub(crate) struct Security {
    file: Option<PathBuf>,
    current: ArcSwap<Loaded>,
    failures: FailedAttempts,
    password_checks: Semaphore,
    /// Checked when the principal does not exist, so the answer takes as long. Made only
    /// with a security file (without one no password is ever checked): a hash costs tens of
    /// milliseconds, far more in a debug build's tests.
    dummy_hash: String,
}

impl Security {
    /// Loads the security file, if any; an unusable file stops the start-up with its reason.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let loaded = load_file(file)?;
        let dummy_hash = match file {
            Some(_) => Argon2::default()
                .hash_password(b"not a password anyone has")
                .map_err(|e| anyhow::anyhow!("preparing the password checker: {e}"))?
                .to_string(),
            None => String::new(),
        };
        Ok(Self {
            file: file.map(Path::to_path_buf),
            current: ArcSwap::from_pointee(loaded),
            failures: FailedAttempts::default(),
            password_checks: Semaphore::new(CONCURRENT_PASSWORD_CHECKS),
            dummy_hash,
        })
    }

    /// Whether the server runs without a security store.
    pub fn is_open(&self) -> bool {
        self.current.load().store.is_none()
    }

    /// The security file, when there is one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reads the file again; a bad file is refused and the store in force stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let loaded = load_file(Some(file))?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// What a session with this identity may do under the store in force now.
    pub fn grant(&self, identity: &Identity) -> Arc<Grant> {
        let loaded = self.current.load();
        let Some(store) = &loaded.store else {
            return Arc::new(Grant::everything());
        };
        Arc::new(match &identity.roles {
            RoleSource::Open => Grant::default(),
            RoleSource::Anonymous => store.grant(store.anonymous_roles().unwrap_or_default()),
            RoleSource::Principal => identity
                .principal
                .as_deref()
                .and_then(|p| store.principal(p))
                .map(|p| store.grant(&p.roles))
                .unwrap_or_default(),
            RoleSource::Token(roles) => store.grant(roles),
        })
    }

    /// Checks what a client presented in `connect` from `peer`.
    pub async fn authenticate(
        &self,
        presented: Presented,
        peer: IpAddr,
    ) -> Result<Identity, AuthError> {
        let loaded = self.current.load_full();
        let Some(store) = &loaded.store else {
            return Ok(Identity::open(presented.principal));
        };
        let anonymous = presented.principal.is_none()
            && presented.password.is_none()
            && presented.token.is_none();
        if anonymous {
            return match store.anonymous_roles() {
                Some(_) => Ok(Identity {
                    principal: None,
                    roles: RoleSource::Anonymous,
                    expires_at: None,
                }),
                None => Err(AuthError::Refused(
                    "anonymous sessions are not allowed here: connect with a principal and credentials, or a token".to_owned(),
                )),
            };
        }
        // Every attempt counts as a failure until it succeeds, so attempts made at the same time
        // are braked as well as attempts made one after another.
        let attempt = self
            .failures
            .begin(peer, Instant::now())
            .map_err(AuthError::RateLimited)?;
        let result = match presented {
            Presented {
                token: Some(token),
                principal: None,
                password: None,
            } => self.check_token(loaded.tokens.as_ref(), &token),
            Presented {
                principal: Some(principal),
                password: Some(password),
                token: None,
            } => self.check_password(store, principal, password).await,
            _ => Err(AuthError::Refused(
                "connect with either a principal and its credentials, or a token".to_owned(),
            )),
        };
        if result.is_ok() {
            self.failures.forgive(peer, attempt);
        }
        result
    }

    async fn check_password(
        &self,
        store: &SecurityStore,
        principal: String,
        password: String,
    ) -> Result<Identity, AuthError> {
        let known = store.principal(&principal);
        let hash = known.map_or_else(|| self.dummy_hash.clone(), |p| p.password_hash.clone());
        let refused = || AuthError::Refused("authentication failed".to_owned());
        let _permit = self
            .password_checks
            .acquire()
            .await
            .map_err(|_| refused())?;
        let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        if !(matches && known.is_some()) {
            return Err(refused());
        }
        Ok(Identity {
            principal: Some(principal),
            roles: RoleSource::Principal,
            expires_at: None,
        })
    }

    fn check_token(&self, keys: Option<&TokenKeys>, token: &str) -> Result<Identity, AuthError> {
        let keys = keys.ok_or_else(|| {
            AuthError::Refused("this server does not accept tokens (no [jwt] section)".to_owned())
        })?;
        let claims = keys
            .verify(token)
            .map_err(|why| AuthError::Refused(format!("token refused: {why}")))?;
        Ok(Identity {
            principal: Some(claims.subject),
            roles: RoleSource::Token(claims.roles),
            expires_at: Some(claims.expires_at),
        })
    }
}

fn verify_password(hash: &str, password: &str) -> bool {
    argon2::password_hash::phc::PasswordHash::new(hash).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

fn load_file(file: Option<&Path>) -> anyhow::Result<Loaded> {
    let Some(file) = file else {
        return Ok(Loaded {
            store: None,
            tokens: None,
        });
    };
    let name = file.display().to_string();
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading security file {name}"))?;
    let store = SecurityStore::parse(&name, &text)?;
    let tokens = store
        .jwt()
        .map(|settings| TokenKeys::load(settings, file.parent().unwrap_or(Path::new("."))))
        .transpose()
        .with_context(|| format!("{name}: [jwt]"))?;
    Ok(Loaded {
        store: Some(store),
        tokens,
    })
}

/// What a verified token says.
struct TokenClaims {
    subject: String,
    roles: Vec<String>,
    expires_at: SystemTime,
}

impl TokenKeys {
    /// Reads the keys `settings` names; relative files are relative to the security file.
    fn load(settings: &JwtSettings, base: &Path) -> anyhow::Result<Self> {
        let read = |file: &str| -> anyhow::Result<Vec<u8>> {
            let path = base.join(file);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let hs256 = match &settings.hs256_secret_env {
            Some(var) => {
                let secret = std::env::var(var).with_context(|| {
                    format!("hs256_secret_env: environment variable {var} is not set")
                })?;
                anyhow::ensure!(
                    secret.len() >= 32,
                    "hs256_secret_env: the secret in {var} must have at least 32 bytes"
                );
                Some(
                    DecodingKey::from_secret(secret.as_bytes()).with_context(|| {
                        format!("hs256_secret_env: the secret in {var} cannot be used")
                    })?,
                )
            }
            None => None,
        };
        let rs256 = settings
            .rs256_public_key_file
            .as_deref()
            .map(|f| {
                DecodingKey::from_rsa_pem(&read(f)?)
                    .with_context(|| format!("{f}: not an RSA public key in PEM"))
            })
            .transpose()?;
        let es256 = settings
            .es256_public_key_file
            .as_deref()
            .map(|f| {
                DecodingKey::from_ec_pem(&read(f)?)
                    .with_context(|| format!("{f}: not an EC public key in PEM"))
            })
            .transpose()?;
        let mut jwks = Vec::new();
        if let Some(file) = &settings.jwks_file {
            let set: JwkSet = serde_json::from_slice(&read(file)?)
                .with_context(|| format!("{file}: not a JWKS document"))?;
            for jwk in &set.keys {
                let algorithm = match jwk.common.key_algorithm {
                    Some(KeyAlgorithm::RS256) => Algorithm::RS256,
                    Some(KeyAlgorithm::ES256) => Algorithm::ES256,
                    other => anyhow::bail!(
                        "{file}: key {:?} has algorithm {other:?}; only RS256 and ES256 keys (with \"alg\") are accepted",
                        jwk.common.key_id
                    ),
                };
                let key = DecodingKey::from_jwk(jwk)
                    .with_context(|| format!("{file}: a key that cannot be used"))?;
                jwks.push((jwk.common.key_id.clone(), algorithm, key));
            }
        }
        Ok(Self {
            settings: settings.clone(),
            hs256,
            rs256,
            es256,
            jwks,
        })
    }

    /// The key for a token's header: by `kid` from the JWKS when it names one, else the key
    /// configured for its algorithm. Only the token's own algorithm is then accepted.
    fn key_for(&self, header: &jsonwebtoken::Header) -> Option<&DecodingKey> {
        if let Some(kid) = &header.kid
            && let Some((_, _, key)) = self
                .jwks
                .iter()
                .find(|(id, alg, _)| id.as_deref() == Some(kid) && *alg == header.alg)
        {
            return Some(key);
        }
        match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            Algorithm::ES256 => self.es256.as_ref(),
            _ => None,
        }
        .or_else(|| {
            self.jwks
                .iter()
                .find(|(id, alg, _)| id.is_none() && *alg == header.alg)
                .map(|(_, _, key)| key)
        })
    }

    fn verify(&self, token: &str) -> Result<TokenClaims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("{e}"))?;
        let key = self
            .key_for(&header)
            .ok_or_else(|| format!("no key for algorithm {:?}", header.alg))?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.settings.leeway_seconds;
        validation.validate_nbf = true;
        // `aud` and `iss` are checked only when present unless required: a server that names
        // an audience or an issuer must refuse tokens that leave them out.
        let mut required = vec!["exp", "sub"];
        if self.settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.settings.audience);
            required.push("aud");
        }
        if let Some(issuer) = &self.settings.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &validation,
        )
        .map_err(|e| format!("{e}"))?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && *s != ANONYMOUS)
            .ok_or("the sub claim must name the principal")?
            .to_owned();
        let roles = match claims.get(&self.settings.roles_claim) {
            None => Vec::new(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .map(|r| r.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    format!(
                        "the {} claim must list role names",
                        self.settings.roles_claim
                    )
                })?,
            Some(_) => {
                return Err(format!(
                    "the {} claim must list role names",
                    self.settings.roles_claim
                ));
            }
        };
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or("exp must be a number of seconds")?;
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(
                exp.saturating_add(self.settings.leeway_seconds),
            ))
            .ok_or("exp is out of range")?;
        // The library accepts a token through the whole second of its `exp`; a session opened
        // then would be closed at once, so it is refused like any expired token.
        if expires_at <= SystemTime::now() {
            return Err("ExpiredSignature".to_owned());
        }
        Ok(TokenClaims {
            subject,
            roles,
            expires_at,
        })
    }
}

/// Failed authentications per source address, in fixed windows.
#[derive(Default)]
struct FailedAttempts {
    by_address: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailedAttempts {
    /// Starts an attempt from `peer`, counted as a failure until [`Self::forgive`]n; refused
    /// with the time left in the window when `peer` has failed (or is trying) too often.
    /// Returns the window the attempt was counted in.
    fn begin(&self, peer: IpAddr, now: Instant) -> Result<Instant, Duration> {
        let mut map = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED_ADDRESSES && !map.contains_key(&peer) {
            map.retain(|_, (_, since)| now < *since + FAILURE_WINDOW);
            if map.len() >= MAX_TRACKED_ADDRESSES {
                map.clear();
            }
        }
        let entry = map.entry(peer).or_insert((0, now));
        if now >= entry.1 + FAILURE_WINDOW {
            *entry = (0, now);
        }
        if entry.0 >= MAX_FAILURES_PER_WINDOW {
            return Err(entry.1 + FAILURE_WINDOW - now);
        }
        entry.0 += 1;
        Ok(entry.1)
    }

    /// The attempt begun in `window` succeeded: it is not a failure.
    fn forgive(&self, peer: IpAddr, window: Instant) {
        let mut map = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get_mut(&peer)
            && entry.1 == window
        {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_an_address_for_the_rest_of_its_window() {
        let failures = FailedAttempts::default();
        let peer: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES_PER_WINDOW {
            assert!(failures.begin(peer, start).is_ok());
        }
        assert!(failures.begin(peer, start).is_err());
        assert!(failures.begin(other, start).is_ok(), "per address");
        assert!(
            failures.begin(peer, start + FAILURE_WINDOW).is_ok(),
            "a new window"
        );
    }

    /// Attempts in flight count until they succeed: ten at once from one address leave no
    /// room for an eleventh, and only successes give room back.
    #[test]
    fn attempts_in_flight_count_until_forgiven() {
        let attempts = FailedAttempts::default();
        let peer: IpAddr = [10, 0, 0, 3].into();
        let now = Instant::now();
        let started: Vec<Instant> = (0..MAX_FAILURES_PER_WINDOW)
            .map(|_| attempts.begin(peer, now).unwrap())
            .collect();
        assert!(attempts.begin(peer, now).is_err(), "the eleventh waits");
        attempts.forgive(peer, started[0]);
        assert!(
            attempts.begin(peer, now).is_ok(),
            "a success gave its place back"
        );
        assert!(attempts.begin(peer, now).is_err());
        // A success from an earlier window does not give room in the new one.
        let later = now + FAILURE_WINDOW;
        for _ in 0..MAX_FAILURES_PER_WINDOW {
            attempts.begin(peer, later).unwrap();
        }
        attempts.forgive(peer, started[1]);
        assert!(attempts.begin(peer, later).is_err());
    }
}
