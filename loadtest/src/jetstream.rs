//! NATS JetStream for `--jetstream`: publishes that are stored, checked for
//! duplicates and acknowledged, as every ringcast publish is (kept in the
//! topic's history, deduplicated by its message id within `DEDUP_WINDOW`,
//! answered with an `ack`). The stream mirrors ringcast's defaults: memory
//! storage, `RING_BUFFER_SIZE` events kept per subject, a `DEDUP_WINDOW`
//! long duplicate window. Each publish is an HPUB carrying its message id
//! in `Nats-Msg-Id` and its publisher's inbox as the reply subject, where
//! JetStream sends the PubAck once the message is stored.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::{bail, Result};
use serde_json::json;
use tokio::sync::Notify;

use crate::nats::{self, Event, Parser};
use crate::ws::{self, OpCode, WsUrl};
use crate::{payload, ringcast};

const STREAM: &str = "RINGCAST_LOAD";
/// ringcast's `RING_BUFFER_SIZE` default.
const KEPT_PER_SUBJECT: u32 = 100;
/// ringcast's `DEDUP_WINDOW` default, in nanoseconds.
const DUPLICATE_WINDOW_NS: u64 = 120_000_000_000;

/// Most publishes one publisher has awaiting their PubAck: nats.go's
/// `PublishAsyncMaxPending` default. An asynchronous JetStream publisher
/// waits past it, rather than queue publishes in the server without bound.
const MAX_PENDING: u64 = 4000;

/// The PubAcks (and errors) one publisher has had, shared by its reply
/// reader and its sender.
#[derive(Default)]
pub struct Answers {
    count: AtomicU64,
    arrived: Notify,
}

impl Answers {
    pub fn add(&self, answers: u64) {
        if answers > 0 {
            self.count.fetch_add(answers, Relaxed);
            self.arrived.notify_one();
        }
    }

    /// Waits until `more` publishes after the `sent` so far leave at most
    /// [`MAX_PENDING`] unanswered.
    pub async fn room_for(&self, sent: u64, more: u64) {
        while sent + more > self.count.load(Relaxed) + MAX_PENDING {
            self.arrived.notified().await;
        }
    }
}

/// Where publisher `index`'s PubAcks come.
pub fn inbox(index: u32) -> String {
    format!("_INBOX.ringcast-load.{index}")
}

