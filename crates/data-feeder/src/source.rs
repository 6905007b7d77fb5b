//! Where payloads come from: the synthetic generator, or a live JSON API over HTTP(S).
//!
//! Either way a poll yields the body exactly as produced, as `Bytes` to be shared with the sink
//! without copying. An HTTP body is only checked to be JSON, never re-encoded.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::Utc;

use crate::config::SourceSpec;
use crate::synthetic::Synthetic;

/// The largest body accepted from an HTTP source (1 MiB). Index-style APIs answer with a few
/// kilobytes; anything far larger is a misconfigured URL, and it would not pass the bridge.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why one poll produced nothing to publish.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The request failed: connection refused, DNS, TLS, timeout, broken body.
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    /// The server answered with a non-success status.
    #[error("HTTP status {0}")]
    Status(reqwest::StatusCode),
    /// The body exceeded [`MAX_BODY_BYTES`].
    #[error("body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The body is not JSON.
    #[error("body is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The body is not UTF-8 text, so it is not JSON (and could not be a WebSocket text frame).
    #[error("body is not JSON: {0}")]
    NotUtf8(std::str::Utf8Error),
}

/// A configured source, ready to poll.
#[derive(Debug)]
pub enum Source {
    /// The CoinDesk-shaped generator.
    Synthetic(Box<Synthetic>),
    /// A JSON API fetched with GET.
    Http {
        /// The shared HTTP client (connection pool, timeout).
        client: reqwest::Client,
        /// The URL polled.
        url: reqwest::Url,
    },
}

impl Source {
    /// Builds the source for `spec`. The HTTP client gets `timeout` for a whole poll; the
    /// synthetic generator gets `seed` (random if `None`) and its change probability.
    pub fn new(
        spec: &SourceSpec,
        timeout: Duration,
        seed: Option<u64>,
        change_probability: f64,
    ) -> Result<Self, SourceError> {
        match spec {
            SourceSpec::Synthetic => {
                let seed = seed.unwrap_or_else(rand::random);
                Ok(Self::Synthetic(Box::new(Synthetic::new(
                    seed,
                    change_probability,
                ))))
            }
            SourceSpec::Http(url) => {
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .user_agent(concat!("data-feeder/", env!("CARGO_PKG_VERSION")))
                    .build()?;
                Ok(Self::Http {
                    client,
                    url: url.clone(),
                })
            }
        }
    }

    /// One poll: the payload to publish, unchanged, or why there is none.
    pub async fn fetch(&mut self) -> Result<Bytes, SourceError> {
        match self {
            Self::Synthetic(generator) => Ok(generator.next_payload(Utc::now())),
            Self::Http { client, url } => fetch_json(client, url.clone()).await,
        }
    }
}

async fn fetch_json(client: &reqwest::Client, url: reqwest::Url) -> Result<Bytes, SourceError> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        return Err(SourceError::Status(status));
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
    {
        return Err(SourceError::TooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(SourceError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    check_json(&body)?;
    Ok(body)
}

/// Checks that `body` is UTF-8 text holding one JSON value (surrounding whitespace allowed),
/// without building the value.
pub fn check_json(body: &[u8]) -> Result<(), SourceError> {
    // Skipping a value does not validate the UTF-8 inside strings, so check the text first.
    let text = std::str::from_utf8(body).map_err(SourceError::NotUtf8)?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(SourceError::NotJson)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_check() {
        for good in [
            &b"{}"[..],
            b"[1,2]",
            b" {\"a\": [1, 2.5, null]}\n",
            b"42",
            b"\"x\"",
        ] {
            assert!(check_json(good).is_ok(), "{good:?}");
        }
        for bad in [&b""[..], b"<html></html>", b"{\"a\":1", b"{} {}"] {
            assert!(
                matches!(check_json(bad), Err(SourceError::NotJson(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            check_json(b"{\"a\":\"\xff\"}"),
            Err(SourceError::NotUtf8(_))
        ));
    }
}
