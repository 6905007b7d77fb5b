//! The demo pipeline, started the way `scripts/demo.sh` starts it: a private redis-server with
//! `deploy/redis.conf` and its append-only file in a temporary directory, topic-server (or three
//! `--cluster` nodes) with the demo's views and security, redis-ws-bridge with a fresh publish
//! token, backend-app with the demo's backend credentials, and data-feeder with the synthetic
//! source — every one on a free loopback port chosen once, so that a restarted process comes
//! back at the address the others know.
//!
//! Dropping the pipeline kills and reaps every process (see
//! [`service_kit::testing::process`]) before its temporary directory is removed.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use service_kit::testing::TempDir;
use service_kit::testing::process::{Ready, Service, ServiceSpec};

use crate::ports::Ports;

/// One topic-server, or three sharing one topic tree in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `scripts/demo.sh`: one topic-server, the dashboard's and the backend's.
    Single,
    /// `scripts/demo.sh --cluster`: three `--cluster` nodes; the dashboard on node 1,
    /// backend-app publishing into node 2 with node 3 as its failover.
    Cluster,
}

impl Topology {
    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Single => "single node",
            Self::Cluster => "cluster (three nodes)",
        }
    }
}

/// Where the binaries and the repository's files are, and how the feed runs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The directory of the release binaries (`target/release`).
    pub bin_dir: PathBuf,
    /// The repository's root (for `deploy/` and `web/`).
    pub root: PathBuf,
    /// The feeder's `--interval`.
    pub feed_interval: Duration,
}

/// How a tier shows it is healthy, besides running.
#[derive(Debug, Clone, Copy)]
pub enum Health {
    /// `GET /healthz` on this address answers 2xx.
    Http(SocketAddr),
    /// redis-server at this address answers `PING` with `PONG`.
    RedisPing(SocketAddr),
    /// backend-app listens on nothing: running is all it can show.
    Running,
}

/// One supervised process of the pipeline.
pub struct Tier {
    /// Its name in the report (`redis-server`, `topic-node-1`, …).
    pub name: String,
    /// The process.
    pub service: Service,
    /// How its health is checked after a fault.
    pub health: Health,
}

/// The running pipeline: its tiers in start order, and what the dashboard connects to.
pub struct Pipeline {
    /// The processes, in the order they were started (redis-server first).
    pub tiers: Vec<Tier>,
    /// The topic-server URLs the dashboard's client is given (comma-separated; in a cluster
    /// all three nodes, node 1 first, as the dashboard's `?topics=` lists them).
    pub dashboard_urls: String,
    /// Redis's data directory (append-only file); removed on drop, after the processes.
    _run_dir: TempDir,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Last started first; each drop kills and reaps its process, so redis-server no longer
        // writes into the data directory when that is removed after this.
        while let Some(tier) = self.tiers.pop() {
            drop(tier);
        }
    }
}

/// The topic the backend relays and the dashboard shows.
pub const TOPIC: &str = "redis/bitcoin";

/// The environment variable the publish token travels in (as in demo.sh).
const TOKEN_VAR: &str = "DEMO_PUBLISH_TOKEN";

