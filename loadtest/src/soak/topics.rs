//! The soak's topics: long-lived ones, a busy one for the stalled readers,
//! and short-lived ones that are created and deleted all along.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Result};
use tokio::time::MissedTickBehavior;

use super::Shared;
use crate::http::HttpClient;
use crate::ringcast;
use crate::rng::Rng;

pub const BUSY_TOPIC: &str = "soak-busy";

/// The topics publishers and subscribers may use right now. A short-lived
/// topic leaves the pool just before it is deleted, so only requests already
/// under way can meet the deletion.
pub struct TopicPool {
    /// Short-lived names carry this process's id, so two soaks against one
    /// server never collide on them.
    short_lived_prefix: String,
    next_short_lived: AtomicU64,
    live: RwLock<Live>,
}

struct Live {
    /// The busy topic first.
    long_lived: Vec<Arc<str>>,
    /// Oldest first.
    short_lived: VecDeque<Arc<str>>,
}

impl TopicPool {
    /// Creates the busy topic and `long_lived` others (they may exist
    /// already, from an earlier soak), then `short_lived` short-lived ones.
    pub async fn create(
        rest: &mut HttpClient,
        long_lived: usize,
        short_lived: usize,
    ) -> Result<TopicPool> {
        let long_lived: Vec<String> = std::iter::once(BUSY_TOPIC.to_string())
            .chain((0..long_lived).map(|i| format!("soak-{i}")))
            .collect();
        ringcast::create_topics(rest, &long_lived).await?;
        let pool = TopicPool {
            short_lived_prefix: format!("soak-tmp-{}-", std::process::id()),
            next_short_lived: 0.into(),
            live: RwLock::new(Live {
                long_lived: long_lived.into_iter().map(Arc::from).collect(),
                short_lived: VecDeque::new(),
            }),
        };
        for _ in 0..short_lived {
            let name = pool.next_short_lived_name();
            let status = ringcast::create_topic(rest, &name).await?;
            if status != 201 {
                bail!("POST /topics for {name} answered {status}");
            }
            pool.add_short_lived(name);
        }
        Ok(pool)
    }

    /// Any live topic, the busy one included.
    pub fn random(&self, rng: &mut Rng) -> Arc<str> {
        let live = self.live.read().expect("topics lock");
        let at = rng.below(live.long_lived.len() + live.short_lived.len());
        match live.long_lived.get(at) {
            Some(topic) => topic.clone(),
            None => live.short_lived[at - live.long_lived.len()].clone(),
        }
    }

    /// A live topic for which `taken` is false, if there is one.
    pub fn random_unless(&self, rng: &mut Rng, taken: impl Fn(&str) -> bool) -> Option<Arc<str>> {
        let live = self.live.read().expect("topics lock");
        let candidates: Vec<&Arc<str>> = live
            .long_lived
            .iter()
            .chain(&live.short_lived)
            .filter(|topic| !taken(topic))
            .collect();
        (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len())].clone())
    }

    pub fn busy(&self) -> Arc<str> {
        self.live.read().expect("topics lock").long_lived[0].clone()
    }

    /// Whether `name` is a short-lived topic that has left the pool (deleted,
    /// or about to be): a TOPIC_NOT_FOUND for it is the expected race.
    pub fn is_retired(&self, name: &[u8]) -> bool {
        let Some(number) = name.strip_prefix(self.short_lived_prefix.as_bytes()) else {
            return false;
        };
        let live = self.live.read().expect("topics lock");
        let created = std::str::from_utf8(number)
            .ok()
            .and_then(|number| number.parse::<u64>().ok())
            .is_some_and(|number| number < self.next_short_lived.load(Relaxed));
        created
            && !live
                .short_lived
                .iter()
                .any(|topic| topic.as_bytes() == name)
    }

    /// Every live topic, for the clean-up at the end.
    pub fn all(&self) -> Vec<Arc<str>> {
        let live = self.live.read().expect("topics lock");
        live.long_lived
            .iter()
            .chain(&live.short_lived)
            .cloned()
            .collect()
    }

    /// A pool with the given long-lived topics (the busy one first) and short-lived
    /// names made with `short_lived_prefix`, without a server.
    #[cfg(test)]
    pub fn for_tests(long_lived: &[&str], short_lived_prefix: &str) -> TopicPool {
        TopicPool {
            short_lived_prefix: short_lived_prefix.to_string(),
            next_short_lived: 0.into(),
            live: RwLock::new(Live {
                long_lived: long_lived.iter().map(|&name| Arc::from(name)).collect(),
                short_lived: VecDeque::new(),
            }),
        }
    }

    pub(super) fn next_short_lived_name(&self) -> String {
        let number = self.next_short_lived.fetch_add(1, Relaxed);
        format!("{}{number}", self.short_lived_prefix)
    }

    pub(super) fn add_short_lived(&self, name: String) {
        let mut live = self.live.write().expect("topics lock");
        live.short_lived.push_back(name.into());
    }

    fn short_lived_count(&self) -> usize {
        self.live.read().expect("topics lock").short_lived.len()
    }

    /// Takes the oldest short-lived topic out of the pool, to be deleted.
    pub(super) fn retire_oldest(&self) -> Option<Arc<str>> {
        self.live
            .write()
            .expect("topics lock")
            .short_lived
            .pop_front()
    }
}

