//! Shared by the fuzz targets: a small reference parser for ringcast's
//! client messages and REST bodies, written with serde_json (the test
//! oracle), and the checks that compare ringcast against it.
//!
//! The oracle implements the contract's rules (`/work/shared/CONTRACT.md`)
//! as ringcast applies them in `src/wire/request.rs`:
//!
//! - a frame is a JSON object; of duplicate members the FIRST counts (the
//!   oracle keeps every member in order and looks up the first, so it does
//!   not depend on serde_json's last-wins `Value`);
//! - `request_id`, `type`, `topic`, `client_id`, `message.id` and `name` are
//!   strings, and absent and `null` both mean "not given";
//! - `type` is one of subscribe, unsubscribe, publish, ping; a field is only
//!   checked by the types that use it (`topic` by subscribe, unsubscribe and
//!   publish; `client_id` by subscribe and unsubscribe; `last_n` and
//!   `since_seq` by subscribe, and `epoch` by a subscribe with `since_seq`;
//!   `message` by publish);
//! - `last_n` and `since_seq` are absent, `null` (both "not given") or an
//!   integer >= 0 that fits 64 bits, and not both given; `last_n` not given
//!   is 0;
//! - `message` is an object with `id` a UUID (`uuid::Uuid::try_parse`) and a
//!   `payload` member of any JSON, `null` included;
//! - a rejection echoes `request_id` when it was a valid string.
//!
//! Beyond the parse, the server's reply to each frame (`ack`, `pong`,
//! `error`) and a publish's `event` are encoded and checked to be JSON that
//! echoes the request id, topic, message id and payload.
//!
//! Where ringcast deliberately differs from serde_json (see
//! `fuzz/README.md`), the oracle returns `Err` naming the case instead of a
//! verdict and the checks skip that input; every other difference fails.

pub mod inflate;
pub mod split;

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use ringcast::wire::error::ErrorCode;
use ringcast::wire::reply;
use ringcast::wire::request::{self, Request};
use ringcast::wire::timestamp::Timestamp;

/// A JSON document as the oracle sees it: objects keep every member, in
/// order, duplicates included.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The first member called `name`, if this is an object that has one.
    pub fn member(&self, name: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        // As serde_json's own `Value` does; JSON text never yields NaN.
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Json>()? {
            members.push(member);
        }
        Ok(Json::Object(members))
    }
}

/// What a parser made of one input.
#[derive(Debug, PartialEq)]
pub enum Outcome<T> {
    Accept(T),
    /// Refused; for a client frame, with the `request_id` to echo.
    Reject {
        request_id: Option<String>,
    },
}

/// A client frame, decoded into owned fields both sides can produce.
#[derive(Debug, PartialEq)]
pub struct Frame {
    pub request_id: Option<String>,
    pub request: Req,
}

/// Where a subscribe's replay starts.
#[derive(Debug, PartialEq)]
pub enum Replay {
    Last(u64),
    Since { seq: u64, epoch: Option<String> },
}

#[derive(Debug, PartialEq)]
pub enum Req {
    Subscribe {
        topic: String,
        client_id: Option<String>,
        replay: Replay,
    },
    Unsubscribe {
        topic: String,
        client_id: Option<String>,
    },
    Publish {
        topic: String,
        message: Msg,
    },
    Ping,
    Auth {
        token: String,
    },
}

/// A published message. ringcast's payload is raw bytes; it is compared
/// by parsing them with serde_json into the oracle's [`Json`].
#[derive(Debug, PartialEq)]
pub struct Msg {
    pub id: String,
    /// `Err` holds serde_json's complaint about ringcast's payload bytes.
    pub payload: Result<Json, String>,
}

/// The oracle's verdict, or why it cannot judge this input: a deliberate
/// difference between ringcast and serde_json (listed in fuzz/README.md).
pub type Verdict<T> = Result<Outcome<T>, &'static str>;

