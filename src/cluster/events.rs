//! Events: a publish goes to the stream and is acknowledged once stored;
//! every node follows the whole stream in order and hands each event to
//! [`Broker::deliver`], stamped with the stream's sequence and store time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

use crate::broker::{Broker, BrokerError, Receipt, Stamp, Topic};
use crate::cluster::names::{
    client_message_id, event_subject, parse_event_subject, scoped_message_id, UNDEDUPLICATED_ID,
};
use crate::cluster::{
    unavailable, wait_until_applied, Cluster, PendingPublish, LOCAL_FAN_OUT_WAIT, RETRY_DELAY,
};
use crate::wire::request::Message;

impl Cluster {
    /// Sends a publish to JetStream. Awaiting this only hands the message
    /// to the connection, in call order, so one connection's publishes keep
    /// their order; the returned future resolves once JetStream stored it.
    /// A duplicate resolves to the original's `seq`: JetStream acknowledges
    /// it with the original's stream sequence, which is the event's `seq`,
    /// and the scoped id makes the original an event of this same topic.
    pub async fn publish(
        self: &Arc<Self>,
        topic: &Topic,
        message: &Message<'_>,
    ) -> Result<PendingPublish, BrokerError> {
        self.available()?;
        let event = jetstream::message::PublishMessage::build()
            .payload(Bytes::copy_from_slice(message.payload));
        // With `DEDUP_WINDOW` off the id travels in a header JetStream
        // does not deduplicate on.
        let event = match self.dedup_window {
            Some(_) => event.message_id(scoped_message_id(topic, message.id)),
            None => event.header(UNDEDUPLICATED_ID, message.id),
        };
        let stored = self
            .jetstream
            .send_publish(event_subject(topic.name(), topic.incarnation()), event)
            .await
            .map_err(unavailable)?;
        let cluster = self.clone();
        Ok(async move {
            let stored = stored.await.map_err(unavailable)?;
            let seq = stored.sequence;
            let fanned_out = cluster.events_applied.subscribe();
            let _ = wait_until_applied(fanned_out, seq, LOCAL_FAN_OUT_WAIT).await;
            Ok(Receipt {
                seq,
                duplicate: stored.duplicate,
            })
        }
        .boxed())
    }

