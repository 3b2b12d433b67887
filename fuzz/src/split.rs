//! The `frame_split` check: `FrameDecoder` fed a stream whole and in
//! chunks must decode the same things.
//!
//! Input layout:
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | config: bits 0-1 pick `max_message_size` (0: 1 MiB, the default; 1: byte 1, so 0..=255; 2: 125; 3: 65536); bit 2 set: the body is the raw stream, clear: the body is records; bit 3 set: the first chunk is passed to `FrameDecoder::new` as leftover; bits 4-7: how many chunk-size bytes follow byte 1 |
//! | 1 | the small `max_message_size` for config 1 |
//! | 2.. | chunk sizes, used in turn, cyclically (0 means an empty `extend`) |
//! | rest | the body |
//!
//! A record is `head, len, payload[len]` and becomes one masked frame:
//! head bits 0-2 pick the opcode (text, text, binary, continuation,
//! continuation, ping, pong, close), bit 3 is FIN, bits 4-5 the length
//! encoding (0: shortest, 1: 16-bit, 2: 64-bit, 3: 64-bit with the
//! declared length taken from the next 8 bytes, so it can lie), bit 6
//! takes the mask key from the next 4 bytes (otherwise a fixed one), and
//! bit 7 breaks the frame by the next byte modulo 4: a reserved bit, no
//! mask, opcode 3 or opcode 0xB. Payload bytes are given in clear and
//! masked by the generator, so the fuzzer can write JSON into them.

use ringcast::wire::close::CloseReason;
use ringcast::wire::request::parse_client_frame;
use ringcast::ws::frame_reader::{FrameDecoder, Incoming};

/// The input split into its parts.
pub struct Plan<'a> {
    pub max_message_size: usize,
    pub leftover: bool,
    pub chunk_sizes: &'a [u8],
    pub stream: Vec<u8>,
}

impl<'a> Plan<'a> {
    pub fn new(data: &'a [u8]) -> Option<Self> {
        let (&config, rest) = data.split_first()?;
        let (&small_limit, rest) = rest.split_first()?;
        let sizes_len = usize::from(config >> 4).min(rest.len());
        let (chunk_sizes, body) = rest.split_at(sizes_len);
        let max_message_size = match config & 3 {
            0 => 1 << 20,
            1 => usize::from(small_limit),
            2 => 125,
            _ => 65_536,
        };
        let stream = if config & 4 != 0 {
            body.to_vec()
        } else {
            frames_from_records(body)
        };
        Some(Plan {
            max_message_size,
            leftover: config & 8 != 0,
            chunk_sizes,
            stream,
        })
    }

    /// The stream cut into chunks by the chunk sizes, in turn.
    pub fn chunks(&self) -> Vec<&[u8]> {
        let mut sizes = self.chunk_sizes.iter().map(|&s| usize::from(s)).cycle();
        // With no sizes or only zeros, fall back to one byte at a time.
        let progress = self.chunk_sizes.iter().any(|&s| s > 0);
        let mut rest = &self.stream[..];
        let mut chunks = Vec::new();
        while !rest.is_empty() {
            let size = if progress { sizes.next().unwrap() } else { 1 };
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }
}

/// Turns records into masked client frames (see the module docs).
pub fn frames_from_records(mut body: &[u8]) -> Vec<u8> {
    let mut take = |n: usize| -> &[u8] {
        let (taken, rest) = body.split_at(n.min(body.len()));
        body = rest;
        taken
    };
    let mut stream = Vec::new();
    while let [head] = *take(1) {
        let len = take(1).first().copied().unwrap_or(0);
        let opcode = [0x1, 0x1, 0x2, 0x0, 0x0, 0x9, 0xA, 0x8][usize::from(head & 7)];
        let fin = head & 8 != 0;
        let encoding = (head >> 4) & 3;
        let declared = if encoding == 3 {
            let mut raw = [0; 8];
            let given = take(8);
            raw[..given.len()].copy_from_slice(given);
            Some(u64::from_be_bytes(raw))
        } else {
            None
        };
        let mask: [u8; 4] = if head & 0x40 != 0 {
            let mut key = [0; 4];
            let given = take(4);
            key[..given.len()].copy_from_slice(given);
            key
        } else {
            [0x37, 0xfa, 0x21, 0x3d]
        };
        let breakage = if head & 0x80 != 0 {
            take(1).first().map(|b| b % 4)
        } else {
            None
        };
        let payload = take(usize::from(len));

        let mut first = (u8::from(fin) << 7) | opcode;
        let mut masked_bit = 0x80;
        match breakage {
            Some(0) => first |= 0x40,
            Some(1) => masked_bit = 0,
            Some(2) => first = (first & 0xF0) | 0x3,
            Some(_) => first = (first & 0xF0) | 0xB,
            None => {}
        }
        stream.push(first);
        let payload_len = payload.len() as u64;
        match (encoding, declared) {
            (_, Some(declared)) => {
                stream.push(masked_bit | 127);
                stream.extend_from_slice(&declared.to_be_bytes());
            }
            (0, _) if payload_len < 126 => stream.push(masked_bit | payload_len as u8),
            (0 | 1, _) => {
                stream.push(masked_bit | 126);
                stream.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                stream.push(masked_bit | 127);
                stream.extend_from_slice(&payload_len.to_be_bytes());
            }
        }
        if masked_bit != 0 {
            stream.extend_from_slice(&mask);
        }
        stream.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    }
    stream
}

/// What a decoder made of a stream: its items, then the error, if any.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub items: Vec<Incoming>,
    pub error: Option<CloseReason>,
}

