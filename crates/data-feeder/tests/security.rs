//! The feeder's security: its control API answers only allowed browser origins and, when a
//! token is configured, only bearers of it; and it publishes through a real, token-guarded
//! redis-ws-bridge (plain and over `wss://`) by presenting the publish token.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use common::{Feeder, Subscriber, WAIT, config, redis_sink};
use data_feeder::{SinkSpec, SourceSpec};
use reqwest::Method;
use service_kit::secret::Secret;
use service_kit::testing::{RedisServer, TestPki};
use tokio_util::sync::CancellationToken;

const DASHBOARD: &str = "http://localhost:8080";
const CONTROL_TOKEN: &str = "control-token-0123456789";
const PUBLISH_TOKEN: &str = "publish-token-0123456789";

fn secret(token: &str) -> Secret {
    Secret::new(token, "test").unwrap()
}

/// A paused feeder (publishing to `redis`) whose control API allows the dashboard's origin and,
/// when given, needs `token`.
async fn guarded_feeder(redis: &RedisServer, token: Option<&str>) -> Feeder {
    let mut config = config(SourceSpec::Synthetic, redis_sink(&redis.url()));
    config.start_paused = true;
    config.allowed_origins = vec![DASHBOARD.to_owned()];
    config.control_token = token.map(secret);
    Feeder::start(config).await
}