    /// Fans out every stored event, in stream order, for ever.
    pub(super) async fn follow_events(&self, broker: &Broker, events: &stream::Stream) {
        loop {
            let deliver_policy = match *self.events_applied.borrow() {
                0 => consumer::DeliverPolicy::All,
                applied => consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: applied + 1,
                },
            };
            let consumer = events
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: self.client.new_inbox(),
                    deliver_policy,
                    ..Default::default()
                })
                .await;
            let messages = match consumer {
                Ok(consumer) => {
                    if consumer.cached_info().num_pending == 0 {
                        self.mark_caught_up(broker, events);
                    }
                    consumer.messages().await
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot follow the event stream");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            };
            match messages {
                Ok(mut messages) => {
                    let stalled = self.follower_stalled();
                    tokio::pin!(stalled);
                    // Errors here (missed heartbeats, a reconnect) are
                    // recovered by the ordered consumer itself, unless it
                    // stalls (see `watchdog`).
                    loop {
                        let message = tokio::select! {
                            message = messages.next() => message,
                            () = &mut stalled => {
                                tracing::warn!("event follower stalled behind the stream; following again with a new consumer");
                                break;
                            }
                        };
                        match message {
                            Some(Ok(message)) => self.apply_event(broker, events, &message).await,
                            Some(Err(err)) => tracing::debug!(error = %err, "event stream"),
                            None => break,
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot follow the event stream"),
            }
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    pub(super) async fn apply_event(
        &self,
        broker: &Broker,
        events: &stream::Stream,
        message: &jetstream::Message,
    ) {
        let Ok(info) = message.info() else {
            tracing::warn!(subject = %message.subject, "event without stream metadata; ignored");
            return;
        };
        let seq = info.stream_sequence;
        let applied = *self.events_applied.borrow();
        // A consumer recreated after a reconnect may start over.
        if seq <= applied {
            return;
        }
        let caught_up = self.caught_up.load(Ordering::Acquire);
        let missed = discarded_unread(applied, seq, caught_up);
        if missed > 0 {
            tracing::warn!(
                missed,
                "fell behind the event stream: events were discarded before this node read them"
            );
            broker.subscribers_missed_events(missed);
            broker.history_may_be_incomplete(seq);
        }
        let stored_at = system_time(info.published.unix_timestamp_nanos());
        match parse_event_subject(&message.subject) {
            Some((name, incarnation)) if self.mirror_incarnation(incarnation).await => {
                let headers = message.headers.as_ref();
                let id = headers
                    .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|id| client_message_id(id.as_str()))
                    .or_else(|| {
                        headers
                            .and_then(|headers| headers.get(UNDEDUPLICATED_ID))
                            .map(|id| id.as_str())
                    })
                    .unwrap_or_default();
                if let Ok(topic) = broker.topic(&name) {
                    if topic.incarnation() == incarnation {
                        let event = Message {
                            id,
                            payload: &message.payload,
                        };
                        // Refused only when the topic was deleted or the
                        // node is shutting down: nobody is left to get it.
                        // The follower serves every topic, so it does not wait for a
                        // lagging writer: the subscribers' bounds decide.
                        let stamp = Stamp::Backplane {
                            seq,
                            stored_at,
                            catching_up: !caught_up,
                        };
                        let _ = broker.deliver(&topic, &event, stamp);
                    }
                }
            }
            Some(_) => tracing::warn!(
                subject = %message.subject,
                "event of a topic incarnation the registry never had; ignored"
            ),
            None => {
                tracing::warn!(subject = %message.subject, "event subject not understood; ignored")
            }
        }
        self.events_applied.send_replace(seq);
        self.follower_lag.store(info.pending, Ordering::Relaxed);
        if info.pending == 0 {
            self.mark_caught_up(broker, events);
        }
    }

    /// Whether registry revision `incarnation` exists, once this node has
    /// mirrored it. Registry and events are separate streams, so a topic's
    /// creation may not be mirrored yet when its first events arrive, and
    /// the follower waits for it. A revision the registry has not reached
    /// names no topic (another NATS client wrote the subject): waiting for
    /// it would hold up every topic's events, so it is not waited for.
    pub(super) async fn mirror_incarnation(&self, incarnation: u64) -> bool {
        if incarnation <= *self.registry_applied.borrow() {
            return true;
        }
        match self.registry_revision().await {
            Ok(last_revision) if incarnation > last_revision => false,
            // Not known to be foreign: waited for, as long as any lag.
            _ => {
                self.wait_for_registry(incarnation).await;
                true
            }
        }
    }

    /// Settles every topic's history (see [`Broker::settle_history`]) as
    /// the node starts to serve, by the stream's own limit per topic, which
    /// a node with another `RING_BUFFER_SIZE` may have set.
    pub(super) fn mark_caught_up(&self, broker: &Broker, events: &stream::Stream) {
        if !self.caught_up.load(Ordering::Acquire) {
            let per_subject = events.cached_info().config.max_messages_per_subject;
            broker.settle_history(usize::try_from(per_subject).unwrap_or(usize::MAX));
        }
        if !self.caught_up.swap(true, Ordering::AcqRel) {
            tracing::info!(
                topics = *self.registry_applied.borrow(),
                events = *self.events_applied.borrow(),
                "caught up with the cluster"
            );
        }
    }
}

/// How many events the stream discarded before this node read them, seeing
/// event `seq` after `applied`. Once caught up, the follower reads every
/// event as it is stored, and deleted topics' events are purged only
/// `CLUSTER_PURGE_DELAY` after, so a skipped sequence is an event discarded
/// unread: the node fell more than a topic's `RING_BUFFER_SIZE` behind, or
/// was cut off from NATS while others published. While catching up, skips
/// are the history the stream had already discarded, and the first event
/// read has nothing before it to compare.
fn discarded_unread(applied: u64, seq: u64, caught_up: bool) -> u64 {
    if applied == 0 || !caught_up {
        return 0;
    }
    seq.saturating_sub(applied + 1)
}

/// A JetStream timestamp, in nanoseconds since the Unix epoch.
pub(super) fn system_time(unix_nanos: i128) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_nanos.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn only_a_skip_after_catching_up_is_an_event_missed() {
        assert_eq!(discarded_unread(10, 11, true), 0);
        assert_eq!(discarded_unread(10, 14, true), 3);
        assert_eq!(discarded_unread(10, 14, false), 0, "history has holes");
        assert_eq!(discarded_unread(0, 500, true), 0, "nothing read yet");
    }
}
