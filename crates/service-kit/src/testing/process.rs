//! The platform's real binaries (and redis-server) run as child processes, for the suites that
//! test what users run: the hostile-input suite attacks them, the chaos driver kills, restarts
//! and pauses them.
//!
//! A [`Service`] is started from a [`ServiceSpec`] (program, arguments, environment, and how
//! to tell it is ready) and keeps that spec, so a supervisor can start it again with exactly
//! the same command after a crash. Its output is kept in a bounded ring of lines for failure
//! messages, across restarts. Dropping a [`Service`] kills its process and reaps it before the
//! drop returns, so whatever the test or driver removes next (a data directory) is no longer in
//! use, and a stopped (SIGSTOP) process is not left behind: SIGKILL ends a stopped process too.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::procfs;

/// How long a process may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of output kept per service (older ones are dropped).
const LOG_LINES: usize = 400;

/// How long dropping a [`Service`] waits for its killed process to be reaped.
const REAP_WITHIN: Duration = Duration::from_secs(5);

/// Why a process could not be started, stopped or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be spawned (missing binary, no permission).
    #[error("starting {name} ({program}): {source}")]
    Spawn {
        /// The service.
        name: String,
        /// The program's path.
        program: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The process did not say it was ready within [`READY_TIMEOUT`].
    #[error("{name} did not become ready within {READY_TIMEOUT:?}")]
    NotReady {
        /// The service.
        name: String,
    },
    /// The process exited before it was ready.
    #[error("{name} exited before it was ready")]
    Exited {
        /// The service.
        name: String,
    },
    /// A signal could not be delivered (the process is gone, or `kill(1)` is missing).
    #[error("sending SIG{signal} to {name} (pid {pid}): {detail}")]
    Signal {
        /// The service.
        name: String,
        /// The signal's name without `SIG`.
        signal: &'static str,
        /// The process id.
        pid: u32,
        /// What went wrong.
        detail: String,
    },
}

/// How to tell that a freshly started process is ready to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// The process logs JSON (`--log-format json` is appended to its arguments) and is ready
    /// when a line's field of this name holds a socket address, which becomes
    /// [`Service::addr`].
    LogAddress(String),
    /// The process logs JSON (`--log-format json` is appended) and is ready when a log message
    /// contains this text; it listens on nothing ([`Service::addr`] is unspecified).
    LogMessage(String),
    /// The process writes plain output (redis-server) and is ready when this address accepts
    /// TCP connections, which becomes [`Service::addr`].
    Accepting(SocketAddr),
}

/// Everything needed to start a process, and to start it again the same way.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Its name, for messages.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment variables set for it (besides `RUST_LOG=info` and the inherited ones).
    pub env: Vec<(OsString, OsString)>,
    /// When it counts as started.
    pub ready: Ready,
}

impl ServiceSpec {
    /// A process named `name` running `program` without arguments.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>, ready: Ready) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            ready,
        }
    }

    /// The same, with `args` appended to its arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The same, with `key=value` in its environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// The lines a service wrote, shared with the tasks reading its output.
type LogRing = Arc<Mutex<VecDeque<String>>>;

/// One running process started from a [`ServiceSpec`]; killed when dropped.
pub struct Service {
    /// Its name, for messages.
    pub name: String,
    /// Its process id (a new one after [`Service::restart`]).
    pub pid: u32,
    /// The address it listens on (see [`Ready`]).
    pub addr: SocketAddr,
    spec: ServiceSpec,
    child: OwnedChild,
    /// The fields of the log line that said it was ready (other addresses it names).
    ready_fields: Value,
    log: LogRing,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts the process `spec` describes and waits (at most [`READY_TIMEOUT`]) until it is
    /// ready.
    pub async fn start(spec: ServiceSpec) -> Result<Self, ProcessError> {
        let log = LogRing::default();
        let (child, pid, addr, ready_fields) = spawn(&spec, &log).await?;
        Ok(Self {
            name: spec.name.clone(),
            pid,
            addr,
            spec,
            child,
            ready_fields,
            log,
        })
    }

    /// What it was started with.
    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    /// Starts it again with the same command (as a supervisor does after a crash; the
    /// previous process is killed first if it still runs) and waits until it is ready. Its
    /// log keeps the earlier lines, after a marker.
    pub async fn restart(&mut self) -> Result<(), ProcessError> {
        self.kill().await;
        push_line(&self.log, format!("--- {} started again ---", self.name));
        let (child, pid, addr, ready_fields) = spawn(&self.spec, &self.log).await?;
        self.child = child;
        self.pid = pid;
        self.addr = addr;
        self.ready_fields = ready_fields;
        Ok(())
    }

