//! Server frames, each encoded once into a complete, ready-to-write
//! WebSocket text frame: `ack`, `event`, `error`, `pong`, `info`. The two
//! every publish pays for, `ack` and `event`, are written by hand; the
//! rarer ones through serde.

use bytes::Bytes;
use fastwebsockets::OpCode;
use serde::Serialize;

use crate::wire::error::{ErrorBody, ErrorCode};
use crate::wire::frame::{encode_frame, frame_of, with_scratch};
use crate::wire::json;
use crate::wire::request::Message;
use crate::wire::timestamp::Timestamp;

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
        /// Why, where the notice has one (a server-API disconnect).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        ts: Timestamp,
    },
    /// A subscription started on a topic with `presence_events`.
    Join {
        topic: &'a str,
        client_id: &'a str,
        ts: Timestamp,
    },
    /// A subscription ended on a topic with `presence_events`.
    Leave {
        topic: &'a str,
        client_id: &'a str,
        ts: Timestamp,
    },
}

impl ServerFrame<'_> {
    /// Encodes the frame once as a complete WebSocket text frame.
    pub fn encode(&self) -> Bytes {
        encode_frame(OpCode::Text, |buf| write_json(buf, self))
    }
}

/// `ack` for unsubscribe. Written by hand, like `event`,
/// because every publish pays for one.
pub fn ack(request_id: Option<&str>, topic: &str) -> Bytes {
    encode_frame(OpCode::Text, |buf| {
        write_ack(buf, request_id, topic, Timestamp::now(), |_| {})
    })
}

