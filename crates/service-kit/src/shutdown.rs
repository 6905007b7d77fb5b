//! Graceful shutdown: one `tokio_util::sync::CancellationToken` per process, cancelled on SIGINT
//! or SIGTERM.
//!
//! `main` gets the token from [`crate::start_process`] and hands it (or a child token) to
//! every task; tasks finish their current work and return once it is cancelled, and `main`
//! waits for them. A component that must be able to stop its own tasks without stopping its
//! caller takes a `child_token()`.

use tokio_util::sync::CancellationToken;

/// Cancels `token` when the process receives SIGINT or SIGTERM (spawns a task).
pub fn cancel_on_os_signal(token: &CancellationToken) {
    let token = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = wait_for_os_signal() => {
                tracing::info!("shutdown requested");
                token.cancel();
            }
            () = token.cancelled() => {}
        }
    });
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
