//! What one soak run does: which servers, how many subscribers, how much churn, how long.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// A process the soak watches: its name in the results, its pid, and (for a topic server) the
/// Prometheus endpoint that reports its queued bytes and connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// The column prefix in the CSV (`node1`, `redis`, …).
    pub name: String,
    /// The process id, read from /proc.
    pub pid: u32,
    /// `http://…/metrics`, or `None` for a process without one (redis-server).
    pub metrics_url: Option<String>,
}

/// Why a `--watch` value could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchedError {
    /// Not `NAME:PID` or `NAME:PID:URL`.
    #[error("expected NAME:PID or NAME:PID:METRICS_URL, got '{0}'")]
    Shape(String),
    /// The name is empty or not usable as a CSV column prefix.
    #[error("'{0}' is not a name: use letters, digits, '-' and '_'")]
    Name(String),
    /// The pid is not a number.
    #[error("'{0}' is not a process id")]
    Pid(String),
}

impl std::str::FromStr for Watched {
    type Err = WatchedError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.splitn(3, ':');
        let (Some(name), Some(pid)) = (parts.next(), parts.next()) else {
            return Err(WatchedError::Shape(text.to_owned()));
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(WatchedError::Name(name.to_owned()));
        }
        let pid = pid.parse().map_err(|_| WatchedError::Pid(pid.to_owned()))?;
        let metrics_url = parts.next().filter(|u| !u.is_empty()).map(str::to_owned);
        Ok(Self {
            name: name.to_owned(),
            pid,
            metrics_url,
        })
    }
}

/// Settings of one soak run. Every flag has a `SOAK_*` environment fallback.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Topic server WebSocket URLs (the nodes of a cluster, comma-separated): subscriber i
    /// connects to URL number i mod their count; the feed publishes through the first.
    #[arg(long, env = "SOAK_URL", value_delimiter = ',', required = true)]
    pub url: Vec<String>,

    /// Processes to sample (repeatable): `NAME:PID` or `NAME:PID:http://HOST:PORT/metrics`.
    #[arg(
        long = "watch",
        env = "SOAK_WATCH",
        value_delimiter = ',',
        required = true
    )]
    pub watched: Vec<Watched>,

    /// How long to run, in minutes (fractions allowed).
    #[arg(long, env = "SOAK_MINUTES", default_value_t = 60.0)]
    pub minutes: f64,

    /// How long the warm-up lasts, in minutes: memory is compared from its end on. Default:
    /// 5 minutes, or a third of the run if that is shorter.
    #[arg(long, env = "SOAK_WARMUP_MINUTES")]
    pub warmup_minutes: Option<f64>,

    /// Subscriber connections kept open (stalled ones included).
    #[arg(long, env = "SOAK_SUBSCRIBERS", default_value_t = 10_000)]
    pub subscribers: usize,

    /// Percent of the subscribers that disconnect and connect again every minute.
    #[arg(long, env = "SOAK_CHURN_PERCENT_PER_MINUTE", default_value_t = 5.0)]
    pub churn_percent_per_minute: f64,

    /// Percent of the subscribers that subscribe to every topic and then never read.
    #[arg(long, env = "SOAK_STALLED_PERCENT", default_value_t = 1.0)]
    pub stalled_percent: f64,

    /// How long a stalled subscriber holds its connection before a new stalled one takes its
    /// place, in seconds. The server gives up on one well within a soak (heartbeat timeout,
    /// then the reconnect window), so stalled readers come and go to keep the pressure on.
    #[arg(long, env = "SOAK_STALLED_LIFETIME_SECONDS", default_value_t = 60.0)]
    pub stalled_lifetime_seconds: f64,

    /// Source topics the feed updates in turn (`soak/t/0`, `soak/t/1`, …).
    #[arg(long, env = "SOAK_TOPICS", default_value_t = 100)]
    pub topics: usize,

    /// Updates per second, over all source topics.
    #[arg(long, env = "SOAK_RATE", default_value_t = 10.0)]
    pub rate: f64,

    /// Seconds between two samples.
    #[arg(long, env = "SOAK_SAMPLE_SECONDS", default_value_t = 10.0)]
    pub sample_seconds: f64,

    /// Fail when a watched process's resident memory at the end exceeds its memory at the end
    /// of the warm-up by more than this many percent.
    #[arg(long, env = "SOAK_RSS_GROWTH_LIMIT_PERCENT", default_value_t = 5.0)]
    pub rss_growth_limit_percent: f64,

    /// Where the CSV of samples and the summary go (created if missing).
    #[arg(long, env = "SOAK_OUT", default_value = "soak-results")]
    pub out: PathBuf,

    /// First source address for subscriber connections; later ones count up from it.
    #[arg(long, env = "SOAK_SOURCE_BASE", default_value = "127.0.0.2")]
    pub source_base: Ipv4Addr,

    /// Subscriber connections per source address (below the topic server's default limit of
    /// 1,000 per address, with room for a churned connection the server has not yet seen go).
    #[arg(long, env = "SOAK_PER_SOURCE", default_value_t = 800)]
    pub per_source: usize,

    /// Connection attempts in flight at once.
    #[arg(long, env = "SOAK_CONNECT_CONCURRENCY", default_value_t = 100)]
    pub connect_concurrency: usize,
}

