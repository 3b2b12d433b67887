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
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::ConnectionGuard;
use crate::state::AppState;
use crate::{rest, ws};

/// Pause after a failed accept (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A bound, not yet running, broker.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Binds the configured address (port 0 picks a free port).
    /// In cluster mode the node starts connecting to NATS too, without
    /// waiting for it.
    pub async fn bind(config: Config) -> io::Result<Self> {
        let auth = Authenticator::new(&config)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        let cluster = match &config.cluster_nats_url {
            Some(url) => Some(
                Cluster::connect(
                    url,
                    config.ring_buffer_size as usize,
                    config.cluster_purge_delay,
                    config.cluster_presence_timeout,
                )
                .await
                .map_err(|err| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("CLUSTER_NATS_URL: {err}"),
                    )
                })?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            state: Arc::new(AppState::new(config, cluster, auth)),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Cancelling this token shuts the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then stops accepting
    /// connections and publishes, lets every connection flush its queue and
    /// close with 1001 within `SHUTDOWN_TIMEOUT`, and returns.
    pub async fn run(self) {
        let Self { listener, state } = self;
        let config = &state.config;
        tracing::info!(
            addr = %listener.local_addr().map_or_else(|err| err.to_string(), |addr| addr.to_string()),
            subscriber_queue_size = config.subscriber_queue_size,
            slow_consumer_policy = %config.slow_consumer_policy,
            ring_buffer_size = config.ring_buffer_size,
            heartbeat_interval = ?config.heartbeat_interval,
            max_message_size = config.max_message_size,
            shutdown_timeout = ?config.shutdown_timeout,
            auth = state.auth.enabled(),
            publish_rate_limit = ?config.publish_rate_limit,
            cluster = config.cluster_nats_url.as_deref().unwrap_or("off"),
            "ringcast listening"
        );
        if let Some(cluster) = &state.cluster {
            let follow = cluster
                .clone()
                .follow(state.broker.clone(), state.draining.clone());
            tokio::spawn(state.contain_panic("cluster follower", follow));
        }
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let max = u64::from(config.max_http_connections);
                        match state.metrics.try_open_http_connection(max) {
                            Some(slot) => state.spawn_connection(
                                "http connection",
                                serve_http(stream, peer, slot, state.clone()),
                            ),
                            None => {
                                tracing::warn!(%peer, max, "HTTP connection limit reached; connection refused");
                                state.spawn_connection("refused connection", refuse_http(stream));
                            }
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                _ = state.shutdown.cancelled() => break,
            }
        }
        drop(listener);
        // Publishes stop before connections drain, so every publish that
        // was acknowledged is in the queues being flushed.
        state.broker.stop_publishes();
        state.draining.cancel();
        state.tasks.close();
        tracing::info!(
            connections = state.metrics.snapshot().connections,
            "shutting down"
        );
        // Off the node list at once, so that presence stops expecting this
        // node's answers, while the connections drain.
        let leave = async {
            if let Some(cluster) = &state.cluster {
                cluster.leave().await;
            }
        };
        let drained = tokio::time::timeout(config.shutdown_timeout, state.tasks.wait());
        if tokio::join!(leave, drained).1.is_err() {
            tracing::warn!(
                connections = state.metrics.snapshot().connections,
                "shutdown timeout reached; dropping remaining connections"
            );
        }
        tracing::info!("shutdown complete");
    }
}

/// Serves one HTTP/1.1 connection, holding its `MAX_HTTP_CONNECTIONS` slot
/// until it closes or is upgraded; an upgrade hands the socket to `ws`.
async fn serve_http(
    stream: TcpStream,
    peer: SocketAddr,
    _slot: ConnectionGuard,
    state: Arc<AppState>,
) {
    // Small event frames must not wait for Nagle's algorithm.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "could not set TCP_NODELAY");
    }
    let service = service_fn(|request: Request<Incoming>| {
        let state = state.clone();
        async move {
            Ok::<_, Infallible>(if request.uri().path() == "/ws" {
                ws::upgrade(state, request, peer)
            } else {
                rest::handle(&state, request, peer).await
            })
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.upgrade_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = state.shutdown.cancelled() => {
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
        let mut response = rest::too_many_connections(
            "this node holds its maximum of HTTP connections (MAX_HTTP_CONNECTIONS)",
        );
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

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
