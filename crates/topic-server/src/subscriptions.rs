//! Which sessions want which topics: each session's retained selectors, and the subscriber
//! relation — which sessions are subscribed to which topics.
//!
//! The relation is kept here and nowhere else, indexed both ways (by topic for fan-out, by
//! session for closing and re-checking a session) and changed only through
//! [`Subscriptions::subscribe`], [`Subscriptions::unsubscribe`],
//! [`Subscriptions::remove_topic`] and [`Subscriptions::deregister`], which update both
//! indexes together, so they cannot disagree.
//!
//! Retained selectors live in a [`SelectorIndex`] bucketed by selector path prefix, so finding
//! the sessions that select a newly added topic `a/b/c` probes the buckets `""`, `a`, `a/b` and
//! `a/b/c` and tests only the selectors found there: it never scans every session. Everything
//! about one session (adding or dropping a selector, asking whether it still selects a path,
//! forgetting it when it closes) costs in proportion to that session's own selectors, never to
//! everyone's: a session with tens of thousands of selectors must not stall the others.
//! Each session's selectors are bounded in number and in estimated memory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use diffusion_core::Selector;
use diffusion_core::security::PathPermission;
use diffusion_core::selector_index::SelectorIndex;

use crate::outbound::SessionOutbound;
use crate::security::Access;

/// A session's server-wide id.
pub(crate) type SessionId = u64;

struct SessionEntry {
    outbound: Arc<SessionOutbound>,
    /// Who the session is and what it may do.
    access: Access,
    /// The selectors this session retains (also in the index), by text.
    selectors: HashMap<Arc<str>, Selector>,
    /// Estimated memory of those selectors.
    selector_bytes: usize,
    /// The topics it is subscribed to (the relation by session).
    topics: HashSet<u64>,
}

/// How many selectors, and how much selector memory, one session may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SelectorQuota {
    /// Most selectors.
    pub max_count: usize,
    /// Most estimated bytes ([`Selector::memory_bytes`]).
    pub max_bytes: usize,
}

/// A selector the session may not add: the message names the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QuotaError {
    /// Too many selectors.
    #[error("this session already holds its maximum of {0} selectors")]
    Count(usize),
    /// Too much selector memory.
    #[error(
        "this selector needs about {needed} bytes and this session's selectors may take at most {limit} (in use: {used})"
    )]
    Bytes {
        /// The new selector's estimate.
        needed: usize,
        /// Estimated bytes in use.
        used: usize,
        /// The limit.
        limit: usize,
    },
}

/// Every connected session's subscription state.
#[derive(Default)]
pub(crate) struct Subscriptions {
    sessions: HashMap<SessionId, SessionEntry>,
    index: SelectorIndex<SessionId>,
    /// The relation by topic id: each subscriber with its queue, for fan-out.
    subscribers: HashMap<u64, HashMap<SessionId, Arc<SessionOutbound>>>,
}

impl Subscriptions {
    /// Starts tracking a session that has completed the handshake.
    pub fn register(&mut self, session: SessionId, outbound: Arc<SessionOutbound>, access: Access) {
        self.sessions.insert(
            session,
            SessionEntry {
                outbound,
                access,
                selectors: HashMap::new(),
                selector_bytes: 0,
                topics: HashSet::new(),
            },
        );
    }

    /// Forgets a session, its selectors and its subscriptions. Touches only this session's
    /// selectors and subscriptions.
    pub fn deregister(&mut self, session: SessionId) {
        let Some(entry) = self.sessions.remove(&session) else {
            return;
        };
        for selector in entry.selectors.values() {
            self.index.remove(&session, selector);
        }
        for topic in entry.topics {
            self.forget_subscriber(topic, session);
        }
    }

    /// Takes `session` out of `topic`'s subscribers; returns its queue if it was one.
    fn forget_subscriber(
        &mut self,
        topic: u64,
        session: SessionId,
    ) -> Option<Arc<SessionOutbound>> {
        let subscribers = self.subscribers.get_mut(&topic)?;
        let outbound = subscribers.remove(&session);
        if subscribers.is_empty() {
            self.subscribers.remove(&topic);
        }
        outbound
    }

    /// Subscribes the session to `topic`; returns its queue, or `None` when it is not
    /// registered or already subscribed.
    pub fn subscribe(&mut self, session: SessionId, topic: u64) -> Option<Arc<SessionOutbound>> {
        let entry = self.sessions.get_mut(&session)?;
        if !entry.topics.insert(topic) {
            return None;
        }
        let outbound = Arc::clone(&entry.outbound);
        self.subscribers
            .entry(topic)
            .or_default()
            .insert(session, Arc::clone(&outbound));
        Some(outbound)
    }

    /// Ends the session's subscription to `topic`; returns its queue if it was subscribed.
    pub fn unsubscribe(&mut self, session: SessionId, topic: u64) -> Option<Arc<SessionOutbound>> {
        let entry = self.sessions.get_mut(&session)?;
        if !entry.topics.remove(&topic) {
            return None;
        }
        self.forget_subscriber(topic, session)
    }

