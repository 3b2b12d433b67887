//! The wire protocol: parsing client frames into typed requests, and encoding
//! every server frame once into a ready-to-write WebSocket frame.
//!
//! Server frames are unmasked, so one encoded `Bytes` (header + JSON) can be
//! shared by every subscriber and written as is.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload};
use serde::{Serialize, Serializer};
use simd_json::{Node, StaticNode};

use crate::broker::{History, Replay};
use crate::raw_json;

/// The largest header of an unmasked server frame.
const MAX_HEADER_LEN: usize = 10;

/// One parsed client frame: what it asks for and the id to echo in the reply.
#[derive(Debug, PartialEq)]
pub struct ClientFrame<'a> {
    pub request_id: Option<&'a str>,
    pub request: Request<'a>,
}

/// What a client asks for.
#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    Subscribe {
        topic: &'a str,
        client_id: Option<&'a str>,
        /// From `last_n`, or `since_seq` and `epoch`.
        replay: Replay<'a>,
    },
    Unsubscribe {
        topic: &'a str,
        client_id: Option<&'a str>,
    },
    Publish {
        topic: &'a str,
        message: Message<'a>,
    },
    Ping,
    /// Replaces the connection's access token.
    Auth {
        token: &'a str,
    },
}

/// An event as published: a UUID and the payload's JSON bytes, verbatim.
#[derive(Debug, PartialEq)]
pub struct Message<'a> {
    pub id: &'a str,
    pub payload: Bytes,
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
    RateLimited,
    Internal,
}

impl ErrorCode {
    /// The code as the `error` frame spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BAD_REQUEST",
            Self::TopicNotFound => "TOPIC_NOT_FOUND",
            Self::SlowConsumer => "SLOW_CONSUMER",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::RateLimited => "RATE_LIMITED",
            Self::Internal => "INTERNAL",
        }
    }
}

/// Parses one client frame. simd-json parses in place, so `bytes` is scratch
/// space afterwards; strings in the result borrow from it.
pub fn parse_client_frame(bytes: &mut [u8]) -> Result<ClientFrame<'_>, Rejection> {
    let (tape, payload) =
        parse_json(bytes, &["message", "payload"]).map_err(|why| Rejection::new(None, why))?;
    let frame = TapeObject::new(&tape.0)
        .ok_or_else(|| Rejection::new(None, "a frame must be a JSON object"))?;
    let request_id = frame
        .optional_string("request_id")
        .map_err(|reason| Rejection::new(None, reason))?;
    let reject = |reason: String| Rejection::new(request_id, reason);
    let kind = frame
        .optional_string("type")
        .map_err(reject)?
        .ok_or_else(|| reject("type is required".into()))?;
    let topic = || {
        frame
            .optional_string("topic")?
            .ok_or_else(|| format!("topic is required for {kind}"))
    };
    let request = match kind {
        "subscribe" => Request::Subscribe {
            topic: topic().map_err(reject)?,
            client_id: frame.optional_string("client_id").map_err(reject)?,
            replay: match (
                frame.optional_count("last_n").map_err(reject)?,
                frame.optional_count("since_seq").map_err(reject)?,
            ) {
                (Some(_), Some(_)) => {
                    return Err(reject("since_seq and last_n cannot be combined".into()))
                }
                (last_n, None) => Replay::Last(last_n.unwrap_or(0) as usize),
                (None, Some(seq)) => Replay::Since {
                    seq,
                    epoch: frame.optional_string("epoch").map_err(reject)?,
                },
            },
        },
        "unsubscribe" => Request::Unsubscribe {
            topic: topic().map_err(reject)?,
            client_id: frame.optional_string("client_id").map_err(reject)?,
        },
        "publish" => Request::Publish {
            topic: topic().map_err(reject)?,
            message: match frame.get("message") {
                Some(message) => message_from(message, payload)
                    .map_err(|why| reject(format!("message.{why}")))?,
                None => return Err(reject("message is required for publish".into())),
            },
        },
        "ping" => Request::Ping,
        "auth" => Request::Auth {
            token: frame
                .optional_string("token")
                .map_err(reject)?
                .ok_or_else(|| reject("token is required for auth".into()))?,
        },
        other => {
            return Err(reject(format!(
                "unknown type '{other}': expected subscribe, unsubscribe, publish, ping or auth"
            )))
        }
    };
    Ok(ClientFrame {
        request_id,
        request,
    })
}

