//! Graceful shutdown: one trigger, many listeners.
//!
//! `main` creates a [`Shutdown`], hands a [`ShutdownSignal`] to every task, and triggers it on
//! SIGINT/SIGTERM; tasks finish their current work and return, and `main` waits for them.

use tokio::sync::watch;

/// The sending side: trigger once, every signal sees it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

/// A listener that tasks await (or poll) to learn that shutdown has begun.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    receiver: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A fresh, untriggered shutdown.
    pub fn new() -> Self {
        let (sender, _) = watch::channel(false);
        Self { sender }
    }

    /// A new listener.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            receiver: self.sender.subscribe(),
        }
    }

    /// Begins shutdown; every current and future listener sees it.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Triggers shutdown when the process receives SIGINT or SIGTERM (spawns a task).
    pub fn trigger_on_os_signal(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_os_signal().await;
            tracing::info!("shutdown requested");
            this.trigger();
        });
    }
}

impl ShutdownSignal {
    /// True once shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Completes when shutdown begins (at once if it already has).
    pub async fn recv(&mut self) {
        // An error means the `Shutdown` was dropped: treat that as a shutdown too.
        let _ = self.receiver.wait_for(|v| *v).await;
    }

    /// A signal that never fires, for components run without a supervisor.
    pub fn never() -> Self {
        let (sender, receiver) = watch::channel(false);
        std::mem::forget(sender);
        Self { receiver }
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn wait_for_os_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_see_the_trigger() {
        let shutdown = Shutdown::new();
        let mut early = shutdown.signal();
        assert!(!early.is_triggered());
        shutdown.trigger();
        early.recv().await;
        let mut late = shutdown.signal();
        assert!(late.is_triggered());
        late.recv().await;
    }
}
