//! Reading the watched processes: memory, descriptors and CPU from /proc, queued bytes and
//! connections from a topic server's `/metrics`.

use std::time::Duration;

use loadgen::procfs;
use service_kit::metrics_text;

use crate::config::Watched;

/// How long one `/metrics` request may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// One reading of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// CPU time so far, clock ticks.
    pub cpu_ticks: u64,
    /// Bytes waiting in the server's session queues (`topic_server_queued_bytes`).
    pub queued_bytes: Option<f64>,
    /// Sessions connected (`topic_server_connections`).
    pub connections: Option<f64>,
    /// Sessions the engine holds, connected or waiting to be resumed (`topic_server_sessions`).
    pub sessions: Option<f64>,
}

impl Reading {
    /// Its memory and CPU as `procfs` counts them (for CPU use between two readings).
    pub fn proc_sample(&self) -> procfs::ProcSample {
        procfs::ProcSample {
            rss_bytes: self.rss_bytes,
            cpu_ticks: self.cpu_ticks,
        }
    }
}

/// Reads the watched processes.
pub struct Sampler {
    watched: Vec<Watched>,
    http: reqwest::Client,
}

impl Sampler {
    /// A sampler of `watched`.
    pub fn new(watched: Vec<Watched>) -> anyhow::Result<Self> {
        // reqwest's TLS layer needs the process-wide crypto provider, even for plain HTTP.
        service_kit::tls::install_default_provider();
        // No kept-alive connections: the servers' descriptor counts must not include the
        // sampler's own connection to their /metrics (it comes and goes with idle timeouts).
        let http = reqwest::Client::builder()
            .timeout(METRICS_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Self { watched, http })
    }

    /// The watched processes, in the order of every reading.
    pub fn watched(&self) -> &[Watched] {
        &self.watched
    }

    /// One reading per watched process; `None` for a process that has gone.
    pub async fn read_all(&self) -> Vec<Option<Reading>> {
        let mut readings = Vec::with_capacity(self.watched.len());
        for watched in &self.watched {
            readings.push(self.read(watched).await);
        }
        readings
    }

    async fn read(&self, watched: &Watched) -> Option<Reading> {
        let proc = procfs::sample(watched.pid).ok()?;
        let fds = procfs::open_fds(watched.pid)?;
        let mut reading = Reading {
            rss_bytes: proc.rss_bytes,
            fds,
            cpu_ticks: proc.cpu_ticks,
            ..Reading::default()
        };
        if let Some(url) = &watched.metrics_url {
            match self.metrics(url).await {
                Ok(body) => {
                    reading.queued_bytes = metrics_text::sum_of(&body, "topic_server_queued_bytes");
                    reading.connections = metrics_text::sum_of(&body, "topic_server_connections");
                    reading.sessions = metrics_text::sum_of(&body, "topic_server_sessions");
                }
                Err(error) => tracing::warn!(%url, %error, "reading metrics failed"),
            }
        }
        Some(reading)
    }

    async fn metrics(&self, url: &str) -> reqwest::Result<String> {
        self.http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn this_process_can_be_read() {
        let me = Watched {
            name: "me".into(),
            pid: std::process::id(),
            metrics_url: None,
        };
        let gone = Watched {
            name: "gone".into(),
            pid: u32::MAX,
            metrics_url: None,
        };
        let sampler = Sampler::new(vec![me, gone]).unwrap();
        let readings = sampler.read_all().await;
        let mine = readings[0].unwrap();
        assert!(mine.rss_bytes > 0 && mine.fds > 0);
        assert_eq!(mine.queued_bytes, None);
        assert_eq!(readings[1], None);
    }
}
