//! The topic registry: a key-value bucket whose keys are the topics, and
//! whose revisions name their incarnations. Topic changes go to the bucket;
//! every node follows it and mirrors it into its broker, in revision order.

use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::broker::{is_valid_topic_name, Broker, BrokerError, Topic, TopicOptions};
use crate::cluster::names::{decode_topic, encode_topic, event_subject, registry_stream_name};
use crate::cluster::{
    unavailable, wait_until_applied, Backplane, Cluster, Purge, REQUEST_TIMEOUT, RETRY_DELAY,
};

impl Cluster {
    /// Creates a topic in the registry, its options in its entry's value;
    /// returns once this node has it.
    pub async fn create_topic(&self, name: &str, options: TopicOptions) -> Result<(), BrokerError> {
        let broker = &self.broker;
        if !is_valid_topic_name(name) {
            return Err(BrokerError::InvalidTopicName);
        }
        let registry = &self.available()?.registry;
        broker.at_topic_limit()?;
        let value = serde_json::to_vec(&options).expect("options serialise");
        match registry
            .create(encode_topic(name), Bytes::from(value))
            .await
        {
            Ok(revision) => {
                self.wait_for_registry(revision).await;
                Ok(())
            }
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(BrokerError::TopicExists(name.to_owned()))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Deletes a topic from the registry; returns once this node has
    /// deleted it (other nodes follow within moments). Its events are
    /// purged later, by every node (see `Purge`).
    /// Once the registry has the delete it succeeded, whatever follows: an
    /// error then would make the client retry into a 404.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let backplane = self.available()?;
        let key = encode_topic(name);
        let not_found = || BrokerError::TopicNotFound(name.to_owned());
        // Only the incarnation read is deleted: a concurrent delete and
        // create in between makes this one try again.
        loop {
            let entry = backplane
                .registry
                .entry(key.as_str())
                .await
                .map_err(unavailable)?
                .filter(|entry| entry.operation == kv::Operation::Put)
                .ok_or_else(not_found)?;
            match backplane
                .registry
                .delete_expect_revision(&key, Some(entry.revision))
                .await
            {
                Ok(()) => {
                    if let Err(err) = self.sync_registry().await {
                        tracing::warn!(
                            topic = name,
                            error = %err,
                            "topic deleted; this node mirrors it once it can read the registry again"
                        );
                    }
                    return Ok(());
                }
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => return Err(unavailable(err)),
            }
        }
    }

    /// The topic, asking the registry before answering "not found": a topic
    /// created on another node a moment ago may not have reached this one.
    pub async fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        let broker = &self.broker;
        match broker.topic(name) {
            Err(BrokerError::TopicNotFound(_)) if self.available().is_ok() => {
                self.sync_registry().await?;
                broker.topic(name)
            }
            found => found,
        }
    }

    /// Waits until this node has mirrored every registry change made so far.
    pub(super) async fn sync_registry(&self) -> Result<(), BrokerError> {
        self.available()?;
        let last_revision = self.registry_revision().await.map_err(unavailable)?;
        self.wait_for_registry(last_revision).await;
        Ok(())
    }

    /// The registry's latest revision, asked of NATS (the bucket's own
    /// `status` answers from what it cached when it was opened).
    pub(super) async fn registry_revision(&self) -> Result<u64, async_nats::Error> {
        let stream = self.jetstream.get_stream(registry_stream_name()).await?;
        Ok(stream.cached_info().state.last_sequence)
    }

    pub(super) async fn wait_for_registry(&self, revision: u64) {
        if !wait_until_applied(self.registry_applied.subscribe(), revision, REQUEST_TIMEOUT).await {
            tracing::warn!(
                revision,
                "registry follower is behind; answering from what it has"
            );
            self.registry_stalled.notify_one();
        }
    }

    /// Waits until the registry as it was on joining is mirrored, so a node
    /// that reports caught up (which the event follower decides) has every
    /// topic.
    pub(super) async fn await_registry_snapshot(&self) {
        let last_revision = loop {
            match self.registry_revision().await {
                Ok(revision) => break revision,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the topic registry; retrying");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        };
        let mut mirrored = self.registry_applied.subscribe();
        let _ = mirrored.wait_for(|applied| *applied >= last_revision).await;
    }

    /// Mirrors the registry into the broker, in revision order, for ever;
    /// each incarnation it deletes is handed to `purges`.
    pub(super) async fn follow_registry(
        &self,
        broker: &Broker,
        backplane: &Backplane,
        purges: &mpsc::UnboundedSender<Purge>,
    ) {
        let registry = &backplane.registry;
        loop {
            let from = *self.registry_applied.borrow() + 1;
            let watch = if from == 1 {
                registry.watch_with_history(">").await
            } else {
                registry.watch_from_revision(">", from).await
            };
            match watch {
                Ok(mut entries) => loop {
                    tokio::select! {
                        entry = entries.next() => match entry {
                            Some(Ok(entry)) => self.apply_registry_entry(broker, backplane, &entry, purges),
                            Some(Err(err)) => tracing::warn!(error = %err, "registry watch"),
                            None => break,
                        },
                        () = self.registry_stalled.notified() => {
                            tracing::warn!("registry watch fell silent; watching again");
                            break;
                        }
                    }
                },
                Err(err) => tracing::warn!(error = %err, "cannot watch the topic registry"),
            }
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    pub(super) fn apply_registry_entry(
        &self,
        broker: &Broker,
        backplane: &Backplane,
        entry: &kv::Entry,
        purges: &mpsc::UnboundedSender<Purge>,
    ) {
        if entry.revision <= *self.registry_applied.borrow() {
            return;
        }
        match decode_topic(&entry.key) {
            Some(name) => {
                let retired = match entry.operation {
                    kv::Operation::Put => {
                        // An entry written before topics had options holds
                        // the topic's name instead: the defaults apply.
                        let options = serde_json::from_slice(&entry.value)
                            .unwrap_or_else(|_| broker.default_options());
                        let epoch = backplane.epoch(entry.revision);
                        broker.adopt_topic(&name, entry.revision, &epoch, options)
                    }
                    kv::Operation::Delete | kv::Operation::Purge => {
                        broker.retire_topic(&name, entry.revision)
                    }
                };
                if let Some(incarnation) = retired {
                    self.owe_purge(purges, event_subject(&name, incarnation), entry);
                }
            }
            None => tracing::warn!(key = entry.key, "registry key is not a topic; ignored"),
        }
        self.registry_applied.send_replace(entry.revision);
    }
}
