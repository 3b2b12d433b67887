//! One subscribed connection: connect, subscribe (a WebSocket, or a
//! server-sent event stream with `--sse`), then count deliveries and record
//! their latency until the connection ends.

use std::sync::Arc;

use anyhow::Result;
use tokio::sync::{mpsc, Semaphore};

use crate::cli::Target;
use crate::sse::{self, SseReader};
use crate::stats::{Shard, Stats};
use crate::ws::{self, OpCode, WsReader, WsWriter};
use crate::{nats, payload, ringcast, runner};

pub struct Subscription {
    pub target: Target,
    pub url: ws::WsUrl,
    pub api_key: Option<String>,
    pub topic: String,
    /// See `Plan::counter_stride`.
    pub counter_stride: u64,
    /// Offer `permessage-deflate`.
    pub compression: bool,
    /// Read `GET /sse` instead of a WebSocket (ringcast only).
    pub sse: bool,
}

/// A subscriber's connection once set up.
enum Connection {
    WebSocket(WsReader, WsWriter, Decoder),
    EventStream(SseReader, Sequences),
}

/// Per-connection decoding state: all that a subscriber keeps besides its buffers.
enum Decoder {
    Ringcast(Sequences),
    Nats(nats::Parser),
}

/// Each publisher's last counter seen on this connection, to count the events
/// missing in between. The payload's counters rather than ringcast's `seq`:
/// in cluster mode `seq` is the backplane's stream sequence, which skips the
/// numbers other topics took.
struct Sequences {
    stride: u64,
    /// (publisher, last counter); a topic has one publisher unless there are
    /// more publishers than topics, so this stays tiny.
    last: Vec<(u32, u64)>,
}

impl Sequences {
    fn new(stride: u64) -> Sequences {
        Sequences {
            stride,
            last: Vec::new(),
        }
    }

    /// Counts an event frame, its latency and the events missing before it,
    /// or a `SLOW_CONSUMER` error.
    fn on_frame(&mut self, frame: &[u8], received_ns: u64, shard: &mut Shard) {
        match ringcast::classify(frame) {
            ringcast::ServerFrame::Event => {}
            ringcast::ServerFrame::Error => {
                if ringcast::is_slow_consumer_error(frame) {
                    shard.slow_consumer_errors += 1;
                }
                return;
            }
            ringcast::ServerFrame::Ack | ringcast::ServerFrame::Other => return,
        }
        let stamp = payload::stamp(frame);
        shard.delivered(received_ns, stamp.map(|stamp| stamp.scheduled_ns));
        if let Some(stamp) = stamp {
            shard.seq_gaps += self.missing_before(stamp.publisher, stamp.counter);
        }
    }

    /// How many of `publisher`'s events are missing before `counter`; a
    /// repeated or out-of-order counter counts as one. A publisher's first
    /// event sets its baseline: topics outlive runs.
    fn missing_before(&mut self, publisher: u32, counter: u64) -> u64 {
        let Some((_, last)) = self.last.iter_mut().find(|(p, _)| *p == publisher) else {
            self.last.push((publisher, counter));
            return 0;
        };
        let expected = *last + self.stride;
        *last = counter;
        if counter == expected {
            0
        } else {
            (counter.saturating_sub(expected) / self.stride).max(1)
        }
    }
}

/// Sets the subscription up (reporting the outcome on `setup_done`), then
/// receives until the server closes the connection, which counts as a cut
/// subscriber.
pub async fn run(
    subscription: Subscription,
    stats: Arc<Stats>,
    connect_slots: Arc<Semaphore>,
    setup_done: mpsc::UnboundedSender<Result<()>>,
) {
    let setup = {
        let _slot = connect_slots.acquire().await.expect("semaphore open");
        set_up(&subscription).await
    };
    let Some(connection) = runner::report_setup(setup, &setup_done) else {
        return;
    };
    let received = match connection {
        Connection::WebSocket(reader, writer, decoder) => {
            receive(reader, writer, decoder, &stats).await
        }
        Connection::EventStream(reader, sequences) => {
            receive_events(reader, sequences, &stats).await
        }
    };
    if let Err(err) = received {
        stats.subscriber_cut(&format!("subscriber: {err:#}"));
    }
}

async fn set_up(subscription: &Subscription) -> Result<Connection> {
    if subscription.sse {
        let reader = sse::connect(
            &subscription.url,
            subscription.api_key.as_deref(),
            &subscription.topic,
        )
        .await?;
        return Ok(Connection::EventStream(
            reader,
            Sequences::new(subscription.counter_stride),
        ));
    }
    let (mut reader, mut writer) = ws::connect_offering(
        &subscription.url,
        subscription.api_key.as_deref(),
        subscription.compression,
    )
    .await?;
    let decoder = match subscription.target {
        Target::Ringcast => {
            ringcast::subscribe(&mut reader, &mut writer, &subscription.topic).await?;
            Decoder::Ringcast(Sequences::new(subscription.counter_stride))
        }
        Target::Nats => {
            let mut parser = nats::Parser::default();
            nats::connect(&mut reader, &mut writer, &mut parser).await?;
            nats::subscribe(&mut reader, &mut writer, &mut parser, &subscription.topic).await?;
            Decoder::Nats(parser)
        }
    };
    Ok(Connection::WebSocket(reader, writer, decoder))
}

