//! The REST API: topic management, publishing over HTTP, health and stats.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::broker::BrokerError;
use crate::cluster::BackplaneState;
use crate::metrics::Snapshot;
use crate::protocol;
use crate::state::AppState;

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
    subscribers: usize,
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
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    fn method_not_allowed(allow: &'static str) -> Response<Body> {
        let mut response = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "method not allowed",
        )
        .into_response();
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        response
    }

    fn into_response(self) -> Response<Body> {
        error_response(self.status, self.code, &self.message)
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

/// Routes and answers one REST request.
pub async fn handle(state: &AppState, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    let public = method == Method::GET && segments == ["health"];
    if !public && !state.api_keys.allows_rest(&request) {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or invalid X-API-Key",
        );
    }
    let reply = match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => Ok(health(state)),
        (&Method::GET, ["stats"]) => Ok(stats(state)),
        (&Method::GET, ["topics"]) => Ok(list_topics(state)),
        (&Method::POST, ["topics"]) => create_topic(state, request).await,
        (&Method::DELETE, ["topics", name]) => delete_topic(state, name).await,
        (&Method::POST, ["topics", name, "messages"]) => publish(state, name, request).await,
        (_, ["health" | "stats"]) => return Failure::method_not_allowed("GET"),
        (_, ["topics"]) => return Failure::method_not_allowed("GET, POST"),
        (_, ["topics", _]) => return Failure::method_not_allowed("DELETE"),
        (_, ["topics", _, "messages"]) => return Failure::method_not_allowed("POST"),
        _ => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no route for {path}"),
        )),
    };
    reply.unwrap_or_else(Failure::into_response)
}

/// 503 while a cluster node cannot serve, so a load balancer takes it out.
fn health(state: &AppState) -> Response<Body> {
    let summaries = state.broker.summaries();
    let cluster = cluster_view(state);
    let serving = cluster
        .as_ref()
        .is_none_or(|view| view.backplane == BackplaneState::Connected);
    let (status, word) = if serving {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    json_response(
        status,
        &Health {
            status: word,
            uptime_sec: state.started.elapsed().as_secs(),
            topics: summaries.len(),
            subscribers: summaries.iter().map(|topic| topic.subscribers).sum(),
            connections: state.metrics.snapshot().connections,
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

async fn create_topic(state: &AppState, request: Request<Incoming>) -> Reply {
    let mut body = read_body(state, request).await?;
    let name = protocol::parse_topic_body(&mut body).map_err(Failure::bad_request)?;
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
    state.delete_topic(name).await?;
    Ok(json_response(
        StatusCode::OK,
        &TopicChange {
            status: "deleted",
            topic: name,
        },
    ))
}

async fn publish(state: &AppState, name: &str, request: Request<Incoming>) -> Reply {
    // An unknown topic is 404 whatever the body.
    state.topic(name).await?;
    let mut body = read_body(state, request).await?;
    let message = protocol::parse_message_body(&mut body).map_err(Failure::bad_request)?;
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

/// Reads a body of at most `MAX_MESSAGE_SIZE` bytes; larger ones get 413.
async fn read_body(state: &AppState, request: Request<Incoming>) -> Result<Vec<u8>, Failure> {
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
    match Limited::new(request.into_body(), limit).collect().await {
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
    let json = simd_json::to_vec(body).expect("responses always serialize");
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
