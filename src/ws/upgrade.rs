//! The WebSocket handshake: auth, origin, limits and the upgrade headers
//! are checked before a connection task is started.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::OptionFuture;
use futures_util::FutureExt;
use hyper::header::{
    HeaderValue, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION,
};
use hyper::{Method, Request, Response, Version};

use crate::auth::{self, Grant};
use crate::broker::{BrokerError, ConnectionId};
use crate::config::Compression;
use crate::error::Error;
use crate::http::response::{error_response, Body};
use crate::metrics::UpgradeRefusal;
use crate::node::Node;
use crate::send::event::Deflate;
use crate::send::outbox::Outbox;
use crate::wire::permessage_deflate;
use crate::ws::connection::{start, Accepted};
use crate::ws::handler::MessageHandler;
use crate::ws::session::Session;

/// The one subprotocol ringcast speaks, selected when a client offers it.
/// An offer without it is answered with no subprotocol, which the RFC lets
/// the client refuse (browsers do): ringcast.v1 is the protocol either way.
const SUBPROTOCOL: &str = "ringcast.v1";

/// Answers `GET /ws`: checks auth and the upgrade headers, then hands the
/// upgraded socket to a new connection task, whose messages go to the
/// broker's session.
pub fn upgrade(
    node: Arc<Node>,
    request: Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let session_node = node.clone();
    upgrade_with(node, request, peer, move |id, grant, outbox| {
        Session::new(id, session_node, outbox, grant)
    })
}

/// Answers a WebSocket upgrade as [`upgrade`] does, for connections whose
/// messages go to the handler `make_handler` makes for each of them.
pub(super) fn upgrade_with<H: MessageHandler + 'static>(
    node: Arc<Node>,
    mut request: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    make_handler: impl FnOnce(ConnectionId, Grant, Arc<Outbox>) -> H + Send + 'static,
) -> Response<Body> {
    let refuse = |why: UpgradeRefusal, error: Error| {
        node.metrics().record_upgrade_refused(why);
        error_response(&error)
    };
    let grant = match node.auth().upgrade(&request) {
        Ok(grant) => grant,
        Err(why) => {
            auth::record_failure(node.metrics(), peer, request.uri().path(), &why);
            return refuse(UpgradeRefusal::Unauthorized, why.into());
        }
    };
    if !node.origin_allowed(&request) {
        return refuse(
            UpgradeRefusal::ForbiddenOrigin,
            Error::ForbiddenOrigin("this origin may not open a WebSocket (see ALLOWED_ORIGINS)"),
        );
    }
    if node.shutdown().is_begun() {
        return refuse(
            UpgradeRefusal::ShuttingDown,
            BrokerError::ShuttingDown.into(),
        );
    }
    if let Some((why, error)) = refuse_handshake(&request) {
        return refuse(why, error);
    }
    let max_connections = u64::from(node.config().max_connections);
    let Some(slot) = node.metrics().try_open_connection(max_connections) else {
        tracing::warn!(%peer, max_connections, "connection limit reached; upgrade refused");
        return refuse(
            UpgradeRefusal::TooManyConnections,
            Error::TooManyConnections(format!(
                "this node holds its maximum of {max_connections} WebSocket connections (MAX_CONNECTIONS)"
            )),
        );
    };
    let (mut response, upgrading) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(accepted) => accepted,
        Err(err) => {
            return refuse(
                UpgradeRefusal::BadHandshake,
                Error::BadRequest(err.to_string()),
            );
        }
    };
    if offers_subprotocol(&request) {
        response.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    let deflate = negotiate_deflate(&node, &request);
    if let Some(deflate) = &deflate {
        let answer = HeaderValue::try_from(deflate.agreed.response()).expect("ASCII");
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_EXTENSIONS, answer);
    }
    // Boxed until the upgrade completes: what a task captures stays in it
    // for its whole life, and this is used once.
    let accepted = Box::new(Accepted {
        node: node.clone(),
        peer,
        deflate,
        slot,
        make_handler: move |id, outbox| make_handler(id, grant, outbox),
    });
    // A combinator, not an async block: the upgrade's future and the
    // connection's then share their room in the task instead of each
    // keeping its own.
    let task = upgrading.then(move |upgraded| {
        OptionFuture::from(match upgraded {
            Ok(socket) => start(socket.into_inner(), accepted),
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                None
            }
        })
        .map(drop)
    });
    node.spawn_connection("websocket connection", task);
    response.map(|_| Body::default())
}

/// `permessage-deflate` as agreed with a client that offers it, unless
/// `COMPRESSION=off` (see `permessage_deflate` for the rules).
fn negotiate_deflate<B>(node: &Node, request: &Request<B>) -> Option<Deflate> {
    let config = node.config();
    if config.compression == Compression::Off {
        return None;
    }
    let offers = request.headers().get_all(SEC_WEBSOCKET_EXTENSIONS);
    let agreed = permessage_deflate::negotiate(offers.iter().map(HeaderValue::as_bytes))?;
    Some(Deflate {
        agreed,
        min_bytes: config.compression_min_bytes,
        metrics: node.metrics().clone(),
    })
}

/// Why a request is not a WebSocket handshake ringcast can accept (RFC 6455
/// §4.2.1), if it is not.
fn refuse_handshake<B>(request: &Request<B>) -> Option<(UpgradeRefusal, Error)> {
    if !fastwebsockets::upgrade::is_upgrade_request(request) {
        let error = Error::UpgradeRequired("/ws expects a WebSocket upgrade request");
        return Some((UpgradeRefusal::NotAnUpgrade, error));
    }
    // Otherwise hyper answers 101 and then drops the connection.
    if request.method() != Method::GET || request.version() < Version::HTTP_11 {
        let error = Error::BadRequest("a WebSocket upgrade is a GET over HTTP/1.1".into());
        return Some((UpgradeRefusal::BadHandshake, error));
    }
    if request.headers().get(SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Some((
            UpgradeRefusal::BadHandshake,
            Error::UnsupportedWebSocketVersion,
        ));
    }
    None
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
