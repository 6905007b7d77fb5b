//! The view engine: named topic views and the reference topics they keep in step with their
//! sources.
//!
//! Whenever a topic is added, changes value or is removed, the views whose selector selects it
//! re-evaluate it (`source_changed`), the registry records which reference paths each view now
//! claims, and `apply_reference` makes the topic tree match: create, update or remove the
//! reference topic at each path whose claims changed. A normal topic always wins over a
//! reference topic at the same path; between views the earliest-created one wins. Reference
//! topics are sources like any other, so views chain (to a bounded depth, which also stops
//! cycles).
//!
//! `throttle to N updates every P` runs per reference topic through
//! [`ThrottleState`](diffusion_core::view::ThrottleState); `delay by P` holds a view's results
//! for `P` before they change the tree, so additions, updates and removals all happen `P`
//! later. Both deadlines live in [`Timers`], served by one timer task per engine that sleeps
//! until the earliest (tokio's clock, which tests can pause). A view removed or replaced takes
//! its held results with it; held results are bounded in number.
//!
//! Every evaluation is bounded by the engine's [`EvalLimits`](diffusion_core::view::EvalLimits):
//! a source whose view would produce too many or too large reference topics derives nothing
//! (logged, counted in `/metrics`). A change ripples through at most [`MAX_CHAIN_DEPTH`] views,
//! counted across delays and throttles too, so a cycle of views always stops.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use diffusion_core::protocol::{ErrorCode, ViewInfo};
use diffusion_core::view::{Offer, ReferenceValue, Throttle, ThrottleState, ViewSpec};
use diffusion_core::{TopicPath, TopicProperties, TopicValue};
use serde_json::Value;
use tokio::time::Instant;

use diffusion_core::security::{GlobalPermission, PathPermission};

use super::{Caller, Engine, Limits, Op, OpError, Tree, require_global};
use crate::security::Access;

/// How many views one change may pass through (the source's own views are the first): deep
/// enough for real chains, small enough that a cycle of views stops quickly.
pub(crate) const MAX_CHAIN_DEPTH: usize = 8;

/// A view's results for one source, waiting for the view's `delay by`.
pub(crate) struct DelayedClaims {
    order: u64,
    spec: Arc<ViewSpec>,
    source: String,
    /// `None`: the source was removed.
    results: Option<Vec<(String, ReferenceValue)>>,
    /// Views the change had passed through before this one.
    depth: usize,
}

/// The throttle of one reference topic: its state (the held value remembers how many views
/// the change had passed through) and its pending flush, if any.
pub(crate) struct Throttled {
    state: ThrottleState<(Option<TopicValue>, usize)>,
    flush: Option<TimerKey>,
}

/// A deadline and a tie-breaker.
type TimerKey = (Instant, u64);

/// Every deadline of one engine: results held by `delay by`, and throttle windows that end
/// with a held value to publish.
#[derive(Default)]
pub(crate) struct Timers {
    delayed: BTreeMap<TimerKey, DelayedClaims>,
    /// (view order, source) → its newest held result, for conflating when full.
    newest: HashMap<(u64, String), TimerKey>,
    flushes: BTreeMap<TimerKey, String>,
    seq: u64,
}

impl Timers {
    fn key(&mut self, due: Instant) -> TimerKey {
        self.seq += 1;
        (due, self.seq)
    }

