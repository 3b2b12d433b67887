//! Counters and latency histograms shared by all connection tasks.
//!
//! Receive-side figures live in one shard per runtime worker thread, so the
//! hot path takes an uncontended lock once per socket read, and nothing is
//! kept per connection (10k per-connection histograms would cost gigabytes).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, up to an hour, 3 significant digits.
const MAX_LATENCY_US: u64 = 3_600_000_000;

static NEXT_WORKER_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static WORKER_SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Gives the calling thread its own shard; call from the runtime's `on_thread_start`.
pub fn assign_worker_slot() {
    WORKER_SLOT.with(|slot| slot.set(NEXT_WORKER_SLOT.fetch_add(1, Relaxed)));
}

/// What subscribers record, per worker thread.
pub struct Shard {
    pub received: u64,
    pub seq_gaps: u64,
    /// `SLOW_CONSUMER` errors (ringcast) or `-ERR 'Slow Consumer…'` (NATS) seen by subscribers.
    pub slow_consumer_errors: u64,
    /// Bytes subscribers read from their sockets (frames as sent, compressed or not).
    pub wire_bytes: u64,
    latency_us: Histogram<u64>,
    record_from_ns: u64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            received: 0,
            seq_gaps: 0,
            slow_consumer_errors: 0,
            wire_bytes: 0,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            record_from_ns: u64::MAX,
        }
    }

    /// Counts one delivery and records its latency if it was scheduled inside
    /// the measured window.
    pub fn delivered(&mut self, received_ns: u64, scheduled_ns: Option<u64>) {
        self.received += 1;
        if let Some(scheduled) = scheduled_ns.filter(|&t| t >= self.record_from_ns) {
            let latency_us = received_ns.saturating_sub(scheduled) / 1000;
            self.latency_us.saturating_record(latency_us);
        }
    }
}

/// Cache-line aligned so that shards used by different threads never share a line.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

pub struct Stats {
    shards: Box<[Padded]>,
    pub published: AtomicU64,
    pub acks: AtomicU64,
    pub publish_errors: AtomicU64,
    /// Publisher phases completed, summed over publishers.
    pub phases_done: AtomicU64,
    disconnects: AtomicU64,
    /// Subscriber connections that ended (closed by the server or broken); also in `disconnects`.
    subscribers_cut: AtomicU64,
    first_problem: Mutex<Option<String>>,
}

/// A consistent-enough reading of all counters.
#[derive(Clone, Copy, Default, Debug)]
pub struct Snapshot {
    pub received: u64,
    pub seq_gaps: u64,
    pub published: u64,
    pub acks: u64,
    pub publish_errors: u64,
    pub disconnects: u64,
    pub subscribers_cut: u64,
    pub slow_consumer_errors: u64,
    pub wire_bytes: u64,
}

impl Stats {
    pub fn new(workers: usize) -> Stats {
        Stats {
            shards: (0..workers.max(1))
                .map(|_| Padded(Mutex::new(Shard::new())))
                .collect(),
            published: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            phases_done: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            subscribers_cut: AtomicU64::new(0),
            first_problem: Mutex::new(None),
        }
    }

    /// Runs `f` with the calling worker's shard locked.
    pub fn with_shard<T>(&self, f: impl FnOnce(&mut Shard) -> T) -> T {
        let slot = WORKER_SLOT.with(Cell::get) % self.shards.len();
        f(&mut self.shards[slot].0.lock().expect("shard lock"))
    }

    /// Clears the histograms and records only events scheduled at or after `from_ns`.
    pub fn start_latency_window(&self, from_ns: u64) {
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock().expect("shard lock");
            shard.latency_us.reset();
            shard.record_from_ns = from_ns;
        }
    }

    /// All shards' latencies merged, in microseconds.
    pub fn latency_us(&self) -> Histogram<u64> {
        let mut merged =
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        for shard in self.shards.iter() {
            let shard = shard.0.lock().expect("shard lock");
            merged.add(&shard.latency_us).expect("same bounds");
        }
        merged
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            published: self.published.load(Relaxed),
            acks: self.acks.load(Relaxed),
            publish_errors: self.publish_errors.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            subscribers_cut: self.subscribers_cut.load(Relaxed),
            ..Snapshot::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.0.lock().expect("shard lock");
            snapshot.received += shard.received;
            snapshot.seq_gaps += shard.seq_gaps;
            snapshot.slow_consumer_errors += shard.slow_consumer_errors;
            snapshot.wire_bytes += shard.wire_bytes;
        }
        snapshot
    }

    pub fn disconnected(&self, reason: &str) {
        self.disconnects.fetch_add(1, Relaxed);
        self.note_problem(reason);
    }

    /// A subscriber connection ended: the server closed it or it broke.
    pub fn subscriber_cut(&self, reason: &str) {
        self.subscribers_cut.fetch_add(1, Relaxed);
        self.disconnected(reason);
    }

    pub fn publish_error(&self, reason: &str) {
        self.publish_errors.fetch_add(1, Relaxed);
        self.note_problem(reason);
    }

    /// Keeps the first problem's description for the summary.
    fn note_problem(&self, reason: &str) {
        let mut first = self.first_problem.lock().expect("problem lock");
        if first.is_none() {
            *first = Some(reason.to_string());
        }
    }

    pub fn first_problem(&self) -> Option<String> {
        self.first_problem.lock().expect("problem lock").clone()
    }
}