/// `ack` for publish: the event's `seq`, and `"duplicate":true` when the
/// message id was published within `DEDUP_WINDOW` (`seq` is then the
/// original's); `ts` is the publish's, which the broker read already.
pub fn publish_ack(
    request_id: Option<&str>,
    topic: &str,
    seq: u64,
    duplicate: bool,
    ts: Timestamp,
) -> Bytes {
    encode_frame(OpCode::Text, |buf| {
        write_ack(buf, request_id, topic, ts, |buf| {
            buf.extend_from_slice(br#","seq":"#);
            write_json(buf, &seq);
            if duplicate {
                buf.extend_from_slice(br#","duplicate":true"#);
            }
        })
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
        write_ack(buf, request_id, topic, Timestamp::now(), |buf| {
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
    ts: Timestamp,
    write_extra: impl FnOnce(&mut Vec<u8>),
) {
    buf.extend_from_slice(br#"{"type":"ack","#);
    if let Some(request_id) = request_id {
        buf.extend_from_slice(br#""request_id":"#);
        write_json_str(buf, request_id);
        buf.push(b',');
    }
    buf.extend_from_slice(br#""topic":"#);
    write_json_str(buf, topic);
    buf.extend_from_slice(br#","status":"ok""#);
    write_extra(buf);
    buf.extend_from_slice(br#","ts":"#);
    ts.write_json(buf);
    buf.push(b'}');
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

/// `error` with a human-readable message and the code clients know for
/// `code` (see [`ErrorCode::on_websocket`]).
pub fn error(request_id: Option<&str>, code: ErrorCode, message: &str) -> Bytes {
    let error = ErrorBody {
        code: code.on_websocket(),
        message,
    };
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
        reason: None,
        ts: Timestamp::now(),
    }
    .encode()
}

/// `join`, to the other subscribers of a topic with `presence_events`.
pub fn join(topic: &str, client_id: &str) -> Bytes {
    ServerFrame::Join {
        topic,
        client_id,
        ts: Timestamp::now(),
    }
    .encode()
}

/// `leave`, to the other subscribers of a topic with `presence_events`.
pub fn leave(topic: &str, client_id: &str) -> Bytes {
    ServerFrame::Leave {
        topic,
        client_id,
        ts: Timestamp::now(),
    }
    .encode()
}

/// `info` `disconnected`, with its reason: how an event stream, which has
/// no close frame, learns of a server-API disconnect.
pub fn disconnected(reason: &str) -> Bytes {
    ServerFrame::Info {
        topic: None,
        msg: "disconnected",
        reason: Some(reason),
        ts: Timestamp::now(),
    }
    .encode()
}

/// `event` as fanned out and kept in the replay ring. Written by hand
/// because the payload goes in verbatim: copied once, from the client's
/// frame into the event's own allocation.
pub fn event(topic: &str, message: &Message<'_>, seq: u64, ts: Timestamp) -> Bytes {
    with_scratch(|around| {
        around.extend_from_slice(EVENT_START);
        write_json_str(around, topic);
        around.extend_from_slice(br#","message":{"id":"#);
        write_json_str(around, message.id);
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

/// How an `event` frame's JSON starts.
const EVENT_START: &[u8] = br#"{"type":"event","topic":"#;

/// The topic and `seq` of an `event` frame's JSON, read where [`event`]
/// writes them: the topic first (a topic name needs no escaping), the
/// `seq` after the payload, so found from the end; `None` for any other
/// frame.
pub fn event_position(json: &[u8]) -> Option<(&str, u64)> {
    let after_start = json.strip_prefix(EVENT_START)?.strip_prefix(b"\"")?;
    let topic = &after_start[..memchr::memchr(b'"', after_start)?];
    const SEQ: &[u8] = br#","seq":"#;
    let seq_at = memchr::memmem::rfind(json, SEQ)? + SEQ.len();
    let digits = json[seq_at..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    let seq = std::str::from_utf8(&json[seq_at..seq_at + digits])
        .ok()?
        .parse()
        .ok()?;
    Some((std::str::from_utf8(topic).ok()?, seq))
}

/// A server frame's `type`, which every frame has first.
pub fn frame_type(json: &[u8]) -> Option<&str> {
    let rest = json.strip_prefix(br#"{"type":""#)?;
    std::str::from_utf8(&rest[..memchr::memchr(b'"', rest)?]).ok()
}

/// Appends `value` as JSON.
pub fn write_json(buf: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    simd_json::to_writer(buf, value).expect("strings and numbers always serialize");
}

/// Appends `text` as a JSON string. Every publish writes a topic name, an
/// id and often a request id, which are nearly always plain ASCII that
/// needs no escape: those are copied between quotes, the rest serialized.
fn write_json_str(buf: &mut Vec<u8>, text: &str) {
    if json::ordinary_run(text.as_bytes()) == text.len() {
        buf.push(b'"');
        buf.extend_from_slice(text.as_bytes());
        buf.push(b'"');
    } else {
        write_json(buf, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::payload_of;

    fn json_of(frame: &Bytes) -> serde_json::Value {
        serde_json::from_slice(payload_of(frame)).unwrap()
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
    fn strings_are_written_as_the_serializer_writes_them() {
        for text in [
            "orders",
            "req-42",
            "",
            "a\"b",
            "back\\slash",
            "tab\t",
            "\u{1}",
            "caf\u{e9}",
            "\u{7f}",
        ] {
            let (mut fast, mut serialized) = (Vec::new(), Vec::new());
            write_json_str(&mut fast, text);
            write_json(&mut serialized, text);
            assert_eq!(fast, serialized, "{text:?}");
        }
    }

    #[test]
    fn an_event_names_its_topic_and_seq() {
        let message = Message {
            id: "6f1c",
            payload: br#"{"seq":1,"x":",\"seq\":2"}"#,
        };
        let frame = event("a.b", &message, 42, Timestamp::now());
        assert_eq!(event_position(payload_of(&frame)), Some(("a.b", 42)));
        assert_eq!(frame_type(payload_of(&frame)), Some("event"));
        let info = info(Some("a"), "topic_deleted");
        assert_eq!(event_position(payload_of(&info)), None);
        assert_eq!(frame_type(payload_of(&info)), Some("info"));
    }

    #[test]
    fn errors_carry_the_code_websocket_clients_know() {
        let json = json_of(&error(Some("p1"), ErrorCode::TopicLimit, "full"));
        assert_eq!(json["error"]["code"], "BAD_REQUEST");
        assert_eq!(json["error"]["message"], "full");
        let json = json_of(&error(None, ErrorCode::TopicNotFound, "gone"));
        assert_eq!(json["error"]["code"], "TOPIC_NOT_FOUND");
    }
}
