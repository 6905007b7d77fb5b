//! Authentication against in-process servers with a security file, over real sockets: signed
//! tokens (HS256, RS256, ES256; a session closed when its token expires; the forgeries a server
//! must refuse), passwords (a wrong one and an unknown principal look alike; the brake on
//! repeated failures), anonymous sessions refused, and per-role limits.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::PasswordHasher as _;
use base64::Engine as _;
use common::{Client, Event, STEP, TestServer, subscribed_id, value_of};
use diffusion_core::protocol::{ErrorCode, ServerMessage};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A directory for one test's security file and keys, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "topic-server-auth-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts a server with this security file (written into `dir`, next to any key files).
async fn secured(dir: &TempDir, security: &str) -> TestServer {
    let file = dir.write("security.toml", security);
    TestServer::start_with(|c| c.security = Some(file)).await
}

/// How a `connect` ended.
enum Outcome {
    Connected(Box<Client>),
    Refused {
        code: ErrorCode,
        message: String,
        close: u16,
    },
}

impl Outcome {
    #[track_caller]
    fn connected(self) -> Client {
        match self {
            Self::Connected(client) => *client,
            Self::Refused {
                code,
                message,
                close,
            } => panic!("expected to connect, refused: {code:?} '{message}', close {close}"),
        }
    }

    /// The refusal: its error code, message and close code.
    #[track_caller]
    fn refused(self) -> (ErrorCode, String, u16) {
        match self {
            Self::Refused {
                code,
                message,
                close,
            } => (code, message, close),
            Self::Connected(_) => panic!("expected a refusal, but the session connected"),
        }
    }
}

/// Opens a WebSocket, sends a version-1 `connect` with `fields` (`principal`, `credentials`,
/// `token`) and returns how it ended, with the time from sending `connect` to the answer.
async fn connect_timed(server: &TestServer, fields: &Value) -> (Outcome, Duration) {
    let mut client = Client::open(&server.ws_url()).await;
    let mut hello = json!({"type":"connect","version":1});
    hello
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let sent = Instant::now();
    client.send_json(&hello).await;
    let reply = client.next().await;
    let took = sent.elapsed();
    let outcome = match reply {
        ServerMessage::Connected { .. } => Outcome::Connected(Box::new(client)),
        ServerMessage::Error { code, message, .. } => {
            let frame = client.expect_close().await;
            Outcome::Refused {
                code,
                message,
                close: frame.code.into(),
            }
        }
        other => panic!("expected connected or error, got {other:?}"),
    };
    (outcome, took)
}

async fn connect(server: &TestServer, fields: Value) -> Outcome {
    connect_timed(server, &fields).await.0
}

/// Asserts a refused authentication: `AUTHENTICATION_FAILED`, then close 4003; returns the
/// message.
#[track_caller]
fn auth_failed(outcome: Outcome) -> String {
    let (code, message, close) = outcome.refused();
    assert_eq!(code, ErrorCode::AuthenticationFailed, "{message}");
    assert_eq!(close, 4003, "{message}");
    message
}

/// Asserts an error reply with this code.
#[track_caller]
fn assert_error(reply: &ServerMessage, expected: ErrorCode) {
    match reply {
        ServerMessage::Error { code, .. } if *code == expected => {}
        other => panic!("expected {expected:?}, got {other:?}"),
    }
}

