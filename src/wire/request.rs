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

/// The member whose value passes through verbatim: the payload.
const VERBATIM: Option<usize> = Some(Member::Payload as usize);

/// Parses one client frame in a single scan that validates it and locates
/// its members. Strings in the result borrow from `bytes` (any with
/// escapes decoded in place there); the payload is a slice of it, verbatim.
///
/// A publish in the layout client libraries write is located without the
/// general scan (`canonical_publish`); both ways end in `client_frame`.
pub fn parse_client_frame(bytes: &mut [u8]) -> Result<ClientFrame<'_>, Rejection> {
    match canonical_publish(bytes) {
        Some(scanned) => client_frame(&Members::decoded(bytes, &FRAME_MEMBERS, VERBATIM, scanned)),
        None => parse_by_scan(bytes),
    }
}

/// Any frame, by the general scan.
fn parse_by_scan(bytes: &mut [u8]) -> Result<ClientFrame<'_>, Rejection> {
    let frame =
        Members::parse(bytes, &FRAME_MEMBERS, VERBATIM).map_err(|why| Rejection::new(None, why))?;
    client_frame(&frame)
}

/// The request made of a frame's members, with the protocol's checks.
fn client_frame<'a>(
    frame: &Members<'a, '_, { Member::ALL.len() }>,
) -> Result<ClientFrame<'a>, Rejection> {
    use Member as M;
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

