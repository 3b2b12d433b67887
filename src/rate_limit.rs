//! Publish rate limits (`PUBLISH_RATE_LIMIT`, `PUBLISH_BURST`): a token
//! bucket per WebSocket connection, and per credential (or peer address)
//! for REST.
//!
//! Each bucket is one atomic holding the time its next token is due (the
//! generic cell rate algorithm, equivalent to a token bucket): taking a
//! token is a compare-and-swap, with no lock and no allocation.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::auth::CredentialId;
use crate::config::Config;

/// Most REST buckets kept; beyond it idle ones are swept out, and keys
/// that still find no room share one overflow bucket.
const MAX_TRACKED: usize = 65_536;
/// A full map is swept at most this often, so a flood of new peers cannot
/// make every request pay for a sweep.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A configured limit: one publish per `interval`, up to `burst` at once.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    interval_ns: u64,
    /// How far ahead of now a bucket's next token may be due: `burst - 1`
    /// intervals.
    tolerance_ns: u64,
    epoch: Instant,
}

impl Limit {
    /// The configured limit, if `PUBLISH_RATE_LIMIT` is set. `PUBLISH_BURST`
    /// defaults to one second's worth (at least one).
    pub fn from_config(config: &Config) -> Option<Self> {
        let rate = config.publish_rate_limit?;
        let per_second = (f64::from(rate.count) / rate.period.as_secs_f64()).ceil();
        let burst = config.publish_burst.unwrap_or(per_second.max(1.0) as u32);
        let interval_ns = (rate.period.as_nanos() / u128::from(rate.count)).max(1) as u64;
        Some(Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst - 1)),
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Takes a token from `bucket`, or says how long until one is due.
    pub fn acquire(&self, bucket: &Bucket) -> Result<(), RateLimited> {
        let now = self.now();
        let mut due = bucket.due.load(Ordering::Relaxed);
        loop {
            let next = due.max(now);
            let ahead = next - now;
            if ahead > self.tolerance_ns {
                return Err(RateLimited(Duration::from_nanos(ahead - self.tolerance_ns)));
            }
            match bucket.due.compare_exchange_weak(
                due,
                next + self.interval_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => due = current,
            }
        }
    }

    /// Whether the bucket has refilled completely: nothing is lost by
    /// forgetting it.
    fn is_idle(&self, bucket: &Bucket, now: u64) -> bool {
        bucket.due.load(Ordering::Relaxed) <= now
    }
}

/// A token bucket: when its next token is due, in nanoseconds from the
/// limit's epoch. A new bucket is full.
#[derive(Debug, Default)]
pub struct Bucket {
    due: AtomicU64,
}

/// Whose REST publishes share a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Credential(CredentialId),
    /// Without authentication.
    Peer(IpAddr),
}

/// The REST buckets, by credential or peer.
#[derive(Debug)]
pub struct RestLimits {
    limit: Limit,
    buckets: DashMap<LimitKey, Bucket>,
    overflow: Bucket,
    last_sweep: AtomicU64,
}

impl RestLimits {
    pub fn new(limit: Limit) -> Self {
        Self {
            limit,
            buckets: DashMap::new(),
            overflow: Bucket::default(),
            last_sweep: AtomicU64::new(0),
        }
    }

    /// Takes a token from `key`'s bucket, or says how long until one is due.
    /// Only a key's first publish inserts (and allocates).
    pub fn acquire(&self, key: LimitKey) -> Result<(), RateLimited> {
        if let Some(bucket) = self.buckets.get(&key) {
            return self.limit.acquire(&bucket);
        }
        if self.buckets.len() >= MAX_TRACKED && !self.sweep() {
            return self.limit.acquire(&self.overflow);
        }
        let bucket = self.buckets.entry(key).or_default();
        self.limit.acquire(&bucket)
    }

    /// Forgets idle buckets, at most once per `SWEEP_INTERVAL`; whether
    /// there is room afterwards.
    fn sweep(&self) -> bool {
        let now = self.limit.now();
        let last = self.last_sweep.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= SWEEP_INTERVAL.as_nanos() as u64;
        if due
            && self
                .last_sweep
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.buckets
                .retain(|_, bucket| !self.limit.is_idle(bucket, now));
        }
        self.buckets.len() < MAX_TRACKED
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// A publish refused by the limit, and how long until a token is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("publish rate limit exceeded (PUBLISH_RATE_LIMIT); retry in {}ms", .0.as_millis().max(1))]
pub struct RateLimited(pub Duration);

impl RateLimited {
    /// The `Retry-After` header's value: whole seconds, rounded up, at
    /// least 1.
    pub fn retry_after_secs(&self) -> u64 {
        (self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(rate: &str, burst: Option<&str>) -> Limit {
        let mut args = vec!["--publish-rate-limit", rate];
        if let Some(burst) = burst {
            args.extend(["--publish-burst", burst]);
        }
        Limit::from_config(&Config::from_args(args).unwrap()).unwrap()
    }

    #[test]
    fn a_bucket_allows_its_burst_then_the_rate() {
        let limit = configured("10/s", None);
        let bucket = Bucket::default();
        for _ in 0..10 {
            limit.acquire(&bucket).unwrap();
        }
        let refused = limit.acquire(&bucket).unwrap_err();
        assert!(refused.0 <= Duration::from_millis(100), "{refused:?}");
        assert_eq!(refused.retry_after_secs(), 1);
        std::thread::sleep(refused.0);
        limit.acquire(&bucket).unwrap();

        let strict = configured("600/m", Some("2"));
        let bucket = Bucket::default();
        strict.acquire(&bucket).unwrap();
        strict.acquire(&bucket).unwrap();
        assert!(strict.acquire(&bucket).is_err());
    }

    #[test]
    fn the_rest_map_is_bounded() {
        let limits = RestLimits::new(configured("1/h", Some("1")));
        let peer = |n: u32| LimitKey::Peer(IpAddr::from(n.to_be_bytes()));
        for n in 0..MAX_TRACKED as u32 {
            limits.acquire(peer(n)).unwrap();
        }
        assert_eq!(limits.tracked(), MAX_TRACKED);
        // Every tracked peer is busy: a newcomer shares the overflow bucket.
        limits.acquire(peer(u32::MAX)).unwrap();
        assert!(limits.acquire(peer(u32::MAX - 1)).is_err());
        assert_eq!(limits.tracked(), MAX_TRACKED);
        assert!(
            limits.acquire(peer(0)).is_err(),
            "a tracked peer keeps its bucket"
        );
    }
}
