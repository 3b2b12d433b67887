//! `Rest`: one REST request from its arrival to its response — allowed
//! origins, credentials, the route and what the token permits, the
//! handler, CORS headers — with what only REST keeps beside the node: its
//! publish rate limits, CORS origins and the metrics registry.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::auth::{self, Grant, Origins};
use crate::error::Error;
use crate::http::handlers::{self, Reply};
use crate::http::prometheus::{self, Exposition};
use crate::http::response::{allow_response, error_response, typed_response, Body};
use crate::http::routes::{is_read, Route};
use crate::http::{api_docs, cors, server_api};
use crate::metrics::Transport;
use crate::node::Node;
use crate::presence::Query;
use crate::rate_limit::{LimitKey, RestLimits};
use crate::wire::error::ErrorCode;

pub struct Rest {
    node: Arc<Node>,
    /// `CORS_ALLOWED_ORIGINS`.
    cors: Origins,
    /// `PUBLISH_RATE_LIMIT`'s REST buckets, per credential or peer.
    publish_limits: Option<RestLimits>,
    /// What `GET /metrics` renders.
    exposition: Exposition,
}

impl Rest {
    pub fn new(node: Arc<Node>) -> Self {
        let config = node.config();
        Self {
            cors: Origins::new(&config.cors_allowed_origins),
            publish_limits: node.publish_limit().map(RestLimits::new),
            exposition: Exposition::new(node.clone()),
            node,
        }
    }

    /// Routes and answers one REST request from `peer`, with CORS headers
    /// when `CORS_ALLOWED_ORIGINS` is set.
    pub async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let cors = cors::inspect(&self.cors, &request);
        let mut response = self
            .route(request, peer)
            .await
            .unwrap_or_else(|error| error_response(&error));
        if let Some(cors) = cors {
            cors.apply(&mut response);
        }
        response
    }

    async fn route(&self, request: Request<Incoming>, peer: SocketAddr) -> Reply {
        let node = &*self.node;
        if !node.origin_allowed(&request) {
            return Err(Error::ForbiddenOrigin(
                "this origin may not use the API (see ALLOWED_ORIGINS)",
            ));
        }
        let route = Route::parse(request.uri().path());
        let method = request.method().clone();
        let public = route.as_ref().is_ok_and(|route| route.is_public(&method));
        // Before a 404 too, so a client without a key learns nothing of the routes.
        let grant = if public {
            None
        } else {
            Some(self.authenticate(&request, route.as_ref().ok(), peer)?)
        };
        let route = route?;
        if let Some(grant) = &grant {
            if !route.permits(&method, &grant.permissions) {
                node.metrics().record_permission_denied(Transport::Rest);
                if matches!(route, Route::TopicMessages(_)) && method == Method::POST {
                    node.metrics().record_publish_error(ErrorCode::Forbidden);
                }
                return Err(Error::Forbidden);
            }
        }
        match (route, method) {
            (route, Method::OPTIONS) => Ok(allow_response(route.spec().allow())),
            (Route::Health, method) if is_read(&method) => Ok(handlers::health(node)),
            (Route::Stats, method) if is_read(&method) => Ok(handlers::stats(node)),
            (Route::Metrics, method) if is_read(&method) => Ok(typed_response(
                prometheus::CONTENT_TYPE,
                self.exposition.render(),
            )),
            (Route::OpenApi, method) if is_read(&method) => {
                Ok(typed_response("application/json", api_docs::OPENAPI))
            }
            (Route::AsyncApi, method) if is_read(&method) => {
                Ok(typed_response("application/json", api_docs::ASYNCAPI))
            }
            (Route::Topics, method) if is_read(&method) => Ok(handlers::list_topics(node)),
            (Route::Topics, Method::POST) => handlers::create_topic(node, request).await,
            (Route::Topic(name), method) if is_read(&method) => handlers::topic(node, &name).await,
            (Route::Topic(name), Method::DELETE) => handlers::delete_topic(node, &name).await,
            (Route::TopicMessages(name), method) if is_read(&method) => {
                handlers::history(node, &name, request.uri().query()).await
            }
            (Route::TopicMessages(name), Method::POST) => {
                let limit = self.publish_limit(grant.as_ref(), peer);
                handlers::publish(node, limit, &name, request)
                    .await
                    .inspect_err(|error| node.metrics().record_publish_error(error.code()))
            }
            (Route::Broadcast, Method::POST) => {
                let limit = self.publish_limit(grant.as_ref(), peer);
                handlers::broadcast(node, limit, request).await
            }
            (Route::TopicSubscribers(name), method) if is_read(&method) => {
                handlers::presence(node, Query::Subscribers(name)).await
            }
            (Route::Subscriptions, method) if is_read(&method) => {
                handlers::presence(node, Query::Subscriptions).await
            }
            (Route::Sse, method) if is_read(&method) => {
                let grant = grant.expect("a stream is never public");
                handlers::event_stream(&self.node, &request, &grant, peer).await
            }
            (Route::Disconnect, Method::POST) => server_api::disconnect(node, request).await,
            (Route::Unsubscribe, Method::POST) => server_api::unsubscribe(node, request).await,
            (Route::Page(page), method) if is_read(&method) => Ok(page.response(request.headers())),
            (route, _) => Err(Error::MethodNotAllowed(route.spec().allow())),
        }
    }

    /// The `PUBLISH_RATE_LIMIT` bucket a publish request takes from, if set.
    fn publish_limit(
        &self,
        grant: Option<&Grant>,
        peer: SocketAddr,
    ) -> Option<(&RestLimits, LimitKey)> {
        self.publish_limits
            .as_ref()
            .map(|limits| (limits, rate_limit_key(grant, peer)))
    }

    /// The request's credential. A page is opened from the address bar,
    /// and `EventSource` opens a stream, neither able to send a header:
    /// both take the credential in the query too, as the upgrade does.
    fn authenticate(
        &self,
        request: &Request<Incoming>,
        route: Option<&Route>,
        peer: SocketAddr,
    ) -> Result<Grant, Error> {
        let node = &*self.node;
        let (authenticated, hint) = match route {
            Some(Route::Page(_)) => (
                node.auth().upgrade(request),
                ": open the page as ?api_key=<key>",
            ),
            Some(Route::Sse) => (node.auth().upgrade(request), ""),
            _ => (node.auth().rest(request), ""),
        };
        authenticated.map_err(|why| {
            auth::record_failure(node.metrics(), peer, request.uri().path(), &why);
            Error::Unauthorized(format!("{why}{hint}"))
        })
    }
}

/// Whose bucket a REST publish takes from: the credential's, or without
/// authentication the peer address's.
fn rate_limit_key(grant: Option<&Grant>, peer: SocketAddr) -> LimitKey {
    match grant.and_then(|grant| grant.credential) {
        Some(credential) => LimitKey::Credential(credential),
        None => LimitKey::Peer(peer.ip()),
    }
}
