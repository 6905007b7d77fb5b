//! `topic-cli` against a real topic server with a security file whose password hash
//! `topic-cli security hash-password` made: the operator's tool, the client's credentials and
//! the server's checks agree, and every refusal is printed with its code (exit status 1).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_topic-cli");

/// The binary with no identity from the developer's environment.
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    for var in [
        "TOPIC_PRINCIPAL",
        "TOPIC_CREDENTIALS",
        "TOPIC_TOKEN",
        "TOPIC_CA_FILE",
    ] {
        command.env_remove(var);
    }
    command
}

/// `topic-cli security hash-password` of `password`.
fn hash(password: &str) -> String {
    let mut child = command(&["security", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run topic-cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(password.as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("wait for topic-cli");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim_end()
        .to_owned()
}

/// A security file: anonymous sessions read `t/`, `writer` also updates and adds there.
fn security_file(dir: &std::path::Path) -> PathBuf {
    let text = format!(
        r#"anonymous = ["READER"]

[principals.writer]
password = "{}"
roles = ["WRITER"]

[roles.READER]
paths = {{ "t" = ["SELECT_TOPIC", "READ_TOPIC"] }}

[roles.WRITER]
includes = ["READER"]
paths = {{ "t" = ["SELECT_TOPIC", "READ_TOPIC", "UPDATE_TOPIC", "MODIFY_TOPIC"] }}
"#,
        hash("s3cret-pw")
    );
    let path = dir.join("security.toml");
    std::fs::write(&path, text).expect("write the security file");
    path
}

async fn start_server(security: PathBuf) -> (String, CancellationToken) {
    let server = topic_server::bind(topic_server::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        security: Some(security),
        ..topic_server::Config::default()
    })
    .await
    .expect("bind");
    let url = format!("ws://{}", server.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    (url, shutdown)
}

/// Runs `topic-cli --url URL ARGS` with `env` (off the runtime: it blocks).
async fn cli(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = command(&["--url", url]);
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().expect("run topic-cli"))
        .await
        .expect("join")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_checks_reach_the_cli_with_their_codes() {
    let dir = std::env::temp_dir().join(format!("topic-cli-security-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let (url, shutdown) = start_server(security_file(&dir)).await;
    let writer = [
        ("TOPIC_PRINCIPAL", "writer"),
        ("TOPIC_CREDENTIALS", "s3cret-pw"),
    ];

    // The principal with its password may add and set under t/.
    let out = cli(&url, &["add", "t/x", "JSON", "--value", "1"], &writer).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = cli(&url, &["set", "t/x", "2"], &writer).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Anonymous sessions may read it but not change it.
    let out = cli(&url, &["fetch", ">t/x"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "t/x\t2\n");
    let out = cli(&url, &["set", "t/x", "3"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("PERMISSION_DENIED"),
        "{}",
        stderr(&out)
    );

    // Neither may touch what lies outside t/.
    let out = cli(&url, &["add", "elsewhere/y", "JSON"], &writer).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("PERMISSION_DENIED"),
        "{}",
        stderr(&out)
    );

    // A wrong password is refused at connect.
    let wrong = [
        ("TOPIC_PRINCIPAL", "writer"),
        ("TOPIC_CREDENTIALS", "guess"),
    ];
    let out = cli(&url, &["fetch", ">t/x"], &wrong).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("AUTHENTICATION_FAILED"),
        "{}",
        stderr(&out)
    );

    shutdown.cancel();
    std::fs::remove_dir_all(&dir).expect("remove the scratch directory");
}
