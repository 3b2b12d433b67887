//! `POST /broadcast`: one message to up to `MAX_BROADCAST_TOPICS` topics,
//! one result per topic. The body is read and checked once; each topic's
//! event frame holds its name and `seq`, so it is written once per topic
//! (and shared by that topic's ring and subscribers, as any publish's).

use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::broker::{is_valid_topic_name, Receipt};
use crate::error::Error;
use crate::http::response::{json_response, Body};
use crate::node::Node;
use crate::wire::batch::Broadcast;
use crate::wire::error::{ErrorBody, ErrorCode};

#[derive(Serialize)]
struct Results<'a> {
    results: Vec<TopicResult<'a>>,
}

/// Either `seq` (with `duplicate`, when so) or `error`; the other keys
/// are absent.
#[derive(Serialize)]
struct TopicResult<'a> {
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
}

/// Publishes the body's message to each of its topics. Every publish is
/// sent before any answer is awaited, so in cluster mode they travel to
/// the backplane together.
pub async fn broadcast(node: &Node, body: &[u8]) -> Result<Response<Body>, Error> {
    let mut broadcast = Broadcast::parse(body, is_valid_topic_name).map_err(Error::BadRequest)?;
    let (topics, message) = broadcast.topics_and_message().map_err(Error::BadRequest)?;
    let mut sent = Vec::with_capacity(topics.len());
    for topic in topics {
        sent.push(node.publish(topic, &message).await);
    }
    let mut outcomes = Vec::with_capacity(topics.len());
    for publication in sent {
        let outcome = match publication {
            Ok(publication) => publication.acknowledged().await,
            Err(err) => Err(err),
        };
        outcomes.push(outcome.map_err(|err| {
            let err = Error::from(err);
            (err.code(), err.to_string())
        }));
    }
    let results = topics
        .iter()
        .zip(&outcomes)
        .map(|(topic, outcome)| result(topic, outcome))
        .collect();
    Ok(json_response(StatusCode::OK, &Results { results }))
}

fn result<'a>(
    topic: &'a str,
    outcome: &'a Result<Receipt, (ErrorCode, String)>,
) -> TopicResult<'a> {
    match outcome {
        Ok(receipt) => TopicResult {
            topic,
            seq: Some(receipt.seq),
            duplicate: receipt.duplicate,
            error: None,
        },
        Err((code, message)) => TopicResult {
            topic,
            seq: None,
            duplicate: false,
            error: Some(ErrorBody {
                code: *code,
                message,
            }),
        },
    }
}
