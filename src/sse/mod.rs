//! Server-sent events (`GET /sse`): the same topics for clients that
//! cannot open a WebSocket (`EventSource`, `curl -N`, proxies that strip
//! upgrades).
//!
//! A stream is a subscriber like any other: it has an [`Outbox`] with the
//! same bounds and slow-consumer policy, its topics queue into it exactly
//! what they queue for a WebSocket, and the same [`write_loop`] drains it
//! (`WRITE_TIMEOUT`, heartbeat, shutdown), through an SSE transport:
//!
//! - [`request`]: the query (topics, `last_n`, `client_id`) and the
//!   cursor to resume from (`Last-Event-ID` or `?last_event_id=`).
//! - [`cursor`]: the opaque `id:` of every event, each topic's epoch and
//!   last `seq` delivered, so a reconnect resumes every topic as
//!   `since_seq` + `epoch` does.
//! - [`framing`]: SSE text around the JSON an event was encoded to once
//!   for every subscriber (a slice of its shared frame, never a copy),
//!   gathered into a [`Chunk`] that hyper writes with one `writev`.
//! - [`transport`]: the write loop's SSE side and the response body it
//!   feeds.
//!
//! Here: checking the request against the node (permissions, topics,
//! `MAX_CONNECTIONS`), subscribing, and the stream's task.

pub mod cursor;
pub mod framing;
pub mod request;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::auth::Grant;
use crate::broker::{BrokerError, ConnectionId, Topic};
use crate::connections::Registration;
use crate::error::Error;
use crate::metrics::Transport as MetricsTransport;
use crate::node::Node;
use crate::send::outbox::Outbox;
use crate::send::writer::{write_loop, WriterTiming};
use crate::wire::close::CloseReason;

pub use framing::Chunk;
pub use request::SseRequest;
pub use transport::SseBody;

use framing::Subscribed;
use transport::SseTransport;

/// Opens a stream for `request`: every topic must exist and be one the
/// grant may subscribe to, and the stream must fit `MAX_CONNECTIONS` and
/// `MAX_SUBSCRIPTIONS_PER_CONNECTION`; then it subscribes to each
/// (resuming from the cursor where it covers the topic) and starts the
/// task that writes the stream, which ends it (after `error`
/// `UNAUTHORIZED`) when the grant's token expires, as a WebSocket is
/// closed. Fails before anything is sent.
pub async fn open(
    node: &Arc<Node>,
    request: SseRequest,
    grant: &Grant,
    peer: SocketAddr,
) -> Result<SseBody, Error> {
    if let Some(name) = request
        .topics
        .iter()
        .find(|name| !grant.permissions.may_subscribe(name))
    {
        node.metrics()
            .record_permission_denied(MetricsTransport::Rest);
        tracing::debug!(%peer, topic = name.as_str(), "stream refused: not permitted");
        return Err(Error::Forbidden);
    }
    let max_subscriptions = node.config().max_subscriptions_per_connection as usize;
    if request.topics.len() > max_subscriptions {
        return Err(Error::TooManySubscriptions(max_subscriptions));
    }
    let mut topics = Vec::with_capacity(request.topics.len());
    for name in &request.topics {
        topics.push(node.topic(name).await?);
    }
    if node.shutdown().is_begun() {
        return Err(BrokerError::ShuttingDown.into());
    }
    let config = node.config();
    let max_connections = u64::from(config.max_connections);
    let slot = node
        .metrics()
        .try_open_connection(max_connections)
        .ok_or_else(|| {
            Error::TooManyConnections(format!(
                "this node holds its maximum of {max_connections} connections (MAX_CONNECTIONS)"
            ))
        })?;
    let outbox = Arc::new(Outbox::configured(config));
    let id = node.next_connection_id();
    let mut subscriptions = Subscriptions {
        id,
        topics: Vec::with_capacity(topics.len()),
        _registration: node
            .connections()
            .register(id, &outbox, grant.subject.clone()),
    };
    let mut joined = Vec::with_capacity(topics.len());
    for topic in topics {
        let replay = request.replay_of(topic.name());
        let subscribed = topic.subscribe(
            subscriptions.id,
            &outbox,
            request.client_id.as_deref(),
            replay,
            |at| joined.push(Subscribed::new(&at)),
        );
        if !subscribed {
            return Err(BrokerError::TopicNotFound(topic.name().to_owned()).into());
        }
        subscriptions.topics.push(topic);
    }
    // A stream has no reader: nothing but its writer ever answers.
    outbox.reader_finished();
    let (chunks, receiver) = mpsc::channel(1);
    let transport = SseTransport::new(chunks, node.metrics().clone(), &joined);
    let timing = WriterTiming::configured(config);
    let writer = write_loop(transport, outbox.clone(), timing, node.shutdown().clone());
    let expiry = grant.expires_in(config.jwt_leeway);
    let metrics = node.metrics().clone();
    let body = SseBody::new(receiver, outbox.clone());
    tracing::info!(conn = id, %peer, topics = joined.len(), "event stream opened");
    node.spawn_connection("event stream", async move {
        let mut writer = std::pin::pin!(writer);
        let reason = match expiry {
            Some(left) => tokio::select! {
                reason = &mut writer => reason,
                () = tokio::time::sleep(left) => {
                    metrics.record_token_expired();
                    outbox.close(CloseReason::TokenExpired);
                    writer.await
                }
            },
            None => writer.await,
        };
        drop((subscriptions, slot));
        if let Some(why) = reason.slow_consumer_message() {
            tracing::warn!(conn = id, %peer, why, "slow consumer disconnected");
        }
        tracing::info!(conn = id, %peer, reason = reason.describe(), "event stream closed");
    });
    Ok(body)
}

/// A stream's subscriptions and its place among the node's connections,
/// left however the stream ends.
struct Subscriptions {
    id: ConnectionId,
    topics: Vec<Arc<Topic>>,
    _registration: Registration,
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for topic in &self.topics {
            topic.unsubscribe(self.id);
        }
    }
}
