//! The server API's request bodies that carry several messages or topics:
//! a batch publish (`POST /topics/{name}/messages` with a JSON array) and a
//! broadcast (`POST /broadcast`). Each is split by serde into the raw JSON
//! of its messages, and each message is then read as a single publish's
//! body is (`parse_message_body`), so its payload stays byte for byte. A
//! mistake is named by where it is: `messages[3]: …`, `topics[1]: …`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::wire::request::{parse_message_body, Message};

/// Most messages in one batch publish.
pub const MAX_BATCH: usize = 1000;
/// Most topics one broadcast names.
pub const MAX_BROADCAST_TOPICS: usize = 1000;

/// Whether a publish body is a batch: a JSON array rather than an object.
pub fn is_batch(body: &[u8]) -> bool {
    body.iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|first| *first == b'[')
}

/// The messages of a batch, each still its own JSON text (the in-place
/// scan of a message decodes its strings where they are).
pub struct MessageTexts(Vec<Vec<u8>>);

impl MessageTexts {
    /// Splits a batch body: a JSON array of 1 to `MAX_BATCH` values.
    pub fn of_batch(body: &[u8]) -> Result<Self, String> {
        let raw: Vec<&RawValue> = serde_json::from_slice(body).map_err(|err| {
            format!("a batch must be a JSON array of messages like {{\"id\": \"<uuid>\", \"payload\": …}}: {err}")
        })?;
        check_count("a batch holds", raw.len(), MAX_BATCH, "messages")?;
        Ok(Self(raw.iter().map(|raw| text_of(raw)).collect()))
    }

    /// Each message, in order; the first bad one is named by its index,
    /// and so is an `id` that an earlier message of the batch has.
    pub fn messages(&mut self) -> Result<Vec<Message<'_>>, String> {
        let mut first_with_id = HashMap::with_capacity(self.0.len());
        let mut messages = Vec::with_capacity(self.0.len());
        for (index, text) in self.0.iter_mut().enumerate() {
            let message =
                parse_message_body(text).map_err(|why| format!("messages[{index}]: {why}"))?;
            let uuid = uuid::Uuid::try_parse(message.id).expect("checked as a UUID");
            if let Some(first) = first_with_id.insert(uuid, index) {
                return Err(format!(
                    "messages[{index}]: id {} is the id of messages[{first}]; each message of a batch needs its own",
                    message.id
                ));
            }
            messages.push(message);
        }
        Ok(messages)
    }
}

/// A broadcast's body: its topics, and its message's JSON text.
pub struct Broadcast {
    topics: Vec<String>,
    message: Vec<u8>,
}

#[derive(Deserialize)]
struct BroadcastBody<'a> {
    topics: Vec<String>,
    #[serde(borrow)]
    message: &'a RawValue,
}

impl Broadcast {
    /// Parses `{"topics": [...], "message": {...}}`: 1 to
    /// `MAX_BROADCAST_TOPICS` distinct topic names (each checked by
    /// `is_valid_name`) and one message.
    pub fn parse(body: &[u8], is_valid_name: impl Fn(&str) -> bool) -> Result<Self, String> {
        let BroadcastBody { topics, message } = serde_json::from_slice(body).map_err(|err| {
            format!("a broadcast must be {{\"topics\": [\"a\", \"b\"], \"message\": {{\"id\": \"<uuid>\", \"payload\": …}}}}: {err}")
        })?;
        check_count(
            "topics must name",
            topics.len(),
            MAX_BROADCAST_TOPICS,
            "topics",
        )?;
        let mut first_named = HashMap::with_capacity(topics.len());
        for (index, topic) in topics.iter().enumerate() {
            if !is_valid_name(topic) {
                return Err(format!("topics[{index}]: {topic:?} is not a topic name"));
            }
            if let Some(first) = first_named.insert(topic.as_str(), index) {
                return Err(format!(
                    "topics[{index}]: {topic:?} is named by topics[{first}] already"
                ));
            }
        }
        Ok(Self {
            topics,
            message: text_of(message),
        })
    }

    /// The topics, and the message once checked as a single publish's
    /// body is.
    pub fn topics_and_message(&mut self) -> Result<(&[String], Message<'_>), String> {
        let message =
            parse_message_body(&mut self.message).map_err(|why| format!("message: {why}"))?;
        Ok((&self.topics, message))
    }
}

