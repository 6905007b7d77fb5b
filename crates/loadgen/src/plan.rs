//! Which topics a run publishes on and which of them each subscriber receives.
//!
//! The fan-out scenarios use one topic that every subscriber receives. The `market` scenario
//! publishes on many topics (`md/AAAA`, `md/AAAB`, …) in turn, and each subscriber receives a
//! few of them. Both the assignment of topics to subscribers and the topic of each published
//! message are fixed functions of an index, so that a subscriber can tell from the highest
//! sequence number it has seen how many of the messages published so far were meant for it,
//! and the publisher can tell how many deliveries the messages it has published owe the
//! subscribers — the accounting the saturating phase and the drain rely on.

/// Why a topic plan cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Each subscriber must receive at least one topic and at most all of them.
    #[error(
        "--topics-per-subscriber must be between 1 and --topics ({topics}), not {per_subscriber}"
    )]
    PerSubscriber {
        /// Topics in the plan.
        topics: usize,
        /// What was asked for.
        per_subscriber: usize,
    },
    /// The topic prefix must be a plain path (non-empty, no leading or trailing `/`).
    #[error("--topic-prefix must be a non-empty path without a leading or trailing '/', not '{0}'")]
    Prefix(String),
}

/// The topics of a run and who receives which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlan {
    /// Topic paths, indexed by topic number (one entry: the single-topic fan-out).
    names: Vec<String>,
    /// The symbol part of each market topic (empty for the single topic).
    symbols: Vec<String>,
    /// Topics each subscriber receives.
    per_subscriber: usize,
}

/// The ticker symbol of market topic `index`: four upper-case letters counting up from `AAAA`
/// (26⁴ = 456,976 of them before they repeat).
pub fn symbol(index: usize) -> String {
    let mut letters = [b'A'; 4];
    let mut rest = index;
    for letter in letters.iter_mut().rev() {
        *letter = b'A' + (rest % 26) as u8;
        rest /= 26;
    }
    letters.iter().map(|&b| char::from(b)).collect()
}

impl TopicPlan {
    /// One topic (`name`), received by every subscriber: the fan-out scenarios.
    pub fn single(name: &str) -> Self {
        Self {
            names: vec![name.to_owned()],
            symbols: vec![String::new()],
            per_subscriber: 1,
        }
    }

    /// `count` market topics `PREFIX/SYMBOL`, each subscriber receiving `per_subscriber` of them.
    pub fn market(prefix: &str, count: usize, per_subscriber: usize) -> Result<Self, PlanError> {
        if per_subscriber == 0 || per_subscriber > count {
            return Err(PlanError::PerSubscriber {
                topics: count,
                per_subscriber,
            });
        }
        if prefix.is_empty() || prefix.starts_with('/') || prefix.ends_with('/') {
            return Err(PlanError::Prefix(prefix.to_owned()));
        }
        let symbols: Vec<String> = (0..count).map(symbol).collect();
        let names = symbols.iter().map(|s| format!("{prefix}/{s}")).collect();
        Ok(Self {
            names,
            symbols,
            per_subscriber,
        })
    }

