//! The view registry: which views exist, in which precedence, and which reference topic paths
//! each (view, source) pair claims with which value.
//!
//! Pure bookkeeping under the engine's lock; the engine turns the [`PathChange`]s it reports into
//! topic additions, updates and removals (applying throttle, delay and the rule that a normal
//! topic wins over a reference topic).
//!
//! Precedence: several views may derive the same reference path; the earliest-created view wins
//! (replacing a view keeps its place). Within one view, the first source in path order wins.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use diffusion_core::selector_index::SelectorIndex;
use diffusion_core::view::{ReferenceValue, ViewSpec};

use crate::security::Access;

/// One named view.
#[derive(Debug)]
pub(crate) struct View {
    /// Its name (unique).
    pub name: String,
    /// The parsed specification.
    pub spec: Arc<ViewSpec>,
    /// Its creator's identity and grant: it reads sources and writes reference paths only
    /// where its creator may.
    pub access: Access,
}

/// Who claims a reference path: (view order, source path).
type Claimant = (u64, String);

/// A reference path whose effective content may have changed; the engine re-reads it with
/// [`ViewRegistry::effective`].
pub(crate) type PathChange = String;

/// All views and their claims.
#[derive(Debug, Default)]
pub(crate) struct ViewRegistry {
    views: BTreeMap<u64, View>,
    order_by_name: HashMap<String, u64>,
    index: SelectorIndex<u64>,
    claims: HashMap<String, BTreeMap<Claimant, ReferenceValue>>,
    produced: HashMap<(u64, String), BTreeSet<String>>,
    next_order: u64,
}

impl ViewRegistry {
    /// Creates the view `name`, or replaces its specification keeping its precedence. Returns
    /// the view's order and the paths its old claims covered (now dropped); the caller then
    /// evaluates every source the new specification selects.
    pub fn create(
        &mut self,
        name: &str,
        spec: Arc<ViewSpec>,
        access: Access,
    ) -> (u64, Vec<PathChange>) {
        let (order, changes) = match self.order_by_name.get(name) {
            Some(&order) => {
                let changes = self.drop_view_claims(order);
                if let Some(old) = self.views.get(&order) {
                    self.index.remove(&order, &old.spec.source);
                }
                (order, changes)
            }
            None => {
                self.next_order += 1;
                (self.next_order, Vec::new())
            }
        };
        self.index.insert(order, spec.source.clone());
        self.order_by_name.insert(name.to_owned(), order);
        self.views.insert(
            order,
            View {
                name: name.to_owned(),
                spec,
                access,
            },
        );
        (order, changes)
    }

    /// Removes the view `name`; returns the paths its claims covered, or `None` if unknown.
    pub fn remove(&mut self, name: &str) -> Option<Vec<PathChange>> {
        let order = self.order_by_name.remove(name)?;
        let changes = self.drop_view_claims(order);
        if let Some(view) = self.views.remove(&order) {
            self.index.remove(&order, &view.spec.source);
        }
        Some(changes)
    }

    fn drop_view_claims(&mut self, order: u64) -> Vec<PathChange> {
        let keys: Vec<(u64, String)> = self
            .produced
            .keys()
            .filter(|(o, _)| *o == order)
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for key in keys {
            changes.extend(self.set_claims(key.0, &key.1, Vec::new(), false));
        }
        changes
    }

