//! The body of `GET /topics/{name}/messages`, cut out of the event frames
//! the ring keeps.

use std::sync::Arc;

use bytes::Bytes;

use crate::wire::frame::payload_of;
use crate::wire::json::{self, Path, Scanned};
use crate::wire::reply::write_json;

/// A window of a topic's history, as `GET /topics/{name}/messages` shows it.
pub struct History {
    pub epoch: Arc<str>,
    /// The topic's latest `seq`.
    pub seq: u64,
    /// With `since_seq`: whether every event after it was still retained.
    pub recovered: Option<bool>,
    /// The events' frames with their `seq`, oldest first.
    pub events: Vec<(u64, Bytes)>,
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
        let json = payload_of(frame);
        let Ok(Scanned {
            found: [Some(message), Some(ts), _],
            ..
        }) = json::scan(json, &EVENT_MEMBERS, Some(2))
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
