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
//! it, and nothing is ever removed from a table.
//!
//! At full ingress rate both tables are larger than any cache, so what a
//! publish costs here is the cache lines it misses. Hence a table of its
//! own rather than a general one (whose control bytes and entries lie in
//! two places, two misses an insert): an entry is its id, `seq` and publish
//! time in 32 bytes, two to a 64-byte bucket, probed bucket after bucket;
//! an id is found, or its empty slot is, in the one line its hash points
//! to unless that line is full. [`DedupWindow::probe`] hashes the id and
//! prefetches that line of both tables, so that the publish can encode its
//! event while they load; [`DedupWindow::check`] then reads them.
//!
//! Memory: a table doubles when it would pass 7/8 full, so 37 to 73 bytes
//! an id (a million ids measured below), for the ids of up to two spans.
//! A span's table starts sized for as many ids as the span before it took
//! (so steady traffic does not grow it again, a rehash per doubling), and
//! its pages are first touched by the inserts that use them; after a
//! burst, the memory comes back three spans on. There is no timer: an
//! idle topic keeps its tables until its next publish or its deletion.

use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use foldhash::quality::RandomState;

use crate::broker::prefetch::prefetch;

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
    by_id: IdTable,
}

/// A publish's id, hashed, at the time of the publish: what
/// [`DedupWindow::check`] needs once the id's buckets are loaded.
pub(super) struct Probe {
    id: Id,
    hash: u64,
    now_ms: u64,
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

    /// Starts the check of a publish of `id` at `now`: moves to the span
    /// of `now` and prefetches the buckets the id hashes to. `None` for an
    /// id that is not a UUID (none reaches a single node's broker): such an
    /// id is never a duplicate.
    pub(super) fn probe(&mut self, id: &str, now: Instant) -> Option<Probe> {
        let id = parse_id(id)?;
        let now_ms = millis(now.saturating_duration_since(self.started));
        self.enter_span(now_ms / self.window_ms);
        let hash = self.hasher.hash_one(id);
        self.previous.by_id.prefetch(hash);
        self.current.by_id.prefetch(hash);
        Some(Probe { id, hash, now_ms })
    }

    /// For the publish `probe` started, which would be event `next_seq`:
    /// the original event's `seq` when its id was published within the
    /// window; otherwise `None`, and the id is remembered as `next_seq`'s.
    pub(super) fn check(&mut self, probe: Probe, next_seq: u64) -> Option<u64> {
        let Probe { id, hash, now_ms } = probe;
        let live_in_previous = self
            .previous
            .by_id
            .find(id, hash)
            .filter(|seen| now_ms - seen.published_ms < self.window_ms);
        if let Some(seen) = live_in_previous {
            return Some(seen.seq);
        }
        let new = Seen {
            id,
            seq: next_seq,
            published_ms: now_ms,
        };
        let hasher = &self.hasher;
        // Published in this span, so less than a window ago.
        self.current
            .by_id
            .find_or_insert(new, hash, |id| hasher.hash_one(id))
            .map(|seen| seen.seq)
    }

    /// Makes span `number` the current one. What was published two spans
    /// ago or earlier is all out of the window: those tables are dropped.
    fn enter_span(&mut self, number: u64) {
        if number == self.current.number {
            return;
        }
        let follows = self.current.number + 1 == number;
        // Sized for as many ids as the span before took, when traffic runs
        // on: not grown again from nothing, a rehash per doubling.
        let by_id = IdTable::with_capacity(if follows { self.current.by_id.len } else { 0 });
        let ended = std::mem::replace(&mut self.current, Span { number, by_id });
        self.previous = if follows { ended } else { Span::default() };
    }

    /// Bytes the window's tables hold.
    #[cfg(test)]
    fn allocated_bytes(&self) -> usize {
        self.current.by_id.allocated_bytes() + self.previous.by_id.allocated_bytes()
    }
}

/// An id as kept: `seq` 0 (no event has it) marks an empty slot.
#[derive(Clone, Copy)]
struct Seen {
    id: Id,
    seq: u64,
    /// Milliseconds after `started` when the id was first published.
    published_ms: u64,
}

/// One cache line of slots.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket([Seen; SLOTS_PER_BUCKET]);