/// Parses a REST publish body, `{"id": <UUID>, "payload": <any JSON>}`.
pub fn parse_message_body(bytes: &mut [u8]) -> Result<Message<'_>, String> {
    let (tape, payload) = parse_json(bytes, &["payload"])?;
    message_from(&tape.0, payload)
}

/// Parses a REST create-topic body, `{"name": "orders"}`, into the name.
pub fn parse_topic_body(bytes: &mut [u8]) -> Result<String, String> {
    let (tape, _) = parse_json(bytes, &[])?;
    TapeObject::new(&tape.0)
        .ok_or("body must be a JSON object like {\"name\": \"orders\"}")?
        .optional_string("name")?
        .map(str::to_owned)
        .ok_or_else(|| "name is required".into())
}

/// Inputs up to this size leave simd-json's scratch buffers behind for the
/// next parse; a larger one's are freed so one big frame does not pin them.
const KEPT_SCRATCH_INPUT: usize = 64 * 1024;

thread_local! {
    /// simd-json's scratch buffers, reused by every parse on this thread
    /// instead of four allocations per frame.
    static SCRATCH: RefCell<simd_json::Buffers> = RefCell::new(simd_json::Buffers::default());
}

fn to_tape(bytes: &mut [u8]) -> simd_json::Result<simd_json::Tape<'_>> {
    let large = bytes.len() > KEPT_SCRATCH_INPUT;
    SCRATCH.with_borrow_mut(|scratch| {
        let tape = simd_json::to_tape_with_buffers(bytes, scratch);
        if large {
            *scratch = simd_json::Buffers::default();
        }
        tape
    })
}

/// Validates `bytes` and parses them onto a tape, with a copy of the raw
/// value at `payload_path` (if any) taken before simd-json rewrites the
/// buffer.
fn parse_json<'a>(
    bytes: &'a mut [u8],
    payload_path: &[&str],
) -> Result<(simd_json::Tape<'a>, Option<Bytes>), String> {
    let span = match payload_path {
        [] => None,
        path => raw_json::find_member(bytes, path),
    };
    raw_json::check_tokens(bytes, span.clone()).map_err(|why| format!("invalid JSON: {why}"))?;
    let payload = span.map(|span| Bytes::copy_from_slice(&bytes[span]));
    let tape = to_tape(bytes).map_err(|err| format!("invalid JSON: {err}"))?;
    Ok((tape, payload))
}

/// Validates a message object and pairs it with its raw payload.
fn message_from<'a>(nodes: &[Node<'a>], payload: Option<Bytes>) -> Result<Message<'a>, String> {
    let message = TapeObject::new(nodes).ok_or("message must be an object")?;
    let id = message.optional_string("id")?.ok_or("id is required")?;
    if uuid::Uuid::try_parse(id).is_err() {
        return Err(format!("id '{id}' is not a UUID"));
    }
    if message.get("payload").is_none() {
        return Err("payload is required".into());
    }
    let payload = payload.ok_or("payload could not be located")?;
    Ok(Message { id, payload })
}

/// An object on a simd-json tape. The tape is flat, so walking it cannot
/// recurse however deep the document nests.
struct TapeObject<'t, 'a>(&'t [Node<'a>]);

impl<'t, 'a> TapeObject<'t, 'a> {
    fn new(nodes: &'t [Node<'a>]) -> Option<Self> {
        matches!(nodes.first(), Some(Node::Object { .. })).then_some(Self(nodes))
    }

    /// The nodes of the first member called `name`.
    fn get(&self, name: &str) -> Option<&'t [Node<'a>]> {
        let &Node::Object { len, .. } = self.0.first()? else {
            return None;
        };
        let mut index = 1;
        for _ in 0..len {
            let Node::String(key) = *self.0.get(index)? else {
                return None;
            };
            let value_len = match self.0.get(index + 1)? {
                Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
                _ => 1,
            };
            let value = self.0.get(index + 1..index + 1 + value_len)?;
            if key == name {
                return Some(value);
            }
            index += 1 + value_len;
        }
        None
    }

    /// A member that may be absent or null, and otherwise must be an
    /// integer ≥ 0.
    fn optional_count(&self, name: &str) -> Result<Option<u64>, String> {
        match self.get(name) {
            None | Some([Node::Static(StaticNode::Null)]) => Ok(None),
            Some(&[Node::Static(StaticNode::U64(n))]) => Ok(Some(n)),
            Some(&[Node::Static(StaticNode::I64(n))]) if n >= 0 => Ok(Some(n as u64)),
            Some(_) => Err(format!("{name} must be a non-negative integer")),
        }
    }

    /// A member that may be absent or null, and otherwise must be a string.
    fn optional_string(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.get(name) {
            None | Some([Node::Static(StaticNode::Null)]) => Ok(None),
            Some(&[Node::String(value)]) => Ok(Some(value)),
            Some(_) => Err(format!("{name} must be a string")),
        }
    }
}