/// Makes the stream that stores `subjects` (the scenario's topics); an
/// existing one with the same configuration is fine.
pub async fn create_stream(url: &WsUrl, subjects: &[String]) -> Result<()> {
    let (mut reader, mut writer) = ws::connect_offering(url, None, false).await?;
    let mut parser = Parser::default();
    nats::connect(&mut reader, &mut writer, &mut parser).await?;
    let reply_to = "_INBOX.ringcast-load.setup";
    nats::subscribe(&mut reader, &mut writer, &mut parser, reply_to).await?;
    let config = json!({
        "name": STREAM,
        "subjects": subjects,
        "retention": "limits",
        "storage": "memory",
        "discard": "old",
        "max_msgs_per_subject": KEPT_PER_SUBJECT,
        "duplicate_window": DUPLICATE_WINDOW_NS,
        "num_replicas": 1,
    })
    .to_string();
    writer.frame(OpCode::Binary, |buf| {
        write_pub_line(buf, &format!("$JS.API.STREAM.CREATE.{STREAM}"), reply_to);
        buf.extend_from_slice(itoa::Buffer::new().format(config.len()).as_bytes());
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(config.as_bytes());
        buf.extend_from_slice(b"\r\n");
    });
    writer.flush().await?;
    let reply = ws::await_reply(&mut reader, &mut writer, |message, writer| {
        let mut reply = None;
        parser.feed(message, |event| match event {
            Event::Msg(body) => reply = Some(body.to_vec()),
            Event::Ping => writer.frame_from(OpCode::Binary, nats::PONG),
            _ => {}
        })?;
        Ok(reply)
    })
    .await?;
    if is_error(&reply) {
        bail!(
            "creating the JetStream stream {STREAM} failed: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(())
}

/// `PUB <subject> <reply-to> ` or `HPUB <subject> <reply-to> `.
fn write_pub_line(buf: &mut Vec<u8>, subject: &str, reply_to: &str) {
    buf.extend_from_slice(b"PUB ");
    buf.extend_from_slice(subject.as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(reply_to.as_bytes());
    buf.push(b' ');
}

/// Appends `HPUB <subject> <reply-to> <#header bytes> <#total bytes>`, the
/// `Nats-Msg-Id` header (the id a ringcast publish of the same event
/// carries) and the payload; many fit in one WebSocket frame.
pub fn write_publish(
    buf: &mut Vec<u8>,
    subject: &str,
    reply_to: &str,
    publisher: u32,
    counter: u64,
    payload_bytes: usize,
    scheduled_ns: u64,
) {
    const ID_HEADER: &[u8] = b"NATS/1.0\r\nNats-Msg-Id: ";
    const HEADERS_END: &[u8] = b"\r\n\r\n";
    let header_len = ID_HEADER.len() + ringcast::MESSAGE_ID_LEN + HEADERS_END.len();
    buf.push(b'H');
    write_pub_line(buf, subject, reply_to);
    let mut number = itoa::Buffer::new();
    buf.extend_from_slice(number.format(header_len).as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(number.format(header_len + payload_bytes).as_bytes());
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(ID_HEADER);
    ringcast::write_message_id(buf, publisher, counter);
    buf.extend_from_slice(HEADERS_END);
    payload::write(buf, payload_bytes, scheduled_ns, publisher, counter);
    buf.extend_from_slice(b"\r\n");
}

/// Whether a JetStream API reply or PubAck reports an error
/// (`{"error":{...}}`) rather than success (`{"stream":..,"seq":..}`).
pub fn is_error(reply: &[u8]) -> bool {
    memchr::memmem::find(reply, br#""error""#).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_carries_its_id_and_reply_inbox_and_parses_back() {
        let mut buf = Vec::new();
        write_publish(&mut buf, "load-3", &inbox(2), 2, 7, 100, 5);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (line, rest) = text.split_once("\r\n").unwrap();
        let tokens: Vec<&str> = line.split(' ').collect();
        assert_eq!(tokens[..3], ["HPUB", "load-3", "_INBOX.ringcast-load.2"]);
        let (header_len, total_len): (usize, usize) =
            (tokens[3].parse().unwrap(), tokens[4].parse().unwrap());
        assert_eq!(total_len, header_len + 100);
        assert_eq!(rest.len(), total_len + 2);
        let headers = &rest[..header_len];
        assert!(headers.starts_with("NATS/1.0\r\nNats-Msg-Id: 00000002-"));
        assert!(headers.ends_with("-000000000007\r\n\r\n"));

        // As a subscriber gets it: the payload alone, stamp first.
        let mut delivered = format!("HMSG load-3 1 {header_len} {total_len}\r\n").into_bytes();
        delivered.extend_from_slice(rest.as_bytes());
        let mut stamps = Vec::new();
        Parser::default()
            .feed(&delivered, |event| {
                if let Event::Msg(payload) = event {
                    assert_eq!(payload.len(), 100);
                    stamps.push(payload::scheduled_ns(payload));
                }
            })
            .unwrap();
        assert_eq!(stamps, [Some(5)]);
    }

    #[test]
    fn tells_pub_acks_from_errors() {
        assert!(!is_error(br#"{"stream":"RINGCAST_LOAD","seq":12}"#));
        assert!(!is_error(
            br#"{"stream":"RINGCAST_LOAD","seq":12,"duplicate":true}"#
        ));
        assert!(is_error(
            br#"{"error":{"code":503,"description":"no responders"}}"#
        ));
    }
}
