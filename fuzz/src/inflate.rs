//! The `inflate` check: `wire::deflate::inflate`, which every compressed
//! client message goes through, and the frame reader that calls it.
//!
//! Input layout:
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | bits 0-1 pick the limit (0: 1 MiB, the default `MAX_MESSAGE_SIZE`; 1: byte 1, so 0..=255; 2: 64 × byte 1; 3: 65536); bits 2-5 a deflate level for the round trip (above 9: 9) |
//! | 1 | the small limit |
//! | 2 | fragment size for the frame reader (0: 255) |
//! | rest | the data |
//!
//! Checks, none of which may panic:
//!
//! 1. The data as a compressed message: inflated within the limit, or
//!    refused; inflating never takes more memory than the limit (this
//!    thread's allocations are counted: `CountingAllocator`), and the
//!    limit is exact: the same input inflates within its own output's
//!    length and is `TooBig` one byte under it.
//! 2. The data as a message, compressed as a client would (at the chosen
//!    level) and as the server does (`deflate_text_frame`): inflates back
//!    to the data, or is `TooBig` when the data is over the limit.
//! 3. The data as the payload of an RSV1 text message, in fragments, through
//!    `FrameDecoder` with `permessage-deflate` agreed: the same outcome as
//!    (1), as a message or the close reason it maps to, and counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use ringcast::metrics::Metrics;
use ringcast::wire::close::CloseReason;
use ringcast::wire::deflate::{self, InflateError};
use ringcast::wire::frame::payload_of;
use ringcast::ws::frame_reader::{FrameDecoder, Incoming, Message};

use super::split::frames_from_records;

/// Counts what each thread has allocated, so a check can see the most
/// memory one call held at once.
pub struct CountingAllocator;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

thread_local! {
    /// Bytes this thread allocated and has not freed (signed: it may free
    /// what another thread allocated).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// The highest `LIVE` since `peak_allocation` started counting.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn allocated(bytes: isize) {
    // `try_with`: an allocation during thread teardown is not counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed on to `System` unchanged; the counting
// touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            allocated(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            allocated(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        allocated(-(layout.size() as isize));
    }

    /// Counted as the buffer's change of size: the bound is on how large
    /// buffers grow.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            allocated(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// `f`'s result and the most memory this thread held at once during it,
/// beyond what it held before.
pub fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let result = f();
    let peak = PEAK.with(Cell::get);
    (result, (peak - before) as usize)
}

/// The input split into its parts.
pub struct Plan<'a> {
    pub limit: usize,
    pub level: u32,
    pub fragment: usize,
    pub data: &'a [u8],
}

impl<'a> Plan<'a> {
    pub fn new(data: &'a [u8]) -> Option<Self> {
        let [config, small, fragment, data @ ..] = data else {
            return None;
        };
        let small = usize::from(*small);
        let limit = match config & 3 {
            0 => 1 << 20,
            1 => small,
            2 => small * 64,
            _ => 65_536,
        };
        Some(Plan {
            limit,
            level: u32::from((config >> 2) & 0xF).min(9),
            fragment: if *fragment == 0 {
                255
            } else {
                usize::from(*fragment)
            },
            data,
        })
    }
}

/// The whole check.
pub fn check(input: &[u8]) {
    let Some(plan) = Plan::new(input) else {
        return;
    };
    // The per-thread inflater is made on first use and kept: make it now,
    // so that its own allocation is not counted against a message.
    deflate::inflate(&client_compressed(b"warm-up", 6), 100).expect("valid stream inflates");

    let outcome = check_bounded_inflate(plan.data, plan.limit);
    check_round_trips(&plan);
    check_frame_reader(&plan, &outcome);
}

/// Check 1; returns what `inflate` made of the data.
fn check_bounded_inflate(data: &[u8], limit: usize) -> Result<BytesMut, InflateError> {
    let (outcome, peak) = peak_allocation(|| deflate::inflate(data, limit));
    assert!(
        peak <= limit,
        "inflating held {peak} bytes at once, over the limit of {limit}"
    );
    if let Ok(inflated) = &outcome {
        assert!(inflated.len() <= limit, "{} > {limit}", inflated.len());
        // The allocator must be the counting one, or the bound above
        // checked nothing.
        assert!(inflated.is_empty() || peak > 0, "allocations not counted");
        let len = inflated.len();
        assert_eq!(deflate::inflate(data, len).as_ref(), Ok(inflated));
        if len > 0 {
            assert_eq!(deflate::inflate(data, len - 1), Err(InflateError::TooBig));
        }
    }
    outcome
}