    /// Whether this is the single-topic plan (every subscriber receives everything).
    pub fn is_single(&self) -> bool {
        self.names.len() == 1
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the plan has no topic (never: both constructors make at least one).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Topics each subscriber receives.
    pub fn per_subscriber(&self) -> usize {
        self.per_subscriber
    }

    /// The path of topic `topic`.
    pub fn name(&self, topic: usize) -> &str {
        &self.names[topic % self.names.len()]
    }

    /// The symbol of topic `topic` (empty for the single topic).
    pub fn symbol(&self, topic: usize) -> &str {
        &self.symbols[topic % self.symbols.len()]
    }

    /// The topics subscriber `subscriber` receives, ascending: `per_subscriber` topics spaced
    /// `len / per_subscriber` apart, starting at `subscriber mod len`. Every topic is received
    /// by the same number of subscribers (± 1) and neighbouring subscribers share few topics,
    /// so consecutive messages (which go to consecutive topics) reach different subscribers.
    pub fn topics_of(&self, subscriber: usize) -> Vec<usize> {
        let count = self.names.len();
        let stride = count / self.per_subscriber;
        let mut topics: Vec<usize> = (0..self.per_subscriber)
            .map(|j| (subscriber + j * stride) % count)
            .collect();
        topics.sort_unstable();
        topics
    }

    /// The topic of the `offset`-th message published in the run (1 = the first): the topics
    /// in turn, so every topic ticks at the same rate.
    pub fn topic_of_message(&self, offset: u64) -> usize {
        (offset.saturating_sub(1) % self.names.len() as u64) as usize
    }

    /// How many of the first `offset` messages of the run went to the topics in `topics`
    /// (ascending, as [`Self::topics_of`] returns them).
    pub fn messages_for(&self, topics: &[usize], offset: u64) -> u64 {
        let count = self.names.len() as u64;
        let rounds = offset / count;
        let rest = offset % count;
        let in_rest = topics.partition_point(|&t| (t as u64) < rest) as u64;
        rounds * topics.len() as u64 + in_rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_count_up_in_letters() {
        assert_eq!(symbol(0), "AAAA");
        assert_eq!(symbol(1), "AAAB");
        assert_eq!(symbol(26), "AABA");
        assert_eq!(symbol(1999), "ACYX");
        let plan = TopicPlan::market("md", 3, 1).unwrap();
        assert_eq!(plan.name(2), "md/AAAC");
        assert_eq!(plan.symbol(2), "AAAC");
    }

    #[test]
    fn every_topic_has_the_same_number_of_subscribers() {
        let plan = TopicPlan::market("md", 2000, 20).unwrap();
        let mut per_topic = vec![0u32; plan.len()];
        for subscriber in 0..10_000 {
            let topics = plan.topics_of(subscriber);
            assert_eq!(topics.len(), 20);
            assert!(
                topics.windows(2).all(|w| w[0] < w[1]),
                "distinct, ascending"
            );
            for t in topics {
                per_topic[t] += 1;
            }
        }
        assert!(per_topic.iter().all(|&n| n == 100), "{per_topic:?}");
        // Neighbours do not share their topics.
        let a = plan.topics_of(0);
        assert!(plan.topics_of(1).iter().all(|t| !a.contains(t)));
    }

    #[test]
    fn uneven_sizes_still_give_distinct_topics() {
        let plan = TopicPlan::market("md", 7, 3).unwrap();
        for subscriber in 0..20 {
            let topics = plan.topics_of(subscriber);
            assert_eq!(topics.len(), 3);
            assert!(topics.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn messages_for_counts_what_a_subscriber_is_owed() {
        let plan = TopicPlan::market("md", 10, 2).unwrap();
        let topics = plan.topics_of(3); // topics 3 and 8
        assert_eq!(topics, vec![3, 8]);
        // Brute force: message k (1-based) goes to topic (k - 1) mod 10.
        for offset in 0..45u64 {
            let expected = (1..=offset)
                .filter(|&k| topics.contains(&plan.topic_of_message(k)))
                .count() as u64;
            assert_eq!(
                plan.messages_for(&topics, offset),
                expected,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn the_single_topic_owes_every_message() {
        let plan = TopicPlan::single("bench/t");
        assert!(plan.is_single());
        assert_eq!(plan.topics_of(12_345), vec![0]);
        assert_eq!(plan.topic_of_message(77), 0);
        assert_eq!(plan.messages_for(&[0], 77), 77);
        assert_eq!(plan.name(0), "bench/t");
    }

    #[test]
    fn bad_plans_are_refused() {
        assert!(matches!(
            TopicPlan::market("md", 10, 0),
            Err(PlanError::PerSubscriber { .. })
        ));
        assert!(TopicPlan::market("md", 10, 11).is_err());
        assert!(matches!(
            TopicPlan::market("/md", 10, 1),
            Err(PlanError::Prefix(_))
        ));
        assert!(TopicPlan::market("", 10, 1).is_err());
    }
}
