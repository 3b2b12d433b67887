//! A WebSocket endpoint of the embedder's: upgrades at its own path, whose
//! connections run exactly as `/ws` ones do (handshake checks, deflate,
//! frame reader, outbox, writer, close) but hand their messages to a
//! [`MessageHandler`] the embedder makes. The conformance echo
//! (`examples/autobahn_echo.rs`) is one.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::{Request, Response};

use crate::http::response::Body;
use crate::node::Node;
use crate::send::outbox::Outbox;
use crate::ws::handler::MessageHandler;
use crate::ws::upgrade::upgrade_with;

type Upgrade =
    dyn Fn(Arc<Node>, Request<hyper::body::Incoming>, SocketAddr) -> Response<Body> + Send + Sync;

/// Upgrades at `path` to connections whose messages go to a handler made
/// for each (see [`Server::route`](crate::Server::route)).
#[derive(Clone)]
pub struct Route {
    path: Arc<str>,
    upgrade: Arc<Upgrade>,
}

impl Route {
    /// Connections upgraded at `path` get the handler `make_handler`
    /// makes, given the connection's outbox.
    pub fn new<H: MessageHandler + 'static>(
        path: &str,
        make_handler: impl Fn(Arc<Outbox>) -> H + Send + Sync + 'static,
    ) -> Self {
        let make_handler = Arc::new(make_handler);
        Self {
            path: path.into(),
            upgrade: Arc::new(move |node, request, peer| {
                let make_handler = make_handler.clone();
                upgrade_with(node, request, peer, move |_, _, outbox| {
                    make_handler(outbox)
                })
            }),
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn upgrade(
        &self,
        node: Arc<Node>,
        request: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        (self.upgrade)(node, request, peer)
    }
}