const SLOTS_PER_BUCKET: usize = 2;

/// Open addressing with linear probing over buckets, insert-only: with no
/// removal there are no tombstones, and a probe ends at the first empty
/// slot.
#[derive(Default)]
struct IdTable {
    /// A power of two of buckets, or none before the first insert.
    buckets: Box<[Bucket]>,
    len: usize,
}

enum Slot {
    Taken(Seen),
    Empty { bucket: usize, slot: usize },
}

impl IdTable {
    /// A table that takes `ids` ids without growing.
    fn with_capacity(ids: usize) -> Self {
        if ids == 0 {
            return Self::default();
        }
        let slots = ids.saturating_mul(8).div_ceil(7);
        let count = slots.div_ceil(SLOTS_PER_BUCKET).next_power_of_two();
        // Zeroed by the allocator, which knows fresh memory from the system
        // to be zero already: a large table's pages are then first touched
        // by the inserts that use them, not all at once by a fill.
        let zeroed = Box::<[Bucket]>::new_zeroed_slice(count);
        // SAFETY: a `Bucket` is integers only, and all zeros is a valid
        // value of each (an empty slot).
        let buckets = unsafe { zeroed.assume_init() };
        Self { buckets, len: 0 }
    }

    /// How many ids the table takes before it grows: 7/8 of its slots.
    fn room(&self) -> usize {
        self.buckets.len() * SLOTS_PER_BUCKET * 7 / 8
    }

    fn home(&self, hash: u64) -> usize {
        // Truncation keeps the low bits, which the mask keeps anyway.
        hash as usize & (self.buckets.len() - 1)
    }

    fn prefetch(&self, hash: u64) {
        if !self.buckets.is_empty() {
            prefetch(&self.buckets[self.home(hash)]);
        }
    }

