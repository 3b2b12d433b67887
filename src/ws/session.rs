//! The broker's [`MessageHandler`]: client requests in, broker calls out,
//! replies into the connection's outbox. A publisher whose fan-out found a
//! subscriber's writer behind waits for it before reading on, which is how
//! an overloaded server pushes back on publishers (see `crate::send`).

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use tokio::time::Sleep;

use crate::auth::{Grant, Permissions};
use crate::broker::{BrokerError, ConnectionId, Joined};
use crate::connections::Registration;
use crate::error::Error;
use crate::metrics::{Metrics, Transport};
use crate::node::{Node, Publication};
use crate::rate_limit::{Bucket, Limit};
use crate::send::outbox::{LaggingWriters, Outbox};
use crate::wire::close::CloseReason;
use crate::wire::error::ErrorCode;
use crate::wire::reply;
use crate::wire::request::{
    parse_client_frame, ClientFrame, Message, Replay, Request as ClientRequest,
};
use crate::wire::timestamp::Timestamp;
use crate::ws::frame_reader;
use crate::ws::handler::MessageHandler;
use crate::ws::subscriptions::Subscriptions;

/// Counts a refused publish by its code.
fn counted_as_publish_error(error: impl Into<Error>, metrics: &Metrics) -> Error {
    let error = error.into();
    metrics.record_publish_error(error.code());
    error
}

/// The `error` frame answering a refused request.
fn error_reply(request_id: Option<&str>, error: &Error) -> Bytes {
    reply::error(request_id, error.code(), &error.to_string())
}

/// Cluster mode: publishes one connection may have waiting for the
/// backplane to store them before it stops reading.
const MAX_PENDING_PUBLISHES: usize = 256;

/// Cluster mode: the replies (ack or error) to publishes sent to the
/// backplane, in the order they were sent. Made on the first such publish:
/// a single node never needs one, and even an empty `FuturesOrdered` holds
/// two allocations, which every idle connection would keep.
#[derive(Default)]
struct PendingPublishes(Option<FuturesOrdered<BoxFuture<'static, Bytes>>>);

impl PendingPublishes {
    fn push(&mut self, reply: BoxFuture<'static, Bytes>) {
        self.0
            .get_or_insert_with(FuturesOrdered::new)
            .push_back(reply);
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesOrdered::len)
    }

    /// The next reply in order; `None` at once when none is waiting.
    async fn next(&mut self) -> Option<Bytes> {
        match &mut self.0 {
            Some(replies) => replies.next().await,
            None => None,
        }
    }
}

/// The reader's side of a connection: its subscriptions and request handling.
pub struct Session {
    id: ConnectionId,
    outbox: Arc<Outbox>,
    subscriptions: Subscriptions,
    /// Cluster mode: the replies to publishes sent to the backplane.
    pending_publishes: PendingPublishes,
    /// Subscribers whose writers the last publish found behind; waited for
    /// before the next frame is read.
    lagging: LaggingWriters,
    /// What the connection's credential permits.
    permissions: Arc<Permissions>,
    /// Fires when the token in force expires; none for an API key.
    expiry: Option<Pin<Box<Sleep>>>,
    /// `PUBLISH_RATE_LIMIT`, when set, and this connection's bucket.
    publish_limit: Option<(Limit, Bucket)>,
    /// Where the server API finds this connection, until it is dropped.
    registration: Registration,
    node: Arc<Node>,
}

impl Session {
    pub fn new(id: ConnectionId, node: Arc<Node>, outbox: Arc<Outbox>, grant: Grant) -> Self {
        let registration = node
            .connections()
            .register(id, &outbox, grant.subject.clone());
        let mut session = Self {
            id,
            registration,
            outbox,
            subscriptions: Subscriptions::default(),
            pending_publishes: PendingPublishes::default(),
            lagging: LaggingWriters::default(),
            permissions: grant.permissions.clone(),
            expiry: None,
            publish_limit: node.publish_limit().map(|limit| (limit, Bucket::default())),
            node,
        };
        session.arm_expiry(&grant);
        session
    }

    /// A timer for the token's expiry (plus `JWT_LEEWAY`, as verification
    /// allows), rather than a check per message.
    fn arm_expiry(&mut self, grant: &Grant) {
        self.expiry = grant
            .expires_in(self.node.config().jwt_leeway)
            .map(|left| Box::pin(tokio::time::sleep(left)));
    }

