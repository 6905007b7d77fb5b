//! The security store: principals with their password hashes and roles, the roles' rules,
//! the anonymous roles and the token settings, read from a TOML file (format in
//! docs/security.md §3). A file with anything wrong — an unknown key, an unknown permission
//! or role, a cycle of included roles, a password that is not an argon2id hash — is refused
//! as a whole, naming the line, so a server never runs with half a policy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::grant::{Grant, RoleLimits, RoleRules};
use super::permissions::{GlobalPermission, PathPermission, PathPermissions};
use crate::TopicPath;

/// Most roles, principals, path assignments… one file may define, each (the file is trusted
/// operator input, but a bound keeps a mistake from eating the server).
const MAX_ENTRIES: usize = 100_000;

/// The name anonymous sessions go by in logs and per-principal limits; no principal may
/// take it.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// A security file that cannot be used: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SecurityFileError {
    /// The file's name, as given.
    pub file: String,
    /// The 1-based line the problem is on.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A principal that may authenticate with a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its password's argon2id PHC string.
    pub password_hash: String,
    /// Its roles.
    pub roles: Vec<String>,
}

/// Where signed tokens' keys come from and which claims are checked; the server reads the
/// keys (an environment variable, PEM or JWKS files) when it loads the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// Environment variable holding the HS256 shared secret.
    pub hs256_secret_env: Option<String>,
    /// PEM file with the RSA public key for RS256.
    pub rs256_public_key_file: Option<String>,
    /// PEM file with the EC (P-256) public key for ES256.
    pub es256_public_key_file: Option<String>,
    /// JWKS file (`{"keys":[…]}`) with RS256 or ES256 public keys, chosen by the token's `kid`.
    pub jwks_file: Option<String>,
    /// The claim listing the principal's roles (default `roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Accepted audiences; when set, a token's `aud` must name one of them.
    #[serde(default)]
    pub audience: Vec<String>,
    /// The required issuer (`iss`), when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (default 0, at most 300).
    #[serde(default)]
    pub leeway_seconds: u64,
}

fn default_roles_claim() -> String {
    "roles".to_owned()
}

/// A loaded, checked security store.
#[derive(Debug, Clone, Default)]
pub struct SecurityStore {
    /// `None`: anonymous sessions are refused.
    anonymous: Option<Vec<String>>,
    principals: HashMap<String, Principal>,
    /// Each role's own rules.
    roles: HashMap<String, Arc<RoleRules>>,
    /// Each role's included roles (direct).
    includes: HashMap<String, Vec<String>>,
    jwt: Option<JwtSettings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    anonymous: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    principals: BTreeMap<String, Spanned<RawPrincipal>>,
    #[serde(default)]
    roles: BTreeMap<String, Spanned<RawRole>>,
    jwt: Option<Spanned<JwtSettings>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    password: Spanned<String>,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    global: Vec<Spanned<String>>,
    #[serde(default)]
    default_path: Vec<Spanned<String>>,
    #[serde(default)]
    paths: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    isolated: Vec<Spanned<String>>,
    #[serde(default)]
    includes: Vec<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    connections: Option<usize>,
    topics: Option<usize>,
    views: Option<usize>,
    selectors: Option<usize>,
    requests_per_second: Option<u32>,
}

/// Builds errors with line numbers from byte spans of one file.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> SecurityFileError {
        SecurityFileError {
            file: self.file.to_owned(),
            line: self.line_of(span.start),
            message: message.into(),
        }
    }
}

