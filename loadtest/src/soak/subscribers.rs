//! Connection churn: a population of subscriber connections, each living a
//! random time. A subscriber subscribes to a few random topics (some with a
//! replay), reads and checks what arrives, then leaves — with the closing
//! handshake, or by dropping the socket, sometimes in the middle of a frame —
//! and a new one takes its place.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::{Shared, StopSignal};
use crate::ringcast::{self, ServerFrame};
use crate::rng::Rng;
use crate::ws::{self, OpCode, WsReader, WsWriter};

/// The first subscribers connect spread over this long, not all at once.
const RAMP_UP: Duration = Duration::from_secs(5);
/// Share of subscriptions that ask for a replay, of up to `MAX_LAST_N` events.
const LAST_N_SHARE: f64 = 1.0 / 3.0;
const MAX_LAST_N: usize = 50;
/// Share of subscribers that leave with the closing handshake; the others
/// drop the socket, half of those after writing half a frame.
const CLEAN_SHARE: f64 = 0.5;
const MID_FRAME_SHARE: f64 = 0.5;
/// After a topic is deleted (or was gone when subscribing), the share of
/// subscribers that subscribe elsewhere; the others leave.
const RESUBSCRIBE_SHARE: f64 = 0.5;
/// How long the server may take to answer a close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connection attempt.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
pub struct Churn {
    pub min_lifetime: Duration,
    pub max_lifetime: Duration,
    pub max_subscriptions: usize,
}

/// One place in the population: a subscriber after another until the soak stops.
pub async fn run_slot(shared: Arc<Shared>, churn: Churn, slot: usize, slots: usize) {
    let mut stop = shared.stop_signal();
    let ramp = RAMP_UP.mul_f64(slot as f64 / slots as f64);
    tokio::select! {
        _ = tokio::time::sleep(ramp) => {}
        _ = stop.stopped() => return,
    }
    while !stop.is_stopped() {
        live_once(&shared, churn, &mut stop).await;
    }
}

/// How a subscriber leaves.
#[derive(Clone, Copy)]
enum Exit {
    Clean,
    Drop,
    DropMidFrame,
}

async fn live_once(shared: &Shared, churn: Churn, stop: &mut StopSignal) {
    let mut subscriber = Subscriber::new(shared);
    let rng = &mut subscriber.rng;
    let lifetime = rng.duration_between(churn.min_lifetime, churn.max_lifetime);
    let exit = if rng.chance(CLEAN_SHARE) {
        Exit::Clean
    } else if rng.chance(MID_FRAME_SHARE) {
        Exit::DropMidFrame
    } else {
        Exit::Drop
    };
    let subscriptions = rng.between(1, churn.max_subscriptions);
    let (mut reader, mut writer) = match ws::connect(&shared.url, shared.api_key.as_deref()).await {
        Ok(connection) => connection,
        Err(err) => {
            shared.errors.record("connect", format!("{err:#}"));
            tokio::select! {
                _ = tokio::time::sleep(RETRY_DELAY) => {}
                _ = stop.stopped() => {}
            }
            return;
        }
    };
    shared.counters.connections_opened.fetch_add(1, Relaxed);
    for _ in 0..subscriptions {
        subscriber.subscribe_somewhere();
    }
    let deadline = tokio::time::Instant::now() + lifetime;
    let stopped: Result<bool> = async {
        loop {
            subscriber.queue_subscribes(&mut writer);
            ws::answer_ping(&mut reader, &mut writer);
            writer.flush().await?;
            if subscriber.leaving {
                return Ok(false);
            }
            tokio::select! {
                read = reader.fill() => {
                    read?;
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(false),
                _ = stop.stopped() => return Ok(true),
            }
            reader.drain(|frame| {
                subscriber.on_frame(frame);
                Ok(())
            })?;
            subscriber.count_received();
        }
    }
    .await;
    match stopped {
        // The soak's end closes every connection properly.
        Ok(true) => subscriber.leave(reader, writer, Exit::Clean).await,
        Ok(false) => subscriber.leave(reader, writer, exit).await,
        Err(err) => shared
            .errors
            .record("subscriber_closed", format!("{err:#}")),
    }
}

struct Subscriber<'a> {
    shared: &'a Shared,
    rng: Rng,
    /// Topics subscribed or being subscribed, with the last `seq` seen on
    /// each (0 before the first event).
    topics: Vec<(Arc<str>, u64)>,
    /// Subscribe requests not yet queued on the socket.
    to_subscribe: Vec<Arc<str>>,
    received: u64,
    leaving: bool,
}

