//! WebSocket `/ws`: the upgrade, and per connection a reader that turns
//! client frames into broker calls and a writer task that drains the
//! connection's outbox into vectored writes.
//!
//! The socket is split into owned halves, so reading and writing never share
//! a lock; the reader and writer meet only at the outbox. Frames are read by
//! [`crate::frame_reader`] and written by [`crate::frame_writer`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

use crate::broker::{BrokerError, ConnectionId, Topic};
use crate::frame_reader::{self, FrameDecoder, Incoming};
use crate::frame_writer::FrameWriter;
use crate::outbox::{CloseReason, Outbox};
use crate::protocol::{self, ClientFrame, ErrorCode, Message, Request as ClientRequest};
use crate::rest::{error_response, Body};
use crate::state::{AppState, Publication};

/// How long the last frames (an error, the close frame) may take to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Answers `GET /ws`: checks auth and the upgrade headers, then hands the
/// upgraded socket to a new connection task.
pub fn upgrade(
    state: Arc<AppState>,
    mut request: Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    if !state.api_keys.allows_upgrade(&request) {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or invalid API key",
        );
    }
    if !state.allowed_origins.allows(&request) {
        return error_response(
            StatusCode::FORBIDDEN,
            "FORBIDDEN_ORIGIN",
            "this origin may not open a WebSocket (see ALLOWED_ORIGINS)",
        );
    }
    if state.shutdown.is_cancelled() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "server is shutting down",
        );
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        return error_response(
            StatusCode::UPGRADE_REQUIRED,
            "BAD_REQUEST",
            "/ws expects a WebSocket upgrade request",
        );
    }
    let max_connections = u64::from(state.config.max_connections);
    let Some(slot) = state.metrics.try_open_connection(max_connections) else {
        tracing::warn!(%peer, max_connections, "connection limit reached; upgrade refused");
        let mut response = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_CONNECTIONS",
            &format!("this node holds its maximum of {max_connections} connections"),
        );
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
        return response;
    };
    let (response, upgrading) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(accepted) => accepted,
        Err(err) => {
            return error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", &err.to_string())
        }
    };
    state
        .clone()
        .spawn_connection("websocket connection", async move {
            let _slot = slot;
            match upgrading.await {
                Ok(socket) => run(socket.into_inner(), state, peer).await,
                Err(err) => tracing::debug!(error = %err, "upgrade failed"),
            }
        });
    response.map(|_| Body::default())
}

async fn run(io: TokioIo<hyper::upgrade::Upgraded>, state: Arc<AppState>, peer: SocketAddr) {
    // Owned halves of the TCP stream instead of a locked split; bytes hyper
    // read past the upgrade request are decoded first.
    match io.into_inner().downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (reader, writer) = parts.io.into_inner().into_split();
            let decoder =
                FrameDecoder::new(&parts.read_buf, state.config.max_message_size as usize);
            // The leftover bytes share hyper's whole read buffer: let it go.
            drop(parts.read_buf);
            serve(reader, decoder, writer, state, peer).await;
        }
        Err(_) => tracing::error!("upgraded connection is not a TCP stream"),
    }
}

