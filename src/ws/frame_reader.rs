//! Reading client WebSocket frames with no buffer held while idle.
//!
//! fastwebsockets' reader allocates an 8 KiB buffer per connection up front
//! and keeps whatever capacity the largest frame needed, which alone is more
//! than ringcast's whole per-connection budget. This reader waits for the
//! socket to become readable before it reserves anything and lets its buffer
//! go as soon as every byte has been decoded, so an idle subscriber costs no
//! read buffer at all. The decoding itself is sans-IO (`FrameDecoder`), which
//! is what the tests and fuzz targets drive with arbitrary splits.
//!
//! RFC 6455 rules enforced here: client frames must be masked, reserved bits
//! and unknown opcodes are protocol errors, control frames are short and
//! unfragmented, fragments reassemble into one message within the size
//! limit, and text messages are UTF-8. With `permessage-deflate` agreed
//! (RFC 7692 §6), RSV1 marks a compressed message on its first frame, and
//! the reassembled message is inflated within the same size limit.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use fastwebsockets::OpCode;
use tokio::net::tcp::OwnedReadHalf;

use crate::metrics::Metrics;
use crate::wire::close::CloseReason;
use crate::wire::deflate::{self, InflateError};
use crate::wire::frame::{read_client_header, ClientHeader};

/// Bytes reserved for a read: the smallest size, used while reads are
/// small, doubled while reads fill what was reserved (a busy publisher),
/// up to the largest.
const MIN_READ_CHUNK: usize = 4096;
const MAX_READ_CHUNK: usize = 64 * 1024;

/// A complete text or binary message, unmasked, reassembled and inflated.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    /// A text message (its data is UTF-8) rather than a binary one.
    pub is_text: bool,
    pub data: BytesMut,
}

impl Message {
    /// The opcode of a frame carrying this message.
    pub fn opcode(&self) -> OpCode {
        if self.is_text {
            OpCode::Text
        } else {
            OpCode::Binary
        }
    }
}

/// What a client sent, once a whole message or control frame is in.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Message(Message),
    /// A ping with its payload, to be echoed in a pong.
    Ping(BytesMut),
    Pong,
}

/// Turns the client's byte stream into messages and control frames.
pub struct FrameDecoder {
    buffer: BytesMut,
    /// The data message being reassembled from fragments, if any.
    fragments: Option<Fragments>,
    max_message_size: usize,
    read_chunk: usize,
    /// `permessage-deflate` was agreed: RSV1 is allowed, and inflated
    /// messages are counted here.
    inflating: Option<Arc<Metrics>>,
}

struct Fragments {
    is_text: bool,
    compressed: bool,
    data: BytesMut,
    /// How much of an uncompressed text message's data is known to be
    /// UTF-8: checked fragment by fragment, so an invalid one fails the
    /// message at once rather than once it is complete (RFC 6455 §8.1).
    utf8_checked: usize,
}

impl Fragments {
    /// Checks the data added since the last check; a code point cut
    /// between two fragments waits for the rest of it.
    fn check_utf8(&mut self) -> Result<(), CloseReason> {
        if !self.is_text || self.compressed {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(&self.data[self.utf8_checked..]) {
            Ok(_) => self.utf8_checked = self.data.len(),
            Err(err) if err.error_len().is_none() => self.utf8_checked += err.valid_up_to(),
            Err(_) => return Err(CloseReason::InvalidUtf8),
        }
        Ok(())
    }
}

impl FrameDecoder {
    /// A decoder starting with `leftover` (bytes read past the upgrade
    /// request) and refusing messages over `max_message_size` bytes.
    pub fn new(leftover: &[u8], max_message_size: usize) -> Self {
        Self {
            buffer: BytesMut::from(leftover),
            fragments: None,
            max_message_size,
            read_chunk: MIN_READ_CHUNK,
            inflating: None,
        }
    }

    /// Accepts compressed messages (`permessage-deflate` was agreed),
    /// counting them in `metrics`.
    pub fn inflating(self, metrics: Arc<Metrics>) -> Self {
        Self {
            inflating: Some(metrics),
            ..self
        }
    }

