//! ringcast's wire contract: REST topic creation, subscribe, publish, and
//! cheap recognition of the frames the server sends.

use std::sync::LazyLock;

use anyhow::{anyhow, bail, Context, Result};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::payload;
use crate::ws::{self, OpCode, WsReader, WsUrl, WsWriter};

/// Creates each topic with `POST /topics`; one that already exists (409) is fine.
pub async fn create_topics(url: &WsUrl, api_key: Option<&str>, names: &[String]) -> Result<()> {
    for name in names {
        let body = format!(r#"{{"name":"{name}"}}"#);
        let status = post(url, api_key, "/topics", &body)
            .await
            .with_context(|| format!("creating topic {name} at http://{}", url.authority()))?;
        if status != 201 && status != 409 {
            bail!("POST /topics {body} answered {status}");
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 POST on a fresh connection; returns the status code.
async fn post(url: &WsUrl, api_key: Option<&str>, path: &str, body: &str) -> Result<u16> {
    let mut stream = TcpStream::connect(url.addr).await?;
    let key_header = api_key.map_or(String::new(), |key| format!("X-API-Key: {key}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{key_header}Connection: close\r\n\r\n{body}",
        url.authority(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let status_line = response.split(|&b| b == b'\r').next().unwrap_or_default();
    std::str::from_utf8(status_line)
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP response: {}", String::from_utf8_lossy(&response)))
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

/// Subscribes and waits for the ack.
pub async fn subscribe(reader: &mut WsReader, writer: &mut WsWriter, topic: &str) -> Result<()> {
    writer.frame(OpCode::Text, |buf| {
        buf.extend_from_slice(br#"{"type":"subscribe","topic":""#);
        buf.extend_from_slice(topic.as_bytes());
        buf.extend_from_slice(br#""}"#);
    });
    writer.flush().await?;
    ws::await_reply(reader, writer, |frame, _| match classify(frame) {
        ServerFrame::Ack => Ok(Some(())),
        ServerFrame::Error => bail!("subscribe refused: {}", String::from_utf8_lossy(frame)),
        ServerFrame::Event | ServerFrame::Other => Ok(None),
    })
    .await
}

/// Queues one publish frame. Message ids are UUIDs made of the publisher index
/// and the event counter, unique within a run without a random generator.
pub fn queue_publish(
    writer: &mut WsWriter,
    topic: &str,
    publisher: u32,
    counter: u64,
    payload_bytes: usize,
    scheduled_ns: u64,
) {
    writer.frame(OpCode::Text, |buf| {
        buf.extend_from_slice(br#"{"type":"publish","topic":""#);
        buf.extend_from_slice(topic.as_bytes());
        buf.extend_from_slice(br#"","message":{"id":""#);
        write_uuid(buf, publisher, counter);
        buf.extend_from_slice(br#"","payload":"#);
        payload::write(buf, payload_bytes, scheduled_ns, publisher, counter);
        buf.extend_from_slice(b"}}");
    });
}

/// `pppppppp-0000-4000-8000-nnnnnnnnnnnn` (a syntactically valid version-4 UUID).
fn write_uuid(buf: &mut Vec<u8>, publisher: u32, counter: u64) {
    write_hex(buf, u64::from(publisher), 8);
    buf.extend_from_slice(b"-0000-4000-8000-");
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
    fn message_ids_are_uuid_shaped() {
        let mut id = Vec::new();
        write_uuid(&mut id, 1, 42);
        assert_eq!(id, b"00000001-0000-4000-8000-00000000002a");
    }
}
