//! Stalled readers: connections with a tiny receive buffer that subscribe to
//! the busy topic and then never read. The server must cut them off (under
//! the default policy, close 1008 once their queue overflows); the time each
//! took is recorded, and a new one takes its place.
//!
//! A reader that does not read cannot see the close frame: it would sit
//! behind the unread events, if the server could write it at all into the
//! full socket. So a stalled reader probes instead, writing a small ping
//! frame every `PROBE_INTERVAL`: once the server has closed its socket, the
//! kernel answers the next probe with a reset, and the write after that fails.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Shared, StopSignal};
use crate::ringcast;
use crate::ws::{self, OpCode};

const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Pause after a failed connection attempt.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
pub struct Stall {
    /// `SO_RCVBUF` of the stalled socket, bytes.
    pub receive_buffer: u32,
    /// A stalled reader still connected after this long is an error.
    pub timeout: Duration,
}

/// One stalled reader after another until the soak stops.
pub async fn run_slot(shared: Arc<Shared>, stall: Stall) {
    let mut stop = shared.stop_signal();
    while !stop.is_stopped() {
        stall_once(&shared, stall, &mut stop).await;
    }
}

async fn stall_once(shared: &Shared, stall: Stall, stop: &mut StopSignal) {
    let busy = shared.topics.busy();
    let connected = async {
        let (mut reader, mut writer) = ws::connect_with_receive_buffer(
            &shared.url,
            shared.api_key.as_deref(),
            stall.receive_buffer,
        )
        .await?;
        ringcast::subscribe(&mut reader, &mut writer, &busy).await?;
        anyhow::Ok((reader, writer))
    }
    .await;
    // The reader is kept, unread, so the socket stays open.
    let (_reader, mut writer) = match connected {
        Ok(connection) => connection,
        Err(err) => {
            shared.errors.record("stalled_reader", format!("{err:#}"));
            tokio::select! {
                _ = tokio::time::sleep(RETRY_DELAY) => {}
                _ = stop.stopped() => {}
            }
            return;
        }
    };
    let counters = &shared.counters;
    counters.stalled_readers_opened.fetch_add(1, Relaxed);
    let stalled_at = Instant::now();
    let mut probe = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = probe.tick() => {}
            _ = stop.stopped() => {
                counters.stalled_readers_open_at_end.fetch_add(1, Relaxed);
                return;
            }
        }
        writer.frame_from(OpCode::Ping, b"");
        if writer.flush().await.is_err() {
            break;
        }
        if stalled_at.elapsed() > stall.timeout {
            shared.errors.record(
                "stalled_reader_not_disconnected",
                format!("still connected after {:?}", stall.timeout),
            );
            return;
        }
    }
    counters.stalled_readers_disconnected.fetch_add(1, Relaxed);
    shared.stall_times.record(stalled_at.elapsed());
}