    /// An address named in field `field` of the line that said the service was ready (the
    /// topic server's `metrics` listener, say).
    pub fn ready_addr(&self, field: &str) -> Option<SocketAddr> {
        self.ready_fields[field].as_str()?.parse().ok()
    }

    /// Whether the process is still running (not exited, not a zombie). A stopped process
    /// (SIGSTOP) counts as running.
    pub fn alive(&self) -> bool {
        procfs::alive(self.pid)
    }

    /// Whether the process is stopped by a signal (SIGSTOP, [`Service::pause`]).
    pub fn stopped(&self) -> bool {
        procfs::state(self.pid) == Some('T')
    }

    /// Kills the process (SIGKILL, as a crash or the OOM killer would) and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.0.kill().await;
    }

    /// Stops the process (SIGSTOP), as a machine that pauses would: it holds its sockets but
    /// does nothing until [`Service::resume`].
    pub async fn pause(&self) -> Result<(), ProcessError> {
        self.signal("STOP").await
    }

    /// Lets a paused process run on (SIGCONT).
    pub async fn resume(&self) -> Result<(), ProcessError> {
        self.signal("CONT").await
    }

    /// Sends a signal with `kill(1)` (the workspace forbids `unsafe`, so no `libc::kill`).
    async fn signal(&self, signal: &'static str) -> Result<(), ProcessError> {
        let error = |detail: String| ProcessError::Signal {
            name: self.name.clone(),
            signal,
            pid: self.pid,
            detail,
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|e| error(e.to_string()))?;
        if !status.success() {
            return Err(error(format!("kill exited with {status}")));
        }
        Ok(())
    }

    /// Resident memory now, in bytes (0 if unreadable).
    pub fn rss_bytes(&self) -> u64 {
        procfs::sample(self.pid).map_or(0, |sample| sample.rss_bytes)
    }

    /// Open file descriptors now (0 if unreadable).
    pub fn open_fds(&self) -> usize {
        procfs::open_fds(self.pid).map_or(0, |fds| usize::try_from(fds).unwrap_or(usize::MAX))
    }

    /// The last 20 lines it wrote, for a failure message.
    pub fn log_tail(&self) -> String {
        self.log_tail_lines(20)
    }

    /// The last `lines` lines it wrote.
    pub fn log_tail_lines(&self, lines: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let skip = log.len().saturating_sub(lines);
        log.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether any line it wrote (of those kept) contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().any(|l| l.contains(needle))
    }
}

/// A child process that is killed and reaped when dropped (tokio's `kill_on_drop` only sends
/// the signal and leaves the reaping to later), so that nothing it still writes outlives its
/// owner.
struct OwnedChild(Child);

impl Drop for OwnedChild {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too: no SIGCONT needed first.
        let _ = self.0.start_kill();
        let deadline = std::time::Instant::now() + REAP_WITHIN;
        // Bounded: a killed process becomes reapable within milliseconds.
        while !matches!(self.0.try_wait(), Ok(Some(_)) | Err(_))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Appends a line to a log ring, dropping the oldest when full.
fn push_line(log: &LogRing, line: String) {
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    if log.len() >= LOG_LINES {
        log.pop_front();
    }
    log.push_back(line);
}

/// Starts one process of `spec`, copies its output into `log` and waits until it is ready:
/// (child, pid, address, the ready line's fields).
async fn spawn(
    spec: &ServiceSpec,
    log: &LogRing,
) -> Result<(OwnedChild, u32, SocketAddr, Value), ProcessError> {
    let name = || spec.name.clone();
    let mut command = Command::new(&spec.program);
    command.args(&spec.args);
    if matches!(spec.ready, Ready::LogAddress(_) | Ready::LogMessage(_)) {
        command.args(["--log-format", "json"]);
    }
    let child = command
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            name: name(),
            program: spec.program.display().to_string(),
            source,
        })?;
    // Owned from here on: killed and reaped if it never becomes ready or this is dropped.
    let mut child = OwnedChild(child);
    let pid = child
        .0
        .id()
        .ok_or_else(|| ProcessError::Exited { name: name() })?;
    // Both readers report a line that says "ready"; the channel closes when both have ended
    // (the process exited).
    let (ready_tx, mut ready_rx) = mpsc::channel(2);
    if let Some(stdout) = child.0.stdout.take() {
        read_lines(
            stdout,
            Arc::clone(log),
            spec.ready.clone(),
            ready_tx.clone(),
        );
    }
    if let Some(stderr) = child.0.stderr.take() {
        read_lines(stderr, Arc::clone(log), spec.ready.clone(), ready_tx);
    }
    let wait = async {
        match &spec.ready {
            Ready::Accepting(addr) => {
                let addr = *addr;
                loop {
                    if tokio::net::TcpStream::connect(addr).await.is_ok() {
                        return Ok((addr, Value::Null));
                    }
                    if let Ok(Some(_)) = child.0.try_wait() {
                        return Err(ProcessError::Exited { name: name() });
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Ready::LogAddress(_) | Ready::LogMessage(_) => ready_rx
                .recv()
                .await
                .ok_or_else(|| ProcessError::Exited { name: name() }),
        }
    };
    let (addr, fields) = tokio::time::timeout(READY_TIMEOUT, wait)
        .await
        .map_err(|_| ProcessError::NotReady { name: name() })??;
    Ok((child, pid, addr, fields))
}

/// Copies the lines of one output stream into `log`, and sends the first line that says the
/// process is ready (as `ready` defines it) on `ready_tx`.
fn read_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    log: LogRing,
    ready: Ready,
    ready_tx: mpsc::Sender<(SocketAddr, Value)>,
) {
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if ready_tx.is_some()
                && let Some(found) = ready_line(&ready, &line)
                && let Some(tx) = ready_tx.take()
            {
                let _ = tx.send(found).await;
            }
            push_line(&log, line);
        }
    });
}

