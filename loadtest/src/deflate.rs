//! The client's side of `permessage-deflate` (RFC 7692): reading the terms
//! the server answered in its 101 response, and inflating the messages it
//! compressed (RSV1).

use anyhow::{anyhow, bail, Result};
use zlib_rs::{Inflate, InflateFlush, Status};

/// The empty stored block that ends a sync flush, which the sender leaves
/// off each message (§7.2.1) and the receiver puts back (§7.2.2).
const SYNC_FLUSH_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// An inflated message larger than this is refused, like an oversized frame.
const MAX_INFLATED_BYTES: usize = 64 * 1024 * 1024;
/// The output buffer's first size; it doubles when a message needs more.
const INITIAL_OUTPUT_BYTES: usize = 4096;
/// Raw deflate (no zlib header) with the largest window, 32 KiB.
const WINDOW_BITS: u8 = 15;

/// What the server agreed to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DeflateTerms {
    /// The server starts each message with an empty window; without it, the
    /// client must keep one inflate context for the whole connection.
    pub server_no_context_takeover: bool,
}

/// The `permessage-deflate` terms in a 101 response's head, `None` if the
/// server answered no extension. An extension other than
/// `permessage-deflate` is an error: this client offers no other.
pub fn agreed(response_head: &str) -> Result<Option<DeflateTerms>> {
    let mut terms = None;
    for line in response_head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
            continue;
        }
        for extension in value.split(',') {
            let mut params = extension.split(';').map(str::trim);
            let name = params.next().unwrap_or_default();
            if !name.eq_ignore_ascii_case("permessage-deflate") || terms.is_some() {
                bail!("the server answered an extension that was not offered: {extension}");
            }
            terms = Some(DeflateTerms {
                server_no_context_takeover: params
                    .any(|param| param.eq_ignore_ascii_case("server_no_context_takeover")),
            });
        }
    }
    Ok(terms)
}

/// Inflates compressed messages into one reusable buffer, with zlib-rs:
/// the client must keep up with a thousand subscribers' worth of them, and
/// with miniz_oxide (flate2's default backend, which also zeroes its 32 KiB
/// window on every reset) a 270-byte event cost it about 6 µs more than a
/// plain one, with zlib-rs about 1.5 µs.
pub struct Inflater {
    terms: DeflateTerms,
    /// Created with the first compressed message: its state and window
    /// (some 40 KiB) would otherwise cost every connection that only gets
    /// plain frames.
    inflate: Option<Inflate>,
    /// Initialised once and only grown; a message is inflated into its front.
    out: Vec<u8>,
}

impl Inflater {
    pub fn new(terms: DeflateTerms) -> Inflater {
        Inflater {
            terms,
            inflate: None,
            out: Vec::new(),
        }
    }

    /// The message carried by the compressed payload `data`.
    pub fn inflate(&mut self, data: &[u8]) -> Result<&[u8]> {
        let inflate = self
            .inflate
            .get_or_insert_with(|| Inflate::new(false, WINDOW_BITS));
        if self.terms.server_no_context_takeover {
            inflate.reset(false);
        }
        let mut end = 0;
        for input in [data, &SYNC_FLUSH_TAIL] {
            inflate_into(inflate, input, &mut self.out, &mut end)?;
        }
        Ok(&self.out[..end])
    }
}

