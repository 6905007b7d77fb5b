//! The topic engine: every protocol operation on topics and subscriptions, under one lock.
//!
//! Operations take the lock, change the topic store and subscription state, and push
//! pre-encoded messages into the affected sessions' bounded queues; they never touch a socket,
//! so the lock is held only for in-memory work. Work that needs no shared state (parsing
//! selectors and view specifications, converting values, encoding a fetch reply) happens
//! before the lock is taken or after it is released, and how long each holding lasts is a
//! histogram in `/metrics` (`topic_server_engine_lock_hold_seconds`), so a stall shows in
//! production.
//!
//! Every operation is bounded by [`EngineLimits`]: topics in the tree and the bytes of their
//! values, views and the size of their specifications, what one source may derive through a
//! view, selectors per session, the size of a fetch reply. A request past a limit gets
//! `LIMIT_EXCEEDED` and changes nothing.
//!
//! A topic update is prepared once ([`Topic::update`]: the `value` message and, where allowed,
//! the `delta` message) and the same [`TopicUpdate`] is handed to every subscriber's queue,
//! which decides delta or full value and applies the topic's conflation policy. When back
//! pressure makes a queue drop an `unsubscribe`-policy topic, the engine ends that
//! subscription after the fan-out loop and tells the session (reason `back_pressure`); the
//! topic then stays unsubscribed for that session, although its selectors still select it,
//! until the session subscribes again with a selector that selects it.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use diffusion_core::conflation::{PushOutcome, TopicUpdate};
use diffusion_core::protocol::{ErrorCode, FetchedRaw, ServerMessage, encode_server_message};
use diffusion_core::view::EvalLimits;
use diffusion_core::{Selector, TopicPath, TopicProperties, TopicType, TopicValue};
use serde_json::Value;

use diffusion_core::security::{GlobalPermission, Grant, PathPermission, RoleLimits};

use crate::metrics::Metrics;
use crate::outbound::{PushError, SessionOutbound};
use crate::security::{Access, Identity};
use crate::stats::QueueStats;
use crate::subscriptions::{SelectorQuota, SessionId, Subscriptions};
use crate::topics::{Topic, TopicStore, retained_len};

/// A request that failed: the code and message of the `error` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub(crate) struct OpError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl OpError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn limit(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::LimitExceeded, message)
    }
}

mod reference;
mod replica;

pub(crate) use replica::{Proposal, Replicated, WireValue, value_from_wire};

/// Who asks for an operation: a session (checked against its grant) or the server itself
/// (its views file, benchmarks), which may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A connected session.
    Session(SessionId),
    /// The server.
    #[cfg_attr(not(any(test, feature = "bench")), allow(dead_code))]
    Server,
}

fn denied(message: impl Into<String>) -> OpError {
    OpError::new(ErrorCode::PermissionDenied, message)
}

/// Refuses unless `access` holds `permission` at `path`.
fn require(access: &Access, permission: PathPermission, path: &str) -> Result<(), OpError> {
    if access.grant.allows(permission, path) {
        return Ok(());
    }
    let at = if path.is_empty() {
        "the root".to_owned()
    } else {
        format!("'{path}'")
    };
    Err(denied(format!("{permission} is needed at {at}")))
}

/// Refuses unless `access` holds the global `permission`.
fn require_global(access: &Access, permission: GlobalPermission) -> Result<(), OpError> {
    if access.grant.allows_global(permission) {
        return Ok(());
    }
    Err(denied(format!("{permission} is needed")))
}

/// What the engine allows any one operation, or the tree as a whole, to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EngineLimits {
    /// Topics in the tree, reference topics included.
    pub max_topics: usize,
    /// Bytes of retained values in the tree.
    pub max_tree_bytes: usize,
    /// Topic views.
    pub max_views: usize,
    /// Bytes of one view specification.
    pub max_view_spec_bytes: usize,
    /// What one source may derive through one view.
    pub eval: EvalLimits,
    /// View results held back by `delay by` (see `reference::Timers`).
    pub max_delayed_results: usize,
    /// Selectors (and their memory) per session.
    pub selectors: SelectorQuota,
    /// Bytes of one `fetched` reply.
    pub max_fetch_reply_bytes: usize,
}

impl EngineLimits {
    /// The limits a server's configuration sets.
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            max_topics: config.max_topics,
            max_tree_bytes: config.max_tree_bytes,
            max_views: config.max_views,
            max_view_spec_bytes: config.max_view_spec_bytes,
            eval: config.eval_limits(),
            max_delayed_results: config.max_delayed_results,
            selectors: SelectorQuota {
                max_count: config.max_selectors_per_session,
                max_bytes: config.max_selector_bytes_per_session,
            },
            max_fetch_reply_bytes: config.max_fetch_reply_bytes,
        }
    }
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self::from_config(&crate::Config::default())
    }
}

/// One page of a `fetch`: the topics and whether more follow.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FetchPage {
    /// The topics, in path order, values in wire JSON.
    pub topics: Vec<FetchedRaw>,
    /// More topics follow this page.
    pub more: bool,
}

/// Setting the topic at this path panics under the engine lock (tests only).
#[cfg(test)]
pub(crate) const PANIC_PATH: &str = "test/panic";

/// Most topics in one fetch page, whatever the client asks for.
const MAX_FETCH_PAGE_TOPICS: usize = 10_000;
/// What a fetched topic costs in a reply besides its path and value (the JSON around them).
const FETCHED_TOPIC_OVERHEAD: usize = 48;

#[derive(Default)]
struct Tree {
    topics: TopicStore,
    subscriptions: Subscriptions,
    /// Topic views and what they derive.
    views: crate::views::ViewRegistry,
    /// Throttle state of reference topics whose view throttles.
    throttles: std::collections::HashMap<String, reference::Throttled>,
    /// What `delay by` holds back and when throttle windows end.
    timers: reference::Timers,
    /// Open sessions per principal (anonymous ones as `ANONYMOUS`).
    sessions_by_principal: std::collections::HashMap<Arc<str>, usize>,
    /// Existing topics each principal has added.
    topics_by_owner: std::collections::HashMap<Arc<str>, usize>,
}

impl Tree {
    /// The access of whoever calls.
    fn access(&self, caller: Caller, open: &Access) -> Access {
        match caller {
            Caller::Server => open.clone(),
            Caller::Session(id) => {
                self.subscriptions
                    .access(id)
                    .cloned()
                    .unwrap_or_else(|| Access {
                        identity: Arc::clone(&open.identity),
                        grant: Arc::default(),
                    })
            }
        }
    }
}

