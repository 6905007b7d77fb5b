//! The security model (docs/security.md): principals authenticate and get roles; roles hold
//! global and path permissions and may include other roles; a session's [`Grant`] answers
//! "may it do this here?". Pure: reading the file, checking passwords and tokens happen in the
//! server; this module parses and evaluates.

mod grant;
mod permissions;
mod store;

pub use grant::{Grant, RoleLimits, RoleRules};
pub use permissions::{GlobalPermission, GlobalPermissions, PathPermission, PathPermissions};
pub use store::{ANONYMOUS, JwtSettings, Principal, SecurityFileError, SecurityStore};