/// A setting that makes no sense.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A count, rate or duration out of its range.
    #[error("--{0} must be {1}")]
    Range(&'static str, &'static str),
}

impl Config {
    /// Refuses settings that cannot run: every count and duration range-checked here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.minutes) || self.minutes > 7.0 * 24.0 * 60.0 {
            return Err(ConfigError::Range("minutes", "above 0 and at most a week"));
        }
        if let Some(w) = self.warmup_minutes
            && !(w.is_finite() && w >= 0.0 && w < self.minutes)
        {
            return Err(ConfigError::Range(
                "warmup-minutes",
                "at least 0 and shorter than the run",
            ));
        }
        if self.subscribers == 0 || self.subscribers > 100_000 {
            return Err(ConfigError::Range("subscribers", "between 1 and 100,000"));
        }
        if !(self.churn_percent_per_minute.is_finite()
            && (0.0..=100.0).contains(&self.churn_percent_per_minute))
        {
            return Err(ConfigError::Range(
                "churn-percent-per-minute",
                "between 0 and 100",
            ));
        }
        if !(self.stalled_percent.is_finite() && (0.0..=50.0).contains(&self.stalled_percent)) {
            return Err(ConfigError::Range("stalled-percent", "between 0 and 50"));
        }
        if !(self.stalled_lifetime_seconds.is_finite()
            && (1.0..=86_400.0).contains(&self.stalled_lifetime_seconds))
        {
            return Err(ConfigError::Range(
                "stalled-lifetime-seconds",
                "between 1 and 86,400",
            ));
        }
        if self.topics == 0 || self.topics > 100_000 {
            return Err(ConfigError::Range("topics", "between 1 and 100,000"));
        }
        if !positive(self.rate) || self.rate > 100_000.0 {
            return Err(ConfigError::Range("rate", "above 0 and at most 100,000"));
        }
        if !(self.sample_seconds.is_finite() && (0.1..=3600.0).contains(&self.sample_seconds)) {
            return Err(ConfigError::Range(
                "sample-seconds",
                "between 0.1 and 3,600",
            ));
        }
        if !(self.rss_growth_limit_percent.is_finite() && self.rss_growth_limit_percent >= 0.0) {
            return Err(ConfigError::Range("rss-growth-limit-percent", "at least 0"));
        }
        if self.per_source == 0 || self.connect_concurrency == 0 {
            return Err(ConfigError::Range(
                "per-source and --connect-concurrency",
                "at least 1",
            ));
        }
        Ok(())
    }

    /// The whole run.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }

    /// The warm-up: as given, else 5 minutes or a third of the run, whichever is shorter.
    pub fn warmup(&self) -> Duration {
        let minutes = self
            .warmup_minutes
            .unwrap_or_else(|| (self.minutes / 3.0).min(5.0));
        Duration::from_secs_f64(minutes * 60.0)
    }

    /// Time between samples.
    pub fn sample_interval(&self) -> Duration {
        Duration::from_secs_f64(self.sample_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parsed(extra: &[&str]) -> Config {
        use clap::Parser;
        let mut args = vec![
            "soak",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--watch",
            "server:1",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).unwrap().config
    }

    #[test]
    fn settings_are_range_checked() {
        let defaults = parsed(&[]);
        assert_eq!(defaults.validate(), Ok(()));
        assert_eq!(defaults.warmup(), Duration::from_secs(300));
        assert_eq!(
            parsed(&["--minutes", "3"]).warmup(),
            Duration::from_secs(60)
        );
        for bad in [
            &["--minutes", "0"][..],
            &["--minutes", "NaN"],
            &["--minutes", "1", "--warmup-minutes", "1"],
            &["--subscribers", "0"],
            &["--churn-percent-per-minute", "101"],
            &["--stalled-percent", "60"],
            &["--stalled-lifetime-seconds", "0"],
            &["--rate", "0"],
            &["--sample-seconds", "0.01"],
            &["--per-source", "0"],
        ] {
            assert!(parsed(bad).validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn watched_processes_parse() {
        assert_eq!(
            "node1:42:http://127.0.0.1:9465/metrics".parse::<Watched>(),
            Ok(Watched {
                name: "node1".into(),
                pid: 42,
                metrics_url: Some("http://127.0.0.1:9465/metrics".into()),
            })
        );
        assert_eq!(
            "redis:7".parse::<Watched>(),
            Ok(Watched {
                name: "redis".into(),
                pid: 7,
                metrics_url: None,
            })
        );
        assert!(matches!(
            "redis".parse::<Watched>(),
            Err(WatchedError::Shape(_))
        ));
        assert!(matches!(
            "a,b:1".parse::<Watched>(),
            Err(WatchedError::Name(_))
        ));
        assert!(matches!(
            "redis:x".parse::<Watched>(),
            Err(WatchedError::Pid(_))
        ));
    }
}
