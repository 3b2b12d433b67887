//! A topic's idempotency window (`DEDUP_WINDOW`) on a single node: the
//! message ids published to it lately, each with its event's `seq`, so a
//! publish retried with an id already published is answered with the
//! original's `seq` instead of being delivered again. (In cluster mode
//! JetStream's duplicate window does this across nodes; see `cluster`.)
//!
//! A publish costs one probe of a hash table that holds each id with its
//! `seq` (24 bytes), and one push to a ring, in publish order, of when each
//! id leaves the window with its hash and `seq` (24 bytes), from which
//! expiry removes ids without hashing or comparing them again. Neither the
//! probe nor the table's growth touches the ring: at full ingress rate the
//! table is larger than any cache, and each extra random access showed.
//! Memory: 78 MB for a million ids, 78 bytes each
//! (`a_million_ids_…`, below, measures it; tables grow by doubling, so
//! between about 50 and 80 bytes per id). Expiry pops the ring's front as
//! publishes pass: there is no timer per id, and an idle topic keeps its
//! last window until its next publish or its deletion.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

/// A UUID as two words.
type Id = (u64, u64);

pub(super) struct DedupWindow {
    window_ms: u64,
    /// What entry times count from.
    started: Instant,
    /// One entry per id in the window, oldest first.
    recent: VecDeque<Expiry>,
    /// Every id in the window, with its event's `seq`.
    by_id: HashTable<Seen>,
    /// Keyed per topic: ids come from clients, who must not be able to
    /// pick ones that collide.
    hasher: RandomState,
}

#[derive(Clone, Copy)]
struct Seen {
    id: Id,
    seq: u64,
}

#[derive(Clone, Copy)]
struct Expiry {
    /// The id's hash and `seq`, which find its entry in `by_id`.
    hash: u64,
    seq: u64,
    /// Milliseconds after `started` when the id leaves the window.
    expires_ms: u64,
}

/// Below this many entries the tables are not shrunk after a burst.
const SHRINK_FLOOR: usize = 1024;

impl DedupWindow {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            window_ms: millis(window),
            started: Instant::now(),
            recent: VecDeque::new(),
            by_id: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    /// For a publish of `id` that would be event `next_seq`: the original
    /// event's `seq` when `id` was published within the window; otherwise
    /// `None`, and `id` is remembered as `next_seq`'s. Ids that are not
    /// UUIDs (none reach a single node's broker) are never duplicates.
    pub(super) fn check(&mut self, id: &str, next_seq: u64, now: Instant) -> Option<u64> {
        let id = parse_id(id)?;
        let now_ms = self.millis(now);
        self.expire(now_ms);
        let hash = self.hasher.hash_one(id);
        let hasher = &self.hasher;
        match self
            .by_id
            .entry(hash, |seen| seen.id == id, |seen| hasher.hash_one(seen.id))
        {
            Entry::Occupied(seen) => Some(seen.get().seq),
            Entry::Vacant(slot) => {
                slot.insert(Seen { id, seq: next_seq });
                self.recent.push_back(Expiry {
                    hash,
                    seq: next_seq,
                    expires_ms: now_ms.saturating_add(self.window_ms),
                });
                None
            }
        }
    }

    /// Forgets the ids whose window has passed, oldest first.
    fn expire(&mut self, now_ms: u64) {
        while let Some(&expired) = self
            .recent
            .front()
            .filter(|front| front.expires_ms <= now_ms)
        {
            if let Ok(seen) = self
                .by_id
                .find_entry(expired.hash, |seen| seen.seq == expired.seq)
            {
                seen.remove();
            }
            self.recent.pop_front();
        }
        self.shrink_after_a_burst();
    }

    /// Gives memory back once the window holds a quarter of what its
    /// tables were grown for.
    fn shrink_after_a_burst(&mut self) {
        let kept = self.recent.len();
        if self.recent.capacity() > SHRINK_FLOOR && kept * 4 < self.recent.capacity() {
            self.recent.shrink_to(kept * 2);
            let hasher = &self.hasher;
            self.by_id
                .shrink_to(kept * 2, |seen| hasher.hash_one(seen.id));
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        millis(now.saturating_duration_since(self.started))
    }

    /// Bytes the window's tables hold.
    #[cfg(test)]
    fn allocated_bytes(&self) -> usize {
        self.recent.capacity() * std::mem::size_of::<Expiry>() + self.by_id.allocation_size()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn parse_id(id: &str) -> Option<Id> {
    uuid::Uuid::try_parse(id).ok().map(|id| id.as_u64_pair())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(n: u64) -> String {
        uuid::Uuid::from_u64_pair(0x5550_e840_0e29_b41d, n).to_string()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn an_id_is_a_duplicate_within_the_window_only() {
        let mut window = DedupWindow::new(MINUTE);
        let start = window.started;
        assert_eq!(window.check(&uuid(1), 1, start), None);
        assert_eq!(window.check(&uuid(2), 2, start + MINUTE / 2), None);
        let later = start + Duration::from_secs(59);
        assert_eq!(window.check(&uuid(1), 3, later), Some(1));
        assert_eq!(
            window.check(&uuid(1).to_uppercase(), 3, later),
            Some(1),
            "the same UUID in capitals"
        );
        assert_eq!(window.check(&uuid(2), 3, later), Some(2));
        let past_first = start + MINUTE;
        assert_eq!(window.check(&uuid(1), 3, past_first), None, "expired");
        assert_eq!(
            window.check(&uuid(1), 4, past_first),
            Some(3),
            "published again"
        );
        assert_eq!(window.check(&uuid(2), 4, past_first), Some(2));
        assert_eq!(window.check(&uuid(9), 4, start + 3 * MINUTE), None);
        assert_eq!((window.recent.len(), window.by_id.len()), (1, 1));
    }

    /// The figure the module's doc gives: a million ids in one window.
    #[test]
    fn a_million_ids_take_78_mb_and_are_given_back_once_expired() {
        const IDS: u64 = 1_000_000;
        let mut window = DedupWindow::new(MINUTE);
        let start = window.started;
        for n in 1..=IDS {
            assert_eq!(window.check(&uuid(n), n, start), None);
        }
        let bytes = window.allocated_bytes();
        println!(
            "{IDS} ids: {bytes} bytes, {:.1} per id",
            bytes as f64 / IDS as f64
        );
        assert!(bytes < 78 * IDS as usize, "{bytes} bytes");
        for n in (1..=IDS).step_by(99_991) {
            assert_eq!(window.check(&uuid(n), IDS + 1, start), Some(n));
        }
        assert_eq!(window.check(&uuid(IDS + 1), IDS + 1, start + MINUTE), None);
        assert!(window.allocated_bytes() < 64 * 1024, "shrunk once expired");
    }
}
