//! One publishing connection driven by an open-loop schedule.
//!
//! Event `k` of a phase is due at `start + (k + offset) / rate`, whatever
//! happened to earlier events: every tick sends all events due by then in one
//! socket write, and each carries its *scheduled* time, so a stalled socket
//! shows up as latency instead of silently lowering the offered load.

use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use crate::cli::{Rate, Target};
use crate::stats::Stats;
use crate::ws::{self, OpCode, WsReader, WsUrl, WsWriter};
use crate::{nats, payload, ringcast, runner};

const TICK: Duration = Duration::from_millis(1);
/// Upper bound of one socket write, so a backlog is sent in bounded pieces.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// A stretch of publishing at one rate. Publishers send every event scheduled
/// in `[start, end]`, then report the phase done.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Phase {
    pub id: u64,
    pub start: Instant,
    pub end: Instant,
    /// Across all publishers.
    pub rate: Rate,
}

pub struct PublisherSpec {
    pub target: Target,
    pub url: WsUrl,
    pub api_key: Option<String>,
    pub index: u32,
    pub publishers: u32,
    pub topics: Vec<String>,
    pub payload_bytes: usize,
}

/// A frame the reply reader wants sent back (pings answered), handed to the
/// writer because only the writer may write to the socket.
type Reply = (OpCode, Vec<u8>);

pub async fn run(
    spec: PublisherSpec,
    stats: Arc<Stats>,
    phases: watch::Receiver<Option<Phase>>,
    setup_done: mpsc::UnboundedSender<Result<()>>,
) {
    let Some((reader, parser, writer)) = runner::report_setup(set_up(&spec).await, &setup_done)
    else {
        return;
    };
    let (replies_tx, replies) = mpsc::unbounded_channel();
    tokio::spawn(read_replies(
        reader,
        parser,
        spec.target,
        stats.clone(),
        replies_tx,
    ));
    let mut publisher = Publisher {
        batch_events: (MAX_BATCH_BYTES / (spec.payload_bytes + 128)).max(1) as u64,
        spec,
        writer,
        replies,
        stats: stats.clone(),
        counter: 0,
    };
    if let Err(err) = publisher.publish(phases).await {
        stats.disconnected(&format!("publisher: {err:#}"));
    }
}

async fn set_up(spec: &PublisherSpec) -> Result<(WsReader, nats::Parser, WsWriter)> {
    let (mut reader, mut writer) = ws::connect(&spec.url, spec.api_key.as_deref()).await?;
    let mut parser = nats::Parser::default();
    if spec.target == Target::Nats {
        nats::connect(&mut reader, &mut writer, &mut parser).await?;
    }
    Ok((reader, parser, writer))
}

/// Counts ringcast acks and errors, or NATS errors, and passes pings on to be
/// answered. Must keep reading: ringcast stops reading a connection whose
/// replies pile up.
async fn read_replies(
    mut reader: WsReader,
    mut parser: nats::Parser,
    target: Target,
    stats: Arc<Stats>,
    replies: mpsc::UnboundedSender<Reply>,
) {
    let result: Result<()> = async {
        loop {
            reader.fill().await?;
            let mut acks = 0;
            reader.drain(|message| match target {
                Target::Ringcast => {
                    match ringcast::classify(message) {
                        ringcast::ServerFrame::Ack => acks += 1,
                        ringcast::ServerFrame::Error => {
                            stats.publish_error(&String::from_utf8_lossy(message))
                        }
                        ringcast::ServerFrame::Event | ringcast::ServerFrame::Other => {}
                    }
                    Ok(())
                }
                Target::Nats => parser.feed(message, |event| match event {
                    nats::Event::Ping => {
                        let _ = replies.send((OpCode::Binary, nats::PONG.to_vec()));
                    }
                    nats::Event::Err(err) => stats.publish_error(&String::from_utf8_lossy(err)),
                    _ => {}
                }),
            })?;
            stats.acks.fetch_add(acks, Relaxed);
            if let Some(pong) = reader.take_pong() {
                let _ = replies.send((OpCode::Pong, pong));
            }
        }
    }
    .await;
    if let Err(err) = result {
        stats.disconnected(&format!("publisher: {err:#}"));
    }
}