    /// Once the connection is closing: waits for the publishes still with
    /// the backplane and queues their answers (each resolves within the
    /// backplane's deadline), so every publish read is answered before the
    /// close frame; unless the queue is abandoned and nothing reaches the
    /// client any more.
    async fn answer_pending_publishes(&mut self) {
        if self
            .outbox
            .close_reason()
            .is_some_and(|reason| reason.abandons_queue())
        {
            return;
        }
        while let Some(reply) = self.pending_publishes.next().await {
            self.outbox.push_reply(reply);
        }
    }

    async fn handle_message(&mut self, bytes: &mut [u8]) {
        match parse_client_frame(bytes) {
            Ok(frame) => self.dispatch(frame).await,
            Err(rejection) => self.outbox.push_held_reply(reply::error(
                rejection.request_id.as_deref(),
                ErrorCode::BadRequest,
                &rejection.reason,
            )),
        }
    }

    async fn dispatch(
        &mut self,
        ClientFrame {
            request_id,
            request,
        }: ClientFrame<'_>,
    ) {
        let reply = match request {
            ClientRequest::Subscribe {
                topic,
                client_id,
                replay,
            } => self.subscribe(topic, client_id, replay, request_id).await,
            ClientRequest::Unsubscribe { topic, .. } => self.unsubscribe(topic, request_id).await,
            ClientRequest::Publish { topic, message } => {
                self.publish(topic, &message, request_id).await
            }
            ClientRequest::Ping => Ok(Some(reply::pong(request_id))),
            ClientRequest::Auth { token } => self.reauthenticate(token, request_id),
        };
        match reply {
            Ok(Some(frame)) => self.outbox.push_held_reply(frame),
            Ok(None) => {}
            Err(err) => self.outbox.push_held_reply(error_reply(request_id, &err)),
        }
    }

    /// The ack goes out at once on a single node; in cluster mode once the
    /// backplane has stored the event, meanwhile reading on.
    async fn publish(
        &mut self,
        name: &str,
        message: &Message<'_>,
        request_id: Option<&str>,
    ) -> Result<Option<Bytes>, Error> {
        self.check_publish(name)
            .map_err(|err| counted_as_publish_error(err, self.node.metrics()))?;
        let publication = self
            .node
            .publish(name, message)
            .await
            .map_err(|err| counted_as_publish_error(err, self.node.metrics()))?;
        match publication {
            Publication::Done(published) => {
                let ack = reply::publish_ack(
                    request_id,
                    name,
                    published.seq,
                    published.duplicate,
                    Timestamp::at(published.at),
                );
                self.lagging = published.lagging;
                Ok(Some(ack))
            }
            Publication::Pending(stored) => {
                let (name, request_id) = (name.to_owned(), request_id.map(str::to_owned));
                let metrics = self.node.metrics().clone();
                self.pending_publishes.push(
                    stored
                        .map(move |stored| match stored {
                            Ok(receipt) => reply::publish_ack(
                                request_id.as_deref(),
                                &name,
                                receipt.seq,
                                receipt.duplicate,
                                Timestamp::now(),
                            ),
                            Err(err) => error_reply(
                                request_id.as_deref(),
                                &counted_as_publish_error(err, &metrics),
                            ),
                        })
                        .boxed(),
                );
                Ok(None)
            }
        }
    }

    /// The token's permission, then the rate limit: a refused publish
    /// takes nothing from the bucket.
    fn check_publish(&self, name: &str) -> Result<(), Error> {
        if !self.permissions.may_publish(name) {
            return Err(self.not_permitted("publishing to", name));
        }
        if let Some((limit, bucket)) = &self.publish_limit {
            limit.acquire(bucket).inspect_err(|_| {
                self.node
                    .metrics()
                    .record_rate_limited(Transport::WebSocket);
            })?;
        }
        Ok(())
    }

    fn not_permitted(&self, action: &'static str, topic: &str) -> Error {
        self.node
            .metrics()
            .record_permission_denied(Transport::WebSocket);
        Error::NotPermitted {
            action,
            topic: topic.to_owned(),
        }
    }

