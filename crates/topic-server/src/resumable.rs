//! Version-2 sessions that outlive their connection: the registry that finds one by its token
//! when a client resumes it, and the watch that ends it when nobody comes back in time.
//!
//! A session is registered when its `connected` is sent and stays registered until it ends.
//! While its connection is gone it still takes updates (its queue conflates and keeps its
//! limit); it ends when the reconnect window passes, when its queue overflows, or at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::ServerContext;
use crate::outbound::{CloseReason, SessionOutbound};
use crate::subscriptions::SessionId;

/// What a resuming connection takes over.
#[derive(Clone)]
pub(crate) struct ResumableSession {
    /// The secret that resumes it.
    pub token: String,
    /// The engine's id for the session: its subscriptions stay attached to it.
    pub id: SessionId,
    /// The name it has in logs.
    pub name: String,
    /// Its queue and recovery buffer.
    pub outbound: Arc<SessionOutbound>,
}

/// Version-2 sessions by token.
#[derive(Default)]
pub(crate) struct SessionRegistry {
    sessions: Mutex<HashMap<String, ResumableSession>>,
}

impl SessionRegistry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, ResumableSession>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a session resumable under its token.
    pub fn insert(&self, session: ResumableSession) {
        self.map().insert(session.token.clone(), session);
    }

    /// The session with this token, if it has not ended.
    pub fn get(&self, token: &str) -> Option<ResumableSession> {
        self.map().get(token).cloned()
    }

    /// Forgets an ended session.
    pub fn remove(&self, token: &str) {
        self.map().remove(token);
    }
}

/// A fresh session token: 128 random bits in hex, so one cannot be guessed.
pub(crate) fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Ends a version-2 session for good: the engine forgets it and it can no longer be resumed.
pub(crate) fn end_session(ctx: &ServerContext, session: &ResumableSession) {
    ctx.sessions.remove(&session.token);
    session.outbound.end();
    ctx.engine.close_session(session.id);
}

/// Waits, in the background, for a detached session to be resumed; ends it when the reconnect
/// window passes first, when its queue overflows meanwhile, or when the server shuts down.
pub(crate) fn watch_detached(
    ctx: Arc<ServerContext>,
    session: ResumableSession,
    generation: u64,
    shutdown: CancellationToken,
) {
    let window = ctx.config.reconnect_window;
    tokio::spawn(async move {
        let outcome = tokio::select! {
            () = tokio::time::sleep(window) => "reconnect window passed",
            () = shutdown.cancelled() => "server shutting down",
            reason = session.outbound.closed(generation) => match reason {
                // Taken over by a resuming connection: nothing more to watch.
                CloseReason::Replaced => return,
                _ => "queue limit reached while disconnected",
            },
        };
        if session.outbound.end_if_detached(generation) {
            tracing::debug!(session = %session.name, why = outcome, "session not resumed; ended");
            ctx.sessions.remove(&session.token);
            ctx.engine.close_session(session.id);
            ctx.metrics.session_closed("not_resumed");
        }
    });
}