impl SecurityStore {
    /// Parses and checks a security file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, SecurityFileError> {
        let at = Locator { file, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            at.error(span, e.message().trim().to_owned())
        })?;
        let mut store = Self::default();
        let role_names: HashSet<&str> = raw.roles.keys().map(String::as_str).collect();
        let known_role = |name: &Spanned<String>| -> Result<String, SecurityFileError> {
            if role_names.contains(name.get_ref().as_str()) {
                Ok(name.get_ref().clone())
            } else {
                Err(at.error(
                    name.span(),
                    format!(
                        "unknown role '{}': define it as [roles.{}]",
                        name.get_ref(),
                        name.get_ref()
                    ),
                ))
            }
        };
        if raw.roles.len() > MAX_ENTRIES || raw.principals.len() > MAX_ENTRIES {
            return Err(at.error(0..0, format!("more than {MAX_ENTRIES} roles or principals")));
        }

        for (name, role) in &raw.roles {
            let span = role.span();
            let role = role.get_ref();
            let mut rules = RoleRules {
                global: role
                    .global
                    .iter()
                    .map(|p| global_permission(&at, p))
                    .collect::<Result<_, _>>()?,
                default_path: path_permissions(&at, &role.default_path)?,
                limits: RoleLimits {
                    connections: role.limits.connections,
                    topics: role.limits.topics,
                    views: role.limits.views,
                    selectors: role.limits.selectors,
                    requests_per_second: role.limits.requests_per_second,
                },
                ..RoleRules::default()
            };
            for (path, permissions) in &role.paths {
                let canonical = canonical_path(&at, permissions.span(), path)?;
                rules.paths.insert(
                    canonical.into(),
                    path_permissions(&at, permissions.get_ref())?,
                );
            }
            for path in &role.isolated {
                let canonical = canonical_path(&at, path.span(), path.get_ref())?;
                rules.isolated.insert(canonical.into());
            }
            if rules.paths.len() + rules.isolated.len() > MAX_ENTRIES {
                return Err(at.error(
                    span,
                    format!("role '{name}' has more than {MAX_ENTRIES} paths"),
                ));
            }
            let includes = role
                .includes
                .iter()
                .map(&known_role)
                .collect::<Result<Vec<_>, _>>()?;
            store.roles.insert(name.clone(), Arc::new(rules));
            store.includes.insert(name.clone(), includes);
        }
        check_no_cycles(&at, &raw.roles)?;

        for (name, entry) in &raw.principals {
            if name.is_empty() || name == ANONYMOUS {
                return Err(at.error(
                    entry.span(),
                    format!("'{name}' cannot be a principal's name (anonymous sessions go by {ANONYMOUS})"),
                ));
            }
            let principal = entry.get_ref();
            check_password_hash(&at, name, &principal.password)?;
            let roles = principal
                .roles
                .iter()
                .map(&known_role)
                .collect::<Result<Vec<_>, _>>()?;
            store.principals.insert(
                name.clone(),
                Principal {
                    password_hash: principal.password.get_ref().clone(),
                    roles,
                },
            );
        }
        if let Some(anonymous) = &raw.anonymous {
            let roles = anonymous
                .iter()
                .map(&known_role)
                .collect::<Result<Vec<_>, _>>()?;
            store.anonymous = (!roles.is_empty()).then_some(roles);
        }
        if let Some(jwt) = &raw.jwt {
            let settings = jwt.get_ref();
            if settings.hs256_secret_env.is_none()
                && settings.rs256_public_key_file.is_none()
                && settings.es256_public_key_file.is_none()
                && settings.jwks_file.is_none()
            {
                return Err(at.error(
                    jwt.span(),
                    "[jwt] needs a key: hs256_secret_env, rs256_public_key_file, es256_public_key_file or jwks_file",
                ));
            }
            if settings.leeway_seconds > 300 {
                return Err(at.error(jwt.span(), "[jwt] leeway_seconds must be at most 300"));
            }
            store.jwt = Some(settings.clone());
        }
        Ok(store)
    }

    /// The roles of anonymous sessions; `None` when anonymous sessions are refused.
    pub fn anonymous_roles(&self) -> Option<&[String]> {
        self.anonymous.as_deref()
    }

    /// The principal with this name, if the file defines it.
    pub fn principal(&self, name: &str) -> Option<&Principal> {
        self.principals.get(name)
    }

    /// Token settings, when tokens are accepted.
    pub fn jwt(&self) -> Option<&JwtSettings> {
        self.jwt.as_ref()
    }

    /// Whether a role of this name is defined.
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.contains_key(name)
    }

    /// The grant of these roles with every role they include; names the store does not define
    /// (say, in a token) give nothing.
    pub fn grant<S: AsRef<str>>(&self, roles: &[S]) -> Grant {
        let mut seen = HashSet::new();
        let mut flat = Vec::new();
        let mut stack: Vec<&str> = roles.iter().map(AsRef::as_ref).collect();
        while let Some(name) = stack.pop() {
            if !seen.insert(name.to_owned()) {
                continue;
            }
            if let Some((key, rules)) = self.roles.get_key_value(name) {
                flat.push(Arc::clone(rules));
                if let Some(included) = self.includes.get(key) {
                    stack.extend(included.iter().map(String::as_str));
                }
            }
        }
        Grant::of_roles(flat)
    }
}

/// A permission kind as the file names it, for one parser of both kinds.
trait PermissionName: Copy + 'static {
    /// "global" or "path".
    const KIND: &'static str;
    /// Where the file takes permissions of this kind.
    const KEYS: &'static str;
    /// Every permission of the kind.
    const EVERY: &'static [Self];
    fn name(self) -> &'static str;
}

impl PermissionName for GlobalPermission {
    const KIND: &'static str = "global";
    const KEYS: &'static str = "global";
    const EVERY: &'static [Self] = &GlobalPermission::ALL;
    fn name(self) -> &'static str {
        GlobalPermission::name(self)
    }
}

