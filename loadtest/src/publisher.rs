//! One publishing connection driven by an open-loop schedule.
//!
//! Event `k` of a phase is due at `start + (k + offset) / rate` (or, in
//! bursts, at its burst's start), rounded up to the pacing quantum, whatever
//! happened to earlier events: the publisher wakes when the next event is
//! due (see [`pacer`]) and sends every event due by then, in writes of up to
//! `MAX_BATCH_BYTES`. Each carries its *scheduled* time, so a stalled socket
//! shows up as latency instead of silently lowering the offered load.

use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{mpsc, watch};

use crate::cli::Target;
use crate::schedule::{Offer, Schedule};
use crate::stats::Stats;
use crate::ws::{self, OpCode, WsReader, WsUrl, WsWriter};
use crate::{jetstream, nats, pacer, payload, ringcast, runner};
/// Upper bound of one socket write, so a backlog is sent in bounded pieces.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Longest sleep between two looks at the phase and at pings to answer.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// A stretch of publishing at one rate. Publishers send every event scheduled
/// in `[start, end]`, then report the phase done.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Phase {
    pub id: u64,
    pub start: Instant,
    pub end: Instant,
    /// Across all publishers.
    pub offer: Offer,
}

pub struct PublisherSpec {
    pub target: Target,
    pub url: WsUrl,
    pub api_key: Option<String>,
    pub index: u32,
    pub publishers: u32,
    pub topics: Vec<String>,
    pub payload_bytes: usize,
    /// NATS: one PUB per WebSocket frame instead of a write's PUBs in one
    /// frame (ringcast always sends one publish per frame).
    pub one_publish_per_frame: bool,
    /// NATS with `--jetstream`: where JetStream sends this publisher's
    /// PubAcks; each publish goes into the stream with its id and this inbox.
    pub pub_ack_inbox: Option<String>,
    /// See `Plan::pacing_quantum`.
    pub pacing_quantum_ns: u64,
    /// Offer `permessage-deflate`, to read the server's replies as a
    /// compressing client would; publishes are sent plain all the same.
    pub compression: bool,
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
    let pub_acks = spec
        .pub_ack_inbox
        .is_some()
        .then(Arc::<jetstream::Answers>::default);
    tokio::spawn(read_replies(
        reader,
        parser,
        spec.target,
        stats.clone(),
        pub_acks.clone(),
        replies_tx,
    ));
    let mut publisher = Publisher {
        pub_acks,
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
    let (mut reader, mut writer) =
        ws::connect_offering(&spec.url, spec.api_key.as_deref(), spec.compression).await?;
    let mut parser = nats::Parser::default();
    if spec.target == Target::Nats {
        nats::connect(&mut reader, &mut writer, &mut parser).await?;
        if let Some(inbox) = &spec.pub_ack_inbox {
            nats::subscribe(&mut reader, &mut writer, &mut parser, inbox).await?;
        }
    }
    Ok((reader, parser, writer))
}

/// Counts ringcast acks and errors, or NATS errors and JetStream PubAcks
/// (the only messages a publisher's connection gets), and passes pings on
/// to be answered. Must keep reading: ringcast stops reading a connection whose
/// replies pile up.
async fn read_replies(
    mut reader: WsReader,
    mut parser: nats::Parser,
    target: Target,
    stats: Arc<Stats>,
    pub_acks: Option<Arc<jetstream::Answers>>,
    replies: mpsc::UnboundedSender<Reply>,
) {
    let result: Result<()> = async {
        loop {
            reader.fill().await?;
            let mut acks = 0;
            let mut pub_ack_errors = 0;
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
                    nats::Event::Msg(pub_ack) if jetstream::is_error(pub_ack) => {
                        stats.publish_error(&String::from_utf8_lossy(pub_ack));
                        pub_ack_errors += 1;
                    }
                    nats::Event::Msg(_) => acks += 1,
                    _ => {}
                }),
            })?;
            stats.acks.fetch_add(acks, Relaxed);
            if let Some(pub_acks) = &pub_acks {
                pub_acks.add(acks + pub_ack_errors);
            }
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
    /// How many PubAcks came (`--jetstream`).
    pub_acks: Option<Arc<jetstream::Answers>>,
}