    /// The earliest deadline.
    fn next_due(&self) -> Option<Instant> {
        let delayed = self.delayed.keys().next().map(|k| k.0);
        let flush = self.flushes.keys().next().map(|k| k.0);
        match (delayed, flush) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Holds `claims` until `due`. With `max` results already held, the source's newest held
    /// result is replaced instead (keeping its deadline), so memory stays bounded under any
    /// rate of updates; a source with nothing held is always held.
    fn hold(&mut self, due: Instant, claims: DelayedClaims, max: usize) {
        let pair = (claims.order, claims.source.clone());
        if self.delayed.len() >= max
            && let Some(key) = self.newest.get(&pair)
            && let Some(held) = self.delayed.get_mut(key)
        {
            held.results = claims.results;
            held.depth = claims.depth;
            return;
        }
        let key = self.key(due);
        self.newest.insert(pair, key);
        self.delayed.insert(key, claims);
    }

    /// The next held result due at `now`, if any.
    fn take_due_delayed(&mut self, now: Instant) -> Option<DelayedClaims> {
        let entry = self.delayed.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let key = *entry.key();
        let claims = entry.remove();
        let pair = (claims.order, claims.source.clone());
        if self.newest.get(&pair) == Some(&key) {
            self.newest.remove(&pair);
        }
        Some(claims)
    }

    /// After a reload: drops from the results held for view `order` what its creator may no
    /// longer derive (from a source `readable` refuses) or write (a path `writable` refuses).
    /// A held source removal stays.
    fn filter_view(
        &mut self,
        order: u64,
        readable: &dyn Fn(&str) -> bool,
        writable: &dyn Fn(&str) -> bool,
    ) {
        for claims in self.delayed.values_mut() {
            if claims.order != order {
                continue;
            }
            if let Some(results) = &mut claims.results {
                if readable(&claims.source) {
                    results.retain(|(path, _)| writable(path));
                } else {
                    results.clear();
                }
            }
        }
    }

    /// Forgets every result held for view `order` (removed or replaced).
    fn drop_view(&mut self, order: u64) {
        self.delayed.retain(|_, claims| claims.order != order);
        self.newest.retain(|(o, _), _| *o != order);
    }

    /// Arranges a throttle flush of `path` at `due`.
    fn schedule_flush(&mut self, due: Instant, path: &str) -> TimerKey {
        let key = self.key(due);
        self.flushes.insert(key, path.to_owned());
        key
    }

    /// The next throttle flush due at `now`, if any.
    fn take_due_flush(&mut self, now: Instant) -> Option<String> {
        let entry = self.flushes.first_entry()?;
        (entry.key().0 <= now).then(|| entry.remove())
    }

    /// Cancels the pending flush of a throttle whose topic went away.
    pub(crate) fn cancel_flush(&mut self, throttled: &Throttled) {
        if let Some(key) = throttled.flush {
            self.flushes.remove(&key);
        }
    }

    /// Results held now.
    pub(crate) fn held(&self) -> usize {
        self.delayed.len()
    }
}

fn check_view_name(name: &str) -> Result<(), OpError> {
    if name.is_empty()
        || name.len() > 256
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(OpError::new(
            ErrorCode::InvalidView,
            format!("'{name}' is not a view name: use 1 to 256 characters without spaces"),
        ));
    }
    Ok(())
}

fn no_such_view(name: &str) -> OpError {
    OpError::new(ErrorCode::NoSuchView, format!("no view named '{name}'"))
}

impl Engine {
    /// `createview`: creates the named view, or replaces its specification keeping its
    /// precedence, and derives its reference topics from every current source. Specifications
    /// longer than the configured limit are refused before they are parsed.
    pub fn create_view(&self, caller: Caller, name: &str, spec: &str) -> Result<(), OpError> {
        let spec = self.parse_view_spec(caller, spec)?;
        self.install_view(caller, name, spec)
    }

    /// Parses a `createview` specification once `caller` is known to be allowed views (it is
    /// checked again under the lock that installs the view: a reload may come in between).
    /// Specifications longer than the configured limit are refused before they are parsed.
    pub(super) fn parse_view_spec(
        &self,
        caller: Caller,
        spec: &str,
    ) -> Result<Arc<ViewSpec>, OpError> {
        require_global(
            &self.lock().access(caller, &self.open_access),
            GlobalPermission::ModifyTopicViews,
        )?;
        if spec.len() > self.limits.max_view_spec_bytes {
            self.metrics.limit_refused("view_spec_bytes");
            return Err(OpError::limit(format!(
                "a view specification may have at most {} bytes (this one has {})",
                self.limits.max_view_spec_bytes,
                spec.len()
            )));
        }
        ViewSpec::parse(spec).map(Arc::new).map_err(|e| {
            OpError::new(
                ErrorCode::InvalidView,
                format!("invalid view specification\n{e}"),
            )
        })
    }

    /// Creates or replaces the named view from an already parsed specification (the views
    /// file is parsed, with line numbers, before the server starts), running with the access
    /// `caller` has at this moment (the server's own views: every permission).
    pub fn install_view(
        &self,
        caller: Caller,
        name: &str,
        spec: Arc<ViewSpec>,
    ) -> Result<(), OpError> {
        let mut tree = self.lock();
        let access = self.check_view(&tree, caller, name)?;
        self.apply_view(&mut tree, name, spec, access);
        Ok(())
    }

