//! Where the shared tree lives in Redis: a fixed number of partitions, each a set of keys
//! with one hash tag (so a partition lives on one Redis Cluster shard and one script can
//! change all of it atomically), plus one more set for the views.
//!
//! For partition `N` (and `views`, with the tag `{views}`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `topic-server:{pN}:topics` | hash | per topic `s:PATH` (type and properties), `v:PATH` (value, wire JSON), `t:PATH` (topic sequence number), `o:PATH` (owner) |
//! | `topic-server:{pN}:seq` | string | the partition's sequence number: one per accepted change |
//! | `topic-server:{pN}:epoch` | string | a name chosen when the counter starts: a counter that starts again (Redis lost its data) gets a new one |
//! | `topic-server:{pN}:last` | string | the id of the last change: each change names the one before it |
//! | `topic-server:{pN}:log` | stream | the last accepted changes, entry id `SEQ-1`, field `m` |
//! | `topic-server:{pN}:changes` | channel | every accepted change, as it is accepted |
//!
//! The views' hash holds `d:NAME` (the definition) and `c:NAME` (the sequence number that
//! created it: views take precedence in that order).

/// Topic partitions. Fixed: every node must agree on where a topic lives, so changing it
/// means a new key space (a fresh Redis, or a flush).
pub(crate) const PARTITIONS: usize = 16;

/// The stream index of the views (the topic partitions are `0..PARTITIONS`).
pub(crate) const VIEWS: usize = PARTITIONS;

/// Every stream: the topic partitions, then the views.
pub(crate) const STREAMS: usize = PARTITIONS + 1;

/// The partition of the topic at `path`: 64-bit FNV-1a of its bytes, modulo [`PARTITIONS`]
/// (a stable function: it is part of the data layout in Redis).
pub(crate) fn partition_of(path: &str) -> usize {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = path
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // The remainder is below PARTITIONS, so it fits.
    (hash % PARTITIONS as u64) as usize
}

/// The Redis names of one stream (a topic partition or the views).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamKeys {
    /// The current state: topics (or views).
    pub state: String,
    /// The sequence counter.
    pub seq: String,
    /// The counter's epoch.
    pub epoch: String,
    /// The id of the last accepted change.
    pub last: String,
    /// The bounded log of changes.
    pub log: String,
    /// The pub/sub channel changes are published on.
    pub channel: String,
}

impl StreamKeys {
    /// The names of stream `index` (`VIEWS` for the views).
    pub fn of(index: usize) -> Self {
        let tag = match index {
            VIEWS => "{views}".to_owned(),
            n => format!("{{p{n}}}"),
        };
        let state = match index {
            VIEWS => "views",
            _ => "topics",
        };
        Self {
            state: format!("topic-server:{tag}:{state}"),
            seq: format!("topic-server:{tag}:seq"),
            epoch: format!("topic-server:{tag}:epoch"),
            last: format!("topic-server:{tag}:last"),
            log: format!("topic-server:{tag}:log"),
            channel: format!("topic-server:{tag}:changes"),
        }
    }

    /// The stream a channel name belongs to.
    pub fn index_of_channel(channel: &[u8]) -> Option<usize> {
        let text = std::str::from_utf8(channel).ok()?;
        let tag = text
            .strip_prefix("topic-server:{")?
            .strip_suffix("}:changes")?;
        match tag {
            "views" => Some(VIEWS),
            _ => tag
                .strip_prefix('p')?
                .parse::<usize>()
                .ok()
                .filter(|n| *n < PARTITIONS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Part of the data layout: these must never change.
        assert_eq!(
            partition_of(""),
            0xcbf2_9ce4_8422_2325_u64 as usize % PARTITIONS
        );
        let mut counts = [0usize; PARTITIONS];
        for i in 0..16_000 {
            counts[partition_of(&format!("md/SYM{i}"))] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn channels_name_their_stream() {
        for index in 0..STREAMS {
            let keys = StreamKeys::of(index);
            assert_eq!(
                StreamKeys::index_of_channel(keys.channel.as_bytes()),
                Some(index)
            );
        }
        assert_eq!(
            StreamKeys::index_of_channel(b"topic-server:{p99}:changes"),
            None
        );
        assert_eq!(StreamKeys::index_of_channel(b"other"), None);
        assert_eq!(StreamKeys::of(3).seq, "topic-server:{p3}:seq");
    }
}
