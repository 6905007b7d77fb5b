//! The `topic-cli` commands. `main.rs` only parses [`Cli`], sets up logging and shutdown, and
//! calls [`run`]; everything else lives here so it can be tested.
//!
//! Output contract: results go to stdout, one line per topic, `PATH<TAB>VALUE` with the value as
//! compact JSON (topic paths cannot contain control characters, so the tab is unambiguous, and
//! compact JSON never contains a raw newline). Diagnostics go to stderr. Exit codes: 0 success,
//! 1 runtime or server error, 2 invalid input, 130 interrupted while reading stdin. A server
//! error — a refused operation (`PERMISSION_DENIED`) or a refused authentication
//! (`AUTHENTICATION_FAILED`, `RATE_LIMITED`) — is printed with its wire code.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use diffusion_core::view::ViewSpec;
use diffusion_core::{Selector, TopicPath, TopicProperties, TopicType};
use serde_json::Value;
use service_kit::LogArgs;
use tokio_util::sync::CancellationToken;

use topic_client::cli::IdentityArgs;
use topic_client::{ClientConfig, ClientError, TopicClient, TopicEvent};

use crate::security::SecurityCommand;

const AFTER_HELP: &str = "\
Output: fetch and subscribe print one line per topic value, PATH<TAB>VALUE, where VALUE is the
value as compact JSON in the topic type's wire form (STRING topics print a JSON string, BINARY a
base64 JSON string). A topic without a value prints null.

Authentication: --principal NAME with --credentials (better: TOPIC_CREDENTIALS in the
environment), or --token JWT (better: TOPIC_TOKEN); anonymous otherwise. wss:// URLs trust the
public web roots and the CA certificates of --ca-file.

Exit status: 0 success, 1 runtime or server error (message on stderr, with the server's error
code such as PERMISSION_DENIED or AUTHENTICATION_FAILED), 2 invalid input (bad selector, path,
topic type, property or JSON), 130 interrupted while reading stdin.";

/// Command-line interface of `topic-cli`, a client for the topic server.
#[derive(Debug, Parser)]
#[command(
    name = "topic-cli",
    version,
    about = "Command-line client for the topic server: fetch, subscribe, set, add and remove topics.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Where and as whom to connect.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Log format (logs go to stderr only).
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Connection flags shared by every command that talks to the server.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// WebSocket URL of the topic server; several, comma-separated, for the nodes of one
    /// deployment (the first that answers is used; `subscribe` moves on to the next when its
    /// server goes away).
    #[arg(
        long,
        env = "TOPIC_SERVER_URL",
        default_value = "ws://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Who to authenticate as (--principal/--credentials or --token) and the CA to trust.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Seconds to wait for the connection and for each reply.
    #[arg(long, env = "TOPIC_TIMEOUT", value_name = "SECONDS", default_value = "10", value_parser = parse_seconds, global = true)]
    pub timeout: Duration,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the current value of every selected topic, one line each, in path order.
    #[command(
        about = "Print the current value of every selected topic: PATH<TAB>VALUE per line, in path order",
        long_about = None
    )]
    Fetch {
        /// Topic selector, e.g. `>redis/bitcoin` or `?redis//`.
        #[arg(value_parser = parse_selector)]
        selector: Selector,
    },
    /// Print every value of the selected topics until interrupted.
    #[command(
        about = "Print PATH<TAB>VALUE for every value of the selected topics until interrupted (Ctrl-C/SIGTERM: exit 0). A lost connection is re-established and the session resumed, so each value is printed once; exit 1 only if the server ends the session for good",
        long_about = None
    )]
    Subscribe {
        /// Topic selector.
        #[arg(value_parser = parse_selector)]
        selector: Selector,
    },
    /// Set a topic's value.
    Set {
        /// Topic path, e.g. `redis/bitcoin`.
        #[arg(value_parser = parse_path)]
        path: TopicPath,
        /// The value as JSON in the type's wire form: `'{"a":1}'`, `'"text"'`, `42`, `null`.
        #[arg(value_parser = parse_json, allow_hyphen_values = true)]
        value: Value,
    },
    /// Create a topic (succeeds if an identical topic exists).
    Add {
        /// Topic path.
        #[arg(value_parser = parse_user_path)]
        path: TopicPath,
        /// Topic type: JSON, STRING, INT64, DOUBLE or BINARY (any case).
        #[arg(value_parser = parse_topic_type)]
        topic_type: TopicType,
        /// A topic property, repeatable: PUBLISH_VALUES_ONLY, DONT_RETAIN_VALUE, CONFLATION,
        /// TIDY_ON_UNSUBSCRIBE or VALIDATE_VALUES.
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Initial value as JSON in the type's wire form.
        #[arg(long, value_name = "JSON", value_parser = parse_json, allow_hyphen_values = true)]
        value: Option<Value>,
    },
    /// Remove every selected topic.
    Remove {
        /// Topic selector.
        #[arg(value_parser = parse_selector)]
        selector: Selector,
    },
    /// Check the server answers; prints the round-trip time in milliseconds.
    Ping,
    /// Offline selector tools (no server needed).
    #[command(subcommand)]
    Selector(SelectorCommand),
    /// Topic views: try a view specification offline.
    #[command(subcommand)]
    View(ViewCommand),
    /// Security tools for the server's operator (no server needed): hash a password, issue a
    /// token.
    #[command(subcommand)]
    Security(SecurityCommand),
}