/// The JSON body of `response`.
async fn json(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// Sends `method path` with optional `Origin` and bearer token; returns the response.
async fn call(
    feeder: &Feeder,
    method: Method,
    path: &str,
    origin: Option<&str>,
    bearer: Option<&str>,
) -> reqwest::Response {
    let mut request = feeder.http().request(method, feeder.url(path));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_control_api_refuses_foreign_origins_and_serves_the_allowed_one() {
    let redis = RedisServer::start().await.unwrap();
    let feeder = guarded_feeder(&redis, None).await;

    // A foreign page can neither preflight nor fire a simple cross-site POST.
    let preflight = feeder
        .http()
        .request(Method::OPTIONS, feeder.url("/start"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 403);
    let forged = call(
        &feeder,
        Method::POST,
        "/start",
        Some("http://evil.example"),
        None,
    )
    .await;
    assert_eq!(forged.status(), 403);
    assert!(
        forged
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let body: serde_json::Value = json(forged).await;
    assert_eq!(body["error"], "origin not allowed");
    assert_eq!(
        feeder.status().await["running"],
        false,
        "the forged start ran"
    );

    // The dashboard's origin gets CORS answers naming it (never `*`).
    let preflight = feeder
        .http()
        .request(Method::OPTIONS, feeder.url("/interval"))
        .header("origin", DASHBOARD)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        DASHBOARD
    );
    let allowed_headers = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let started = call(&feeder, Method::POST, "/start", Some(DASHBOARD), None).await;
    assert_eq!(started.status(), 200);
    assert_eq!(started.headers()["access-control-allow-origin"], DASHBOARD);
    assert_eq!(feeder.status().await["running"], true);

    // Without an Origin (curl, scripts) the allow-list does not apply.
    assert_eq!(
        call(&feeder, Method::GET, "/status", None, None)
            .await
            .status(),
        200
    );
    feeder.shut_down().await;
}

#[tokio::test]
async fn with_no_allowed_origins_no_browser_may_call_the_api() {
    let redis = RedisServer::start().await.unwrap();
    let mut config = config(SourceSpec::Synthetic, redis_sink(&redis.url()));
    config.start_paused = true;
    let feeder = Feeder::start(config).await;
    let from_dashboard = call(&feeder, Method::GET, "/status", Some(DASHBOARD), None).await;
    assert_eq!(from_dashboard.status(), 403);
    assert_eq!(
        call(&feeder, Method::GET, "/status", None, None)
            .await
            .status(),
        200
    );
    feeder.shut_down().await;
}

#[tokio::test]
async fn a_configured_control_token_is_required() {
    let redis = RedisServer::start().await.unwrap();
    let feeder = guarded_feeder(&redis, Some(CONTROL_TOKEN)).await;

    for (bearer, reason) in [
        (None, "this API needs Authorization: Bearer TOKEN"),
        (Some("control-token-0123456780"), "invalid bearer token"),
    ] {
        for (method, path) in [(Method::GET, "/status"), (Method::POST, "/start")] {
            let refused = call(&feeder, method.clone(), path, Some(DASHBOARD), bearer).await;
            assert_eq!(refused.status(), 401, "{method} {path} {bearer:?}");
            assert_eq!(refused.headers()["www-authenticate"], "Bearer");
            // The dashboard can read why (CORS headers on the refusal too).
            assert_eq!(refused.headers()["access-control-allow-origin"], DASHBOARD);
            let body: serde_json::Value = json(refused).await;
            assert_eq!(body["error"], reason);
        }
    }
    // Health checks need no token.
    let health = call(&feeder, Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status(), 200);

    let status = call(&feeder, Method::GET, "/status", None, Some(CONTROL_TOKEN)).await;
    assert_eq!(status.status(), 200);
    let status: serde_json::Value = json(status).await;
    assert_eq!(
        status["running"], false,
        "a refused start must not have run"
    );
    let started = call(
        &feeder,
        Method::POST,
        "/start",
        Some(DASHBOARD),
        Some(CONTROL_TOKEN),
    )
    .await;
    assert_eq!(started.status(), 200);
    let status: serde_json::Value = json(started).await;
    assert_eq!(status["running"], true);
    // `Feeder::shut_down` checks the feeder stops cleanly.
    feeder.shut_down().await;
}

/// A real bridge in this process, publishing for bearers of [`PUBLISH_TOKEN`].
struct Bridge {
    url: String,
    shutdown: CancellationToken,
}

impl Bridge {
    async fn start(redis: &RedisServer, tls: Option<&TestPki>) -> Self {
        let mut config = redis_ws_bridge::Config::new(redis.url());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.publish_token = Some(secret(PUBLISH_TOKEN));
        if let Some(pki) = tls {
            config.tls_cert = Some(pki.cert_file());
            config.tls_key = Some(pki.key_file());
        }
        let bridge = redis_ws_bridge::bind(config).await.unwrap();
        let port = bridge.local_addr().port();
        let shutdown = CancellationToken::new();
        tokio::spawn(bridge.run(shutdown.clone()));
        let url = match tls {
            None => format!("ws://127.0.0.1:{port}/"),
            Some(_) => format!("wss://localhost:{port}/"),
        };
        Self { url, shutdown }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn the_feeder_publishes_through_a_guarded_bridge_with_its_token() {
    let redis = RedisServer::start().await.unwrap();
    let mut subscriber = Subscriber::start(&redis.url(), "app:notifications").await;
    let bridge = Bridge::start(&redis, None).await;
    let mut config = config(
        SourceSpec::Synthetic,
        SinkSpec::WebSocket(bridge.url.clone()),
    );
    config.publish_token = Some(secret(PUBLISH_TOKEN));
    let feeder = Feeder::start(config).await;
    common::assert_coindesk_shape(&subscriber.next().await);
    feeder.shut_down().await;
}

#[tokio::test]
async fn the_feeder_publishes_over_wss_trusting_the_bridges_ca() {
    let pki = TestPki::generate().unwrap();
    let redis = RedisServer::start().await.unwrap();
    let mut subscriber = Subscriber::start(&redis.url(), "app:notifications").await;
    let bridge = Bridge::start(&redis, Some(&pki)).await;
    let mut config = config(
        SourceSpec::Synthetic,
        SinkSpec::WebSocket(bridge.url.clone()),
    );
    config.publish_token = Some(secret(PUBLISH_TOKEN));
    config.ca_file = Some(pki.ca_file());
    let feeder = Feeder::start(config).await;
    common::assert_coindesk_shape(&subscriber.next().await);
    feeder.shut_down().await;
}

#[tokio::test]
async fn the_feeder_publishes_to_rediss_with_a_private_ca() {
    let pki = TestPki::generate().unwrap();
    let redis = RedisServer::start_tls(&pki).await.unwrap();
    let mut config = config(SourceSpec::Synthetic, redis_sink(&redis.url()));
    config.ca_file = Some(pki.ca_file());
    let feeder = Feeder::start(config).await;
    // Published means PUBLISH was answered by the TLS server.
    feeder.wait_for_counter("published", 1).await;
    tokio::time::timeout(WAIT, feeder.shut_down())
        .await
        .unwrap();
}

#[tokio::test]
async fn bind_refuses_settings_that_cannot_work_and_says_which() {
    let pki = TestPki::generate().unwrap();
    let bridge_sink = SinkSpec::WebSocket("ws://127.0.0.1:1/".to_owned());
    let redis_sink = SinkSpec::Redis("redis://127.0.0.1:1/".to_owned());
    let cases = [
        (
            {
                let mut c = config(SourceSpec::Synthetic, bridge_sink.clone());
                c.ca_file = Some(pki.ca_file());
                c
            },
            "--ca-file only applies",
        ),
        (
            {
                let mut c = config(SourceSpec::Synthetic, redis_sink.clone());
                c.publish_token = Some(secret(PUBLISH_TOKEN));
                c
            },
            "--publish-token-env only applies",
        ),
        (
            {
                let mut c = config(SourceSpec::Synthetic, bridge_sink.clone());
                c.control_token_env = Some("DATA_FEEDER_TEST_UNSET_TOKEN".to_owned());
                c
            },
            "DATA_FEEDER_TEST_UNSET_TOKEN",
        ),
        (
            {
                let mut c = config(
                    SourceSpec::Synthetic,
                    SinkSpec::WebSocket("wss://localhost:1/".to_owned()),
                );
                c.ca_file = Some(pki.dir().join("absent.pem"));
                c
            },
            "absent.pem",
        ),
    ];
    for (config, expected) in cases {
        let error = format!("{:#}", data_feeder::bind(config).await.unwrap_err());
        assert!(error.contains(expected), "{expected}: {error}");
    }
}
