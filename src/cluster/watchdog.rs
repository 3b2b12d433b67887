//! The event follower's watchdog. When the NATS server leading the event
//! stream dies, the client's ordered consumer may keep re-creating itself
//! under the same name with no answer from NATS, and its message stream
//! never ends, so the follower would wait for ever. The watchdog notices a
//! follower that applies nothing while the stream has moved on past it,
//! and the follower then follows again with a new consumer. On an idle
//! stream the follower is level with it, and the watchdog never fires.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::cluster::names::EVENT_STREAM;
use crate::cluster::Cluster;

/// How often the watchdog looks at the follower's progress. A stall is
/// noticed within three periods (two checks in a row see it), short
/// against the 10 s within which a publish is answered.
const CHECK_PERIOD: Duration = Duration::from_secs(1);

impl Cluster {
    /// Resolves once the follower has applied nothing over two checks in a
    /// row while the stream held events after the last one it applied each
    /// time: stuck, not merely busy or between two events. Asks NATS only
    /// when the follower made no progress since the last check.
    pub(super) async fn follower_stalled(&self) {
        let mut checks = tokio::time::interval(CHECK_PERIOD);
        checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        checks.tick().await;
        let mut applied_before = self.events_applied();
        let mut behind_before = false;
        loop {
            checks.tick().await;
            let applied = self.events_applied();
            let behind = applied == applied_before && self.stream_moved_past(applied).await;
            if behind && behind_before {
                return;
            }
            (applied_before, behind_before) = (applied, behind);
        }
    }

    /// Whether the event stream's last sequence is past `applied`; false
    /// while NATS does not answer (the client's reconnection handles that).
    async fn stream_moved_past(&self, applied: u64) -> bool {
        match self.jetstream.get_stream(EVENT_STREAM).await {
            Ok(stream) => stream.cached_info().state.last_sequence > applied,
            Err(err) => {
                tracing::debug!(error = %err, "follower watchdog: no stream info");
                false
            }
        }
    }
}
