//! The `permessage-deflate` codec with no context kept between messages
//! (RFC 7692 §7.2): events are deflated once into a complete frame shared
//! by every subscriber that negotiated it, and client messages are inflated
//! within a hard output limit.
//!
//! The deflate and inflate states are per thread, reset for each message,
//! so their cost is per core, never per connection. Events are deflated at
//! the fastest level with a sync flush, whose `00 00 ff ff` tail is left
//! off (§7.2.1); a compressed client message is inflated into a buffer
//! grown in steps up to the limit and never past it, and output beyond it
//! (seen through a one-byte probe) refuses the message: a deflate bomb
//! costs at most `MAX_MESSAGE_SIZE` bytes.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use fastwebsockets::OpCode;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::wire::frame::{self, MAX_HEADER_LEN, RSV1};

/// What ends a sync-flushed deflate stream, removed from the wire (§7.2.1)
/// and put back before inflating (§7.2.2).
const SYNC_FLUSH_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// How much the inflate output grows at a time, up to the limit.
const INFLATE_STEP: usize = 16 * 1024;

/// The window sizes, in bits, deflate can compress within: zlib has no
/// 256-byte window (8 bits).
const MIN_COMPRESS_WINDOW_BITS: u8 = 9;
const MAX_WINDOW_BITS: u8 = 15;

thread_local! {
    /// One compressor per window size, made when first needed.
    static COMPRESS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([const { None }; 7]) };
    static DECOMPRESS: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Why a compressed message was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit.
    TooBig,
    /// It is not a deflate stream.
    Corrupt,
}

/// The complete compressed text frame for `message`, or `None` if
/// deflating does not make the frame smaller.
pub fn deflate_text_frame(message: &[u8]) -> Option<Bytes> {
    deflate_frame(OpCode::Text, message)
}

/// The complete compressed frame of type `opcode` (text or binary) for
/// `message`, deflated with the full 32 KiB window, or `None` if deflating
/// does not make the frame smaller.
pub fn deflate_frame(opcode: OpCode, message: &[u8]) -> Option<Bytes> {
    let frame = compressed_frame(opcode, message, MAX_WINDOW_BITS);
    (frame.len() < frame::server_frame_len(message.len())).then_some(frame)
}

/// The complete compressed frame of type `opcode` for `message`, whatever
/// its size, for a client that inflates within 2^`window_bits` bytes
/// (`server_max_window_bits`, 8 to 15). `None` only for a message over 256
/// bytes and an 8-bit window, which zlib cannot compress within (a stream
/// refers no further back than its own length).
pub fn deflate_frame_within(opcode: OpCode, message: &[u8], window_bits: u8) -> Option<Bytes> {
    if window_bits < MIN_COMPRESS_WINDOW_BITS && message.len() > 1 << window_bits {
        return None;
    }
    let window_bits = window_bits.clamp(MIN_COMPRESS_WINDOW_BITS, MAX_WINDOW_BITS);
    Some(compressed_frame(opcode, message, window_bits))
}

/// `message` deflated at the fastest level within a window of
/// 2^`window_bits` bytes and sync-flushed, its tail left off, in a final
/// frame with RSV1 set.
fn compressed_frame(opcode: OpCode, message: &[u8], window_bits: u8) -> Bytes {
    let mut buf = Vec::with_capacity(MAX_HEADER_LEN + message.len() + 16);
    buf.resize(MAX_HEADER_LEN, 0);
    COMPRESS.with_borrow_mut(|compressors| {
        let compress = compressors[usize::from(window_bits - MIN_COMPRESS_WINDOW_BITS)]
            .get_or_insert_with(|| {
                Compress::new_with_window_bits(Compression::fast(), false, window_bits)
            });
        compress.reset();
        loop {
            if buf.len() == buf.capacity() {
                buf.reserve(64);
            }
            let consumed = compress.total_in() as usize;
            compress
                .compress_vec(&message[consumed..], &mut buf, FlushCompress::Sync)
                .expect("deflating into memory cannot fail");
            let done = compress.total_in() as usize == message.len();
            if done && buf.len() < buf.capacity() {
                break;
            }
        }
    });
    debug_assert!(buf.ends_with(&SYNC_FLUSH_TAIL));
    buf.truncate(buf.len() - SYNC_FLUSH_TAIL.len());
    let payload_len = buf.len() - MAX_HEADER_LEN;
    let (mut head, head_len) = frame::server_header(opcode, payload_len);
    head[0] |= RSV1;
    let start = MAX_HEADER_LEN - head_len;
    buf[start..MAX_HEADER_LEN].copy_from_slice(&head[..head_len]);
    Bytes::from(buf).slice(start..)
}

