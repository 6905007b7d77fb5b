//! What a session may do: the union of its roles' permissions (role inclusion flattened),
//! evaluated with the reference's rules. For one role at a path, the most specific path with
//! an assignment wins, without merging with its ancestors; a path marked isolated, without an
//! assignment of its own, gives nothing and stops the search (so neither an ancestor's
//! assignment nor the default reaches below it); where no assignment applies, the role's
//! default path permissions do. A session's permission at a path is the union over its roles.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::permissions::{GlobalPermission, GlobalPermissions, PathPermission, PathPermissions};

/// One role's own rules (not those of the roles it includes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleRules {
    /// Global permissions.
    pub global: GlobalPermissions,
    /// Path permissions where no path assignment (and no isolation) applies.
    pub default_path: PathPermissions,
    /// Path assignments, by canonical topic path.
    pub paths: HashMap<Box<str>, PathPermissions>,
    /// Paths that do not inherit from their ancestors or the default.
    pub isolated: HashSet<Box<str>>,
    /// Limits for sessions holding this role (`None`: not set here).
    pub limits: RoleLimits,
}

impl RoleRules {
    /// This role's path permissions at `path` (a canonical topic path, or a selector's path
    /// prefix; `""` is the root).
    pub fn at(&self, path: &str) -> PathPermissions {
        if self.paths.is_empty() && self.isolated.is_empty() {
            return self.default_path;
        }
        let mut end = path.len();
        while end > 0 {
            let prefix = &path[..end];
            if let Some(permissions) = self.paths.get(prefix) {
                return *permissions;
            }
            if self.isolated.contains(prefix) {
                return PathPermissions::NONE;
            }
            end = prefix.rfind('/').unwrap_or(0);
        }
        self.default_path
    }
}

/// Limits a role may set for the sessions that hold it, overriding the server's flags. A
/// session holding several roles gets, per limit, the highest any of them sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleLimits {
    /// Open sessions of one principal (anonymous sessions count as one principal).
    pub connections: Option<usize>,
    /// Topics one principal has added that still exist.
    pub topics: Option<usize>,
    /// Views one principal has created that still exist.
    pub views: Option<usize>,
    /// Selectors one session may hold.
    pub selectors: Option<usize>,
    /// Requests one session may make per second (0: unlimited).
    pub requests_per_second: Option<u32>,
}

impl RoleLimits {
    /// Per limit, the higher of the two (a limit set beats one not set).
    pub fn most_generous(self, other: Self) -> Self {
        fn pick<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        }
        // 0 requests per second means unlimited: the most generous of all.
        let rate = match (self.requests_per_second, other.requests_per_second) {
            (Some(0), _) | (_, Some(0)) => Some(0),
            (a, b) => pick(a, b),
        };
        Self {
            connections: pick(self.connections, other.connections),
            topics: pick(self.topics, other.topics),
            views: pick(self.views, other.views),
            selectors: pick(self.selectors, other.selectors),
            requests_per_second: rate,
        }
    }
}

/// The permissions of one session (or of a view, which runs with its creator's): its roles,
/// flattened, with their global permissions and limits combined.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Every role held, included roles too, each once.
    roles: Vec<Arc<RoleRules>>,
    global: GlobalPermissions,
    limits: RoleLimits,
    /// No security store: everything is allowed.
    everything: bool,
}

impl Grant {
    /// Everything allowed: the grant of every session when the server runs without a
    /// security store, and of views loaded from the server's own views file.
    pub fn everything() -> Self {
        Self {
            everything: true,
            global: GlobalPermissions::ALL,
            ..Self::default()
        }
    }

    /// The grant of these roles (already flattened and deduplicated).
    pub fn of_roles(roles: Vec<Arc<RoleRules>>) -> Self {
        let global = roles
            .iter()
            .fold(GlobalPermissions::NONE, |g, r| g.union(r.global));
        let limits = roles
            .iter()
            .fold(RoleLimits::default(), |l, r| l.most_generous(r.limits));
        Self {
            roles,
            global,
            limits,
            everything: false,
        }
    }

    /// Whether this grant allows everything (no security store).
    pub fn is_everything(&self) -> bool {
        self.everything
    }