/// Adds `delta` (±1) to a per-principal count, forgetting principals that reach zero.
fn count_for(map: &mut std::collections::HashMap<Arc<str>, usize>, who: &str, up: bool) {
    if up {
        *map.entry(Arc::from(who)).or_default() += 1;
    } else if let Some(n) = map.get_mut(who) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(who);
        }
    }
}

/// What one operation gathers while it changes the tree, settled by [`Engine::finish`] before
/// the lock is released: the subscriptions back pressure ended, as (session, topic id), and
/// the topics whose views must evaluate them again. Views are fed from this queue, never by
/// recursion, so a chain of views costs queue entries, not stack.
#[derive(Default)]
struct Op {
    dropped: Vec<(SessionId, u64)>,
    /// Changed topics, with how many views the change has passed through.
    changes: std::collections::VecDeque<(String, usize)>,
}

impl Op {
    /// The topic at `path` was added, changed value or was removed: every view selecting it
    /// evaluates it again when the operation finishes. `depth` is how many views the change
    /// has already passed through.
    fn source_changed(&mut self, path: &str, depth: usize) {
        self.changes.push_back((path.to_owned(), depth));
    }
}

/// The locked tree; records how long the lock was held when it is released. Sessions the
/// operation queued for are flushed onto their sockets right after the lock is released:
/// `flush` is dropped after `tree` (fields drop in order), so no write happens under the lock.
struct TreeGuard<'a> {
    tree: MutexGuard<'a, Tree>,
    _flush: crate::direct::FlushScope,
    since: Instant,
    metrics: &'a Metrics,
}

impl Deref for TreeGuard<'_> {
    type Target = Tree;
    fn deref(&self) -> &Tree {
        &self.tree
    }
}

impl DerefMut for TreeGuard<'_> {
    fn deref_mut(&mut self) -> &mut Tree {
        &mut self.tree
    }
}

impl Drop for TreeGuard<'_> {
    fn drop(&mut self) {
        self.metrics
            .lock_hold
            .record(self.since.elapsed().as_secs_f64());
    }
}

/// Topics plus subscriptions, shared by every session of one server.
pub(crate) struct Engine {
    tree: Mutex<Tree>,
    /// This engine, for timers (throttle, delay) that call back into it later.
    me: std::sync::Weak<Engine>,
    limits: EngineLimits,
    metrics: Metrics,
    /// Wakes the timer task when a new deadline is set (or the engine goes away).
    timer_wake: Arc<tokio::sync::Notify>,
    timer_started: std::sync::OnceLock<()>,
    conflations: AtomicU64,
    back_pressure_unsubscriptions: AtomicU64,
    /// Highest queue high-water mark among sessions that have closed.
    closed_peak_bytes: AtomicUsize,
    /// The access of the server itself.
    open_access: Access,
    /// What an identity may do under the security store in force now. Called under the lock
    /// whenever a session or view gets its grant, so a reload (which swaps the store, then
    /// calls [`Engine::reauthorise`]) can never be missed by one being set up meanwhile.
    grant_of: GrantFn,
}

/// Computes an identity's grant under the security store in force.
pub(crate) type GrantFn = Box<dyn Fn(&Identity) -> Arc<Grant> + Send + Sync>;

fn parse_selector(text: &str) -> Result<Selector, OpError> {
    Selector::parse(text).map_err(|e| OpError::new(ErrorCode::InvalidSelector, e.to_string()))
}

/// Converts a request's value for the topic, keeping the request's own tree for a JSON value
/// (it is the value: canonical JSON is that tree, printed), so nothing parses it again.
fn to_value(
    topic_type: TopicType,
    validate_values: bool,
    value: Value,
) -> Result<Option<TopicValue>, OpError> {
    let converted = diffusion_core::convert::convert(topic_type, validate_values, &value)
        .map_err(|e| OpError::new(ErrorCode::InvalidValue, e.to_string()))?;
    Ok(match (converted, topic_type) {
        (Some(v), TopicType::Json) => Some(v.with_tree(Arc::new(value))),
        (converted, _) => converted,
    })
}

fn topic_exists(path: &str, existing: TopicType) -> OpError {
    OpError::new(
        ErrorCode::TopicExists,
        format!(
            "topic '{path}' already exists as a {existing} topic with different type or properties"
        ),
    )
}

/// Parses an `add` request's path, properties and value (no lock needed).
fn parse_add(
    path: &str,
    topic_type: TopicType,
    properties: &BTreeMap<String, String>,
    value: Option<Value>,
) -> Result<(TopicPath, TopicProperties, Option<Option<TopicValue>>), OpError> {
    let path = TopicPath::parse_user(path)
        .map_err(|e| OpError::new(ErrorCode::InvalidPath, e.to_string()))?;
    let properties = TopicProperties::from_map(properties)
        .map_err(|e| OpError::new(ErrorCode::InvalidProperties, e.to_string()))?;
    let value = match value {
        Some(v) => Some(to_value(topic_type, properties.validate_values, v)?),
        None => None,
    };
    Ok((path, properties, value))
}

/// Which of the engine's limits a change is held to. A local request is checked against all
/// of them; a change the cluster's Redis has already accepted is applied whatever they say
/// (it was checked by the node that proposed it, and every node must hold the same tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limits {
    /// Refuse what goes past a limit.
    Enforce,
    /// Apply regardless.
    Ignore,
}

/// A `set` that passed its checks: the topic (and its id then) and the converted value.
pub(crate) struct CheckedSet {
    pub path: TopicPath,
    pub id: u64,
    pub value: Option<TopicValue>,
}

fn no_such_topic(path: &str) -> OpError {
    OpError::new(ErrorCode::NoSuchTopic, format!("no topic at path '{path}'"))
}

/// An `add`, parsed: what [`Engine::apply_add`] applies.
#[derive(Debug)]
pub(crate) struct AddTopic {
    pub path: TopicPath,
    pub topic_type: TopicType,
    pub properties: TopicProperties,
    /// `None`: no value given; `Some(None)`: the value "none".
    pub value: Option<Option<TopicValue>>,
    /// The principal that added it (counted against its topic quota).
    pub owner: Option<Arc<str>>,
}

fn read_only(path: &str) -> OpError {
    OpError::new(
        ErrorCode::ReadOnlyTopic,
        format!("'{path}' is a reference topic of a view: it changes only with its source"),
    )
}