    /// The slot holding `id`, or the empty slot where it would go.
    fn slot(&self, id: Id, hash: u64) -> Option<Slot> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut bucket = self.home(hash);
        // The table is never full, so the probe meets an empty slot.
        loop {
            for (slot, seen) in self.buckets[bucket].0.iter().enumerate() {
                if seen.seq == 0 {
                    return Some(Slot::Empty { bucket, slot });
                }
                if seen.id == id {
                    return Some(Slot::Taken(*seen));
                }
            }
            bucket = (bucket + 1) & mask;
        }
    }

    fn find(&self, id: Id, hash: u64) -> Option<Seen> {
        match self.slot(id, hash)? {
            Slot::Taken(seen) => Some(seen),
            Slot::Empty { .. } => None,
        }
    }

    /// The entry already kept for `new.id`, or `None` once `new` is kept.
    fn find_or_insert(&mut self, new: Seen, hash: u64, rehash: impl Fn(Id) -> u64) -> Option<Seen> {
        let mut found = self.slot(new.id, hash);
        if let Some(Slot::Taken(seen)) = found {
            return Some(seen);
        }
        if self.len + 1 > self.room() {
            self.grow(&rehash);
            found = self.slot(new.id, hash);
        }
        let Some(Slot::Empty { bucket, slot }) = found else {
            unreachable!("a table with room has an empty slot for an id it lacks");
        };
        self.buckets[bucket].0[slot] = new;
        self.len += 1;
        None
    }

    fn grow(&mut self, rehash: &impl Fn(Id) -> u64) {
        let mut bigger = Self::with_capacity((self.len + 1).max(self.len * 2));
        for seen in self.buckets.iter().flat_map(|bucket| bucket.0) {
            if seen.seq != 0 {
                let hash = rehash(seen.id);
                if let Some(Slot::Empty { bucket, slot }) = bigger.slot(seen.id, hash) {
                    bigger.buckets[bucket].0[slot] = seen;
                }
            }
        }
        bigger.len = self.len;
        *self = bigger;
    }

    #[cfg(test)]
    fn allocated_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
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

    fn publish(window: &mut DedupWindow, id: &str, next_seq: u64, now: Instant) -> Option<u64> {
        let probe = window.probe(id, now)?;
        window.check(probe, next_seq)
    }

    /// Every id hashed alike: each probe runs through the buckets the ids
    /// before it filled, across growths of the table.
    #[test]
    fn ids_of_one_hash_are_each_found_in_the_probe_sequence() {
        let same_hash = |_: Id| 42;
        let mut table = IdTable::default();
        for n in 1..=100 {
            let seen = Seen {
                id: (n, !n),
                seq: n,
                published_ms: n * 10,
            };
            assert!(table.find_or_insert(seen, 42, same_hash).is_none(), "{n}");
        }
        assert_eq!(table.len, 100);
        for n in 1..=100 {
            let seen = table.find((n, !n), 42).expect("kept");
            assert_eq!((seen.seq, seen.published_ms), (n, n * 10));
            let again = Seen {
                id: (n, !n),
                seq: 999,
                published_ms: 0,
            };
            assert_eq!(
                table
                    .find_or_insert(again, 42, same_hash)
                    .map(|seen| seen.seq),
                Some(n)
            );
        }
        assert!(table.find((101, !101), 42).is_none());
        assert!(table.find((1, 1), 42).is_none(), "half an id is another id");
        assert_eq!(table.len, 100);
    }

    #[test]
    fn an_id_is_a_duplicate_within_the_window_only() {
        let mut window = DedupWindow::new(MINUTE);
        let start = window.started;
        assert_eq!(publish(&mut window, &uuid(1), 1, start), None);
        assert_eq!(publish(&mut window, &uuid(2), 2, start + MINUTE / 2), None);
        let later = start + Duration::from_secs(59);
        assert_eq!(publish(&mut window, &uuid(1), 3, later), Some(1));
        assert_eq!(
            publish(&mut window, &uuid(1).to_uppercase(), 3, later),
            Some(1),
            "the same UUID in capitals"
        );
        assert_eq!(publish(&mut window, &uuid(2), 3, later), Some(2));
        let past_first = start + MINUTE;
        assert_eq!(
            publish(&mut window, &uuid(1), 3, past_first),
            None,
            "expired"
        );
        assert_eq!(
            publish(&mut window, &uuid(1), 4, past_first),
            Some(3),
            "published again"
        );
        assert_eq!(publish(&mut window, &uuid(2), 4, past_first), Some(2));
        assert_eq!(publish(&mut window, &uuid(9), 4, start + 3 * MINUTE), None);
        assert_eq!(
            (window.current.by_id.len, window.previous.by_id.len),
            (1, 0),
            "the tables of spans 0 to 2 are gone"
        );
    }

    /// The figure the module's doc gives: a million ids in one window.
    #[test]
    fn a_million_ids_take_67_mb_and_are_given_back_three_spans_on() {
        const IDS: u64 = 1_000_000;
        let mut window = DedupWindow::new(MINUTE);
        let start = window.started;
        for n in 1..=IDS {
            assert_eq!(publish(&mut window, &uuid(n), n, start), None);
        }
        let bytes = window.allocated_bytes();
        println!(
            "{IDS} ids: {bytes} bytes, {:.1} per id",
            bytes as f64 / IDS as f64
        );
        assert!(bytes <= 68 * IDS as usize, "{bytes} bytes");
        for n in (1..=IDS).step_by(99_991) {
            assert_eq!(publish(&mut window, &uuid(n), IDS + 1, start), Some(n));
        }
        assert_eq!(
            publish(&mut window, &uuid(IDS + 1), IDS + 1, start + MINUTE),
            None
        );
        let room = window.current.by_id.room();
        assert!(room >= IDS as usize, "sized as the span before: {room}");
        assert_eq!(
            publish(&mut window, &uuid(1), IDS + 2, start + MINUTE),
            None,
            "expired, though its span's table is kept one more span"
        );
        assert_eq!(
            publish(&mut window, &uuid(IDS + 3), IDS + 3, start + 2 * MINUTE),
            None
        );
        assert!(
            window.allocated_bytes() > 60 * IDS as usize,
            "the second span's table, sized for the first's ids, is kept one more span"
        );
        assert_eq!(
            publish(&mut window, &uuid(IDS + 4), IDS + 4, start + 3 * MINUTE),
            None
        );
        assert!(
            window.allocated_bytes() < 64 * 1024,
            "given back three spans on"
        );
    }
}