/// An event stream's hot path, as [`receive`]'s: each event's JSON is what
/// a WebSocket subscriber's frame carries.
async fn receive_events(
    mut reader: SseReader,
    mut sequences: Sequences,
    stats: &Stats,
) -> Result<()> {
    loop {
        let read = reader.fill().await?;
        counted(stats, read, |received_ns, shard| {
            reader.drain(|json| sequences.on_frame(json, received_ns, shard))
        })?;
    }
}

/// Counts a read's bytes and lets `drain` take what it completed, with one
/// clock reading and one shard lock for the whole read.
fn counted<T>(stats: &Stats, read: usize, drain: impl FnOnce(u64, &mut Shard) -> T) -> T {
    let received_ns = payload::now_ns();
    stats.with_shard(|shard| {
        shard.wire_bytes += read as u64;
        drain(received_ns, shard)
    })
}

/// The hot path: one clock reading and one shard lock per socket read, no
/// allocation and no JSON parsing per message.
async fn receive(
    mut reader: WsReader,
    mut writer: WsWriter,
    mut decoder: Decoder,
    stats: &Stats,
) -> Result<()> {
    loop {
        let read = reader.fill().await?;
        counted(stats, read, |received_ns, shard| {
            reader.drain(|message| decoder.on_message(message, received_ns, shard, &mut writer))
        })?;
        ws::answer_ping(&mut reader, &mut writer);
        writer.flush().await?;
    }
}

impl Decoder {
    fn on_message(
        &mut self,
        message: &[u8],
        received_ns: u64,
        shard: &mut Shard,
        writer: &mut WsWriter,
    ) -> Result<()> {
        match self {
            Decoder::Ringcast(sequences) => {
                sequences.on_frame(message, received_ns, shard);
                Ok(())
            }
            Decoder::Nats(parser) => parser.feed(message, |event| match event {
                nats::Event::Msg(payload) => {
                    shard.delivered(received_ns, payload::scheduled_ns(payload));
                }
                nats::Event::Ping => writer.frame_from(OpCode::Binary, nats::PONG),
                nats::Event::Err(err) if nats::is_slow_consumer(err) => {
                    shard.slow_consumer_errors += 1;
                }
                _ => {}
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_counters_miss_nothing() {
        let mut sequences = Sequences::new(1);
        for counter in 5..10 {
            assert_eq!(sequences.missing_before(0, counter), 0);
        }
    }

    #[test]
    fn counts_the_events_skipped() {
        let mut sequences = Sequences::new(1);
        sequences.missing_before(0, 0);
        assert_eq!(sequences.missing_before(0, 4), 3);
        assert_eq!(sequences.missing_before(0, 5), 0);
    }

    #[test]
    fn repeats_and_reorders_count_once() {
        let mut sequences = Sequences::new(1);
        sequences.missing_before(0, 7);
        assert_eq!(sequences.missing_before(0, 7), 1);
        assert_eq!(sequences.missing_before(0, 3), 1);
        assert_eq!(sequences.missing_before(0, 4), 0);
    }

    #[test]
    fn follows_each_publisher_apart() {
        let mut sequences = Sequences::new(1);
        for counter in 0..3 {
            assert_eq!(sequences.missing_before(0, counter), 0);
            assert_eq!(sequences.missing_before(1, 100 + counter), 0);
        }
        assert_eq!(sequences.missing_before(1, 105), 2);
        assert_eq!(sequences.missing_before(0, 3), 0);
    }

    fn event(seq: u64, publisher: u32, counter: u64) -> Vec<u8> {
        let mut frame =
            br#"{"type":"event","topic":"load-0","message":{"id":"x","payload":"#.to_vec();
        payload::write(&mut frame, 128, 1, publisher, counter);
        frame.extend_from_slice(format!(r#"}},"seq":{seq},"ts":"x"}}"#).as_bytes());
        frame
    }

    #[test]
    fn cluster_seq_jumps_are_not_gaps() {
        let stats = Stats::new(1);
        let mut sequences = Sequences::new(1);
        stats.with_shard(|shard| {
            // Stream sequences skip what other topics took; the counters do not.
            for (seq, counter) in [(10, 0), (13, 1), (40, 2)] {
                sequences.on_frame(&event(seq, 0, counter), 5, shard);
            }
            sequences.on_frame(br#"{"type":"ack","topic":"load-0"}"#, 5, shard);
            assert_eq!((shard.received, shard.seq_gaps), (3, 0));
            sequences.on_frame(
                br#"{"type":"error","error":{"code":"SLOW_CONSUMER","message":"x"},"ts":"x"}"#,
                5,
                shard,
            );
            sequences.on_frame(
                br#"{"type":"error","error":{"code":"BAD_REQUEST","message":"x"},"ts":"x"}"#,
                5,
                shard,
            );
            assert_eq!((shard.received, shard.slow_consumer_errors), (3, 1));
            // A lost event is a gap, whatever the seq says.
            sequences.on_frame(&event(41, 0, 4), 5, shard);
            assert_eq!((shard.received, shard.seq_gaps), (4, 1));
        });
    }

    #[test]
    fn steps_by_the_publishers_topic_count() {
        // A publisher with 3 topics: this topic gets counters 1, 4, 7, ...
        let mut sequences = Sequences::new(3);
        sequences.missing_before(2, 1);
        assert_eq!(sequences.missing_before(2, 4), 0);
        assert_eq!(sequences.missing_before(2, 13), 2);
    }
}
