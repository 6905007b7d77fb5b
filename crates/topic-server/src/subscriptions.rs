//! Which sessions want which topics: each session's retained selectors and the topics it is
//! subscribed to.
//!
//! Retained selectors live in a [`SelectorIndex`] bucketed by selector path prefix, so finding
//! the sessions that select a newly added topic `a/b/c` probes the buckets `""`, `a`, `a/b` and
//! `a/b/c` and tests only the selectors found there: it never scans every session.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use diffusion_core::Selector;
use diffusion_core::selector_index::SelectorIndex;

use crate::outbound::SessionOutbound;

/// A session's server-wide id.
pub(crate) type SessionId = u64;

struct SessionEntry {
    outbound: Arc<SessionOutbound>,
    /// The selectors this session retains (also in the index), to remove them from their
    /// buckets when the session closes.
    selectors: Vec<Selector>,
    topics: HashSet<u64>,
}

/// Every connected session's subscription state.
#[derive(Default)]
pub(crate) struct Subscriptions {
    sessions: HashMap<SessionId, SessionEntry>,
    index: SelectorIndex<SessionId>,
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

    /// Forgets a session and its selectors; returns the ids of the topics it was subscribed to.
    pub fn deregister(&mut self, session: SessionId) -> HashSet<u64> {
        let Some(entry) = self.sessions.remove(&session) else {
            return HashSet::new();
        };
        // Removing selector by selector touches only the buckets this session used, where
        // `remove_owner` would visit every bucket of every session.
        for selector in &entry.selectors {
            self.index.remove(&session, selector);
        }
        entry.topics
    }

    /// The registered sessions with their queues.
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &Arc<SessionOutbound>)> {
        self.sessions.iter().map(|(id, e)| (*id, &e.outbound))
    }

    /// The session's outbound queue, when it is registered.
    pub fn outbound(&self, session: SessionId) -> Option<&Arc<SessionOutbound>> {
        self.sessions.get(&session).map(|e| &e.outbound)
    }

    /// Retains a selector for the session (once per selector text); returns whether it is new.
    pub fn add_selector(&mut self, session: SessionId, selector: Selector) -> bool {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return false;
        };
        if !self.index.insert(session, selector.clone()) {
            return false;
        }
        entry.selectors.push(selector);
        true
    }

    /// Drops the retained selector with the same text; returns whether the session had it.
    pub fn remove_selector(&mut self, session: SessionId, selector: &Selector) -> bool {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return false;
        };
        entry.selectors.retain(|s| s.as_str() != selector.as_str());
        self.index.remove(&session, selector)
    }

    /// Does any of the session's retained selectors other than `except` select `path`?
    pub fn selects(&self, session: SessionId, path: &str, except: Option<&Selector>) -> bool {
        self.index.owner_selects(&session, path, except)
    }

    /// The sessions whose retained selectors select `path` (a new topic), each once, with
    /// their queues.
    pub fn sessions_selecting(&self, path: &str) -> Vec<(SessionId, Arc<SessionOutbound>)> {
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        // Dedup with a set: a popular prefix can hold thousands of sessions.
        self.index.for_each_match(path, |session, _| {
            if seen.insert(*session)
                && let Some(entry) = self.sessions.get(session)
            {
                found.push((*session, Arc::clone(&entry.outbound)));
            }
        });
        found
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

    /// Retained (session, selector) pairs, for tests of the index's upkeep.
    #[cfg(test)]
    fn retained(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    fn ids(subs: &Subscriptions, path: &str) -> Vec<SessionId> {
        let mut ids: Vec<_> = subs
            .sessions_selecting(path)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn selectors_are_retained_once_and_matched() {
        let mut subs = Subscriptions::default();
        subs.register(1, Arc::new(SessionOutbound::new(100)));
        subs.register(2, Arc::new(SessionOutbound::new(100)));
        assert!(subs.add_selector(1, sel("?a/.*")));
        assert!(!subs.add_selector(1, sel("?a/.*")));
        assert!(subs.add_selector(1, sel("*.*b")));
        assert!(subs.add_selector(2, sel(">a/b")));
        assert!(!subs.add_selector(3, sel(">a/b")), "unregistered session");
        assert_eq!(ids(&subs, "a/b"), [1, 2], "each session once");
        assert_eq!(ids(&subs, "a/c"), [1]);
        assert!(ids(&subs, "x").is_empty());
        assert!(subs.selects(1, "a/b", Some(&sel("?a/.*"))), "*.*b remains");
        assert!(subs.remove_selector(1, &sel("?a/.*")));
        assert!(!subs.remove_selector(1, &sel("?a/.*")), "retained once");
        assert!(!subs.selects(1, "a/c", None));
        assert!(subs.selects(1, "a/b", None));
        assert!(subs.selects(2, "a/b", None));
    }

    #[test]
    fn deregister_returns_topics_and_empties_the_index() {
        let mut subs = Subscriptions::default();
        subs.register(1, Arc::new(SessionOutbound::new(100)));
        subs.register(2, Arc::new(SessionOutbound::new(100)));
        subs.add_selector(1, sel("?a/.*"));
        subs.add_selector(1, sel(">a/b"));
        subs.add_selector(2, sel(">a/b"));
        subs.note_subscribed(1, 7);
        subs.note_subscribed(1, 8);
        subs.note_unsubscribed(1, 7);
        assert_eq!(subs.deregister(1), HashSet::from([8]));
        assert!(subs.deregister(1).is_empty());
        assert_eq!(subs.retained(), 1);
        assert_eq!(ids(&subs, "a/b"), [2]);
        assert_eq!(subs.sessions().count(), 1);
    }
}
