//! Presence: who is subscribed to what, as `GET /subscriptions` and
//! `GET /topics/{name}/subscribers` answer it.
//!
//! A node writes its rows as JSON once, off the runtime (a blocking
//! thread), from each topic's lock-free subscriber snapshot. In cluster
//! mode every node writes its own rows, naming itself in each, and the node
//! asked splices them into one answer without parsing them again (see
//! `cluster::presence`).

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::broker::{Broker, Presence};
use crate::wire::reply::write_json;
use crate::wire::timestamp::Timestamp;

/// What a presence request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// Every subscription (`GET /subscriptions`).
    Subscriptions,
    /// One topic's subscribers (`GET /topics/{name}/subscribers`).
    Subscribers(String),
}

impl Query {
    /// As a cluster presence request's payload: empty for every
    /// subscription, else the topic's name.
    pub fn to_payload(&self) -> Bytes {
        match self {
            Self::Subscriptions => Bytes::new(),
            Self::Subscribers(topic) => Bytes::copy_from_slice(topic.as_bytes()),
        }
    }

    /// The query a payload of [`Query::to_payload`] carries; None for one
    /// that is not a topic name.
    pub fn from_payload(payload: &[u8]) -> Option<Self> {
        match std::str::from_utf8(payload).ok()? {
            "" => Some(Self::Subscriptions),
            topic if crate::broker::is_valid_topic_name(topic) => {
                Some(Self::Subscribers(topic.to_owned()))
            }
            _ => None,
        }
    }
}

