//! What the soak's tasks count, and the unexpected errors they meet.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Declares the live counters and their reported reading from one list.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Bumped by every task as things happen.
        #[derive(Default)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        /// A reading of [`Counters`].
        #[derive(Clone, Copy, Debug, Default, Serialize)]
        pub struct Totals {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Counters {
            pub fn totals(&self) -> Totals {
                Totals { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Churning subscriber connections opened.
    connections_opened,
    /// Churning subscribers that left with a close frame and got the server's close back.
    clean_closes,
    /// Churning subscribers that dropped the TCP connection without a close frame.
    dropped,
    /// Of `dropped`: those that wrote half a frame first.
    dropped_mid_frame,
    /// Subscriptions acknowledged.
    subscriptions,
    /// Subscribe requests that asked for a replay (`last_n`).
    subscriptions_with_last_n,
    /// `info topic_deleted` notices received.
    topic_deleted_notices,
    /// Subscribers that subscribed to another topic after a notice (or a refused subscribe).
    resubscribed,
    /// Subscribers that left after a notice (or a refused subscribe).
    left_after_notice,
    /// Subscribes refused with TOPIC_NOT_FOUND because the topic was just deleted (expected).
    subscribe_topic_gone,
    /// Stalled reader connections opened.
    stalled_readers_opened,
    /// Stalled readers the server disconnected.
    stalled_readers_disconnected,
    /// Stalled readers still connected when the soak stopped (their stall was still short).
    stalled_readers_open_at_end,
    /// Short-lived topics created during the run.
    topics_created,
    /// Short-lived topics deleted during the run.
    topics_deleted,
    /// Events published over WebSocket.
    published_ws,
    /// Events published over REST.
    published_rest,
    /// Publishes acknowledged (WebSocket ack or REST 200).
    acked,
    /// Publishes refused with TOPIC_NOT_FOUND because the topic was just deleted (expected).
    publish_topic_gone,
    /// Events received by the churning subscribers.
    received,
}

/// Unexpected errors by kind, each with its first occurrence.
#[derive(Default)]
pub struct Errors(Mutex<BTreeMap<&'static str, ErrorTally>>);

#[derive(Clone, Debug, Serialize)]
pub struct ErrorTally {
    pub count: u64,
    pub first: String,
}

impl Errors {
    pub fn record(&self, kind: &'static str, detail: impl Display) {
        let mut tallies = self.0.lock().expect("errors lock");
        tallies
            .entry(kind)
            .and_modify(|tally| tally.count += 1)
            .or_insert_with(|| ErrorTally {
                count: 1,
                first: detail.to_string(),
            });
    }

    pub fn total(&self) -> u64 {
        let tallies = self.0.lock().expect("errors lock");
        tallies.values().map(|tally| tally.count).sum()
    }

    pub fn tallies(&self) -> BTreeMap<&'static str, ErrorTally> {
        self.0.lock().expect("errors lock").clone()
    }
}

/// How long each stalled reader took to be disconnected.
#[derive(Default)]
pub struct StallTimes(Mutex<Vec<Duration>>);

/// Smallest, median and largest, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    pub min_ms: u64,
    pub median_ms: u64,
    pub max_ms: u64,
}

impl StallTimes {
    pub fn record(&self, stalled_for: Duration) {
        self.0.lock().expect("stall times lock").push(stalled_for);
    }

    pub fn spread(&self) -> Option<Spread> {
        let mut times = self.0.lock().expect("stall times lock").clone();
        times.sort_unstable();
        let ms = |at: usize| times[at].as_millis() as u64;
        (!times.is_empty()).then(|| Spread {
            min_ms: ms(0),
            median_ms: ms(times.len() / 2),
            max_ms: ms(times.len() - 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_first_detail() {
        let errors = Errors::default();
        errors.record("seq_gap", "first");
        errors.record("seq_gap", "second");
        errors.record("connect", "refused");
        assert_eq!(errors.total(), 3);
        let tallies = errors.tallies();
        assert_eq!(tallies["seq_gap"].count, 2);
        assert_eq!(tallies["seq_gap"].first, "first");
    }

    #[test]
    fn stall_spread() {
        let times = StallTimes::default();
        assert!(times.spread().is_none());
        for ms in [300, 100, 200] {
            times.record(Duration::from_millis(ms));
        }
        let spread = times.spread().unwrap();
        assert_eq!(
            (spread.min_ms, spread.median_ms, spread.max_ms),
            (100, 200, 300)
        );
    }
}