/// Whether `line` says the process is ready: its address and the line's fields.
fn ready_line(ready: &Ready, line: &str) -> Option<(SocketAddr, Value)> {
    let parsed = serde_json::from_str::<Value>(line).ok()?;
    let fields = &parsed["fields"];
    let addr = match ready {
        Ready::LogAddress(field) => fields[field].as_str()?.parse::<SocketAddr>().ok()?,
        Ready::LogMessage(text) => {
            if !fields["message"].as_str()?.contains(text.as_str()) {
                return None;
            }
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
        Ready::Accepting(_) => return None,
    };
    Some((addr, fields.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wait_until;

    /// How long a signal may take to change a process's state.
    const STATE_WITHIN: Duration = Duration::from_secs(2);

    #[test]
    fn a_ready_line_names_the_address_or_the_message() {
        let line = r#"{"fields":{"message":"listening","addr":"127.0.0.1:4000"}}"#;
        let (addr, fields) =
            ready_line(&Ready::LogAddress("addr".into()), line).expect("an address");
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 4000)));
        assert_eq!(fields["message"], "listening");
        assert!(ready_line(&Ready::LogAddress("other".into()), line).is_none());
        assert!(ready_line(&Ready::LogMessage("listen".into()), line).is_some());
        assert!(ready_line(&Ready::LogMessage("ready".into()), line).is_none());
        assert!(ready_line(&Ready::LogMessage("x".into()), "not json").is_none());
    }

    #[tokio::test]
    async fn a_process_is_killed_paused_and_restarted() {
        // `sh` stands in for a binary that listens on nothing: ready once it prints.
        let spec = ServiceSpec::new("sleeper", "sh", Ready::LogMessage("up".into())).args([
            "-c",
            r#"echo '{"fields":{"message":"up"}}'; exec sleep 60"#,
            "sh",
        ]);
        let mut service = Service::start(spec).await.expect("starts");
        let first = service.pid;
        assert!(service.alive());
        assert!(!service.stopped());
        service.pause().await.expect("SIGSTOP");
        wait_until(STATE_WITHIN, || async { service.stopped() })
            .await
            .expect("stopped (state T) after SIGSTOP");
        assert!(service.alive(), "a stopped process still runs");
        service.resume().await.expect("SIGCONT");
        wait_until(STATE_WITHIN, || async { !service.stopped() })
            .await
            .expect("running again after SIGCONT");
        service.kill().await;
        assert!(!service.alive());
        service.restart().await.expect("restarts");
        assert_ne!(service.pid, first);
        assert!(service.alive());
        assert!(service.log_contains("started again"));
    }

    #[tokio::test]
    async fn dropping_a_paused_service_kills_and_reaps_it() {
        let spec = ServiceSpec::new("sleeper", "sh", Ready::LogMessage("up".into())).args([
            "-c",
            r#"echo '{"fields":{"message":"up"}}'; exec sleep 60"#,
            "sh",
        ]);
        let service = Service::start(spec).await.expect("starts");
        let pid = service.pid;
        service.pause().await.expect("SIGSTOP");
        wait_until(STATE_WITHIN, || async { service.stopped() })
            .await
            .expect("stopped");
        drop(service);
        // Reaped before the drop returned: no /proc entry at all, not even a zombie.
        assert_eq!(procfs::state(pid), None, "pid {pid} outlived its Service");
    }
}