/// Runs one connection until it closes.
async fn serve(
    reader: OwnedReadHalf,
    decoder: FrameDecoder,
    writer: OwnedWriteHalf,
    state: Arc<AppState>,
    peer: SocketAddr,
) {
    let config = &state.config;
    let outbox = Arc::new(Outbox::new(
        config.subscriber_queue_size as usize,
        config.slow_consumer_policy,
    ));
    let liveness = Arc::new(Liveness::new());
    let writer = write_loop(
        FrameWriter::new(writer),
        outbox.clone(),
        liveness.clone(),
        WriterTiming {
            heartbeat: config.heartbeat_interval,
            coalesce_window: config.coalesce_window,
        },
        state.draining.clone(),
    );
    let writer = tokio::spawn(state.contain_panic("connection writer", writer).map({
        let outbox = outbox.clone();
        // The reader must stop too, or the connection would linger
        // half-alive.
        move |reason| {
            reason.unwrap_or_else(|| {
                outbox.close(CloseReason::ConnectionLost);
                CloseReason::ConnectionLost
            })
        }
    }));
    let mut session = Session {
        id: state.next_connection_id(),
        outbox: outbox.clone(),
        subscriptions: HashMap::new(),
        pending_publishes: FuturesOrdered::new(),
        state: state.clone(),
    };
    let id = session.id;
    tracing::info!(conn = id, %peer, "connection opened");
    tokio::select! {
        reason = session.read_loop(&reader, decoder, &liveness) => outbox.close(reason),
        _ = outbox.closed() => {}
    }
    drop(session);
    let reason = writer.await.unwrap_or(CloseReason::ConnectionLost);
    if reason == CloseReason::SlowConsumer {
        tracing::warn!(conn = id, %peer, "slow consumer disconnected");
    }
    tracing::info!(conn = id, %peer, reason = reason.describe(), "connection closed");
}

/// When the peer was last heard from, for the heartbeat's silence check.
struct Liveness {
    epoch: Instant,
    last_seen_ms: AtomicU64,
}

impl Liveness {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
        }
    }

    fn heard_from_peer(&self) {
        self.last_seen_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last_seen = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last_seen)
    }
}

/// Why a client request was refused.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("subscription limit reached: a connection may hold at most {0} subscriptions")]
    TooManySubscriptions(usize),
}

impl RequestError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Broker(BrokerError::TopicNotFound(_)) => ErrorCode::TopicNotFound,
            Self::Broker(BrokerError::ShuttingDown | BrokerError::BackplaneUnavailable(_)) => {
                ErrorCode::Internal
            }
            Self::Broker(
                BrokerError::InvalidTopicName
                | BrokerError::TopicExists(_)
                | BrokerError::TopicLimit(_),
            )
            | Self::TooManySubscriptions(_) => ErrorCode::BadRequest,
        }
    }

    /// The `error` frame answering the request.
    fn reply(&self, request_id: Option<&str>) -> Bytes {
        protocol::error(request_id, self.code(), &self.to_string())
    }
}

/// Cluster mode: publishes one connection may have waiting for the
/// backplane to store them before it stops reading.
const MAX_PENDING_PUBLISHES: usize = 256;

/// The reader's side of a connection: its subscriptions and request handling.
struct Session {
    id: ConnectionId,
    outbox: Arc<Outbox>,
    subscriptions: HashMap<Box<str>, Arc<Topic>>,
    /// Cluster mode: the replies (ack or error) to publishes sent to the
    /// backplane, in the order they were sent.
    pending_publishes: FuturesOrdered<BoxFuture<'static, Bytes>>,
    state: Arc<AppState>,
}

impl Session {
    /// Reads frames until the connection should close, and says why.
    async fn read_loop(
        &mut self,
        reader: &OwnedReadHalf,
        mut decoder: FrameDecoder,
        liveness: &Liveness,
    ) -> CloseReason {
        // A connection that never completes a frame would otherwise hold a
        // slot until the heartbeat gives up on it.
        let mut first_frame_deadline = Some(self.state.config.first_frame_timeout);
        loop {
            let room_for_publishes = self.pending_publishes.len() < MAX_PENDING_PUBLISHES;
            let read = tokio::select! {
                biased;
                Some(reply) = self.pending_publishes.next() => {
                    self.outbox.push_control(reply);
                    continue;
                }
                // Cancel-safe: a frame read in part stays in the decoder.
                read = next_frame(reader, &mut decoder, &mut first_frame_deadline), if room_for_publishes => read,
            };
            let incoming = match read {
                Ok(incoming) => incoming,
                Err(reason) => return reason,
            };
            liveness.heard_from_peer();
            match incoming {
                Incoming::Message(mut message) => self.handle_message(&mut message).await,
                Incoming::Ping(payload) => self.outbox.push_control(protocol::pong_frame(&payload)),
                Incoming::Pong => {}
            }
            self.outbox.wait_for_room().await;
        }
    }