/// The oracle's parse of a document: `Ok(None)` when it is not valid JSON,
/// `Err` when serde_json refuses it for a reason ringcast deliberately
/// does not share.
fn oracle_document(bytes: &[u8]) -> Result<Option<Json>, &'static str> {
    match serde_json::from_slice(bytes) {
        // simd-json refuses an exponent past 2^32 even where the value is
        // 0 or underflows to 0 (`0e99999999999`), which serde_json accepts:
        // the README's "numbers a double cannot hold" limit, in another form.
        Ok(_) if has_huge_exponent(bytes) => Err("exponent beyond simd-json's 2^32 limit"),
        Ok(doc) => Ok(Some(doc)),
        // serde_json refuses nesting deeper than 128; ringcast walks a flat
        // tape and accepts any depth.
        Err(err) if err.to_string().starts_with("recursion limit exceeded") => {
            Err("nesting deeper than serde_json's recursion limit")
        }
        // ringcast passes a lone surrogate escape in a payload through
        // verbatim (and refuses one anywhere else); serde_json refuses it.
        Err(_) if has_lone_high_surrogate(bytes) => Err("lone high surrogate escape"),
        Err(_) => Ok(None),
    }
}

/// Whether the text has an exponent of 10 digits or more, leading zeros
/// aside.
fn has_huge_exponent(bytes: &[u8]) -> bool {
    bytes.windows(2).enumerate().any(|(i, pair)| {
        pair[0].is_ascii_digit() && matches!(pair[1], b'e' | b'E') && {
            let rest = &bytes[i + 2..];
            let rest = rest
                .strip_prefix(b"-")
                .or(rest.strip_prefix(b"+"))
                .unwrap_or(rest);
            let digits = rest.iter().take_while(|b| b.is_ascii_digit());
            digits.skip_while(|&&b| b == b'0').count() >= 10
        }
    })
}

/// Whether the text has a `\uD800`..`\uDBFF` escape that is not followed by
/// a low surrogate escape `\uDC00`..`\uDFFF`.
pub fn has_lone_high_surrogate(bytes: &[u8]) -> bool {
    let escape_at = |i: usize| -> Option<u16> {
        let hex = bytes.get(i..i + 6)?.strip_prefix(b"\\u")?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match escape_at(i) {
            Some(0xD800..=0xDBFF) => match escape_at(i + 6) {
                Some(0xDC00..=0xDFFF) => i += 12,
                _ => return true,
            },
            // Any other escape, `\\` included, is two bytes or more.
            _ => i += 2,
        }
    }
    false
}

/// A member that may be absent or `null` and must otherwise be a string.
fn optional_string(object: &Json, name: &str) -> Result<Option<String>, ()> {
    match object.member(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

fn oracle_message(message: &Json) -> Option<Msg> {
    let Json::Object(_) = message else {
        return None;
    };
    let id = optional_string(message, "id").ok()??;
    uuid::Uuid::try_parse(&id).ok()?;
    let payload = message.member("payload")?.clone();
    Some(Msg {
        id,
        payload: Ok(payload),
    })
}

/// `last_n` or `since_seq`: absent or null mean not given (`Some(None)`),
/// otherwise an integer >= 0; `None` is a rejection.
fn oracle_count(value: Option<&Json>) -> Result<Option<Option<u64>>, &'static str> {
    match value {
        None | Some(Json::Null) => Ok(Some(None)),
        Some(Json::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(n), _) => Ok(Some(Some(n))),
            // serde_json reads `-0` as the float -0.0, like `-0.0` and
            // `-0e0`, so the oracle cannot tell the integer literal (which
            // ringcast accepts as 0) from the floats (which it refuses).
            (None, Some(f)) if f == 0.0 && f.is_sign_negative() => Err("a count is -0"),
            _ => Ok(None),
        },
        Some(_) => Ok(None),
    }
}

