//! Command-line and environment configuration: where payloads come from, where they go, and how
//! often.
//!
//! Every flag has an environment fallback (`FEEDER_*`) so the feeder can be configured the same
//! way in a container as on a terminal. Values are validated while parsing, so a typo fails at
//! start-up with a clear message instead of surfacing later as a string of failed polls.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use service_kit::origins;
use service_kit::secret::Secret;

/// The shortest poll interval accepted on the command line. Tests poll every few tens of
/// milliseconds; anything shorter would only load the source without telling anyone more.
pub const MIN_CLI_INTERVAL: Duration = Duration::from_millis(10);

/// The longest poll interval accepted anywhere: an hour between polls is already a very slow feed.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// The shortest interval the control API accepts, so a click on the dashboard cannot turn the
/// feeder into a load generator against a public API.
pub const MIN_API_INTERVAL: Duration = Duration::from_millis(100);

/// Why a flag value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A duration that is not `<number><unit>` with a known unit.
    #[error("invalid duration {input:?}: {reason} (examples: 5s, 500ms, 2m, 1h, 1m30s)")]
    Duration {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A duration outside the accepted range.
    #[error("interval {got:?} is out of range ({min:?} to {max:?})")]
    IntervalRange {
        /// The parsed value.
        got: Duration,
        /// The smallest accepted value.
        min: Duration,
        /// The largest accepted value.
        max: Duration,
    },
    /// A source that is neither `synthetic` nor an http(s) URL.
    #[error("invalid source {0:?}: expected `synthetic` or an http:// or https:// URL")]
    Source(String),
    /// A sink that is neither a `ws(s)://` nor a `redis(s)://` URL.
    #[error(
        "invalid sink {0:?}: expected ws://HOST:PORT or wss://HOST:PORT (the redis-ws-bridge), \
         or redis://HOST:PORT or rediss://HOST:PORT"
    )]
    Sink(String),
    /// A probability outside 0..=1.
    #[error("invalid probability {0:?}: expected a number from 0 to 1")]
    Probability(String),
    /// An empty Redis channel name.
    #[error("the channel name must not be empty")]
    EmptyChannel,
}

/// Where payloads come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The built-in generator of CoinDesk-BPI-shaped payloads; needs no network.
    Synthetic,
    /// A live JSON API polled with HTTP GET.
    Http(reqwest::Url),
}

impl FromStr for SourceSpec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("synthetic") {
            return Ok(Self::Synthetic);
        }
        match reqwest::Url::parse(s) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                Ok(Self::Http(url))
            }
            _ => Err(ConfigError::Source(s.to_owned())),
        }
    }
}

impl fmt::Display for SourceSpec {
    /// Shows the source with any password removed, for logs and `/status`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Synthetic => f.write_str("synthetic"),
            Self::Http(url) => f.write_str(&redact(url)),
        }
    }
}

/// Where payloads go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// The redis-ws-bridge at this `ws://` or `wss://` URL: each payload becomes one WebSocket
    /// text frame.
    WebSocket(String),
    /// Redis itself at this `redis://` or `rediss://` URL: each payload is PUBLISHed to the
    /// configured channel.
    Redis(String),
}

impl SinkSpec {
    /// Whether the sink is reached over TLS (`wss://`, `rediss://`).
    pub fn is_tls(&self) -> bool {
        match self {
            Self::WebSocket(url) | Self::Redis(url) => {
                let url = url.to_ascii_lowercase();
                url.starts_with("wss://") || url.starts_with("rediss://")
            }
        }
    }
}

impl FromStr for SinkSpec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let url = reqwest::Url::parse(s).map_err(|_| ConfigError::Sink(s.to_owned()))?;
        if !url.has_host() {
            return Err(ConfigError::Sink(s.to_owned()));
        }
        match url.scheme() {
            "ws" | "wss" => Ok(Self::WebSocket(s.to_owned())),
            "redis" | "rediss" => Ok(Self::Redis(s.to_owned())),
            _ => Err(ConfigError::Sink(s.to_owned())),
        }
    }
}

