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
//! later. Both use tokio timers that call back into the engine (and so follow tokio's clock,
//! which tests can pause).

use std::sync::Arc;
use std::time::Duration;

use diffusion_core::protocol::{ErrorCode, ViewInfo};
use diffusion_core::view::{Offer, ReferenceValue, Throttle, ThrottleState, ViewSpec};
use diffusion_core::{TopicPath, TopicProperties, TopicValue};

use super::{Dropped, Engine, OpError, Tree};

/// How many reference-of-reference hops one change may cause: deep enough for real chains,
/// small enough that a cycle of views stops quickly.
const MAX_CHAIN_DEPTH: usize = 8;

/// A view's results for one source, waiting for the view's `delay by`.
pub(crate) struct DelayedClaims {
    order: u64,
    spec: Arc<ViewSpec>,
    source: String,
    /// `None`: the source was removed.
    results: Option<Vec<(String, ReferenceValue)>>,
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

impl Engine {
    /// `createview`: creates the named view, or replaces its specification keeping its
    /// precedence, and derives its reference topics from every current source.
    pub fn create_view(&self, name: &str, spec: &str) -> Result<(), OpError> {
        let spec = ViewSpec::parse(spec).map_err(|e| {
            OpError::new(
                ErrorCode::InvalidView,
                format!("invalid view specification\n{e}"),
            )
        })?;
        self.install_view(name, Arc::new(spec))
    }

    /// Creates or replaces the named view from an already parsed specification (the views
    /// file is parsed, with line numbers, before the server starts).
    pub fn install_view(&self, name: &str, spec: Arc<ViewSpec>) -> Result<(), OpError> {
        check_view_name(name)?;
        let mut tree = self.lock();
        let mut dropped = Dropped::new();
        let (order, released) = tree.views.create(name, Arc::clone(&spec));
        for path in released {
            self.apply_reference(&mut tree, &path, 0, &mut dropped);
        }
        for source in tree.topics.select_paths(&spec.source) {
            self.evaluate_source(&mut tree, order, &source, 0, &mut dropped);
        }
        self.settle_tree(&mut tree, dropped);
        tracing::info!(view = name, spec = spec.as_str(), "view created");
        Ok(())
    }

    /// `removeview`: removes the named view and every reference topic it owns.
    pub fn remove_view(&self, name: &str) -> Result<(), OpError> {
        let mut tree = self.lock();
        let released = tree.views.remove(name).ok_or_else(|| {
            OpError::new(ErrorCode::NoSuchView, format!("no view named '{name}'"))
        })?;
        let mut dropped = Dropped::new();
        for path in released {
            self.apply_reference(&mut tree, &path, 0, &mut dropped);
        }
        self.settle_tree(&mut tree, dropped);
        tracing::info!(view = name, "view removed");
        Ok(())
    }

    /// `listviews`: the views in precedence order.
    pub fn list_views(&self) -> Vec<ViewInfo> {
        self.lock()
            .views
            .views()
            .map(|v| ViewInfo {
                name: v.name.clone(),
                spec: v.spec.as_str().to_owned(),
            })
            .collect()
    }

    /// The topic at `path` was added, changed value or was removed: every view selecting it
    /// re-evaluates it.
    pub(super) fn source_changed(
        &self,
        tree: &mut Tree,
        path: &str,
        depth: usize,
        dropped: &mut Dropped,
    ) {
        if depth > MAX_CHAIN_DEPTH {
            tracing::warn!(
                path,
                "view chain deeper than {MAX_CHAIN_DEPTH}: stopped (a cycle of views?)"
            );
            return;
        }
        for order in tree.views.views_selecting(path) {
            self.evaluate_source(tree, order, path, depth, dropped);
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
        dropped: &mut Dropped,
    ) {
        let Some(view) = tree.views.view(order) else {
            return;
        };
        let spec = Arc::clone(&view.spec);
        let results = tree.topics.get(source).map(|topic| match topic.value() {
            Some(value) => {
                let topics = &tree.topics;
                let lookup = |path: &str| {
                    topics
                        .get(path)
                        .and_then(|t| t.value())
                        .map(TopicValue::to_json)
                };
                spec.evaluate(source, &value.to_json(), &lookup)
            }
            None => Vec::new(),
        });
        match spec.options.delay {
            Some(delay) => self.delay_claims(tree, order, spec, source, results, delay),
            None => self.record_claims(tree, order, &spec, source, results, depth, dropped),
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
        dropped: &mut Dropped,
    ) {
        let changed = match results {
            Some(results) => {
                tree.views
                    .set_claims(order, source, results, spec.options.preserve_topics)
            }
            None => tree.views.source_removed(order, source),
        };
        for path in changed {
            self.apply_reference(tree, &path, depth, dropped);
        }
    }

    /// Holds a delayed view's results until they are due, then records them.
    fn delay_claims(
        &self,
        tree: &mut Tree,
        order: u64,
        spec: Arc<ViewSpec>,
        source: &str,
        results: Option<Vec<(String, ReferenceValue)>>,
        delay: Duration,
    ) {
        let due = tokio::time::Instant::now() + delay;
        tree.delay_seq += 1;
        tree.delayed.insert(
            (due, tree.delay_seq),
            DelayedClaims {
                order,
                spec,
                source: source.to_owned(),
                results,
            },
        );
        let me = self.me.clone();
        self.spawn_timer(due, move || {
            if let Some(engine) = me.upgrade() {
                engine.run_delayed();
            }
        });
    }

    /// Records every delayed result that is due, in the order the results were produced.
    fn run_delayed(&self) {
        let mut tree = self.lock();
        let mut dropped = Dropped::new();
        let now = tokio::time::Instant::now();
        while let Some(entry) = tree.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let claims = entry.remove();
            // A view replaced or removed meanwhile has dropped these results.
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
                    0,
                    &mut dropped,
                );
            }
        }
        self.settle_tree(&mut tree, dropped);
    }

