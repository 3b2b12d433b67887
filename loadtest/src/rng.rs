//! A small random generator (SplitMix64): the soak's choices (which topics,
//! how long a connection lives, how it leaves) and the values in payloads.
//! Nothing here has to be unpredictable, only different per task and per
//! run, or per event.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

static NEXT_STREAM: AtomicU64 = AtomicU64::new(0);

pub struct Rng(u64);

impl Rng {
    /// A generator of its own, seeded from the clock and a process-wide counter.
    pub fn new() -> Rng {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        let stream = NEXT_STREAM.fetch_add(1, Relaxed);
        Rng(clock ^ stream.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    /// The same sequence for the same seed.
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }

    /// Uniform in `low..=high`, to the millisecond.
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        let (low, high) = (low.as_millis() as usize, high.as_millis() as usize);
        Duration::from_millis(self.between(low, high.max(low)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_in_range_and_covers_it() {
        let mut rng = Rng::new();
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let value = rng.between(1, 5);
            assert!((1..=5).contains(&value));
            seen[value - 1] = true;
        }
        assert!(seen.iter().all(|&seen| seen));
        let lifetime = rng.duration_between(Duration::from_secs(1), Duration::from_secs(30));
        assert!((Duration::from_secs(1)..=Duration::from_secs(30)).contains(&lifetime));
        assert!(!rng.chance(0.0));
        assert!(rng.chance(1.0));
    }

    #[test]
    fn seeded_generators_repeat() {
        let mut a = Rng::seeded(42);
        let mut b = Rng::seeded(42);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(Rng::seeded(1).next_u64(), Rng::seeded(2).next_u64());
    }

    #[test]
    fn generators_differ() {
        assert_ne!(Rng::new().next_u64(), Rng::new().next_u64());
    }
}