/// The oracle's verdict on a WebSocket client frame.
pub fn oracle_client_frame(bytes: &[u8]) -> Verdict<Frame> {
    let reject = |request_id: &Option<String>| {
        Ok(Outcome::Reject {
            request_id: request_id.clone(),
        })
    };
    let Some(doc @ Json::Object(_)) = oracle_document(bytes)? else {
        return reject(&None);
    };
    let Ok(request_id) = optional_string(&doc, "request_id") else {
        return reject(&None);
    };
    let Ok(Some(kind)) = optional_string(&doc, "type") else {
        return reject(&request_id);
    };
    let topic = || optional_string(&doc, "topic").ok().flatten();
    let client_id = || optional_string(&doc, "client_id");
    let request = match kind.as_str() {
        "subscribe" => {
            let (Some(topic), Ok(client_id)) = (topic(), client_id()) else {
                return reject(&request_id);
            };
            let (Some(last_n), Some(since_seq)) = (
                oracle_count(doc.member("last_n"))?,
                oracle_count(doc.member("since_seq"))?,
            ) else {
                return reject(&request_id);
            };
            let replay = match (last_n, since_seq) {
                (Some(_), Some(_)) => return reject(&request_id),
                (last_n, None) => Replay::Last(last_n.unwrap_or(0)),
                (None, Some(seq)) => match optional_string(&doc, "epoch") {
                    Ok(epoch) => Replay::Since { seq, epoch },
                    Err(_) => return reject(&request_id),
                },
            };
            Req::Subscribe {
                topic,
                client_id,
                replay,
            }
        }
        "unsubscribe" => {
            let (Some(topic), Ok(client_id)) = (topic(), client_id()) else {
                return reject(&request_id);
            };
            Req::Unsubscribe { topic, client_id }
        }
        "publish" => {
            let Some(topic) = topic() else {
                return reject(&request_id);
            };
            let Some(message) = doc.member("message").and_then(oracle_message) else {
                return reject(&request_id);
            };
            Req::Publish { topic, message }
        }
        "ping" => Req::Ping,
        "auth" => {
            let Ok(Some(token)) = optional_string(&doc, "token") else {
                return reject(&request_id);
            };
            Req::Auth { token }
        }
        _ => return reject(&request_id),
    };
    Ok(Outcome::Accept(Frame {
        request_id,
        request,
    }))
}

/// The oracle's verdict on a REST publish body, `{"id":..,"payload":..}`.
pub fn oracle_message_body(bytes: &[u8]) -> Verdict<Msg> {
    Ok(
        match oracle_document(bytes)?.as_ref().and_then(oracle_message) {
            Some(message) => Outcome::Accept(message),
            None => Outcome::Reject { request_id: None },
        },
    )
}

/// The oracle's verdict on a REST create-topic body, `{"name":..}`.
pub fn oracle_topic_body(bytes: &[u8]) -> Verdict<String> {
    Ok(match oracle_document(bytes)? {
        Some(doc @ Json::Object(_)) => match optional_string(&doc, "name") {
            Ok(Some(name)) => Outcome::Accept(name),
            _ => Outcome::Reject { request_id: None },
        },
        _ => Outcome::Reject { request_id: None },
    })
}

/// The contract's topic-name rule, written independently of ringcast's:
/// 1 to 255 characters, each from `A-Z a-z 0-9 _ - . :`, and not `.` or `..`.
pub fn oracle_topic_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c);
    // `.` and `..` are path segments to every HTTP client, so no request
    // could name such a topic (README, "REST API").
    let path_segment = name == "." || name == "..";
    (1..=255).contains(&name.chars().count()) && name.chars().all(allowed) && !path_segment
}

fn ringcast_message(message: &request::Message<'_>) -> Msg {
    Msg {
        id: message.id.to_owned(),
        payload: serde_json::from_slice(message.payload).map_err(|err| err.to_string()),
    }
}

