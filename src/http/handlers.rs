//! The REST handlers: topics, publishing over HTTP, a topic's history,
//! presence, health and stats. Each takes the [`Node`] and what it reads
//! of the request, and answers a response or an [`Error`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use crate::auth::Grant;
use crate::broker::{is_valid_topic_name, BrokerError, TopicOptions, TopicSummary};
use crate::cluster::BackplaneState;
use crate::config::Config;
use crate::error::Error;
use crate::http::response::{json_response, raw_json_response, Body};
use crate::http::{batch, broadcast};
use crate::metrics::{Snapshot, Transport};
use crate::node::Node;
use crate::presence::{self, Query};
use crate::rate_limit::{LimitKey, RestLimits};
use crate::sse::{self, SseRequest};
use crate::wire::history::history_json;

use crate::wire::batch::is_batch;
use crate::wire::request::{parse_message_body, parse_topic_body};

/// The header a reconnecting `EventSource` sends its last event's id in.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// What a handler answers: a response, or a failure rendered as the
/// contract's JSON error.
pub type Reply = Result<Response<Body>, Error>;

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
    /// Present (true) only for a duplicate within `DEDUP_WINDOW`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
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
    #[serde(flatten)]
    options: TopicOptions,
}

impl<'a> From<&'a TopicSummary> for TopicRow<'a> {
    fn from(topic: &'a TopicSummary) -> Self {
        Self {
            name: &topic.name,
            subscribers: topic.subscribers,
            messages: topic.messages,
            options: topic.options,
        }
    }
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

fn cluster_view(node: &Node) -> Option<ClusterView> {
    node.backplane().map(|backplane| ClusterView {
        backplane,
        scope: COUNT_SCOPES,
    })
}

#[derive(Serialize)]
struct TopicStats {
    messages: u64,
    subscribers: usize,
}

/// 503 while a cluster node cannot serve, so a load balancer takes it out.
/// Unauthenticated and polled often, so it reads counters only: its cost
/// does not grow with the number of topics.
pub fn health(node: &Node) -> Response<Body> {
    let cluster = cluster_view(node);
    let serving = cluster
        .as_ref()
        .is_none_or(|view| view.backplane == BackplaneState::Connected);
    let (status, word) = if serving {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let totals = node.metrics().snapshot();
    json_response(
        status,
        &Health {
            status: word,
            uptime_sec: node.uptime().as_secs(),
            topics: node.topic_count(),
            subscribers: totals.subscriptions,
            connections: totals.connections,
            cluster,
        },
    )
}

pub fn stats(node: &Node) -> Response<Body> {
    let summaries = node.summaries();
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
            totals: node.metrics().snapshot(),
            cluster: cluster_view(node),
        },
    )
}

pub fn list_topics(node: &Node) -> Response<Body> {
    let summaries = node.summaries();
    let topics = summaries.iter().map(TopicRow::from).collect();
    json_response(
        StatusCode::OK,
        &TopicList {
            topics,
            cluster: cluster_view(node),
        },
    )
}

/// Every subscription, or one topic's subscribers (404 for a topic
/// unknown, cluster-wide in cluster mode), from every node in cluster mode.
pub async fn presence(node: &Node, query: Query) -> Reply {
    if let Query::Subscribers(name) = &query {
        check_name(name)?;
        node.topic(name).await?;
    }
    let answer = node.presence(&query).await?;
    Ok(raw_json_response(
        StatusCode::OK,
        presence::body(query, answer).await,
    ))
}

/// `GET /topics/{name}`: the topic's row of `GET /topics`.
pub async fn topic(node: &Node, name: &str) -> Reply {
    check_name(name)?;
    let summary = node.topic(name).await?.summary();
    Ok(json_response(StatusCode::OK, &TopicRow::from(&summary)))
}

pub async fn create_topic(node: &Node, request: Request<Incoming>) -> Reply {
    let mut body = read_body(node.config(), request).await?;
    // The options first: the name's scan decodes its string in place.
    let options = topic_options(node, &body)?;
    let name = parse_topic_body(&mut body).map_err(Error::BadRequest)?;
    node.create_topic(&name, options).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &TopicChange {
            status: "created",
            topic: &name,
        },
    ))
}

pub async fn delete_topic(node: &Node, name: &str) -> Reply {
    check_name(name)?;
    node.delete_topic(name).await?;
    Ok(json_response(
        StatusCode::OK,
        &TopicChange {
            status: "deleted",
            topic: name,
        },
    ))
}

