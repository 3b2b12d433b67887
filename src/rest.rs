//! The REST API: topic management, publishing over HTTP, health, stats,
//! metrics and the API documents; and the routes of the browser pages in
//! [`crate::pages`].

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::auth::{self, Grant, Permissions};
use crate::broker::{is_valid_topic_name, BrokerError};
use crate::cluster::BackplaneState;
use crate::metrics::{Snapshot, Transport};
use crate::pages::{self, Page};
use crate::presence::{self, Answer, Query};
use crate::rate_limit::{LimitKey, RateLimited};
use crate::state::AppState;
use crate::wire::history::history_json;
use crate::wire::request::{parse_message_body, parse_topic_body};
use crate::{api_docs, prometheus};

/// Every response body: small and fully buffered.
pub type Body = Full<Bytes>;

#[derive(Serialize)]
struct TopicChange<'a> {
    status: &'static str,
    topic: &'a str,
}

#[derive(Serialize)]
struct Published<'a> {
    status: &'static str,
    topic: &'a str,
    seq: u64,
}

#[derive(Serialize)]
struct TopicList<'a> {
    topics: Vec<TopicRow<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterView>,
}

#[derive(Serialize)]
struct TopicRow<'a> {
    name: &'a str,
    subscribers: usize,
    messages: u64,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    uptime_sec: u64,
    topics: usize,
    subscribers: u64,
    connections: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterView>,
}

#[derive(Serialize)]
struct Stats<'a> {
    topics: BTreeMap<&'a str, TopicStats>,
    #[serde(flatten)]
    totals: Snapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterView>,
}

/// In cluster mode, beside the counts: the backplane's state, and which
/// counts cover the cluster and which only this node.
#[derive(Serialize)]
struct ClusterView {
    backplane: BackplaneState,
    scope: CountScopes,
}

#[derive(Serialize)]
struct CountScopes {
    topics: &'static str,
    messages: &'static str,
    subscribers: &'static str,
    connections: &'static str,
}

/// Every node mirrors the registry and fans out every event, so topics and
/// message counts are the cluster's; subscribers and connections are only
/// ever known to the node holding them.
const COUNT_SCOPES: CountScopes = CountScopes {
    topics: "cluster",
    messages: "cluster",
    subscribers: "node",
    connections: "node",
};

fn cluster_view(state: &AppState) -> Option<ClusterView> {
    state.cluster.as_ref().map(|cluster| ClusterView {
        backplane: cluster.state(),
        scope: COUNT_SCOPES,
    })
}

#[derive(Serialize)]
struct TopicStats {
    messages: u64,
    subscribers: usize,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// What a handler answers: a response, or a failure rendered as the
/// contract's JSON error.
type Reply = Result<Response<Body>, Failure>;

/// A failed request: its status, error code and message.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for `Retry-After`.
    retry_after: Option<u64>,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    fn method_not_allowed(allow: HeaderValue) -> Response<Body> {
        let mut response = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            format!(
                "method not allowed; this resource allows {}",
                allow.to_str().unwrap_or_default()
            ),
        )
        .into_response();
        response.headers_mut().insert(ALLOW, allow);
        response
    }

    fn into_response(self) -> Response<Body> {
        let mut response = error_response(self.status, self.code, &self.message);
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<BrokerError> for Failure {
    fn from(err: BrokerError) -> Self {
        let (status, code) = match err {
            BrokerError::InvalidTopicName => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            BrokerError::TopicExists(_) => (StatusCode::CONFLICT, "TOPIC_EXISTS"),
            BrokerError::TopicNotFound(_) => (StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"),
            BrokerError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "SHUTTING_DOWN"),
            BrokerError::TopicLimit(_) => (StatusCode::BAD_REQUEST, "TOPIC_LIMIT"),
            BrokerError::BackplaneUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "INTERNAL"),
        };
        Self::new(status, code, err.to_string())
    }
}

/// A REST resource as the OpenAPI document names it: its path template
/// and the methods it answers, besides `HEAD` (wherever `GET` is) and
/// `OPTIONS` (everywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub path: &'static str,
    pub methods: &'static [&'static str],
}

