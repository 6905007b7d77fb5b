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
    /// The secret that resumes it (written as 32 hex digits).
    pub token: u128,
    /// The engine's id for the session: its subscriptions stay attached to it.
    pub id: SessionId,
    /// Its queue and recovery buffer.
    pub outbound: Arc<SessionOutbound>,
    /// Who it is: a resumed session keeps the identity it authenticated with.
    pub identity: Arc<crate::security::Identity>,
}

/// Version-2 sessions by token.
#[derive(Default)]
pub(crate) struct SessionRegistry {
    sessions: Mutex<HashMap<u128, ResumableSession>>,
}

impl SessionRegistry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u128, ResumableSession>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a session resumable under its token.
    pub fn insert(&self, session: ResumableSession) {
        self.map().insert(session.token, session);
    }

    /// The session with this token, if it has not ended.
    pub fn get(&self, token: &str) -> Option<ResumableSession> {
        let token = parse_token(token)?;
        self.map().get(&token).cloned()
    }

    /// Forgets an ended session.
    pub fn remove(&self, token: u128) {
        self.map().remove(&token);
    }
}

/// A fresh session token: 128 random bits, so one cannot be guessed.
pub(crate) fn new_token() -> u128 {
    rand::random()
}

/// A token as the client sees it: 32 lower-case hex digits.
pub(crate) fn token_text(token: u128) -> String {
    format!("{token:032x}")
}

/// Reads a token a client presents; anything but 32 hex digits names no session.
fn parse_token(text: &str) -> Option<u128> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}

/// Ends a version-2 session for good: the engine forgets it and it can no longer be resumed.
pub(crate) fn end_session(ctx: &ServerContext, session: &ResumableSession) {
    ctx.sessions.remove(session.token);
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
            tracing::debug!(session = %ctx.session_name(session.id), why = outcome, "session not resumed; ended");
            end_session(&ctx, &session);
            ctx.metrics.session_closed("not_resumed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_hex_digits_and_read_back() {
        let token = new_token();
        let text = token_text(token);
        assert_eq!(text.len(), 32);
        assert_eq!(parse_token(&text), Some(token));
        assert_eq!(parse_token(&text.to_uppercase()), Some(token));
        for bad in [
            "",
            "00",
            &"0".repeat(33),
            &"g".repeat(32),
            "+0000000000000000000000000000001",
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }
}