impl PermissionName for PathPermission {
    const KIND: &'static str = "path";
    const KEYS: &'static str = "default_path or paths";
    const EVERY: &'static [Self] = &PathPermission::ALL;
    fn name(self) -> &'static str {
        PathPermission::name(self)
    }
}

/// A permission of kind `P`; a name of the other kind `O` gets a hint where it belongs.
fn permission<P: PermissionName, O: PermissionName>(
    at: &Locator<'_>,
    name: &Spanned<String>,
) -> Result<P, SecurityFileError> {
    let text = name.get_ref();
    P::EVERY
        .iter()
        .copied()
        .find(|p| p.name() == text)
        .ok_or_else(|| {
            let hint = if O::EVERY.iter().any(|o| o.name() == text) {
                format!(" (a {} permission: put it in {})", O::KIND, O::KEYS)
            } else {
                let names: Vec<&str> = P::EVERY.iter().map(|p| p.name()).collect();
                format!("; {} permissions are {}", P::KIND, names.join(", "))
            };
            at.error(
                name.span(),
                format!("unknown {} permission '{text}'{hint}", P::KIND),
            )
        })
}

fn global_permission(
    at: &Locator<'_>,
    name: &Spanned<String>,
) -> Result<GlobalPermission, SecurityFileError> {
    permission::<GlobalPermission, PathPermission>(at, name)
}

fn path_permissions(
    at: &Locator<'_>,
    names: &[Spanned<String>],
) -> Result<PathPermissions, SecurityFileError> {
    names
        .iter()
        .map(|name| permission::<PathPermission, GlobalPermission>(at, name))
        .collect()
}

fn canonical_path(
    at: &Locator<'_>,
    span: Range<usize>,
    path: &str,
) -> Result<String, SecurityFileError> {
    TopicPath::parse(path)
        .map(|p| p.as_str().to_owned())
        .map_err(|e| at.error(span, format!("path '{path}': {e}")))
}

/// A password must be an argon2id PHC string: anything else is most likely a clear-text
/// password that must never sit in a file.
fn check_password_hash(
    at: &Locator<'_>,
    principal: &str,
    password: &Spanned<String>,
) -> Result<(), SecurityFileError> {
    let text = password.get_ref();
    let parsed = argon2::password_hash::phc::PasswordHash::new(text);
    let ok = text.starts_with("$argon2id$")
        && parsed.is_ok_and(|hash| hash.algorithm.as_str() == "argon2id" && hash.hash.is_some());
    if ok {
        return Ok(());
    }
    Err(at.error(
        password.span(),
        format!(
            "principal '{principal}': password must be an argon2id PHC string ($argon2id$v=19$...), never a clear-text password; make one with `topic-cli security hash-password`"
        ),
    ))
}

