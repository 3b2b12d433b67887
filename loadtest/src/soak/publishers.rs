//! Steady publishing: WebSocket publishers and one REST publisher, each at a
//! fixed rate, every event to a random live topic (or, for a share of the
//! WebSocket events, to the busy topic). A publish names its topic in its
//! `request_id`, so a TOPIC_NOT_FOUND can be told apart: the expected race
//! with a deletion, or a server bug.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::time::MissedTickBehavior;

use super::{Shared, StopSignal};
use crate::payload;
use crate::ringcast::{self, ServerFrame};
use crate::rng::Rng;
use crate::ws::{self, WsReader, WsWriter};

const TICK: Duration = Duration::from_millis(10);
/// Events per socket write at most: a publisher that fell behind still reads
/// its acks between writes (the server stops reading a connection whose
/// replies pile up).
const MAX_EVENTS_PER_WRITE: u64 = 256;
/// How long a stopping publisher waits for the replies to its last publishes.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a publisher whose connection failed connects again.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub struct WsPublisher {
    /// Also the first part of its message ids.
    pub index: u32,
    /// Events per second.
    pub rate: f64,
    /// Fraction of the events that go to the busy topic.
    pub busy_share: f64,
    pub payload_bytes: usize,
}

/// Publishes until the soak stops, reconnecting if the connection fails.
pub async fn publish_over_ws(shared: Arc<Shared>, spec: WsPublisher) {
    let mut stop = shared.stop_signal();
    // Carried across reconnects, so message ids stay unique.
    let mut counter = 0;
    while !stop.is_stopped() {
        if let Err(err) = ws_session(&shared, &spec, &mut counter, &mut stop).await {
            shared.errors.record("publisher", format!("{err:#}"));
            tokio::select! {
                _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                _ = stop.stopped() => {}
            }
        }
    }
}

async fn ws_session(
    shared: &Shared,
    spec: &WsPublisher,
    counter: &mut u64,
    stop: &mut StopSignal,
) -> Result<()> {
    let (mut reader, mut writer) = ws::connect(&shared.url, shared.api_key.as_deref()).await?;
    let mut rng = Rng::new();
    let started = Instant::now();
    let (mut sent, mut answered) = (0, 0);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            read = reader.fill() => {
                read?;
                answered += read_replies(shared, &mut reader)?;
            }
            _ = ticker.tick() => {
                let due = (started.elapsed().as_secs_f64() * spec.rate) as u64;
                let batch = due.saturating_sub(sent).min(MAX_EVENTS_PER_WRITE);
                for _ in 0..batch {
                    let topic = if rng.chance(spec.busy_share) {
                        shared.topics.busy()
                    } else {
                        shared.topics.random(&mut rng)
                    };
                    ringcast::queue_publish(
                        &mut writer,
                        &topic,
                        Some(&topic),
                        spec.index,
                        *counter,
                        spec.payload_bytes,
                        payload::now_ns(),
                    );
                    *counter += 1;
                }
                sent += batch;
                shared.counters.published_ws.fetch_add(batch, Relaxed);
            }
            _ = stop.stopped() => break,
        }
        ws::answer_ping(&mut reader, &mut writer);
        writer.flush().await?;
    }
    // Every publish gets an ack or an error; collect the last ones, then close.
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    while answered < sent {
        match tokio::time::timeout_at(deadline, reader.fill()).await {
            Ok(read) => {
                read?;
                answered += read_replies(shared, &mut reader)?;
            }
            Err(_) => {
                let missing = sent - answered;
                shared.errors.record(
                    "unanswered_publish",
                    format!("{missing} publishes without ack or error after {REPLY_TIMEOUT:?}"),
                );
                break;
            }
        }
    }
    close(shared, reader, writer).await;
    Ok(())
}

/// Counts the acks and errors in what was read; returns how many there were.
fn read_replies(shared: &Shared, reader: &mut WsReader) -> Result<u64> {
    let mut replies = 0;
    reader.drain(|frame| {
        match ringcast::classify(frame) {
            ServerFrame::Ack => {
                shared.counters.acked.fetch_add(1, Relaxed);
                replies += 1;
            }
            ServerFrame::Error => {
                let gone = ringcast::string_field(frame, "code") == Some(b"TOPIC_NOT_FOUND")
                    && ringcast::string_field(frame, "request_id")
                        .is_some_and(|topic| shared.topics.is_retired(topic));
                if gone {
                    shared.counters.publish_topic_gone.fetch_add(1, Relaxed);
                } else {
                    shared
                        .errors
                        .record("publish", String::from_utf8_lossy(frame));
                }
                replies += 1;
            }
            ServerFrame::Event | ServerFrame::Other => {}
        }
        Ok(())
    })?;
    Ok(replies)
}

/// Closes a publisher's connection with the closing handshake.
async fn close(shared: &Shared, reader: WsReader, writer: WsWriter) {
    match tokio::time::timeout(REPLY_TIMEOUT, ws::close(reader, writer, 1000, |_| Ok(()))).await {
        Ok(Ok(Some(1000))) => {}
        Ok(Ok(code)) => shared.errors.record(
            "publisher",
            format!("close answered with {code:?} instead of 1000"),
        ),
        Ok(Err(err)) => shared
            .errors
            .record("publisher", format!("closing: {err:#}")),
        Err(_) => shared
            .errors
            .record("publisher", "no close frame back within the timeout"),
    }
}

/// Publishes `rate` events per second with `POST /topics/{name}/messages` on
/// one keep-alive connection, one request at a time, until the soak stops.
pub async fn publish_over_rest(shared: Arc<Shared>, index: u32, rate: f64, payload_bytes: usize) {
    let mut rest = shared.rest();
    let mut stop = shared.stop_signal();
    let mut rng = Rng::new();
    let started = Instant::now();
    let mut sent = 0;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.stopped() => return,
        }
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due && !stop.is_stopped() {
            let topic = shared.topics.random(&mut rng);
            shared.counters.published_rest.fetch_add(1, Relaxed);
            let status =
                ringcast::publish_over_rest(&mut rest, &topic, index, sent, payload_bytes).await;
            sent += 1;
            rest_outcome(&shared, &topic, status);
        }
    }
}

fn rest_outcome(shared: &Shared, topic: &str, status: Result<u16>) {
    match status {
        Ok(200) => {
            shared.counters.acked.fetch_add(1, Relaxed);
        }
        Ok(404) if shared.topics.is_retired(topic.as_bytes()) => {
            shared.counters.publish_topic_gone.fetch_add(1, Relaxed);
        }
        Ok(status) => shared
            .errors
            .record("rest_publish", format!("{topic}: status {status}")),
        Err(err) => shared
            .errors
            .record("rest_publish", format!("{topic}: {err:#}")),
    }
}
