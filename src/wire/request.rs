//! Client requests: a WebSocket client's frames parsed into typed
//! requests, and the REST bodies, by one scan that validates the JSON and
//! locates the members read (`wire::json`).

use crate::wire::json::{self, Kind, Located, Path, Scanned};

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

/// The members of a client frame the protocol reads, each located by the
/// one scan at the place its discriminant names in [`FRAME_MEMBERS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    RequestId,
    Type,
    Topic,
    ClientId,
    LastN,
    SinceSeq,
    Epoch,
    Token,
    Message,
    MessageId,
    Payload,
}

impl Member {
    const ALL: [Self; 11] = [
        Self::RequestId,
        Self::Type,
        Self::Topic,
        Self::ClientId,
        Self::LastN,
        Self::SinceSeq,
        Self::Epoch,
        Self::Token,
        Self::Message,
        Self::MessageId,
        Self::Payload,
    ];

    const fn path(self) -> Path<'static> {
        match self {
            Self::RequestId => &["request_id"],
            Self::Type => &["type"],
            Self::Topic => &["topic"],
            Self::ClientId => &["client_id"],
            Self::LastN => &["last_n"],
            Self::SinceSeq => &["since_seq"],
            Self::Epoch => &["epoch"],
            Self::Token => &["token"],
            Self::Message => &["message"],
            Self::MessageId => &["message", "id"],
            Self::Payload => &["message", "payload"],
        }
    }
}

impl From<Member> for usize {
    fn from(member: Member) -> usize {
        member as usize
    }
}

/// Each member's path, at its discriminant (checked as it is built).
const FRAME_MEMBERS: [Path<'static>; Member::ALL.len()] = {
    let mut paths: [Path<'static>; Member::ALL.len()] = [&[]; Member::ALL.len()];
    let mut index = 0;
    while index < paths.len() {
        assert!(Member::ALL[index] as usize == index);
        paths[index] = Member::ALL[index].path();
        index += 1;
    }
    paths
};

/// Parses one client frame in a single scan that validates it and locates
/// its members. Strings in the result borrow from `bytes` (any with
/// escapes decoded in place there); the payload is a slice of it, verbatim.
pub fn parse_client_frame(bytes: &mut [u8]) -> Result<ClientFrame<'_>, Rejection> {
    use Member as M;
    let frame = Members::parse(bytes, &FRAME_MEMBERS, Some(M::Payload.into()))
        .map_err(|why| Rejection::new(None, why))?;
    if frame.root != Kind::Object {
        return Err(Rejection::new(None, "a frame must be a JSON object"));
    }
    let request_id = frame
        .optional_string(M::RequestId)
        .map_err(|reason| Rejection::new(None, reason))?;
    let reject = |reason: String| Rejection::new(request_id, reason);
    let kind = frame
        .optional_string(M::Type)
        .map_err(reject)?
        .ok_or_else(|| reject("type is required".into()))?;
    let topic = || {
        frame
            .optional_string(M::Topic)?
            .ok_or_else(|| format!("topic is required for {kind}"))
    };
    let request = match kind {
        "subscribe" => Request::Subscribe {
            topic: topic().map_err(reject)?,
            client_id: frame.optional_string(M::ClientId).map_err(reject)?,
            replay: match (
                frame.optional_count(M::LastN).map_err(reject)?,
                frame.optional_count(M::SinceSeq).map_err(reject)?,
            ) {
                (Some(_), Some(_)) => {
                    return Err(reject("since_seq and last_n cannot be combined".into()))
                }
                (last_n, None) => Replay::Last(last_n.unwrap_or(0) as usize),
                (None, Some(seq)) => Replay::Since {
                    seq,
                    epoch: frame.optional_string(M::Epoch).map_err(reject)?,
                },
            },
        },
        "unsubscribe" => Request::Unsubscribe {
            topic: topic().map_err(reject)?,
            client_id: frame.optional_string(M::ClientId).map_err(reject)?,
        },
        "publish" => Request::Publish {
            topic: topic().map_err(reject)?,
            message: match frame.kind(M::Message) {
                Some(kind) => frame
                    .message(kind, M::MessageId, M::Payload)
                    .map_err(|why| reject(format!("message.{why}")))?,
                None => return Err(reject("message is required for publish".into())),
            },
        },
        "ping" => Request::Ping,
        "auth" => Request::Auth {
            token: frame
                .optional_string(M::Token)
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
    body.message(body.root, 0_usize, 1_usize)
}

/// Parses a REST create-topic body, `{"name": "orders"}`, into the name.
pub fn parse_topic_body(bytes: &mut [u8]) -> Result<String, String> {
    let body = Members::parse(bytes, &[&["name"]], None)?;
    if body.root != Kind::Object {
        return Err("body must be a JSON object like {\"name\": \"orders\"}".into());
    }
    body.optional_string(0_usize)?
        .map(str::to_owned)
        .ok_or_else(|| "name is required".into())
}

/// A JSON number that is a whole number from 0 to `u64::MAX`, as JSON
/// Schema's `integer` counts them: `5.0` is `5`.
pub fn whole_number(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let float = value.as_f64()?;
        // `u64::MAX as f64` rounds up to 2^64, itself out of range.
        (float.fract() == 0.0 && (0.0..u64::MAX as f64).contains(&float)).then_some(float as u64)
    })
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
            json::scan(bytes, paths, verbatim).map_err(|why| format!("invalid JSON: {why}"))?;
        json::decode_strings(bytes, &mut found, verbatim);
        Ok(Self {
            json: bytes,
            paths,
            root,
            found,
        })
    }

    fn kind(&self, slot: impl Into<usize>) -> Option<Kind> {
        self.found[slot.into()].as_ref().map(|located| located.kind)
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
    fn optional_string(&self, slot: impl Into<usize>) -> Result<Option<&'a str>, String> {
        let slot = slot.into();
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
    fn optional_count(&self, slot: impl Into<usize>) -> Result<Option<u64>, String> {
        let slot = slot.into();
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
    fn message(
        &self,
        kind: Kind,
        id: impl Into<usize>,
        payload: impl Into<usize>,
    ) -> Result<Message<'a>, String> {
        let payload = payload.into();
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

/// Where a new subscriber's replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay<'a> {
    /// Up to this many most recent events (`last_n`; 0: none).
    Last(usize),
    /// Every retained event after `seq`, if the topic's epoch is `epoch`
    /// (when given): recovery after a reconnect.
    Since { seq: u64, epoch: Option<&'a str> },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::payload_of;
    use crate::wire::reply::event;
    use crate::wire::timestamp::Timestamp;
    use bytes::Bytes;

    const ID: &str = "550e8400-e29b-41d4-a716-446655440000";

    fn parse(text: &str) -> Result<ClientFrame<'static>, Rejection> {
        let bytes: &'static mut [u8] = Box::leak(text.as_bytes().to_vec().into_boxed_slice());
        parse_client_frame(bytes)
    }

    fn json_of(frame: &Bytes) -> serde_json::Value {
        serde_json::from_slice(payload_of(frame)).unwrap()
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
}
