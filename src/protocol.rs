//! The wire protocol: parsing client frames into typed requests, and encoding
//! every server frame once into a ready-to-write WebSocket frame.
//!
//! Server frames are unmasked, so one encoded `Bytes` (header + JSON) can be
//! shared by every subscriber and written as is.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload};
use serde::{Serialize, Serializer};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

/// The largest header of an unmasked server frame.
const MAX_HEADER_LEN: usize = 10;

/// One parsed client frame: what it asks for and the id to echo in the reply.
#[derive(Debug, PartialEq)]
pub struct ClientFrame<'a> {
    pub request_id: Option<Cow<'a, str>>,
    pub request: Request<'a>,
}

/// What a client asks for.
#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    Subscribe {
        topic: Cow<'a, str>,
        client_id: Option<Cow<'a, str>>,
        last_n: usize,
    },
    Unsubscribe {
        topic: Cow<'a, str>,
        client_id: Option<Cow<'a, str>>,
    },
    Publish {
        topic: Cow<'a, str>,
        message: Message<'a>,
    },
    Ping,
}

/// An event as published: a UUID and any JSON payload.
#[derive(Debug, PartialEq)]
pub struct Message<'a> {
    pub id: Cow<'a, str>,
    pub payload: BorrowedValue<'a>,
}

/// A client frame that could not be turned into a request. The connection
/// stays open; the client gets a `BAD_REQUEST` error echoing `request_id`.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    pub request_id: Option<String>,
    pub reason: String,
}

impl Rejection {
    fn new(request_id: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            request_id: request_id.map(str::to_owned),
            reason: reason.into(),
        }
    }
}

/// The error codes of the `error` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BadRequest,
    TopicNotFound,
    SlowConsumer,
    Unauthorized,
    Internal,
}

/// Parses one client frame. simd-json parses in place, so `bytes` is scratch
/// space afterwards; strings in the result borrow from it.
pub fn parse_client_frame(bytes: &mut [u8]) -> Result<ClientFrame<'_>, Rejection> {
    let value = simd_json::to_borrowed_value(bytes)
        .map_err(|err| Rejection::new(None, format!("invalid JSON: {err}")))?;
    let BorrowedValue::Object(mut fields) = value else {
        return Err(Rejection::new(None, "a frame must be a JSON object"));
    };
    let request_id = match fields.remove("request_id") {
        None | Some(BorrowedValue::Static(StaticNode::Null)) => None,
        Some(BorrowedValue::String(id)) => Some(id),
        Some(_) => return Err(Rejection::new(None, "request_id must be a string")),
    };
    let reject = |reason: String| Rejection::new(request_id.as_deref(), reason);
    let kind = match fields.remove("type") {
        Some(BorrowedValue::String(kind)) => kind,
        Some(_) => return Err(reject("type must be a string".into())),
        None => return Err(reject("type is required".into())),
    };
    let mut topic = || match fields.remove("topic") {
        Some(BorrowedValue::String(topic)) => Ok(topic),
        Some(_) => Err(reject("topic must be a string".into())),
        None => Err(reject(format!("topic is required for {kind}"))),
    };
    let request = match kind.as_ref() {
        "subscribe" => Request::Subscribe {
            topic: topic()?,
            client_id: optional_string(&mut fields, "client_id").map_err(reject)?,
            last_n: match fields.remove("last_n") {
                None | Some(BorrowedValue::Static(StaticNode::Null)) => 0,
                Some(value) => value
                    .as_usize()
                    .ok_or_else(|| reject("last_n must be a non-negative integer".into()))?,
            },
        },
        "unsubscribe" => Request::Unsubscribe {
            topic: topic()?,
            client_id: optional_string(&mut fields, "client_id").map_err(reject)?,
        },
        "publish" => Request::Publish {
            topic: topic()?,
            message: match fields.remove("message") {
                Some(message) => {
                    parse_message(message).map_err(|why| reject(format!("message.{why}")))?
                }
                None => return Err(reject("message is required for publish".into())),
            },
        },
        "ping" => Request::Ping,
        other => {
            return Err(reject(format!(
                "unknown type '{other}': expected subscribe, unsubscribe, publish or ping"
            )))
        }
    };
    Ok(ClientFrame {
        request_id,
        request,
    })
}