impl fmt::Display for SinkSpec {
    /// Shows the sink with any password removed, for logs and `/status`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WebSocket(url) | Self::Redis(url) => match reqwest::Url::parse(url) {
                Ok(parsed) => f.write_str(&redact(&parsed)),
                // Only reachable for hand-built specs; such a URL fails to connect and says so.
                Err(_) => f.write_str("<invalid url>"),
            },
        }
    }
}

/// A URL with its password (if any) replaced, so credentials never reach logs or the API.
fn redact(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot carry credentials, which then have none to hide.
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// Everything the feeder needs to run. Construct it with clap (`#[command(flatten)]`) in the
/// binary, or with [`Config::default`] plus field updates in tests.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Where payloads come from: `synthetic` (built-in CoinDesk-BPI-shaped generator, no network
    /// needed) or an http(s):// URL of a live JSON API, polled with GET. Non-JSON bodies are
    /// logged and not published.
    #[arg(long, env = "FEEDER_SOURCE", default_value = "synthetic")]
    pub source: SourceSpec,

    /// Time between polls, e.g. 5s, 500ms, 2m, 1m30s (10ms to 1h). Failed polls are retried
    /// with back-off instead.
    #[arg(long, env = "FEEDER_INTERVAL", default_value = "5s", value_parser = parse_cli_interval)]
    pub interval: Duration,

    /// Where payloads go: ws://HOST:PORT (or wss:// for TLS) sends each payload as one
    /// WebSocket text frame to the redis-ws-bridge; redis://[:PASSWORD@]HOST:PORT[/DB] (or
    /// rediss:// for TLS) PUBLISHes it directly to --channel.
    #[arg(long, env = "FEEDER_SINK", default_value = "ws://127.0.0.1:3000")]
    pub sink: SinkSpec,

    /// Name of the environment variable holding the bridge's publish token (ws:// and wss://
    /// sinks), presented as `Authorization: Bearer TOKEN` when connecting. Without it the
    /// bridge refuses to publish the feeder's payloads.
    #[arg(long, env = "FEEDER_PUBLISH_TOKEN_ENV", value_name = "VAR")]
    pub publish_token_env: Option<String>,

    /// The publish token itself, for a feeder embedded in another process (tests); when set,
    /// `publish_token_env` is not read. Never taken from the command line.
    #[arg(skip)]
    pub publish_token: Option<Secret>,

    /// PEM file of the CA that signed a wss:// or rediss:// sink's certificate, when it is not
    /// a public one. (For wss:// it is trusted besides the public web roots; for rediss:// it is
    /// the only CA trusted.)
    #[arg(long, env = "FEEDER_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Redis channel to PUBLISH to (redis:// sinks only; the bridge chooses its own channel).
    #[arg(long, env = "FEEDER_CHANNEL", default_value = "app:notifications", value_parser = parse_channel)]
    pub channel: String,

    /// Address of the HTTP control API (GET /status, POST /start, /stop, /interval, GET /healthz).
    /// Loopback by default: whoever reaches it can pause the feed or change its pace.
    #[arg(long, env = "FEEDER_CONTROL_LISTEN", default_value = "127.0.0.1:3100")]
    pub control_listen: SocketAddr,

    /// Comma-separated browser origins allowed to call the control API (e.g. the dashboard's
    /// `http://localhost:8080`). A request with any other `Origin` gets HTTP 403, preflights
    /// included; requests without `Origin` (curl, scripts) are not affected. Empty (the
    /// default): no browser page may call it.
    #[arg(long, env = "FEEDER_ALLOWED_ORIGINS", value_delimiter = ',',
          value_parser = origins::parse_origin)]
    pub allowed_origins: Vec<String>,

    /// Name of the environment variable holding the control API's bearer token. When set,
    /// every route but /healthz needs `Authorization: Bearer TOKEN` (else HTTP 401).
    #[arg(long, env = "FEEDER_CONTROL_TOKEN_ENV", value_name = "VAR")]
    pub control_token_env: Option<String>,

    /// The control token itself, for a feeder embedded in another process (tests); when set,
    /// `control_token_env` is not read. Never taken from the command line.
    #[arg(skip)]
    pub control_token: Option<Secret>,

    /// Start with polling paused; POST /start on the control API begins it.
    #[arg(long, env = "FEEDER_START_PAUSED")]
    pub start_paused: bool,

    /// Timeout of one HTTP poll (connect + response + body), e.g. 10s.
    #[arg(long, env = "FEEDER_HTTP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_timeout: Duration,

    /// Seed of the synthetic source's random walk, for reproducible runs (random if unset).
    #[arg(long, env = "FEEDER_SEED")]
    pub seed: Option<u64>,

    /// Probability that a synthetic poll carries a new price. Otherwise the payload, time
    /// fields included, is byte-identical to the previous one, as the real index's was between
    /// its updates. The default 0.2 gives a new price every 5th poll on average (every ~25 s at
    /// 5 s polls); 0.083 mimics the real index's roughly once-a-minute updates.
    #[arg(
        long,
        env = "FEEDER_SYNTHETIC_CHANGE_PROBABILITY",
        default_value_t = 0.2,
        value_parser = parse_probability
    )]
    pub synthetic_change_probability: f64,
}