    /// Calls `fire` at `due` on the tokio runtime. Outside a runtime (a benchmark driving the
    /// engine directly) there is no clock to wait on, so it fires at once.
    fn spawn_timer(&self, due: tokio::time::Instant, fire: impl FnOnce() + Send + 'static) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    tokio::time::sleep_until(due).await;
                    fire();
                });
            }
            Err(_) => {
                tracing::warn!("no async runtime for a view timer; firing it at once");
                std::thread::spawn(fire);
            }
        }
    }

    /// Makes the tree match the winning claim at `path`: create, update, replace or remove
    /// the reference topic there. A normal topic at `path` always stays.
    pub(super) fn apply_reference(
        &self,
        tree: &mut Tree,
        path: &str,
        depth: usize,
        dropped: &mut Dropped,
    ) {
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
                self.remove_topic_at(tree, path, "removed", dropped);
                self.source_changed(tree, path, depth + 1, dropped);
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
            Ok(value) => value,
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
                    Some(throttle) => {
                        self.throttled_set(tree, path, throttle, value, depth, dropped)
                    }
                    None => self.set_reference(tree, path, value, depth, dropped),
                }
            }
            _ => {
                if existing.is_some() {
                    self.remove_topic_at(tree, path, "replaced", dropped);
                }
                let Ok(topic_path) = TopicPath::parse(path) else {
                    tracing::warn!(path, "view derived an invalid topic path");
                    return;
                };
                self.create_topic(
                    tree,
                    topic_path,
                    reference.topic_type,
                    properties,
                    Some(value),
                    Some(order),
                    dropped,
                );
                if let Some(throttle) = &spec.options.throttle {
                    // The creation counts as the first update of the throttle's window.
                    let mut state = ThrottleState::new(throttle);
                    let _ = state.offer(tokio::time::Instant::now().into_std(), None);
                    tree.throttles.insert(path.to_owned(), state);
                }
                self.source_changed(tree, path, depth + 1, dropped);
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
        dropped: &mut Dropped,
    ) {
        let Some(topic) = tree.topics.get_mut(path) else {
            return;
        };
        self.metrics.updates_in.increment(1);
        if let Some(update) = topic.update(value) {
            self.fan_out(topic, &update, dropped);
            self.source_changed(tree, path, depth + 1, dropped);
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
        dropped: &mut Dropped,
    ) {
        let now = tokio::time::Instant::now().into_std();
        let state = tree
            .throttles
            .entry(path.to_owned())
            .or_insert_with(|| ThrottleState::new(throttle));
        match state.offer(now, value) {
            Offer::PublishNow(value) => self.set_reference(tree, path, value, depth, dropped),
            Offer::Held { flush_at, schedule } => {
                if schedule {
                    let me = self.me.clone();
                    let path = path.to_owned();
                    self.spawn_timer(tokio::time::Instant::from_std(flush_at), move || {
                        if let Some(engine) = me.upgrade() {
                            engine.flush_throttle(&path);
                        }
                    });
                }
            }
        }
    }

    /// A throttle window ended: publish the value held for `path`, if any.
    fn flush_throttle(&self, path: &str) {
        let mut tree = self.lock();
        let now = tokio::time::Instant::now().into_std();
        let held = tree
            .throttles
            .get_mut(path)
            .and_then(|state| state.flush(now));
        let mut dropped = Dropped::new();
        if let Some(value) = held
            && tree.topics.get(path).is_some_and(|t| t.reference.is_some())
        {
            self.set_reference(&mut tree, path, value, 0, &mut dropped);
        }
        self.settle_tree(&mut tree, dropped);
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
        let engine = Engine::new(Metrics::new());
        let outbound = Arc::new(SessionOutbound::new(1 << 20));
        engine.register_session(1, Arc::clone(&outbound));
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
        engine.set("src", &json!({ "n": n })).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_publishes_n_per_period_then_the_latest_at_the_period_end() {
        let (engine, drain) = engine_with_watcher("?ref//");
        engine
            .add(
                "src",
                TopicType::Json,
                &BTreeMap::new(),
                Some(&json!({"n": 0})),
            )
            .unwrap();
        engine
            .create_view(
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
            .create_view("d", "map src to ref as <value(/n)> delay by 5 seconds")
            .unwrap();
        engine
            .add(
                "src",
                TopicType::Json,
                &BTreeMap::new(),
                Some(&json!({"n": 1})),
            )
            .unwrap();
        assert!(
            engine.fetch("ref").unwrap().is_empty(),
            "unpublished until due"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        set(&engine, 2);
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_eq!(drain(), [json!(1)], "the addition, 5 s after the source's");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(drain(), [json!(2)], "the update, 5 s after the source's");
        engine.remove("src").unwrap();
        assert_eq!(
            engine.fetch("ref").unwrap().len(),
            1,
            "removal is delayed too"
        );
        tokio::time::sleep(Duration::from_millis(5_100)).await;
        assert!(engine.fetch("ref").unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_view_drops_its_delayed_results() {
        let (engine, drain) = engine_with_watcher("?ref//");
        engine
            .create_view("d", "map src to ref delay by 1 second")
            .unwrap();
        engine
            .add("src", TopicType::Json, &BTreeMap::new(), Some(&json!(1)))
            .unwrap();
        engine.remove_view("d").unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(drain().is_empty());
        assert!(engine.fetch("ref").unwrap().is_empty());
    }
}