/// Topic view tools.
#[derive(Debug, Subcommand)]
pub enum ViewCommand {
    /// Create a named view on the server, or replace its specification (it keeps its
    /// precedence). An invalid specification exits 2 with a `line:column` error.
    Create {
        /// The view's name.
        name: String,
        /// The view specification, e.g. `map redis/bitcoin to redis/views/<expand(/bpi)>`.
        spec: String,
    },
    /// List the server's views in precedence order: NAME<TAB>SPEC per line.
    List,
    /// Remove a view and its reference topics.
    Remove {
        /// The view's name.
        name: String,
    },
    /// Evaluate a view specification offline (no server needed) against a set of JSON source
    /// topics, and print one JSON object mapping every resulting reference topic path to its
    /// value, keys sorted. Sources are evaluated in path order (not file order): when two
    /// derive the same path the first in path order wins, as on the server. `throttle` and
    /// `delay` are accepted and have no effect offline. An invalid specification exits 2 with
    /// a `line:column` error and a caret on stderr.
    Eval {
        /// The view specification, e.g. `map ?redis// to views/<path(1)>`.
        #[arg(long)]
        spec: String,
        /// A JSON file holding one object that maps source topic paths to their JSON values
        /// (`-` reads standard input).
        #[arg(long, value_name = "FILE")]
        topics: std::path::PathBuf,
    },
}

/// Selector tools that run without a server.
#[derive(Debug, Subcommand)]
pub enum SelectorCommand {
    /// Print the paths the selector matches, in input order, one per line. Paths come from the
    /// arguments, or else from stdin one per line (empty lines ignored). Exits 0 even when
    /// nothing matches; an invalid selector exits 2; invalid paths are reported on stderr, skipped,
    /// and make the exit status 2 once every line has been processed.
    Match {
        /// Topic selector.
        #[arg(value_parser = parse_selector)]
        selector: Selector,
        /// Topic paths to test; read from stdin when none are given.
        paths: Vec<String>,
    },
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if secs.is_finite() && secs > 0.0 && secs < 1e9 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "timeout must be a positive number of seconds, not {text}"
        ))
    }
}

fn parse_selector(text: &str) -> Result<Selector, String> {
    Selector::parse(text).map_err(|e| e.to_string())
}

fn parse_path(text: &str) -> Result<TopicPath, String> {
    TopicPath::parse(text).map_err(|e| e.to_string())
}

fn parse_user_path(text: &str) -> Result<TopicPath, String> {
    TopicPath::parse_user(text).map_err(|e| e.to_string())
}

fn parse_topic_type(text: &str) -> Result<TopicType, String> {
    text.parse::<TopicType>().map_err(|e| e.to_string())
}

fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text)
        .map_err(|e| format!("not valid JSON ({e}); quote strings as JSON, e.g. '\"text\"'"))
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not KEY=VALUE"))?;
    let (key, value) = (key.trim().to_ascii_uppercase(), value.trim().to_owned());
    let single = BTreeMap::from([(key.clone(), value.clone())]);
    TopicProperties::from_map(&single).map_err(|e| e.to_string())?;
    Ok((key, value))
}

/// Why a command failed; decides the exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input from the user (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// The server or the connection failed (exit 1).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Something else went wrong at run time (exit 1).
    #[error("{0}")]
    Runtime(String),
    /// Writing the output failed (exit 1; a closed pipe is not an error, see [`run`]).
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
    /// Stopped by Ctrl-C/SIGTERM before finishing (exit 130).
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    /// The process exit status for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Invalid(_) => ExitCode::from(2),
            Self::Interrupted => ExitCode::from(130),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Runs the parsed command with stdout and stdin, prints any error on stderr, and returns the
