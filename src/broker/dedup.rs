//! A topic's idempotency window (`DEDUP_WINDOW`) on a single node: the
//! message ids published to it lately, each with its event's `seq`, so a
//! publish retried with an id already published is answered with the
//! original's `seq` instead of being delivered again. (In cluster mode
//! JetStream's duplicate window does this across nodes; see `cluster`.)
//!
//! Time is cut into spans one window long, and each id is kept in the table
//! of the span it was first published in, with its publish time. An id is a
//! duplicate while less than a window has passed since then, so only the
//! current span's table and the previous one's can hold a live id, and an
//! older table is dropped whole: no id is ever looked up again to expire
//! it, and there is no list of ids in publish order beside the tables. A
//! publish costs a probe of the previous table and an insert into the
//! current one. At full ingress rate both are larger than any cache, and
//! each random access counts: the design before this one (a queue of
//! expiries, each removing its id) made about twice as many.
//!
//! Memory: 32 bytes an id plus the table's slack (tables grow by doubling:
//! 37 to 75 bytes an id; a million ids measured below), for the ids of up
//! to two spans. There is no timer: an idle topic keeps its tables until
//! its next publish or its deletion.

use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use foldhash::quality::RandomState;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

/// A UUID as two words.
type Id = (u64, u64);

pub(super) struct DedupWindow {
    window_ms: u64,
    /// What publish times count from.
    started: Instant,
    /// Ids first published in the current span.
    current: Span,
    /// Ids first published in the span before it; empty when that span
    /// saw none or is not the one just before.
    previous: Span,
    /// Keyed per topic: ids come from clients, who must not be able to
    /// pick ones that collide.
    hasher: RandomState,
}

#[derive(Default)]
struct Span {
    /// Which window-long span of time since `started`.
    number: u64,
    by_id: HashTable<Seen>,
}

#[derive(Clone, Copy)]
struct Seen {
    id: Id,
    seq: u64,
    /// Milliseconds after `started` when the id was first published.
    published_ms: u64,
}

impl DedupWindow {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            window_ms: millis(window).max(1),
            started: Instant::now(),
            current: Span::default(),
            previous: Span::default(),
            hasher: RandomState::default(),
        }
    }

    /// For a publish of `id` that would be event `next_seq`: the original
    /// event's `seq` when `id` was published within the window; otherwise
    /// `None`, and `id` is remembered as `next_seq`'s. Ids that are not
    /// UUIDs (none reach a single node's broker) are never duplicates.
    pub(super) fn check(&mut self, id: &str, next_seq: u64, now: Instant) -> Option<u64> {
        let id = parse_id(id)?;
        let now_ms = millis(now.saturating_duration_since(self.started));
        self.enter_span(now_ms / self.window_ms);
        let hash = self.hasher.hash_one(id);
        let live_in_previous = self
            .previous
            .by_id
            .find(hash, |seen| seen.id == id)
            .filter(|seen| now_ms - seen.published_ms < self.window_ms);
        if let Some(seen) = live_in_previous {
            return Some(seen.seq);
        }
        let hasher = &self.hasher;
        match self
            .current
            .by_id
            .entry(hash, |seen| seen.id == id, |seen| hasher.hash_one(seen.id))
        {
            // Published in this span, so less than a window ago.
            Entry::Occupied(seen) => Some(seen.get().seq),
            Entry::Vacant(slot) => {
                slot.insert(Seen {
                    id,
                    seq: next_seq,
                    published_ms: now_ms,
                });
                None
            }
        }
    }

    /// Makes span `number` the current one. What was published two spans
    /// ago or earlier is all out of the window: those tables are dropped.
    fn enter_span(&mut self, number: u64) {
        if number == self.current.number {
            return;
        }
        let ended = std::mem::replace(
            &mut self.current,
            Span {
                number,
                by_id: HashTable::new(),
            },
        );
        self.previous = if ended.number + 1 == number {
            ended
        } else {
            Span::default()
        };
    }

    /// Bytes the window's tables hold.
    #[cfg(test)]
    fn allocated_bytes(&self) -> usize {
        self.current.by_id.allocation_size() + self.previous.by_id.allocation_size()
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
        assert_eq!(
            (window.current.by_id.len(), window.previous.by_id.len()),
            (1, 0),
            "the tables of spans 0 to 2 are gone"
        );
    }

    /// The figure the module's doc gives: a million ids in one window.
    #[test]
    fn a_million_ids_take_69_mb_and_are_given_back_two_spans_on() {
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
        assert!(bytes < 70 * IDS as usize, "{bytes} bytes");
        for n in (1..=IDS).step_by(99_991) {
            assert_eq!(window.check(&uuid(n), IDS + 1, start), Some(n));
        }
        assert_eq!(window.check(&uuid(IDS + 1), IDS + 1, start + MINUTE), None);
        assert_eq!(
            window.check(&uuid(1), IDS + 2, start + MINUTE),
            None,
            "expired, though its span's table is kept one more span"
        );
        assert_eq!(
            window.check(&uuid(IDS + 3), IDS + 3, start + 2 * MINUTE),
            None
        );
        assert!(
            window.allocated_bytes() < 64 * 1024,
            "given back two spans on"
        );
    }
}