    /// Everything that may refuse creating the view `name` besides its specification
    /// (its name, the permission, the view limits); returns the access it would run with.
    pub(super) fn check_view(
        &self,
        tree: &Tree,
        caller: Caller,
        name: &str,
    ) -> Result<Access, OpError> {
        check_view_name(name)?;
        let access = tree.access(caller, &self.open_access);
        require_global(&access, GlobalPermission::ModifyTopicViews)?;
        if !tree.views.contains(name) && tree.views.len() >= self.limits.max_views {
            self.metrics.limit_refused("views");
            return Err(OpError::limit(format!(
                "the server holds its maximum of {} views",
                self.limits.max_views
            )));
        }
        if let Some(limit) = access.grant.limits().views {
            let creator = access.identity.name();
            let held = tree
                .views
                .views()
                .filter(|v| v.access.identity.name() == creator && v.name != name)
                .count();
            if held >= limit {
                self.metrics.limit_refused("principal_views");
                return Err(OpError::limit(format!(
                    "principal '{creator}' already has its maximum of {limit} views"
                )));
            }
        }
        Ok(access)
    }

    /// Creates or replaces the named view (a replacement keeps its precedence) and derives
    /// its reference topics from every current source.
    pub(super) fn apply_view(
        &self,
        tree: &mut Tree,
        name: &str,
        spec: Arc<ViewSpec>,
        access: Access,
    ) {
        let mut op = Op::default();
        let (order, released) = tree.views.create(name, Arc::clone(&spec), access);
        tree.timers.drop_view(order);
        for path in released {
            self.apply_reference(tree, &path, 0, &mut op);
        }
        for source in tree.topics.select_paths(&spec.source) {
            self.evaluate_source(tree, order, &source, 0, &mut op);
        }
        self.finish(tree, op);
        tracing::info!(view = name, spec = spec.as_str(), "view created");
    }

    /// `removeview`: removes the named view, every reference topic it owns and every result it
    /// holds back.
    pub fn remove_view(&self, caller: Caller, name: &str) -> Result<(), OpError> {
        let mut tree = self.lock();
        self.check_remove_view(&tree, caller, name)?;
        self.apply_remove_view(&mut tree, name);
        Ok(())
    }

    /// Whether `caller` may remove the view `name`, and whether it exists.
    pub(super) fn check_remove_view(
        &self,
        tree: &Tree,
        caller: Caller,
        name: &str,
    ) -> Result<(), OpError> {
        require_global(
            &tree.access(caller, &self.open_access),
            GlobalPermission::ModifyTopicViews,
        )?;
        if !tree.views.contains(name) {
            return Err(no_such_view(name));
        }
        Ok(())
    }

    /// Removes the named view with what it derived and holds back; whether it existed.
    pub(super) fn apply_remove_view(&self, tree: &mut Tree, name: &str) -> bool {
        let order = tree.views.order(name);
        let Some(released) = tree.views.remove(name) else {
            return false;
        };
        if let Some(order) = order {
            tree.timers.drop_view(order);
        }
        let mut op = Op::default();
        for path in released {
            self.apply_reference(tree, &path, 0, &mut op);
        }
        self.finish(tree, op);
        tracing::info!(view = name, "view removed");
        true
    }

    /// `listviews`: the views in precedence order.
    pub fn list_views(&self, caller: Caller) -> Result<Vec<ViewInfo>, OpError> {
        let tree = self.lock();
        require_global(
            &tree.access(caller, &self.open_access),
            GlobalPermission::ReadTopicViews,
        )?;
        Ok(tree
            .views
            .views()
            .map(|v| ViewInfo {
                name: v.name.clone(),
                spec: v.spec.as_str().to_owned(),
            })
            .collect())
    }

