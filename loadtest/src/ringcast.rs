//! ringcast's wire contract: REST topic management and publishing, subscribe,
//! publish, and cheap recognition of the frames the server sends.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::LazyLock;

use anyhow::{bail, Context, Result};
use memchr::memmem;

use crate::http::HttpClient;
use crate::payload;
use crate::ws::{self, OpCode, WsReader, WsWriter};

/// Creates each topic with `POST /topics`; one that already exists (409) is fine.
pub async fn create_topics(rest: &mut HttpClient, names: &[String]) -> Result<()> {
    for name in names {
        let status = create_topic(rest, name).await?;
        if status != 201 && status != 409 {
            bail!("POST /topics for {name} answered {status}");
        }
    }
    Ok(())
}

/// `POST /topics`; returns the status (201 created, 409 exists).
pub async fn create_topic(rest: &mut HttpClient, name: &str) -> Result<u16> {
    let body = format!(r#"{{"name":"{name}"}}"#);
    let response = rest
        .post("/topics", body.as_bytes())
        .await
        .with_context(|| format!("creating topic {name}"))?;
    Ok(response.status)
}

/// `DELETE /topics/{name}`; returns the status (200 deleted, 404 unknown).
pub async fn delete_topic(rest: &mut HttpClient, name: &str) -> Result<u16> {
    let response = rest
        .delete(&format!("/topics/{name}"))
        .await
        .with_context(|| format!("deleting topic {name}"))?;
    Ok(response.status)
}

/// `POST /topics/{topic}/messages` with the same message a WebSocket publish
/// carries; returns the status (200 published, 404 unknown topic).
pub async fn publish_over_rest(
    rest: &mut HttpClient,
    topic: &str,
    publisher: u32,
    counter: u64,
    payload_bytes: usize,
) -> Result<u16> {
    let mut body = Vec::with_capacity(payload_bytes + 64);
    write_message(
        &mut body,
        publisher,
        counter,
        payload_bytes,
        payload::now_ns(),
    );
    let response = rest
        .post(&format!("/topics/{topic}/messages"), &body)
        .await?;
    Ok(response.status)
}

/// The kinds of server frame the load generator tells apart, by their prefix
/// (the server always writes `type` first).
#[derive(PartialEq, Eq, Debug)]
pub enum ServerFrame {
    Event,
    Ack,
    Error,
    Other,
}

pub fn classify(frame: &[u8]) -> ServerFrame {
    match frame.strip_prefix(br#"{"type":""#) {
        Some(rest) if rest.starts_with(b"event\"") => ServerFrame::Event,
        Some(rest) if rest.starts_with(b"ack\"") => ServerFrame::Ack,
        Some(rest) if rest.starts_with(b"error\"") => ServerFrame::Error,
        _ => ServerFrame::Other,
    }
}

static SEQ_FIELD: LazyLock<memmem::FinderRev<'static>> =
    LazyLock::new(|| memmem::FinderRev::new(br#""seq":"#));

/// An event frame's `seq`. Searched from the end: `seq` follows the payload,
/// which could itself contain the key.
pub fn event_seq(frame: &[u8]) -> Option<u64> {
    let at = SEQ_FIELD.rfind(frame)?;
    payload::parse_digits(&frame[at + 6..])
}

/// An event frame's topic: the envelope's first field after `type`.
pub fn event_topic(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.strip_prefix(br#"{"type":"event","topic":""#)?;
    Some(&rest[..memchr::memchr(b'"', rest)?])
}

/// The topic named by an `info topic_deleted` notice.
pub fn deleted_topic(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.strip_prefix(br#"{"type":"info","topic":""#)?;
    let (topic, rest) = rest.split_at(memchr::memchr(b'"', rest)?);
    rest.starts_with(br#"","msg":"topic_deleted""#)
        .then_some(topic)
}

/// The value of the first string field `key` in a frame without a payload
/// (ack, error, info), e.g. an error's `request_id` or `code`. Values are
/// names and codes, which contain no escapes.
pub fn string_field<'a>(frame: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let needle = format!(r#""{key}":""#);
    let start = memmem::find(frame, needle.as_bytes())? + needle.len();
    let rest = &frame[start..];
    Some(&rest[..memchr::memchr(b'"', rest)?])
}

/// Whether an error frame is the server's `SLOW_CONSUMER` notice, sent
/// before it closes a subscriber that fell behind.
pub fn is_slow_consumer_error(frame: &[u8]) -> bool {
    string_field(frame, "code") == Some(b"SLOW_CONSUMER")
}

/// Subscribes and waits for the ack.
pub async fn subscribe(reader: &mut WsReader, writer: &mut WsWriter, topic: &str) -> Result<()> {
    queue_subscribe(writer, topic, None, None);
    writer.flush().await?;
    ws::await_reply(reader, writer, |frame, _| match classify(frame) {
        ServerFrame::Ack => Ok(Some(())),
        ServerFrame::Error => bail!("subscribe refused: {}", String::from_utf8_lossy(frame)),
        ServerFrame::Event | ServerFrame::Other => Ok(None),
    })
    .await
}

/// Queues one subscribe frame.
pub fn queue_subscribe(
    writer: &mut WsWriter,
    topic: &str,
    last_n: Option<u32>,
    request_id: Option<&str>,
) {
    writer.frame(OpCode::Text, |buf| {
        buf.extend_from_slice(br#"{"type":"subscribe","topic":""#);
        buf.extend_from_slice(topic.as_bytes());
        buf.push(b'"');
        if let Some(last_n) = last_n {
            buf.extend_from_slice(br#","last_n":"#);
            buf.extend_from_slice(itoa::Buffer::new().format(last_n).as_bytes());
        }
        write_request_id(buf, request_id);
        buf.push(b'}');
    });
}

/// Queues one publish frame. Message ids are UUIDs made of the publisher index,
/// the event counter and this run's `RUN_ID`.
pub fn queue_publish(
    writer: &mut WsWriter,
    topic: &str,
    request_id: Option<&str>,
    publisher: u32,
    counter: u64,
    payload_bytes: usize,
    scheduled_ns: u64,
) {
    writer.frame(OpCode::Text, |buf| {
        buf.extend_from_slice(br#"{"type":"publish","topic":""#);
        buf.extend_from_slice(topic.as_bytes());
        buf.push(b'"');
        write_request_id(buf, request_id);
        buf.extend_from_slice(br#","message":"#);
        write_message(buf, publisher, counter, payload_bytes, scheduled_ns);
        buf.push(b'}');
    });
}

fn write_request_id(buf: &mut Vec<u8>, request_id: Option<&str>) {
    if let Some(request_id) = request_id {
        buf.extend_from_slice(br#","request_id":""#);
        buf.extend_from_slice(request_id.as_bytes());
        buf.push(b'"');
    }
}

/// `{"id":"<uuid>","payload":<payload>}`: a publish's message, and the body
/// of a REST publish.
fn write_message(
    buf: &mut Vec<u8>,
    publisher: u32,
    counter: u64,
    payload_bytes: usize,
    scheduled_ns: u64,
) {
    buf.extend_from_slice(br#"{"id":""#);
    write_message_id(buf, publisher, counter);
    buf.extend_from_slice(br#"","payload":"#);
    payload::write(buf, payload_bytes, scheduled_ns, publisher, counter);
    buf.push(b'}');
}

/// Length of a message id: a UUID's text.
pub const MESSAGE_ID_LEN: usize = 36;

/// The id of publisher `publisher`'s event number `counter` in this run.
pub fn write_message_id(buf: &mut Vec<u8>, publisher: u32, counter: u64) {
    write_uuid(buf, *RUN_ID, publisher, counter);
}

/// 40 random bits in every message id of this process. In cluster mode the
/// server drops a message whose id it saw in the last 2 minutes, so ids must
/// differ from those of earlier runs, whose counters started at 0 too.
static RUN_ID: LazyLock<u64> = LazyLock::new(random_run_id);

fn random_run_id() -> u64 {
    // std seeds RandomState's keys from the OS's random source, and every
    // new one differs: hashing anything with it gives random bits.
    RandomState::new().hash_one(()) & ((1 << 40) - 1)
}

/// `pppppppp-rrrr-4rrr-8rrr-nnnnnnnnnnnn` (a syntactically valid version-4
/// UUID): publisher, 40 bits of `run`, counter.
fn write_uuid(buf: &mut Vec<u8>, run: u64, publisher: u32, counter: u64) {
    write_hex(buf, u64::from(publisher), 8);
    buf.push(b'-');
    write_hex(buf, run >> 24, 4);
    buf.extend_from_slice(b"-4");
    write_hex(buf, run >> 12, 3);
    buf.extend_from_slice(b"-8");
    write_hex(buf, run, 3);
    buf.push(b'-');
    write_hex(buf, counter, 12);
}

fn write_hex(buf: &mut Vec<u8>, value: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..digits).rev() {
        buf.push(HEX[((value >> (shift * 4)) & 0xF) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &[u8] = br#"{"type":"event","topic":"load-0","message":{"id":"00000001-0000-4000-8000-00000000002a","payload":{"t":99,"p":1,"n":42,"pad":"x","seq":5}},"seq":1234,"ts":"2025-08-25T10:00:00.123Z"}"#;

    #[test]
    fn classifies_server_frames() {
        assert_eq!(classify(EVENT), ServerFrame::Event);
        assert_eq!(
            classify(br#"{"type":"ack","topic":"t","status":"ok","ts":"x"}"#),
            ServerFrame::Ack
        );
        assert_eq!(
            classify(br#"{"type":"error","error":{"code":"BAD_REQUEST"}}"#),
            ServerFrame::Error
        );
        assert_eq!(
            classify(br#"{"type":"info","msg":"ping","ts":"x"}"#),
            ServerFrame::Other
        );
    }

    #[test]
    fn extracts_seq_after_the_payload() {
        assert_eq!(event_seq(EVENT), Some(1234));
        assert_eq!(payload::scheduled_ns(EVENT), Some(99));
        assert_eq!(event_seq(br#"{"type":"event"}"#), None);
    }

    #[test]
    fn reads_envelope_fields() {
        assert_eq!(event_topic(EVENT), Some(&b"load-0"[..]));
        assert_eq!(event_topic(br#"{"type":"ack","topic":"t"}"#), None);
        let deleted = br#"{"type":"info","topic":"orders","msg":"topic_deleted","ts":"x"}"#;
        assert_eq!(deleted_topic(deleted), Some(&b"orders"[..]));
        assert_eq!(
            deleted_topic(br#"{"type":"info","msg":"ping","ts":"x"}"#),
            None
        );
        let error = br#"{"type":"error","request_id":"t-1","error":{"code":"TOPIC_NOT_FOUND","message":"topic 't-1' not found"},"ts":"x"}"#;
        assert_eq!(string_field(error, "request_id"), Some(&b"t-1"[..]));
        assert_eq!(string_field(error, "code"), Some(&b"TOPIC_NOT_FOUND"[..]));
        assert_eq!(string_field(error, "topic"), None);
    }

    #[test]
    fn requests_are_json() {
        let mut body = Vec::new();
        write_message(&mut body, 1, 42, 128, 7);
        let message: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let id = message["id"].as_str().unwrap();
        assert!(id.starts_with("00000001-"), "{id}");
        assert!(id.ends_with("-00000000002a"), "{id}");
        assert_eq!(message["payload"]["n"], 42);
    }

    #[test]
    fn message_ids_are_uuid_shaped() {
        let mut id = Vec::new();
        write_uuid(&mut id, 0xab_cdef_1234, 1, 42);
        assert_eq!(id, b"00000001-abcd-4ef1-8234-00000000002a");
        id.clear();
        write_message_id(&mut id, u32::MAX, (1 << 48) - 1);
        assert_eq!(id.len(), MESSAGE_ID_LEN);
        let id = std::str::from_utf8(&id).unwrap();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.as_bytes()[14] == b'4' && id.as_bytes()[19] == b'8',
            "{id}"
        );
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
    }

    #[test]
    fn message_ids_differ_between_runs() {
        let run_ids: std::collections::HashSet<u64> = (0..8).map(|_| random_run_id()).collect();
        assert_eq!(run_ids.len(), 8);
        assert!(run_ids.iter().all(|&run| run < 1 << 40));
    }
}