impl Publisher {
    async fn publish(&mut self, mut phases: watch::Receiver<Option<Phase>>) -> Result<()> {
        let mut timer = pacer::Timer::new()?;
        let mut finished_phase = 0;
        let mut sent_in_phase = 0;
        loop {
            self.queue_replies();
            let mut wake = Instant::now() + IDLE_WAKE;
            let phase = *phases.borrow_and_update();
            if let Some(phase) = phase.filter(|phase| phase.id != finished_phase) {
                let schedule =
                    Schedule::for_publisher(phase.offer, self.spec.index, self.spec.publishers);
                let finished = match schedule {
                    Some(schedule) => {
                        match self
                            .publish_due(&phase, &schedule, &mut sent_in_phase)
                            .await?
                        {
                            Some(next) => {
                                wake = wake.min(next);
                                false
                            }
                            None => true,
                        }
                    }
                    None => self.publish_flat_out(&phase).await?,
                };
                if finished {
                    finished_phase = phase.id;
                    sent_in_phase = 0;
                    self.stats.phases_done.fetch_add(1, Relaxed);
                }
            }
            self.writer.flush().await?;
            // A wake-up missed while a write was blocked is not made up for:
            // the events it was for go out on the next one, charged from
            // their due time.
            tokio::select! {
                slept = timer.sleep_until(wake) => slept?,
                changed = phases.changed() => {
                    if changed.is_err() {
                        // The run is over.
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Sends every event of the schedule due by now; returns when the next
    /// one is due (the phase's end once none is left), or `None` once the
    /// phase is over. A burst goes out the same way: all of it is due at
    /// once, so it leaves in back-to-back writes, as fast as the socket
    /// takes them.
    async fn publish_due(
        &mut self,
        phase: &Phase,
        schedule: &Schedule,
        sent: &mut u64,
    ) -> Result<Option<Instant>> {
        let quantum = self.spec.pacing_quantum_ns;
        let start_ns = payload::ns_at(phase.start);
        let end_ns = payload::ns_at(phase.end);
        // What was due by the last quantum boundary, each event stamped with
        // the boundary it is sent at; the runner puts phase boundaries on ticks.
        let horizon_ns = pacer::floor(payload::now_ns(), quantum).min(end_ns);
        let due = horizon_ns
            .checked_sub(start_ns)
            .map_or(0, |elapsed| schedule.due(Duration::from_nanos(elapsed)));
        let scheduled_ns = |k: u64| pacer::ceil(start_ns + schedule.offset_ns(k), quantum);
        while *sent < due {
            let batch = *sent..due.min(*sent + self.batch_events);
            *sent = batch.end;
            self.send(batch, scheduled_ns).await?;
        }
        if horizon_ns >= end_ns {
            return Ok(None);
        }
        Ok(Some(payload::instant_at(scheduled_ns(*sent).min(end_ns))))
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
        if let Some(pub_acks) = &self.pub_acks {
            pub_acks.room_for(self.counter, count).await;
        }
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
            Target::Nats => {
                let write = |buf: &mut Vec<u8>, (topic, n, t)| match spec.pub_ack_inbox.as_deref() {
                    Some(inbox) => jetstream::write_publish(
                        buf,
                        topic,
                        inbox,
                        spec.index,
                        n,
                        spec.payload_bytes,
                        t,
                    ),
                    None => nats::write_publish(buf, topic, spec.index, n, spec.payload_bytes, t),
                };
                if spec.one_publish_per_frame {
                    for k in events {
                        let event = next_event(k);
                        writer.frame(OpCode::Binary, |buf| write(buf, event));
                    }
                } else {
                    // NATS is a byte stream: a whole batch of PUBs travels in one frame.
                    writer.frame(OpCode::Binary, |buf| {
                        for k in events {
                            write(buf, next_event(k));
                        }
                    });
                }
            }
        }
    }

    fn queue_replies(&mut self) {
        while let Ok((opcode, payload)) = self.replies.try_recv() {
            self.writer.frame_from(opcode, &payload);
        }
    }
}