/// Validates a message object `{"id": <UUID>, "payload": <any JSON>}`; shared
/// by the WebSocket `publish` and the REST publish body.
pub fn parse_message(value: BorrowedValue<'_>) -> Result<Message<'_>, String> {
    let BorrowedValue::Object(mut fields) = value else {
        return Err("message must be an object".into());
    };
    let id = match fields.remove("id") {
        Some(BorrowedValue::String(id)) if uuid::Uuid::try_parse(&id).is_ok() => id,
        Some(BorrowedValue::String(id)) => return Err(format!("id '{id}' is not a UUID")),
        Some(_) => return Err("id must be a UUID string".into()),
        None => return Err("id is required".into()),
    };
    let payload = fields.remove("payload").ok_or("payload is required")?;
    Ok(Message { id, payload })
}

fn optional_string<'a>(
    fields: &mut simd_json::borrowed::Object<'a>,
    name: &str,
) -> Result<Option<Cow<'a, str>>, String> {
    match fields.remove(name) {
        None | Some(BorrowedValue::Static(StaticNode::Null)) => Ok(None),
        Some(BorrowedValue::String(value)) => Ok(Some(value)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// A point in time rendered as RFC 3339 UTC with milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(SystemTime::now())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_millis(self.0).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Every frame the server sends, as JSON.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
        topic: &'a str,
        status: &'static str,
        ts: Timestamp,
    },
    Event {
        topic: &'a str,
        message: EventMessage<'a>,
        seq: u64,
        ts: Timestamp,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
        error: ErrorBody<'a>,
        ts: Timestamp,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
        ts: Timestamp,
    },
    Info {
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<&'a str>,
        msg: &'static str,
        ts: Timestamp,
    },
}

#[derive(Serialize)]
pub struct EventMessage<'a> {
    pub id: &'a str,
    pub payload: &'a BorrowedValue<'a>,
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
}

impl ServerFrame<'_> {
    /// Encodes the frame once as a complete WebSocket text frame.
    pub fn encode(&self) -> Bytes {
        encode_frame(OpCode::Text, |buf| {
            simd_json::to_writer(buf, self).expect("server frames always serialize")
        })
    }
}

/// `ack` for subscribe, unsubscribe and publish.
pub fn ack(request_id: Option<&str>, topic: &str) -> Bytes {
    ServerFrame::Ack {
        request_id,
        topic,
        status: "ok",
        ts: Timestamp::now(),
    }
    .encode()
}

/// `error` with a code and a human-readable message.
pub fn error(request_id: Option<&str>, code: ErrorCode, message: &str) -> Bytes {
    let error = ErrorBody { code, message };
    ServerFrame::Error {
        request_id,
        error,
        ts: Timestamp::now(),
    }
    .encode()
}

/// `pong` in reply to a client `ping`.
pub fn pong(request_id: Option<&str>) -> Bytes {
    ServerFrame::Pong {
        request_id,
        ts: Timestamp::now(),
    }
    .encode()
}

/// `info` notice, such as the heartbeat or a topic deletion.
pub fn info(topic: Option<&str>, msg: &'static str) -> Bytes {
    ServerFrame::Info {
        topic,
        msg,
        ts: Timestamp::now(),
    }
    .encode()
}

/// `event` as fanned out and kept in the replay ring.
pub fn event(topic: &str, message: &Message<'_>, seq: u64, ts: Timestamp) -> Bytes {
    let message = EventMessage {
        id: &message.id,
        payload: &message.payload,
    };
    ServerFrame::Event {
        topic,
        message,
        seq,
        ts,
    }
    .encode()
}

/// A WebSocket close frame with a status code and reason.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    encode_frame(OpCode::Close, |buf| {
        buf.extend_from_slice(&code.to_be_bytes());
        buf.extend_from_slice(reason.as_bytes());
    })
}

/// A WebSocket ping control frame (the protocol-level heartbeat).
pub fn ping_frame() -> Bytes {
    encode_frame(OpCode::Ping, |_| {})
}

/// A WebSocket pong control frame echoing a client ping's payload.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    encode_frame(OpCode::Pong, |buf| buf.extend_from_slice(payload))
}