    async fn handle_message(&mut self, bytes: &mut [u8]) {
        match protocol::parse_client_frame(bytes) {
            Ok(frame) => self.dispatch(frame).await,
            Err(rejection) => self.outbox.push_control(protocol::error(
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
            ClientRequest::Subscribe { topic, last_n, .. } => {
                self.subscribe(topic, last_n, request_id).await
            }
            ClientRequest::Unsubscribe { topic, .. } => self.unsubscribe(topic, request_id).await,
            ClientRequest::Publish { topic, message } => {
                self.publish(topic, &message, request_id).await
            }
            ClientRequest::Ping => Ok(Some(protocol::pong(request_id))),
        };
        match reply {
            Ok(Some(frame)) => self.outbox.push_control(frame),
            Ok(None) => {}
            Err(err) => self.outbox.push_control(err.reply(request_id)),
        }
    }

    /// The ack goes out at once on a single node; in cluster mode once the
    /// backplane has stored the event, meanwhile reading on.
    async fn publish(
        &mut self,
        name: &str,
        message: &Message<'_>,
        request_id: Option<&str>,
    ) -> Result<Option<Bytes>, RequestError> {
        match self.state.publish(name, message).await? {
            Publication::Done(_) => Ok(Some(protocol::ack(request_id, name))),
            Publication::Pending(stored) => {
                let (name, request_id) = (name.to_owned(), request_id.map(str::to_owned));
                self.pending_publishes.push_back(
                    stored
                        .map(move |stored| match stored {
                            Ok(_) => protocol::ack(request_id.as_deref(), &name),
                            Err(err) => RequestError::from(err).reply(request_id.as_deref()),
                        })
                        .boxed(),
                );
                Ok(None)
            }
        }
    }

    /// The topic queues the ack itself, ahead of the replay.
    async fn subscribe(
        &mut self,
        name: &str,
        last_n: usize,
        request_id: Option<&str>,
    ) -> Result<Option<Bytes>, RequestError> {
        let topic = self.state.topic(name).await?;
        self.check_subscription_limit(name)?;
        if !topic.subscribe(
            self.id,
            &self.outbox,
            protocol::ack(request_id, name),
            last_n,
        ) {
            return Err(BrokerError::TopicNotFound(name.to_owned()).into());
        }
        if let Some(previous) = self.subscriptions.insert(name.into(), topic.clone()) {
            if !Arc::ptr_eq(&previous, &topic) {
                previous.unsubscribe(self.id);
            }
        }
        Ok(None)
    }

    /// A new subscription must fit `MAX_SUBSCRIPTIONS_PER_CONNECTION`;
    /// subscriptions to since-deleted topics do not count.
    fn check_subscription_limit(&mut self, name: &str) -> Result<(), RequestError> {
        let limit = self.state.config.max_subscriptions_per_connection as usize;
        if self.subscriptions.len() < limit || self.subscriptions.contains_key(name) {
            return Ok(());
        }
        self.subscriptions.retain(|_, topic| !topic.is_deleted());
        if self.subscriptions.len() < limit {
            return Ok(());
        }
        Err(RequestError::TooManySubscriptions(limit))
    }

    async fn unsubscribe(
        &mut self,
        name: &str,
        request_id: Option<&str>,
    ) -> Result<Option<Bytes>, RequestError> {
        let topic = self.state.topic(name).await?;
        topic.unsubscribe(self.id);
        self.subscriptions.remove(name);
        Ok(Some(protocol::ack(request_id, name)))
    }
}

/// The next frame from the client; the first one must come within
/// `first_frame_deadline`, which is used up by the first read.
async fn next_frame(
    reader: &OwnedReadHalf,
    decoder: &mut FrameDecoder,
    first_frame_deadline: &mut Option<Duration>,
) -> Result<Incoming, CloseReason> {
    let read = frame_reader::read_incoming(reader, decoder);
    match first_frame_deadline.take() {
        Some(deadline) => tokio::time::timeout(deadline, read)
            .await
            .unwrap_or(Err(CloseReason::FirstFrameTimeout)),
        None => read.await,
    }
}

impl Drop for Session {
    /// Leaves every topic however the connection ends, panics included.
    fn drop(&mut self) {
        for topic in self.subscriptions.values() {
            topic.unsubscribe(self.id);
        }
    }
}

/// When a connection's writer writes.
struct WriterTiming {
    /// Period of the heartbeat; also bounds how long a peer may stay silent.
    heartbeat: Duration,
    /// A connection whose queue ran dry less than this long ago is
    /// streaming: its writer lets frames gather until the window has passed
    /// (or the queue is half full), so a busy subscriber costs one syscall
    /// per window rather than one per event. A quiet connection's first
    /// frame goes out at once.
    coalesce_window: Duration,
}

/// The writer task: drains the outbox, sends heartbeats, and on close sends
/// the last frames. Returns why the connection closed.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    outbox: Arc<Outbox>,
    liveness: Arc<Liveness>,
    timing: WriterTiming,
    draining: tokio_util::sync::CancellationToken,
) -> CloseReason {
    let WriterTiming {
        heartbeat,
        coalesce_window,
    } = timing;
    // When the queue last ran dry; see `coalesce_window`.
    let mut drained_at: Option<Instant> = None;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Also bounds a flush on close: a peer that stopped reading and sending
    // is given up on after two intervals, whatever the close was for.
    let peer_alive_after_heartbeat = || {
        let alive = liveness.silent_for() < 2 * heartbeat;
        if alive {
            outbox.push_control(protocol::info(None, "ping"));
            outbox.push_control(protocol::ping_frame());
        }
        alive
    };
    let reason = loop {
        let closing = outbox.close_reason();
        if let Some(reason) = closing.filter(|reason| reason.abandons_queue()) {
            break reason;
        }
        if !writer.has_pending() {
            if let Some(reason) = writer.refill(&outbox) {
                if !writer.has_pending() || reason.abandons_queue() {
                    break reason;
                }
            }
        }
        if !writer.has_pending() {
            tokio::select! {
                _ = outbox.wait_for_frames() => {
                    let streaming_until = drained_at.map(|at| at + coalesce_window);
                    if let Some(until) = streaming_until.filter(|until| *until > Instant::now()) {
                        if !outbox.is_half_full() {
                            tokio::select! {
                                _ = tokio::time::sleep_until(until.into()) => {}
                                _ = outbox.wait_for_frames() => {}
                                _ = draining.cancelled() => {}
                            }
                        }
                    }
                }
                _ = ticker.tick() => if !peer_alive_after_heartbeat() {
                    break CloseReason::HeartbeatTimeout;
                },
                _ = draining.cancelled(), if closing.is_none() => outbox.close(CloseReason::ServerShutdown),
            }
        } else {
            tokio::select! {
                biased;
                _ = outbox.closed(), if closing.is_none() => {}
                _ = draining.cancelled(), if closing.is_none() => outbox.close(CloseReason::ServerShutdown),
                written = writer.write_some() => match written {
                    Ok(()) if !writer.has_pending() => drained_at = Some(Instant::now()),
                    Ok(()) => {}
                    Err(_) => break CloseReason::ConnectionLost,
                },
                _ = ticker.tick() => if !peer_alive_after_heartbeat() {
                    break CloseReason::HeartbeatTimeout;
                },
            }
        }
    };
    outbox.close(reason);
    if let Some(code) = reason.code() {
        if reason.abandons_queue() {
            writer.abandon_unstarted();
        }
        if reason == CloseReason::SlowConsumer {
            writer.push(protocol::error(
                None,
                ErrorCode::SlowConsumer,
                "subscriber queue overflowed",
            ));
        }
        writer.push(protocol::close_frame(code, reason.describe()));
        let _ = tokio::time::timeout(CLOSE_GRACE, writer.finish()).await;
    }
    reason
}