    /// The path permissions at `path`.
    pub fn at(&self, path: &str) -> PathPermissions {
        if self.everything {
            return PathPermissions::ALL;
        }
        self.roles
            .iter()
            .fold(PathPermissions::NONE, |p, r| p.union(r.at(path)))
    }

    /// Whether `permission` is held at `path`.
    pub fn allows(&self, permission: PathPermission, path: &str) -> bool {
        self.everything || self.roles.iter().any(|r| r.at(path).contains(permission))
    }

    /// Whether the global `permission` is held.
    pub fn allows_global(&self, permission: GlobalPermission) -> bool {
        self.global.contains(permission)
    }

    /// The limits the roles set (unset ones fall back to the server's flags).
    pub fn limits(&self) -> RoleLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathPermission::*;

    fn perms(list: &[PathPermission]) -> PathPermissions {
        list.iter().copied().collect()
    }

    fn role(
        default: &[PathPermission],
        paths: &[(&str, &[PathPermission])],
        isolated: &[&str],
    ) -> RoleRules {
        RoleRules {
            default_path: perms(default),
            paths: paths.iter().map(|(p, l)| ((*p).into(), perms(l))).collect(),
            isolated: isolated.iter().map(|p| (*p).into()).collect(),
            ..RoleRules::default()
        }
    }

    #[test]
    fn the_most_specific_assignment_wins_without_merging() {
        let r = role(
            &[SelectTopic],
            &[("a", &[ReadTopic, UpdateTopic]), ("a/b", &[ReadTopic])],
            &[],
        );
        assert_eq!(r.at("a"), perms(&[ReadTopic, UpdateTopic]));
        assert_eq!(r.at("a/x/y"), perms(&[ReadTopic, UpdateTopic]));
        assert_eq!(r.at("a/b"), perms(&[ReadTopic]));
        assert_eq!(
            r.at("a/b/c"),
            perms(&[ReadTopic]),
            "no UPDATE inherited from a"
        );
        assert_eq!(r.at("ab"), perms(&[SelectTopic]), "a is not a prefix of ab");
        assert_eq!(r.at(""), perms(&[SelectTopic]));
        assert_eq!(r.at("z"), perms(&[SelectTopic]));
    }

    #[test]
    fn an_isolated_path_inherits_nothing() {
        let r = role(
            &[ReadTopic],
            &[
                ("a", &[ReadTopic, SelectTopic]),
                ("a/i/own", &[UpdateTopic]),
            ],
            &["a/i"],
        );
        assert_eq!(r.at("a/i"), PathPermissions::NONE);
        assert_eq!(r.at("a/i/x"), PathPermissions::NONE);
        assert_eq!(r.at("a/i/own/x"), perms(&[UpdateTopic]));
        assert_eq!(r.at("a/j"), perms(&[ReadTopic, SelectTopic]));
        let top = role(&[ReadTopic], &[], &["p"]);
        assert_eq!(top.at("p/q"), PathPermissions::NONE, "not even the default");
        assert_eq!(top.at("q"), perms(&[ReadTopic]));
    }

    #[test]
    fn roles_unite_and_limits_take_the_most_generous() {
        let mut a = role(&[], &[("x", &[ReadTopic])], &[]);
        a.limits.selectors = Some(5);
        a.limits.requests_per_second = Some(10);
        let mut b = role(&[], &[("x", &[UpdateTopic])], &[]);
        b.limits.selectors = Some(50);
        b.global = [GlobalPermission::ReadTopicViews].into_iter().collect();
        let grant = Grant::of_roles(vec![Arc::new(a), Arc::new(b)]);
        assert_eq!(grant.at("x/y"), perms(&[ReadTopic, UpdateTopic]));
        assert!(grant.allows(UpdateTopic, "x"));
        assert!(!grant.allows(ModifyTopic, "x"));
        assert!(grant.allows_global(GlobalPermission::ReadTopicViews));
        assert!(!grant.allows_global(GlobalPermission::ModifyTopicViews));
        assert_eq!(grant.limits().selectors, Some(50));
        assert_eq!(grant.limits().requests_per_second, Some(10));
        assert_eq!(grant.limits().topics, None);
        let open = Grant::everything();
        assert!(open.allows(ModifyTopic, "anything/at/all"));
        assert!(open.allows_global(GlobalPermission::ControlServer));
    }
}