pub async fn publish(
    node: &Node,
    limit: Option<(&RestLimits, LimitKey)>,
    name: &str,
    request: Request<Incoming>,
) -> Reply {
    check_name(name)?;
    // An unknown topic is 404 whatever the body.
    node.topic(name).await?;
    take_publish_token(node, limit)?;
    let mut body = read_body(node.config(), request).await?;
    if is_batch(&body) {
        return batch::publish_batch(node, name, &body).await;
    }
    let message = parse_message_body(&mut body).map_err(Error::BadRequest)?;
    let receipt = node.publish(name, &message).await?.acknowledged().await?;
    Ok(json_response(
        StatusCode::OK,
        &Published {
            status: "published",
            topic: name,
            seq: receipt.seq,
            duplicate: receipt.duplicate,
        },
    ))
}

/// `POST /broadcast`: one message to many topics.
pub async fn broadcast(
    node: &Node,
    limit: Option<(&RestLimits, LimitKey)>,
    request: Request<Incoming>,
) -> Reply {
    take_publish_token(node, limit)?;
    let body = read_body(node.config(), request).await?;
    broadcast::broadcast(node, &body).await
}

/// `PUBLISH_RATE_LIMIT`: a REST publish request (one message, a batch or
/// a broadcast) takes one token from its credential's bucket.
fn take_publish_token(node: &Node, limit: Option<(&RestLimits, LimitKey)>) -> Result<(), Error> {
    if let Some((limits, key)) = limit {
        limits.acquire(key).inspect_err(|_| {
            node.metrics().record_rate_limited(Transport::Rest);
        })?;
    }
    Ok(())
}

/// The options a `POST /topics` body names, over the defaults. A body
/// that is no JSON object has none; `parse_topic_body` says what is wrong
/// with it.
fn topic_options(node: &Node, body: &[u8]) -> Result<TopicOptions, Error> {
    let defaults = node.default_topic_options();
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(members)) => {
            let max = node.config().max_history_size as usize;
            TopicOptions::from_members(&members, defaults, max).map_err(Error::BadRequest)
        }
        _ => Ok(defaults),
    }
}

/// `GET /sse`: an event stream of the query's topics, or the reason there
/// is none before it starts.
pub async fn event_stream(
    node: &Arc<Node>,
    request: &Request<Incoming>,
    grant: &Grant,
    peer: SocketAddr,
) -> Reply {
    let asked = SseRequest::parse(
        request.uri().query().unwrap_or_default(),
        request.headers().get(LAST_EVENT_ID),
    )?;
    let stream = sse::open(node, asked, grant, peer).await?;
    let mut response = Response::new(Body::Stream(stream));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer responses (nginx) would hold events back.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// `GET /topics/{name}/messages`: a window of the topic's replay ring.
pub async fn history(node: &Node, name: &str, query: Option<&str>) -> Reply {
    check_name(name)?;
    let query = HistoryQuery::parse(query.unwrap_or_default())?;
    let topic = node.topic(name).await?;
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
    fn parse(query: &str) -> Result<Self, Error> {
        let (mut since_seq, mut limit) = (None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let (slot, least) = match &*key {
                "since_seq" => (&mut since_seq, 0),
                "limit" => (&mut limit, 1),
                _ => continue,
            };
            if slot.is_some() {
                return Err(Error::BadRequest(format!("{key} is given twice")));
            }
            let parsed = value.parse::<u64>().ok().filter(|n| *n >= least);
            *slot = Some(parsed.ok_or_else(|| {
                Error::BadRequest(format!("{key} must be an integer >= {least}"))
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

/// A name taken from the path (percent-decoded, so `%2F` is a `/` in it)
/// must be one a topic could have.
pub(super) fn check_name(name: &str) -> Result<(), Error> {
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
pub(super) async fn read_body(
    config: &Config,
    request: Request<Incoming>,
) -> Result<Vec<u8>, Error> {
    if !is_json(&request) {
        return Err(Error::UnsupportedMediaType);
    }
    let limit = config.max_message_size as usize;
    let too_large = || Error::PayloadTooLarge(limit);
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let deadline = config.body_timeout;
    let collecting = Limited::new(request.into_body(), limit).collect();
    let Ok(collected) = tokio::time::timeout(deadline, collecting).await else {
        return Err(Error::RequestTimeout(deadline));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => Err(Error::BadRequest(format!("could not read body: {err}"))),
    }
}
