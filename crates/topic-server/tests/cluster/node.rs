//! A topic-server node as a real process in cluster mode, for tests that kill, pause and
//! restart nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use service_kit::testing::{TempDir, free_port, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use topic_client::{ClientConfig, ConnectOptions, TopicClient};

/// How long a node may take to join its cluster and listen.
const START_LIMIT: Duration = Duration::from_secs(30);

/// One node: its process, ports and log.
pub struct Node {
    pub name: String,
    port: u16,
    metrics_port: u16,
    cluster: String,
    extra: Vec<String>,
    logs: TempDir,
    child: Option<Child>,
    starts: usize,
}

impl Node {
    /// Starts node `name` on free ports, sharing the tree kept at `cluster` (a URL list).
    pub async fn start(name: &str, cluster: &str, extra: &[&str]) -> Self {
        let mut node = Self {
            name: name.to_owned(),
            port: free_port().unwrap(),
            metrics_port: free_port().unwrap(),
            cluster: cluster.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            logs: TempDir::new("cluster-node").unwrap(),
            child: None,
            starts: 0,
        };
        node.restart().await;
        node
    }

    fn log_path(&self) -> PathBuf {
        self.logs
            .path()
            .join(format!("{}-{}.log", self.name, self.starts))
    }

    /// Starts the process again (same ports) and waits until it listens.
    pub async fn restart(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_topic-server"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .args(["--cluster", &self.cluster, "--node-id", &self.name])
            .args(["--web-dir", "/nonexistent"])
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let path = self.log_path();
        let joined = wait_until(START_LIMIT, || {
            let path = path.clone();
            async move {
                std::fs::read_to_string(&path)
                    .is_ok_and(|log| log.contains("topic server listening"))
            }
        })
        .await;
        assert!(
            joined.is_ok(),
            "node {} did not start:\n{}",
            self.name,
            self.log()
        );
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// A client of this node.
    pub async fn client(&self) -> TopicClient {
        client_of(&self.url()).await
    }

    /// Everything the node has logged since it last started.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the process as a crash would (SIGKILL) and waits for it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Stops the process as an operator would (SIGTERM) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal(&mut child, "-TERM");
            tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .expect("the node stops on SIGTERM")
                .unwrap();
        }
    }

    /// Pauses (SIGSTOP) or resumes (SIGCONT) the process.
    pub fn pause(&mut self, paused: bool) {
        let mut child = self.child.take().expect("running");
        self.signal(&mut child, if paused { "-STOP" } else { "-CONT" });
        self.child = Some(child);
    }

    fn signal(&self, child: &mut Child, signal: &str) {
        let pid = child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The value of one line of `/metrics` (the first whose series starts with `series`).
    pub async fn metric(&self, series: &str) -> f64 {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        body.lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// A client of the nodes at `urls` (comma-separated), quick to move on when one goes away.
pub async fn client_of(urls: &str) -> TopicClient {
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    TopicClient::connect_with(urls, ConnectOptions::default(), config)
        .await
        .unwrap()
}