    /// Whether the session is subscribed to `topic`.
    pub fn is_subscribed(&self, session: SessionId, topic: u64) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|e| e.topics.contains(&topic))
    }

    /// The subscribers of `topic`, with their queues.
    pub fn subscribers(
        &self,
        topic: u64,
    ) -> impl Iterator<Item = (SessionId, &Arc<SessionOutbound>)> {
        self.subscribers
            .get(&topic)
            .into_iter()
            .flat_map(|s| s.iter().map(|(id, o)| (*id, o)))
    }

    /// Ends every subscription to `topic` (it is going away); returns the subscribers.
    pub fn remove_topic(&mut self, topic: u64) -> Vec<(SessionId, Arc<SessionOutbound>)> {
        let subscribers = self.subscribers.remove(&topic).unwrap_or_default();
        for session in subscribers.keys() {
            if let Some(entry) = self.sessions.get_mut(session) {
                entry.topics.remove(&topic);
            }
        }
        subscribers.into_iter().collect()
    }

    /// The registered sessions with their queues.
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &Arc<SessionOutbound>)> {
        self.sessions.iter().map(|(id, e)| (*id, &e.outbound))
    }

    /// The session's access, when it is registered.
    pub fn access(&self, session: SessionId) -> Option<&Access> {
        self.sessions.get(&session).map(|e| &e.access)
    }

    /// The session's access, to be replaced when it proves a new identity.
    pub fn access_mut(&mut self, session: SessionId) -> Option<&mut Access> {
        self.sessions.get_mut(&session).map(|e| &mut e.access)
    }

    /// Every registered session's access, to be replaced after a reload.
    pub fn accesses_mut(&mut self) -> impl Iterator<Item = &mut Access> {
        self.sessions.values_mut().map(|e| &mut e.access)
    }

    /// The session's retained selectors.
    pub fn selectors_of(&self, session: SessionId) -> Vec<Selector> {
        self.sessions
            .get(&session)
            .map(|e| e.selectors.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The topics the session is subscribed to.
    pub fn topics_of(&self, session: SessionId) -> Vec<u64> {
        self.sessions
            .get(&session)
            .map(|e| e.topics.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The session's outbound queue, when it is registered.
    pub fn outbound(&self, session: SessionId) -> Option<&Arc<SessionOutbound>> {
        self.sessions.get(&session).map(|e| &e.outbound)
    }

    /// Whether the session may add `selector` under `quota`: `Ok(false)` when it already holds
    /// a selector with the same text (which costs nothing more).
    pub fn check_quota(
        &self,
        session: SessionId,
        selector: &Selector,
        quota: SelectorQuota,
    ) -> Result<bool, QuotaError> {
        let Some(entry) = self.sessions.get(&session) else {
            return Ok(false);
        };
        if entry.selectors.contains_key(selector.as_str()) {
            return Ok(false);
        }
        if entry.selectors.len() >= quota.max_count {
            return Err(QuotaError::Count(quota.max_count));
        }
        let needed = selector.memory_bytes();
        if entry.selector_bytes.saturating_add(needed) > quota.max_bytes {
            return Err(QuotaError::Bytes {
                needed,
                used: entry.selector_bytes,
                limit: quota.max_bytes,
            });
        }
        Ok(true)
    }

    /// Retains a selector for the session (once per selector text); returns whether it is new.
    /// The caller has checked the quota.
    pub fn add_selector(&mut self, session: SessionId, selector: Selector) -> bool {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return false;
        };
        let text: Arc<str> = Arc::from(selector.as_str());
        if entry.selectors.contains_key(&text) {
            return false;
        }
        entry.selector_bytes += selector.memory_bytes();
        entry.selectors.insert(text, selector.clone());
        self.index.insert(session, selector);
        true
    }

    /// Drops the retained selector with the same text; returns whether the session had it.
    pub fn remove_selector(&mut self, session: SessionId, selector: &Selector) -> bool {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return false;
        };
        let Some(held) = entry.selectors.remove(selector.as_str()) else {
            return false;
        };
        entry.selector_bytes -= held.memory_bytes();
        self.index.remove(&session, &held)
    }

    /// Does any of the session's retained selectors other than `except` select `path`? Looks
    /// only at this session's selectors.
    pub fn selects(&self, session: SessionId, path: &str, except: Option<&Selector>) -> bool {
        self.index.owner_selects(&session, path, except)
    }

    /// The sessions whose retained selectors select `path` (a new topic) and that may read
    /// it, each once.
    pub fn sessions_selecting(&self, path: &str) -> Vec<SessionId> {
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        // Dedup with a set: a popular prefix can hold thousands of sessions.
        self.index.for_each_match(path, |session, _| {
            if seen.insert(*session)
                && let Some(entry) = self.sessions.get(session)
                && entry.access.grant.allows(PathPermission::ReadTopic, path)
            {
                found.push(*session);
            }
        });
        found
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
        let mut ids = subs.sessions_selecting(path);
        ids.sort();
        ids
    }

    /// The relation's two indexes agree after every kind of change.
    #[test]
    fn the_subscriber_relation_stays_one_relation() {
        let mut subs = Subscriptions::default();
        for session in 1..=3 {
            subs.register(
                session,
                Arc::new(SessionOutbound::new(1 << 20)),
                Access::open(),
            );
        }
        let by_topic = |subs: &Subscriptions, topic: u64| {
            let mut ids: Vec<SessionId> = subs.subscribers(topic).map(|(id, _)| id).collect();
            ids.sort_unstable();
            ids
        };
        assert!(subs.subscribe(1, 10).is_some());
        assert!(subs.subscribe(1, 10).is_none(), "already subscribed");
        assert!(subs.subscribe(2, 10).is_some());
        assert!(subs.subscribe(2, 11).is_some());
        assert!(subs.subscribe(9, 10).is_none(), "not registered");
        assert_eq!(by_topic(&subs, 10), [1, 2]);
        assert!(subs.is_subscribed(2, 11));

        assert!(subs.unsubscribe(1, 10).is_some());
        assert!(subs.unsubscribe(1, 10).is_none());
        assert_eq!(by_topic(&subs, 10), [2]);
        assert!(subs.topics_of(1).is_empty());

        let gone: Vec<SessionId> = subs
            .remove_topic(10)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(gone, [2]);
        assert_eq!(subs.topics_of(2), [11]);

        subs.deregister(2);
        assert!(by_topic(&subs, 11).is_empty());
        assert!(subs.subscribers.is_empty(), "no empty entries left behind");
    }

    const ROOMY: SelectorQuota = SelectorQuota {
        max_count: 100,
        max_bytes: 1 << 30,
    };

    #[test]
    fn selectors_are_retained_once_and_matched() {
        let mut subs = Subscriptions::default();
        subs.register(1, Arc::new(SessionOutbound::new(100)), Access::open());
        subs.register(2, Arc::new(SessionOutbound::new(100)), Access::open());
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
    fn deregister_ends_subscriptions_and_empties_the_index() {
        let mut subs = Subscriptions::default();
        subs.register(1, Arc::new(SessionOutbound::new(100)), Access::open());
        subs.register(2, Arc::new(SessionOutbound::new(100)), Access::open());
        subs.add_selector(1, sel("?a/.*"));
        subs.add_selector(1, sel(">a/b"));
        subs.add_selector(2, sel(">a/b"));
        subs.subscribe(1, 7);
        subs.subscribe(1, 8);
        subs.subscribe(2, 8);
        subs.unsubscribe(1, 7);
        subs.deregister(1);
        subs.deregister(1);
        assert_eq!(
            subs.subscribers(8).map(|(id, _)| id).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(subs.retained(), 1);
        assert_eq!(ids(&subs, "a/b"), [2]);
        assert_eq!(subs.sessions().count(), 1);
    }

    #[test]
    fn quotas_count_selectors_and_their_memory() {
        let mut subs = Subscriptions::default();
        subs.register(1, Arc::new(SessionOutbound::new(100)), Access::open());
        let by_count = SelectorQuota {
            max_count: 2,
            max_bytes: 1 << 30,
        };
        for s in [">a", ">b"] {
            assert_eq!(subs.check_quota(1, &sel(s), by_count), Ok(true));
            subs.add_selector(1, sel(s));
        }
        assert_eq!(subs.check_quota(1, &sel(">a"), by_count), Ok(false));
        assert_eq!(
            subs.check_quota(1, &sel(">c"), by_count),
            Err(QuotaError::Count(2))
        );
        subs.remove_selector(1, &sel(">b"));
        assert_eq!(subs.check_quota(1, &sel(">c"), by_count), Ok(true));
        // A pattern costs its automaton: a budget that fits paths does not fit it.
        let by_bytes = SelectorQuota {
            max_count: 100,
            max_bytes: 4096,
        };
        assert_eq!(subs.check_quota(1, &sel(">c"), by_bytes), Ok(true));
        assert!(matches!(
            subs.check_quota(1, &sel("?c/.*"), by_bytes),
            Err(QuotaError::Bytes { .. })
        ));
        assert_eq!(subs.check_quota(1, &sel("?x/.*"), ROOMY), Ok(true));
    }

    #[test]
    fn a_session_with_many_selectors_is_forgotten_quickly() {
        let mut subs = Subscriptions::default();
        subs.register(1, Arc::new(SessionOutbound::new(100)), Access::open());
        subs.register(2, Arc::new(SessionOutbound::new(100)), Access::open());
        subs.add_selector(2, sel(">x/keep"));
        for i in 0..30_000 {
            subs.add_selector(1, sel(&format!("#>x/{i}////>y/{i}")));
        }
        subs.deregister(1);
        assert_eq!(subs.retained(), 1);
        assert_eq!(ids(&subs, "x/keep"), [2]);
    }
}
