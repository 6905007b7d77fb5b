//! An index of retained selectors, so that matching a newly added topic against every session's
//! subscriptions does not scan them all.
//!
//! Every selector has a path prefix: all the topics it can select are that path or below it.
//! Selectors are bucketed by prefix; a topic path `a/b/c` can only be selected by selectors in
//! the buckets `""`, `a`, `a/b` and `a/b/c`, so a lookup costs one hash probe per segment plus a
//! regex test per candidate — independent of how many selectors sit under other prefixes.

use std::collections::HashMap;
use std::hash::Hash;

use crate::selector::Selector;

/// Retained selectors keyed by their owner (a session id, a view name, …).
#[derive(Debug, Clone)]
pub struct SelectorIndex<K> {
    buckets: HashMap<String, Vec<(K, Selector)>>,
    len: usize,
}

impl<K> Default for SelectorIndex<K> {
    fn default() -> Self {
        Self {
            buckets: HashMap::new(),
            len: 0,
        }
    }
}

impl<K: Clone + Eq + Hash> SelectorIndex<K> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Retains `selector` for `owner`. Returns false (and changes nothing) when the owner
    /// already retains a selector with the same text.
    pub fn insert(&mut self, owner: K, selector: Selector) -> bool {
        let bucket = self
            .buckets
            .entry(selector.path_prefix().to_owned())
            .or_default();
        if bucket
            .iter()
            .any(|(k, s)| *k == owner && s.as_str() == selector.as_str())
        {
            return false;
        }
        bucket.push((owner, selector));
        self.len += 1;
        true
    }

    /// Forgets the selector `selector` retained by `owner`; returns whether it was there.
    pub fn remove(&mut self, owner: &K, selector: &Selector) -> bool {
        let prefix = selector.path_prefix();
        let Some(bucket) = self.buckets.get_mut(prefix) else {
            return false;
        };
        let before = bucket.len();
        bucket.retain(|(k, s)| !(k == owner && s.as_str() == selector.as_str()));
        let removed = before != bucket.len();
        if bucket.is_empty() {
            self.buckets.remove(prefix);
        }
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Forgets every selector of `owner` (a session closing). Linear in the index size; it runs
    /// once per session, not per update.
    pub fn remove_owner(&mut self, owner: &K) {
        let mut removed = 0;
        self.buckets.retain(|_, bucket| {
            let before = bucket.len();
            bucket.retain(|(k, _)| k != owner);
            removed += before - bucket.len();
            !bucket.is_empty()
        });
        self.len -= removed;
    }

    /// Calls `found` with each (owner, selector) pair whose selector selects `path`. An owner
    /// with several matching selectors is reported once per selector.
    pub fn for_each_match(&self, path: &str, mut found: impl FnMut(&K, &Selector)) {
        let mut visit = |prefix: &str| {
            if let Some(bucket) = self.buckets.get(prefix) {
                for (owner, selector) in bucket {
                    if selector.matches(path) {
                        found(owner, selector);
                    }
                }
            }
        };
        visit("");
        for (i, _) in path.match_indices('/') {
            visit(&path[..i]);
        }
        visit(path);
    }

    /// The owners with at least one selector selecting `path`, each once.
    pub fn owners_matching(&self, path: &str) -> Vec<K> {
        let mut seen = std::collections::HashSet::new();
        let mut owners: Vec<K> = Vec::new();
        self.for_each_match(path, |owner, _| {
            if seen.insert(owner.clone()) {
                owners.push(owner.clone());
            }
        });
        owners
    }

    /// Does `owner` retain any selector, other than `except`, that selects `path`?
    pub fn owner_selects(&self, owner: &K, path: &str, except: Option<&Selector>) -> bool {
        let mut hit = false;
        self.for_each_match(path, |k, s| {
            if k == owner && except.is_none_or(|e| e.as_str() != s.as_str()) {
                hit = true;
            }
        });
        hit
    }

    /// Number of retained (owner, selector) pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn finds_matches_across_prefix_buckets() {
        let mut index = SelectorIndex::new();
        assert!(index.insert(1, sel(">a/b")));
        assert!(index.insert(2, sel("?a/.*")));
        assert!(index.insert(3, sel("*.*")));
        assert!(index.insert(4, sel("?x/.*")));
        assert!(index.insert(5, sel("#>a/b////>c")));
        assert!(
            !index.insert(1, sel(">a/b")),
            "same owner and selector twice"
        );
        let mut owners = index.owners_matching("a/b");
        owners.sort();
        assert_eq!(owners, vec![1, 2, 3, 5]);
        assert_eq!(index.owners_matching("x/y"), vec![3, 4]);
        let mut c = index.owners_matching("c");
        c.sort();
        assert_eq!(c, vec![3, 5]);
    }

    #[test]
    fn removal_by_selector_and_owner() {
        let mut index = SelectorIndex::new();
        index.insert("s1", sel("?a/.*"));
        index.insert("s1", sel(">a/b"));
        index.insert("s2", sel(">a/b"));
        assert_eq!(index.len(), 3);
        assert!(index.owner_selects(&"s1", "a/b", Some(&sel("?a/.*"))));
        assert!(index.remove(&"s1", &sel(">a/b")));
        assert!(!index.remove(&"s1", &sel(">a/b")));
        assert!(!index.owner_selects(&"s1", "a/b", Some(&sel("?a/.*"))));
        assert!(index.owner_selects(&"s1", "a/b", None));
        index.remove_owner(&"s1");
        assert_eq!(index.owners_matching("a/b"), vec!["s2"]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn agrees_with_a_linear_scan() {
        let selectors = [
            ">a",
            "?a/.*",
            "*a/b//",
            "?.*/c",
            "*.*c",
            "#>q////?a/b/",
            "?a/b/c",
            "*a/b/",
        ];
        let paths = ["a", "a/b", "a/b/c", "x/c", "q", "a/bc", "abc", "a/b/c/d"];
        let mut index = SelectorIndex::new();
        for (i, s) in selectors.iter().enumerate() {
            index.insert(i, sel(s));
        }
        for path in paths {
            let mut expected: Vec<usize> = selectors
                .iter()
                .enumerate()
                .filter(|(_, s)| sel(s).matches(path))
                .map(|(i, _)| i)
                .collect();
            let mut got = index.owners_matching(path);
            expected.sort();
            got.sort();
            assert_eq!(got, expected, "{path}");
        }
    }
}