fn unsubscribed_message(topic: &Topic, reason: &str) -> Bytes {
    encode_server_message(&ServerMessage::Unsubscribed {
        id: topic.id,
        path: topic.path.as_str().to_owned(),
        reason: reason.to_owned(),
    })
}

impl Engine {
    /// An empty topic tree where everyone may do everything (tests and benchmarks).
    #[cfg(any(test, feature = "bench"))]
    pub fn new(metrics: Metrics, limits: EngineLimits) -> Arc<Self> {
        Self::with_grants(metrics, limits, Box::new(|_| Arc::new(Grant::everything())))
    }

    /// An empty topic tree whose sessions and views get their grants from `grant_of`.
    pub fn with_grants(metrics: Metrics, limits: EngineLimits, grant_of: GrantFn) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            tree: Mutex::new(Tree::default()),
            me: me.clone(),
            limits,
            metrics,
            timer_wake: Arc::new(tokio::sync::Notify::new()),
            timer_started: std::sync::OnceLock::new(),
            conflations: AtomicU64::new(0),
            back_pressure_unsubscriptions: AtomicU64::new(0),
            closed_peak_bytes: AtomicUsize::new(0),
            open_access: Access::open(),
            grant_of,
        })
    }

    /// The access of `identity` under the store in force (call with the lock held).
    fn access_for(&self, identity: Arc<Identity>) -> Access {
        Access {
            grant: (self.grant_of)(&identity),
            identity,
        }
    }

    fn lock(&self) -> TreeGuard<'_> {
        // Operations do not panic half-way through a change, so a poisoned tree is consistent
        // enough to go on with: one failed request must not stop the server.
        let tree = self.tree.lock().unwrap_or_else(PoisonError::into_inner);
        TreeGuard {
            tree,
            _flush: crate::direct::FlushScope::open(),
            since: Instant::now(),
            metrics: &self.metrics,
        }
    }

    /// Accounts for one push: counts conflation, logs a session closed by its queue limit, and
    /// collects the subscriptions back pressure ended.
    fn settle(&self, session: SessionId, result: Result<PushOutcome, PushError>, op: &mut Op) {
        match result {
            Ok(outcome) => {
                if outcome.conflated {
                    self.conflations.fetch_add(1, Ordering::Relaxed);
                    self.metrics.conflations.increment(1);
                }
                op.dropped
                    .extend(outcome.unsubscribed.into_iter().map(|id| (session, id)));
            }
            Err(PushError::LimitReached(limit)) => {
                tracing::info!(session, %limit, "closing session: message queue limit reached");
            }
            Err(PushError::Closing) => {}
        }
    }

    /// Delivers an update to every subscriber of topic `id`: the same shared update to each.
    fn fan_out(
        &self,
        subscriptions: &Subscriptions,
        id: u64,
        update: &Arc<TopicUpdate>,
        op: &mut Op,
    ) {
        for (session, outbound) in subscriptions.subscribers(id) {
            self.settle(session, outbound.push_update(update), op);
        }
    }

    /// Sets the value of the topic with id `id` within the tree's byte limit and delivers it.
    /// Returns whether the value changed (so views must follow).
    fn apply_value(
        &self,
        tree: &mut Tree,
        id: u64,
        value: Option<TopicValue>,
        limits: Limits,
        op: &mut Op,
    ) -> Result<bool, OpError> {
        self.metrics.updates_in.increment(1);
        let keep_tree = self.read_by_views(tree, id);
        let max_bytes = match limits {
            Limits::Enforce => self.limits.max_tree_bytes,
            Limits::Ignore => usize::MAX,
        };
        let update = tree
            .topics
            .update(id, value, max_bytes, keep_tree)
            .map_err(|e| {
                self.metrics.limit_refused("tree_bytes");
                OpError::limit(e.to_string())
            })?;
        match update {
            Some(update) => {
                self.fan_out(&tree.subscriptions, id, &update, op);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether a view selects the topic with id `id`, so its value should keep its tree.
    fn read_by_views(&self, tree: &Tree, id: u64) -> bool {
        tree.topics
            .get_by_id(id)
            .is_some_and(|t| tree.views.selects_any(t.path.as_str()))
    }

    /// Subscribes one session to one topic: notice, then current value if any.
    fn subscribe_one(
        &self,
        topic: &Topic,
        subscriptions: &mut Subscriptions,
        session: SessionId,
        op: &mut Op,
    ) {
        let Some(outbound) = subscriptions.subscribe(session, topic.id) else {
            return;
        };
        let notice = outbound.push_control(topic.subscribed_message().clone());
        self.settle(session, notice, op);
        let initial = outbound.push_initial(topic.id, topic.current());
        self.settle(session, initial, op);
    }

    /// Ends one subscription (not for back pressure): forgets what the queue tracks for the
    /// topic, drops its queued updates when the topic is `TIDY_ON_UNSUBSCRIBE`, then queues
    /// the notice.
    fn end_subscription(
        &self,
        topic: &Topic,
        session: SessionId,
        outbound: &Arc<SessionOutbound>,
        notice: &Bytes,
        op: &mut Op,
    ) {
        outbound.remove_topic(topic.id, topic.properties.tidy_on_unsubscribe);
        self.settle(session, outbound.push_control(notice.clone()), op);
    }

    /// Ends the subscriptions back pressure dropped and tells each session, with reason
    /// `back_pressure`. Telling a session can itself drop more (the notice is queued too), so
    /// this runs until nothing is left; each round ends a live subscription, so it stops.
    fn settle_dropped(
        &self,
        topics: &mut TopicStore,
        subscriptions: &mut Subscriptions,
        op: &mut Op,
    ) {
        while let Some((session, id)) = op.dropped.pop() {
            let Some(topic) = topics.get_by_id(id) else {
                continue;
            };
            let Some(outbound) = subscriptions.unsubscribe(session, id) else {
                continue;
            };
            self.back_pressure_unsubscriptions
                .fetch_add(1, Ordering::Relaxed);
            self.metrics.back_pressure_unsubscriptions.increment(1);
            tracing::debug!(session, topic = %topic.path, "unsubscribed by back pressure");
            let notice = outbound.push_control(topic.back_pressure_message().clone());
            self.settle(session, notice, op);
        }
    }

    /// Makes a session (after its handshake) able to subscribe; refused when its principal
    /// already has as many sessions as its roles allow.
    pub fn register_session(
        &self,
        session: SessionId,
        outbound: Arc<SessionOutbound>,
        identity: Arc<Identity>,
    ) -> Result<RoleLimits, OpError> {
        let mut tree = self.lock();
        let access = self.access_for(identity);
        let limits = access.grant.limits();
        let name = access.identity.name().to_owned();
        if let Some(limit) = access.grant.limits().connections {
            let open = tree
                .sessions_by_principal
                .get(name.as_str())
                .copied()
                .unwrap_or(0);
            if open >= limit {
                self.metrics.limit_refused("principal_connections");
                return Err(OpError::limit(format!(
                    "principal '{name}' already has its maximum of {limit} sessions"
                )));
            }
        }
        count_for(&mut tree.sessions_by_principal, &name, true);
        tree.subscriptions.register(session, outbound, access);
        Ok(limits)
    }

    /// A session resumed by a connection that authenticated anew (a fresh token, say): it
    /// takes that identity, with its grant, and is re-checked as after a reload. Returns the
    /// limits its roles set.
    pub fn reidentify(&self, session: SessionId, identity: Arc<Identity>) -> RoleLimits {
        let mut tree = self.lock();
        let access = self.access_for(identity);
        let limits = access.grant.limits();
        if let Some(held) = tree.subscriptions.access_mut(session) {
            *held = access;
        }
        self.recheck_session(&mut tree, session);
        limits
    }

    /// The limits the session's roles set (none for an unknown session).
    pub fn limits_of(&self, session: SessionId) -> diffusion_core::security::RoleLimits {
        self.lock()
            .subscriptions
            .access(session)
            .map(|a| a.grant.limits())
            .unwrap_or_default()
    }

    /// Accounts for a push the session made itself (a reply): when it made the queue drop
    /// subscriptions, ends them and tells the session.
    pub fn settle_push(&self, session: SessionId, result: Result<PushOutcome, PushError>) {
        let mut op = Op::default();
        self.settle(session, result, &mut op);
        if op.dropped.is_empty() {
            return;
        }
        let mut tree = self.lock();
        self.finish(&mut tree, op);
    }

    /// Forgets a session, its selectors and its subscriptions; costs in proportion to what
    /// the session held.
    pub fn close_session(&self, session: SessionId) {
        let mut tree = self.lock();
        if let Some(outbound) = tree.subscriptions.outbound(session) {
            self.closed_peak_bytes
                .fetch_max(outbound.peak_queued_bytes(), Ordering::Relaxed);
        }
        if let Some(access) = tree.subscriptions.access(session) {
            let name = access.identity.name().to_owned();
            count_for(&mut tree.sessions_by_principal, &name, false);
        }
        tree.subscriptions.deregister(session);
    }

    /// `add`: creates a topic, subscribing every session whose selectors select it. Adding an
    /// identical topic (same type and properties) again succeeds and, when a value is given,
    /// sets it; a different one is refused. A normal topic wins over a reference topic: adding
    /// one where a view's reference topic stands replaces that reference topic.
    pub fn add(
        &self,
        caller: Caller,
        path: &str,
        topic_type: TopicType,
        properties: &BTreeMap<String, String>,
        value: Option<Value>,
    ) -> Result<(), OpError> {
        let (path, properties, value) = parse_add(path, topic_type, properties, value)?;
        let mut tree = self.lock();
        let owner = self.check_add(
            &tree,
            caller,
            &path,
            topic_type,
            &properties,
            value.as_ref(),
        )?;
        let mut op = Op::default();
        let result = self.apply_add(
            &mut tree,
            AddTopic {
                path,
                topic_type,
                properties,
                value,
                owner,
            },
            Limits::Enforce,
            &mut op,
        );
        self.finish(&mut tree, op);
        result
    }

    /// Everything that may refuse an `add` (permission, an existing topic of another type or
    /// properties, the caller's topic quota, the tree's limits), checked without changing
    /// anything. Returns the owner the new topic would have.
    fn check_add(
        &self,
        tree: &Tree,
        caller: Caller,
        path: &TopicPath,
        topic_type: TopicType,
        properties: &TopicProperties,
        value: Option<&Option<TopicValue>>,
    ) -> Result<Option<Arc<str>>, OpError> {
        let access = tree.access(caller, &self.open_access);
        require(&access, PathPermission::ModifyTopic, path.as_str())?;
        let owner = match caller {
            Caller::Session(_) => Some(Arc::<str>::from(access.identity.name())),
            Caller::Server => None,
        };
        match tree.topics.get(path.as_str()) {
            Some(existing) if existing.reference.is_none() => {
                if existing.topic_type != topic_type || existing.properties != *properties {
                    return Err(topic_exists(path.as_str(), existing.topic_type));
                }
                // Adding an identical topic with a value sets it: the same room is needed.
                if let Some(value) = value {
                    let held = retained_len(existing.value());
                    tree.topics
                        .check_room(
                            held,
                            retained_len(value.as_ref()),
                            self.limits.max_tree_bytes,
                        )
                        .map_err(|e| {
                            self.metrics.limit_refused("tree_bytes");
                            OpError::limit(e.to_string())
                        })?;
                }
            }
            existing => {
                self.check_owner_quota(tree, &access, owner.as_deref())?;
                self.check_new_topic(tree, usize::from(existing.is_some()), value)?;
            }
        }
        Ok(owner)
    }

    /// Applies an `add` in order: sets the value of an identical topic, replaces a reference
    /// topic (or, from the cluster, a topic of another type) or creates the topic, subscribing
    /// every session whose selectors select it.
    fn apply_add(
        &self,
        tree: &mut Tree,
        add: AddTopic,
        limits: Limits,
        op: &mut Op,
    ) -> Result<(), OpError> {
        let AddTopic {
            path,
            topic_type,
            properties,
            value,
            owner,
        } = add;
        let existing = tree
            .topics
            .get(path.as_str())
            .map(|t| (t.id, t.reference, t.topic_type, t.properties));
        match existing {
            Some((id, None, t, p)) if t == topic_type && p == properties => {
                if let Some(value) = value
                    && self.apply_value(tree, id, value, limits, op)?
                {
                    op.source_changed(path.as_str(), 0);
                }
                return Ok(());
            }
            Some((_, None, t, _)) if limits == Limits::Enforce => {
                return Err(topic_exists(path.as_str(), t));
            }
            Some(_) => {
                // Checked before the topic goes, so a refusal changes nothing.
                if limits == Limits::Enforce {
                    self.check_new_topic(tree, 1, value.as_ref())?;
                }
                self.remove_topic_at(tree, path.as_str(), "replaced", op);
            }
            None => {}
        }
        self.create_topic(
            tree,
            path.clone(),
            topic_type,
            properties,
            value,
            None,
            limits,
            op,
        )?;
        op.source_changed(path.as_str(), 0);
        if let Some(owner) = owner
            && let Some(topic) = tree.topics.get_mut(path.as_str())
        {
            topic.owner = Some(Arc::clone(&owner));
            count_for(&mut tree.topics_by_owner, &owner, true);
        }
        Ok(())
    }

    /// Refuses a new topic when its owner already has as many as its roles allow.
    fn check_owner_quota(
        &self,
        tree: &Tree,
        access: &Access,
        owner: Option<&str>,
    ) -> Result<(), OpError> {
        let (Some(owner), Some(limit)) = (owner, access.grant.limits().topics) else {
            return Ok(());
        };
        if tree.topics_by_owner.get(owner).copied().unwrap_or(0) >= limit {
            self.metrics.limit_refused("principal_topics");
            return Err(OpError::limit(format!(
                "principal '{owner}' already has its maximum of {limit} topics"
            )));
        }
        Ok(())
    }

    /// Whether one more topic with `value` fits, `freed` topics being removed first.
    fn check_new_topic(
        &self,
        tree: &Tree,
        freed: usize,
        value: Option<&Option<TopicValue>>,
    ) -> Result<(), OpError> {
        if tree.topics.len() - freed.min(tree.topics.len()) >= self.limits.max_topics {
            self.metrics.limit_refused("topics");
            return Err(OpError::limit(format!(
                "the topic tree holds its maximum of {} topics",
                self.limits.max_topics
            )));
        }
        let needed = retained_len(value.and_then(Option::as_ref));
        tree.topics
            .check_room(0, needed, self.limits.max_tree_bytes)
            .map_err(|e| {
                self.metrics.limit_refused("tree_bytes");
                OpError::limit(e.to_string())
            })
    }

    /// Creates a topic (normal, or a reference topic of view `reference`) and subscribes the
    /// sessions whose selectors select it. The path must be free. Refused, changing nothing,
    /// when the tree is full.
    #[allow(clippy::too_many_arguments)]
    fn create_topic(
        &self,
        tree: &mut Tree,
        path: TopicPath,
        topic_type: TopicType,
        properties: TopicProperties,
        value: Option<Option<TopicValue>>,
        reference: Option<u64>,
        limits: Limits,
        op: &mut Op,
    ) -> Result<(), OpError> {
        if limits == Limits::Enforce {
            self.check_new_topic(tree, 0, value.as_ref())?;
        }
        let selecting = tree.subscriptions.sessions_selecting(path.as_str());
        let topic = tree.topics.insert(path, topic_type, properties);
        topic.reference = reference;
        let id = topic.id;
        self.metrics.topics.increment(1.0);
        // A retained initial value is part of the state new subscribers receive; a
        // DONT_RETAIN_VALUE topic's initial value is delivered once, after the notices.
        let transient = match value {
            Some(value) => {
                self.metrics.updates_in.increment(1);
                // The room was checked above.
                let keep_tree = self.read_by_views(tree, id);
                tree.topics
                    .update(id, value, usize::MAX, keep_tree)
                    .ok()
                    .flatten()
            }
            None => None,
        };
        let Tree {
            topics,
            subscriptions,
            ..
        } = tree;
        let Some(topic) = topics.get_by_id(id) else {
            return Ok(());
        };
        for session in selecting {
            self.subscribe_one(topic, subscriptions, session, op);
        }
        if topic.properties.dont_retain_value
            && let Some(update) = transient
        {
            self.fan_out(subscriptions, id, &update, op);
        }
        Ok(())
    }

    /// Removes the topic at `path`, telling its subscribers why. Returns whether it existed.
    fn remove_topic_at(&self, tree: &mut Tree, path: &str, reason: &str, op: &mut Op) -> bool {
        let Some(topic) = tree.topics.remove(path) else {
            return false;
        };
        if let Some(owner) = &topic.owner {
            count_for(&mut tree.topics_by_owner, owner, false);
        }
        if let Some(throttled) = tree.throttles.remove(path) {
            tree.timers.cancel_flush(&throttled);
        }
        self.metrics.topics.decrement(1.0);
        let notice = unsubscribed_message(&topic, reason);
        for (session, outbound) in tree.subscriptions.remove_topic(topic.id) {
            self.end_subscription(&topic, session, &outbound, &notice, op);
        }
        true
    }

    /// Ends an operation: the views follow every change it queued (and the changes they make
    /// in turn), then the subscriptions back pressure dropped are ended.
    fn finish(&self, tree: &mut Tree, mut op: Op) {
        while let Some((path, depth)) = op.changes.pop_front() {
            self.views_follow(tree, &path, depth, &mut op);
        }
        let Tree {
            topics,
            subscriptions,
            ..
        } = tree;
        self.settle_dropped(topics, subscriptions, &mut op);
    }

    /// `set`: changes a topic's value and delivers it to the subscribers, unless it equals the
    /// current value. Reference topics are read-only.
    pub fn set(&self, caller: Caller, path: &str, value: Value) -> Result<(), OpError> {
        let checked = self.check_set(caller, path, value)?;
        let mut tree = self.lock();
        // Fault injection for the panic-containment test: a panic while holding the lock.
        #[cfg(test)]
        if checked.path.as_str() == PANIC_PATH {
            panic!("fault injected by a test");
        }
        // The topic may have gone (or been replaced) while the value was converted.
        if tree.topics.get_by_id(checked.id).is_none() {
            return Err(no_such_topic(checked.path.as_str()));
        }
        let mut op = Op::default();
        let result = self.apply_set(
            &mut tree,
            &checked.path,
            checked.value,
            Limits::Enforce,
            &mut op,
        );
        self.finish(&mut tree, op);
        result
    }

    /// Everything that may refuse a `set` (path, permission, no such topic, a reference topic,
    /// a value the topic cannot hold); the value is converted outside the lock.
    fn check_set(&self, caller: Caller, path: &str, value: Value) -> Result<CheckedSet, OpError> {
        let path = TopicPath::parse(path)
            .map_err(|e| OpError::new(ErrorCode::InvalidPath, e.to_string()))?;
        let (id, topic_type, validate_values) = {
            let tree = self.lock();
            require(
                &tree.access(caller, &self.open_access),
                PathPermission::UpdateTopic,
                path.as_str(),
            )?;
            let topic = tree
                .topics
                .get(path.as_str())
                .ok_or_else(|| no_such_topic(path.as_str()))?;
            if topic.reference.is_some() {
                return Err(read_only(path.as_str()));
            }
            (topic.id, topic.topic_type, topic.properties.validate_values)
        };
        let value = to_value(topic_type, validate_values, value)?;
        Ok(CheckedSet { path, id, value })
    }

    /// Applies a `set` in order: the topic at `path` takes `value`, delivered to its
    /// subscribers and followed by its views unless it equals the current value.
    fn apply_set(
        &self,
        tree: &mut Tree,
        path: &TopicPath,
        value: Option<TopicValue>,
        limits: Limits,
        op: &mut Op,
    ) -> Result<(), OpError> {
        let id = tree
            .topics
            .get(path.as_str())
            .map(|t| t.id)
            .ok_or_else(|| no_such_topic(path.as_str()))?;
        if self.apply_value(tree, id, value, limits, op)? {
            op.source_changed(path.as_str(), 0);
        }
        Ok(())
    }

    /// `subscribe`: retains the selector and subscribes the session to every selected topic it
    /// is not already subscribed to, in path order (this also restores topics that back
    /// pressure unsubscribed). Refused when the session's selectors are at their limit.
    pub fn subscribe(&self, session: SessionId, selector: &str) -> Result<(), OpError> {
        let selector = parse_selector(selector)?;
        let mut tree = self.lock();
        let access = tree.access(Caller::Session(session), &self.open_access);
        require(&access, PathPermission::SelectTopic, selector.path_prefix())?;
        let mut quota = self.limits.selectors;
        if let Some(max) = access.grant.limits().selectors {
            quota.max_count = max;
        }
        let Tree {
            topics,
            subscriptions,
            ..
        } = &mut *tree;
        if subscriptions.outbound(session).is_none() {
            return Err(OpError::new(
                ErrorCode::Internal,
                "session is not registered",
            ));
        }
        subscriptions
            .check_quota(session, &selector, quota)
            .map_err(|e| {
                self.metrics.limit_refused("selectors");
                OpError::limit(e.to_string())
            })?;
        let mut op = Op::default();
        for path in topics.select_paths(&selector) {
            if let Some(topic) = topics.get(&path)
                && access.grant.allows(PathPermission::ReadTopic, &path)
            {
                self.subscribe_one(topic, subscriptions, session, &mut op);
            }
        }
        subscriptions.add_selector(session, selector);
        self.settle_dropped(topics, subscriptions, &mut op);
        Ok(())
    }

    /// `unsubscribe`: drops the retained selector with this text and unsubscribes the session
    /// from the topics it selects that no other retained selector of the session selects.
    pub fn unsubscribe(&self, session: SessionId, selector: &str) -> Result<(), OpError> {
        let selector = parse_selector(selector)?;
        let mut tree = self.lock();
        let Tree {
            topics,
            subscriptions,
            ..
        } = &mut *tree;
        if !subscriptions.remove_selector(session, &selector) {
            return Ok(());
        }
        let leaving: Vec<String> = topics
            .select_paths(&selector)
            .into_iter()
            .filter(|path| !subscriptions.selects(session, path, None))
            .collect();
        let mut op = Op::default();
        for path in leaving {
            if let Some(topic) = topics.get(&path)
                && let Some(outbound) = subscriptions.unsubscribe(session, topic.id)
            {
                let notice = unsubscribed_message(topic, "unsubscribed");
                self.end_subscription(topic, session, &outbound, &notice, &mut op);
            }
        }
        self.settle_dropped(topics, subscriptions, &mut op);
        Ok(())
    }

    /// `fetch`: one page of the selected topics in path order, starting after `after`, with
    /// their values. A page holds at most `limit` topics (and never more than the server's
    /// page size) and at most the configured reply bytes — but always at least one topic, so
    /// paging makes progress. Only buffers are cloned under the lock; the caller encodes.
    pub fn fetch(
        &self,
        caller: Caller,
        selector: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<FetchPage, OpError> {
        let selector = parse_selector(selector)?;
        let max_topics = limit
            .unwrap_or(MAX_FETCH_PAGE_TOPICS)
            .clamp(1, MAX_FETCH_PAGE_TOPICS);
        let tree = self.lock();
        let access = tree.access(caller, &self.open_access);
        let mut topics = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        let readable = tree.topics.select_after(&selector, after).filter(|t| {
            access
                .grant
                .allows(PathPermission::ReadTopic, t.path.as_str())
        });
        for topic in readable {
            let wire_value = topic.value().map(TopicValue::wire_json);
            let cost = topic.path.as_str().len()
                + wire_value.as_ref().map_or(0, Bytes::len)
                + FETCHED_TOPIC_OVERHEAD;
            if topics.len() >= max_topics
                || (!topics.is_empty() && bytes + cost > self.limits.max_fetch_reply_bytes)
            {
                more = true;
                break;
            }
            bytes += cost;
            topics.push(FetchedRaw {
                path: topic.path.as_str().to_owned(),
                topic_type: topic.topic_type,
                wire_value,
            });
        }
        Ok(FetchPage { topics, more })
    }

    /// `remove`: removes every selected normal topic, telling its subscribers. Returns how
    /// many. Reference topics are skipped (a path selector naming one is refused): they go
    /// with their source or their view.
    pub fn remove(&self, caller: Caller, selector: &str) -> Result<usize, OpError> {
        let selector = parse_selector(selector)?;
        let mut tree = self.lock();
        let paths = self.check_remove(&tree, caller, &selector)?;
        let mut op = Op::default();
        for path in &paths {
            self.apply_remove(&mut tree, path, &mut op);
        }
        self.finish(&mut tree, op);
        Ok(paths.len())
    }

    /// The normal topics a `remove` would remove (those the caller may modify), or why it is
    /// refused.
    fn check_remove(
        &self,
        tree: &Tree,
        caller: Caller,
        selector: &Selector,
    ) -> Result<Vec<String>, OpError> {
        let access = tree.access(caller, &self.open_access);
        require(&access, PathPermission::ModifyTopic, selector.path_prefix())?;
        if let Some(path) = selector.exact_path()
            && tree
                .topics
                .get(path.as_str())
                .is_some_and(|t| t.reference.is_some())
        {
            return Err(read_only(path.as_str()));
        }
        Ok(tree
            .topics
            .select(selector)
            .filter(|t| t.reference.is_none())
            .filter(|t| {
                access
                    .grant
                    .allows(PathPermission::ModifyTopic, t.path.as_str())
            })
            .map(|t| t.path.as_str().to_owned())
            .collect())
    }

    /// Applies the removal of the normal topic at `path` in order, telling its subscribers.
    /// Returns whether it existed.
    fn apply_remove(&self, tree: &mut Tree, path: &str, op: &mut Op) -> bool {
        if tree.topics.get(path).is_none_or(|t| t.reference.is_some()) {
            return false;
        }
        self.remove_topic_at(tree, path, "removed", op);
        // Views derived from it let go; a view claiming this very path may now take it.
        op.source_changed(path, 0);
        self.apply_reference(tree, path, 0, op);
        true
    }

    /// After the security store changed: gives every session and view the grant its
    /// identity has now. A session's subscriptions to topics it may no longer read end (reason
    /// `authorisation`); topics its selectors select that it may now read are subscribed (as
    /// a new `subscribe` would, this also restores topics back pressure had unsubscribed);
    /// every view derives again. The lock is taken once per session, so a reload with many
    /// sessions never stalls the others for long. Returns the subscriptions (ended, added).
    pub fn reauthorise(&self) -> (usize, usize) {
        let sessions: Vec<SessionId> = {
            let mut tree = self.lock();
            for access in tree.subscriptions.accesses_mut() {
                access.grant = (self.grant_of)(&access.identity);
            }
            tree.subscriptions.sessions().map(|(id, _)| id).collect()
        };
        let (mut ended, mut added) = (0, 0);
        for session in sessions {
            let mut tree = self.lock();
            let (e, a) = self.recheck_session(&mut tree, session);
            ended += e;
            added += a;
        }
        let mut tree = self.lock();
        let mut op = Op::default();
        self.reauthorise_views(&mut tree, &mut op);
        self.finish(&mut tree, op);
        (ended, added)
    }

    /// Brings one session's subscriptions in line with its grant: ends those it may no longer
    /// read, adds what its selectors select that it may now read. Returns (ended, added).
    fn recheck_session(&self, tree: &mut Tree, session: SessionId) -> (usize, usize) {
        let (mut ended, mut added) = (0, 0);
        let mut op = Op::default();
        let Tree {
            topics,
            subscriptions,
            ..
        } = tree;
        let Some(access) = subscriptions.access(session).cloned() else {
            return (0, 0);
        };
        for id in subscriptions.topics_of(session) {
            let Some(topic) = topics.get_by_id(id) else {
                continue;
            };
            if access
                .grant
                .allows(PathPermission::ReadTopic, topic.path.as_str())
            {
                continue;
            }
            if let Some(outbound) = subscriptions.unsubscribe(session, id) {
                let notice = unsubscribed_message(topic, "authorisation");
                self.end_subscription(topic, session, &outbound, &notice, &mut op);
                ended += 1;
            }
        }
        for selector in subscriptions.selectors_of(session) {
            for path in topics.select_paths(&selector) {
                if let Some(topic) = topics.get(&path)
                    && !subscriptions.is_subscribed(session, topic.id)
                    && access.grant.allows(PathPermission::ReadTopic, &path)
                {
                    self.subscribe_one(topic, subscriptions, session, &mut op);
                    added += 1;
                }
            }
        }
        self.settle_dropped(topics, subscriptions, &mut op);
        (ended, added)
    }

    /// Bytes of the values the tree retains now, and view results held back by `delay by`.
    pub fn tree_gauges(&self) -> (usize, usize) {
        let tree = self.lock();
        (tree.topics.value_bytes(), tree.timers.held())
    }

    /// The outbound queues of the registered sessions, measured now.
    pub fn queue_stats(&self) -> QueueStats {
        let tree = self.lock();
        let mut stats = QueueStats {
            peak_queued_bytes: self.closed_peak_bytes.load(Ordering::Relaxed),
            conflations: self.conflations.load(Ordering::Relaxed),
            back_pressure_unsubscriptions: self
                .back_pressure_unsubscriptions
                .load(Ordering::Relaxed),
            ..QueueStats::default()
        };
        for (_, outbound) in tree.subscriptions.sessions() {
            let queued = outbound.queued_bytes();
            stats.sessions += 1;
            stats.queued_bytes += queued;
            stats.max_queued_bytes = stats.max_queued_bytes.max(queued);
            stats.peak_queued_bytes = stats.peak_queued_bytes.max(outbound.peak_queued_bytes());
        }
        stats
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The gauge is process-wide; take this server's topics out of it when it goes away.
        let count = self.lock().topics.len();
        self.metrics.topics.decrement(count as f64);
        // Let the timer task see that the engine is gone.
        self.timer_wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffusion_core::protocol::{ServerMessage, decode_server_frame};
    use serde_json::json;

    fn engine(limits: EngineLimits) -> Arc<Engine> {
        Engine::new(Metrics::new(), limits)
    }

    fn no_props() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn the_topic_count_is_bounded() {
        let e = engine(EngineLimits {
            max_topics: 3,
            ..EngineLimits::default()
        });
        for p in ["a", "b", "c"] {
            e.add(Caller::Server, p, TopicType::Json, &no_props(), None)
                .unwrap();
        }
        let err = e
            .add(Caller::Server, "d", TopicType::Json, &no_props(), None)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::LimitExceeded);
        assert!(
            err.message.contains("maximum of 3 topics"),
            "{}",
            err.message
        );
        // Re-adding an existing topic is not a new one.
        e.add(
            Caller::Server,
            "a",
            TopicType::Json,
            &no_props(),
            Some(json!(1)),
        )
        .unwrap();
        e.remove(Caller::Server, ">c").unwrap();
        e.add(Caller::Server, "d", TopicType::Json, &no_props(), None)
            .unwrap();
    }

    #[test]
    fn the_bytes_of_values_are_bounded() {
        let e = engine(EngineLimits {
            max_tree_bytes: 1000,
            ..EngineLimits::default()
        });
        let text = |n: usize| json!("x".repeat(n));
        e.add(
            Caller::Server,
            "a",
            TopicType::Json,
            &no_props(),
            Some(text(600)),
        )
        .unwrap();
        let err = e
            .add(
                Caller::Server,
                "b",
                TopicType::Json,
                &no_props(),
                Some(text(600)),
            )
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::LimitExceeded);
        assert!(
            e.fetch(Caller::Server, ">b", None, None)
                .unwrap()
                .topics
                .is_empty()
        );
        e.add(Caller::Server, "b", TopicType::Json, &no_props(), None)
            .unwrap();
        let err = e.set(Caller::Server, "b", text(600)).unwrap_err();
        assert_eq!(err.code, ErrorCode::LimitExceeded);
        e.set(Caller::Server, "a", text(10)).unwrap();
        e.set(Caller::Server, "b", text(600)).unwrap();
    }

    #[test]
    fn fetch_comes_in_pages_that_always_progress() {
        let e = engine(EngineLimits {
            max_fetch_reply_bytes: 300,
            ..EngineLimits::default()
        });
        for i in 0..10 {
            e.add(
                Caller::Server,
                &format!("t/{i}"),
                TopicType::Json,
                &no_props(),
                Some(json!("x".repeat(100))),
            )
            .unwrap();
        }
        e.add(
            Caller::Server,
            "t/huge",
            TopicType::Json,
            &no_props(),
            Some(json!("y".repeat(5000))),
        )
        .unwrap();
        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = e
                .fetch(Caller::Server, "?t/.*", after.as_deref(), None)
                .unwrap();
            pages += 1;
            assert!(!page.topics.is_empty());
            let bytes: usize = page
                .topics
                .iter()
                .map(|t| t.path.len() + t.wire_value.as_ref().map_or(0, Bytes::len))
                .sum();
            assert!(bytes <= 300 || page.topics.len() == 1, "{bytes}");
            seen.extend(page.topics.iter().map(|t| t.path.clone()));
            after = seen.last().cloned();
            if !page.more {
                break;
            }
        }
        assert_eq!(seen.len(), 11);
        assert!(pages >= 5, "{pages} pages");
        let page = e.fetch(Caller::Server, "?t/.*", None, Some(3)).unwrap();
        assert_eq!(page.topics.len(), 1, "the byte limit still applies");
        let page = e.fetch(Caller::Server, "?t/[0-4]", None, Some(2)).unwrap();
        assert!(page.more);
    }

    #[test]
    fn selectors_per_session_are_bounded() {
        let e = engine(EngineLimits {
            selectors: SelectorQuota {
                max_count: 2,
                max_bytes: 1 << 30,
            },
            ..EngineLimits::default()
        });
        let outbound = Arc::new(SessionOutbound::new(1 << 20));
        e.register_session(
            1,
            Arc::clone(&outbound),
            Arc::new(crate::security::Identity::open(None)),
        )
        .unwrap();
        e.subscribe(1, ">a").unwrap();
        e.subscribe(1, ">b").unwrap();
        e.subscribe(1, ">a").unwrap();
        let err = e.subscribe(1, ">c").unwrap_err();
        assert_eq!(err.code, ErrorCode::LimitExceeded);
        e.unsubscribe(1, ">a").unwrap();
        e.subscribe(1, ">c").unwrap();
        // The refused selector was not retained: adding `c` now reaches the session.
        e.add(
            Caller::Server,
            "c",
            TopicType::Json,
            &no_props(),
            Some(json!(1)),
        )
        .unwrap();
        let got: Vec<ServerMessage> = outbound
            .drain_now()
            .iter()
            .flat_map(|m| decode_server_frame(std::str::from_utf8(m).unwrap()).unwrap())
            .collect();
        assert!(
            got.iter()
                .any(|m| matches!(m, ServerMessage::Subscribed { path, .. } if path == "c"))
        );
    }

    /// The grants of a small store: role `ALL` reads everything, role `SOME` reads `open/`.
    fn store_engine() -> Arc<Engine> {
        let store = diffusion_core::security::SecurityStore::parse(
            "test",
            "[roles.ALL]\ndefault_path = [\"SELECT_TOPIC\", \"READ_TOPIC\"]\n\
             [roles.SOME]\ndefault_path = [\"SELECT_TOPIC\"]\npaths = { \"open\" = [\"READ_TOPIC\"] }\n",
        )
        .unwrap();
        Engine::with_grants(
            Metrics::new(),
            EngineLimits::default(),
            Box::new(move |identity| match &identity.roles {
                crate::security::RoleSource::Token(roles) => Arc::new(store.grant(roles)),
                _ => Arc::new(Grant::default()),
            }),
        )
    }

    fn holding(roles: &[&str]) -> Arc<Identity> {
        Arc::new(Identity {
            principal: Some("alice".to_owned()),
            roles: crate::security::RoleSource::Token(
                roles.iter().map(|r| (*r).to_owned()).collect(),
            ),
            expires_at: None,
        })
    }

    fn messages(outbound: &SessionOutbound) -> Vec<ServerMessage> {
        outbound
            .drain_now()
            .iter()
            .flat_map(|m| decode_server_frame(std::str::from_utf8(m).unwrap()).unwrap())
            .collect()
    }

    /// A session resumed under a new identity (a fresh token with fewer roles) takes its
    /// grant at once: what it may no longer read ends with reason `authorisation`.
    #[test]
    fn a_session_takes_a_new_identity_at_once() {
        let e = store_engine();
        for path in ["open/a", "closed/b"] {
            e.add(
                Caller::Server,
                path,
                TopicType::Json,
                &no_props(),
                Some(json!(1)),
            )
            .unwrap();
        }
        let outbound = Arc::new(SessionOutbound::new(1 << 20));
        e.register_session(1, Arc::clone(&outbound), holding(&["ALL"]))
            .unwrap();
        e.subscribe(1, "?.*//").unwrap();
        let subscribed = messages(&outbound)
            .into_iter()
            .filter(|m| matches!(m, ServerMessage::Subscribed { .. }))
            .count();
        assert_eq!(subscribed, 2);
        e.reidentify(1, holding(&["SOME"]));
        let got = messages(&outbound);
        assert!(
            got.iter().any(
                |m| matches!(m, ServerMessage::Unsubscribed { path, reason, .. }
                if path == "closed/b" && reason == "authorisation")
            ),
            "{got:?}"
        );
        assert!(
            !got.iter()
                .any(|m| matches!(m, ServerMessage::Unsubscribed { path, .. } if path == "open/a")),
            "{got:?}"
        );
        // And the old grant is gone for good: a new topic it may not read is not delivered.
        e.add(
            Caller::Server,
            "closed/c",
            TopicType::Json,
            &no_props(),
            Some(json!(2)),
        )
        .unwrap();
        assert!(messages(&outbound).is_empty());
    }
}
