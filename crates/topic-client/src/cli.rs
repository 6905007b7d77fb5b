//! The identity flags every command-line client of the topic server takes (`topic-cli`,
//! `backend-app`), with the `clap` feature: one definition, so the flags, their environment
//! variables and the rules between them are the same in every binary.

use std::path::PathBuf;

use clap::Args;
use diffusion_core::protocol::Credentials;

use crate::ConnectOptions;

/// Who to authenticate as and which CA to trust: `--principal` with `--credentials`, or
/// `--token`, or neither (anonymous); `--ca-file` for `wss://`. Secrets are best given through
/// the environment: command-line arguments are visible to other local users.
#[derive(Clone, Default, PartialEq, Eq, Args)]
pub struct IdentityArgs {
    /// Principal (user name) to authenticate as, with --credentials; anonymous when neither
    /// this nor --token is given.
    #[arg(long, env = "TOPIC_PRINCIPAL", global = true)]
    pub principal: Option<String>,
    /// Credentials (password) for the principal. Prefer the environment variable: command-line
    /// arguments are visible to other local users.
    #[arg(long, env = "TOPIC_CREDENTIALS", hide_env_values = true, global = true)]
    pub credentials: Option<String>,
    /// A signed token (JWT) to authenticate with, instead of a principal and password. Prefer
    /// the environment variable: command-line arguments are visible to other local users.
    #[arg(long, env = "TOPIC_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM file of CA certificates to trust for wss:// URLs, besides the public web roots (for
    /// a server certificate signed by a private CA).
    #[arg(long, env = "TOPIC_CA_FILE", value_name = "PEM", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// A combination of identity flags that names no single identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// `--token` together with `--principal` or `--credentials`.
    #[error(
        "--token (TOPIC_TOKEN) cannot be combined with --principal (TOPIC_PRINCIPAL) or --credentials (TOPIC_CREDENTIALS)"
    )]
    TokenAndPassword,
    /// `--principal` without `--credentials`.
    #[error("--principal needs --credentials (or TOPIC_CREDENTIALS)")]
    PrincipalWithoutCredentials,
    /// `--credentials` without `--principal`.
    #[error("--credentials needs --principal (or TOPIC_PRINCIPAL)")]
    CredentialsWithoutPrincipal,
}

impl IdentityArgs {
    /// The connect options these flags name.
    ///
    /// The rules are checked here rather than by clap: clap's `requires` does not see a global
    /// flag given before a subcommand when its partner comes from the environment. Binaries call
    /// this only when they connect, so a stray variable does not break an offline command.
    pub fn connect_options(&self) -> Result<ConnectOptions, IdentityError> {
        let credentials = match (&self.token, &self.principal, &self.credentials) {
            (None, None, None) => Credentials::Anonymous,
            (Some(token), None, None) => Credentials::Token(token.clone()),
            (None, Some(principal), Some(password)) => Credentials::Password {
                principal: principal.clone(),
                password: password.clone(),
            },
            (Some(_), _, _) => return Err(IdentityError::TokenAndPassword),
            (None, Some(_), None) => return Err(IdentityError::PrincipalWithoutCredentials),
            (None, None, Some(_)) => return Err(IdentityError::CredentialsWithoutPrincipal),
        };
        Ok(ConnectOptions {
            credentials,
            ca_file: self.ca_file.clone(),
        })
    }
}

impl std::fmt::Debug for IdentityArgs {
    // Parsed flags end up in logs (`Debug` of a whole configuration): never the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<hidden>");
        f.debug_struct("IdentityArgs")
            .field("principal", &self.principal)
            .field("credentials", &hidden(&self.credentials))
            .field("token", &hidden(&self.token))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        principal: Option<&str>,
        credentials: Option<&str>,
        token: Option<&str>,
    ) -> IdentityArgs {
        IdentityArgs {
            principal: principal.map(str::to_owned),
            credentials: credentials.map(str::to_owned),
            token: token.map(str::to_owned),
            ca_file: Some(PathBuf::from("ca.pem")),
        }
    }

    #[test]
    fn each_flag_combination_names_one_identity_or_is_refused() {
        let options = |a: IdentityArgs| a.connect_options().map(|o| o.credentials);
        assert_eq!(options(args(None, None, None)), Ok(Credentials::Anonymous));
        assert_eq!(
            options(args(None, None, Some("t"))),
            Ok(Credentials::Token("t".to_owned()))
        );
        assert_eq!(
            options(args(Some("p"), Some("pw"), None)),
            Ok(Credentials::Password {
                principal: "p".to_owned(),
                password: "pw".to_owned()
            })
        );
        assert_eq!(
            options(args(Some("p"), None, Some("t"))),
            Err(IdentityError::TokenAndPassword)
        );
        assert_eq!(
            options(args(Some("p"), None, None)),
            Err(IdentityError::PrincipalWithoutCredentials)
        );
        assert_eq!(
            options(args(None, Some("pw"), None)),
            Err(IdentityError::CredentialsWithoutPrincipal)
        );
        let ca = args(None, None, None).connect_options().unwrap().ca_file;
        assert_eq!(ca, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn debug_hides_the_secrets() {
        let shown = format!("{:?}", args(Some("alice"), Some("hunter2"), Some("jwt")));
        assert!(shown.contains("alice"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("jwt"),
            "{shown}"
        );
    }
}
