//! Opening Redis clients from a URL, `redis://` or `rediss://` (TLS), in one place for every
//! tier: a `rediss://` server is verified against the public web roots, or — with a CA file
//! (`--redis-ca-file`) — against that private CA only.

use std::path::{Path, PathBuf};

use crate::tls::{self, TlsError};

/// Why a Redis client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisClientError {
    /// The URL was refused by the redis crate (malformed, unknown scheme, bad database).
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// A CA file was given for a URL that does not use TLS.
    #[error("a Redis CA file ({0}) only applies to rediss:// URLs; this URL is not one")]
    CaWithoutTls(PathBuf),
    /// The CA file could not be read or holds no usable certificate.
    #[error(transparent)]
    Ca(#[from] TlsError),
    /// The CA file was readable a moment ago but not now.
    #[error("CA file {path}: {source}")]
    CaRead {
        /// The CA file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
}

/// A client for `url` (`redis://…` or `rediss://…`). With `ca_file`, the server's certificate
/// must chain to a certificate in that PEM file. Does not connect.
pub fn client(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, RedisClientError> {
    tls::install_default_provider();
    let Some(ca_file) = ca_file else {
        return redis::Client::open(url).map_err(RedisClientError::Url);
    };
    if !url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("rediss://")
    {
        return Err(RedisClientError::CaWithoutTls(ca_file.to_owned()));
    }
    // Checked here first, so a bad file is reported with its name and the reason.
    tls::root_store(Some(ca_file))?;
    let root_cert = std::fs::read(ca_file).map_err(|source| RedisClientError::CaRead {
        path: ca_file.to_owned(),
        source,
    })?;
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        },
    )
    .map_err(RedisClientError::Url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::{RedisServer, TestPki};

    async fn ping(client: &redis::Client) -> redis::RedisResult<String> {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async(&mut connection).await
    }

    #[tokio::test]
    async fn rediss_with_the_test_ca_connects_and_without_it_is_refused() {
        let pki = TestPki::generate().unwrap();
        let redis = RedisServer::start_tls(&pki).await.unwrap();
        assert!(redis.url().starts_with("rediss://"));

        let trusting = client(&redis.url(), Some(&pki.ca_file())).unwrap();
        assert_eq!(ping(&trusting).await.unwrap(), "PONG");

        // The public roots alone do not know the test CA: the handshake fails.
        let public_roots = client(&redis.url(), None).unwrap();
        let error = ping(&public_roots).await.unwrap_err();
        let text = error.to_string().to_lowercase();
        assert!(text.contains("certificate"), "{text}");

        // A plain client cannot talk to a TLS-only server either.
        let plain = client(&redis.url().replace("rediss://", "redis://"), None).unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), ping(&plain))
                .await
                .map_or(true, |result| result.is_err())
        );
    }

    #[test]
    fn a_ca_file_needs_a_tls_url_and_a_good_file() {
        let pki = TestPki::generate().unwrap();
        let error = client("redis://127.0.0.1:1/", Some(&pki.ca_file())).unwrap_err();
        assert!(
            matches!(error, RedisClientError::CaWithoutTls(_)),
            "{error}"
        );
        let missing = pki.dir().join("missing.pem");
        let error = client("rediss://localhost:1/", Some(&missing)).unwrap_err();
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let error = client("nonsense", None).unwrap_err();
        assert!(
            error.to_string().starts_with("invalid Redis URL"),
            "{error}"
        );
        client("rediss://localhost:1/", None).unwrap();
    }
}
