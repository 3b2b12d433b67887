//! Purges: a deleted incarnation's events leave the stream
//! `CLUSTER_PURGE_DELAY` after the delete. The registry's delete is the
//! durable record of a purge owed: every node that mirrors a delete purges
//! it when due, and a node that starts purges what the registry says is
//! dead yet still stored.

use async_nats::jetstream::{kv, stream};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::cluster::events::system_time;
use std::time::SystemTime;

use crate::cluster::names::{encode_topic, parse_event_subject, EVENT_SUBJECT_PREFIX};
use crate::cluster::{Backplane, Cluster, Purge, RETRY_DELAY};

impl Cluster {
    /// Hands `purges` the purge of `subject`, an incarnation that registry
    /// `entry` (its delete, or its successor's creation) ended.
    pub(super) fn owe_purge(
        &self,
        purges: &mpsc::UnboundedSender<Purge>,
        subject: String,
        entry: &kv::Entry,
    ) {
        let ended_at = system_time(entry.created.unix_timestamp_nanos());
        // Fails only once `follow` is ending, and the purger with it.
        let _ = purges.send(Purge {
            subject,
            due: ended_at + self.purge_delay,
        });
    }

    /// Once, on joining: hands `purges` every incarnation whose events the
    /// stream still holds though the registry has ended it. Nodes that
    /// stopped within `CLUSTER_PURGE_DELAY` of a delete left those; the
    /// registry keeps only the latest entry per topic, so they are found in
    /// the stream. Retried until it could look at every subject.
    pub(super) async fn find_unpurged(
        &self,
        broker: &Broker,
        backplane: &Backplane,
        purges: &mpsc::UnboundedSender<Purge>,
    ) {
        while let Err(err) = self.try_find_unpurged(broker, backplane, purges).await {
            tracing::warn!(error = %err, "cannot look for deleted topics' events; retrying");
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    pub(super) async fn try_find_unpurged(
        &self,
        broker: &Broker,
        backplane: &Backplane,
        purges: &mpsc::UnboundedSender<Purge>,
    ) -> Result<(), async_nats::Error> {
        let mut subjects = backplane
            .events
            .info_with_subjects(format!("{EVENT_SUBJECT_PREFIX}>"))
            .await?;
        while let Some((subject, _)) = subjects.next().await.transpose()? {
            let Some((name, incarnation)) = parse_event_subject(&subject) else {
                continue;
            };
            if broker
                .topic(&name)
                .is_ok_and(|topic| topic.incarnation() == incarnation)
            {
                continue;
            }
            // Ended only if the registry has a later entry for the name: a
            // subject it does not know is not ringcast's to purge.
            let latest = backplane.registry.entry(encode_topic(&name)).await?;
            if let Some(entry) = latest.filter(|entry| entry.revision > incarnation) {
                self.owe_purge(purges, subject, &entry);
            }
        }
        Ok(())
    }

    /// Makes the purges owed, in the order they were handed over, each once
    /// due (never earlier); one that fails is retried, as a purge is idempotent.
    pub(super) async fn run_purges(
        &self,
        events: &stream::Stream,
        mut owed: mpsc::UnboundedReceiver<Purge>,
    ) {
        while let Some(Purge { subject, due }) = owed.recv().await {
            if let Ok(wait) = due.duration_since(SystemTime::now()) {
                tokio::time::sleep(wait).await;
            }
            while let Err(err) = events.purge().filter(&subject).await {
                tracing::warn!(subject, error = %err, "cannot purge a deleted topic's events; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}
