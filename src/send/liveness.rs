//! When the peer was last heard from: the reader notes it, the writer's
//! heartbeat reads it to cut a silent peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the peer was last heard from, for the heartbeat's silence check.
pub struct Liveness {
    epoch: Instant,
    last_seen_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    pub fn heard_from_peer(&self) {
        self.last_seen_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn silent_for(&self) -> Duration {
        let last_seen = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last_seen)
    }
}
