//! One subscribed connection: connect, subscribe, then count deliveries and
//! record their latency until the connection ends.

use std::sync::Arc;

use anyhow::Result;
use tokio::sync::{mpsc, Semaphore};

use crate::cli::Target;
use crate::stats::{Shard, Stats};
use crate::ws::{self, OpCode, WsReader, WsWriter};
use crate::{nats, payload, ringcast, runner};

pub struct Subscription {
    pub target: Target,
    pub url: ws::WsUrl,
    pub api_key: Option<String>,
    pub topic: String,
}

/// Per-connection decoding state: all that a subscriber keeps besides its buffers.
enum Decoder {
    Ringcast { last_seq: u64 },
    Nats(nats::Parser),
}

/// Sets the subscription up (reporting the outcome on `setup_done`), then
/// receives until the server closes the connection.
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
    let Some((reader, writer, decoder)) = runner::report_setup(setup, &setup_done) else {
        return;
    };
    if let Err(err) = receive(reader, writer, decoder, &stats).await {
        stats.disconnected(&format!("subscriber: {err:#}"));
    }
}

async fn set_up(subscription: &Subscription) -> Result<(WsReader, WsWriter, Decoder)> {
    let (mut reader, mut writer) =
        ws::connect(&subscription.url, subscription.api_key.as_deref()).await?;
    let decoder = match subscription.target {
        Target::Ringcast => {
            ringcast::subscribe(&mut reader, &mut writer, &subscription.topic).await?;
            Decoder::Ringcast { last_seq: 0 }
        }
        Target::Nats => {
            let mut parser = nats::Parser::default();
            nats::connect(&mut reader, &mut writer, &mut parser).await?;
            nats::subscribe(&mut reader, &mut writer, &mut parser, &subscription.topic).await?;
            Decoder::Nats(parser)
        }
    };
    Ok((reader, writer, decoder))
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
        reader.fill().await?;
        let received_ns = payload::now_ns();
        stats.with_shard(|shard| {
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
            Decoder::Ringcast { last_seq } => {
                if ringcast::classify(message) == ringcast::ServerFrame::Event {
                    shard.delivered(received_ns, payload::scheduled_ns(message));
                    if let Some(seq) = ringcast::event_seq(message) {
                        // The first event seen sets the baseline: topics outlive runs.
                        if *last_seq != 0 && seq != *last_seq + 1 {
                            shard.seq_gaps += seq.saturating_sub(*last_seq + 1).max(1);
                        }
                        *last_seq = seq;
                    }
                }
                Ok(())
            }
            Decoder::Nats(parser) => parser.feed(message, |event| match event {
                nats::Event::Msg(payload) => {
                    shard.delivered(received_ns, payload::scheduled_ns(payload));
                }
                nats::Event::Ping => writer.frame_from(OpCode::Binary, nats::PONG),
                _ => {}
            }),
        }
    }
}