/// Refuses a cycle of included roles, naming the include that closes it.
fn check_no_cycles(
    at: &Locator<'_>,
    roles: &BTreeMap<String, Spanned<RawRole>>,
) -> Result<(), SecurityFileError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    for start in roles.keys() {
        if marks.contains_key(start.as_str()) {
            continue;
        }
        // Iterative depth-first search: (role, index of the next include to follow).
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        marks.insert(start.as_str(), Mark::Visiting);
        while let Some((role, next)) = stack.last_mut() {
            let includes = roles.get(*role).map(|r| &r.get_ref().includes);
            let Some(include) = includes.and_then(|list| list.get(*next)) else {
                marks.insert(role, Mark::Done);
                stack.pop();
                continue;
            };
            *next += 1;
            let target = include.get_ref().as_str();
            match marks.get(target) {
                Some(Mark::Visiting) => {
                    let mut chain: Vec<&str> = stack.iter().map(|(r, _)| *r).collect();
                    let from = chain.iter().position(|r| *r == target).unwrap_or(0);
                    chain.drain(..from);
                    chain.push(target);
                    return Err(at.error(
                        include.span(),
                        format!(
                            "roles include each other in a cycle: {}",
                            chain.join(" -> ")
                        ),
                    ));
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some((key, _)) = roles.get_key_value(target) {
                        marks.insert(key.as_str(), Mark::Visiting);
                        stack.push((key.as_str(), 0));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An argon2id hash of "secret" (the argon2 crate's default parameters).
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$aI9Zn2cIdeGCtSvXK9qLPw$4HKv3n2VrvWP0w8/P/lWw2SXK4l3eFwWg8HjnCUMEyM";

    fn parse(text: &str) -> Result<SecurityStore, SecurityFileError> {
        SecurityStore::parse("sec.toml", text)
    }

    #[test]
    fn a_complete_file_loads_and_roles_include_each_other() {
        let text = format!(
            r#"
anonymous = ["CLIENT"]

[principals.admin]
password = "{HASH}"
roles = ["ADMINISTRATOR"]

[roles.CLIENT]
paths = {{ "redis" = ["SELECT_TOPIC", "READ_TOPIC"] }}

[roles.ADMINISTRATOR]
global = ["MODIFY_TOPIC_VIEWS", "READ_TOPIC_VIEWS"]
default_path = ["SELECT_TOPIC", "READ_TOPIC", "UPDATE_TOPIC", "MODIFY_TOPIC"]
isolated = ["secret"]
includes = ["CLIENT"]

[roles.ADMINISTRATOR.limits]
selectors = 100

[jwt]
hs256_secret_env = "JWT_SECRET"
audience = ["topics"]
"#
        );
        let store = parse(&text).unwrap();
        assert_eq!(store.anonymous_roles(), Some(&["CLIENT".to_owned()][..]));
        let admin = store.principal("admin").unwrap();
        assert_eq!(admin.roles, ["ADMINISTRATOR"]);
        let grant = store.grant(&admin.roles);
        assert!(grant.allows(PathPermission::ModifyTopic, "x/y"));
        assert!(grant.allows(PathPermission::ReadTopic, "redis/bitcoin"));
        assert!(!grant.allows(PathPermission::ReadTopic, "secret/x"));
        assert!(grant.allows_global(GlobalPermission::ModifyTopicViews));
        assert_eq!(grant.limits().selectors, Some(100));
        let client = store.grant(&["CLIENT"]);
        assert!(client.allows(PathPermission::SelectTopic, "redis"));
        assert!(!client.allows(PathPermission::UpdateTopic, "redis/x"));
        assert!(!client.allows(PathPermission::ReadTopic, "other"));
        assert_eq!(store.grant(&["NOT_A_ROLE"]).at("x"), PathPermissions::NONE);
        assert_eq!(store.jwt().unwrap().roles_claim, "roles");
    }

    #[test]
    fn anonymous_absent_or_empty_refuses_anonymous_sessions() {
        assert_eq!(parse("").unwrap().anonymous_roles(), None);
        assert_eq!(parse("anonymous = []").unwrap().anonymous_roles(), None);
    }

    #[test]
    fn mistakes_are_refused_with_their_line() {
        let cases = [
            ("anonymous = []\nunknown_key = 1\n", 2, "unknown field"),
            (
                "[roles.A]\nglobal = [\"READ_TOPIC\"]\n",
                2,
                "a path permission",
            ),
            (
                "[roles.A]\n\ndefault_path = [\"READ_TOPICS\"]\n",
                3,
                "unknown path permission 'READ_TOPICS'",
            ),
            (
                "[roles.A]\npaths = { \"a\" = [\"MODIFY_TOPIC_VIEWS\"] }\n",
                2,
                "a global permission",
            ),
            (
                "[roles.A]\nincludes = [\"B\"]\n[roles.B]\nincludes = [\"C\"]\n[roles.C]\nincludes = [\"A\"]\n",
                6,
                "cycle: A -> B -> C -> A",
            ),
            ("[roles.A]\nincludes = [\"A\"]\n", 2, "cycle: A -> A"),
            ("[roles.A]\nincludes = [\"B\"]\n", 2, "unknown role 'B'"),
            ("anonymous = [\"NOBODY\"]\n", 1, "unknown role 'NOBODY'"),
            (
                "[principals.p]\nroles = []\npassword = \"hunter2\"\n",
                3,
                "never a clear-text password",
            ),
            (
                "[principals.p]\npassword = \"$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$abc\"\n",
                2,
                "argon2id PHC string",
            ),
            (
                "[principals.p]\npassword = \"$argon2id$v=19$garbage\"\n",
                2,
                "argon2id PHC string",
            ),
            ("[roles.A]\nlimits = { sockets = 1 }\n", 2, "unknown field"),
            ("[roles.A]\nisolated = [\"/a//b\"]\n", 2, "path '/a//b'"),
            ("[jwt]\nroles_claim = \"r\"\n", 1, "needs a key"),
            (
                "[jwt]\nhs256_secret_env = \"S\"\nleeway_seconds = 9999\n",
                1,
                "at most 300",
            ),
            ("[jwt]\nhs256_secret = \"inline\"\n", 2, "unknown field"),
            (
                "[principals.ANONYMOUS]\npassword = \"x\"\n",
                1,
                "cannot be a principal",
            ),
        ];
        for (text, line, needle) in cases {
            let error = parse(text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert_eq!(error.line, line, "{text}: {error}");
            assert!(error.to_string().contains(needle), "{text}: {error}");
            assert!(
                error.to_string().starts_with(&format!("sec.toml:{line}: ")),
                "{error}"
            );
        }
    }
}