/// What the general scan would find in a publish written in the layout
/// client libraries use, found instead by comparing its fixed bytes, with
/// only the payload scanned: `{"type":"publish","topic":"…","message":
/// {"id":"…","payload":…}}`, no whitespace, `request_id` after `topic`, last
/// or absent. Its strings must be plain ASCII with no escape. `None` for any
/// other frame: the general scan reads it (and rejects it, if it must).
fn canonical_publish(json: &[u8]) -> Option<Scanned<{ Member::ALL.len() }>> {
    use Member as M;
    let mut layout = Layout {
        json,
        pos: 0,
        found: std::array::from_fn(|_| None),
    };
    layout.fixed(br#"{"type":"#)?;
    let type_value = layout.pos;
    layout.fixed(br#""publish""#)?;
    layout.record(M::Type, type_value, Kind::String { escaped: false });
    layout.fixed(br#","topic":"#)?;
    layout.plain_string(M::Topic)?;
    // The load generator writes `request_id` here, the JS client and the
    // CLI (serde, the id flattened after the request) last.
    layout.request_id_if_any()?;
    layout.fixed(br#","message":"#)?;
    let message = layout.pos;
    layout.fixed(br#"{"id":"#)?;
    layout.plain_string(M::MessageId)?;
    layout.fixed(br#","payload":"#)?;
    let payload = json::verbatim_value(&json[layout.pos..])?;
    let start = layout.pos;
    layout.pos += payload.range.end;
    layout.record(M::Payload, start, payload.kind);
    layout.fixed(b"}")?;
    layout.record(M::Message, message, Kind::Object);
    layout.request_id_if_any()?;
    layout.fixed(b"}")?;
    (layout.pos == json.len()).then_some(Scanned {
        root: Kind::Object,
        found: layout.found,
    })
}

/// A frame compared with the canonical publish layout up to `pos`, and the
/// members found so far, located as the general scan locates them.
struct Layout<'j> {
    json: &'j [u8],
    pos: usize,
    found: [Option<Located>; Member::ALL.len()],
}

impl Layout<'_> {
    /// Moves past `text` if the frame has it at `pos`.
    fn fixed(&mut self, text: &[u8]) -> Option<()> {
        self.json[self.pos..]
            .starts_with(text)
            .then(|| self.pos += text.len())
    }

    fn record(&mut self, member: Member, start: usize, kind: Kind) {
        self.found[usize::from(member)] = Some(Located {
            range: start..self.pos,
            kind,
        });
    }

    /// A string with no escape, control character or non-ASCII byte (the
    /// others are left to the general scan).
    fn plain_string(&mut self, member: Member) -> Option<()> {
        let start = self.pos;
        self.fixed(b"\"")?;
        self.pos += json::ordinary_run(&self.json[self.pos..]);
        self.fixed(b"\"")?;
        self.record(member, start, Kind::String { escaped: false });
        Some(())
    }

    /// `,"request_id":"…"` at `pos` unless it was found already.
    fn request_id_if_any(&mut self) -> Option<()> {
        if self.found[usize::from(Member::RequestId)].is_none()
            && self.fixed(br#","request_id":"#).is_some()
        {
            self.plain_string(Member::RequestId)?;
        }
        Some(())
    }
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
        let scanned =
            json::scan(bytes, paths, verbatim).map_err(|why| format!("invalid JSON: {why}"))?;
        Ok(Self::decoded(bytes, paths, verbatim, scanned))
    }

    /// The members a scan of `bytes` found, their strings decoded in place.
    fn decoded(
        bytes: &'a mut [u8],
        paths: &'p [Path<'p>; N],
        verbatim: Option<usize>,
        Scanned { root, mut found }: Scanned<N>,
    ) -> Self {
        json::decode_strings(bytes, &mut found, verbatim);
        Self {
            json: bytes,
            paths,
            root,
            found,
        }
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

    /// Publishes in the layouts the clients write: request_id absent, after
    /// the topic (the load generator) or last (the JS client and the CLI),
    /// with payloads of every kind.
    fn canonical_publishes() -> Vec<String> {
        let payloads = [
            r#"{"price":12.5,"qty":3,"sku":"A-1","tags":["x","y"],"note":null}"#,
            r#"{"a":{"b":[{"c":"é","d":"\"\u00e9\n"}]},"e":[]}"#,
            r#"[1,-2.5e-3,true,false,null,"s",{},[]]"#,
            r#""text""#,
            r#""esc\"aped \u00e9""#,
            r#"["\ud800"]"#,
            r#""\ud800""#,
            "-0.5E+3",
            "0",
            "1e308",
            "true",
            "false",
            "null",
            "{}",
            "[]",
        ];
        let mut frames = Vec::new();
        for payload in payloads {
            let message = format!(r#"{{"id":"{ID}","payload":{payload}}}"#);
            frames.push(format!(
                r#"{{"type":"publish","topic":"t-17","message":{message}}}"#
            ));
            frames.push(format!(
                r#"{{"type":"publish","topic":"t-17","request_id":"r-42","message":{message}}}"#
            ));
            frames.push(format!(
                r#"{{"type":"publish","topic":"orders","message":{message},"request_id":"p-1"}}"#
            ));
        }
        frames
    }

    /// Frames near the canonical layout that it must decline, or accept and
    /// reject as the general path does.
    const NEAR_MISSES: [&str; 16] = [
        r#"{"type":"publish","topic":"t\u0031","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1}}"#,
        r#"{"type":"publish","topic":"t","request_id":"r\n","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1}}"#,
        r#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-44665544000\u0030","payload":1}}"#,
        r#"{"type":"publish","topic":"é","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1}}"#,
        r#"{"type":"publish","topic":"t","message":{"id":"not-a-uuid","payload":1}}"#,
        r#"{"type":"publish","topic":"t","message":{"id":"","payload":1},"request_id":"r"}"#,
        r#"{"type":"publish","topic":"t","topic":"u","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1}}"#,
        r#"{"type":"publish","topic":"t","request_id":"a","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1},"request_id":"b"}"#,
        r#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1,"payload":2}}"#,
        r#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1},"extra":2}"#,
        r#"{"topic":"t","type":"publish","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1}}"#,
        r#"{"type":"publish","topic":"t","message":{"payload":1,"id":"550e8400-e29b-41d4-a716-446655440000"}}"#,
        r#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1}} "#,
        r#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1}}{}"#,
        r#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":1 }}"#,
        r#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":[1,}}"#,
    ];

    /// The fast path either declines `frame` or finds exactly what the
    /// general scan finds; either way the parse equals the general path's.
    /// Returns whether the fast path took it.
    fn assert_same_as_the_scan(frame: &[u8]) -> bool {
        let shown = || String::from_utf8_lossy(frame).into_owned();
        let fast = canonical_publish(frame);
        if let Some(fast) = &fast {
            let scanned = json::scan(frame, &FRAME_MEMBERS, VERBATIM)
                .unwrap_or_else(|why| panic!("{}: the scan refuses it: {why}", shown()));
            assert_eq!(fast.root, scanned.root, "{}", shown());
            assert_eq!(fast.found, scanned.found, "{}", shown());
        }
        assert_eq!(
            parse_client_frame(&mut frame.to_vec()),
            parse_by_scan(&mut frame.to_vec()),
            "{}",
            shown()
        );
        fast.is_some()
    }

    #[test]
    fn the_fast_path_takes_the_canonical_layouts() {
        for frame in canonical_publishes() {
            assert!(assert_same_as_the_scan(frame.as_bytes()), "{frame}");
            assert!(parse(&frame).is_ok(), "{frame}");
        }
        let declined = NEAR_MISSES
            .iter()
            .filter(|frame| !assert_same_as_the_scan(frame.as_bytes()))
            .count();
        // All but the two whose only fault is the message id's value.
        assert_eq!(declined, NEAR_MISSES.len() - 2);
    }

    /// Every byte of canonical frames replaced, deleted, duplicated, or
    /// followed by an inserted byte, and every truncation.
    #[test]
    fn the_fast_path_agrees_with_the_scan_on_mutated_frames() {
        let alphabet = b"{}[],:\"\\ \t\n0159-+.eEtrfunlsa\x00\x01\x1f\x7f\xc3\xa9\xff";
        let seeds: Vec<Vec<u8>> = canonical_publishes()
            .into_iter()
            .chain(NEAR_MISSES.iter().map(|frame| frame.to_string()))
            .map(String::into_bytes)
            .collect();
        let (mut compared, mut taken) = (0, 0);
        let mut check = |frame: &[u8]| {
            compared += 1;
            taken += usize::from(assert_same_as_the_scan(frame));
        };
        for seed in &seeds {
            for at in 0..=seed.len() {
                check(&seed[..at]);
                for &byte in alphabet {
                    let mut inserted = seed.clone();
                    inserted.insert(at, byte);
                    check(&inserted);
                }
                if at == seed.len() {
                    continue;
                }
                let mut deleted = seed.clone();
                deleted.remove(at);
                check(&deleted);
                let mut duplicated = seed.clone();
                duplicated.insert(at, seed[at]);
                check(&duplicated);
                for &byte in alphabet {
                    let mut replaced = seed.clone();
                    replaced[at] = byte;
                    check(&replaced);
                }
            }
        }
        // Both ways are exercised: about a fifth of the mutants keep the
        // layout (a changed byte in a string or the payload, mostly).
        assert!(
            taken > 100_000 && compared - taken > 100_000,
            "{taken} of {compared}"
        );
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
