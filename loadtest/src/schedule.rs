//! What a phase offers and when each publisher's events are due.
//!
//! Pure arithmetic, shared by the runner (what it reports as offered) and the
//! publishers (what they send by when, and which scheduled time each event
//! carries).

use std::fmt;
use std::time::Duration;

use crate::cli::Rate;

/// The load of one phase, across all publishers.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Offer {
    /// Events per second, evenly spaced.
    Paced(f64),
    /// As fast as the sockets take them.
    Unlimited,
    /// `events` at once every `interval`, the first at the phase's start.
    Bursts(Bursts),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Bursts {
    /// Events per burst across all publishers.
    pub events: u64,
    pub interval: Duration,
}

impl Offer {
    pub fn from_rate(rate: Rate) -> Offer {
        match rate {
            Rate::PerSecond(rate) => Offer::Paced(rate),
            Rate::Unlimited => Offer::Unlimited,
        }
    }

    /// Average events per second offered; `None` when unlimited.
    pub fn events_per_sec(self) -> Option<f64> {
        match self {
            Offer::Paced(rate) => Some(rate),
            Offer::Unlimited => None,
            Offer::Bursts(bursts) => Some(bursts.events as f64 / bursts.interval.as_secs_f64()),
        }
    }
}

impl fmt::Display for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offer::Paced(rate) => write!(f, "{rate:.0} ev/s"),
            Offer::Unlimited => write!(f, "unlimited"),
            Offer::Bursts(bursts) => write!(
                f,
                "{} ev every {}ms",
                bursts.events,
                bursts.interval.as_millis()
            ),
        }
    }
}

/// One publisher's share of a finite offer: event `k` (counted from the
/// phase's start) is due `offset_ns(k)` after it.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Schedule {
    /// `rate` events/s, the first `offset` slots late, so that publishers
    /// interleave instead of all firing together.
    Paced { rate: f64, offset: f64 },
    /// `events` due at once every `interval_ns`.
    Bursts { events: u64, interval_ns: u64 },
}

impl Schedule {
    /// Publisher `index` of `publishers`'s share; `None` for an unlimited offer.
    /// A burst's events are split as evenly as they go, the first publishers
    /// taking one more when they do not divide.
    pub fn for_publisher(offer: Offer, index: u32, publishers: u32) -> Option<Schedule> {
        match offer {
            Offer::Paced(rate) => Some(Schedule::Paced {
                rate: rate / f64::from(publishers),
                offset: f64::from(index) / f64::from(publishers),
            }),
            Offer::Unlimited => None,
            Offer::Bursts(bursts) => {
                let publishers = u64::from(publishers);
                let extra = u64::from(u64::from(index) < bursts.events % publishers);
                Some(Schedule::Bursts {
                    events: bursts.events / publishers + extra,
                    interval_ns: (bursts.interval.as_nanos() as u64).max(1),
                })
            }
        }
    }

    /// Events due by `elapsed` after the phase's start, the event at exactly
    /// `elapsed` included.
    pub fn due(&self, elapsed: Duration) -> u64 {
        match *self {
            Schedule::Paced { rate, offset } => {
                let slots = elapsed.as_secs_f64() * rate - offset;
                if slots < 0.0 {
                    0
                } else {
                    slots as u64 + 1
                }
            }
            Schedule::Bursts {
                events,
                interval_ns,
            } => (elapsed.as_nanos() as u64 / interval_ns + 1) * events,
        }
    }

    /// When event `k` is due, in ns after the phase's start: the time its
    /// payload carries, from which its latency is measured.
    pub fn offset_ns(&self, k: u64) -> u64 {
        match *self {
            Schedule::Paced { rate, offset } => ((k as f64 + offset) / rate * 1e9) as u64,
            Schedule::Bursts {
                events,
                interval_ns,
            } => k / events.max(1) * interval_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn bursts(events: u64, interval_ms: u64) -> Offer {
        Offer::Bursts(Bursts {
            events,
            interval: ms(interval_ms),
        })
    }

    #[test]
    fn paced_publishers_interleave() {
        // 1000 ev/s over 2 publishers: 500 each, the second half a slot late.
        let first = Schedule::for_publisher(Offer::Paced(1000.0), 0, 2).unwrap();
        let second = Schedule::for_publisher(Offer::Paced(1000.0), 1, 2).unwrap();
        assert_eq!(first.due(Duration::ZERO), 1);
        assert_eq!(second.due(Duration::ZERO), 0);
        assert_eq!(second.due(ms(2)), 1);
        assert_eq!(first.due(ms(1000)), 501);
        assert_eq!(first.offset_ns(1), 2_000_000);
        assert_eq!(second.offset_ns(0), 1_000_000);
        assert_eq!(second.offset_ns(1), 3_000_000);
    }

    #[test]
    fn a_burst_is_due_all_at_once() {
        let schedule = Schedule::for_publisher(bursts(2048, 500), 0, 1).unwrap();
        assert_eq!(schedule.due(Duration::ZERO), 2048);
        assert_eq!(schedule.due(ms(499)), 2048);
        assert_eq!(schedule.due(ms(500)), 4096);
        assert_eq!(schedule.due(ms(12_000)), 25 * 2048);
        // Every event of a burst carries the burst's start.
        assert_eq!(schedule.offset_ns(0), 0);
        assert_eq!(schedule.offset_ns(2047), 0);
        assert_eq!(schedule.offset_ns(2048), 500_000_000);
        assert_eq!(schedule.offset_ns(3 * 2048 + 5), 1_500_000_000);
    }

    #[test]
    fn bursts_split_over_publishers() {
        let shares: Vec<u64> = (0..3)
            .map(
                |index| match Schedule::for_publisher(bursts(10, 100), index, 3) {
                    Some(Schedule::Bursts { events, .. }) => events,
                    other => panic!("not a burst schedule: {other:?}"),
                },
            )
            .collect();
        assert_eq!(shares, [4, 3, 3]);
        // More publishers than events: some send nothing, and never divide by zero.
        let idle = Schedule::for_publisher(bursts(2, 100), 5, 8).unwrap();
        assert_eq!(idle.due(ms(1000)), 0);
        assert_eq!(idle.offset_ns(0), 0);
    }

    #[test]
    fn offers_report_their_average_rate() {
        assert_eq!(bursts(2048, 500).events_per_sec(), Some(4096.0));
        assert_eq!(Offer::Paced(10.0).events_per_sec(), Some(10.0));
        assert_eq!(Offer::Unlimited.events_per_sec(), None);
        assert_eq!(Offer::from_rate(Rate::Unlimited), Offer::Unlimited);
        assert!(Schedule::for_publisher(Offer::Unlimited, 0, 1).is_none());
        assert_eq!(bursts(2048, 500).to_string(), "2048 ev every 500ms");
    }
}