    /// After a reload: gives every view its creator's new grant and derives it again from
    /// every source, so what its creator may no longer read or write goes away.
    pub(super) fn reauthorise_views(&self, tree: &mut Tree, op: &mut Op) {
        for access in tree.views.accesses_mut() {
            if !access.grant.is_everything() {
                access.grant = (self.grant_of)(&access.identity);
            }
        }
        // What a view derived or holds back under the old grant and may no longer have goes
        // at once, `preserve topics` and `delay by` notwithstanding; evaluating again below
        // only derives what the new grant allows.
        let views: Vec<(u64, Arc<diffusion_core::security::Grant>, Arc<ViewSpec>)> = tree
            .views
            .by_order()
            .map(|(order, v)| (order, Arc::clone(&v.access.grant), Arc::clone(&v.spec)))
            .collect();
        for (order, grant, _) in &views {
            let readable = |path: &str| grant.allows(PathPermission::ReadTopic, path);
            let writable = |path: &str| grant.allows(PathPermission::ModifyTopic, path);
            tree.timers.filter_view(*order, &readable, &writable);
            for path in tree
                .views
                .release_unauthorised(*order, &readable, &writable)
            {
                self.apply_reference(tree, &path, 0, op);
            }
        }
        for (order, _, spec) in views {
            for source in tree.topics.select_paths(&spec.source) {
                self.evaluate_source(tree, order, &source, 0, op);
            }
        }
    }

    /// The topic at `path` was added, changed value or was removed (taken from the operation's
    /// queue of changes): every view selecting it re-evaluates it. `depth` is how many views
    /// the change has already passed through.
    pub(super) fn views_follow(&self, tree: &mut Tree, path: &str, depth: usize, op: &mut Op) {
        let orders = tree.views.views_selecting(path);
        if orders.is_empty() {
            return;
        }
        if depth >= MAX_CHAIN_DEPTH {
            self.metrics.view_chain_stops.increment(1);
            tracing::warn!(
                path,
                "a change passed through {MAX_CHAIN_DEPTH} views: stopped (a cycle of views?)"
            );
            return;
        }
        for order in orders {
            self.evaluate_source(tree, order, path, depth, op);
        }
    }

