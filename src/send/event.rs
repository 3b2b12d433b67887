//! An event's frames: the plain one every subscriber can take, and the
//! `permessage-deflate` one, made at most once — by the first fan-out or
//! replay that has a compressed subscriber — and then shared by every
//! subscriber that negotiated compression, ring replays included. An event
//! no compressed subscriber receives is never deflated; REST history reads
//! the plain frame. The deflate runs under the topic's lock, like the rest
//! of the fan-out, once per event; a replay's events are deflated before
//! the topic's lock is taken (`broker::Topic::subscribe`). A subscriber's
//! queue bounds count the bytes of the frame it was given.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::metrics::Metrics;
use crate::protocol;
use crate::ws::deflate;
use crate::ws::permessage_deflate::Agreed;

/// What a connection agreed to: its window and the configured size under
/// which events go out uncompressed; and where deflating is counted.
#[derive(Clone)]
pub struct Deflate {
    pub agreed: Agreed,
    pub min_bytes: usize,
    pub metrics: Arc<Metrics>,
}

pub struct EventFrame {
    plain: Bytes,
    /// `None` inside: the event is not worth compressing.
    deflated: OnceLock<Option<Bytes>>,
}

impl EventFrame {
    pub fn new(plain: Bytes) -> Self {
        Self {
            plain,
            deflated: OnceLock::new(),
        }
    }

    /// The uncompressed frame.
    pub fn plain(&self) -> &Bytes {
        &self.plain
    }

    /// The frame for a subscriber that agreed to `deflate`, if any.
    pub fn frame_for(&self, deflate: Option<&Deflate>) -> &Bytes {
        let Some(deflate) = deflate else {
            return &self.plain;
        };
        let json = protocol::frame_json(&self.plain);
        if json.len() < deflate.min_bytes || !deflate.agreed.fits_window(json.len()) {
            return &self.plain;
        }
        self.deflated
            .get_or_init(|| {
                let deflated = deflate::deflate_text_frame(json);
                let sent = deflated.as_ref().unwrap_or(&self.plain);
                deflate.metrics.record_deflate(json.len(), sent.len());
                deflated
            })
            .as_ref()
            .unwrap_or(&self.plain)
    }
}
