//! An index of retained selectors, so that matching a newly added topic against every session's
//! subscriptions does not scan them all.
//!
//! Every selector has a path prefix: all the topics it can select are that path or below it.
//! Selectors are bucketed by prefix; a topic path `a/b/c` can only be selected by selectors in
//! the buckets `""`, `a`, `a/b` and `a/b/c`, so a lookup costs one hash probe per segment (and
//! none deeper than the deepest prefix in use) plus one linear match per candidate —
//! independent of how many selectors sit under other prefixes. Within a bucket selectors are
//! grouped by owner and keyed by their text, so adding or removing one costs O(1) however many
//! an owner holds, and questions about one owner ([`SelectorIndex::owner_selects`]) look only
//! at that owner's selectors.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::selector::Selector;

/// One prefix bucket: owner → (selector text → selector).
type Bucket<K> = HashMap<K, HashMap<Arc<str>, Selector>>;

/// Retained selectors keyed by their owner (a session id, a view name, …).
#[derive(Debug, Clone)]
pub struct SelectorIndex<K> {
    buckets: HashMap<Box<str>, Bucket<K>>,
    /// How many buckets have a prefix of each depth (index = segments; 0 = the empty prefix),
    /// so lookups stop probing below the deepest prefix in use.
    depths: Vec<usize>,
    len: usize,
}

impl<K> Default for SelectorIndex<K> {
    fn default() -> Self {
        Self {
            buckets: HashMap::new(),
            depths: Vec::new(),
            len: 0,
        }
    }
}

fn depth_of(prefix: &str) -> usize {
    if prefix.is_empty() {
        0
    } else {
        prefix.bytes().filter(|b| *b == b'/').count() + 1
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
        let prefix = selector.path_prefix();
        if !self.buckets.contains_key(prefix) {
            let depth = depth_of(prefix);
            if self.depths.len() <= depth {
                self.depths.resize(depth + 1, 0);
            }
            self.depths[depth] += 1;
            self.buckets.insert(Box::from(prefix), HashMap::new());
        }
        let Some(bucket) = self.buckets.get_mut(prefix) else {
            return false;
        };
        let own = bucket.entry(owner).or_default();
        let text: Arc<str> = Arc::from(selector.as_str());
        if own.contains_key(&text) {
            return false;
        }
        own.insert(text, selector);
        self.len += 1;
        true
    }

    /// Forgets the selector `selector` retained by `owner`; returns whether it was there.
    pub fn remove(&mut self, owner: &K, selector: &Selector) -> bool {
        let prefix = selector.path_prefix();
        let Some(bucket) = self.buckets.get_mut(prefix) else {
            return false;
        };
        let Some(own) = bucket.get_mut(owner) else {
            return false;
        };
        let removed = own.remove(selector.as_str()).is_some();
        if own.is_empty() {
            bucket.remove(owner);
        }
        if bucket.is_empty() {
            self.buckets.remove(prefix);
            let depth = depth_of(prefix);
            if let Some(count) = self.depths.get_mut(depth) {
                *count -= 1;
            }
            while self.depths.last() == Some(&0) {
                self.depths.pop();
            }
        }
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// The prefixes of `path` that may have a bucket: `""`, then one per segment, down to the
    /// deepest prefix in use.
    fn probes<'p>(&self, path: &'p str) -> impl Iterator<Item = &'p str> + 'p {
        let limit = self.depths.len();
        let inner = path
            .match_indices('/')
            .map(move |(i, _)| &path[..i])
            .chain(std::iter::once(path));
        std::iter::once("").chain(inner).take(limit)
    }

    /// Calls `found` with each (owner, selector) pair whose selector selects `path`. An owner
    /// with several matching selectors is reported once per selector.
    pub fn for_each_match(&self, path: &str, mut found: impl FnMut(&K, &Selector)) {
        for prefix in self.probes(path) {
            if let Some(bucket) = self.buckets.get(prefix) {
                for (owner, own) in bucket {
                    for selector in own.values() {
                        if selector.matches(path) {
                            found(owner, selector);
                        }
                    }
                }
            }
        }
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

    /// Does `owner` retain any selector, other than `except`, that selects `path`? Looks only at
    /// that owner's selectors in the buckets `path` can be in.
    pub fn owner_selects(&self, owner: &K, path: &str, except: Option<&Selector>) -> bool {
        self.probes(path).any(|prefix| {
            self.buckets
                .get(prefix)
                .and_then(|bucket| bucket.get(owner))
                .is_some_and(|own| {
                    own.values()
                        .any(|s| except.is_none_or(|e| e.as_str() != s.as_str()) && s.matches(path))
                })
        })
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
        let mut xy = index.owners_matching("x/y");
        xy.sort();
        assert_eq!(xy, vec![3, 4]);
        let mut c = index.owners_matching("c");
        c.sort();
        assert_eq!(c, vec![3, 5]);
    }

    #[test]
    fn removal_by_selector() {
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
        assert!(index.remove(&"s1", &sel("?a/.*")));
        assert_eq!(index.owners_matching("a/b"), vec!["s2"]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn probes_stop_at_the_deepest_prefix_in_use() {
        let mut index = SelectorIndex::new();
        index.insert(1, sel("?a/b/.*"));
        assert_eq!(index.probes("a/b/c/d/e").count(), 3);
        index.insert(2, sel(">a/b/c/d"));
        assert_eq!(index.probes("a/b/c/d/e").count(), 5);
        index.remove(&2, &sel(">a/b/c/d"));
        assert_eq!(index.probes("a/b/c/d/e").count(), 3);
        assert_eq!(index.owners_matching("a/b/c"), vec![1]);
    }

    #[test]
    fn many_selectors_of_one_owner_in_one_bucket_stay_cheap() {
        // Would be quadratic with a scan per insert or removal.
        let mut index = SelectorIndex::new();
        let selectors: Vec<Selector> = (0..20_000)
            .map(|i| sel(&format!("#>x/{i}////>y")))
            .collect();
        for s in &selectors {
            assert!(index.insert(7, s.clone()));
        }
        assert_eq!(index.len(), 20_000);
        assert_eq!(index.owners_matching("y"), vec![7]);
        for s in &selectors {
            assert!(index.remove(&7, s));
        }
        assert!(index.is_empty());
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