    /// Appends bytes received from the client.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message or control frame; `Ok(None)` when more
    /// bytes are needed; `Err` with the reason to close the connection.
    pub fn next_incoming(&mut self) -> Result<Option<Incoming>, CloseReason> {
        loop {
            let Some(header) = self.parse_header()? else {
                return Ok(None);
            };
            let frame_len = header.header_len + header.payload_len;
            // The buffer grows only as bytes arrive, not by what a header
            // claims is coming.
            if self.buffer.len() < frame_len {
                return Ok(None);
            }
            self.buffer.advance(header.header_len);
            let mut payload = self.buffer.split_to(header.payload_len);
            fastwebsockets::unmask(&mut payload, header.mask);
            if let Some(incoming) = self.accept_frame(&header, payload)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// The next message or control frame from what was read already, if
    /// one is complete.
    pub fn next_buffered(&mut self) -> Result<Option<Incoming>, CloseReason> {
        let incoming = self.next_incoming()?;
        self.release_if_drained();
        Ok(incoming)
    }

    /// Lets go of the read buffer once everything in it has been decoded,
    /// so an idle connection holds none.
    fn release_if_drained(&mut self) {
        if self.buffer.is_empty() && self.buffer.capacity() > 0 {
            self.buffer = BytesMut::new();
        }
    }

    /// Fewer, larger reads for a connection that sends a lot; small
    /// buffers again once it quietens.
    fn adapt_read_chunk(&mut self, read: usize, spare: usize) {
        if read == spare {
            self.read_chunk = (self.read_chunk * 2).min(MAX_READ_CHUNK);
        } else if read < self.read_chunk / 4 {
            self.read_chunk = (self.read_chunk / 2).max(MIN_READ_CHUNK);
        }
    }

    fn parse_header(&self) -> Result<Option<ClientHeader>, CloseReason> {
        read_client_header(
            &self.buffer,
            self.inflating.is_some(),
            self.max_message_size,
        )
    }

    fn accept_frame(
        &mut self,
        header: &ClientHeader,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, CloseReason> {
        let ClientHeader {
            fin,
            compressed,
            opcode,
            ..
        } = *header;
        // RSV1 belongs on the first frame of a data message only (§6.1).
        if compressed && !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return Err(CloseReason::ProtocolError);
        }
        match (opcode, self.fragments.as_mut()) {
            (OpCode::Text | OpCode::Binary, None) => {
                let is_text = opcode == OpCode::Text;
                if fin {
                    return self
                        .complete_message(is_text, compressed, payload, 0)
                        .map(Some);
                }
                self.fragments
                    .insert(Fragments {
                        is_text,
                        compressed,
                        data: payload,
                        utf8_checked: 0,
                    })
                    .check_utf8()?;
                Ok(None)
            }
            (OpCode::Continuation, Some(fragments)) => {
                if fragments.data.len() + payload.len() > self.max_message_size {
                    return Err(CloseReason::MessageTooBig);
                }
                fragments.data.extend_from_slice(&payload);
                if !fin {
                    fragments.check_utf8()?;
                    return Ok(None);
                }
                let Fragments {
                    is_text,
                    compressed,
                    data,
                    utf8_checked,
                } = self.fragments.take().expect("in progress");
                self.complete_message(is_text, compressed, data, utf8_checked)
                    .map(Some)
            }
            (OpCode::Close, _) => Err(client_close(&payload)),
            (OpCode::Ping, _) => Ok(Some(Incoming::Ping(payload))),
            (OpCode::Pong, _) => Ok(Some(Incoming::Pong)),
            // A new data frame inside a fragmented message, or a
            // continuation with nothing to continue.
            _ => Err(CloseReason::ProtocolError),
        }
    }

    /// Inflates a compressed message, then checks that a text one is
    /// UTF-8 past the `utf8_checked` bytes already known to be.
    fn complete_message(
        &self,
        is_text: bool,
        compressed: bool,
        data: BytesMut,
        utf8_checked: usize,
    ) -> Result<Incoming, CloseReason> {
        let data = if compressed {
            let inflated =
                deflate::inflate(&data, self.max_message_size).map_err(|err| match err {
                    InflateError::TooBig => CloseReason::MessageTooBig,
                    InflateError::Corrupt => CloseReason::InvalidCompressedData,
                })?;
            if let Some(metrics) = &self.inflating {
                metrics.record_inflate();
            }
            inflated
        } else {
            data
        };
        complete_message(is_text, data, utf8_checked)
    }
}

fn complete_message(
    is_text: bool,
    data: BytesMut,
    utf8_checked: usize,
) -> Result<Incoming, CloseReason> {
    // SIMD validation: at ingress rates core's byte-wise check was a
    // visible share of a publish.
    if is_text && simdutf8::basic::from_utf8(&data[utf8_checked..]).is_err() {
        return Err(CloseReason::InvalidUtf8);
    }
    Ok(Incoming::Message(Message { is_text, data }))
}

/// Echoes a valid client close code (RFC 6455 §5.5.1, §7.4): the codes
/// IANA registered for use in a close frame (1004–1006 and 1015 never are).
/// The reason goes back as sent; a close frame's 125 bytes bound it.
fn client_close(payload: &[u8]) -> CloseReason {
    match payload {
        [] => CloseReason::ClientClosed {
            code: 1000,
            reason: "".into(),
        },
        [_] => CloseReason::ProtocolError,
        [high, low, reason @ ..] => match std::str::from_utf8(reason) {
            Err(_) => CloseReason::InvalidUtf8,
            Ok(reason) => match u16::from_be_bytes([*high, *low]) {
                code @ (1000..=1003 | 1007..=1014 | 3000..=4999) => CloseReason::ClientClosed {
                    code,
                    reason: reason.into(),
                },
                _ => CloseReason::ProtocolError,
            },
        },
    }
}

/// A message or control frame, and whether the socket was read for it:
/// after the first, the frames of one read come from the buffer.
pub struct Received {
    pub incoming: Incoming,
    pub read_socket: bool,
}

/// Reads from the socket until the decoder yields something. Waits for
/// readiness before reserving a buffer, so a connection parked here holds
/// no read buffer.
pub async fn read_incoming(
    socket: &OwnedReadHalf,
    decoder: &mut FrameDecoder,
) -> Result<Received, CloseReason> {
    let mut read_socket = false;
    loop {
        if let Some(incoming) = decoder.next_buffered()? {
            return Ok(Received {
                incoming,
                read_socket,
            });
        }
        socket
            .readable()
            .await
            .map_err(|_| CloseReason::ConnectionLost)?;
        decoder.buffer.reserve(decoder.read_chunk);
        let spare = decoder.buffer.capacity() - decoder.buffer.len();
        match socket.try_read_buf(&mut decoder.buffer) {
            Ok(0) => return Err(CloseReason::ConnectionLost),
            Ok(read) => {
                read_socket = true;
                decoder.adapt_read_chunk(read, spare);
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(CloseReason::ConnectionLost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        let mut masked = payload.to_vec();
        fastwebsockets::unmask(&mut masked, MASK);
        out.extend_from_slice(&masked);
        out
    }

    fn decode_all(decoder: &mut FrameDecoder) -> Result<Vec<Incoming>, CloseReason> {
        let mut out = Vec::new();
        while let Some(incoming) = decoder.next_incoming()? {
            out.push(incoming);
        }
        Ok(out)
    }

    fn closed(code: u16, reason: &str) -> CloseReason {
        CloseReason::ClientClosed {
            code,
            reason: reason.into(),
        }
    }

    fn message(bytes: &[u8]) -> Incoming {
        Incoming::Message(Message {
            is_text: true,
            data: BytesMut::from(bytes),
        })
    }

    fn binary(bytes: &[u8]) -> Incoming {
        Incoming::Message(Message {
            is_text: false,
            data: BytesMut::from(bytes),
        })
    }

    #[test]
    fn decodes_the_same_whatever_the_split() {
        let mut stream = frame(true, 1, b"hello");
        stream.extend(frame(false, 2, &[7; 200]));
        stream.extend(frame(true, 9, b"p"));
        stream.extend(frame(true, 0, &[8; 70_000]));
        let expected = vec![
            message(b"hello"),
            Incoming::Ping(BytesMut::from(&b"p"[..])),
            binary(&[[7u8; 200].as_slice(), &[8; 70_000]].concat()),
        ];
        for chunk in [1, 2, 3, 7, 64, 4096, stream.len()] {
            let mut decoder = FrameDecoder::new(&[], 1 << 20);
            let mut decoded = Vec::new();
            for piece in stream.chunks(chunk) {
                decoder.extend(piece);
                decoded.extend(decode_all(&mut decoder).unwrap());
            }
            assert_eq!(decoded, expected, "chunk size {chunk}");
        }
    }

    #[test]
    fn leftover_bytes_come_first() {
        let bytes = frame(true, 1, b"{}");
        let mut decoder = FrameDecoder::new(&bytes, 100);
        assert_eq!(decode_all(&mut decoder), Ok(vec![message(b"{}")]));
    }

    #[test]
    fn protocol_violations_close_with_the_right_reason() {
        let mut unmasked = frame(true, 1, b"x");
        unmasked[1] &= 0x7F;
        let mut reserved_bit = frame(true, 1, b"x");
        reserved_bit[0] |= 0x40;
        let cases = [
            (unmasked, CloseReason::ProtocolError),
            (reserved_bit, CloseReason::ProtocolError),
            (frame(true, 3, b""), CloseReason::ProtocolError),
            (frame(false, 9, b""), CloseReason::ProtocolError),
            (frame(true, 9, &[0; 126]), CloseReason::ProtocolError),
            (frame(true, 0, b"x"), CloseReason::ProtocolError),
            (frame(true, 1, &[0xFF]), CloseReason::InvalidUtf8),
            (frame(true, 2, &[0; 101]), CloseReason::MessageTooBig),
            (frame(true, 8, b""), closed(1000, "")),
            (frame(true, 8, &[0x0F, 0xA0]), closed(4000, "")),
            (frame(true, 8, b"\x03\xE8bye"), closed(1000, "bye")),
            (frame(true, 8, &[0x03, 0xEC]), CloseReason::ProtocolError),
            (frame(true, 8, &[0x03, 0xF6]), closed(1014, "")),
            (frame(true, 8, &[0x03, 0xF7]), CloseReason::ProtocolError),
            (
                frame(true, 8, &[0x03, 0xE8, 0xFF]),
                CloseReason::InvalidUtf8,
            ),
        ];
        for (bytes, reason) in cases {
            let mut decoder = FrameDecoder::new(&bytes, 100);
            assert_eq!(decode_all(&mut decoder), Err(reason), "{bytes:02x?}");
        }
    }

    /// A raw deflate stream, sync-flushed, without its `00 00 ff ff` tail.
    fn deflated(message: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(message).unwrap();
        encoder.flush().unwrap();
        let mut out = encoder.get_ref().clone();
        out.truncate(out.len() - 4);
        out
    }

    fn compressed(mut frame: Vec<u8>) -> Vec<u8> {
        frame[0] |= 0x40;
        frame
    }

    #[test]
    fn with_deflate_agreed_rsv1_marks_a_compressed_message() {
        let text = br#"{"type":"ping","request_id":"aaaaaaaaaaaaaaaaaaaaaaaa"}"#;
        let payload = deflated(text);
        let (head, tail) = payload.split_at(payload.len() / 2);
        let mut stream = compressed(frame(true, 1, &payload));
        stream.extend(compressed(frame(false, 1, head)));
        stream.extend(frame(true, 9, b"p"));
        stream.extend(frame(true, 0, tail));
        stream.extend(frame(true, 1, b"plain"));
        let mut decoder = FrameDecoder::new(&stream, 1000).inflating(Arc::default());
        assert_eq!(
            decode_all(&mut decoder),
            Ok(vec![
                message(text),
                Incoming::Ping(BytesMut::from(&b"p"[..])),
                message(text),
                message(b"plain"),
            ])
        );
    }

    #[test]
    fn compressed_messages_are_checked_after_inflating() {
        let mut rsv1_continuation = frame(false, 1, &deflated(b"ab")[..1]);
        rsv1_continuation.extend(compressed(frame(true, 0, &deflated(b"ab")[1..])));
        let cases = [
            (compressed(frame(true, 9, b"")), CloseReason::ProtocolError),
            (rsv1_continuation, CloseReason::ProtocolError),
            (
                compressed(frame(true, 1, &deflated(&[b'a'; 101]))),
                CloseReason::MessageTooBig,
            ),
            (
                compressed(frame(true, 1, &deflated(&[0xFF]))),
                CloseReason::InvalidUtf8,
            ),
            (
                compressed(frame(true, 2, &[0xFF; 8])),
                CloseReason::InvalidCompressedData,
            ),
        ];
        for (bytes, reason) in cases {
            let mut decoder = FrameDecoder::new(&bytes, 100).inflating(Arc::default());
            assert_eq!(decode_all(&mut decoder), Err(reason), "{bytes:02x?}");
        }
        let mut rsv2 = frame(true, 1, b"x");
        rsv2[0] |= 0x20;
        let mut decoder = FrameDecoder::new(&rsv2, 100).inflating(Arc::default());
        assert_eq!(decode_all(&mut decoder), Err(CloseReason::ProtocolError));
    }

    #[test]
    fn fragments_are_limited_in_total_and_checked_as_utf8_when_complete() {
        let mut decoder = FrameDecoder::new(&[], 100);
        decoder.extend(&frame(false, 1, &[b'a'; 60]));
        decoder.extend(&frame(false, 0, &[b'a'; 60]));
        assert_eq!(decode_all(&mut decoder), Err(CloseReason::MessageTooBig));

        let euro = "€".as_bytes();
        let mut decoder = FrameDecoder::new(&[], 100);
        decoder.extend(&frame(false, 1, &euro[..1]));
        decoder.extend(&frame(true, 9, b""));
        decoder.extend(&frame(true, 0, &euro[1..]));
        assert_eq!(
            decode_all(&mut decoder),
            Ok(vec![Incoming::Ping(BytesMut::new()), message(euro)]),
            "a control frame may come between fragments"
        );
    }

    #[test]
    fn a_text_message_fails_at_its_first_invalid_fragment() {
        let mut decoder = FrameDecoder::new(&[], 100);
        decoder.extend(&frame(false, 1, b"ok"));
        decoder.extend(&frame(false, 0, &[0xF4, 0x90, 0x80, 0x80]));
        assert_eq!(decode_all(&mut decoder), Err(CloseReason::InvalidUtf8));

        let euro = "€".as_bytes();
        let mut decoder = FrameDecoder::new(&[], 100);
        for (at, fragment) in euro.chunks(1).enumerate() {
            decoder.extend(&frame(at == 2, if at == 0 { 1 } else { 0 }, fragment));
        }
        decoder.extend(&frame(false, 2, &[0xFF]));
        decoder.extend(&frame(true, 0, &[0xFE]));
        assert_eq!(
            decode_all(&mut decoder),
            Ok(vec![message(euro), binary(&[0xFF, 0xFE])]),
            "a code point cut between fragments waits for its rest; binary is not UTF-8"
        );
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_payload_arrives() {
        for (length, reason) in [
            (u64::MAX >> 1, CloseReason::MessageTooBig),
            (1 << 63, CloseReason::ProtocolError),
        ] {
            let mut header = vec![0x82, 0x80 | 127];
            header.extend_from_slice(&length.to_be_bytes());
            header.extend_from_slice(&MASK);
            let mut decoder = FrameDecoder::new(&header, 1 << 20);
            assert_eq!(decoder.next_incoming(), Err(reason), "length {length:#x}");
        }
    }

    #[test]
    fn the_buffer_is_released_once_drained() {
        let mut decoder = FrameDecoder::new(&frame(true, 1, b"{}"), 100);
        assert!(decoder.next_incoming().unwrap().is_some());
        decoder.release_if_drained();
        assert_eq!(decoder.buffer.capacity(), 0);
    }

    #[test]
    fn reads_grow_while_they_fill_the_buffer_and_shrink_when_small() {
        let mut decoder = FrameDecoder::new(&[], 100);
        for _ in 0..10 {
            let chunk = decoder.read_chunk;
            decoder.adapt_read_chunk(chunk, chunk);
        }
        assert_eq!(decoder.read_chunk, MAX_READ_CHUNK);
        for _ in 0..10 {
            decoder.adapt_read_chunk(10, MAX_READ_CHUNK);
        }
        assert_eq!(decoder.read_chunk, MIN_READ_CHUNK);
    }
}