/// That `count` is 1 to `max`: "`what` 1 to `max` `things`, not `count`".
fn check_count(what: &str, count: usize, max: usize, things: &str) -> Result<(), String> {
    if (1..=max).contains(&count) {
        return Ok(());
    }
    Err(format!("{what} 1 to {max} {things}, not {count}"))
}

fn text_of(raw: &RawValue) -> Vec<u8> {
    raw.get().as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "550e8400-e29b-41d4-a716-446655440000";
    const OTHER: &str = "550e8400-e29b-41d4-a716-446655440001";

    fn batch(body: &str) -> Result<Vec<(String, String)>, String> {
        let mut texts = MessageTexts::of_batch(body.as_bytes())?;
        let messages = texts.messages()?;
        Ok(messages
            .iter()
            .map(|message| {
                let payload = String::from_utf8(message.payload.to_vec()).unwrap();
                (message.id.to_owned(), payload)
            })
            .collect())
    }

    #[test]
    fn a_batch_keeps_each_payload_verbatim_in_order() {
        let body = format!(
            r#" [{{"id":"{ID}","payload":{{"a": [1, 2.50]}}}}, {{"payload":"é\u00e9","id":"{OTHER}"}}]"#
        );
        assert!(is_batch(body.as_bytes()));
        assert!(!is_batch(br#"{"id":"x"}"#));
        assert_eq!(
            batch(&body).unwrap(),
            [
                (ID.to_owned(), r#"{"a": [1, 2.50]}"#.to_owned()),
                (OTHER.to_owned(), r#""é\u00e9""#.to_owned()),
            ]
        );
    }

    #[test]
    fn a_bad_batch_names_the_index_of_its_first_bad_message() {
        let good = format!(r#"{{"id":"{ID}","payload":1}}"#);
        let cases = [
            ("[]".to_owned(), "1 to 1000 messages, not 0"),
            ("[1,".to_owned(), "must be a JSON array"),
            (
                format!("[{good},{{\"id\":\"nope\",\"payload\":1}}]"),
                "messages[1]: id 'nope' is not a UUID",
            ),
            (format!("[{good},{good}]"), "messages[1]: id"),
            (
                format!(r#"[{good},{{"id":"{}","payload":2}}]"#, ID.to_uppercase()),
                "is the id of messages[0]",
            ),
            (
                format!("[{good},7]"),
                "messages[1]: message must be an object",
            ),
            (
                format!("[{{\"id\":\"{ID}\"}}]"),
                "messages[0]: payload is required",
            ),
        ];
        for (body, expected) in cases {
            let why = batch(&body).unwrap_err();
            assert!(why.contains(expected), "{body}: {why}");
        }
        let most = format!("[{}]", vec![good.as_str(); MAX_BATCH + 1].join(","));
        assert!(batch(&most).unwrap_err().contains("not 1001"));
    }

    #[test]
    fn a_broadcast_names_distinct_valid_topics_and_one_message() {
        let message = format!(r#"{{"id":"{ID}","payload":[1]}}"#);
        let valid = |name: &str| !name.contains(' ');
        let body = format!(r#"{{"topics":["a","b"],"message":{message}}}"#);
        let mut broadcast = Broadcast::parse(body.as_bytes(), valid).unwrap();
        let (topics, parsed) = broadcast.topics_and_message().unwrap();
        assert_eq!(
            (topics, parsed.payload),
            (&["a", "b"].map(String::from)[..], &b"[1]"[..])
        );
        let cases = [
            (
                format!(r#"{{"topics":[],"message":{message}}}"#),
                "1 to 1000 topics, not 0",
            ),
            (
                format!(r#"{{"topics":["a","b","a"],"message":{message}}}"#),
                "topics[2]: \"a\" is named by topics[0]",
            ),
            (
                format!(r#"{{"topics":["a b"],"message":{message}}}"#),
                "topics[0]",
            ),
            (r#"{"topics":["a"]}"#.to_owned(), "missing field `message`"),
            (
                format!(r#"{{"topics":"a","message":{message}}}"#),
                "must be",
            ),
        ];
        for (body, expected) in cases {
            let why = Broadcast::parse(body.as_bytes(), valid).err().unwrap();
            assert!(why.contains(expected), "{body}: {why}");
        }
        let body = r#"{"topics":["a"],"message":{"id":"nope","payload":1}}"#;
        let mut broadcast = Broadcast::parse(body.as_bytes(), valid).unwrap();
        let why = broadcast.topics_and_message().err().unwrap();
        assert!(why.starts_with("message: id"), "{why}");
    }
}