/// Closes a session from the client side and waits for the server's answer.
async fn close(mut client: Client) {
    client.send_raw(Message::Close(None)).await;
    loop {
        match client.next_event().await {
            Event::Closed(_) => return,
            Event::Message(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// Roles the token tests use: READER may read `pub`, WRITER may also add and set there; a role
/// with nothing, and one for the limits tests.
const TOKEN_ROLES: &str = r#"
[roles.READER]
paths = { "pub" = ["SELECT_TOPIC", "READ_TOPIC"] }

[roles.WRITER]
paths = { "pub" = ["SELECT_TOPIC", "READ_TOPIC", "UPDATE_TOPIC", "MODIFY_TOPIC"] }
"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for `sub` with these roles, expiring in an hour.
fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({"sub": sub, "roles": roles, "iat": now(), "exp": now() + 3600})
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

/// An ES256 key pair made for the test: the signing key and the public key's PEM.
struct Es256 {
    signing: EncodingKey,
    public_pem: String,
}

impl Es256 {
    fn generate() -> Self {
        let pair = rcgen::KeyPair::generate().unwrap();
        Self {
            signing: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            public_pem: pair.public_key_pem(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        sign(Algorithm::ES256, &self.signing, claims)
    }
}

/// The fixed RSA test key pair (ring cannot generate RSA keys): see tests/fixtures/README.md.
fn rs256_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn rs256_signing_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(rs256_fixture("rs256-test-private.pem")).unwrap())
        .unwrap()
}

/// An unsigned token (`alg: none`): header and claims, and an empty signature.
fn unsigned_token(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT"})),
        b64(claims)
    )
}

fn token(token: &str) -> Value {
    json!({ "token": token })
}

/// Connects a WRITER and a READER with tokens `sign` makes, and checks their roles apply: the
/// writer adds `pub/t` (not `other/t`); the reader receives it, may not set it and may not
/// subscribe outside `pub`.
async fn roles_apply(server: &TestServer, sign: impl Fn(&Value) -> String) {
    let mut writer = connect(server, token(&sign(&claims("wendy", &["WRITER"]))))
        .await
        .connected();
    let mut reader = connect(server, token(&sign(&claims("rita", &["READER"]))))
        .await
        .connected();
    writer
        .ok(json!({"type":"add","path":"pub/t","topicType":"STRING","value":"v1"}))
        .await;
    let reply = writer
        .request(json!({"type":"add","path":"other/t","topicType":"STRING","value":"x"}))
        .await;
    assert_error(&reply, ErrorCode::PermissionDenied);
    reader
        .ok(json!({"type":"subscribe","selector":"?pub//"}))
        .await;
    let id = subscribed_id(&reader.next().await, "pub/t");
    assert_eq!(value_of(&reader.next().await, id), json!("v1"));
    let reply = reader
        .request(json!({"type":"set","path":"pub/t","value":"v2"}))
        .await;
    assert_error(&reply, ErrorCode::PermissionDenied);
    let reply = reader
        .request(json!({"type":"subscribe","selector":"other/t"}))
        .await;
    assert_error(&reply, ErrorCode::PermissionDenied);
}

#[tokio::test]
async fn an_es256_token_connects_with_the_roles_it_names() {
    let dir = TempDir::new();
    let key = Es256::generate();
    dir.write("es256.pem", &key.public_pem);
    let server = secured(
        &dir,
        &format!("{TOKEN_ROLES}\n[jwt]\nes256_public_key_file = \"es256.pem\"\n"),
    )
    .await;

    roles_apply(&server, |c| key.sign(c)).await;

    // A role the file does not define gives nothing; no roles claim at all, neither.
    for claims in [
        claims("nobody", &["NO_SUCH_ROLE"]),
        json!({"sub": "bare", "exp": now() + 3600}),
    ] {
        let mut client = connect(&server, token(&key.sign(&claims)))
            .await
            .connected();
        let reply = client
            .request(json!({"type":"subscribe","selector":"pub/t"}))
            .await;
        assert_error(&reply, ErrorCode::PermissionDenied);
    }
    server.stop().await;
}

#[tokio::test]
async fn forged_expired_and_premature_tokens_are_refused() {
    let dir = TempDir::new();
    let key = Es256::generate();
    let other = Es256::generate();
    dir.write("es256.pem", &key.public_pem);
    let server = secured(
        &dir,
        &format!("{TOKEN_ROLES}\n[jwt]\nes256_public_key_file = \"es256.pem\"\n"),
    )
    .await;
    let valid = claims("eve", &["WRITER"]);
    let mut expired = valid.clone();
    expired["exp"] = json!(now() - 120);
    let mut premature = valid.clone();
    premature["nbf"] = json!(now() + 3600);
    let mut no_exp = valid.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut empty_sub = valid.clone();
    empty_sub["sub"] = json!("");
    let mut bad_roles = valid.clone();
    bad_roles["roles"] = json!("WRITER");
    let mut tampered = key.sign(&claims("eve", &["READER"]));
    // Same signature, other claims: READER becomes WRITER.
    let signature = tampered.rsplit('.').next().unwrap().to_owned();
    let forged_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(valid.to_string());
    let header = tampered.split('.').next().unwrap().to_owned();
    tampered = format!("{header}.{forged_claims}.{signature}");

    // Ten refusals at most: the eleventh would meet the brake on failed attempts.
    let cases: [(&str, String, &str); 9] = [
        ("expired", key.sign(&expired), "ExpiredSignature"),
        ("not yet valid", key.sign(&premature), "ImmatureSignature"),
        (
            "signed by another key",
            other.sign(&valid),
            "InvalidSignature",
        ),
        ("claims changed after signing", tampered, "InvalidSignature"),
        ("alg none", unsigned_token(&valid), "token refused"),
        (
            "RS256 where only an ES256 key is configured",
            sign(Algorithm::RS256, &rs256_signing_key(), &valid),
            "no key for algorithm RS256",
        ),
        ("without exp", key.sign(&no_exp), "exp"),
        ("empty sub", key.sign(&empty_sub), "sub"),
        ("roles not a list", key.sign(&bad_roles), "roles"),
    ];
    for (what, jwt, expected) in cases {
        let message = auth_failed(connect(&server, token(&jwt)).await);
        assert!(
            message.starts_with("token refused") && message.contains(expected),
            "{what}: {message}"
        );
    }
    // The genuine token still works.
    connect(&server, token(&key.sign(&valid))).await.connected();
    server.stop().await;
}

#[tokio::test]
async fn a_configured_audience_and_issuer_are_required() {
    let dir = TempDir::new();
    let key = Es256::generate();
    dir.write("es256.pem", &key.public_pem);
    let server = secured(
        &dir,
        &format!(
            "{TOKEN_ROLES}\n[jwt]\nes256_public_key_file = \"es256.pem\"\n\
             audience = [\"topics\", \"other-topics\"]\nissuer = \"https://issuer.test\"\n"
        ),
    )
    .await;
    let with = |aud: Option<Value>, iss: Option<&str>| {
        let mut c = claims("ann", &["READER"]);
        if let Some(aud) = aud {
            c["aud"] = aud;
        }
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        key.sign(&c)
    };
    let iss = Some("https://issuer.test");
    for good in [
        with(Some(json!("topics")), iss),
        with(Some(json!("other-topics")), iss),
        with(Some(json!(["someone-else", "topics"])), iss),
    ] {
        close(connect(&server, token(&good)).await.connected()).await;
    }
    let cases = [
        (
            "wrong audience",
            with(Some(json!("elsewhere")), iss),
            "InvalidAudience",
        ),
        (
            "wrong audiences",
            with(Some(json!(["elsewhere", "nowhere"])), iss),
            "InvalidAudience",
        ),
        ("no audience", with(None, iss), "aud"),
        (
            "wrong issuer",
            with(Some(json!("topics")), Some("https://evil.test")),
            "InvalidIssuer",
        ),
        ("no issuer", with(Some(json!("topics")), None), "iss"),
    ];
    for (what, jwt, expected) in cases {
        let message = auth_failed(connect(&server, token(&jwt)).await);
        assert!(message.contains(expected), "{what}: {message}");
    }
    server.stop().await;
}

#[tokio::test]
async fn rs256_tokens_connect_and_hs_rs_confusion_is_refused() {
    let dir = TempDir::new();
    let public_key = rs256_fixture("rs256-test-public.pem");
    let server = secured(
        &dir,
        &format!(
            "{TOKEN_ROLES}\n[jwt]\nrs256_public_key_file = \"{}\"\n",
            public_key.display()
        ),
    )
    .await;
    let rsa = rs256_signing_key();
    roles_apply(&server, |c| sign(Algorithm::RS256, &rsa, c)).await;

    // The classic confusion: HMAC with the public key (which anyone has) as the secret.
    let public_pem = std::fs::read(&public_key).unwrap();
    for secret in [public_pem.clone(), public_pem.trim_ascii_end().to_vec()] {
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&secret).unwrap(),
            &claims("mallory", &["WRITER"]),
        );
        let message = auth_failed(connect(&server, token(&forged)).await);
        assert!(message.contains("no key for algorithm HS256"), "{message}");
    }
    // Another asymmetric algorithm is not the RSA key's either.
    let es = Es256::generate();
    let message = auth_failed(connect(&server, token(&es.sign(&claims("e", &[])))).await);
    assert!(message.contains("no key for algorithm ES256"), "{message}");
    let message = auth_failed(connect(&server, token(&unsigned_token(&claims("n", &[])))).await);
    assert!(message.starts_with("token refused"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn a_session_ends_with_4004_when_its_token_expires() {
    let dir = TempDir::new();
    let key = Es256::generate();
    dir.write("es256.pem", &key.public_pem);
    let server = secured(
        &dir,
        &format!("{TOKEN_ROLES}\n[jwt]\nes256_public_key_file = \"es256.pem\"\n"),
    )
    .await;
    let exp = now() + 2;
    let expires = UNIX_EPOCH + Duration::from_secs(exp);
    let mut jwt = claims("short", &["READER"]);
    jwt["exp"] = json!(exp);
    let mut client = connect(&server, token(&key.sign(&jwt))).await.connected();
    // A token with an hour left on the same server is not affected.
    let mut long = connect(&server, token(&key.sign(&claims("long", &["READER"]))))
        .await
        .connected();
    client.ping().await;
    match client.next().await {
        ServerMessage::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::AuthenticationFailed);
            assert!(message.contains("expired"), "{message}");
        }
        other => panic!("expected the expiry error, got {other:?}"),
    }
    let frame = client.expect_close().await;
    assert_eq!(u16::from(frame.code), 4004);
    let now = SystemTime::now();
    assert!(
        now + Duration::from_millis(100) >= expires,
        "closed before the token expired"
    );
    assert!(
        now < expires + Duration::from_secs(2),
        "closed {:?} after the token expired",
        now.duration_since(expires)
    );
    long.ping().await;
    // The same token cannot open a new session.
    let message = auth_failed(connect(&server, token(&key.sign(&jwt))).await);
    assert!(message.contains("ExpiredSignature"), "{message}");
    server.stop().await;
}

/// The variable holding the HS256 secret. Setting a variable in this process needs `unsafe`
/// (edition 2024), which the workspace forbids, so the test runs itself again as a child
/// process with the variable in its environment (only that child reads it).
const HS256_SECRET_VAR: &str = "TOPIC_SERVER_AUTH_TEST_HS256_SECRET";

/// Runs the test `name` of this test binary in a child process with `var=value` set; asserts
/// that it ran and passed.
async fn rerun_with_env(name: &str, var: &str, value: &str) {
    let exe = std::env::current_exe().unwrap();
    let child = tokio::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, value)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("the child test run took too long")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child run of {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn hs256_tokens_are_checked_with_the_shared_secret() {
    let Ok(secret) = std::env::var(HS256_SECRET_VAR) else {
        let secret: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        rerun_with_env(
            "hs256_tokens_are_checked_with_the_shared_secret",
            HS256_SECRET_VAR,
            &secret,
        )
        .await;
        return;
    };
    let dir = TempDir::new();
    let server = secured(
        &dir,
        &format!("{TOKEN_ROLES}\n[jwt]\nhs256_secret_env = \"{HS256_SECRET_VAR}\"\n"),
    )
    .await;
    let hs = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    roles_apply(&server, |c| sign(Algorithm::HS256, &hs, c)).await;

    let wrong =
        EncodingKey::from_secret(b"another secret of at least 32 bytes, not the server's").unwrap();
    let message = auth_failed(
        connect(
            &server,
            token(&sign(Algorithm::HS256, &wrong, &claims("x", &["WRITER"]))),
        )
        .await,
    );
    assert!(message.contains("InvalidSignature"), "{message}");
    // Other HMAC sizes are other algorithms: no key for them.
    let message = auth_failed(
        connect(
            &server,
            token(&sign(Algorithm::HS512, &hs, &claims("x", &["WRITER"]))),
        )
        .await,
    );
    assert!(message.contains("no key for algorithm HS512"), "{message}");
    let message = auth_failed(
        connect(
            &server,
            token(&sign(
                Algorithm::RS256,
                &rs256_signing_key(),
                &claims("x", &["WRITER"]),
            )),
        )
        .await,
    );
    assert!(message.contains("no key for algorithm RS256"), "{message}");
    auth_failed(connect(&server, token(&unsigned_token(&claims("x", &["WRITER"])))).await);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Passwords and anonymous sessions

/// An argon2id hash with the default parameters (as `topic-cli security hash-password` makes,
/// and as the server's dummy hash for unknown principals has).
fn hash(password: &str) -> String {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string()
}

/// A cheap argon2id hash (64 KiB, one pass), for tests that need many failures but do not
/// measure time.
fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string()
}

fn password(principal: &str, password: &str) -> Value {
    json!({"principal": principal, "credentials": password})
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_principal_look_alike() {
    let dir = TempDir::new();
    let server = secured(
        &dir,
        &format!(
            "{TOKEN_ROLES}\n[principals.alice]\npassword = \"{}\"\nroles = [\"WRITER\"]\n",
            hash("correct horse battery staple")
        ),
    )
    .await;
    let mut alice = connect(&server, password("alice", "correct horse battery staple"))
        .await
        .connected();
    alice
        .ok(json!({"type":"add","path":"pub/a","topicType":"STRING","value":"a"}))
        .await;
    close(alice).await;

    // Alternating, so both see the same load; 6 failures stay below the brake's 10.
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    let mut answers = Vec::new();
    for round in 0..3 {
        for (principal, times) in [("alice", &mut wrong), ("mallory", &mut unknown)] {
            let (outcome, took) =
                connect_timed(&server, &password(principal, &format!("guess {round}"))).await;
            answers.push(auth_failed(outcome));
            times.push(took);
        }
    }
    assert!(
        answers.iter().all(|m| m == "authentication failed"),
        "{answers:?}"
    );
    let (wrong, unknown) = (median(wrong), median(unknown));
    println!("median time to refuse: wrong password {wrong:?}, unknown principal {unknown:?}");
    assert!(
        unknown.as_secs_f64() >= 0.3 * wrong.as_secs_f64()
            && wrong.as_secs_f64() >= 0.3 * unknown.as_secs_f64(),
        "the answers' times tell the principals apart: wrong password {wrong:?}, unknown principal {unknown:?}"
    );
    // Below the brake, the right password still works.
    connect(&server, password("alice", "correct horse battery staple"))
        .await
        .connected();
    server.stop().await;
}

#[tokio::test]
async fn ten_failures_from_an_address_brake_even_the_right_password() {
    let dir = TempDir::new();
    let server = secured(
        &dir,
        &format!(
            "anonymous = [\"READER\"]\n{TOKEN_ROLES}\n[principals.bob]\npassword = \"{}\"\nroles = [\"READER\"]\n",
            cheap_hash("right")
        ),
    )
    .await;
    close(connect(&server, password("bob", "right")).await.connected()).await;
    for attempt in 0..10 {
        let (principal, guess) = match attempt {
            // An unknown principal costs a full (default) hash: once is enough.
            1 => ("nobody", "wrong"),
            // Malformed attempts count too.
            a if a % 3 == 0 => ("bob", ""),
            _ => ("bob", "wrong"),
        };
        let fields = if guess.is_empty() {
            json!({"principal": principal})
        } else {
            password(principal, guess)
        };
        auth_failed(connect(&server, fields).await);
    }
    let (code, message, close_code) = connect(&server, password("bob", "right")).await.refused();
    assert_eq!(code, ErrorCode::RateLimited, "{message}");
    assert_eq!(close_code, 4003);
    assert!(
        message.contains("too many failed authentications"),
        "{message}"
    );
    // Anonymous sessions are neither counted nor braked.
    let mut anonymous = connect(&server, json!({})).await.connected();
    anonymous.ping().await;
    server.stop().await;
}

/// Attempts made at the same time count as failures until they succeed, so a burst of
/// parallel guesses is braked like guesses made one after another: of 20 wrong passwords sent
/// at once, 10 are checked and 10 refused unchecked.
#[tokio::test]
async fn guesses_made_at_once_are_braked_too() {
    let dir = TempDir::new();
    let server = secured(
        &dir,
        &format!(
            "{TOKEN_ROLES}\n[principals.bob]\npassword = \"{}\"\nroles = [\"READER\"]\n",
            cheap_hash("right")
        ),
    )
    .await;
    let attempts = (0..20).map(|_| connect(&server, password("bob", "wrong")));
    let mut failed = 0;
    let mut braked = 0;
    for outcome in futures_util::future::join_all(attempts).await {
        let (code, message, close) = outcome.refused();
        assert_eq!(close, 4003, "{message}");
        match code {
            ErrorCode::AuthenticationFailed => failed += 1,
            ErrorCode::RateLimited => braked += 1,
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
    assert_eq!((failed, braked), (10, 10));
    let (code, message, _) = connect(&server, password("bob", "right")).await.refused();
    assert_eq!(code, ErrorCode::RateLimited, "{message}");
    server.stop().await;
}

const OWNING_ROLES: &str = r#"
[roles.MAKER]
global = ["MODIFY_TOPIC_VIEWS"]
default_path = ["SELECT_TOPIC", "READ_TOPIC", "MODIFY_TOPIC"]
[roles.MAKER.limits]
topics = 2
views = 1

[roles.BIG_MAKER]
includes = ["MAKER"]
[roles.BIG_MAKER.limits]
topics = 10
views = 5

[jwt]
es256_public_key_file = "es256.pem"
"#;

/// Topics and views count per principal: one principal at its limit is refused while another
/// with a higher limit goes on; removing gives room back; replacing a view is not a new one.
#[tokio::test]
async fn a_roles_topic_and_view_limits_bind_per_principal() {
    let dir = TempDir::new();
    let key = Es256::generate();
    dir.write("es256.pem", &key.public_pem);
    let server = secured(&dir, OWNING_ROLES).await;
    let mut alice = connect(&server, token(&key.sign(&claims("alice", &["MAKER"]))))
        .await
        .connected();
    let mut alice_too = connect(&server, token(&key.sign(&claims("alice", &["MAKER"]))))
        .await
        .connected();
    let mut bob = connect(&server, token(&key.sign(&claims("bob", &["BIG_MAKER"]))))
        .await
        .connected();
    let add = |path: &str| json!({"type":"add","path":path,"topicType":"INT64","value":1});
    alice.ok(add("a/1")).await;
    alice_too.ok(add("a/2")).await;
    // The limit is the principal's, across its sessions.
    assert_error(&alice.request(add("a/3")).await, ErrorCode::LimitExceeded);
    assert_error(
        &alice_too.request(add("a/3")).await,
        ErrorCode::LimitExceeded,
    );
    // Adding an existing topic again is not a new topic.
    alice.ok(add("a/1")).await;
    for n in 0..5 {
        bob.ok(add(&format!("b/{n}"))).await;
    }
    alice.ok(json!({"type":"remove","selector":"a/1"})).await;
    alice.ok(add("a/3")).await;

    let view = |name: &str, to: &str| json!({"type":"createview","name":name,"spec":format!("map ?a// to {to}/<path(1)>")});
    alice.ok(view("v1", "copy1")).await;
    assert_error(
        &alice.request(view("v2", "copy2")).await,
        ErrorCode::LimitExceeded,
    );
    alice.ok(view("v1", "copy3")).await;
    bob.ok(view("w1", "bob1")).await;
    bob.ok(view("w2", "bob2")).await;
    alice.ok(json!({"type":"removeview","name":"v1"})).await;
    alice.ok(view("v2", "copy2")).await;
    server.stop().await;
}

#[tokio::test]
async fn anonymous_sessions_are_refused_without_anonymous_roles() {
    let dir = TempDir::new();
    for anonymous in ["", "anonymous = []\n"] {
        let server = secured(
            &dir,
            &format!(
                "{anonymous}{TOKEN_ROLES}\n[principals.carl]\npassword = \"{}\"\nroles = [\"READER\"]\n",
                cheap_hash("pw")
            ),
        )
        .await;
        let message = auth_failed(connect(&server, json!({})).await);
        assert!(message.contains("anonymous"), "{message}");
        // Neither half of a password nor a mix of password and token is accepted.
        auth_failed(connect(&server, json!({"principal": "carl"})).await);
        auth_failed(connect(&server, json!({"credentials": "pw"})).await);
        auth_failed(
            connect(
                &server,
                json!({"principal": "carl", "credentials": "pw", "token": "x.y.z"}),
            )
            .await,
        );
        let message = auth_failed(connect(&server, token("x.y.z")).await);
        assert!(message.contains("does not accept tokens"), "{message}");
        connect(&server, password("carl", "pw")).await.connected();
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Limits per role

/// Roles with the same permissions and different limits, for principals signed into tokens.
const LIMITED_ROLES: &str = r#"
[roles.A]
default_path = ["SELECT_TOPIC", "READ_TOPIC"]
[roles.A.limits]
selectors = 2
requests_per_second = 10

[roles.B]
default_path = ["SELECT_TOPIC", "READ_TOPIC"]
[roles.B.limits]
selectors = 5
requests_per_second = 1000

[roles.SINGLE]
default_path = ["SELECT_TOPIC", "READ_TOPIC"]
[roles.SINGLE.limits]
connections = 1

[jwt]
es256_public_key_file = "es256.pem"
"#;

async fn limited_server(dir: &TempDir, key: &Es256) -> TestServer {
    dir.write("es256.pem", &key.public_pem);
    secured(dir, LIMITED_ROLES).await
}

#[tokio::test]
async fn a_roles_selector_limit_binds_its_holders_only() {
    let dir = TempDir::new();
    let key = Es256::generate();
    let server = limited_server(&dir, &key).await;
    let mut a = connect(&server, token(&key.sign(&claims("alice", &["A"]))))
        .await
        .connected();
    let mut b = connect(&server, token(&key.sign(&claims("bob", &["B"]))))
        .await
        .connected();
    for (n, selector) in ["s/1", "s/2", "s/3", "s/4"].into_iter().enumerate() {
        let request = json!({"type":"subscribe","selector":selector});
        let reply = a.request(request.clone()).await;
        if n < 2 {
            assert!(matches!(reply, ServerMessage::Ok { .. }), "{reply:?}");
        } else {
            assert_error(&reply, ErrorCode::LimitExceeded);
        }
        b.ok(request).await;
    }
    b.ok(json!({"type":"subscribe","selector":"s/5"})).await;
    let reply = b
        .request(json!({"type":"subscribe","selector":"s/6"}))
        .await;
    assert_error(&reply, ErrorCode::LimitExceeded);
    // Both roles: the more generous limit.
    let mut both = connect(&server, token(&key.sign(&claims("cy", &["A", "B"]))))
        .await
        .connected();
    for n in 0..5 {
        both.ok(json!({"type":"subscribe","selector":format!("s/{n}")}))
            .await;
    }
    server.stop().await;
}

/// Sends `count` pings at once and returns how many were refused with `RATE_LIMITED` (every
/// other answer must be its `pong`).
async fn ping_burst(client: &mut Client, count: u64) -> usize {
    for cid in 1_000..1_000 + count {
        client.send_json(&json!({"type":"ping","cid":cid})).await;
    }
    let mut limited = 0;
    for _ in 0..count {
        match client.next().await {
            ServerMessage::Pong { .. } => {}
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                cid: Some(_),
                ..
            } => limited += 1,
            other => panic!("expected pong or RATE_LIMITED, got {other:?}"),
        }
    }
    limited
}

#[tokio::test]
async fn a_roles_request_rate_binds_its_holders_only() {
    let dir = TempDir::new();
    let key = Es256::generate();
    let server = limited_server(&dir, &key).await;
    let mut a = connect(&server, token(&key.sign(&claims("alice", &["A"]))))
        .await
        .connected();
    let mut b = connect(&server, token(&key.sign(&claims("bob", &["B"]))))
        .await
        .connected();
    // A: 10 per second with a burst of 20, so 30 at once cannot all pass; B: 1000 per second.
    let (limited_a, limited_b) = tokio::join!(ping_burst(&mut a, 30), ping_burst(&mut b, 30));
    assert!(limited_a > 0, "role A's rate was not applied");
    assert_eq!(limited_b, 0, "role B was limited by role A's rate");
    // Limited, not closed: A's requests pass again once the rate allows.
    let deadline = Instant::now() + STEP;
    while !matches!(
        a.request(json!({"type":"ping"})).await,
        ServerMessage::Pong { .. }
    ) {
        assert!(Instant::now() < deadline, "role A stayed limited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_roles_connection_limit_refuses_a_principals_second_session() {
    let dir = TempDir::new();
    let key = Es256::generate();
    let server = limited_server(&dir, &key).await;
    let carol = token(&key.sign(&claims("carol", &["SINGLE"])));
    let first = connect(&server, carol.clone()).await.connected();
    let (code, message, close_code) = connect(&server, carol.clone()).await.refused();
    assert_eq!(code, ErrorCode::LimitExceeded, "{message}");
    assert_eq!(close_code, 1008, "{message}");
    // Per principal: another principal with the same role is not affected.
    let mut dave = connect(&server, token(&key.sign(&claims("dave", &["SINGLE"]))))
        .await
        .connected();
    dave.ping().await;
    // Once the first session has gone, carol may connect again.
    close(first).await;
    let deadline = Instant::now() + STEP;
    loop {
        match connect(&server, carol.clone()).await {
            Outcome::Connected(mut again) => {
                again.ping().await;
                break;
            }
            Outcome::Refused { code, .. } => {
                assert_eq!(code, ErrorCode::LimitExceeded);
                assert!(Instant::now() < deadline, "the closed session still counts");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    server.stop().await;
}