    /// Puts a new token in force: on success its permissions and expiry
    /// replace the old ones, and subscriptions it does not allow end, each
    /// with an `info` `permission_revoked` notice naming the topic, ahead of
    /// the ack. On failure the old token stays.
    fn reauthenticate(
        &mut self,
        token: &str,
        request_id: Option<&str>,
    ) -> Result<Option<Bytes>, Error> {
        let grant = self.node.auth().token(token).inspect_err(|why| {
            self.node.metrics().record_auth_failure();
            tracing::debug!(conn = self.id, %why, "token refresh refused");
        })?;
        self.arm_expiry(&grant);
        self.registration.set_subject(grant.subject);
        self.permissions = grant.permissions;
        let id = self.id;
        let (permissions, outbox) = (&self.permissions, &self.outbox);
        self.subscriptions.retain(|topic| {
            let allowed = permissions.may_subscribe(topic.name());
            if !allowed {
                topic.unsubscribe(id);
                outbox.push_held_reply(reply::info(Some(topic.name()), "permission_revoked"));
            }
            allowed
        });
        Ok(Some(reply::auth_ack(request_id)))
    }

    /// The ack is queued as the topic says where the subscription joined,
    /// ahead of the replay.
    async fn subscribe(
        &mut self,
        name: &str,
        client_id: Option<&str>,
        replay: Replay<'_>,
        request_id: Option<&str>,
    ) -> Result<Option<Bytes>, Error> {
        if !self.permissions.may_subscribe(name) {
            return Err(self.not_permitted("subscribing to", name));
        }
        let topic = self.node.topic(name).await?;
        self.check_subscription_limit(name)?;
        let outbox = &self.outbox;
        let acked = |joined: Joined<'_>| {
            outbox.push_reply(reply::subscribe_ack(
                request_id,
                joined.topic,
                joined.seq,
                joined.epoch,
                joined.recovered,
            ))
        };
        if !topic.subscribe(self.id, outbox, client_id, replay, acked) {
            return Err(BrokerError::TopicNotFound(name.to_owned()).into());
        }
        if let Some(previous) = self.subscriptions.insert(topic.clone()) {
            if !Arc::ptr_eq(&previous, &topic) {
                previous.unsubscribe(self.id);
            }
        }
        Ok(None)
    }

    /// A new subscription must fit `MAX_SUBSCRIPTIONS_PER_CONNECTION`;
    /// subscriptions that ended without the client (a deleted topic, a
    /// server-API unsubscribe) do not count.
    fn check_subscription_limit(&mut self, name: &str) -> Result<(), Error> {
        let limit = self.node.config().max_subscriptions_per_connection as usize;
        if self.subscriptions.len() < limit || self.subscriptions.contains(name) {
            return Ok(());
        }
        let id = self.id;
        self.subscriptions.retain(|topic| topic.has_subscriber(id));
        if self.subscriptions.len() < limit {
            return Ok(());
        }
        Err(Error::TooManySubscriptions(limit))
    }

    async fn unsubscribe(
        &mut self,
        name: &str,
        request_id: Option<&str>,
    ) -> Result<Option<Bytes>, Error> {
        let topic = self.node.topic(name).await?;
        topic.unsubscribe(self.id);
        self.subscriptions.remove(name);
        Ok(Some(reply::ack(request_id, name)))
    }
}

/// Resolves when the token in force expires; never without one.
async fn expired(expiry: &mut Option<Pin<Box<Sleep>>>) {
    match expiry {
        Some(timer) => timer.await,
        None => std::future::pending().await,
    }
}

impl MessageHandler for Session {
    async fn on_message(&mut self, mut message: frame_reader::Message) {
        self.handle_message(&mut message.data).await;
    }

    /// A publish the backplane has answered, or the token's expiry.
    async fn interrupted(&mut self) -> Option<CloseReason> {
        tokio::select! {
            biased;
            Some(reply) = self.pending_publishes.next() => {
                self.outbox.push_reply(reply);
                None
            }
            () = expired(&mut self.expiry) => {
                self.node.metrics().record_token_expired();
                Some(CloseReason::TokenExpired)
            }
        }
    }

    /// Cluster mode: not while `MAX_PENDING_PUBLISHES` wait for the
    /// backplane.
    fn may_read(&self) -> bool {
        self.pending_publishes.len() < MAX_PENDING_PUBLISHES
    }

    /// A publisher whose fan-out found writers behind waits for them.
    async fn after_frame(&mut self) {
        if !self.lagging.is_empty() {
            self.node.metrics().record_publisher_pause();
            std::mem::take(&mut self.lagging).wait().await;
        }
    }

    async fn closing(&mut self) {
        self.answer_pending_publishes().await;
    }
}

impl Drop for Session {
    /// Leaves every topic, however the connection ends, panics included.
    fn drop(&mut self) {
        for topic in self.subscriptions.iter() {
            topic.unsubscribe(self.id);
        }
    }
}