/// ringcast's verdict on a WebSocket client frame, in the oracle's terms.
pub fn ringcast_client_frame(bytes: &[u8]) -> Outcome<Frame> {
    let mut scratch = bytes.to_vec();
    let frame = match request::parse_client_frame(&mut scratch) {
        Ok(frame) => frame,
        Err(rejection) => {
            return Outcome::Reject {
                request_id: rejection.request_id,
            }
        }
    };
    let owned = |s: Option<&str>| s.map(str::to_owned);
    let request = match frame.request {
        Request::Subscribe {
            topic,
            client_id,
            replay,
        } => Req::Subscribe {
            topic: topic.to_owned(),
            client_id: owned(client_id),
            replay: match replay {
                request::Replay::Last(n) => Replay::Last(n as u64),
                request::Replay::Since { seq, epoch } => Replay::Since {
                    seq,
                    epoch: owned(epoch),
                },
            },
        },
        Request::Unsubscribe { topic, client_id } => Req::Unsubscribe {
            topic: topic.to_owned(),
            client_id: owned(client_id),
        },
        Request::Publish { topic, message } => {
            check_verbatim(bytes, message.payload);
            Req::Publish {
                topic: topic.to_owned(),
                message: ringcast_message(&message),
            }
        }
        Request::Ping => Req::Ping,
        Request::Auth { token } => Req::Auth {
            token: token.to_owned(),
        },
    };
    Outcome::Accept(Frame {
        request_id: owned(frame.request_id),
        request,
    })
}

/// ringcast's verdict on a REST publish body.
pub fn ringcast_message_body(bytes: &[u8]) -> Outcome<Msg> {
    let mut scratch = bytes.to_vec();
    match request::parse_message_body(&mut scratch) {
        Ok(message) => {
            check_verbatim(bytes, message.payload);
            Outcome::Accept(ringcast_message(&message))
        }
        Err(_) => Outcome::Reject { request_id: None },
    }
}

/// ringcast's verdict on a REST create-topic body.
pub fn ringcast_topic_body(bytes: &[u8]) -> Outcome<String> {
    match request::parse_topic_body(&mut bytes.to_vec()) {
        Ok(name) => Outcome::Accept(name),
        Err(_) => Outcome::Reject { request_id: None },
    }
}

/// A payload passes through verbatim: its bytes are a piece of the input,
/// with no surrounding whitespace.
fn check_verbatim(input: &[u8], payload: &[u8]) {
    assert!(
        !payload.is_empty()
            && !payload[0].is_ascii_whitespace()
            && !payload[payload.len() - 1].is_ascii_whitespace()
            && memchr::memmem::find(input, payload).is_some(),
        "payload {:?} is not a verbatim value from the input {:?}",
        String::from_utf8_lossy(payload),
        String::from_utf8_lossy(input),
    );
}

/// Fails with both verdicts when ringcast and the oracle disagree. An
/// input the oracle cannot judge (a deliberate difference) is skipped.
fn agree<T: fmt::Debug + PartialEq>(
    what: &str,
    input: &[u8],
    ours: Outcome<T>,
    oracle: Verdict<T>,
) {
    let Ok(oracle) = oracle else {
        return;
    };
    if ours != oracle {
        panic!(
            "{what} divergence\n  input:    {:?}\n  bytes:    {:02x?}\n  ringcast: {ours:?}\n  oracle:   {oracle:?}",
            String::from_utf8_lossy(input),
            input,
        );
    }
}

/// Target 1: `parse_client_frame` never panics and agrees with the oracle,
/// and the server's replies to the frame are JSON that echo it correctly.
pub fn check_client_message(input: &[u8]) {
    let ours = ringcast_client_frame(input);
    let oracle = oracle_client_frame(input);
    let judged = oracle.is_ok();
    agree("client frame", input, ours, oracle);
    if judged {
        check_replies(input);
    }
}

