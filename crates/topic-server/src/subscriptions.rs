//! Which sessions want which topics: each session's retained selectors and the topics it is
//! subscribed to.
//!
//! Finding the sessions whose selectors select a new topic is a linear scan over sessions for
//! now; it is kept behind [`Subscriptions::sessions_selecting`] so an index (by selector path
//! prefix, say) can replace it without touching the engine.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use diffusion_core::Selector;

use crate::outbound::SessionOutbound;

/// A session's server-wide id.
pub(crate) type SessionId = u64;

struct SessionEntry {
    outbound: Arc<SessionOutbound>,
    selectors: Vec<Selector>,
    topics: HashSet<u64>,
}

/// Every connected session's subscription state.
#[derive(Default)]
pub(crate) struct Subscriptions {
    sessions: HashMap<SessionId, SessionEntry>,
}

impl Subscriptions {
    /// Starts tracking a session that has completed the handshake.
    pub fn register(&mut self, session: SessionId, outbound: Arc<SessionOutbound>) {
        self.sessions.insert(
            session,
            SessionEntry {
                outbound,
                selectors: Vec::new(),
                topics: HashSet::new(),
            },
        );
    }

    /// Forgets a session; returns the ids of the topics it was subscribed to.
    pub fn deregister(&mut self, session: SessionId) -> HashSet<u64> {
        self.sessions
            .remove(&session)
            .map(|entry| entry.topics)
            .unwrap_or_default()
    }

    /// The session's outbound queue, when it is registered.
    pub fn outbound(&self, session: SessionId) -> Option<&Arc<SessionOutbound>> {
        self.sessions.get(&session).map(|e| &e.outbound)
    }

    /// Retains a selector for the session (once per selector text).
    pub fn add_selector(&mut self, session: SessionId, selector: Selector) {
        if let Some(entry) = self.sessions.get_mut(&session)
            && !entry.selectors.contains(&selector)
        {
            entry.selectors.push(selector);
        }
    }

    /// Drops the retained selector with this text; returns it if the session had it.
    pub fn remove_selector(&mut self, session: SessionId, text: &str) -> Option<Selector> {
        let entry = self.sessions.get_mut(&session)?;
        let index = entry.selectors.iter().position(|s| s.as_str() == text)?;
        Some(entry.selectors.remove(index))
    }

    /// Does any of the session's retained selectors select `path`?
    pub fn selects(&self, session: SessionId, path: &str) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|e| e.selectors.iter().any(|s| s.matches(path)))
    }

    /// The sessions whose retained selectors select `path` (a new topic), with their queues.
    pub fn sessions_selecting(&self, path: &str) -> Vec<(SessionId, Arc<SessionOutbound>)> {
        self.sessions
            .iter()
            .filter(|(_, e)| e.selectors.iter().any(|s| s.matches(path)))
            .map(|(id, e)| (*id, Arc::clone(&e.outbound)))
            .collect()
    }

    /// Records that the session is now subscribed to topic `topic`.
    pub fn note_subscribed(&mut self, session: SessionId, topic: u64) {
        if let Some(entry) = self.sessions.get_mut(&session) {
            entry.topics.insert(topic);
        }
    }

    /// Records that the session is no longer subscribed to topic `topic`.
    pub fn note_unsubscribed(&mut self, session: SessionId, topic: u64) {
        if let Some(entry) = self.sessions.get_mut(&session) {
            entry.topics.remove(&topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn selectors_are_retained_once_and_matched() {
        let mut subs = Subscriptions::default();
        subs.register(1, Arc::new(SessionOutbound::new(100)));
        subs.register(2, Arc::new(SessionOutbound::new(100)));
        subs.add_selector(1, sel("?a/.*"));
        subs.add_selector(1, sel("?a/.*"));
        subs.add_selector(2, sel(">a/b"));
        let mut ids: Vec<_> = subs
            .sessions_selecting("a/b")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        assert_eq!(ids, [1, 2]);
        assert!(subs.remove_selector(1, "?a/.*").is_some());
        assert!(subs.remove_selector(1, "?a/.*").is_none(), "retained once");
        assert!(!subs.selects(1, "a/b"));
        assert!(subs.selects(2, "a/b"));
    }

    #[test]
    fn deregister_returns_topics() {
        let mut subs = Subscriptions::default();
        subs.register(1, Arc::new(SessionOutbound::new(100)));
        subs.note_subscribed(1, 7);
        subs.note_subscribed(1, 8);
        subs.note_unsubscribed(1, 7);
        assert_eq!(subs.deregister(1), HashSet::from([8]));
        assert!(subs.deregister(1).is_empty());
    }
}