impl Decoded {
    /// Drains `decoder`; returns false once it has failed.
    fn drain(&mut self, decoder: &mut FrameDecoder) -> bool {
        loop {
            match decoder.next_incoming() {
                Ok(Some(item)) => {
                    if let Incoming::Ping(payload) = &item {
                        assert!(payload.len() <= 125, "ping payload of {}", payload.len());
                    }
                    self.items.push(item);
                }
                Ok(None) => return true,
                Err(reason) => {
                    self.error = Some(reason);
                    return false;
                }
            }
        }
    }
}

/// The stream fed at once.
pub fn decode_whole(plan: &Plan) -> Decoded {
    let mut decoded = Decoded {
        items: Vec::new(),
        error: None,
    };
    let mut decoder = FrameDecoder::new(&[], plan.max_message_size);
    decoder.extend(&plan.stream);
    decoded.drain(&mut decoder);
    decoded
}

/// The stream fed chunk by chunk, drained after each.
pub fn decode_split(plan: &Plan) -> Decoded {
    let mut decoded = Decoded {
        items: Vec::new(),
        error: None,
    };
    let mut chunks = plan.chunks().into_iter();
    let leftover = if plan.leftover { chunks.next() } else { None };
    let mut decoder = FrameDecoder::new(leftover.unwrap_or_default(), plan.max_message_size);
    if !decoded.drain(&mut decoder) {
        return decoded;
    }
    for chunk in chunks {
        decoder.extend(chunk);
        if !decoded.drain(&mut decoder) {
            break;
        }
    }
    decoded
}

/// What `parse_client_frame` made of one message, reason text and payload
/// bytes included.
fn parse(message: &[u8]) -> String {
    format!("{:?}", parse_client_frame(&mut message.to_vec()))
}

/// The whole check.
pub fn check(data: &[u8]) {
    let Some(plan) = Plan::new(data) else {
        return;
    };
    let whole = decode_whole(&plan);
    let split = decode_split(&plan);
    assert_eq!(
        whole,
        split,
        "split changed the decoding; limit {}, chunks {:?}",
        plan.max_message_size,
        plan.chunks().iter().map(|c| c.len()).collect::<Vec<_>>(),
    );
    let messages: Vec<&[u8]> = whole
        .items
        .iter()
        .filter_map(|item| match item {
            Incoming::Message(message) => Some(&message.data[..]),
            _ => None,
        })
        .collect();
    // In order for one run, in reverse for the other, so each parse
    // follows a different one: the scratch buffers must not leak state.
    let in_order: Vec<String> = messages.iter().map(|m| parse(m)).collect();
    let mut reversed: Vec<String> = messages.iter().rev().map(|m| parse(m)).collect();
    reversed.reverse();
    assert_eq!(in_order, reversed, "parses depend on the previous parse");
    for message in messages {
        super::check_client_message(message);
    }
}