/// A `/subscriptions` row, written by hand as events are: serde would
/// escape every field name, the bulk of the work with many rows. Topic
/// names and node ids are written as they are, since neither ever needs
/// escaping (see `is_valid_topic_name`; node ids are hex).
fn write_subscription_row(buf: &mut Vec<u8>, topic: &str, presence: &Presence, node: Option<&str>) {
    buf.extend_from_slice(br#"{"topic":""#);
    buf.extend_from_slice(topic.as_bytes());
    buf.extend_from_slice(br#"","client_id":"#);
    write_client_id(buf, presence);
    buf.extend_from_slice(br#","connection":"#);
    write_json(buf, &presence.connection);
    write_since_and_node(buf, presence, node);
}

/// A `/topics/{name}/subscribers` row.
fn write_subscriber_row(buf: &mut Vec<u8>, presence: &Presence, node: Option<&str>) {
    buf.extend_from_slice(br#"{"client_id":"#);
    write_client_id(buf, presence);
    write_since_and_node(buf, presence, node);
}

/// A subscription's `client_id`: the one its subscribe named, or else the
/// connection's id.
fn write_client_id(buf: &mut Vec<u8>, presence: &Presence) {
    match &presence.client_id {
        Some(client_id) => write_json(buf, &**client_id),
        None => {
            buf.push(b'"');
            write_json(buf, &presence.connection);
            buf.push(b'"');
        }
    }
}

/// The rows' last fields, and the closing brace.
fn write_since_and_node(buf: &mut Vec<u8>, presence: &Presence, node: Option<&str>) {
    buf.extend_from_slice(br#","since":"#);
    Timestamp::at(presence.since).write_json(buf);
    if let Some(node) = node {
        buf.extend_from_slice(br#","node":""#);
        buf.extend_from_slice(node.as_bytes());
        buf.push(b'"');
    }
    buf.push(b'}');
}

/// JSON rows separated by commas, cut at row boundaries into pieces of
/// about `piece_len` bytes (a NATS message holds one piece).
struct Rows {
    pieces: Vec<Bytes>,
    current: Vec<u8>,
    piece_len: usize,
}

impl Rows {
    fn new(piece_len: usize) -> Self {
        Self {
            pieces: Vec::new(),
            current: Vec::new(),
            piece_len,
        }
    }

    fn push(&mut self, write_row: impl FnOnce(&mut Vec<u8>)) {
        if !self.current.is_empty() {
            self.current.push(b',');
        }
        write_row(&mut self.current);
        if self.current.len() >= self.piece_len {
            self.pieces.push(std::mem::take(&mut self.current).into());
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.pieces.push(self.current.into());
        }
        self.pieces
    }
}

/// This node's rows for `query`, each naming `node` when given (cluster
/// mode), in pieces of about `piece_len` bytes. A topic this node does not
/// have has no rows. Runs on a blocking thread: with many subscriptions
/// writing them takes milliseconds, which no runtime worker should spend.
pub async fn local_rows(
    broker: Arc<Broker>,
    query: Query,
    node: Option<Arc<str>>,
    piece_len: usize,
) -> Vec<Bytes> {
    let write = move || {
        let node = node.as_deref();
        let mut rows = Rows::new(piece_len);
        match &query {
            Query::Subscriptions => {
                for (topic, presences) in broker.presence() {
                    for presence in &presences {
                        rows.push(|buf| write_subscription_row(buf, &topic, presence, node));
                    }
                }
            }
            Query::Subscribers(name) => {
                let presences = broker.topic(name).map(|topic| topic.presence());
                for presence in presences.iter().flatten() {
                    rows.push(|buf| write_subscriber_row(buf, presence, node));
                }
            }
        }
        rows.finish()
    };
    off_runtime(write).await
}

/// What a presence request gathered: every answering node's rows, and the
/// nodes known to exist that did not answer in time.
#[derive(Default)]
pub struct Answer {
    pub rows: Vec<Bytes>,
    pub missing_nodes: Vec<String>,
}

#[derive(Serialize)]
struct Partial<'a> {
    partial: bool,
    missing_nodes: &'a [String],
}

/// The response body: `{"subscriptions":[…]}` or
/// `{"topic":…,"subscribers":[…]}`, with `"partial":true` and
/// `"missing_nodes"` only when some node did not answer. Joining the rows
/// copies them once, on a blocking thread too.
pub async fn body(query: Query, answer: Answer) -> Vec<u8> {
    off_runtime(move || {
        let rows_len: usize = answer.rows.iter().map(|piece| piece.len() + 1).sum();
        let mut body = Vec::with_capacity(rows_len + 128);
        match &query {
            Query::Subscriptions => body.extend_from_slice(br#"{"subscriptions":["#),
            Query::Subscribers(topic) => {
                body.extend_from_slice(br#"{"topic":"#);
                simd_json::to_writer(&mut body, topic).expect("a topic name serializes");
                body.extend_from_slice(br#","subscribers":["#);
            }
        }
        for (i, piece) in answer
            .rows
            .iter()
            .filter(|piece| !piece.is_empty())
            .enumerate()
        {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(piece);
        }
        body.push(b']');
        if !answer.missing_nodes.is_empty() {
            let partial = Partial {
                partial: true,
                missing_nodes: &answer.missing_nodes,
            };
            // The object's fields, without its braces.
            let fields = simd_json::to_vec(&partial).expect("node ids serialize");
            body.push(b',');
            body.extend_from_slice(&fields[1..fields.len() - 1]);
        }
        body.push(b'}');
        body
    })
    .await
}

/// Runs `work` on a blocking thread; a panic in it goes on in the caller,
/// where the connection task's containment catches it.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_round_trip_through_payloads() {
        for query in [Query::Subscriptions, Query::Subscribers("a.b:c".into())] {
            assert_eq!(Query::from_payload(&query.to_payload()), Some(query));
        }
        assert_eq!(Query::from_payload(b"a/b"), None);
        assert_eq!(Query::from_payload(&[0xff]), None);
    }

    #[tokio::test]
    async fn pieces_join_into_one_json_document() {
        let answer = Answer {
            rows: vec![
                Bytes::from_static(br#"{"client_id":"a"}"#),
                Bytes::new(),
                Bytes::from_static(br#"{"client_id":"b"},{"client_id":"c"}"#),
            ],
            missing_nodes: vec!["n2".into()],
        };
        let body = body(Query::Subscribers("t".into()), answer).await;
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "topic": "t",
                "subscribers": [{"client_id": "a"}, {"client_id": "b"}, {"client_id": "c"}],
                "partial": true,
                "missing_nodes": ["n2"],
            })
        );
        let empty = super::body(Query::Subscriptions, Answer::default()).await;
        assert_eq!(empty, br#"{"subscriptions":[]}"#);
    }
}