const HEALTH: RouteSpec = RouteSpec {
    path: "/health",
    methods: &["GET"],
};
const STATS: RouteSpec = RouteSpec {
    path: "/stats",
    methods: &["GET"],
};
const METRICS: RouteSpec = RouteSpec {
    path: "/metrics",
    methods: &["GET"],
};
const OPENAPI: RouteSpec = RouteSpec {
    path: "/openapi.json",
    methods: &["GET"],
};
const ASYNCAPI: RouteSpec = RouteSpec {
    path: "/asyncapi.json",
    methods: &["GET"],
};
const TOPICS: RouteSpec = RouteSpec {
    path: "/topics",
    methods: &["GET", "POST"],
};
const TOPIC: RouteSpec = RouteSpec {
    path: "/topics/{name}",
    methods: &["DELETE"],
};
const TOPIC_MESSAGES: RouteSpec = RouteSpec {
    path: "/topics/{name}/messages",
    methods: &["GET", "POST"],
};
const TOPIC_SUBSCRIBERS: RouteSpec = RouteSpec {
    path: "/topics/{name}/subscribers",
    methods: &["GET"],
};
const SUBSCRIPTIONS: RouteSpec = RouteSpec {
    path: "/subscriptions",
    methods: &["GET"],
};

/// Every REST resource the server answers (the WebSocket upgrade, `/ws`,
/// is in the AsyncAPI document instead). `tests/api_docs.rs` checks the
/// OpenAPI document lists exactly these, and the server answers each.
pub const ROUTES: [RouteSpec; 10] = [
    HEALTH,
    STATS,
    METRICS,
    OPENAPI,
    ASYNCAPI,
    TOPICS,
    TOPIC,
    TOPIC_MESSAGES,
    TOPIC_SUBSCRIBERS,
    SUBSCRIPTIONS,
];

impl RouteSpec {
    /// The `Allow` header's value: the methods, `HEAD` after `GET`, and
    /// `OPTIONS`.
    pub fn allow(&self) -> HeaderValue {
        let mut allow = Vec::with_capacity(self.methods.len() + 2);
        for method in self.methods {
            allow.push(*method);
            if *method == "GET" {
                allow.push("HEAD");
            }
        }
        allow.push("OPTIONS");
        HeaderValue::from_str(&allow.join(", ")).expect("method names are valid header text")
    }
}

/// The REST resources, with their path segments percent-decoded.
enum Route {
    Health,
    Stats,
    Metrics,
    OpenApi,
    AsyncApi,
    Topics,
    Topic(String),
    TopicMessages(String),
    TopicSubscribers(String),
    Subscriptions,
    Page(&'static Page),
}

impl Route {
    fn parse(path: &str) -> Result<Self, Failure> {
        let mut segments = Vec::new();
        for segment in path.trim_start_matches('/').split('/') {
            let decoded = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map_err(|_| Failure::bad_request("the path is not percent-encoded UTF-8"))?;
            segments.push(decoded);
        }
        let route = match segments.as_slice() {
            [health] if health == "health" => Self::Health,
            [stats] if stats == "stats" => Self::Stats,
            [metrics] if metrics == "metrics" => Self::Metrics,
            [openapi] if openapi == "openapi.json" => Self::OpenApi,
            [asyncapi] if asyncapi == "asyncapi.json" => Self::AsyncApi,
            [topics] if topics == "topics" => Self::Topics,
            [topics, name] if topics == "topics" => Self::Topic(name.to_string()),
            [topics, name, messages] if topics == "topics" && messages == "messages" => {
                Self::TopicMessages(name.to_string())
            }
            [topics, name, subscribers] if topics == "topics" && subscribers == "subscribers" => {
                Self::TopicSubscribers(name.to_string())
            }
            [subscriptions] if subscriptions == "subscriptions" => Self::Subscriptions,
            _ => match pages::find(path) {
                Some(page) => Self::Page(page),
                None => {
                    return Err(Failure::new(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        format!("no route for {path}"),
                    ))
                }
            },
        };
        Ok(route)
    }

    fn spec(&self) -> RouteSpec {
        match self {
            Self::Health => HEALTH,
            Self::Stats => STATS,
            Self::Metrics => METRICS,
            Self::OpenApi => OPENAPI,
            Self::AsyncApi => ASYNCAPI,
            Self::Topics => TOPICS,
            Self::Topic(_) => TOPIC,
            Self::TopicMessages(_) => TOPIC_MESSAGES,
            Self::TopicSubscribers(_) => TOPIC_SUBSCRIBERS,
            Self::Subscriptions => SUBSCRIPTIONS,
            Self::Page(page) => RouteSpec {
                path: page.path(),
                methods: &["GET"],
            },
        }
    }