/// The reply to a frame (`ack`, `pong` or `error`) is JSON and echoes the
/// `request_id` (and the topic); a publish's `event` is JSON and carries
/// the message id and payload unchanged. Only for inputs the oracle
/// judged: an event with a payload serde_json cannot read (too deep, lone
/// surrogates) is not checked.
fn check_replies(input: &[u8]) {
    let echoed = |reply: &serde_json::Value, request_id: Option<&str>| {
        assert_eq!(
            reply.get("request_id"),
            request_id.map(serde_json::Value::from).as_ref(),
            "reply {reply} to {:?}",
            String::from_utf8_lossy(input)
        );
    };
    let mut scratch = input.to_vec();
    match request::parse_client_frame(&mut scratch) {
        Err(rejection) => {
            let request_id = rejection.request_id.as_deref();
            let reply = reply_json(&reply::error(
                request_id,
                ErrorCode::BadRequest,
                &rejection.reason,
            ));
            echoed(&reply, request_id);
            assert_eq!(reply["type"], "error");
            assert_eq!(reply["error"]["code"], "BAD_REQUEST");
            assert_eq!(reply["error"]["message"], rejection.reason.as_str());
        }
        Ok(frame) => {
            let (reply, topic) = match &frame.request {
                Request::Subscribe { topic, .. }
                | Request::Unsubscribe { topic, .. }
                | Request::Publish { topic, .. } => {
                    (reply::ack(frame.request_id, topic), Some(*topic))
                }
                Request::Ping => (reply::pong(frame.request_id), None),
                Request::Auth { .. } => (reply::auth_ack(frame.request_id), None),
            };
            let reply = reply_json(&reply);
            echoed(&reply, frame.request_id);
            assert_eq!(reply.get("topic").and_then(|t| t.as_str()), topic);
            if let Request::Publish { topic, message } = &frame.request {
                let event = reply::event(topic, message, 7, Timestamp::now());
                let event: Json = serde_json::from_slice(&event[header_len(&event)..])
                    .unwrap_or_else(|err| panic!("event {event:?} is not JSON: {err}"));
                let sent = event.member("message");
                let payload: Json = serde_json::from_slice(message.payload).unwrap();
                assert_eq!(sent.and_then(|m| m.member("payload")), Some(&payload));
                let id = Json::String(message.id.to_owned());
                assert_eq!(sent.and_then(|m| m.member("id")), Some(&id));
                assert_eq!(
                    event.member("topic"),
                    Some(&Json::String(topic.to_string()))
                );
            }
        }
    }
}

/// The JSON body of an unmasked server frame.
fn reply_json(frame: &[u8]) -> serde_json::Value {
    serde_json::from_slice(&frame[header_len(frame)..])
        .unwrap_or_else(|err| panic!("reply {frame:?} is not JSON: {err}"))
}

fn header_len(frame: &[u8]) -> usize {
    match frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

/// Target 3, publish bodies: agrees with the oracle.
pub fn check_message_body(input: &[u8]) {
    let ours = ringcast_message_body(input);
    agree("message body", input, ours, oracle_message_body(input));
}

/// Target 3, topic bodies: agrees with the oracle, and a name it returns
/// passes `is_valid_topic_name` exactly when the contract's rule says so.
pub fn check_topic_body(input: &[u8]) {
    let ours = ringcast_topic_body(input);
    if let Outcome::Accept(name) = &ours {
        check_topic_name(name);
    }
    agree("topic body", input, ours, oracle_topic_body(input));
}

/// Target 3 as a whole: both body parsers on the input; the input as a
/// topic name, directly and inside a well-formed body, so every name the
/// fuzzer makes up also goes through `parse_topic_body`.
pub fn check_rest_body(input: &[u8]) {
    check_topic_body(input);
    check_message_body(input);
    if let Ok(text) = std::str::from_utf8(input) {
        check_topic_name(text);
        let body = serde_json::to_vec(&serde_json::json!({ "name": text })).unwrap();
        check_topic_body(&body);
    }
}

/// `is_valid_topic_name` against the contract's rule.
pub fn check_topic_name(name: &str) {
    assert_eq!(
        ringcast::broker::is_valid_topic_name(name),
        oracle_topic_name(name),
        "topic name {name:?}"
    );
}
