//! Cluster-wide presence: scatter-gather over core NATS, and the list of
//! live nodes that tells a missing answer from a node that is gone.
//!
//! The asking and gathering (`Cluster::scatter_gather`) serve the server
//! API's connection commands too (see `commands`).
//!
//! - **Asking.** The node asked publishes one request on
//!   [`PRESENCE_SUBJECT`] with a fresh inbox as its reply subject; every
//!   other node answers there with its rows (see [`crate::presence`]), in
//!   pieces that fit a NATS message, the last one marked. The asking node
//!   writes its own rows meanwhile, without a round trip.
//! - **Knowing who should answer.** Each node keeps a key in the
//!   [`NODES_BUCKET`] key-value bucket, put every [`NODE_HEARTBEAT`]; the
//!   bucket's `max_age` ([`NODE_TTL`]) drops the key of a node that stopped
//!   putting it (a crash, a node cut off NATS), and a node that shuts down
//!   deletes its own. Reading the keys is one JetStream request with the
//!   crate's own API, and nothing needs to clean up after a dead node,
//!   which is why this, and not a registry of our own, lists the nodes.
//! - **Gathering.** Answers are gathered until every listed node answered
//!   or `CLUSTER_PRESENCE_TIMEOUT` passes; a listed node whose answer is
//!   not complete by then is named in `missing_nodes` and none of its rows
//!   are used. A node not listed yet that answers is included.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tokio::time::Instant;

use crate::broker::{Broker, BrokerError};
use crate::cluster::names::bucket_stream;
use crate::cluster::set_up_error::SetUpError;
use crate::cluster::{unavailable, Cluster, RETRY_DELAY};
use crate::presence::{self, Answer, Query};

/// Where presence requests go; every node listens.
const PRESENCE_SUBJECT: &str = "ringcast.presence";
/// The live nodes' key-value bucket: one key per node id.
const NODES_BUCKET: &str = "ringcast-nodes";
/// How often a node puts its key.
const NODE_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a node's key outlives its last put: a node that stops putting
/// it is no longer expected to answer after this long.
const NODE_TTL: Duration = Duration::from_secs(15);
/// On a request: the asking node's id, which does not answer itself.
const ASKER_HEADER: &str = "Ringcast-Asker";
/// On an answer's pieces: the answering node's id.
const NODE_HEADER: &str = "Ringcast-Node";
/// On an answer's last piece.
const LAST_HEADER: &str = "Ringcast-Last";
/// Room left in a NATS message for the headers beside a piece of rows.
const HEADER_ROOM: usize = 1024;

/// One node's answer as it arrives.
#[derive(Default)]
struct NodeAnswer {
    rows: Vec<Bytes>,
    complete: bool,
}

impl Cluster {
    /// The live nodes' bucket, created if need be. It is kept in memory:
    /// heartbeats need not survive a NATS restart, nodes put them again.
    pub(super) async fn node_list(&self) -> Result<kv::Store, SetUpError> {
        self.replicated_stream(stream::Config {
            max_age: NODE_TTL,
            // JetStream wants it no longer than `max_age`; puts carry
            // no message id anyway.
            duplicate_window: NODE_TTL,
            storage: stream::StorageType::Memory,
            ..bucket_stream(NODES_BUCKET)
        })
        .await?;
        let nodes = self.jetstream.get_key_value(NODES_BUCKET).await;
        Ok(nodes.map_err(async_nats::Error::from)?)
    }

    /// Every node's rows for `query`: this node's, and those of every
    /// other node that answers within `CLUSTER_PRESENCE_TIMEOUT`, with the
    /// listed nodes that did not.
    pub async fn presence(&self, query: &Query) -> Result<Answer, BrokerError> {
        let own_rows = tokio::spawn(presence::local_rows(
            self.broker.clone(),
            query.clone(),
            Some(self.node_id.clone()),
            usize::MAX,
        ));
        let mut answer = self
            .scatter_gather(PRESENCE_SUBJECT, query.to_payload())
            .await?;
        let mut rows = own_rows
            .await
            .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
        rows.append(&mut answer.rows);
        answer.rows = rows;
        Ok(answer)
    }

