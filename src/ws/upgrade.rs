//! The WebSocket handshake: auth, origin, limits and the upgrade headers
//! are checked before a connection task is started.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::{Request, Response, StatusCode};

use crate::auth;
use crate::metrics::UpgradeRefusal;
use crate::rest::{error_response, Body};
use crate::state::AppState;

/// Answers `GET /ws`: checks auth and the upgrade headers, then hands the
/// upgraded socket to a new connection task.
pub fn upgrade(
    state: Arc<AppState>,
    mut request: Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let refuse = |why: UpgradeRefusal| state.metrics.record_upgrade_refused(why);
    if !state.api_keys.allows_upgrade(&request) {
        refuse(UpgradeRefusal::Unauthorized);
        auth::record_failure(&state.metrics, peer, request.uri().path());
        return error_response(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or invalid API key",
        );
    }
    if !state.allowed_origins.allows(&request) {
        refuse(UpgradeRefusal::ForbiddenOrigin);
        return error_response(
            StatusCode::FORBIDDEN,
            "FORBIDDEN_ORIGIN",
            "this origin may not open a WebSocket (see ALLOWED_ORIGINS)",
        );
    }
    if state.shutdown.is_cancelled() {
        refuse(UpgradeRefusal::ShuttingDown);
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "server is shutting down",
        );
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        refuse(UpgradeRefusal::NotAnUpgrade);
        return error_response(
            StatusCode::UPGRADE_REQUIRED,
            "BAD_REQUEST",
            "/ws expects a WebSocket upgrade request",
        );
    }
    let max_connections = u64::from(state.config.max_connections);
    let Some(slot) = state.metrics.try_open_connection(max_connections) else {
        refuse(UpgradeRefusal::TooManyConnections);
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
            refuse(UpgradeRefusal::BadHandshake);
            return error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", &err.to_string());
        }
    };
    state
        .clone()
        .spawn_connection("websocket connection", async move {
            let _slot = slot;
            match upgrading.await {
                Ok(socket) => super::run(socket.into_inner(), state, peer).await,
                Err(err) => tracing::debug!(error = %err, "upgrade failed"),
            }
        });
    response.map(|_| Body::default())
}