    /// Evaluates view `order` for `source` and records the results (now, or after the view's
    /// delay).
    fn evaluate_source(
        &self,
        tree: &mut Tree,
        order: u64,
        source: &str,
        depth: usize,
        op: &mut Op,
    ) {
        let Some(view) = tree.views.view(order) else {
            return;
        };
        let spec = Arc::clone(&view.spec);
        // The view reads and writes only where its creator may: an unreadable source derives
        // nothing, joins see no unreadable topic, and no reference path is claimed where its
        // creator may not modify topics.
        let grant = Arc::clone(&view.access.grant);
        let readable = grant.allows(PathPermission::ReadTopic, source);
        let results = tree.topics.get(source).map(|topic| match topic.value() {
            Some(_) if !readable => Vec::new(),
            Some(value) => {
                let topics = &tree.topics;
                let lookup = |path: &str| {
                    topics
                        .get(path)
                        .filter(|_| grant.allows(PathPermission::ReadTopic, path))
                        .and_then(|t| t.value())
                        .map(|v| Value::clone(&v.json()))
                };
                spec.evaluate(source, &value.json(), &lookup, &self.limits.eval)
                    .unwrap_or_else(|error| {
                        self.metrics.view_evaluation_failures.increment(1);
                        tracing::warn!(
                            view = %view.name,
                            source,
                            %error,
                            "view evaluation refused: the source derives nothing"
                        );
                        Vec::new()
                    })
            }
            None => Vec::new(),
        });
        let results = results.map(|mut claimed| {
            claimed.retain(|(path, _)| grant.allows(PathPermission::ModifyTopic, path));
            claimed
        });
        match spec.options.delay {
            Some(delay) => self.delay_claims(tree, order, spec, source, results, delay, depth),
            None => self.record_claims(tree, order, &spec, source, results, depth, op),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_claims(
        &self,
        tree: &mut Tree,
        order: u64,
        spec: &ViewSpec,
        source: &str,
        results: Option<Vec<(String, ReferenceValue)>>,
        depth: usize,
        op: &mut Op,
    ) {
        let changed = match results {
            Some(results) => {
                tree.views
                    .set_claims(order, source, results, spec.options.preserve_topics)
            }
            None => tree.views.source_removed(order, source),
        };
        for path in changed {
            self.apply_reference(tree, &path, depth, op);
        }
    }

    /// Holds a delayed view's results until they are due, then records them.
    #[allow(clippy::too_many_arguments)]
    fn delay_claims(
        &self,
        tree: &mut Tree,
        order: u64,
        spec: Arc<ViewSpec>,
        source: &str,
        results: Option<Vec<(String, ReferenceValue)>>,
        delay: Duration,
        depth: usize,
    ) {
        // Delays are at most a day (checked when the view is parsed); never overflow anyway.
        let now = Instant::now();
        let due = now.checked_add(delay).unwrap_or(now);
        let claims = DelayedClaims {
            order,
            spec,
            source: source.to_owned(),
            results,
            depth,
        };
        tree.timers
            .hold(due, claims, self.limits.max_delayed_results);
        self.wake_timers();
    }

    /// Runs every deadline that is due: held results in the order they were produced, and
    /// throttle flushes.
    fn run_due_timers(&self) {
        let mut tree = self.lock();
        let mut op = Op::default();
        let now = Instant::now();
        while let Some(claims) = tree.timers.take_due_delayed(now) {
            // A view replaced or removed meanwhile has dropped these results already.
            let current = tree
                .views
                .view(claims.order)
                .is_some_and(|v| Arc::ptr_eq(&v.spec, &claims.spec));
            if current {
                let spec = Arc::clone(&claims.spec);
                self.record_claims(
                    &mut tree,
                    claims.order,
                    &spec,
                    &claims.source,
                    claims.results,
                    claims.depth,
                    &mut op,
                );
            }
        }
        while let Some(path) = tree.timers.take_due_flush(now) {
            self.flush_throttle(&mut tree, &path, &mut op);
        }
        self.finish(&mut tree, op);
    }

    /// The earliest deadline of any timer.
    fn next_due(&self) -> Option<Instant> {
        self.lock().timers.next_due()
    }

    /// Makes sure the timer task runs and sees the newest deadline. Outside a runtime (a
    /// benchmark driving the engine directly) there is no clock to wait on: due work runs on
    /// a thread at once.
    fn wake_timers(&self) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                self.timer_started.get_or_init(|| {
                    handle.spawn(timer_task(self.me.clone(), Arc::clone(&self.timer_wake)));
                });
                self.timer_wake.notify_one();
            }
            Err(_) => {
                let me = self.me.clone();
                std::thread::spawn(move || {
                    if let Some(engine) = me.upgrade() {
                        while let Some(due) = engine.next_due() {
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                            engine.run_due_timers();
                        }
                    }
                });
            }
        }
    }

    /// Makes the tree match the winning claim at `path`: create, update, replace or remove
    /// the reference topic there. A normal topic at `path` always stays.
    pub(super) fn apply_reference(&self, tree: &mut Tree, path: &str, depth: usize, op: &mut Op) {
        let existing = tree
            .topics
            .get(path)
            .map(|t| (t.reference, t.topic_type, t.properties));
        if let Some((None, _, _)) = existing {
            return;
        }
        let winner = tree
            .views
            .effective(path)
            .map(|(order, value)| (order, value.clone()));
        let Some((order, reference)) = winner else {
            if existing.is_some() {
                self.remove_topic_at(tree, path, "removed", op);
                op.source_changed(path, depth + 1);
            }
            return;
        };
        let Some(view) = tree.views.view(order) else {
            return;
        };
        let spec = Arc::clone(&view.spec);
        // Checked when the view was parsed, so this cannot fail; stay safe anyway.
        let properties = TopicProperties::from_map(&spec.options.properties).unwrap_or_default();
        let value = match TopicValue::from_json(reference.topic_type, &reference.value) {
            // The view's result is this value's tree: a chained view need not parse it.
            Ok(value) => value.map(|v| v.with_tree(Arc::new(reference.value.clone()))),
            Err(error) => {
                tracing::warn!(path, %error, "view produced a value its topic type cannot hold");
                None
            }
        };
        match existing {
            Some((Some(owner), topic_type, props))
                if owner == order && topic_type == reference.topic_type && props == properties =>
            {
                match &spec.options.throttle {
                    Some(throttle) => self.throttled_set(tree, path, throttle, value, depth, op),
                    None => self.set_reference(tree, path, value, depth, op),
                }
            }
            _ => {
                if existing.is_some() {
                    self.remove_topic_at(tree, path, "replaced", op);
                }
                let Ok(topic_path) = TopicPath::parse(path) else {
                    tracing::warn!(path, "view derived an invalid topic path");
                    return;
                };
                let created = self.create_topic(
                    tree,
                    topic_path,
                    reference.topic_type,
                    properties,
                    Some(value),
                    Some(order),
                    Limits::Enforce,
                    op,
                );
                if let Err(error) = created {
                    tracing::warn!(path, view = %view_name(tree, order), error = %error.message, "reference topic not created");
                    return;
                }
                if let Some(throttle) = &spec.options.throttle {
                    // The creation counts as the first update of the throttle's window.
                    let mut state = ThrottleState::new(throttle);
                    let _ = state.offer(Instant::now().into_std(), (None, depth));
                    tree.throttles
                        .insert(path.to_owned(), Throttled { state, flush: None });
                }
                op.source_changed(path, depth + 1);
            }
        }
    }

    /// Sets a reference topic's value and lets the views selecting it follow.
    fn set_reference(
        &self,
        tree: &mut Tree,
        path: &str,
        value: Option<TopicValue>,
        depth: usize,
        op: &mut Op,
    ) {
        let Some(id) = tree.topics.get(path).map(|t| t.id) else {
            return;
        };
        match self.apply_value(tree, id, value, Limits::Enforce, op) {
            Ok(true) => op.source_changed(path, depth + 1),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(path, error = %error.message, "reference topic not updated");
            }
        }
    }

    /// Sets a reference topic's value through its view's throttle: at once while the window
    /// allows, else held (the latest held value wins) until the window ends.
    fn throttled_set(
        &self,
        tree: &mut Tree,
        path: &str,
        throttle: &Throttle,
        value: Option<TopicValue>,
        depth: usize,
        op: &mut Op,
    ) {
        let now = Instant::now();
        let Tree {
            throttles, timers, ..
        } = &mut *tree;
        let throttled = throttles
            .entry(path.to_owned())
            .or_insert_with(|| Throttled {
                state: ThrottleState::new(throttle),
                flush: None,
            });
        match throttled.state.offer(now.into_std(), (value, depth)) {
            Offer::PublishNow((value, depth)) => self.set_reference(tree, path, value, depth, op),
            Offer::Held { flush_at, schedule } => {
                if schedule {
                    throttled.flush =
                        Some(timers.schedule_flush(Instant::from_std(flush_at), path));
                    self.wake_timers();
                }
            }
        }
    }

    /// A throttle window ended: publish the value held for `path`, if any.
    fn flush_throttle(&self, tree: &mut Tree, path: &str, op: &mut Op) {
        let now = Instant::now().into_std();
        let held = tree.throttles.get_mut(path).and_then(|throttled| {
            throttled.flush = None;
            throttled.state.flush(now)
        });
        if let Some((value, depth)) = held
            && tree.topics.get(path).is_some_and(|t| t.reference.is_some())
        {
            self.set_reference(tree, path, value, depth, op);
        }
    }
}

