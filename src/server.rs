//! The listener: one hyper service on one port for REST and the WebSocket
//! upgrade, and graceful shutdown.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::error::Error;
use crate::http::response::error_response;
use crate::http::service::Rest;
use crate::metrics::ConnectionGuard;
use crate::node::{Node, StartupFailure};
use crate::send::deadline::WriteDeadline;
use crate::shutdown::Shutdown;
use crate::ws;

/// Pause after a failed accept (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A bound, not yet running, broker.
pub struct Server {
    listener: TcpListener,
    node: Arc<Node>,
    rest: Arc<Rest>,
    /// A WebSocket endpoint of the embedder's, if any.
    route: Option<ws::Route>,
}

impl Server {
    /// Binds the configured address (port 0 picks a free port).
    /// In cluster mode the node starts connecting to NATS too, without
    /// waiting for it.
    pub async fn bind(config: Config) -> io::Result<Self> {
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        let node = Arc::new(Node::start(config).await?);
        Ok(Self {
            listener,
            rest: Arc::new(Rest::new(node.clone())),
            node,
            route: None,
        })
    }

    /// Also upgrades WebSocket requests at the route's path (`/ws` stays
    /// the broker's), to connections with the route's message handler.
    pub fn route(self, route: ws::Route) -> Self {
        Self {
            route: Some(route),
            ..self
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Set if the node stopped on its own because it could not start (in
    /// cluster mode, a backplane it cannot set up as configured).
    pub fn startup_failure(&self) -> StartupFailure {
        self.node.startup_failure().clone()
    }

    /// `begin` on this handle shuts the server down gracefully.
    pub fn shutdown(&self) -> Shutdown {
        self.node.shutdown().clone()
    }

    /// Serves until the shutdown token is cancelled, then stops accepting
    /// connections and publishes, lets every connection flush its queue and
    /// close with 1001 within `SHUTDOWN_TIMEOUT`, and returns.
    pub async fn run(self) {
        let Self {
            listener,
            node,
            rest,
            route,
        } = self;
        let config = node.config();
        tracing::info!(
            addr = %listener.local_addr().map_or_else(|err| err.to_string(), |addr| addr.to_string()),
            subscriber_queue_size = config.subscriber_queue_size,
            slow_consumer_policy = %config.slow_consumer_policy,
            ring_buffer_size = config.ring_buffer_size,
            heartbeat_interval = ?config.heartbeat_interval,
            max_message_size = config.max_message_size,
            shutdown_timeout = ?config.shutdown_timeout,
            auth = node.auth().enabled(),
            publish_rate_limit = ?config.publish_rate_limit,
            cluster = config.cluster_nats_url.as_deref().unwrap_or("off"),
            "ringcast listening"
        );
        node.follow_backplane();
        let max = u64::from(config.max_http_connections);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match node.metrics().try_open_http_connection(max) {
                        Some(slot) => node.spawn_connection(
                            "http connection",
                            serve_http(stream, peer, slot, node.clone(), rest.clone(), route.clone()),
                        ),
                        None => {
                            tracing::warn!(%peer, max, "HTTP connection limit reached; connection refused");
                            node.spawn_connection("refused connection", refuse_http(stream));
                        }
                    },
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                _ = node.shutdown().begun() => break,
            }
        }
        drop(listener);
        node.drain().await;
        tracing::info!("shutdown complete");
    }
}

/// Serves one HTTP/1.1 connection, holding its `MAX_HTTP_CONNECTIONS` slot
/// until it closes or is upgraded; an upgrade hands the socket to `ws`.
async fn serve_http(
    stream: TcpStream,
    peer: SocketAddr,
    _slot: ConnectionGuard,
    node: Arc<Node>,
    rest: Arc<Rest>,
    route: Option<ws::Route>,
) {
    // Small event frames must not wait for Nagle's algorithm.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "could not set TCP_NODELAY");
    }
    let service = service_fn(|request: Request<Incoming>| {
        let (node, rest, route) = (node.clone(), rest.clone(), route.clone());
        async move {
            let path = request.uri().path();
            Ok::<_, Infallible>(if path == "/ws" {
                ws::upgrade(node, request, peer)
            } else if let Some(route) = route.filter(|route| route.path() == path) {
                route.upgrade(node, request, peer)
            } else {
                rest.handle(request, peer).await
            })
        }
    });
    // A peer that stops reading cannot hold a response (an event stream
    // above all) for ever.
    let stream = WriteDeadline::new(stream, node.config().write_timeout);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(node.config().upgrade_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = node.shutdown().begun() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "http connection error");
    }
}

/// How long a connection over `MAX_HTTP_CONNECTIONS` may take to send the
/// request it is refused.
const REFUSED_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers one request on a connection over `MAX_HTTP_CONNECTIONS` with
/// 503 `TOO_MANY_CONNECTIONS`, then closes it. The request is read first,
/// so the client gets the answer rather than a reset, and only briefly, so
/// refused connections cannot pile up.
async fn refuse_http(stream: TcpStream) {
    let service = service_fn(|_request: Request<Incoming>| async {
        let mut response = error_response(&Error::TooManyConnections(
            "this node holds its maximum of HTTP connections (MAX_HTTP_CONNECTIONS)".into(),
        ));
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(response)
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSED_REQUEST_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, "refused http connection error");
    }
}