impl<'a> Subscriber<'a> {
    fn new(shared: &'a Shared) -> Self {
        Subscriber {
            shared,
            rng: Rng::new(),
            topics: Vec::new(),
            to_subscribe: Vec::new(),
            received: 0,
            leaving: false,
        }
    }

    /// Picks a live topic not subscribed yet and plans to subscribe to it.
    fn subscribe_somewhere(&mut self) {
        let topics = &self.topics;
        let taken = |name: &str| topics.iter().any(|(topic, _)| &**topic == name);
        if let Some(topic) = self.shared.topics.random_unless(&mut self.rng, taken) {
            self.topics.push((topic.clone(), 0));
            self.to_subscribe.push(topic);
        }
    }

    /// The topic names the request, so a refusal says which topic it was for.
    fn queue_subscribes(&mut self, writer: &mut WsWriter) {
        for topic in self.to_subscribe.drain(..) {
            let last_n = self
                .rng
                .chance(LAST_N_SHARE)
                .then(|| self.rng.between(1, MAX_LAST_N) as u32);
            if last_n.is_some() {
                let counters = &self.shared.counters;
                counters.subscriptions_with_last_n.fetch_add(1, Relaxed);
            }
            ringcast::queue_subscribe(writer, &topic, last_n, Some(&topic));
        }
    }

    fn on_frame(&mut self, frame: &[u8]) {
        match ringcast::classify(frame) {
            ServerFrame::Event => self.on_event(frame),
            ServerFrame::Ack => {
                self.shared.counters.subscriptions.fetch_add(1, Relaxed);
            }
            ServerFrame::Error => self.on_error(frame),
            ServerFrame::Other => {
                if let Some(topic) = ringcast::deleted_topic(frame) {
                    self.shared
                        .counters
                        .topic_deleted_notices
                        .fetch_add(1, Relaxed);
                    if self.forget(topic) {
                        self.subscribe_elsewhere_or_leave();
                    } else {
                        self.unexpected("foreign_notice", frame);
                    }
                }
            }
        }
    }

    /// Counts the event and checks that its topic's `seq` follows the last
    /// one: replay then live, with no gap and no duplicate.
    fn on_event(&mut self, frame: &[u8]) {
        self.received += 1;
        let topic = ringcast::event_topic(frame).unwrap_or_default();
        let Some((_, last_seq)) = self
            .topics
            .iter_mut()
            .find(|(name, _)| name.as_bytes() == topic)
        else {
            return self.unexpected("foreign_event", frame);
        };
        let Some(seq) = ringcast::event_seq(frame) else {
            return self.unexpected("bad_event", frame);
        };
        let previous = std::mem::replace(last_seq, seq);
        if previous != 0 && seq != previous + 1 {
            let topic = String::from_utf8_lossy(topic);
            let detail = format!("{topic}: seq {seq} after {previous}");
            self.shared.errors.record("seq_order", detail);
        }
    }

    fn on_error(&mut self, frame: &[u8]) {
        let topic = ringcast::string_field(frame, "request_id").unwrap_or_default();
        let gone = ringcast::string_field(frame, "code") == Some(b"TOPIC_NOT_FOUND")
            && self.shared.topics.is_retired(topic);
        if gone && self.forget(topic) {
            let counters = &self.shared.counters;
            counters.subscribe_topic_gone.fetch_add(1, Relaxed);
            self.subscribe_elsewhere_or_leave();
        } else {
            self.unexpected("subscribe", frame);
        }
    }

    /// Drops a topic from the subscriptions; false if it was not there.
    fn forget(&mut self, topic: &[u8]) -> bool {
        let before = self.topics.len();
        self.topics.retain(|(name, _)| name.as_bytes() != topic);
        self.topics.len() < before
    }

    fn subscribe_elsewhere_or_leave(&mut self) {
        let counters = &self.shared.counters;
        if self.leaving {
            return;
        }
        if self.rng.chance(RESUBSCRIBE_SHARE) {
            counters.resubscribed.fetch_add(1, Relaxed);
            self.subscribe_somewhere();
        } else {
            counters.left_after_notice.fetch_add(1, Relaxed);
            self.leaving = true;
        }
    }

    fn unexpected(&self, kind: &'static str, frame: &[u8]) {
        self.shared
            .errors
            .record(kind, String::from_utf8_lossy(frame));
    }

    fn count_received(&mut self) {
        let received = std::mem::take(&mut self.received);
        self.shared.counters.received.fetch_add(received, Relaxed);
    }