impl Pipeline {
    /// Starts redis-server and every tier, in demo.sh's order, each waiting for the one before
    /// to be ready.
    pub async fn start(topology: Topology, setup: &Setup) -> anyhow::Result<Self> {
        let run_dir = TempDir::new("chaos")?;
        let nodes = match topology {
            Topology::Single => 1,
            Topology::Cluster => 3,
        };
        let ports = Ports::choose(nodes)?;
        let redis_addr = ports.redis;
        let redis_url = format!("redis://{redis_addr}/");
        let mut tiers = Vec::new();

        let redis = ServiceSpec::new("redis-server", "redis-server", Ready::Accepting(redis_addr))
            .args([setup.root.join("deploy/redis.conf").into_os_string()])
            .args([
                "--port",
                &redis_addr.port().to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([OsString::from("--dir"), run_dir.path().into()]);
        tiers.push(start_tier(redis, Health::RedisPing(redis_addr)).await?);

        let node_addrs: Vec<SocketAddr> = ports.nodes.iter().map(|(addr, _)| *addr).collect();
        let dashboard = node_addrs[0];
        let origins = format!(
            "http://127.0.0.1:{p},http://localhost:{p}",
            p = dashboard.port()
        );
        for (i, (addr, metrics_addr)) in ports.nodes.iter().enumerate() {
            let name = match topology {
                Topology::Single => "topic-server".to_owned(),
                Topology::Cluster => format!("topic-node-{}", i + 1),
            };
            let mut spec = ServiceSpec::new(
                name,
                binary(setup, "topic-server")?,
                Ready::LogAddress("addr".into()),
            )
            .args(["--listen", &addr.to_string(), "--web-dir"])
            .args([setup.root.join("web").into_os_string()])
            .args([
                OsString::from("--views"),
                setup.root.join("deploy/views.txt").into(),
            ])
            .args([
                OsString::from("--security"),
                setup.root.join("deploy/security.toml").into(),
            ])
            .args(["--metrics-listen", &metrics_addr.to_string()]);
            if topology == Topology::Cluster {
                spec = spec.args([
                    "--cluster",
                    &redis_url,
                    "--node-id",
                    &format!("node-{}", i + 1),
                    "--allowed-origins",
                    &origins,
                ]);
            }
            tiers.push(start_tier(spec, Health::Http(*addr)).await?);
        }

        let token = random_token();
        let bridge_addr = ports.bridge;
        let bridge_url = format!("ws://{bridge_addr}/");
        let bridge = ServiceSpec::new(
            "redis-ws-bridge",
            binary(setup, "redis-ws-bridge")?,
            Ready::LogAddress("local_addr".into()),
        )
        .env(TOKEN_VAR, &token)
        .args([
            "--listen",
            &bridge_addr.to_string(),
            "--redis-url",
            &redis_url,
        ])
        .args(["--publish-token-env", TOKEN_VAR]);
        tiers.push(start_tier(bridge, Health::Http(bridge_addr)).await?);

        // The backend publishes into node 2 (node 3 its failover) in a cluster, so the
        // dashboard's values on node 1 have crossed Redis.
        let backend_targets = match topology {
            Topology::Single => format!("ws://{dashboard}"),
            Topology::Cluster => format!("ws://{},ws://{}", node_addrs[1], node_addrs[2]),
        };
        let mut backend = ServiceSpec::new(
            "backend-app",
            binary(setup, "backend-app")?,
            Ready::LogMessage("topic server ready".into()),
        )
        .args(["--from", &bridge_url, "--topic-server", &backend_targets])
        .args(["--topic", TOPIC]);
        for (key, value) in credentials(&setup.root.join("deploy/demo-credentials/backend.env"))? {
            backend = backend.env(key, value);
        }
        tiers.push(start_tier(backend, Health::Running).await?);

        let feeder_addr = ports.feeder;
        let feeder = ServiceSpec::new(
            "data-feeder",
            binary(setup, "data-feeder")?,
            Ready::LogAddress("control".into()),
        )
        .env(TOKEN_VAR, &token)
        .args(["--source", "synthetic", "--interval"])
        .args([format!("{}ms", setup.feed_interval.as_millis())])
        // Every poll a new price (the default 0.2 leaves random silences of several seconds,
        // which a 5 s recovery bound cannot tell from an outage).
        .args(["--synthetic-change-probability", "1"])
        .args(["--sink", &bridge_url, "--publish-token-env", TOKEN_VAR])
        .args(["--control-listen", &feeder_addr.to_string()])
        .args(["--allowed-origins", &origins]);
        tiers.push(start_tier(feeder, Health::Http(feeder_addr)).await?);

        let dashboard_urls = node_addrs
            .iter()
            .map(|addr| format!("ws://{addr}/ws"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Self {
            tiers,
            dashboard_urls,
            _run_dir: run_dir,
        })
    }

    /// The last lines of every tier's log, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for tier in &self.tiers {
            let _ = writeln!(
                out,
                "--- {} (pid {}{}):\n{}",
                tier.name,
                tier.service.pid,
                if tier.service.alive() {
                    ""
                } else {
                    ", not running"
                },
                tier.service.log_tail_lines(lines)
            );
        }
        out
    }
}

/// Starts one tier.
async fn start_tier(spec: ServiceSpec, health: Health) -> anyhow::Result<Tier> {
    let name = spec.name.clone();
    let service = Service::start(spec)
        .await
        .with_context(|| format!("starting {name}"))?;
    Ok(Tier {
        name,
        service,
        health,
    })
}

/// The path of a release binary, which must exist.
fn binary(setup: &Setup, name: &str) -> anyhow::Result<PathBuf> {
    let path = setup.bin_dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build the release binaries first (scripts/chaos.sh does)",
        path.display()
    );
    Ok(path)
}

/// The `TOPIC_PRINCIPAL` and `TOPIC_CREDENTIALS` lines of a demo credentials file, the
/// identity demo.sh hands backend-app in its environment.
fn credentials(file: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let found = parse_credentials(&text);
    anyhow::ensure!(
        found.len() == 2,
        "{} lacks TOPIC_PRINCIPAL or TOPIC_CREDENTIALS",
        file.display()
    );
    Ok(found)
}

/// The identity lines of a credentials file's text (other lines and comments skipped).
fn parse_credentials(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| matches!(*key, "TOPIC_PRINCIPAL" | "TOPIC_CREDENTIALS"))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// A fresh publish token for the bridge (48 hex digits), as demo.sh's `random_token`.
fn random_token() -> String {
    (0..24)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_the_identity_lines_only() {
        let text = "# comment\nTOPIC_PRINCIPAL=backend\nOTHER=x\nTOPIC_CREDENTIALS=a=b\n";
        assert_eq!(
            parse_credentials(text),
            vec![
                ("TOPIC_PRINCIPAL".to_owned(), "backend".to_owned()),
                ("TOPIC_CREDENTIALS".to_owned(), "a=b".to_owned()),
            ]
        );
    }

    #[test]
    fn tokens_are_48_hex_digits() {
        let token = random_token();
        assert_eq!(token.len(), 48);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
