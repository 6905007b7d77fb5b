//! `topic-cli` and security: the operator tools (`security hash-password`, `security token`),
//! the authentication flags, and refusals — each printed with its code, exit status 1, and no
//! reconnection after the server refused the session.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::PasswordHash;
use diffusion_core::protocol::{ClientMessage, ErrorCode, ServerMessage};
use topic_client::testing::{FakeServer, PATIENCE, Peer};

const BIN: &str = env!("CARGO_BIN_EXE_topic-cli");

/// Environment variables that would change who the CLI is: cleared so the developer's shell
/// cannot change a test's outcome.
const IDENTITY_ENV: [&str; 4] = [
    "TOPIC_PRINCIPAL",
    "TOPIC_CREDENTIALS",
    "TOPIC_TOKEN",
    "TOPIC_CA_FILE",
];

/// A secret long enough for HS256 (32 bytes).
const SECRET: &str = "test-secret-test-secret-test-sec";

/// The binary with a clean identity, `env` set, nothing reachable unless `--url` is given.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("TOPIC_SERVER_URL", "ws://127.0.0.1:9/");
    for var in IDENTITY_ENV {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command
}

/// Runs the binary to completion with `stdin` as its input.
fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = command(args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the binary against a fake server, bounded by [`PATIENCE`].
async fn run_against(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::from(command(args, env));
    command
        .arg("--url")
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("topic-cli did not finish in time")
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn hash_password_prints_an_argon2id_phc_string_that_verifies() {
    let out = run(&["security", "hash-password"], &[], "correct horse\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    let phc = printed.strip_suffix('\n').unwrap();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    let hash = PasswordHash::new(phc).unwrap();
    // The newline ended the password; it is not part of it.
    assert!(
        Argon2::default()
            .verify_password(b"correct horse", &hash)
            .is_ok()
    );
    assert!(
        Argon2::default()
            .verify_password(b"correct horse\n", &hash)
            .is_err()
    );
    assert!(Argon2::default().verify_password(b"wrong", &hash).is_err());

    // A fresh salt every time.
    let again = run(&["security", "hash-password"], &[], "correct horse\n");
    assert_ne!(stdout(&again), printed);
}

#[test]
fn hash_password_refuses_an_empty_password() {
    let out = run(&["security", "hash-password"], &[], "\n");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("no password"), "{}", stderr(&out));
}

/// The claims of a token, as a server reads them.
#[derive(Debug, serde::Deserialize)]
struct Claims {
    sub: String,
    roles: Vec<String>,
    iat: u64,
    exp: u64,
    aud: Option<String>,
}

fn decode(
    token: &str,
    secret: &[u8],
    audience: Option<&str>,
) -> jsonwebtoken::errors::Result<Claims> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    match audience {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    let key = jsonwebtoken::DecodingKey::from_secret(secret).unwrap();
    jsonwebtoken::decode::<Claims>(token, &key, &validation).map(|data| data.claims)
}

#[test]
fn token_is_hs256_with_the_claims_asked_for() {
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let args = [
        "security",
        "token",
        "--principal",
        "backend",
        "--roles",
        "PUBLISHER,READER",
        "--ttl",
        "600",
        "--secret-env",
        "MY_JWT_SECRET",
        "--audience",
        "topic-server",
    ];
    let out = run(&args, &[("MY_JWT_SECRET", SECRET)], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let token = stdout(&out).trim_end().to_owned();
    let claims = decode(&token, SECRET.as_bytes(), Some("topic-server")).unwrap();
    assert_eq!(claims.sub, "backend");
    assert_eq!(claims.roles, ["PUBLISHER", "READER"]);
    assert_eq!(claims.aud.as_deref(), Some("topic-server"));
    assert_eq!(claims.exp - claims.iat, 600);
    assert!((before..=before + 60).contains(&claims.iat), "{claims:?}");
    // Only the secret verifies it, and only for its audience.
    assert!(
        decode(
            &token,
            b"another-secret-another-secret-xx",
            Some("topic-server")
        )
        .is_err()
    );
    assert!(decode(&token, SECRET.as_bytes(), Some("elsewhere")).is_err());

    // Without --audience there is no aud claim; without --roles, no roles.
    let out = run(
        &[
            "security",
            "token",
            "--principal",
            "p",
            "--ttl",
            "5",
            "--secret-env",
            "S",
        ],
        &[("S", SECRET)],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let claims = decode(stdout(&out).trim_end(), SECRET.as_bytes(), None).unwrap();
    assert_eq!((claims.aud, claims.roles.len()), (None, 0));
}

#[test]
fn token_without_a_usable_secret_exits_2() {
    let args = [
        "security",
        "token",
        "--principal",
        "p",
        "--ttl",
        "5",
        "--secret-env",
        "UNSET_SECRET_VAR",
    ];
    let out = run(&args, &[], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("UNSET_SECRET_VAR"),
        "{}",
        stderr(&out)
    );
    let out = run(&args, &[("UNSET_SECRET_VAR", "short")], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("at least 32"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_principal_needs_credentials_and_a_token_excludes_both() {
    for (args, env) in [
        (&["--principal", "alice", "ping"][..], &[][..]),
        (
            &["--token", "t", "--principal", "alice", "ping"],
            &[("TOPIC_CREDENTIALS", "pw")][..],
        ),
        (&["--credentials", "pw", "ping"], &[]),
    ] {
        let out = run(args, env, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

/// Answers the handshake, then every request with `code` (an operation refused).
async fn refuse_every_request(mut peer: Peer, code: ErrorCode) {
    peer.handshake().await;
    while let topic_client::testing::Incoming::Message(request) = peer.next().await {
        peer.send(&[ServerMessage::Error {
            cid: request.cid(),
            code,
            message: "refused by the test".to_owned(),
        }])
        .await;
    }
}

#[tokio::test]
async fn every_refused_operation_prints_permission_denied_and_exits_1() {
    let operations: [&[&str]; 9] = [
        &["fetch", "?a//"],
        &["subscribe", "?a//"],
        &["set", "a/b", "1"],
        &["add", "a/b", "JSON"],
        &["remove", "?a//"],
        &["ping"],
        &["view", "create", "v", "map ?a// to b/<path(1)>"],
        &["view", "list"],
        &["view", "remove", "v"],
    ];
    for args in operations {
        let server =
            FakeServer::start(|peer| refuse_every_request(peer, ErrorCode::PermissionDenied)).await;
        let out = run_against(&server.url, args, &[]).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("PERMISSION_DENIED"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "", "{args:?}");
        server.finish().await;
    }
}

#[tokio::test]
async fn refused_authentication_prints_its_code_and_exits_1() {
    for code in [ErrorCode::AuthenticationFailed, ErrorCode::RateLimited] {
        let server = FakeServer::start(move |mut peer| async move {
            let hello = peer.recv().await;
            assert!(
                matches!(&hello, ClientMessage::Connect { principal: Some(p), credentials: Some(c), .. } if p == "alice" && c == "from-env"),
                "{hello:?}"
            );
            peer.send(&[ServerMessage::Error {
                cid: None,
                code,
                message: "refused by the test".to_owned(),
            }])
            .await;
            peer.send_close(4003, "authentication failed").await;
        })
        .await;
        let out = run_against(
            &server.url,
            &["--principal", "alice", "fetch", "?a//"],
            &[("TOPIC_CREDENTIALS", "from-env")],
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let wire = serde_json::to_value(code).unwrap();
        assert!(
            stderr(&out).contains(wire.as_str().unwrap()),
            "{code:?}: {}",
            stderr(&out)
        );
        server.finish().await;
    }
}

#[tokio::test]
async fn subscribe_stops_after_4003_without_reconnecting() {
    let server = FakeServer::start(|mut peer| async move {
        let hello = peer.handshake().await;
        assert!(
            matches!(&hello, ClientMessage::Connect { token: Some(t), .. } if t == "jwt-from-env"),
            "{hello:?}"
        );
        let subscribe = peer.recv().await;
        peer.send(&[ServerMessage::Ok {
            cid: subscribe.cid().unwrap(),
        }])
        .await;
        peer.send(&[ServerMessage::Error {
            cid: None,
            code: ErrorCode::AuthenticationFailed,
            message: "principal removed".to_owned(),
        }])
        .await;
        peer.send_close(4003, "authentication failed").await;
        assert!(
            !peer.dials_again_within(Duration::from_millis(1500)).await,
            "topic-cli subscribe dialled again after 4003"
        );
    })
    .await;
    let out = run_against(
        &server.url,
        &["subscribe", "?a//"],
        &[("TOPIC_TOKEN", "jwt-from-env")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("AUTHENTICATION_FAILED")
            && stderr(&out).contains("principal removed"),
        "{}",
        stderr(&out)
    );
    server.finish().await;
}

#[tokio::test]
async fn subscribe_stops_when_its_token_expires() {
    let server = FakeServer::start(|mut peer| async move {
        peer.handshake().await;
        let subscribe = peer.recv().await;
        peer.send(&[ServerMessage::Ok {
            cid: subscribe.cid().unwrap(),
        }])
        .await;
        peer.send_close(4004, "token expired").await;
        assert!(!peer.dials_again_within(Duration::from_millis(1500)).await);
    })
    .await;
    let out = run_against(&server.url, &["--token", "t", "subscribe", "?a//"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("token expired"), "{}", stderr(&out));
    server.finish().await;
}
