//! SSE text around the JSON of server frames. An event's JSON is the one
//! its topic encoded for every subscriber: the stream takes a slice of
//! that shared frame (`Bytes::slice_ref`, no copy) and writes it between
//! its own `id:` line and the blank line that ends the event, all parts
//! of a batch in one [`Chunk`], which hyper hands to one `writev`.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};
use serde::Serialize;

use crate::broker::Joined;
use crate::sse::cursor::{CursorWriter, Position};
use crate::wire::frame::payload_of;
use crate::wire::reply::{self, event_position};
use crate::wire::timestamp::Timestamp;

/// Ends an event.
const END: &[u8] = b"\n\n";
/// Continues a `data:` field after a line break inside the JSON (a
/// payload is passed through as sent, whitespace included).
const NEXT_DATA_LINE: &[u8] = b"\ndata: ";
/// The heartbeat: a comment line, which `EventSource` ignores.
pub const HEARTBEAT: &[u8] = b": ping\n\n";

/// Bytes written as one piece of the response body: many parts, handed
/// to the socket together.
#[derive(Debug, Default)]
pub struct Chunk {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Chunk {
    pub fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.remaining += part.len();
            self.parts.push_back(part);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Appends `other`'s parts.
    pub fn append(&mut self, other: &mut Chunk) {
        self.remaining += std::mem::take(&mut other.remaining);
        self.parts.append(&mut other.parts);
    }

    /// One server frame as an SSE event: a topic event with its cursor and
    /// no `event:` line (`EventSource.onmessage` gets it), anything else
    /// (`info`, `error`) named by its `type`.
    pub fn push_frame(&mut self, frame: &Bytes, cursor: &mut CursorWriter) {
        let json = frame.slice_ref(payload_of(frame));
        match event_position(&json) {
            Some((topic, seq)) => self.push(cursor.advance(topic, seq)),
            None => self.push(event_line(reply::frame_type(&json).unwrap_or("message"))),
        }
        self.push_data(json);
        self.push(Bytes::from_static(END));
    }

    /// `json` as the rest of a `data:` field, one line per line it has.
    fn push_data(&mut self, mut json: Bytes) {
        while let Some(at) = memchr::memchr2(b'\n', b'\r', &json) {
            let line = json.split_to(at);
            self.push(line);
            json.advance(1);
            self.push(Bytes::from_static(NEXT_DATA_LINE));
        }
        self.push(json);
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |part| part)
    }

    fn advance(&mut self, mut count: usize) {
        while count > 0 {
            let front = self.parts.front_mut().expect("advanced past the end");
            let taken = count.min(front.len());
            front.advance(taken);
            self.remaining -= taken;
            count -= taken;
            if front.is_empty() {
                self.parts.pop_front();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slice, part) in slices.iter_mut().zip(&self.parts) {
            *slice = IoSlice::new(part);
            filled += 1;
        }
        filled
    }
}

/// `event: <name>` and the start of the `data:` line.
fn event_line(name: &str) -> Bytes {
    match name {
        "info" => Bytes::from_static(b"event: info\ndata: "),
        "error" => Bytes::from_static(b"event: error\ndata: "),
        "join" => Bytes::from_static(b"event: join\ndata: "),
        "leave" => Bytes::from_static(b"event: leave\ndata: "),
        _ => Bytes::from(format!("event: {name}\ndata: ")),
    }
}

/// A topic of a stream as it was subscribed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subscribed {
    pub topic: String,
    /// The topic's latest `seq` at join.
    pub seq: u64,
    pub epoch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// Where the stream's events of it start.
    #[serde(skip)]
    pub delivers_after: u64,
}

impl Subscribed {
    pub fn new(joined: &Joined<'_>) -> Self {
        Self {
            topic: joined.topic.to_owned(),
            seq: joined.seq,
            epoch: joined.epoch.to_owned(),
            recovered: joined.recovered,
            delivers_after: joined.delivers_after,
        }
    }

    /// Its place in the cursor before the stream's first event of it.
    pub fn start(&self) -> Position {
        Position {
            topic: self.topic.clone(),
            epoch: self.epoch.clone(),
            seq: self.delivers_after,
        }
    }
}

/// The first event of a stream: `event: subscribed` with every topic's
/// `seq`, `epoch` and, on a resume, `recovered`.
pub fn subscribed_event(topics: &[Subscribed]) -> Bytes {
    #[derive(Serialize)]
    struct SubscribedFrame<'a> {
        r#type: &'static str,
        topics: &'a [Subscribed],
        ts: Timestamp,
    }
    let mut text = b"event: subscribed\ndata: ".to_vec();
    reply::write_json(
        &mut text,
        &SubscribedFrame {
            r#type: "subscribed",
            topics,
            ts: Timestamp::now(),
        },
    );
    text.extend_from_slice(END);
    Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::error::ErrorCode;
    use crate::wire::request::Message;

    fn text(mut chunk: Chunk) -> String {
        let bytes = chunk.copy_to_bytes(chunk.remaining());
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn an_event_is_framed_around_its_shared_json() {
        let message = Message {
            id: "6f1c",
            payload: b"{\"a\":\n1}",
        };
        let frame = reply::event("t", &message, 4, Timestamp::now());
        let mut cursor = CursorWriter::new(&[Position {
            topic: "t".into(),
            epoch: "e".into(),
            seq: 0,
        }]);
        let mut chunk = Chunk::default();
        chunk.push_frame(&frame, &mut cursor);
        let json = payload_of(&frame);
        assert!(
            chunk
                .parts
                .iter()
                .any(|part| part.as_ptr() == json.as_ptr()),
            "the JSON is a slice of the frame, not a copy"
        );
        let text = text(chunk);
        assert!(
            text.starts_with("id: t.e.4\ndata: {\"type\":\"event\""),
            "{text}"
        );
        assert!(text.contains("\"payload\":{\"a\":\ndata: 1}"), "{text}");
        assert!(text.ends_with("}\n\n"), "{text}");
    }

    #[test]
    fn notices_are_named_by_their_type() {
        let mut cursor = CursorWriter::new(&[]);
        let mut chunk = Chunk::default();
        chunk.push_frame(&reply::info(Some("t"), "topic_deleted"), &mut cursor);
        chunk.push_frame(
            &reply::error(None, ErrorCode::SlowConsumer, "cut"),
            &mut cursor,
        );
        let text = text(chunk);
        assert!(
            text.starts_with("event: info\ndata: {\"type\":\"info\""),
            "{text}"
        );
        assert!(
            text.contains("}\n\nevent: error\ndata: {\"type\":\"error\""),
            "{text}"
        );
    }
}