/// Inflates all of `input` into `out` from `end` on, growing `out` as needed.
fn inflate_into(
    inflate: &mut Inflate,
    input: &[u8],
    out: &mut Vec<u8>,
    end: &mut usize,
) -> Result<()> {
    let mut consumed = 0;
    loop {
        if *end == out.len() {
            if *end >= MAX_INFLATED_BYTES {
                bail!("a compressed message inflates to more than {MAX_INFLATED_BYTES} bytes");
            }
            out.resize((out.len() * 2).max(INITIAL_OUTPUT_BYTES), 0);
        }
        let (in_before, out_before) = (inflate.total_in(), inflate.total_out());
        let status = inflate
            .decompress(
                &input[consumed..],
                &mut out[*end..],
                InflateFlush::SyncFlush,
            )
            .map_err(|err| anyhow!("compressed message does not inflate: {}", err.as_str()))?;
        consumed += (inflate.total_in() - in_before) as usize;
        *end += (inflate.total_out() - out_before) as usize;
        // A sender may end a message with a final block (§7.2.3.3); the tail
        // put back after it means nothing.
        if status == Status::StreamEnd || (consumed == input.len() && *end < out.len()) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    use super::*;

    /// Deflates `message` as a server does: a sync flush, tail removed.
    fn deflate(compress: &mut Compress, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + 64);
        compress
            .compress_vec(message, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&SYNC_FLUSH_TAIL));
        out.truncate(out.len() - SYNC_FLUSH_TAIL.len());
        out
    }

    fn no_context_takeover() -> DeflateTerms {
        DeflateTerms {
            server_no_context_takeover: true,
        }
    }

    #[test]
    fn reads_the_agreed_terms() {
        let ringcast = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(agreed(ringcast).unwrap(), Some(no_context_takeover()));
        let takeover = "HTTP/1.1 101 OK\r\nsec-websocket-extensions: Permessage-Deflate; client_max_window_bits=15";
        assert_eq!(
            agreed(takeover).unwrap(),
            Some(DeflateTerms {
                server_no_context_takeover: false
            })
        );
        assert_eq!(
            agreed("HTTP/1.1 101 OK\r\nUpgrade: websocket").unwrap(),
            None
        );
        assert!(
            agreed("HTTP/1.1 101 OK\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame").is_err()
        );
        assert!(agreed(
            "HTTP/1.1 101 OK\r\nSec-WebSocket-Extensions: permessage-deflate, permessage-deflate"
        )
        .is_err());
    }

    #[test]
    fn inflates_messages_compressed_alone() {
        let mut inflater = Inflater::new(no_context_takeover());
        let message = br#"{"type":"event","payload":{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
        for _ in 0..3 {
            let mut compress = Compress::new(Compression::fast(), false);
            let data = deflate(&mut compress, message);
            assert!(data.len() < message.len());
            assert_eq!(inflater.inflate(&data).unwrap(), message);
        }
    }

    #[test]
    fn keeps_the_window_when_the_server_takes_context_over() {
        // The second message refers back into the first, so it only inflates
        // with the connection's window kept.
        let first = b"the quick brown fox jumps over the lazy dog, again and again";
        let mut compress = Compress::new(Compression::best(), false);
        let data_1 = deflate(&mut compress, first);
        let data_2 = deflate(&mut compress, first);
        assert!(data_2.len() < data_1.len() / 2, "refers back: {data_2:?}");
        let mut keeping = Inflater::new(DeflateTerms {
            server_no_context_takeover: false,
        });
        assert_eq!(keeping.inflate(&data_1).unwrap(), first);
        assert_eq!(keeping.inflate(&data_2).unwrap(), first);
        // Past the window: what is kept of earlier output moves along.
        for i in 0..40u32 {
            let message: Vec<u8> = (0..3000u32)
                .map(|j| b"abcdefghij"[((i * 7 + j * j) % 10) as usize])
                .collect();
            let data = deflate(&mut compress, &message);
            assert_eq!(keeping.inflate(&data).unwrap(), message, "message {i}");
        }
        let mut resetting = Inflater::new(no_context_takeover());
        resetting.inflate(&data_1).unwrap();
        assert!(resetting
            .inflate(&data_2)
            .map_or(true, |message| message != first));
    }

    #[test]
    fn inflates_beyond_one_step_and_refuses_garbage() {
        let big: Vec<u8> = (0..200_000u32)
            .map(|i| b"abcdefgh"[(i % 7) as usize])
            .collect();
        let mut compress = Compress::new(Compression::fast(), false);
        let data = deflate(&mut compress, &big);
        let mut inflater = Inflater::new(no_context_takeover());
        assert_eq!(inflater.inflate(&data).unwrap(), big);
        assert!(inflater.inflate(&[0xff; 16]).is_err());
    }
}