/// Inflates one compressed message into at most `limit` bytes: a message
/// that would inflate further is refused without allocating past the limit.
pub fn inflate(compressed: &[u8], limit: usize) -> Result<BytesMut, InflateError> {
    DECOMPRESS.with_borrow_mut(|decompress| {
        decompress.reset(false);
        let mut out = Vec::new();
        // Where output past the limit would go, to learn that there is some.
        let mut probe = [0];
        for input in [compressed, &SYNC_FLUSH_TAIL[..]] {
            let mut consumed = 0;
            loop {
                let (total_in, total_out) = (decompress.total_in(), decompress.total_out());
                let rest = &input[consumed..];
                let probing = out.len() == limit;
                let status = if probing {
                    decompress.decompress(rest, &mut probe, FlushDecompress::Sync)
                } else {
                    if out.len() == out.capacity() {
                        out.reserve_exact(INFLATE_STEP.min(limit - out.len()));
                    }
                    decompress.decompress_vec(rest, &mut out, FlushDecompress::Sync)
                }
                .map_err(|_| InflateError::Corrupt)?;
                if probing && decompress.total_out() > total_out {
                    return Err(InflateError::TooBig);
                }
                consumed += (decompress.total_in() - total_in) as usize;
                // A final block ends the message (§7.2.3.3); nothing may
                // follow it.
                if status == Status::StreamEnd {
                    return if consumed == input.len() {
                        Ok(into_bytes_mut(out))
                    } else {
                        Err(InflateError::Corrupt)
                    };
                }
                if decompress.total_in() == total_in && decompress.total_out() == total_out {
                    break;
                }
            }
        }
        Ok(into_bytes_mut(out))
    })
}

/// The inflated message without its spare capacity. A `Vec` with spare
/// capacity becomes `Bytes` through a separate allocation of bookkeeping,
/// which would take an output of exactly the limit past it; a full one
/// converts in place (found by the `inflate` fuzz target).
fn into_bytes_mut(mut out: Vec<u8>) -> BytesMut {
    out.shrink_to_fit();
    BytesMut::from(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::DeflateEncoder;
    use std::io::Write;

    /// A compressed message as a client sends it: sync-flushed raw deflate
    /// without its tail.
    fn client_message(message: &[u8]) -> Vec<u8> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(message).unwrap();
        encoder.flush().unwrap();
        let mut out = encoder.get_ref().clone();
        assert!(out.ends_with(&SYNC_FLUSH_TAIL));
        out.truncate(out.len() - 4);
        out
    }

    fn json(len: usize) -> Vec<u8> {
        let body = "{\"type\":\"event\",\"topic\":\"orders\",\"data\":\"x\"}".repeat(len / 40 + 1);
        body.as_bytes()[..len].to_vec()
    }

    #[test]
    fn a_deflated_frame_carries_rsv1_and_inflates_back() {
        for len in [200, 1024, 4096, 70_000] {
            let message = json(len);
            let frame = deflate_text_frame(&message).expect("JSON compresses");
            assert_eq!(frame[0], 0xC1, "FIN, RSV1, text");
            let inflated = inflate(frame::payload_of(&frame), len).unwrap();
            assert_eq!(&inflated[..], &message[..]);
        }
    }

    #[test]
    fn what_does_not_shrink_is_not_deflated() {
        assert_eq!(deflate_text_frame(b"{}"), None);
        assert_eq!(deflate_text_frame(b""), None);
    }

    /// A compressed message inflated by an inflater limited to a window of
    /// 2^`window_bits` bytes, which fails on any reference further back.
    fn inflates_within(payload: &[u8], window_bits: u8) -> Vec<u8> {
        let mut decompress = Decompress::new_with_window_bits(false, window_bits);
        let mut input = payload.to_vec();
        input.extend_from_slice(&SYNC_FLUSH_TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        decompress
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("inflates within the window");
        out
    }

    #[test]
    fn a_frame_within_a_window_is_always_deflated_and_inflates_within_it() {
        for window_bits in 9..=15 {
            for (opcode, first_byte, message) in [
                (OpCode::Text, 0xC1, json(100_000)),
                (OpCode::Binary, 0xC2, b"{}".to_vec()),
                (OpCode::Text, 0xC1, Vec::new()),
            ] {
                let frame = deflate_frame_within(opcode, &message, window_bits).unwrap();
                assert_eq!(frame[0], first_byte, "FIN, RSV1, opcode");
                let inflated = inflates_within(frame::payload_of(&frame), window_bits);
                assert_eq!(inflated, message, "window bits {window_bits}");
            }
        }
        assert!(deflate_frame_within(OpCode::Text, &json(256), 8).is_some());
        assert_eq!(deflate_frame_within(OpCode::Text, &json(257), 8), None);
    }

    #[test]
    fn inflates_client_messages_up_to_exactly_the_limit() {
        let message = json(50_000);
        let compressed = client_message(&message);
        assert_eq!(&inflate(&compressed, 50_000).unwrap()[..], &message[..]);
        assert_eq!(inflate(&compressed, 49_999), Err(InflateError::TooBig));
        assert_eq!(&inflate(&client_message(b""), 0).unwrap()[..], b"");
    }

    #[test]
    fn a_deflate_bomb_is_refused_at_the_limit() {
        let compressed = client_message(&vec![b'a'; 16 << 20]);
        assert!(compressed.len() < 32 << 10);
        assert_eq!(inflate(&compressed, 1 << 20), Err(InflateError::TooBig));
    }

    #[test]
    fn a_final_block_ends_the_message() {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(b"{\"op\":\"ping\"}").unwrap();
        let finished = encoder.finish().unwrap();
        assert_eq!(&inflate(&finished, 100).unwrap()[..], b"{\"op\":\"ping\"}");
        let mut trailing = finished.clone();
        trailing.push(0);
        assert_eq!(inflate(&trailing, 100), Err(InflateError::Corrupt));
    }

    #[test]
    fn garbage_is_corrupt() {
        assert_eq!(inflate(&[0xff; 32], 1000), Err(InflateError::Corrupt));
    }
}