/// Check 2.
fn check_round_trips(plan: &Plan) {
    let expected: Result<&[u8], &InflateError> = if plan.data.len() <= plan.limit {
        Ok(plan.data)
    } else {
        Err(&InflateError::TooBig)
    };
    let from_client = client_compressed(plan.data, plan.level);
    assert_eq!(
        deflate::inflate(&from_client, plan.limit).as_deref(),
        expected,
        "a client's message at level {}",
        plan.level
    );
    if let Some(frame) = deflate::deflate_text_frame(plan.data) {
        assert_eq!(frame[0], 0xC1, "FIN, RSV1, text");
        let plain_head = match plan.data.len() {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        assert!(
            frame.len() < plain_head + plan.data.len(),
            "deflating did not shrink the frame"
        );
        let payload = payload_of(&frame);
        assert_eq!(
            deflate::inflate(payload, plan.limit).as_deref(),
            expected,
            "the server's own frame"
        );
    }
}

/// Check 3.
fn check_frame_reader(plan: &Plan, outcome: &Result<BytesMut, InflateError>) {
    let expected = if plan.data.len() > plan.limit {
        // Refused as it arrives, before any inflating.
        Err(CloseReason::MessageTooBig)
    } else {
        match outcome {
            Ok(inflated) if std::str::from_utf8(inflated).is_ok() => {
                Ok(Incoming::Message(Message {
                    is_text: true,
                    data: inflated.clone(),
                }))
            }
            Ok(_) => Err(CloseReason::InvalidUtf8),
            Err(InflateError::TooBig) => Err(CloseReason::MessageTooBig),
            Err(InflateError::Corrupt) => Err(CloseReason::InvalidCompressedData),
        }
    };
    let metrics = Arc::new(Metrics::default());
    let mut decoder = FrameDecoder::new(&[], plan.limit).inflating(metrics.clone());
    decoder.extend(&compressed_text_frames(plan.data, plan.fragment));
    let decoded = decoder
        .next_incoming()
        .map(|item| item.expect("a whole message"));
    assert_eq!(decoded, expected);
    // Counted once inflated, UTF-8 or not.
    let inflated = plan.data.len() <= plan.limit && outcome.is_ok();
    assert_eq!(metrics.breakdown().messages_inflated, u64::from(inflated));
}

/// `message` compressed as a client sends it: raw deflate at `level`,
/// sync-flushed, its `00 00 ff ff` tail left off (RFC 7692 §7.2.1).
pub fn client_compressed(message: &[u8], level: u32) -> Vec<u8> {
    let mut compress = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(message.len() + 64);
    loop {
        let consumed = compress.total_in() as usize;
        compress
            .compress_vec(&message[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflating into memory");
        if compress.total_in() as usize == message.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(64);
    }
    out.truncate(out.len() - 4);
    out
}

/// `payload` as one masked text message with RSV1 set, in fragments of
/// `fragment` bytes (the generator of `split` writes the frames).
fn compressed_text_frames(payload: &[u8], fragment: usize) -> Vec<u8> {
    const TEXT: u8 = 0;
    const CONTINUATION: u8 = 3;
    const FIN: u8 = 0x08;
    const BROKEN: u8 = 0x80;
    /// "Broken" by RSV1: what marks a compressed message.
    const RSV1: u8 = 0;
    let mut chunks: Vec<&[u8]> = payload.chunks(fragment).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    let mut records = Vec::new();
    for (index, chunk) in chunks.into_iter().enumerate() {
        let fin = if index == last { FIN } else { 0 };
        if index == 0 {
            records.extend([BROKEN | fin | TEXT, chunk.len() as u8, RSV1]);
        } else {
            records.extend([fin | CONTINUATION, chunk.len() as u8]);
        }
        records.extend_from_slice(chunk);
    }
    frames_from_records(&records)
}
