//! The wire protocol: parsing client frames into typed requests, and encoding
//! every server frame once into a ready-to-write WebSocket frame.
//!
//! Server frames are unmasked, so one encoded `Bytes` (header + JSON) can be
//! shared by every subscriber and written as is.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::Write as _;
use std::time::SystemTime;

use crate::broker::{History, Replay};
use crate::raw_json::{self, Kind, Located, Path, Scanned};
use bytes::Bytes;
use fastwebsockets::OpCode;
use serde::{Serialize, Serializer};

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
    pub payload: &'a [u8],
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

/// The members of a client frame the protocol reads, located by one scan;
/// `frame::*` name their places.
const FRAME_MEMBERS: [Path<'static>; 11] = [
    &["request_id"],
    &["type"],
    &["topic"],
    &["client_id"],
    &["last_n"],
    &["since_seq"],
    &["epoch"],
    &["token"],
    &["message"],
    &["message", "id"],
    &["message", "payload"],
];

mod frame {
    pub const REQUEST_ID: usize = 0;
    pub const TYPE: usize = 1;
    pub const TOPIC: usize = 2;
    pub const CLIENT_ID: usize = 3;
    pub const LAST_N: usize = 4;
    pub const SINCE_SEQ: usize = 5;
    pub const EPOCH: usize = 6;
    pub const TOKEN: usize = 7;
    pub const MESSAGE: usize = 8;
    pub const MESSAGE_ID: usize = 9;
    pub const PAYLOAD: usize = 10;
}

/// Parses one client frame in a single scan that validates it and locates
/// its members. Strings in the result borrow from `bytes` (any with
/// escapes decoded in place there); the payload is a slice of it, verbatim.
pub fn parse_client_frame(bytes: &mut [u8]) -> Result<ClientFrame<'_>, Rejection> {
    use frame::*;
    let frame = Members::parse(bytes, &FRAME_MEMBERS, Some(PAYLOAD))
        .map_err(|why| Rejection::new(None, why))?;
    if frame.root != Kind::Object {
        return Err(Rejection::new(None, "a frame must be a JSON object"));
    }
    let request_id = frame
        .optional_string(REQUEST_ID)
        .map_err(|reason| Rejection::new(None, reason))?;
    let reject = |reason: String| Rejection::new(request_id, reason);
    let kind = frame
        .optional_string(TYPE)
        .map_err(reject)?
        .ok_or_else(|| reject("type is required".into()))?;
    let topic = || {
        frame
            .optional_string(TOPIC)?
            .ok_or_else(|| format!("topic is required for {kind}"))
    };
    let request = match kind {
        "subscribe" => Request::Subscribe {
            topic: topic().map_err(reject)?,
            client_id: frame.optional_string(CLIENT_ID).map_err(reject)?,
            replay: match (
                frame.optional_count(LAST_N).map_err(reject)?,
                frame.optional_count(SINCE_SEQ).map_err(reject)?,
            ) {
                (Some(_), Some(_)) => {
                    return Err(reject("since_seq and last_n cannot be combined".into()))
                }
                (last_n, None) => Replay::Last(last_n.unwrap_or(0) as usize),
                (None, Some(seq)) => Replay::Since {
                    seq,
                    epoch: frame.optional_string(EPOCH).map_err(reject)?,
                },
            },
        },
        "unsubscribe" => Request::Unsubscribe {
            topic: topic().map_err(reject)?,
            client_id: frame.optional_string(CLIENT_ID).map_err(reject)?,
        },
        "publish" => Request::Publish {
            topic: topic().map_err(reject)?,
            message: match frame.kind(MESSAGE) {
                Some(kind) => frame
                    .message(kind, MESSAGE_ID, PAYLOAD)
                    .map_err(|why| reject(format!("message.{why}")))?,
                None => return Err(reject("message is required for publish".into())),
            },
        },
        "ping" => Request::Ping,
        "auth" => Request::Auth {
            token: frame
                .optional_string(TOKEN)
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
    let body = Members::parse(bytes, &[&["id"], &["payload"]], Some(1))?;
    body.message(body.root, 0, 1)
}

/// Parses a REST create-topic body, `{"name": "orders"}`, into the name.
pub fn parse_topic_body(bytes: &mut [u8]) -> Result<String, String> {
    let body = Members::parse(bytes, &[&["name"]], None)?;
    if body.root != Kind::Object {
        return Err("body must be a JSON object like {\"name\": \"orders\"}".into());
    }
    body.optional_string(0)?
        .map(str::to_owned)
        .ok_or_else(|| "name is required".into())
}

/// A validated document and the members it was scanned for, their strings
/// decoded.
struct Members<'a, 'p, const N: usize> {
    json: &'a [u8],
    paths: &'p [Path<'p>; N],
    root: Kind,
    found: [Option<Located>; N],
}

