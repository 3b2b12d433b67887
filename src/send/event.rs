//! An event's frames: the plain one every subscriber can take, and the
//! `permessage-deflate` one, made at most once — by the first fan-out or
//! replay that has a compressed subscriber — and then shared by every
//! subscriber that negotiated compression, ring replays included. An event
//! no compressed subscriber receives is never deflated; REST history reads
//! the plain frame. The deflate runs under the topic's lock, like the rest
//! of the fan-out, once per event; a replay's events are deflated off the
//! topic's lock, which is held only to copy their plain frames and to hand
//! the results back (`broker::Topic::subscribe`). A subscriber's queue
//! bounds count the bytes of the frame it was given.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::metrics::Metrics;
use crate::wire::deflate;
use crate::wire::frame::{opcode_of, payload_of};
use crate::wire::permessage_deflate::Agreed;

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
        let Some(deflate) = deflate.filter(|deflate| self.worth_deflating(deflate)) else {
            return &self.plain;
        };
        self.deflated
            .get_or_init(|| deflated(&self.plain, deflate))
            .as_ref()
            .unwrap_or(&self.plain)
    }

    /// The plain frame, if `frame_for(deflate)` would have to deflate it:
    /// for deflating off a lock, then handing the result to
    /// [`share_deflated`](Self::share_deflated).
    pub fn awaiting_deflate(&self, deflate: &Deflate) -> Option<&Bytes> {
        (self.deflated.get().is_none() && self.worth_deflating(deflate)).then_some(&self.plain)
    }

    /// Keeps what [`deflated`] made of this event's plain frame, unless a
    /// fan-out got there first.
    pub fn share_deflated(&self, frame: Option<Bytes>) {
        let _ = self.deflated.set(frame);
    }

    fn worth_deflating(&self, deflate: &Deflate) -> bool {
        let json = payload_of(&self.plain).len();
        json >= deflate.min_bytes && deflate.agreed.fits_window(json)
    }
}

/// `plain` (a text or binary frame) as a compressed frame, counted; `None`
/// if compressing does not make it smaller.
pub fn deflated(plain: &Bytes, deflate: &Deflate) -> Option<Bytes> {
    let json = payload_of(plain);
    let deflated = deflate::deflate_frame(opcode_of(plain), json);
    let sent = deflated.as_ref().unwrap_or(plain);
    deflate.metrics.record_deflate(json.len(), sent.len());
    deflated
}