/// exit status. A closed stdout (e.g. piped into `head`) ends the command quietly with status 0.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> ExitCode {
    let result = match cli.command {
        Command::Selector(SelectorCommand::Match { selector, paths }) if paths.is_empty() => {
            match_stdin(selector, shutdown).await
        }
        command => {
            let mut stdout = io::stdout();
            execute(&cli.connection, command, shutdown, &mut stdout).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("topic-cli: {e}");
            e.exit_code()
        }
    }
}

/// Runs one command, writing its results to `out` (flushed after every line a subscription
/// prints). `selector match` reads its paths from the arguments only; [`run`] handles stdin.
/// Shutdown ends `subscribe` successfully and interrupts any other server command.
pub async fn execute(
    connection: &ConnectionArgs,
    command: Command,
    mut shutdown: CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    match command {
        Command::Selector(SelectorCommand::Match { selector, paths }) => {
            let lines = paths.into_iter().map(Ok);
            match_lines(&selector, lines, out)
        }
        Command::View(ViewCommand::Eval { spec, topics }) => view_eval(&spec, &topics, out),
        Command::Security(command) => crate::security::run(command, io::stdin(), out),
        Command::View(ViewCommand::Create { spec, .. }) if ViewSpec::parse(&spec).is_err() => {
            // Check locally first: the same error, without needing a server.
            let error = ViewSpec::parse(&spec)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            Err(CliError::Invalid(format!(
                "invalid view specification\n{error}"
            )))
        }
        Command::Subscribe { selector } => {
            let client = tokio::select! {
                client = connect(connection) => client?,
                () = shutdown.cancelled() => return Ok(()),
            };
            let result = subscribe(&client, &selector, &mut shutdown, out).await;
            client.close().await;
            result
        }
        command => {
            tokio::select! {
                result = one_shot(connection, command, out) => result,
                () = shutdown.cancelled() => Err(CliError::Interrupted),
            }
        }
    }
}

/// `view eval`: parses the specification, reads the source topics and prints the reference
/// topics the view would produce, as one JSON object with sorted keys.
fn view_eval(
    spec: &str,
    topics: &std::path::Path,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let view = ViewSpec::parse(spec)
        .map_err(|e| CliError::Invalid(format!("invalid view specification\n{e}")))?;
    let text = if topics.as_os_str() == "-" {
        io::read_to_string(io::stdin())
    } else {
        std::fs::read_to_string(topics)
    }
    .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", topics.display())))?;
    let sources: BTreeMap<String, Value> = serde_json::from_str(&text).map_err(|e| {
        CliError::Invalid(format!(
            "{} must hold one JSON object mapping topic paths to JSON values: {e}",
            topics.display()
        ))
    })?;
    if let Some(bad) = sources.keys().find(|p| TopicPath::parse(p).is_err()) {
        return Err(CliError::Invalid(format!(
            "'{bad}' in {} is not a valid topic path",
            topics.display()
        )));
    }
    let limits = diffusion_core::view::EvalLimits::default();
    let result = diffusion_core::view::evaluate_all(&view, &sources, &limits)
        .map_err(|(source, e)| CliError::Invalid(format!("source '{source}': {e}")))?;
    let json = serde_json::to_string(&result).map_err(|e| CliError::Runtime(e.to_string()))?;
    writeln!(out, "{json}")?;
    out.flush()?;
    Ok(())
}

/// Connects, runs one request-reply command, and closes the connection politely.
async fn one_shot(
    connection: &ConnectionArgs,
    command: Command,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let client = connect(connection).await?;
    let result = request(&client, command, out).await;
    client.close().await;
    result
}

async fn request(
    client: &TopicClient,
    command: Command,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    match command {
        Command::Fetch { selector } => {
            for topic in client.fetch(selector.as_str()).await? {
                let value = topic.value.as_ref().unwrap_or(&Value::Null);
                write_value(out, &topic.path, value)?;
            }
            out.flush()?;
        }
        Command::Set { path, value } => client.set(path.as_str(), value).await?,
        Command::Add {
            path,
            topic_type,
            properties,
            value,
        } => {
            let properties: BTreeMap<String, String> = properties.into_iter().collect();
            match value {
                Some(value) => {
                    client
                        .add_topic_with_value(path.as_str(), topic_type, properties, value)
                        .await?;
                }
                None => {
                    client
                        .add_topic(path.as_str(), topic_type, properties)
                        .await?
                }
            }
        }
        Command::Remove { selector } => client.remove(selector.as_str()).await?,
        Command::Ping => {
            let rtt = client.ping().await?;
            writeln!(out, "{:.3}", rtt.as_secs_f64() * 1000.0)?;
            out.flush()?;
        }
        Command::View(ViewCommand::Create { name, spec }) => {
            client.create_view(name, spec).await?;
        }
        Command::View(ViewCommand::Remove { name }) => client.remove_view(name).await?,
        Command::View(ViewCommand::List) => {
            for view in client.list_views().await? {
                writeln!(out, "{}\t{}", view.name, view.spec.replace('\n', " "))?;
            }
            out.flush()?;
        }
        Command::Subscribe { .. }
        | Command::Selector(_)
        | Command::Security(_)
        | Command::View(ViewCommand::Eval { .. }) => {
            return Err(CliError::Runtime("not a request-reply command".to_owned()));
        }
    }
    Ok(())
}

