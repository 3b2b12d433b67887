//! The WebSocket frame layout (RFC 6455 §5.2), in one place: server frame
//! headers written, client frame headers read, and the control frames.
//!
//! Server frames are unmasked, so one encoded `Bytes` (header + payload)
//! can be shared by every subscriber and written as is.

use std::cell::RefCell;

use bytes::Bytes;
use fastwebsockets::OpCode;

use crate::wire::close::CloseReason;

/// The largest header of an unmasked server frame.
pub const MAX_HEADER_LEN: usize = 10;
/// Longest control frame payload (§5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;
/// The FIN bit of a frame's first byte.
const FIN: u8 = 0x80;
/// RSV1, which marks the first frame of a compressed message (RFC 7692 §6).
pub const RSV1: u8 = 0x40;
/// The MASK bit of a frame's second byte.
const MASKED: u8 = 0x80;

/// The header of an unmasked, final server frame carrying `len` payload
/// bytes, and how many of its bytes are used.
pub fn server_header(opcode: OpCode, len: usize) -> ([u8; MAX_HEADER_LEN], usize) {
    let mut head = [0; MAX_HEADER_LEN];
    head[0] = FIN | opcode as u8;
    let head_len = match len {
        0..=125 => {
            head[1] = len as u8;
            2
        }
        126..=0xFFFF => {
            head[1] = 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    (head, head_len)
}

/// The size of an unmasked server frame carrying `len` payload bytes.
pub fn server_frame_len(len: usize) -> usize {
    server_header(OpCode::Text, len).1 + len
}

/// The payload of a server frame (an event's JSON), without its header.
pub fn payload_of(frame: &[u8]) -> &[u8] {
    let head_len = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    &frame[head_len..]
}

/// The opcode of a server frame.
pub fn opcode_of(frame: &[u8]) -> OpCode {
    OpCode::try_from(frame[0] & 0x0F).expect("a frame ringcast encoded")
}

/// A client frame's header, as read off the socket.
pub struct ClientHeader {
    pub fin: bool,
    pub compressed: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    pub header_len: usize,
    pub payload_len: usize,
}

/// Reads a client frame's header from the start of `buf`: `Ok(None)` until
/// all of it is there; `Err` for a frame RFC 6455 forbids (unmasked, a
/// reserved bit or opcode, a long or fragmented control frame) or one
/// whose payload would exceed `max_payload`. RSV1 is allowed only when
/// `compression` was agreed.
pub fn read_client_header(
    buf: &[u8],
    compression: bool,
    max_payload: usize,
) -> Result<Option<ClientHeader>, CloseReason> {
    let [first, second, ..] = buf[..] else {
        return Ok(None);
    };
    let reserved = if compression { 0x30 } else { 0x70 };
    if first & reserved != 0 {
        return Err(CloseReason::ProtocolError);
    }
    let opcode = OpCode::try_from(first & 0x0F).map_err(|_| CloseReason::ProtocolError)?;
    let fin = first & FIN != 0;
    if second & MASKED == 0 {
        return Err(CloseReason::ProtocolError);
    }
    let length_bytes = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + length_bytes + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let payload_len = match length_bytes {
        0 => u64::from(second & 0x7F),
        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        _ => u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
    };
    // §5.2: the most significant bit of a 64-bit length is 0.
    if payload_len >> 63 != 0 {
        return Err(CloseReason::ProtocolError);
    }
    let is_control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if is_control && (!fin || payload_len > MAX_CONTROL_PAYLOAD) {
        return Err(CloseReason::ProtocolError);
    }
    // Refused before any of it is buffered.
    if payload_len > max_payload as u64 {
        return Err(CloseReason::MessageTooBig);
    }
    let mask_at = header_len - 4;
    Ok(Some(ClientHeader {
        fin,
        compressed: first & RSV1 != 0,
        opcode,
        mask: buf[mask_at..header_len].try_into().expect("4 bytes"),
        header_len,
        payload_len: payload_len as usize,
    }))
}

/// A WebSocket close frame with a status code and reason.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    encode_frame(OpCode::Close, |buf| {
        buf.extend_from_slice(&code.to_be_bytes());
        buf.extend_from_slice(reason.as_bytes());
    })
}

/// A WebSocket ping control frame (the protocol-level heartbeat).
pub fn ping_frame() -> Bytes {
    encode_frame(OpCode::Ping, |_| {})
}

/// A WebSocket pong control frame echoing a client ping's payload.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    encode_frame(OpCode::Pong, |buf| buf.extend_from_slice(payload))
}

/// Writes the payload into this thread's scratch buffer, then copies it
/// into a frame of its own.
pub fn encode_frame(opcode: OpCode, write_payload: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    with_scratch(|payload| {
        write_payload(payload);
        frame_of(opcode, &[payload])
    })
}

/// Scratch space up to this size is kept for the next frame; a larger
/// one is freed, so one big frame does not pin it.
const KEPT_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Where a frame's payload is written before its size is known.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `use_scratch` on this thread's cleared scratch buffer.
pub fn with_scratch<T>(use_scratch: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        let result = use_scratch(scratch);
        if scratch.capacity() > KEPT_SCRATCH {
            *scratch = Vec::new();
        }
        result
    })
}

/// An unmasked, final WebSocket frame whose payload is `parts` end to end,
/// in one allocation of exactly its size: the `Bytes` made of it needs no
/// further allocation until it is first shared.
pub fn frame_of(opcode: OpCode, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let (head, head_len) = server_header(opcode, len);
    let mut frame = Vec::with_capacity(head_len + len);
    frame.extend_from_slice(&head[..head_len]);
    parts.iter().for_each(|part| frame.extend_from_slice(part));
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_correct_websocket_header() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let frame = pong_frame(&vec![b'x'; len]);
            let (head_len, declared) = match frame[1] {
                126 => (4, u16::from_be_bytes([frame[2], frame[3]]) as usize),
                127 => (
                    10,
                    u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                ),
                short => (2, short as usize),
            };
            assert_eq!(frame[0], 0x80 | OpCode::Pong as u8);
            assert_eq!(declared, len);
            assert_eq!(frame.len(), head_len + len);
            assert_eq!(server_frame_len(len), frame.len());
            assert_eq!(payload_of(&frame).len(), len);
        }
    }
}
