//! Test harness: a private `redis-server` on a free loopback port (plain or TLS), test
//! certificates from a private CA ([`TestPki`]), condition waits, and the platform's real
//! binaries run as supervised child processes ([`process`]).
//!
//! Integration tests across the workspace use this instead of a shared Redis (never 6379): each
//! test gets its own server, killed when the handle drops.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

pub mod process;

/// Finds a TCP port that is free on 127.0.0.1 right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(listener.local_addr()?.port())
}

/// A `redis-server` child process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Certificate and key when the server speaks TLS only (`--tls-port`).
    tls: Option<(PathBuf, PathBuf)>,
    /// Where an append-only file keeps the data across restarts, for a persistent server.
    data: Option<TempDir>,
}

impl RedisServer {
    /// Starts redis-server on a free port (no persistence) and waits until it answers PING.
    pub async fn start() -> anyhow::Result<Self> {
        let mut server = Self {
            port: free_port()?,
            child: None,
            tls: None,
            data: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// Starts redis-server with an append-only file synced on every write (in a temporary
    /// directory removed on drop), so [`RedisServer::kill`] and [`RedisServer::restart`] lose
    /// nothing it acknowledged.
    pub async fn start_persistent() -> anyhow::Result<Self> {
        let mut server = Self {
            port: free_port()?,
            child: None,
            tls: None,
            data: Some(TempDir::new("redis-data")?),
        };
        server.restart().await?;
        Ok(server)
    }

    /// Starts redis-server speaking TLS only, with the server certificate of `pki`, and waits
    /// until its port accepts connections. Clients reach it at [`RedisServer::url`]
    /// (`rediss://localhost:PORT/`) trusting `pki`'s CA.
    pub async fn start_tls(pki: &TestPki) -> anyhow::Result<Self> {
        let mut server = Self {
            port: free_port()?,
            child: None,
            tls: Some((pki.cert_file(), pki.key_file())),
            data: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// The URL of this server: `redis://127.0.0.1:PORT/`, or `rediss://localhost:PORT/` for a
    /// TLS server (the name its test certificate carries).
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}/", self.port),
            Some(_) => format!("rediss://localhost:{}/", self.port),
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing redis-server")?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &port]),
            Some((cert, key)) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        match &self.data {
            None => command.args(["--appendonly", "no"]),
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir.path()),
        };
        let child = command
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--protected-mode",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (is it installed? scripts/test.sh installs it)")?;
        self.child = Some(child);
        if self.tls.is_some() {
            // Answering PING would need the test's CA: an open port is enough here.
            let port = self.port;
            return wait_until(Duration::from_secs(10), || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await
            .context("redis-server (TLS) did not open its port");
        }
        answers_ping(&self.url())
            .await
            .context("redis-server did not answer PING")
    }

    /// A multiplexed connection for test commands (PUBLISH and so on).
    pub async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        Ok(client.get_multiplexed_async_connection().await?)
    }
}

/// Waits (10 s at most) until the server at `url` answers PING.
async fn answers_ping(url: &str) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(10), || ping(url)).await
}

async fn ping(url: &str) -> bool {
    answer(url, redis::cmd("PING")).await.is_some()
}

/// The server's answer to `command` as text, or `None` when it cannot be had.
async fn answer(url: &str, command: redis::Cmd) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    command.query_async::<String>(&mut conn).await.ok()
}

/// A directory under the system's temporary directory, removed with what it holds on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "service-kit-{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Redis Cluster of `redis-server --cluster-enabled yes` processes on free loopback ports,
/// one master per process (no replicas), made with `redis-cli --cluster create`; killed when
/// dropped.
#[derive(Debug)]
pub struct RedisCluster {
    ports: Vec<u16>,
    _children: Vec<Child>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts `masters` (at least 3, Redis's minimum) and waits until the cluster says `ok`.
    pub async fn start(masters: usize) -> anyhow::Result<Self> {
        let dir = TempDir::new("redis-cluster")?;
        let mut ports = Vec::new();
        let mut children = Vec::new();
        for _ in 0..masters {
            let port = free_port()?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .arg("--dir")
                .arg(dir.path())
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--protected-mode", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting redis-server (is it installed? scripts/test.sh installs it)")?;
            children.push(child);
            ports.push(port);
        }
        for port in &ports {
            answers_ping(&format!("redis://127.0.0.1:{port}/"))
                .await
                .with_context(|| format!("cluster node {port} did not answer PING"))?;
        }
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .arg("--cluster-yes")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("running redis-cli --cluster create")?;
        if !status.success() {
            bail!("redis-cli --cluster create failed: {status}");
        }
        for port in &ports {
            let url = format!("redis://127.0.0.1:{port}/");
            wait_until(Duration::from_secs(20), || {
                let url = url.clone();
                async move { cluster_ok(&url).await }
            })
            .await
            .with_context(|| format!("cluster node {port} did not reach cluster_state:ok"))?;
        }
        Ok(Self {
            ports,
            _children: children,
            _dir: dir,
        })
    }

    /// The nodes' URLs, `redis://127.0.0.1:PORT/`.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }
}

async fn cluster_ok(url: &str) -> bool {
    let mut info = redis::cmd("CLUSTER");
    info.arg("INFO");
    answer(url, info)
        .await
        .is_some_and(|info| info.contains("cluster_state:ok"))
}

/// Polls `condition` every 20 ms until it is true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A private CA and a server certificate it signed for `localhost` and `127.0.0.1`, written as
/// PEM files into a fresh temporary directory (removed on drop), for TLS tests: a client that
/// trusts [`TestPki::ca_file`] accepts the server, one that does not refuses it.
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// Generates the CA and the server certificate (ECDSA P-256) and writes `ca.pem`,
    /// `cert.pem` (the server certificate) and `key.pem` (its private key).
    pub fn generate() -> anyhow::Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let pki = Self {
            dir: TempDir::new("pki")?,
        };

        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "service-kit test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_certificate = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_certificate = server.signed_by(&server_key, &issuer)?;

        std::fs::write(pki.ca_file(), ca_certificate.pem())?;
        std::fs::write(pki.cert_file(), server_certificate.pem())?;
        std::fs::write(pki.key_file(), server_key.serialize_pem())?;
        Ok(pki)
    }

    /// The directory holding the files (tests may add their own, e.g. a broken one).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM): what a trusting client passes as its CA file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// The server certificate (PEM), valid for `localhost` and `127.0.0.1`.
    pub fn cert_file(&self) -> PathBuf {
        self.dir().join("cert.pem")
    }

    /// The server certificate's private key (PEM, PKCS#8).
    pub fn key_file(&self) -> PathBuf {
        self.dir().join("key.pem")
    }
}