    /// What anyone may ask without a key: health for load balancers, the
    /// pages' scripts and styles, and which methods exist (a browser's
    /// preflight carries no credentials).
    fn is_public(&self, method: &Method) -> bool {
        let public_read = match self {
            Self::Health => true,
            Self::Page(page) => page.is_public(),
            _ => false,
        };
        *method == Method::OPTIONS || public_read && is_read(method)
    }

    /// Whether a token's permissions allow the request (an API key's allow
    /// everything). Topic management, presence and the server-wide views
    /// need `admin`; publishing needs the topic in `publish`, reading its
    /// messages the topic in `subscribe`; the API documents and the pages
    /// need only a valid credential (the dashboard's data comes from
    /// `/stats` and `/topics`, which need `admin`).
    fn permits(&self, method: &Method, permissions: &Permissions) -> bool {
        match self {
            Self::Health | Self::OpenApi | Self::AsyncApi | Self::Page(_) => true,
            Self::Stats
            | Self::Metrics
            | Self::Topics
            | Self::Topic(_)
            | Self::TopicSubscribers(_)
            | Self::Subscriptions => permissions.is_admin(),
            Self::TopicMessages(name) if is_read(method) => permissions.may_subscribe(name),
            Self::TopicMessages(name) => permissions.may_publish(name),
        }
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

/// `HEAD` is answered as `GET`; hyper sends the headers without the body.
fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// Routes and answers one REST request from `peer`, with CORS headers
/// when `CORS_ALLOWED_ORIGINS` is set.
pub async fn handle(
    state: &AppState,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let cors = state.cors_origins.inspect(&request);
    let mut response = route(state, request, peer)
        .await
        .unwrap_or_else(Failure::into_response);
    if let Some(cors) = cors {
        cors.apply(&mut response);
    }
    response
}

async fn route(state: &AppState, request: Request<Incoming>, peer: SocketAddr) -> Reply {
    if !state.allowed_origins.allows(&request) {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN_ORIGIN",
            "this origin may not use the API (see ALLOWED_ORIGINS)",
        ));
    }
    let route = Route::parse(request.uri().path());
    let method = request.method().clone();
    let public = route.as_ref().is_ok_and(|route| route.is_public(&method));
    let grant = if public {
        None
    } else {
        // A page is opened from the address bar, which cannot send a header:
        // it takes the credential in the query too, as the upgrade does.
        let (authenticated, hint) = match &route {
            Ok(Route::Page(_)) => (
                state.auth.upgrade(&request),
                ": open the page as ?api_key=<key>",
            ),
            _ => (state.auth.rest(&request), ""),
        };
        // Before a 404 too, so a client without a key learns nothing of the routes.
        match authenticated {
            Ok(grant) => Some(grant),
            Err(why) => {
                auth::record_failure(&state.metrics, peer, request.uri().path(), &why);
                return Ok(unauthorized(&format!("{why}{hint}")));
            }
        }
    };
    let route = route?;
    if let Some(grant) = &grant {
        if !route.permits(&method, &grant.permissions) {
            state.metrics.record_permission_denied(Transport::Rest);
            if matches!(route, Route::TopicMessages(_)) && method == Method::POST {
                state.metrics.record_publish_error("FORBIDDEN");
            }
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "this token does not permit the request",
            ));
        }
    }
    match (route, method) {
        (route, Method::OPTIONS) => Ok(allow_response(route.spec().allow())),
        (Route::Health, method) if is_read(&method) => Ok(health(state)),
        (Route::Stats, method) if is_read(&method) => Ok(stats(state)),
        (Route::Metrics, method) if is_read(&method) => Ok(metrics(state)),
        (Route::OpenApi, method) if is_read(&method) => Ok(document(api_docs::OPENAPI)),
        (Route::AsyncApi, method) if is_read(&method) => Ok(document(api_docs::ASYNCAPI)),
        (Route::Topics, method) if is_read(&method) => Ok(list_topics(state)),
        (Route::Topics, Method::POST) => create_topic(state, request).await,
        (Route::Topic(name), Method::DELETE) => delete_topic(state, &name).await,
        (Route::TopicMessages(name), method) if is_read(&method) => {
            history(state, &name, request.uri().query()).await
        }
        (Route::TopicMessages(name), Method::POST) => {
            publish(state, &name, request, rate_limit_key(grant.as_ref(), peer))
                .await
                .inspect_err(|failure| state.metrics.record_publish_error(failure.code))
        }
        (Route::TopicSubscribers(name), method) if is_read(&method) => {
            presence(state, Query::Subscribers(name)).await
        }
        (Route::Subscriptions, method) if is_read(&method) => {
            presence(state, Query::Subscriptions).await
        }
        (Route::Page(page), method) if is_read(&method) => Ok(page.response(request.headers())),
        (route, _) => Ok(Failure::method_not_allowed(route.spec().allow())),
    }
}

