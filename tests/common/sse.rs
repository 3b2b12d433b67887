//! A server-sent event stream read as `EventSource` reads it, over a
//! real socket (reqwest's streaming body).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{assert_ts, RECV_TIMEOUT};

/// One SSE event as a client parses it.
#[derive(Debug, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|err| panic!("{err}: {self:?}"))
    }
}

/// A stream read as `EventSource` reads it: events split at blank lines,
/// `data:` lines joined, comment lines kept apart.
pub struct SseClient {
    response: reqwest::Response,
    buffered: String,
    pub comments: Vec<String>,
}

impl SseClient {
    /// Reads `response`, which must be a stream.
    pub async fn open(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200, "{}", response.url());
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-store");
        Self {
            response,
            buffered: String::new(),
            comments: Vec::new(),
        }
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffered.find("\n\n") {
                let block: String = self.buffered.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    match line.split_once(": ") {
                        Some(("", comment)) => self.comments.push(comment.to_owned()),
                        Some(("event", name)) => event.event = Some(name.to_owned()),
                        Some(("id", id)) => event.id = Some(id.to_owned()),
                        Some(("data", line)) => data.push(line),
                        _ => assert!(line.is_empty(), "not an SSE line: {line:?}"),
                    }
                }
                if data.is_empty() {
                    continue;
                }
                event.data = data.join("\n");
                return Some(event);
            }
            let chunk = tokio::time::timeout(RECV_TIMEOUT, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("the stream reads");
            self.buffered
                .push_str(std::str::from_utf8(&chunk?).expect("UTF-8"));
        }
    }

    pub async fn expect_next(&mut self) -> SseEvent {
        self.next().await.expect("an event before the stream ends")
    }

    /// The `subscribed` event's topics, by name.
    pub async fn subscribed(&mut self) -> BTreeMap<String, Value> {
        let first = self.expect_next().await;
        assert_eq!(first.event.as_deref(), Some("subscribed"), "{first:?}");
        let json = first.json();
        assert_eq!(json["type"], "subscribed");
        assert_ts(&json);
        json["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|topic| (topic["topic"].as_str().unwrap().to_owned(), topic.clone()))
            .collect()
    }

    /// The next topic event, checked to be one: JSON with an id, no name.
    pub async fn event(&mut self) -> (String, Value) {
        let event = self.expect_next().await;
        assert_eq!(event.event, None, "{event:?}");
        let id = event.id.clone().expect("an event carries its cursor");
        let json = event.json();
        assert_eq!(json["type"], "event", "{json}");
        (id, json)
    }
}
