//! A topic's idempotency window (`DEDUP_WINDOW`) on a single node: the
//! message ids published to it lately, each with its event's `seq`, so a
//! publish retried with an id already published is answered with the
//! original's `seq` instead of being delivered again. (In cluster mode
//! JetStream's duplicate window does this across nodes; see `cluster`.)
//!
//! Memory, per id in the window: a 24-byte entry in a ring indexed by
//! `seq` (a single node numbers a topic's events one by one, so the entry
//! of event `seq` is at `seq - first_seq`), and the `seq` alone (8 bytes
//! and a control byte) in a hash table that finds the entry by id: 44 MB
//! for a million ids, 44 bytes each (`a_million_ids_take_44_mb`, below,
//! measures it; tables grow by doubling, so between about 30 and 60 bytes
//! per id). Expiry pops the ring's front
//! as publishes pass: there is no timer per id, and an idle topic keeps its
//! last window until its next publish or its deletion.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use hashbrown::HashTable;

/// A UUID as two words, as compact as it gets in the ring.
type Id = (u64, u64);

pub(super) struct DedupWindow {
    window: Duration,
    /// What entry times count from.
    started: Instant,
    /// The `seq` of `recent`'s front entry.
    first_seq: u64,
    /// One entry per event, in `seq` order, oldest first.
    recent: VecDeque<Entry>,
    /// The `seq` of every entry in `recent`, found by the entry's id.
    by_id: HashTable<u64>,
    /// Keyed per topic: ids come from clients, who must not be able to
    /// pick ones that collide.
    hasher: RandomState,
}

#[derive(Clone, Copy)]
struct Entry {
    id: Id,
    /// Milliseconds after `started` when the id leaves the window.
    expires_ms: u64,
}

/// Below this many entries the tables are not shrunk after a burst.
const SHRINK_FLOOR: usize = 1024;

impl DedupWindow {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            window,
            started: Instant::now(),
            first_seq: 0,
            recent: VecDeque::new(),
            by_id: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    /// The `seq` of the event published with `id` within the window, if
    /// any. Ids that are not UUIDs (none reach a single node's broker) are
    /// never duplicates.
    pub(super) fn original(&mut self, id: &str, now: Instant) -> Option<u64> {
        let id = parse_id(id)?;
        self.expire(now);
        let (recent, first_seq) = (&self.recent, self.first_seq);
        self.by_id
            .find(self.hasher.hash_one(id), |seq| {
                recent[(seq - first_seq) as usize].id == id
            })
            .copied()
    }

    /// Remembers that event `seq`, the topic's next, was published with `id`.
    pub(super) fn record(&mut self, id: &str, seq: u64, now: Instant) {
        let Some(id) = parse_id(id) else { return };
        if self.recent.is_empty() {
            self.first_seq = seq;
        }
        debug_assert_eq!(seq, self.first_seq + self.recent.len() as u64);
        let expires_ms = self.millis(now).saturating_add(millis(self.window));
        self.recent.push_back(Entry { id, expires_ms });
        let (recent, first_seq, hasher) = (&self.recent, self.first_seq, &self.hasher);
        self.by_id.insert_unique(hasher.hash_one(id), seq, |seq| {
            hasher.hash_one(recent[(seq - first_seq) as usize].id)
        });
    }

    /// Forgets the ids whose window has passed, oldest first.
    fn expire(&mut self, now: Instant) {
        let now_ms = self.millis(now);
        while let Some(front) = self
            .recent
            .front()
            .filter(|entry| entry.expires_ms <= now_ms)
        {
            let (id, seq) = (front.id, self.first_seq);
            if let Ok(found) = self
                .by_id
                .find_entry(self.hasher.hash_one(id), |kept| *kept == seq)
            {
                found.remove();
            }
            self.recent.pop_front();
            self.first_seq += 1;
        }
        self.shrink_after_a_burst();
    }

    /// Gives memory back once the window holds a quarter of what its
    /// tables were grown for.
    fn shrink_after_a_burst(&mut self) {
        let kept = self.recent.len();
        if self.recent.capacity() > SHRINK_FLOOR && kept * 4 < self.recent.capacity() {
            self.recent.shrink_to(kept * 2);
            let (recent, first_seq, hasher) = (&self.recent, self.first_seq, &self.hasher);
            self.by_id.shrink_to(kept * 2, |seq| {
                hasher.hash_one(recent[(seq - first_seq) as usize].id)
            });
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        millis(now.saturating_duration_since(self.started))
    }

    /// Bytes the window's tables hold.
    #[cfg(test)]
    fn allocated_bytes(&self) -> usize {
        self.recent.capacity() * std::mem::size_of::<Entry>() + self.by_id.allocation_size()
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
        assert_eq!(window.original(&uuid(1), start), None);
        window.record(&uuid(1), 1, start);
        window.record(&uuid(2), 2, start + Duration::from_secs(30));
        let later = start + Duration::from_secs(59);
        assert_eq!(window.original(&uuid(1), later), Some(1));
        assert_eq!(
            window.original(&uuid(1).to_uppercase(), later),
            Some(1),
            "the same UUID in capitals"
        );
        assert_eq!(window.original(&uuid(2), later), Some(2));
        assert_eq!(window.original(&uuid(3), later), None);
        let past_first = start + MINUTE;
        assert_eq!(window.original(&uuid(1), past_first), None, "expired");
        assert_eq!(window.original(&uuid(2), past_first), Some(2));
        window.record(&uuid(1), 3, past_first);
        assert_eq!(window.original(&uuid(1), past_first), Some(3));
        assert_eq!(window.original(&uuid(2), start + 2 * MINUTE), None);
        assert!(window.recent.is_empty() && window.by_id.is_empty());
    }

    /// The figure the module's doc gives: a million ids in one window.
    #[test]
    fn a_million_ids_take_44_mb_and_are_given_back_once_expired() {
        const IDS: u64 = 1_000_000;
        let mut window = DedupWindow::new(MINUTE);
        let start = window.started;
        for n in 1..=IDS {
            window.record(&uuid(n), n, start);
        }
        let bytes = window.allocated_bytes();
        println!(
            "{IDS} ids: {bytes} bytes, {:.1} per id",
            bytes as f64 / IDS as f64
        );
        assert!(bytes < 45 * IDS as usize, "{bytes} bytes");
        for n in (1..=IDS).step_by(99_991) {
            assert_eq!(window.original(&uuid(n), start), Some(n));
        }
        assert_eq!(window.original(&uuid(IDS + 1), start + MINUTE), None);
        assert!(window.allocated_bytes() < 64 * 1024, "shrunk once expired");
    }
}