    /// Whether a view with this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.order_by_name.contains_key(name)
    }

    /// The precedence order of the view with this name.
    pub fn order(&self, name: &str) -> Option<u64> {
        self.order_by_name.get(name).copied()
    }

    /// How many views there are.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Every view's access, to be replaced after a reload.
    pub fn accesses_mut(&mut self) -> impl Iterator<Item = &mut Access> {
        self.views.values_mut().map(|v| &mut v.access)
    }

    /// The views with their orders, in precedence order.
    pub fn by_order(&self) -> impl Iterator<Item = (u64, &View)> {
        self.views.iter().map(|(order, view)| (*order, view))
    }

    /// The views, in precedence order.
    pub fn views(&self) -> impl Iterator<Item = &View> {
        self.views.values()
    }

    /// The view with this order.
    pub fn view(&self, order: u64) -> Option<&View> {
        self.views.get(&order)
    }

    /// Whether any view's selector selects `path`.
    pub fn selects_any(&self, path: &str) -> bool {
        let mut any = false;
        self.index.for_each_match(path, |_, _| any = true);
        any
    }

    /// Orders of the views whose selector selects `source_path`, in precedence order.
    pub fn views_selecting(&self, source_path: &str) -> Vec<u64> {
        let mut orders = self.index.owners_matching(source_path);
        orders.sort_unstable();
        orders
    }

    /// Records what view `order` derives from `source` now. Without `preserve` the paths it
    /// derived before and no longer derives are released; with it they keep their last value.
    /// Returns every path whose claims changed.
    pub fn set_claims(
        &mut self,
        order: u64,
        source: &str,
        results: Vec<(String, ReferenceValue)>,
        preserve: bool,
    ) -> Vec<PathChange> {
        let key = (order, source.to_owned());
        let claimant: Claimant = (order, source.to_owned());
        let before = self.produced.remove(&key).unwrap_or_default();
        let mut now: BTreeSet<String> = BTreeSet::new();
        let mut changes = Vec::new();
        for (path, value) in results {
            if !now.insert(path.clone()) {
                continue; // the evaluator already keeps the first; be safe
            }
            let entry = self.claims.entry(path.clone()).or_default();
            if entry.get(&claimant) != Some(&value) {
                entry.insert(claimant.clone(), value);
                changes.push(path);
            }
        }
        let released: Vec<String> = before.difference(&now).cloned().collect();
        for path in &released {
            if preserve {
                // `preserve topics`: only source or view removal releases a path, even when
                // the source now derives nothing (filtered out, failed transformation).
                now.insert(path.clone());
                continue;
            }
            if let Some(entry) = self.claims.get_mut(path) {
                entry.remove(&claimant);
                if entry.is_empty() {
                    self.claims.remove(path);
                }
            }
            changes.push(path.clone());
        }
        if !now.is_empty() {
            self.produced.insert(key, now);
        }
        changes
    }

    /// After a reload: releases the claims of view `order` that its creator may no longer
    /// make — every path derived from a source `readable` refuses, and every path `writable`
    /// refuses — also under `preserve topics`. Returns the paths whose claims changed.
    pub fn release_unauthorised(
        &mut self,
        order: u64,
        readable: &dyn Fn(&str) -> bool,
        writable: &dyn Fn(&str) -> bool,
    ) -> Vec<PathChange> {
        let keys: Vec<(u64, String)> = self
            .produced
            .keys()
            .filter(|(o, _)| *o == order)
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for key in keys {
            let source_readable = readable(&key.1);
            let Some(paths) = self.produced.get_mut(&key) else {
                continue;
            };
            let refused: Vec<String> = paths
                .iter()
                .filter(|path| !source_readable || !writable(path))
                .cloned()
                .collect();
            for path in refused {
                paths.remove(&path);
                if let Some(entry) = self.claims.get_mut(&path) {
                    entry.remove(&key);
                    if entry.is_empty() {
                        self.claims.remove(&path);
                    }
                }
                changes.push(path);
            }
            if paths.is_empty() {
                self.produced.remove(&key);
            }
        }
        changes
    }

    /// Releases everything derived from `source` (the source topic was removed).
    pub fn source_removed(&mut self, order: u64, source: &str) -> Vec<PathChange> {
        self.set_claims(order, source, Vec::new(), false)
    }

    /// The winning claim at `path`: the owning view's order and the value.
    pub fn effective(&self, path: &str) -> Option<(u64, &ReferenceValue)> {
        self.claims
            .get(path)
            .and_then(|entry| entry.iter().next())
            .map(|((order, _), value)| (*order, value))
    }

    /// Is `path` a reference path some view claims?
    #[cfg(test)]
    pub fn is_claimed(&self, path: &str) -> bool {
        self.claims.contains_key(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffusion_core::TopicType;
    use serde_json::json;

    fn spec(text: &str) -> Arc<ViewSpec> {
        Arc::new(ViewSpec::parse(text).unwrap())
    }

    fn rv(v: serde_json::Value) -> ReferenceValue {
        ReferenceValue {
            topic_type: TopicType::Json,
            value: v,
        }
    }

    #[test]
    fn earliest_view_wins_and_replacement_keeps_precedence() {
        let mut reg = ViewRegistry::default();
        let (first, _) = reg.create("first", spec("map ?a// to r/<path(1)>"), Access::open());
        let (second, _) = reg.create("second", spec("map ?b// to r/<path(1)>"), Access::open());
        reg.set_claims(second, "b/x", vec![("r/x".into(), rv(json!(2)))], false);
        assert_eq!(reg.effective("r/x").unwrap().0, second);
        reg.set_claims(first, "a/x", vec![("r/x".into(), rv(json!(1)))], false);
        assert_eq!(reg.effective("r/x"), Some((first, &rv(json!(1)))));
        // Replacing `first` drops its claims but keeps its order.
        let (again, changes) = reg.create("first", spec("map ?c// to r/<path(1)>"), Access::open());
        assert_eq!(again, first);
        assert_eq!(changes, vec!["r/x".to_owned()]);
        assert_eq!(reg.effective("r/x").unwrap().0, second);
        assert_eq!(
            reg.views().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["first", "second"]
        );
        assert_eq!(reg.views_selecting("c/q"), vec![first]);
        assert!(reg.views_selecting("a/q").is_empty());
    }

    #[test]
    fn derived_paths_move_unless_preserved() {
        let mut reg = ViewRegistry::default();
        let (o, _) = reg.create(
            "v",
            spec("map ?cars/ to <scalar(/owner)>/<path(1)>"),
            Access::open(),
        );
        reg.set_claims(o, "cars/1", vec![("ann/1".into(), rv(json!(1)))], false);
        let changes = reg.set_claims(o, "cars/1", vec![("bob/1".into(), rv(json!(1)))], false);
        assert_eq!(changes, vec!["bob/1".to_owned(), "ann/1".to_owned()]);
        assert!(!reg.is_claimed("ann/1"));
        // preserve topics keeps the old path until the source goes.
        reg.set_claims(o, "cars/1", vec![("cid/1".into(), rv(json!(1)))], true);
        assert!(reg.is_claimed("bob/1") && reg.is_claimed("cid/1"));
        let changes = reg.source_removed(o, "cars/1");
        assert_eq!(changes.len(), 2);
        assert!(!reg.is_claimed("bob/1") && !reg.is_claimed("cid/1"));
    }

    #[test]
    fn removing_a_view_releases_all_its_paths() {
        let mut reg = ViewRegistry::default();
        let (o, _) = reg.create("v", spec("map ?a// to r/<path(1)>"), Access::open());
        reg.set_claims(o, "a/1", vec![("r/1".into(), rv(json!(1)))], false);
        reg.set_claims(o, "a/2", vec![("r/2".into(), rv(json!(2)))], false);
        let mut changes = reg.remove("v").unwrap();
        changes.sort();
        assert_eq!(changes, ["r/1", "r/2"]);
        assert!(reg.effective("r/1").is_none());
        assert!(reg.remove("v").is_none());
    }

    #[test]
    fn unchanged_claims_report_no_change() {
        let mut reg = ViewRegistry::default();
        let (o, _) = reg.create("v", spec("map ?a// to r/<path(1)>"), Access::open());
        assert_eq!(
            reg.set_claims(o, "a/1", vec![("r/1".into(), rv(json!(1)))], false)
                .len(),
            1
        );
        assert!(
            reg.set_claims(o, "a/1", vec![("r/1".into(), rv(json!(1)))], false)
                .is_empty()
        );
    }
}