/// A point in time rendered as RFC 3339 UTC with milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    pub fn at(time: SystemTime) -> Self {
        Self(time)
    }
}

/// `2025-08-25T10:00:00.123Z`
const TIMESTAMP_LEN: usize = 24;

thread_local! {
    /// The last millisecond formatted on this thread: at load, thousands of
    /// frames share each one, so formatting is paid once per millisecond.
    static FORMATTED: Cell<(u128, [u8; TIMESTAMP_LEN])> = const { Cell::new((u128::MAX, [0; TIMESTAMP_LEN])) };
}

impl Timestamp {
    fn with_text<T>(self, use_text: impl FnOnce(&str) -> T) -> T {
        let millis = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let (cached_millis, mut text) = FORMATTED.get();
        if cached_millis != millis {
            let formatted = humantime::format_rfc3339_millis(self.0).to_string();
            text.copy_from_slice(&formatted.as_bytes()[..TIMESTAMP_LEN]);
            FORMATTED.set((millis, text));
        }
        use_text(std::str::from_utf8(&text).expect("ASCII"))
    }

    /// Appends the quoted timestamp to a JSON buffer.
    pub(crate) fn write_json(self, buf: &mut Vec<u8>) {
        self.with_text(|text| {
            buf.push(b'"');
            buf.extend_from_slice(text.as_bytes());
            buf.push(b'"');
        });
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|text| f.write_str(text))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_text(|text| serializer.serialize_str(text))
    }
}

/// The server's less frequent frames, as JSON; `ack` and `event` are
/// written by hand.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// The ack of an `auth` frame, which names no topic.
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
        status: &'static str,
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
pub struct ErrorBody<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
}

impl ServerFrame<'_> {
    /// Encodes the frame once as a complete WebSocket text frame.
    pub fn encode(&self) -> Bytes {
        encode_frame(OpCode::Text, |buf| write_json(buf, self))
    }
}

/// `ack` for unsubscribe and publish. Written by hand, like `event`,
/// because every publish pays for one.
pub fn ack(request_id: Option<&str>, topic: &str) -> Bytes {
    encode_frame(OpCode::Text, |buf| {
        write_ack(buf, request_id, topic, |_| {})
    })
}