/// 401 with the challenge naming how to authenticate.
pub fn unauthorized(message: &str) -> Response<Body> {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(auth::CHALLENGE));
    response
}

/// 503 `TOO_MANY_CONNECTIONS`: a load balancer retries another node.
pub fn too_many_connections(message: &str) -> Response<Body> {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "TOO_MANY_CONNECTIONS",
        message,
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// 429 `RATE_LIMITED` with `Retry-After`: the publish was not made.
fn rate_limited(state: &AppState, refused: RateLimited) -> Failure {
    state.metrics.record_rate_limited(Transport::Rest);
    Failure {
        retry_after: Some(refused.retry_after_secs()),
        ..Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            refused.to_string(),
        )
    }
}

/// 204 to `OPTIONS`, naming the methods in `Allow`.
fn allow_response(allow: HeaderValue) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().insert(ALLOW, allow);
    response
}

fn metrics(state: &AppState) -> Response<Body> {
    let mut response = Response::new(Body::from(state.exposition.render()));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(prometheus::CONTENT_TYPE),
    );
    response
}

/// An embedded API document.
fn document(json: &'static [u8]) -> Response<Body> {
    let mut response = Response::new(Body::from(Bytes::from_static(json)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// 503 while a cluster node cannot serve, so a load balancer takes it out.
/// Unauthenticated and polled often, so it reads counters only: its cost
/// does not grow with the number of topics.
fn health(state: &AppState) -> Response<Body> {
    let cluster = cluster_view(state);
    let serving = cluster
        .as_ref()
        .is_none_or(|view| view.backplane == BackplaneState::Connected);
    let (status, word) = if serving {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let totals = state.metrics.snapshot();
    json_response(
        status,
        &Health {
            status: word,
            uptime_sec: state.started.elapsed().as_secs(),
            topics: state.broker.topic_count(),
            subscribers: totals.subscriptions,
            connections: totals.connections,
            cluster,
        },
    )
}

fn stats(state: &AppState) -> Response<Body> {
    let summaries = state.broker.summaries();
    let topics = summaries
        .iter()
        .map(|topic| {
            let stats = TopicStats {
                messages: topic.messages,
                subscribers: topic.subscribers,
            };
            (&*topic.name, stats)
        })
        .collect();
    json_response(
        StatusCode::OK,
        &Stats {
            topics,
            totals: state.metrics.snapshot(),
            cluster: cluster_view(state),
        },
    )
}

fn list_topics(state: &AppState) -> Response<Body> {
    let summaries = state.broker.summaries();
    let topics = summaries
        .iter()
        .map(|topic| TopicRow {
            name: &topic.name,
            subscribers: topic.subscribers,
            messages: topic.messages,
        })
        .collect();
    json_response(
        StatusCode::OK,
        &TopicList {
            topics,
            cluster: cluster_view(state),
        },
    )
}

/// Every subscription, or one topic's subscribers (404 for a topic
/// unknown, cluster-wide in cluster mode), from every node in cluster mode.
async fn presence(state: &AppState, query: Query) -> Reply {
    if let Query::Subscribers(name) = &query {
        check_name(name)?;
        state.topic(name).await?;
    }
    let answer = match &state.cluster {
        Some(cluster) => cluster.presence(&state.broker, &query).await?,
        None => Answer {
            rows: presence::local_rows(state.broker.clone(), query.clone(), None, usize::MAX).await,
            missing_nodes: Vec::new(),
        },
    };
    Ok(raw_json_response(
        StatusCode::OK,
        presence::body(query, answer).await,
    ))
}

async fn create_topic(state: &AppState, request: Request<Incoming>) -> Reply {
    let mut body = read_body(state, request).await?;
    let name = parse_topic_body(&mut body).map_err(Failure::bad_request)?;
    state.create_topic(&name).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &TopicChange {
            status: "created",
            topic: &name,
        },
    ))
}

async fn delete_topic(state: &AppState, name: &str) -> Reply {
    check_name(name)?;
    state.delete_topic(name).await?;
    Ok(json_response(
        StatusCode::OK,
        &TopicChange {
            status: "deleted",
            topic: name,
        },
    ))
}

async fn publish(
    state: &AppState,
    name: &str,
    request: Request<Incoming>,
    limit_key: LimitKey,
) -> Reply {
    check_name(name)?;
    // An unknown topic is 404 whatever the body.
    state.topic(name).await?;
    if let Some(limits) = &state.rest_publish_limits {
        limits
            .acquire(limit_key)
            .map_err(|refused| rate_limited(state, refused))?;
    }
    let mut body = read_body(state, request).await?;
    let message = parse_message_body(&mut body).map_err(Failure::bad_request)?;
    let seq = state.publish(name, &message).await?.acknowledged().await?;
    Ok(json_response(
        StatusCode::OK,
        &Published {
            status: "published",
            topic: name,
            seq,
        },
    ))
}

/// A name taken from the path (percent-decoded, so `%2F` is a `/` in it)
/// must be one a topic could have.
/// `GET /topics/{name}/messages`: a window of the topic's replay ring.
async fn history(state: &AppState, name: &str, query: Option<&str>) -> Reply {
    check_name(name)?;
    let query = HistoryQuery::parse(query.unwrap_or_default())?;
    let topic = state.topic(name).await?;
    let history = topic.history(query.since_seq, query.limit);
    Ok(raw_json_response(
        StatusCode::OK,
        history_json(name, &history),
    ))
}

/// The parameters of `GET /topics/{name}/messages`.
struct HistoryQuery {
    since_seq: Option<u64>,
    limit: usize,
}

impl HistoryQuery {
    const DEFAULT_LIMIT: usize = 100;

    /// Unknown parameters are ignored (a cache-buster, say); known ones
    /// must be integers, given once, `limit` at least 1.
    fn parse(query: &str) -> Result<Self, Failure> {
        let (mut since_seq, mut limit) = (None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let (slot, least) = match &*key {
                "since_seq" => (&mut since_seq, 0),
                "limit" => (&mut limit, 1),
                _ => continue,
            };
            if slot.is_some() {
                return Err(Failure::bad_request(format!("{key} is given twice")));
            }
            let parsed = value.parse::<u64>().ok().filter(|n| *n >= least);
            *slot = Some(parsed.ok_or_else(|| {
                Failure::bad_request(format!("{key} must be an integer >= {least}"))
            })?);
        }
        Ok(Self {
            since_seq,
            limit: limit.map_or(Self::DEFAULT_LIMIT, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
        })
    }
}

fn check_name(name: &str) -> Result<(), Failure> {
    if is_valid_topic_name(name) {
        Ok(())
    } else {
        Err(BrokerError::InvalidTopicName.into())
    }
}

/// Whether the body is declared as JSON (`application/json`, any
/// parameters). A browser page may send other types to any site without
/// asking it first, so requiring this keeps other sites' pages from
/// creating topics or publishing.
fn is_json(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads a JSON body of at most `MAX_MESSAGE_SIZE` bytes within
/// `BODY_TIMEOUT`: another type gets 415, a larger body 413, a late one 408.
async fn read_body(state: &AppState, request: Request<Incoming>) -> Result<Vec<u8>, Failure> {
    if !is_json(&request) {
        return Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "the body must be JSON, sent with Content-Type: application/json",
        ));
    }
    let limit = state.config.max_message_size as usize;
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("body exceeds {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let deadline = state.config.body_timeout;
    let collecting = Limited::new(request.into_body(), limit).collect();
    let Ok(collected) = tokio::time::timeout(deadline, collecting).await else {
        return Err(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            format!(
                "the body did not arrive within {} (BODY_TIMEOUT)",
                humantime::format_duration(deadline)
            ),
        ));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => Err(Failure::bad_request(format!("could not read body: {err}"))),
    }
}

/// `{"error": {"code": ..., "message": ...}}` with a status.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &ErrorEnvelope {
            error: ErrorBody { code, message },
        },
    )
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    raw_json_response(
        status,
        simd_json::to_vec(body).expect("responses always serialize"),
    )
}

/// A response whose body is JSON already.
fn raw_json_response(status: StatusCode, json: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