async fn connect(args: &ConnectionArgs) -> Result<TopicClient, CliError> {
    let options = args
        .identity
        .connect_options()
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let config = ClientConfig {
        request_timeout: args.timeout,
        connect_timeout: args.timeout,
        ..ClientConfig::default()
    };
    TopicClient::connect_with(&args.url, options, config)
        .await
        .map_err(|e| match e {
            // An unreadable --ca-file is bad input, like a bad selector.
            ClientError::Tls(_) => CliError::Invalid(e.to_string()),
            e => CliError::Client(e),
        })
}

/// Prints values until shutdown (success) or until the client gives up (error). Events are
/// read while the subscribe request is in flight, so a large initial burst cannot stall it.
///
/// The client reconnects and resumes the session by itself, so every value is printed exactly
/// once across reconnections. When the server cannot resume the session, the client subscribes
/// again and every topic's current value comes again: a value equal to the one last printed for
/// its topic is then not printed twice.
async fn subscribe(
    client: &TopicClient,
    selector: &Selector,
    shutdown: &mut CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let request = client.subscribe(selector.as_str());
    tokio::pin!(request);
    let mut acknowledged = false;
    let mut printed = LastPrinted::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            result = &mut request, if !acknowledged => {
                result?;
                acknowledged = true;
                tracing::debug!(selector = %selector, "subscribed");
            }
            event = client.next_event() => match event {
                Some(TopicEvent::Value { path, value, .. }) => {
                    if printed.is_new(&path, &value) {
                        write_value(out, &path, &value)?;
                        out.flush()?;
                    }
                }
                Some(TopicEvent::Reconnected { recovered: true }) => {
                    tracing::info!("reconnected; session resumed, nothing missed");
                }
                Some(TopicEvent::Reconnected { recovered: false }) => {
                    tracing::warn!("reconnected, but the server could not resume the session: values set meanwhile may be missing; current values follow");
                    printed.resynchronise();
                }
                Some(TopicEvent::Subscribed { path, topic_type, .. }) => {
                    tracing::debug!(%path, %topic_type, "topic subscribed");
                }
                Some(TopicEvent::Unsubscribed { path, reason }) => {
                    tracing::info!(%path, %reason, "topic unsubscribed");
                }
                None => {
                    // Refused (4003) or expired (4004): say why, with the code, not "lost".
                    return Err(match client.refusal() {
                        Some(refusal) => CliError::Client(ClientError::Refused(refusal)),
                        None => CliError::Runtime(
                            "connection to the topic server was lost".to_owned(),
                        ),
                    });
                }
            }
        }
    }
}

/// The value last printed for each topic, to recognise the current values a new session sends
/// again after a failed recovery.
#[derive(Default)]
struct LastPrinted {
    values: std::collections::HashMap<String, Value>,
    /// Topics whose next value may repeat the last one printed.
    resending: std::collections::HashSet<String>,
}

impl LastPrinted {
    /// Whether to print `value` for `path` (and remembers it).
    fn is_new(&mut self, path: &str, value: &Value) -> bool {
        let repeat =
            self.resending.remove(path) && self.values.get(path).is_some_and(|last| last == value);
        if !repeat {
            self.values.insert(path.to_owned(), value.clone());
        }
        !repeat
    }

    /// A new session will send every topic's current value again.
    fn resynchronise(&mut self) {
        self.resending = self.values.keys().cloned().collect();
    }
}

fn write_value(out: &mut dyn Write, path: &str, value: &Value) -> io::Result<()> {
    let json = serde_json::to_string(value).map_err(io::Error::other)?;
    writeln!(out, "{path}\t{json}")
}