/// Writes the body after a reserved header gap, then fills in the header in
/// front of it, so a frame costs one allocation and no copy.
fn encode_frame(opcode: OpCode, write_body: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::with_capacity(128);
    buf.resize(MAX_HEADER_LEN, 0);
    write_body(&mut buf);
    let mut head = [0; MAX_HEADER_LEN];
    let head_len = Frame::new(
        true,
        opcode,
        None,
        Payload::Borrowed(&buf[MAX_HEADER_LEN..]),
    )
    .fmt_head(&mut head);
    let start = MAX_HEADER_LEN - head_len;
    buf[start..MAX_HEADER_LEN].copy_from_slice(&head[..head_len]);
    Bytes::from(buf).slice(start..)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "550e8400-e29b-41d4-a716-446655440000";

    fn parse(text: &str) -> Result<ClientFrame<'static>, Rejection> {
        let bytes: &'static mut [u8] = Box::leak(text.as_bytes().to_vec().into_boxed_slice());
        parse_client_frame(bytes)
    }

    fn json_of(frame: &Bytes) -> serde_json::Value {
        let head_len = match frame[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        serde_json::from_slice(&frame[head_len..]).unwrap()
    }

    #[test]
    fn parses_every_request_type() {
        let frame = parse(
            r#"{"type":"subscribe","topic":"t","client_id":"c","last_n":5,"request_id":"r"}"#,
        )
        .unwrap();
        assert_eq!(frame.request_id.as_deref(), Some("r"));
        assert_eq!(
            frame.request,
            Request::Subscribe {
                topic: "t".into(),
                client_id: Some("c".into()),
                last_n: 5
            }
        );
        let frame = parse(r#"{"type":"unsubscribe","topic":"t"}"#).unwrap();
        assert_eq!(
            frame.request,
            Request::Unsubscribe {
                topic: "t".into(),
                client_id: None
            }
        );
        let frame = parse(&format!(
            r#"{{"type":"publish","topic":"t","message":{{"id":"{ID}","payload":{{"a":[1,2.5,"é"]}}}}}}"#
        ))
        .unwrap();
        let Request::Publish { topic, message } = frame.request else {
            panic!("not a publish")
        };
        assert_eq!(topic, "t");
        assert_eq!(message.id, ID);
        assert_eq!(
            simd_json::to_string(&message.payload).unwrap(),
            r#"{"a":[1,2.5,"é"]}"#
        );
        assert_eq!(parse(r#"{"type":"ping"}"#).unwrap().request, Request::Ping);
    }

    #[test]
    fn rejections_echo_the_request_id() {
        let cases = [
            (
                r#"{"type":"subscribe","request_id":"r1"}"#,
                "topic is required",
            ),
            (
                r#"{"type":"subscribe","topic":7,"request_id":"r1"}"#,
                "topic must be a string",
            ),
            (
                r#"{"type":"subscribe","topic":"t","last_n":-1,"request_id":"r1"}"#,
                "last_n",
            ),
            (
                r#"{"type":"subscribe","topic":"t","last_n":1.5,"request_id":"r1"}"#,
                "last_n",
            ),
            (
                r#"{"type":"publish","topic":"t","request_id":"r1"}"#,
                "message is required",
            ),
            (
                r#"{"type":"publish","topic":"t","message":{"id":"nope","payload":1},"request_id":"r1"}"#,
                "not a UUID",
            ),
            (
                r#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-446655440000"},"request_id":"r1"}"#,
                "payload is required",
            ),
            (r#"{"type":"dance","request_id":"r1"}"#, "unknown type"),
            (r#"{"request_id":"r1"}"#, "type is required"),
        ];
        for (text, expected) in cases {
            let rejection = parse(text).unwrap_err();
            assert_eq!(rejection.request_id.as_deref(), Some("r1"), "{text}");
            assert!(
                rejection.reason.contains(expected),
                "{text}: {}",
                rejection.reason
            );
        }
    }

    #[test]
    fn malformed_json_is_rejected_without_panic() {
        for text in [
            "",
            "{",
            "[1,2]",
            "\"str\"",
            "{\"type\":}",
            "nul",
            "{\"request_id\":5,\"type\":\"ping\"}",
        ] {
            let rejection = parse(text).unwrap_err();
            assert_eq!(rejection.request_id, None, "{text}");
        }
    }

    #[test]
    fn payload_numbers_and_unicode_survive_reencoding() {
        let payload = r#"{"big":123456789012345678901234567890,"neg":-42,"pi":3.14159,"tiny":1e-10,"s":"héllo \u2603 😀","n":null,"deep":[[{"x":[true,false]}]]}"#;
        let text = format!(
            r#"{{"type":"publish","topic":"t","message":{{"id":"{ID}","payload":{payload}}}}}"#
        );
        let Request::Publish { message, .. } = parse(&text).unwrap().request else {
            panic!()
        };
        let frame = event("t", &message, 7, Timestamp::now());
        let sent: serde_json::Value = serde_json::from_str(payload).unwrap();
        let json = json_of(&frame);
        assert_eq!(json["message"]["payload"], sent);
        assert_eq!(json["seq"], 7);
        assert_eq!(json["type"], "event");
    }

    #[test]
    fn frames_carry_a_correct_websocket_header() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let frame = pong_frame(&vec![b'x'; len]);
            let (head_len, declared) = match frame[1] {
                126 => (4, u16::from_be_bytes([frame[2], frame[3]]) as usize),
                127 => (
                    10,
                    u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                ),
                short => (2, short as usize),
            };
            assert_eq!(frame[0], 0x80 | OpCode::Pong as u8);
            assert_eq!(declared, len);
            assert_eq!(frame.len(), head_len + len);
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        let json = json_of(&pong(Some("r")));
        let ts = json["ts"].as_str().unwrap();
        assert_eq!(ts.len(), "2025-08-25T10:00:00.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
        assert_eq!(json["request_id"], "r");
    }
}
