//! Join and leave across nodes: on a topic with `presence_events`, a
//! subscription starting or ending on one node is told to the topic's
//! subscribers on every other node. Each node sends its topics' changes on
//! [`MEMBERSHIP_SUBJECT`] (core NATS, at most once: a notice lost while
//! NATS is unreachable is not sent again) and tells its own subscribers of
//! the other nodes' changes to the same topic incarnation. Joins and
//! leaves from one node keep their order; they are not ordered with the
//! topic's events, nor with another node's joins and leaves.

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::broker::MembershipChange;
use crate::cluster::{Cluster, RETRY_DELAY};

/// Where joins and leaves go; every node listens.
const MEMBERSHIP_SUBJECT: &str = "ringcast.membership";

impl Cluster {
    /// Sends this node's joins and leaves to the other nodes, for ever.
    pub(super) async fn share_membership(&self, mut changes: UnboundedReceiver<MembershipChange>) {
        while let Some(change) = changes.recv().await {
            let payload = serde_json::to_vec(&change).expect("a change serialises");
            if let Err(err) = self
                .client
                .publish_with_headers(
                    MEMBERSHIP_SUBJECT,
                    self.sender_headers(),
                    Bytes::from(payload),
                )
                .await
            {
                tracing::warn!(error = %err, ?change, "cannot send a join or leave to the other nodes");
            }
        }
    }

    /// Tells this node's subscribers of the other nodes' joins and leaves,
    /// for ever (the client subscribes again by itself after a reconnect).
    pub(super) async fn hear_membership(&self) {
        loop {
            match self.client.subscribe(MEMBERSHIP_SUBJECT).await {
                Ok(mut notices) => {
                    while let Some(notice) = notices.next().await {
                        if self.asked_by_itself(&notice) {
                            continue;
                        }
                        match serde_json::from_slice::<MembershipChange>(&notice.payload) {
                            Ok(change) => self.tell_subscribers(&change),
                            Err(err) => {
                                tracing::warn!(error = %err, "join or leave not understood; ignored")
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot listen for joins and leaves"),
            }
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    fn tell_subscribers(&self, change: &MembershipChange) {
        if let Ok(topic) = self.broker.topic(&change.topic) {
            if topic.incarnation() == change.incarnation {
                topic.tell_subscribers(change.change, &change.client_id);
            }
        }
    }
}