/// Writes the lines that the selector matches, in order. Invalid paths are reported on stderr
/// and skipped; the result is then `Invalid` after every line has been processed.
fn match_lines(
    selector: &Selector,
    lines: impl Iterator<Item = io::Result<String>>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut invalid = 0usize;
    for (index, line) in lines.enumerate() {
        let line = line?;
        if let Some(invalid_reason) = match_one(selector, &line, out)? {
            eprintln!("topic-cli: input {}: {invalid_reason}", index + 1);
            invalid += 1;
        }
    }
    out.flush()?;
    if invalid > 0 {
        return Err(CliError::Invalid(format!(
            "{invalid} input line(s) were not valid topic paths"
        )));
    }
    Ok(())
}

/// Tests one path, writing it if it matches; returns why it is invalid, if it is.
fn match_one(selector: &Selector, path: &str, out: &mut dyn Write) -> io::Result<Option<String>> {
    match TopicPath::parse(path) {
        Ok(path) => {
            if selector.matches(path.as_str()) {
                writeln!(out, "{path}")?;
            }
            Ok(None)
        }
        Err(e) => Ok(Some(e.to_string())),
    }
}

/// `selector match` over stdin. The blocking reads run on a plain thread (not the runtime's
/// blocking pool), so Ctrl-C can end the command even while a terminal read is pending.
async fn match_stdin(selector: Selector, shutdown: CancellationToken) -> Result<(), CliError> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        let result = match_reader(&selector, io::stdin(), &mut out);
        let _ = done_tx.send(result);
    });
    tokio::select! {
        result = done_rx => result.unwrap_or_else(|_| Err(CliError::Runtime("stdin reader stopped".to_owned()))),
        () = shutdown.cancelled() => Err(CliError::Interrupted),
    }
}

/// Matches every line of `input`. Output is flushed whenever the input has no more data
/// buffered, so interactive use sees results at once and bulk use is still written in blocks.
fn match_reader(
    selector: &Selector,
    input: impl Read,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let mut raw = Vec::new();
    let mut number = 0usize;
    let mut invalid = 0usize;
    loop {
        if reader.buffer().is_empty() {
            out.flush()?;
        }
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        number += 1;
        let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let reason = match std::str::from_utf8(line) {
            Ok(path) => match_one(selector, path, out)?,
            Err(_) => Some("not valid UTF-8".to_owned()),
        };
        if let Some(reason) = reason {
            eprintln!("topic-cli: line {number}: {reason}");
            invalid += 1;
        }
    }
    out.flush()?;
    if invalid > 0 {
        return Err(CliError::Invalid(format!(
            "{invalid} input line(s) were not valid topic paths"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn reader_matching_keeps_order_and_skips_blank_lines() {
        let mut out = Vec::new();
        let input = "b/x\r\n\na\nb/y\nc\n".as_bytes();
        match_reader(&sel("?b/.*"), input, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "b/x\nb/y\n");
    }

    #[test]
    fn invalid_paths_are_reported_but_do_not_stop_matching() {
        let mut out = Vec::new();
        let err = match_reader(&sel("*.*"), "a//b\nok\n".as_bytes(), &mut out).unwrap_err();
        assert!(matches!(err, CliError::Invalid(_)));
        assert_eq!(String::from_utf8(out).unwrap(), "ok\n");
        let mut out = Vec::new();
        let err = match_reader(&sel("*.*"), &b"\xff\xfe\nok"[..], &mut out).unwrap_err();
        assert!(matches!(err, CliError::Invalid(_)));
        assert_eq!(String::from_utf8(out).unwrap(), "ok\n");
    }

    #[test]
    fn argument_parsers_explain_bad_input() {
        assert!(parse_json("{nope").unwrap_err().contains("not valid JSON"));
        assert_eq!(parse_json("-1").unwrap(), serde_json::json!(-1));
        assert!(
            parse_property("CONFLATION")
                .unwrap_err()
                .contains("KEY=VALUE")
        );
        assert!(parse_property("NOPE=1").is_err());
        assert!(parse_property("conflation=sometimes").is_err());
        assert_eq!(
            parse_property("conflation=always").unwrap(),
            ("CONFLATION".to_owned(), "always".to_owned())
        );
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("x").is_err());
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_user_path("Diffusion/x").is_err());
        assert!(parse_topic_type("TIME").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn values_print_as_compact_json() {
        let mut out = Vec::new();
        write_value(
            &mut out,
            "a/b",
            &serde_json::json!({"k": "line\nbreak", "n": [1, 2]}),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a/b\t{\"k\":\"line\\nbreak\",\"n\":[1,2]}\n"
        );
    }
}
