//! TLS set-up shared by every tier, with rustls and its `ring` provider (no C build):
//!
//! - servers load a PEM certificate chain and a PEM private key ([`server_config`],
//!   [`acceptor`]) and hand the acceptor to the shared accept loop
//!   ([`crate::http_server::serve_counted_tls`]);
//! - clients (`wss://`, `rediss://`) trust the public web roots plus, for private CAs, the
//!   certificates of a PEM CA file ([`client_config`], [`root_store`]).
//!
//! Every error names the file it is about, so an operator sees at start-up which flag is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read or holds no PEM item of the expected kind.
    #[error("{what} {path}: {source}")]
    Pem {
        /// What the file was meant to hold ("certificate chain", "private key", "CA file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong reading it.
        #[source]
        source: pem::Error,
    },
    /// The file has PEM items, but none of the expected kind.
    #[error("{what} {path}: no {expected} found in the file")]
    Empty {
        /// What the file was meant to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM item that was looked for (e.g. "CERTIFICATE").
        expected: &'static str,
    },
    /// A certificate without its key, or a key without its certificate.
    #[error("{0}")]
    HalfConfigured(&'static str),
    /// A CA certificate that rustls cannot use as a trust anchor.
    #[error("CA file {path}: certificate {index} is not a usable trust anchor: {source}")]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The crypto provider supports none of rustls' safe protocol versions (not expected with
    /// ring; reported rather than assumed).
    #[error("TLS set-up: {0}")]
    Provider(#[source] rustls::Error),
    /// rustls refused the certificate chain and key (e.g. the key does not match the
    /// certificate, or its algorithm is not supported).
    #[error("certificate {cert} with key {key}: {source}")]
    Config {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

/// Installs ring as the process-wide rustls provider, for libraries that build their TLS
/// configuration from the process default (the redis crate for `rediss://`, reqwest).
/// Idempotent: a provider installed earlier is kept.
pub fn install_default_provider() {
    // Err means a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The one crypto provider of the platform (ring), passed explicitly so no process-wide default
/// has to be installed first.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (a server's chain, leaf first; or CA certificates).
fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certificates)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::Empty {
            what: "private key",
            path: path.to_owned(),
            expected: "PRIVATE KEY",
        },
        source => TlsError::Pem {
            what: "private key",
            path: path.to_owned(),
            source,
        },
    })
}

/// A server configuration from a PEM certificate chain (leaf first) and its PEM private key.
/// It speaks HTTP/1.1 only (ALPN `http/1.1`), as the shared accept loop does.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certificates(cert, "certificate chain")?;
    let private_key = read_private_key(key)?;
    let config_error = |source| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS acceptor for [`crate::http_server::serve_counted_tls`], from the files of
/// `--tls-cert` and `--tls-key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config(cert, key)?))
}

/// The certificate and key files of `--tls-cert` and `--tls-key`, when TLS is configured; half
/// a configuration is refused (clap enforces this for a command line; this catches
/// configurations built in code).
pub fn tls_files<'a>(
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
) -> Result<Option<(&'a Path, &'a Path)>, TlsError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsError::HalfConfigured(
            "--tls-cert needs --tls-key (the certificate's private key)",
        )),
        (None, Some(_)) => Err(TlsError::HalfConfigured(
            "--tls-key needs --tls-cert (the certificate chain)",
        )),
    }
}

/// The acceptor of a server's `--tls-cert` and `--tls-key`: `None` without TLS.
pub fn optional_acceptor(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<TlsAcceptor>, TlsError> {
    tls_files(cert, key)?
        .map(|(cert, key)| acceptor(cert, key))
        .transpose()
}

/// The trust anchors of a client: the public web roots (webpki-roots, so no system CA bundle is
/// needed) plus every certificate of `ca_file`, when given, for private CAs.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for (index, certificate) in read_certificates(path, "CA file")?.into_iter().enumerate() {
            roots.add(certificate).map_err(|source| TlsError::BadCa {
                path: path.to_owned(),
                index: index + 1,
                source,
            })?;
        }
    }
    Ok(roots)
}

/// The client configuration for `wss://` connections (topic-client, topic-cli, backend-app,
/// the feeder): server certificates are verified against the public web roots plus the PEM CA
/// file of `--ca-file`, when given. No client certificate is sent.
///
/// This signature is used by other crates; keep it stable.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(ca_file)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::TestPki;

    #[test]
    fn a_generated_certificate_and_key_load() {
        let pki = TestPki::generate().unwrap();
        server_config(&pki.cert_file(), &pki.key_file()).unwrap();
        acceptor(&pki.cert_file(), &pki.key_file()).unwrap();
        let with_ca = root_store(Some(&pki.ca_file())).unwrap();
        let without = root_store(None).unwrap();
        assert_eq!(with_ca.len(), without.len() + 1);
        client_config(Some(&pki.ca_file())).unwrap();
    }

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let pki = TestPki::generate().unwrap();
        let missing = pki.dir().join("nope.pem");
        let error = server_config(&missing, &pki.key_file()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("certificate chain"), "{text}");
        assert!(text.contains("nope.pem"), "{text}");
        let error = server_config(&pki.cert_file(), &missing).unwrap_err();
        assert!(error.to_string().contains("private key"), "{error}");
        let error = client_config(Some(&missing)).unwrap_err();
        assert!(error.to_string().starts_with("CA file"), "{error}");
    }

    #[test]
    fn swapped_or_empty_files_are_refused_with_what_was_expected() {
        let pki = TestPki::generate().unwrap();
        // A key where the certificate should be, and the other way round.
        let error = server_config(&pki.key_file(), &pki.key_file()).unwrap_err();
        assert!(matches!(error, TlsError::Empty { .. }), "{error}");
        assert!(error.to_string().contains("no CERTIFICATE"), "{error}");
        let error = server_config(&pki.cert_file(), &pki.cert_file()).unwrap_err();
        assert!(error.to_string().contains("no PRIVATE KEY"), "{error}");
        let empty = pki.dir().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = root_store(Some(&empty)).unwrap_err();
        assert!(error.to_string().contains("empty.pem"), "{error}");
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let pki = TestPki::generate().unwrap();
        let other = TestPki::generate().unwrap();
        let error = server_config(&pki.cert_file(), &other.key_file()).unwrap_err();
        assert!(matches!(error, TlsError::Config { .. }), "{error}");
    }
}