fn view_name(tree: &Tree, order: u64) -> String {
    tree.views
        .view(order)
        .map(|v| v.name.clone())
        .unwrap_or_default()
}

/// One per engine: sleeps until the earliest deadline (or until woken by a new one), then runs
/// what is due. Holds the engine only while working, and ends once it is gone.
async fn timer_task(engine: std::sync::Weak<Engine>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = match engine.upgrade() {
            Some(engine) => engine.next_due(),
            None => return,
        };
        match next {
            Some(due) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = &mut notified => {}
                }
            }
            None => notified.await,
        }
        match engine.upgrade() {
            Some(engine) => engine.run_due_timers(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use diffusion_core::TopicType;
    use diffusion_core::protocol::{ServerMessage, decode_server_frame};
    use serde_json::{Value, json};

    use super::*;
    use crate::metrics::Metrics;
    use crate::outbound::SessionOutbound;

    /// An engine with one session subscribed to `selector`; returns a function draining the
    /// values that session has been sent, as (topic id, value) in order.
    fn engine_with_watcher(selector: &str) -> (Arc<Engine>, impl Fn() -> Vec<Value>) {
        let engine = Engine::new(Metrics::new(), crate::engine::EngineLimits::default());
        let outbound = Arc::new(SessionOutbound::new(1 << 20));
        engine
            .register_session(
                1,
                Arc::clone(&outbound),
                Arc::new(crate::security::Identity::open(None)),
            )
            .unwrap();
        engine.subscribe(1, selector).unwrap();
        let drain = move || {
            outbound
                .drain_now()
                .iter()
                .flat_map(|m| decode_server_frame(std::str::from_utf8(m).unwrap()).unwrap())
                .filter_map(|m| match m {
                    ServerMessage::Value { value, .. } => Some(value),
                    _ => None,
                })
                .collect()
        };
        (engine, drain)
    }

    fn set(engine: &Engine, n: i64) {
        engine
            .set(Caller::Server, "src", json!({ "n": n }))
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_publishes_n_per_period_then_the_latest_at_the_period_end() {
        let (engine, drain) = engine_with_watcher("?ref//");
        engine
            .add(
                Caller::Server,
                "src",
                TopicType::Json,
                &BTreeMap::new(),
                Some(json!({"n": 0})),
            )
            .unwrap();
        engine
            .create_view(
                Caller::Server,
                "t",
                "map src to ref as <value(/n)> throttle to 2 updates every 10 seconds",
            )
            .unwrap();
        assert_eq!(
            drain(),
            [json!(0)],
            "creation publishes at once and opens the window"
        );
        set(&engine, 1);
        assert_eq!(drain(), [json!(1)], "second update of the window passes");
        for n in 2..=5 {
            set(&engine, n);
        }
        assert!(drain().is_empty(), "held until the window ends");
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        assert!(drain().is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            drain(),
            [json!(5)],
            "only the latest held value, at the window end"
        );
        // The flush opened a new window counting one update: one more passes, then held again.
        set(&engine, 6);
        set(&engine, 7);
        assert_eq!(drain(), [json!(6)]);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(drain(), [json!(7)]);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_additions_updates_and_removals() {
        let (engine, drain) = engine_with_watcher("?ref//");
        engine
            .create_view(
                Caller::Server,
                "d",
                "map src to ref as <value(/n)> delay by 5 seconds",
            )
            .unwrap();
        engine
            .add(
                Caller::Server,
                "src",
                TopicType::Json,
                &BTreeMap::new(),
                Some(json!({"n": 1})),
            )
            .unwrap();
        assert!(
            engine
                .fetch(Caller::Server, "ref", None, None)
                .unwrap()
                .topics
                .is_empty(),
            "unpublished until due"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        set(&engine, 2);
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_eq!(drain(), [json!(1)], "the addition, 5 s after the source's");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(drain(), [json!(2)], "the update, 5 s after the source's");
        engine.remove(Caller::Server, "src").unwrap();
        assert_eq!(
            engine
                .fetch(Caller::Server, "ref", None, None)
                .unwrap()
                .topics
                .len(),
            1,
            "removal is delayed too"
        );
        tokio::time::sleep(Duration::from_millis(5_100)).await;
        assert!(
            engine
                .fetch(Caller::Server, "ref", None, None)
                .unwrap()
                .topics
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_view_drops_its_delayed_results() {
        let (engine, drain) = engine_with_watcher("?ref//");
        engine
            .create_view(Caller::Server, "d", "map src to ref delay by 1 second")
            .unwrap();
        engine
            .add(
                Caller::Server,
                "src",
                TopicType::Json,
                &BTreeMap::new(),
                Some(json!(1)),
            )
            .unwrap();
        engine.remove_view(Caller::Server, "d").unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(drain().is_empty());
        assert!(
            engine
                .fetch(Caller::Server, "ref", None, None)
                .unwrap()
                .topics
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_passes_through_at_most_eight_views() {
        let (engine, _drain) = engine_with_watcher("?c//");
        // c/0 → c/1 → … → c/9: nine views in a chain.
        for i in 0..9 {
            engine
                .create_view(
                    Caller::Server,
                    &format!("v{i}"),
                    &format!("map c/{i} to c/{}", i + 1),
                )
                .unwrap();
        }
        engine
            .add(
                Caller::Server,
                "c/0",
                TopicType::Json,
                &BTreeMap::new(),
                Some(json!(1)),
            )
            .unwrap();
        let exists = |i: usize| {
            !engine
                .fetch(Caller::Server, &format!("c/{i}"), None, None)
                .unwrap()
                .topics
                .is_empty()
        };
        assert!((1..=8).all(exists), "eight views ran");
        assert!(!exists(9), "the ninth did not");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_through_a_delayed_view_stops() {
        let (engine, drain) = engine_with_watcher("?x//");
        engine
            .create_view(Caller::Server, "ab", "map x/a to x/b delay by 1 second")
            .unwrap();
        engine
            .create_view(
                Caller::Server,
                "ba",
                "map x/b to x/a process {set(/n, calc \"/n + 1\")}",
            )
            .unwrap();
        engine
            .create_view(Caller::Server, "seed", "map x/src to x/a")
            .unwrap();
        engine
            .add(
                Caller::Server,
                "x/src",
                TopicType::Json,
                &BTreeMap::new(),
                Some(json!({"n": 0})),
            )
            .unwrap();
        // The hop count survives the delay, so the ripple dies out; without it this would
        // go on for ever, one round per second.
        let mut rounds = 0;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rounds += 1;
            if engine.lock().timers.held() == 0 {
                break;
            }
        }
        assert!(rounds < 30, "held results never drained");
        let _ = drain();
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_through_a_throttled_view_stops() {
        let (engine, _drain) = engine_with_watcher("?y//");
        engine
            .create_view(
                Caller::Server,
                "ab",
                "map y/a to y/b throttle to 1 update every 1 second",
            )
            .unwrap();
        engine
            .create_view(
                Caller::Server,
                "ba",
                "map y/b to y/a process {set(/n, calc \"/n + 1\")}",
            )
            .unwrap();
        engine
            .create_view(Caller::Server, "seed", "map y/src to y/a")
            .unwrap();
        engine
            .add(
                Caller::Server,
                "y/src",
                TopicType::Json,
                &BTreeMap::new(),
                Some(json!({"n": 0})),
            )
            .unwrap();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let flushes = engine.lock().timers.flushes.len();
        assert_eq!(
            flushes, 0,
            "no throttle flush still pending after the ripple stopped"
        );
        let n = |path: &str| {
            let page = engine.fetch(Caller::Server, path, None, None).unwrap();
            let value = page.topics[0].wire_value.clone().unwrap();
            serde_json::from_slice::<Value>(&value).unwrap()["n"]
                .as_i64()
                .unwrap()
        };
        assert!(
            (2..=8).contains(&n("y/a")),
            "the ripple went round a few times: {}",
            n("y/a")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn removing_a_view_drops_what_it_holds_back() {
        let (engine, _drain) = engine_with_watcher("?ref//");
        engine
            .create_view(
                Caller::Server,
                "d",
                "map ?src/ to ref/<path(1)> delay by 1 hour",
            )
            .unwrap();
        engine
            .add(
                Caller::Server,
                "src/a",
                TopicType::Json,
                &BTreeMap::new(),
                Some(json!(0)),
            )
            .unwrap();
        for n in 1..100 {
            engine.set(Caller::Server, "src/a", json!(n)).unwrap();
        }
        assert_eq!(engine.lock().timers.held(), 100);
        engine.remove_view(Caller::Server, "d").unwrap();
        engine.remove(Caller::Server, "?src//").unwrap();
        assert_eq!(
            engine.lock().timers.held(),
            0,
            "held results went with the view"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn held_results_are_bounded() {
        let engine = Engine::new(
            Metrics::new(),
            crate::engine::EngineLimits {
                max_delayed_results: 10,
                ..crate::engine::EngineLimits::default()
            },
        );
        engine
            .create_view(
                Caller::Server,
                "d",
                "map ?src/ to ref/<path(1)> delay by 5 seconds",
            )
            .unwrap();
        for s in 0..3 {
            engine
                .add(
                    Caller::Server,
                    &format!("src/{s}"),
                    TopicType::Json,
                    &BTreeMap::new(),
                    Some(json!(0)),
                )
                .unwrap();
        }
        for n in 1..1000 {
            engine.set(Caller::Server, "src/0", json!(n)).unwrap();
        }
        assert_eq!(
            engine.lock().timers.held(),
            10,
            "at the limit, newer results replace"
        );
        // A source with nothing held still gets its result held.
        engine
            .add(
                Caller::Server,
                "src/new",
                TopicType::Json,
                &BTreeMap::new(),
                Some(json!(7)),
            )
            .unwrap();
        assert_eq!(engine.lock().timers.held(), 11);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let page = engine.fetch(Caller::Server, "ref/0", None, None).unwrap();
        assert_eq!(
            page.topics[0].wire_value.as_deref(),
            Some(&b"999"[..]),
            "latest value wins"
        );
        assert_eq!(engine.lock().timers.held(), 0);
    }
}