    /// Asks every other node `payload` on `subject` and gathers their
    /// answers, each in pieces the last one marked, until every listed
    /// node answered or `CLUSTER_PRESENCE_TIMEOUT` passes; with the listed
    /// nodes whose answer was not complete by then (none of their pieces
    /// is used). The asking node answers itself meanwhile, without a
    /// round trip.
    pub(super) async fn scatter_gather(
        &self,
        subject: &'static str,
        payload: Bytes,
    ) -> Result<Answer, BrokerError> {
        let backplane = self.available()?;
        let deadline = Instant::now() + self.presence_timeout;
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(unavailable)?;
        self.client
            .publish_with_reply_and_headers(subject, inbox, self.sender_headers(), payload)
            .await
            .map_err(unavailable)?;

        let listing = tokio::time::timeout_at(deadline, listed_nodes(&backplane.nodes));
        tokio::pin!(listing);
        let mut listed: Option<BTreeSet<String>> = None;
        let mut answers: HashMap<String, NodeAnswer> = HashMap::new();
        let everyone_answered =
            |listed: &BTreeSet<String>, answers: &HashMap<String, NodeAnswer>| {
                listed.iter().all(|node| {
                    *node == *self.node_id
                        || answers.get(node).is_some_and(|answer| answer.complete)
                })
            };
        while !listed
            .as_ref()
            .is_some_and(|listed| everyone_answered(listed, &answers))
        {
            tokio::select! {
                nodes = &mut listing, if listed.is_none() => {
                    let nodes = nodes
                        .map_err(|_| unavailable("the node list was not read in time"))?
                        .map_err(unavailable)?;
                    listed = Some(nodes);
                }
                reply = tokio::time::timeout_at(deadline, replies.next()) => match reply {
                    Ok(Some(reply)) => record_piece(&mut answers, reply),
                    // The deadline passed (or the client is closing).
                    Ok(None) | Err(_) => break,
                },
            }
        }
        let listed = match listed {
            Some(listed) => listed,
            None => listing
                .await
                .map_err(|_| unavailable("the node list was not read in time"))?
                .map_err(unavailable)?,
        };

        let missing_nodes = listed
            .into_iter()
            .filter(|node| {
                *node != *self.node_id && !answers.get(node).is_some_and(|answer| answer.complete)
            })
            .collect();
        let rows = answers
            .into_values()
            .filter(|answer| answer.complete)
            .flat_map(|answer| answer.rows)
            .collect();
        Ok(Answer {
            rows,
            missing_nodes,
        })
    }

    /// Answers every other node's presence requests with this node's rows,
    /// for ever (the client subscribes again by itself after a reconnect).
    pub(super) async fn answer_presence(&self, broker: &Arc<Broker>) {
        loop {
            match self.client.subscribe(PRESENCE_SUBJECT).await {
                Ok(mut requests) => {
                    // One at a time: a burst of requests queues instead of
                    // writing many large answers at once.
                    while let Some(request) = requests.next().await {
                        self.answer(broker, request).await;
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot listen for presence requests"),
            }
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    async fn answer(&self, broker: &Arc<Broker>, request: async_nats::Message) {
        if self.asked_by_itself(&request) {
            return;
        }
        let (Some(reply), Some(query)) = (&request.reply, Query::from_payload(&request.payload))
        else {
            tracing::warn!(subject = %request.subject, "presence request not understood; ignored");
            return;
        };
        let piece_len = self
            .client
            .server_info()
            .max_payload
            .saturating_sub(HEADER_ROOM)
            .max(HEADER_ROOM);
        let pieces =
            presence::local_rows(broker.clone(), query, Some(self.node_id.clone()), piece_len)
                .await;
        self.reply_in_pieces(reply, pieces).await;
    }

    /// Headers naming this node as the sender of a request or notice, so
    /// that it can tell its own when they come back (`asked_by_itself`).
    pub(super) fn sender_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ASKER_HEADER, &*self.node_id);
        headers
    }

    /// Whether this node sent `request` itself (it answers itself without
    /// a round trip).
    pub(super) fn asked_by_itself(&self, request: &async_nats::Message) -> bool {
        request
            .headers
            .as_ref()
            .and_then(|headers| headers.get(ASKER_HEADER))
            .is_some_and(|asker| asker.as_str() == &*self.node_id)
    }

    /// Sends this node's answer to `reply` as `scatter_gather` gathers it:
    /// each piece names the node, the last one is marked.
    pub(super) async fn reply_in_pieces(&self, reply: &Subject, mut pieces: Vec<Bytes>) {
        if pieces.is_empty() {
            pieces.push(Bytes::new());
        }
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(NODE_HEADER, &*self.node_id);
            if i == last {
                headers.insert(LAST_HEADER, "true");
            }
            if let Err(err) = self
                .client
                .publish_with_headers(reply.clone(), headers, piece)
                .await
            {
                tracing::warn!(error = %err, subject = %reply, "cannot answer a request");
                return;
            }
        }
    }

    /// Keeps this node's key in the node list, for ever.
    pub(super) async fn stay_listed(&self, nodes: &kv::Store) {
        let mut heartbeat = tokio::time::interval(NODE_HEARTBEAT);
        loop {
            heartbeat.tick().await;
            if let Err(err) = nodes.put(self.node_id.as_ref(), Bytes::new()).await {
                tracing::debug!(error = %err, "cannot renew this node's key in the node list");
            }
        }
    }

    /// Takes this node off the node list as it shuts down, so that no
    /// presence answer waits for it or names it missing.
    pub async fn leave(&self) {
        let Some(backplane) = self.backplane.get() else {
            return;
        };
        let delete = backplane.nodes.delete(self.node_id.as_ref());
        match tokio::time::timeout(super::REQUEST_TIMEOUT, delete).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot leave the node list"),
            Err(_) => tracing::warn!("cannot leave the node list: NATS did not answer"),
        }
    }
}

/// Adds one piece of an answer to the node's answer so far.
fn record_piece(answers: &mut HashMap<String, NodeAnswer>, reply: async_nats::Message) {
    let Some(headers) = reply.headers.as_ref() else {
        return;
    };
    let Some(node) = headers.get(NODE_HEADER) else {
        return;
    };
    let answer = answers.entry(node.as_str().to_owned()).or_default();
    answer.complete = headers.get(LAST_HEADER).is_some();
    answer.rows.push(reply.payload);
}

/// The ids of the nodes whose key is in the node list.
async fn listed_nodes(nodes: &kv::Store) -> Result<BTreeSet<String>, async_nats::Error> {
    Ok(nodes.keys().await?.try_collect().await?)
}