struct Publisher {
    spec: PublisherSpec,
    writer: WsWriter,
    replies: mpsc::UnboundedReceiver<Reply>,
    stats: Arc<Stats>,
    /// Events sent over the whole run: the payload's `n` and the message id.
    counter: u64,
    batch_events: u64,
}

impl Publisher {
    async fn publish(&mut self, phases: watch::Receiver<Option<Phase>>) -> Result<()> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut finished_phase = 0;
        let mut sent_in_phase = 0;
        loop {
            ticker.tick().await;
            self.queue_replies();
            let phase = *phases.borrow();
            if let Some(phase) = phase.filter(|phase| phase.id != finished_phase) {
                let finished = match phase.rate {
                    Rate::PerSecond(rate) => {
                        self.publish_due(&phase, rate, &mut sent_in_phase).await?
                    }
                    Rate::Unlimited => self.publish_flat_out(&phase).await?,
                };
                if finished {
                    finished_phase = phase.id;
                    sent_in_phase = 0;
                    self.stats.phases_done.fetch_add(1, Relaxed);
                }
            }
            self.writer.flush().await?;
        }
    }

    /// Sends every event of the schedule due by now; true once the phase is over.
    async fn publish_due(
        &mut self,
        phase: &Phase,
        total_rate: f64,
        sent: &mut u64,
    ) -> Result<bool> {
        let rate = total_rate / f64::from(self.spec.publishers);
        // Publishers interleave their schedules instead of all firing together.
        let offset = f64::from(self.spec.index) / f64::from(self.spec.publishers);
        let now = Instant::now();
        let horizon = now.min(phase.end);
        let slots = horizon.saturating_duration_since(phase.start).as_secs_f64() * rate - offset;
        let due = if horizon < phase.start || slots < 0.0 {
            0
        } else {
            slots as u64 + 1
        };
        let start_ns = payload::ns_at(phase.start);
        let scheduled_ns = |k: u64| start_ns + ((k as f64 + offset) / rate * 1e9) as u64;
        while *sent < due {
            let batch = *sent..due.min(*sent + self.batch_events);
            *sent = batch.end;
            self.send(batch, scheduled_ns).await?;
        }
        Ok(now >= phase.end)
    }

    /// Unlimited rate: as fast as the socket takes batches. Each event's
    /// scheduled time is when its batch was built.
    async fn publish_flat_out(&mut self, phase: &Phase) -> Result<bool> {
        tokio::time::sleep_until(phase.start.into()).await;
        while Instant::now() < phase.end {
            let now_ns = payload::now_ns();
            self.send(0..self.batch_events, |_| now_ns).await?;
            self.queue_replies();
        }
        Ok(true)
    }

    async fn send(&mut self, events: Range<u64>, scheduled_ns: impl Fn(u64) -> u64) -> Result<()> {
        let count = events.end - events.start;
        self.queue_events(events, scheduled_ns);
        self.writer.flush().await?;
        self.stats.published.fetch_add(count, Relaxed);
        Ok(())
    }

    fn queue_events(&mut self, events: Range<u64>, scheduled_ns: impl Fn(u64) -> u64) {
        let Publisher {
            spec,
            writer,
            counter,
            ..
        } = self;
        let mut next_event = |k: u64| {
            let topic = &spec.topics[(*counter % spec.topics.len() as u64) as usize];
            let event = (topic.as_str(), *counter, scheduled_ns(k));
            *counter += 1;
            event
        };
        match spec.target {
            Target::Ringcast => {
                for k in events {
                    let (topic, n, t) = next_event(k);
                    ringcast::queue_publish(
                        writer,
                        topic,
                        None,
                        spec.index,
                        n,
                        spec.payload_bytes,
                        t,
                    );
                }
            }
            // NATS is a byte stream: a whole batch of PUBs travels in one frame.
            Target::Nats => writer.frame(OpCode::Binary, |buf| {
                for k in events {
                    let (topic, n, t) = next_event(k);
                    nats::write_publish(buf, topic, spec.index, n, spec.payload_bytes, t);
                }
            }),
        }
    }

    fn queue_replies(&mut self) {
        while let Ok((opcode, payload)) = self.replies.try_recv() {
            self.writer.frame_from(opcode, &payload);
        }
    }
}