    async fn leave(mut self, reader: WsReader, mut writer: WsWriter, exit: Exit) {
        self.leaving = true;
        let counters = &self.shared.counters;
        match exit {
            Exit::Clean => {
                let closing = ws::close(reader, writer, 1000, |frame| {
                    self.on_frame(frame);
                    Ok(())
                });
                let outcome = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
                self.count_received();
                let errors = &self.shared.errors;
                match outcome {
                    Ok(Ok(Some(1000))) => {
                        counters.clean_closes.fetch_add(1, Relaxed);
                    }
                    Ok(Ok(code)) => errors.record(
                        "close",
                        format!("close answered with {code:?} instead of 1000"),
                    ),
                    Ok(Err(err)) => errors.record("close", format!("{err:#}")),
                    Err(_) => errors.record(
                        "close",
                        format!("no close frame back within {CLOSE_TIMEOUT:?}"),
                    ),
                }
            }
            Exit::Drop => {
                counters.dropped.fetch_add(1, Relaxed);
            }
            Exit::DropMidFrame => {
                writer.frame_from(OpCode::Text, br#"{"type":"ping","request_id":"cut-off"}"#);
                // The server may already have gone; the point is the cut.
                let _ = writer.flush_half().await;
                counters.dropped.fetch_add(1, Relaxed);
                counters.dropped_mid_frame.fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::topics::TopicPool;

    fn shared() -> Shared {
        let topics = TopicPool::for_tests(&["soak-busy", "soak-0", "soak-1"], "soak-tmp-1-");
        let name = topics.next_short_lived_name();
        topics.add_short_lived(name);
        Shared::for_tests(topics)
    }

    fn event(topic: &str, seq: u64) -> Vec<u8> {
        format!(
            r#"{{"type":"event","topic":"{topic}","message":{{"id":"x","payload":{{"seq":1}}}},"seq":{seq},"ts":"t"}}"#
        )
        .into_bytes()
    }

    fn subscribed<'a>(shared: &'a Shared, topics: &[&str]) -> Subscriber<'a> {
        let mut subscriber = Subscriber::new(shared);
        subscriber.topics = topics.iter().map(|&topic| (Arc::from(topic), 0)).collect();
        subscriber
    }

    #[test]
    fn checks_each_topics_sequence() {
        let shared = shared();
        let mut subscriber = subscribed(&shared, &["soak-0", "soak-1"]);
        for frame in [event("soak-0", 7), event("soak-1", 1), event("soak-0", 8)] {
            subscriber.on_frame(&frame);
        }
        assert!(shared.errors.tallies().is_empty());
        subscriber.on_frame(&event("soak-0", 10));
        subscriber.on_frame(&event("soak-busy", 1));
        subscriber.count_received();
        let errors = shared.errors.tallies();
        assert_eq!(errors["seq_order"].first, "soak-0: seq 10 after 8");
        assert_eq!(errors["foreign_event"].count, 1);
        assert_eq!(shared.counters.totals().received, 5);
    }

    #[test]
    fn a_deleted_topic_is_replaced_or_left() {
        let shared = shared();
        let mut subscriber = subscribed(&shared, &["soak-tmp-1-0"]);
        // As `churn` does: the topic leaves the pool before it is deleted,
        // so resubscribing cannot pick it again.
        assert_eq!(
            shared.topics.retire_oldest().as_deref(),
            Some("soak-tmp-1-0")
        );
        subscriber
            .on_frame(br#"{"type":"info","topic":"soak-tmp-1-0","msg":"topic_deleted","ts":"t"}"#);
        let totals = shared.counters.totals();
        assert_eq!(totals.topic_deleted_notices, 1);
        assert_eq!(totals.resubscribed + totals.left_after_notice, 1);
        assert_eq!(subscriber.leaving, totals.left_after_notice == 1);
        assert_eq!(subscriber.to_subscribe.len() as u64, totals.resubscribed);
        assert!(subscriber
            .topics
            .iter()
            .all(|(topic, _)| &**topic != "soak-tmp-1-0"));
        assert!(shared.errors.tallies().is_empty());
    }

    #[test]
    fn topic_not_found_is_expected_only_for_a_retired_topic() {
        let shared = shared();
        let mut subscriber = subscribed(&shared, &["soak-0", "soak-tmp-1-0"]);
        let not_found = |topic: &str| {
            format!(
                r#"{{"type":"error","request_id":"{topic}","error":{{"code":"TOPIC_NOT_FOUND","message":"m"}},"ts":"t"}}"#
            )
        };
        shared.topics.retire_oldest();
        subscriber.on_frame(not_found("soak-tmp-1-0").as_bytes());
        assert_eq!(shared.counters.totals().subscribe_topic_gone, 1);
        assert!(shared.errors.tallies().is_empty());
        subscriber.on_frame(not_found("soak-0").as_bytes());
        assert_eq!(shared.errors.tallies()["subscribe"].count, 1);
    }
}