/// Every `interval`: creates a short-lived topic, then deletes the oldest
/// ones beyond `short_lived`.
pub async fn churn(shared: Arc<Shared>, interval: Duration, short_lived: usize) {
    let mut rest = shared.rest();
    let mut stop = shared.stop_signal();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (pool, counters, errors) = (&shared.topics, &shared.counters, &shared.errors);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.stopped() => return,
        }
        let name = pool.next_short_lived_name();
        match ringcast::create_topic(&mut rest, &name).await {
            Ok(201) => {
                pool.add_short_lived(name);
                counters.topics_created.fetch_add(1, Relaxed);
            }
            Ok(status) => errors.record("topic_create", format!("{name}: status {status}")),
            Err(err) => errors.record("topic_create", format!("{err:#}")),
        }
        while pool.short_lived_count() > short_lived {
            let Some(name) = pool.retire_oldest() else {
                break;
            };
            match ringcast::delete_topic(&mut rest, &name).await {
                Ok(200) => {
                    counters.topics_deleted.fetch_add(1, Relaxed);
                }
                Ok(status) => errors.record("topic_delete", format!("{name}: status {status}")),
                Err(err) => errors.record("topic_delete", format!("{err:#}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> TopicPool {
        TopicPool::for_tests(&[BUSY_TOPIC, "soak-0"], "soak-tmp-7-")
    }

    #[test]
    fn only_short_lived_topics_that_left_the_pool_are_retired() {
        let pool = pool();
        for _ in 0..3 {
            let name = pool.next_short_lived_name();
            pool.add_short_lived(name);
        }
        assert_eq!(pool.retire_oldest().as_deref(), Some("soak-tmp-7-0"));
        assert!(pool.is_retired(b"soak-tmp-7-0"));
        assert!(!pool.is_retired(b"soak-tmp-7-1"), "still live");
        assert!(!pool.is_retired(b"soak-tmp-7-3"), "never created");
        assert!(!pool.is_retired(b"soak-0"), "long-lived");
        assert!(!pool.is_retired(b"soak-tmp-8-0"), "another soak's");
        assert_eq!(pool.all().len(), 4);
        assert_eq!(&*pool.busy(), BUSY_TOPIC);
    }

    #[test]
    fn picks_every_live_topic() {
        let pool = pool();
        let name = pool.next_short_lived_name();
        pool.add_short_lived(name);
        let mut rng = Rng::new();
        let mut seen: Vec<Arc<str>> = (0..200).map(|_| pool.random(&mut rng)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            pool.random_unless(&mut rng, |topic| topic != "soak-tmp-7-0")
                .as_deref(),
            Some("soak-tmp-7-0")
        );
        assert_eq!(pool.random_unless(&mut rng, |_| true), None);
    }
}
