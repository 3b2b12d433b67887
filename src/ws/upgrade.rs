//! The WebSocket handshake: auth, origin, limits and the upgrade headers
//! are checked before a connection task is started.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode, Version};

use crate::auth;
use crate::config::Compression;
use crate::metrics::UpgradeRefusal;
use crate::rest::{self, error_response, Body};
use crate::send::Deflate;
use crate::state::AppState;
use crate::wire::permessage_deflate;

/// The one subprotocol ringcast speaks, selected when a client offers it.
/// An offer without it is answered with no subprotocol, which the RFC lets
/// the client refuse (browsers do): ringcast.v1 is the protocol either way.
const SUBPROTOCOL: &str = "ringcast.v1";

/// Answers `GET /ws`: checks auth and the upgrade headers, then hands the
/// upgraded socket to a new connection task.
pub fn upgrade(
    state: Arc<AppState>,
    mut request: Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let refuse = |why: UpgradeRefusal| state.metrics.record_upgrade_refused(why);
    let grant = match state.auth.upgrade(&request) {
        Ok(grant) => grant,
        Err(why) => {
            refuse(UpgradeRefusal::Unauthorized);
            auth::record_failure(&state.metrics, peer, request.uri().path(), &why);
            return rest::unauthorized(&why.to_string());
        }
    };
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
    if let Some((why, response)) = refuse_handshake(&request) {
        refuse(why);
        return response;
    }
    let max_connections = u64::from(state.config.max_connections);
    let Some(slot) = state.metrics.try_open_connection(max_connections) else {
        refuse(UpgradeRefusal::TooManyConnections);
        tracing::warn!(%peer, max_connections, "connection limit reached; upgrade refused");
        return rest::too_many_connections(&format!(
            "this node holds its maximum of {max_connections} WebSocket connections (MAX_CONNECTIONS)"
        ));
    };
    let (mut response, upgrading) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(accepted) => accepted,
        Err(err) => {
            refuse(UpgradeRefusal::BadHandshake);
            return error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", &err.to_string());
        }
    };
    if offers_subprotocol(&request) {
        response.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    let deflate = negotiate_deflate(&state, &request);
    if let Some(deflate) = &deflate {
        let answer = HeaderValue::try_from(deflate.agreed.response()).expect("ASCII");
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_EXTENSIONS, answer);
    }
    state
        .clone()
        .spawn_connection("websocket connection", async move {
            let _slot = slot;
            match upgrading.await {
                Ok(socket) => {
                    super::connection::run(socket.into_inner(), state, peer, grant, deflate).await
                }
                Err(err) => tracing::debug!(error = %err, "upgrade failed"),
            }
        });
    response.map(|_| Body::default())
}

/// `permessage-deflate` as agreed with a client that offers it, unless
/// `COMPRESSION=off` (see `permessage_deflate` for the rules).
fn negotiate_deflate<B>(state: &AppState, request: &Request<B>) -> Option<Deflate> {
    if state.config.compression == Compression::Off {
        return None;
    }
    let offers = request.headers().get_all(SEC_WEBSOCKET_EXTENSIONS);
    let agreed = permessage_deflate::negotiate(offers.iter().map(HeaderValue::as_bytes))?;
    Some(Deflate {
        agreed,
        min_bytes: state.config.compression_min_bytes,
        metrics: state.metrics.clone(),
    })
}

/// The answer to a request that is not a WebSocket handshake ringcast can
/// accept (RFC 6455 §4.2.1), if it is not.
fn refuse_handshake<B>(request: &Request<B>) -> Option<(UpgradeRefusal, Response<Body>)> {
    if !fastwebsockets::upgrade::is_upgrade_request(request) {
        let response = upgrade_required("/ws expects a WebSocket upgrade request");
        return Some((UpgradeRefusal::NotAnUpgrade, response));
    }
    // Otherwise hyper answers 101 and then drops the connection.
    if request.method() != Method::GET || request.version() < Version::HTTP_11 {
        let response = error_response(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "a WebSocket upgrade is a GET over HTTP/1.1",
        );
        return Some((UpgradeRefusal::BadHandshake, response));
    }
    if request.headers().get(SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        // RFC 6455 §4.2.2: the refusal names the versions the server speaks.
        let mut response = upgrade_required("only WebSocket version 13 is supported");
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Some((UpgradeRefusal::BadHandshake, response));
    }
    None
}

/// 426 with the protocol to upgrade to, which RFC 9110 §15.5.22 requires.
fn upgrade_required(message: &str) -> Response<Body> {
    let mut response = error_response(StatusCode::UPGRADE_REQUIRED, "BAD_REQUEST", message);
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    response
}

/// Whether the client offers [`SUBPROTOCOL`]: `Sec-WebSocket-Protocol` is a
/// comma-separated list, possibly over several header lines, of tokens
/// compared case-sensitively (RFC 6455 §4.1, §11.3.4).
fn offers_subprotocol<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .any(|token| token.trim_ascii() == SUBPROTOCOL.as_bytes())
}
