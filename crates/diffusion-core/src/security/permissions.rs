//! The permission names of the security model (docs/security.md §2): four path permissions,
//! checked against a topic path, and the global ones, held or not by a session as a whole.
//! Both kinds are small bit sets, so checking one costs a mask.

use std::fmt;

/// A permission checked against a topic path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathPermission {
    /// Subscribe with a selector (checked at the selector's path prefix).
    SelectTopic,
    /// Receive or fetch a topic.
    ReadTopic,
    /// Set a topic's value.
    UpdateTopic,
    /// Add or remove a topic; be the target of a view's reference topic.
    ModifyTopic,
}

impl PathPermission {
    /// Every path permission, in documentation order.
    pub const ALL: [PathPermission; 4] = [
        Self::SelectTopic,
        Self::ReadTopic,
        Self::UpdateTopic,
        Self::ModifyTopic,
    ];

    /// The name used in security files and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::SelectTopic => "SELECT_TOPIC",
            Self::ReadTopic => "READ_TOPIC",
            Self::UpdateTopic => "UPDATE_TOPIC",
            Self::ModifyTopic => "MODIFY_TOPIC",
        }
    }

    /// The permission with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for PathPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A permission a session holds everywhere (not tied to a path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlobalPermission {
    /// Create and remove topic views.
    ModifyTopicViews,
    /// List topic views.
    ReadTopicViews,
    /// See other sessions (reserved for session-management operations).
    ViewSession,
    /// Change or close other sessions (reserved).
    ModifySession,
    /// Control the server (reserved).
    ControlServer,
    /// Read the server's state (reserved).
    ViewServer,
    /// Change the security store at run time (reserved: the store is a file).
    ModifySecurity,
    /// Read the security store (reserved).
    ViewSecurity,
    /// Authenticate other sessions (reserved).
    Authenticate,
}

impl GlobalPermission {
    /// Every global permission, in documentation order.
    pub const ALL: [GlobalPermission; 9] = [
        Self::ModifyTopicViews,
        Self::ReadTopicViews,
        Self::ViewSession,
        Self::ModifySession,
        Self::ControlServer,
        Self::ViewServer,
        Self::ModifySecurity,
        Self::ViewSecurity,
        Self::Authenticate,
    ];

    /// The name used in security files and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::ModifyTopicViews => "MODIFY_TOPIC_VIEWS",
            Self::ReadTopicViews => "READ_TOPIC_VIEWS",
            Self::ViewSession => "VIEW_SESSION",
            Self::ModifySession => "MODIFY_SESSION",
            Self::ControlServer => "CONTROL_SERVER",
            Self::ViewServer => "VIEW_SERVER",
            Self::ModifySecurity => "MODIFY_SECURITY",
            Self::ViewSecurity => "VIEW_SECURITY",
            Self::Authenticate => "AUTHENTICATE",
        }
    }

    /// The permission with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for GlobalPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of path permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PathPermissions(u8);

impl PathPermissions {
    /// No permission.
    pub const NONE: Self = Self(0);
    /// Every path permission.
    pub const ALL: Self = Self(0b1111);

    /// Whether `permission` is in the set.
    pub fn contains(self, permission: PathPermission) -> bool {
        self.0 & permission.bit() != 0
    }

    /// The set with `permission` added.
    pub fn with(self, permission: PathPermission) -> Self {
        Self(self.0 | permission.bit())
    }

    /// Both sets together.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl FromIterator<PathPermission> for PathPermissions {
    fn from_iter<I: IntoIterator<Item = PathPermission>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

/// A set of global permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct GlobalPermissions(u16);

impl GlobalPermissions {
    /// No permission.
    pub const NONE: Self = Self(0);
    /// Every global permission.
    pub const ALL: Self = Self(0b1_1111_1111);

    /// Whether `permission` is in the set.
    pub fn contains(self, permission: GlobalPermission) -> bool {
        self.0 & permission.bit() != 0
    }

    /// The set with `permission` added.
    pub fn with(self, permission: GlobalPermission) -> Self {
        Self(self.0 | permission.bit())
    }

    /// Both sets together.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl FromIterator<GlobalPermission> for GlobalPermissions {
    fn from_iter<I: IntoIterator<Item = GlobalPermission>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_all_sets_hold_everything() {
        for p in PathPermission::ALL {
            assert_eq!(PathPermission::from_name(p.name()), Some(p));
            assert!(PathPermissions::ALL.contains(p));
            assert!(!PathPermissions::NONE.contains(p));
        }
        for g in GlobalPermission::ALL {
            assert_eq!(GlobalPermission::from_name(g.name()), Some(g));
            assert!(GlobalPermissions::ALL.contains(g));
            assert!(!GlobalPermissions::NONE.contains(g));
        }
        assert_eq!(PathPermission::from_name("read_topic"), None);
    }
}