impl<'a, 'p, const N: usize> Members<'a, 'p, N> {
    fn parse(
        bytes: &'a mut [u8],
        paths: &'p [Path<'p>; N],
        verbatim: Option<usize>,
    ) -> Result<Self, String> {
        let Scanned { root, mut found } =
            raw_json::scan(bytes, paths, verbatim).map_err(|why| format!("invalid JSON: {why}"))?;
        raw_json::decode_strings(bytes, &mut found, verbatim);
        Ok(Self {
            json: bytes,
            paths,
            root,
            found,
        })
    }

    fn kind(&self, slot: usize) -> Option<Kind> {
        self.found[slot].as_ref().map(|located| located.kind)
    }

    fn name(&self, slot: usize) -> &'p str {
        self.paths[slot].last().expect("paths name a member")
    }

    fn bytes(&self, slot: usize) -> &'a [u8] {
        let json = self.json;
        self.found[slot]
            .as_ref()
            .map_or(&[], |located| &json[located.range.clone()])
    }

    /// A member that may be absent or null, and otherwise must be a string.
    fn optional_string(&self, slot: usize) -> Result<Option<&'a str>, String> {
        match self.kind(slot) {
            None | Some(Kind::Null) => Ok(None),
            Some(Kind::String { .. }) => Ok(Some(
                std::str::from_utf8(self.bytes(slot)).expect("validated UTF-8"),
            )),
            Some(_) => Err(format!("{} must be a string", self.name(slot))),
        }
    }

    /// A member that may be absent or null, and otherwise must be an
    /// integer ≥ 0 (`-0` included) that fits 64 bits.
    fn optional_count(&self, slot: usize) -> Result<Option<u64>, String> {
        let not_a_count = || format!("{} must be a non-negative integer", self.name(slot));
        match self.kind(slot) {
            None | Some(Kind::Null) => Ok(None),
            Some(Kind::Number) => {
                let digits = self.bytes(slot);
                let digits = digits
                    .strip_prefix(b"-")
                    .filter(|zero| *zero == b"0")
                    .unwrap_or(digits);
                std::str::from_utf8(digits)
                    .ok()
                    .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|digits| digits.parse().ok())
                    .map(Some)
                    .ok_or_else(not_a_count)
            }
            Some(_) => Err(not_a_count()),
        }
    }

    /// The message made of an object of kind `kind`, its `id` member and
    /// its raw `payload` member.
    fn message(&self, kind: Kind, id: usize, payload: usize) -> Result<Message<'a>, String> {
        if kind != Kind::Object {
            return Err("message must be an object".into());
        }
        let id = self.optional_string(id)?.ok_or("id is required")?;
        if uuid::Uuid::try_parse(id).is_err() {
            return Err(format!("id '{id}' is not a UUID"));
        }
        if self.kind(payload).is_none() {
            return Err("payload is required".into());
        }
        Ok(Message {
            id,
            payload: self.bytes(payload),
        })
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
            // Into the array itself, so a publish allocates nothing for its
            // `ts`; every year from 1000 to 9999 takes exactly its length.
            let _ = write!(
                &mut text[..],
                "{}",
                humantime::format_rfc3339_millis(self.0)
            );
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
        let Ok(Scanned {
            found: [Some(message), Some(ts), _],
            ..
        }) = raw_json::scan(json, &EVENT_MEMBERS, Some(2))
        else {
            unreachable!("events are JSON with a message and a ts")
        };
        // `message` is `{"id":..,"payload":..}`: reopened to add the rest.
        buf.extend_from_slice(&json[message.range.start..message.range.end - 1]);
        buf.extend_from_slice(br#","seq":"#);
        write_json(&mut buf, seq);
        buf.extend_from_slice(br#","ts":"#);
        buf.extend_from_slice(&json[ts.range]);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"]}");
    buf
}

/// What history cuts out of an event frame; the payload is named so that
/// it is read as verbatim, as it was when published.
const EVENT_MEMBERS: [Path<'static>; 3] = [&["message"], &["ts"], &["message", "payload"]];

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
/// because the payload goes in verbatim: copied once, from the client's
/// frame into the event's own allocation.
pub fn event(topic: &str, message: &Message<'_>, seq: u64, ts: Timestamp) -> Bytes {
    with_scratch(|around| {
        around.extend_from_slice(br#"{"type":"event","topic":"#);
        write_json(around, topic);
        around.extend_from_slice(br#","message":{"id":"#);
        write_json(around, message.id);
        around.extend_from_slice(br#","payload":"#);
        let payload_at = around.len();
        around.extend_from_slice(br#"},"seq":"#);
        write_json(around, &seq);
        around.extend_from_slice(br#","ts":"#);
        ts.write_json(around);
        around.push(b'}');
        let (before, after) = around.split_at(payload_at);
        frame_of(OpCode::Text, &[before, message.payload, after])
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

/// Writes the body into this thread's scratch buffer, then copies it into
/// a frame of its own.
fn encode_frame(opcode: OpCode, write_body: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    with_scratch(|body| {
        write_body(body);
        frame_of(opcode, &[body])
    })
}

/// Scratch space up to this size is kept for the next frame; a larger
/// one is freed, so one big frame does not pin it.
const KEPT_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Where a frame's JSON is written before its size is known.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_scratch<T>(use_scratch: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        let result = use_scratch(scratch);
        if scratch.capacity() > KEPT_SCRATCH {
            *scratch = Vec::new();
        }
        result
    })
}

/// An unmasked, final WebSocket frame whose payload is `parts` end to end,
/// in one allocation of exactly its size: the `Bytes` made of it needs no
/// further allocation until it is first shared.
fn frame_of(opcode: OpCode, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut head = [0; MAX_HEADER_LEN];
    head[0] = 0x80 | opcode as u8;
    let head_len = match len {
        0..=125 => {
            head[1] = len as u8;
            2
        }
        126..=0xFFFF => {
            head[1] = 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    let mut frame = Vec::with_capacity(head_len + len);
    frame.extend_from_slice(&head[..head_len]);
    parts.iter().for_each(|part| frame.extend_from_slice(part));
    Bytes::from(frame)
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
        assert_eq!(message.payload, r#"{"a":[1,2.5,"é"]}"#.as_bytes());
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
            r#""\"quoted\" \u00e9 \ud83d\ude00""#.to_owned(),
        ];
        for payload in payloads {
            let text = publish_of(&payload);
            let Request::Publish { message, .. } = parse(&text).unwrap().request else {
                panic!()
            };
            assert_eq!(message.payload, payload.trim().as_bytes());
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
        assert_eq!(message.payload, payload.as_bytes());
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
        assert_eq!(message.payload, br#"{"z":1,"a":2}"#);
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