impl Default for Config {
    /// The documented defaults, without reading the environment.
    fn default() -> Self {
        Self {
            source: SourceSpec::Synthetic,
            interval: Duration::from_secs(5),
            sink: SinkSpec::WebSocket("ws://127.0.0.1:3000".to_owned()),
            channel: "app:notifications".to_owned(),
            publish_token_env: None,
            publish_token: None,
            ca_file: None,
            control_listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
            allowed_origins: Vec::new(),
            control_token_env: None,
            control_token: None,
            start_paused: false,
            http_timeout: Duration::from_secs(10),
            seed: None,
            synthetic_change_probability: 0.2,
        }
    }
}

/// Parses a humane duration: one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`
/// (e.g. `5s`, `500ms`, `2m`, `1.5s`, `1m30s`).
pub fn parse_duration(input: &str) -> Result<Duration, ConfigError> {
    let err = |reason: &str| ConfigError::Duration {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(err("empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit"))?;
        if number_len == 0 {
            return Err(err("expected a number"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| err("malformed number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err("unknown unit (use ms, s, m or h)")),
        };
        rest = &rest[unit_len..];
        let part =
            Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| err("too large"))?;
        total = total.checked_add(part).ok_or_else(|| err("too large"))?;
    }
    Ok(total)
}

/// Parses a poll interval given on the command line and checks it lies in 10 ms..=1 h.
pub fn parse_cli_interval(input: &str) -> Result<Duration, ConfigError> {
    let interval = parse_duration(input)?;
    check_interval(interval, MIN_CLI_INTERVAL)?;
    Ok(interval)
}

/// Checks that `interval` lies in `min..=MAX_INTERVAL`.
pub fn check_interval(interval: Duration, min: Duration) -> Result<(), ConfigError> {
    if interval < min || interval > MAX_INTERVAL {
        return Err(ConfigError::IntervalRange {
            got: interval,
            min,
            max: MAX_INTERVAL,
        });
    }
    Ok(())
}

fn parse_probability(input: &str) -> Result<f64, ConfigError> {
    match input.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(ConfigError::Probability(input.to_owned())),
    }
}

fn parse_channel(input: &str) -> Result<String, ConfigError> {
    if input.is_empty() {
        return Err(ConfigError::EmptyChannel);
    }
    Ok(input.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn humane_durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 50ms "), Ok(Duration::from_millis(50)));
    }

    #[test]
    fn bad_durations_are_rejected_with_a_reason() {
        for bad in [
            "", "5", "s", "5x", "5 s", "-5s", "1..5s", "ms5", "5sec", "1e3s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.to_string().contains("examples"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn cli_interval_range() {
        assert!(parse_cli_interval("10ms").is_ok());
        assert!(parse_cli_interval("1h").is_ok());
        assert!(matches!(
            parse_cli_interval("5ms"),
            Err(ConfigError::IntervalRange { .. })
        ));
        assert!(matches!(
            parse_cli_interval("61m"),
            Err(ConfigError::IntervalRange { .. })
        ));
    }

    #[test]
    fn sources() {
        assert_eq!("synthetic".parse(), Ok(SourceSpec::Synthetic));
        assert_eq!("Synthetic".parse(), Ok(SourceSpec::Synthetic));
        let http: SourceSpec = "https://api.example.com/v1/bpi.json".parse().unwrap();
        assert!(matches!(http, SourceSpec::Http(_)));
        for bad in ["", "ftp://x/y", "example.com/x", "http://", "random"] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sinks() {
        for (good, tls) in [
            ("ws://127.0.0.1:3000", false),
            ("wss://bridge.example:3000", true),
        ] {
            let sink: SinkSpec = good.parse().unwrap();
            assert!(matches!(sink, SinkSpec::WebSocket(_)), "{good}");
            assert_eq!(sink.is_tls(), tls, "{good}");
        }
        for (good, tls) in [
            ("redis://127.0.0.1:6379", false),
            ("rediss://redis.example", true),
        ] {
            let sink: SinkSpec = good.parse().unwrap();
            assert!(matches!(sink, SinkSpec::Redis(_)), "{good}");
            assert_eq!(sink.is_tls(), tls, "{good}");
        }
        for bad in ["", "wss://", "http://x", "127.0.0.1:3000"] {
            let err = bad.parse::<SinkSpec>().unwrap_err();
            assert!(err.to_string().contains("expected ws://"), "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_hidden_when_shown() {
        let sink: SinkSpec = "redis://:hunter2@10.0.0.1:6379/0".parse().unwrap();
        let shown = sink.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("10.0.0.1:6379"), "{shown}");
        let source: SourceSpec = "https://me:secret@example.com/x".parse().unwrap();
        assert!(!source.to_string().contains("secret"));
    }

    #[test]
    fn defaults_match_the_documentation() {
        let cli = Cli::try_parse_from(["data-feeder"]).unwrap();
        let parsed = cli.config;
        let default = Config::default();
        // The environment of the test run could set FEEDER_*; only compare when it does not.
        if std::env::vars().all(|(k, _)| !k.starts_with("FEEDER_")) {
            assert_eq!(parsed.source, default.source);
            assert_eq!(parsed.interval, default.interval);
            assert_eq!(parsed.sink, default.sink);
            assert_eq!(parsed.channel, default.channel);
            assert_eq!(parsed.control_listen, default.control_listen);
            assert_eq!(parsed.start_paused, default.start_paused);
            assert_eq!(parsed.http_timeout, default.http_timeout);
            assert_eq!(parsed.seed, default.seed);
            assert_eq!(
                parsed.synthetic_change_probability,
                default.synthetic_change_probability
            );
        }
        assert_eq!(default.sink.to_string(), "ws://127.0.0.1:3000/");
        // The control API is loopback-only unless told otherwise, and open to no browser.
        assert!(default.control_listen.ip().is_loopback());
        assert!(default.allowed_origins.is_empty());
        assert!(default.control_token_env.is_none());
    }

    #[test]
    fn flags_parse_and_bad_values_fail() {
        let cli = Cli::try_parse_from([
            "data-feeder",
            "--source",
            "http://127.0.0.1:9/x",
            "--interval",
            "250ms",
            "--sink",
            "redis://127.0.0.1:6379",
            "--channel",
            "feed",
            "--start-paused",
            "--seed",
            "7",
            "--synthetic-change-probability",
            "1",
        ])
        .unwrap();
        assert_eq!(cli.config.interval, Duration::from_millis(250));
        assert!(cli.config.start_paused);
        assert_eq!(cli.config.seed, Some(7));
        assert_eq!(cli.config.channel, "feed");
        for (flag, value) in [
            ("--interval", "fast"),
            ("--sink", "tcp://x"),
            ("--source", "nope"),
            ("--synthetic-change-probability", "1.5"),
            ("--channel", ""),
            ("--control-listen", "localhost"),
            ("--allowed-origins", "localhost:8080"),
        ] {
            assert!(
                Cli::try_parse_from(["data-feeder", flag, value]).is_err(),
                "{flag} {value}"
            );
        }
    }
}