/// `ack` for subscribe: the topic's latest `seq` when the subscription
/// joined, its `epoch`, and with `since_seq` whether nothing was lost.
pub fn subscribe_ack(
    request_id: Option<&str>,
    topic: &str,
    seq: u64,
    epoch: &str,
    recovered: Option<bool>,
) -> Bytes {
    encode_frame(OpCode::Text, |buf| {
        write_ack(buf, request_id, topic, |buf| {
            buf.extend_from_slice(br#","seq":"#);
            write_json(buf, &seq);
            buf.extend_from_slice(br#","epoch":"#);
            write_json(buf, epoch);
            if let Some(recovered) = recovered {
                buf.extend_from_slice(br#","recovered":"#);
                write_json(buf, &recovered);
            }
        })
    })
}

fn write_ack(
    buf: &mut Vec<u8>,
    request_id: Option<&str>,
    topic: &str,
    write_extra: impl FnOnce(&mut Vec<u8>),
) {
    buf.extend_from_slice(br#"{"type":"ack","#);
    if let Some(request_id) = request_id {
        buf.extend_from_slice(br#""request_id":"#);
        write_json(buf, request_id);
        buf.push(b',');
    }
    buf.extend_from_slice(br#""topic":"#);
    write_json(buf, topic);
    buf.extend_from_slice(br#","status":"ok""#);
    write_extra(buf);
    buf.extend_from_slice(br#","ts":"#);
    Timestamp::now().write_json(buf);
    buf.push(b'}');
}

/// The body of `GET /topics/{name}/messages`. Each message is cut out of
/// its event frame (`message` with `seq` and `ts` added), so the payload
/// goes out verbatim and nothing is kept for history beside the frames.
pub fn history_json(topic: &str, history: &History) -> Vec<u8> {
    let frames_len: usize = history.events.iter().map(|(_, frame)| frame.len()).sum();
    let mut buf = Vec::with_capacity(frames_len + 160);
    buf.extend_from_slice(br#"{"topic":"#);
    write_json(&mut buf, topic);
    buf.extend_from_slice(br#","epoch":"#);
    write_json(&mut buf, &*history.epoch);
    buf.extend_from_slice(br#","seq":"#);
    write_json(&mut buf, &history.seq);
    if let Some(recovered) = history.recovered {
        buf.extend_from_slice(br#","recovered":"#);
        write_json(&mut buf, &recovered);
    }
    buf.extend_from_slice(br#","messages":["#);
    for (index, (seq, frame)) in history.events.iter().enumerate() {
        if index > 0 {
            buf.push(b',');
        }
        let json = frame_json(frame);
        let message = raw_json::find_member(json, &["message"]).expect("events have a message");
        let ts = raw_json::find_member(json, &["ts"]).expect("events have a ts");
        // `message` is `{"id":..,"payload":..}`: reopened to add the rest.
        buf.extend_from_slice(&json[message.start..message.end - 1]);
        buf.extend_from_slice(br#","seq":"#);
        write_json(&mut buf, seq);
        buf.extend_from_slice(br#","ts":"#);
        buf.extend_from_slice(&json[ts]);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"]}");
    buf
}

/// The JSON of a server frame, without its WebSocket header.
pub fn frame_json(frame: &[u8]) -> &[u8] {
    let head_len = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    &frame[head_len..]
}

/// `ack` of an `auth` frame: the new token is in force.
pub fn auth_ack(request_id: Option<&str>) -> Bytes {
    ServerFrame::Ack {
        request_id,
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

/// `event` as fanned out and kept in the replay ring. Written by hand
/// because the payload goes in verbatim.
pub fn event(topic: &str, message: &Message<'_>, seq: u64, ts: Timestamp) -> Bytes {
    encode_frame(OpCode::Text, |buf| {
        buf.reserve(message.payload.len() + 160);
        buf.extend_from_slice(br#"{"type":"event","topic":"#);
        write_json(buf, topic);
        buf.extend_from_slice(br#","message":{"id":"#);
        write_json(buf, message.id);
        buf.extend_from_slice(br#","payload":"#);
        buf.extend_from_slice(&message.payload);
        buf.extend_from_slice(br#"},"seq":"#);
        write_json(buf, &seq);
        buf.extend_from_slice(br#","ts":"#);
        ts.write_json(buf);
        buf.push(b'}');
    })
}

pub(crate) fn write_json(buf: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    simd_json::to_writer(buf, value).expect("strings and numbers always serialize");
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
        serde_json::from_slice(frame_json(frame)).unwrap()
    }

    #[test]
    fn parses_every_request_type() {
        let frame = parse(
            r#"{"type":"subscribe","topic":"t","client_id":"c","last_n":5,"request_id":"r"}"#,
        )
        .unwrap();
        assert_eq!(frame.request_id, Some("r"));
        assert_eq!(
            frame.request,
            Request::Subscribe {
                topic: "t",
                client_id: Some("c"),
                replay: Replay::Last(5)
            }
        );
        let frame = parse(r#"{"type":"subscribe","topic":"t","since_seq":7,"epoch":"e"}"#).unwrap();
        assert_eq!(
            frame.request,
            Request::Subscribe {
                topic: "t",
                client_id: None,
                replay: Replay::Since {
                    seq: 7,
                    epoch: Some("e")
                }
            }
        );
        let frame = parse(r#"{"type":"unsubscribe","topic":"t"}"#).unwrap();
        assert_eq!(
            frame.request,
            Request::Unsubscribe {
                topic: "t",
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
        assert_eq!(&message.payload[..], r#"{"a":[1,2.5,"é"]}"#.as_bytes());
        assert_eq!(parse(r#"{"type":"ping"}"#).unwrap().request, Request::Ping);
        assert_eq!(
            parse(r#"{"type":"auth","token":"a.b.c"}"#).unwrap().request,
            Request::Auth { token: "a.b.c" }
        );
        assert!(parse(r#"{"type":"auth"}"#).is_err());
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
                r#"{"type":"subscribe","topic":"t","since_seq":-3,"request_id":"r1"}"#,
                "since_seq must be a non-negative integer",
            ),
            (
                r#"{"type":"subscribe","topic":"t","since_seq":3,"epoch":1,"request_id":"r1"}"#,
                "epoch must be a string",
            ),
            (
                r#"{"type":"subscribe","topic":"t","since_seq":3,"last_n":2,"request_id":"r1"}"#,
                "cannot be combined",
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

    fn publish_of(payload: &str) -> String {
        format!(r#"{{"type":"publish","topic":"t","message":{{"id":"{ID}","payload":{payload}}}}}"#)
    }

    #[test]
    fn payloads_pass_through_byte_for_byte() {
        let keys: Vec<String> = (0..40).rev().map(|n| format!(r#""k{n}":{n}"#)).collect();
        let payloads = [
            r#"{"big":100000000000000000000000000000000000000000007,"neg":-0,"exp":1E+2,"f":10.250}"#.to_owned(),
            r#"{"s":"héllo \u2603 😀","n":null,"deep":[[{"x":[true,false]}]]}"#.to_owned(),
            format!("{{{}}}", keys.join(",")),
            r#" [ 1 , "spaced" ] "#.to_owned(),
        ];
        for payload in payloads {
            let text = publish_of(&payload);
            let Request::Publish { message, .. } = parse(&text).unwrap().request else {
                panic!()
            };
            assert_eq!(&message.payload[..], payload.trim().as_bytes());
            let frame = event("t", &message, 7, Timestamp::now());
            assert!(String::from_utf8_lossy(&frame).contains(payload.trim()));
            let json = json_of(&frame);
            assert_eq!(json["seq"], 7);
            assert_eq!(json["type"], "event");
            assert_eq!(json["message"]["id"], ID);
        }
    }

    #[test]
    fn lone_surrogates_are_not_rewritten() {
        let payload = r#"["\ud800"]"#;
        let text = publish_of(payload);
        let Request::Publish { message, .. } = parse(&text).unwrap().request else {
            panic!()
        };
        assert_eq!(&message.payload[..], payload.as_bytes());
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let text = publish_of(&deep);
        let Request::Publish { message, .. } = parse(&text).unwrap().request else {
            panic!()
        };
        assert_eq!(message.payload.len(), deep.len());
        let ping = format!(r#"{{"type":"ping","x":{deep}}}"#);
        assert_eq!(parse(&ping).unwrap().request, Request::Ping);
    }

    #[test]
    fn rest_bodies_parse_with_the_same_rules() {
        let mut body = format!(r#"{{"id":"{ID}","payload":{{"z":1,"a":2}}}}"#).into_bytes();
        let message = parse_message_body(&mut body).unwrap();
        assert_eq!(&message.payload[..], br#"{"z":1,"a":2}"#);
        assert!(parse_message_body(&mut br#"{"id":"nope","payload":1}"#.to_vec()).is_err());
        assert!(parse_message_body(&mut format!(r#"{{"id":"{ID}"}}"#).into_bytes()).is_err());
        assert_eq!(
            parse_topic_body(&mut br#"{"name":"orders"}"#.to_vec()),
            Ok("orders".into())
        );
        assert!(parse_topic_body(&mut br#"{"name":1}"#.to_vec()).is_err());
        assert!(parse_topic_body(&mut br#"[]"#.to_vec()).is_err());
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

    #[test]
    fn acks_are_json_with_an_optional_request_id() {
        let json = json_of(&ack(Some("r\"1\u{e9}"), "orders"));
        assert_eq!(json["type"], "ack");
        assert_eq!(json["request_id"], "r\"1\u{e9}");
        assert_eq!(json["topic"], "orders");
        assert_eq!(json["status"], "ok");
        let json = json_of(&ack(None, "t"));
        assert!(json.get("request_id").is_none(), "{json}");
        assert_eq!(json.as_object().unwrap().len(), 4, "{json}");
        let json = json_of(&subscribe_ack(None, "t", 9, "e-1", Some(true)));
        assert_eq!(
            (&json["seq"], &json["epoch"], &json["recovered"]),
            (&9.into(), &"e-1".into(), &true.into())
        );
        let json = json_of(&subscribe_ack(None, "t", 0, "e-1", None));
        assert!(json.get("recovered").is_none(), "{json}");
    }

    #[test]
    fn the_timestamp_cache_follows_the_clock() {
        let at = |millis| {
            Timestamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(millis)).to_string()
        };
        assert_eq!(at(1_756_116_000_123), "2025-08-25T10:00:00.123Z");
        assert_eq!(at(1_756_116_000_123), "2025-08-25T10:00:00.123Z");
        assert_eq!(at(1_756_116_000_124), "2025-08-25T10:00:00.124Z");
        assert_eq!(at(1_756_116_000_123), "2025-08-25T10:00:00.123Z");
    }
}
