//! A lean WebSocket client (RFC 6455): hand-written upgrade, a frame decoder
//! that works in place on one reusable read buffer (and inflates the
//! server's compressed messages when `permessage-deflate` was agreed, see
//! `deflate`), and a masked-frame encoder that batches any number of frames
//! into one socket write.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;

use anyhow::{anyhow, bail, Context, Result};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use crate::deflate::{self, DeflateTerms, Inflater};

/// Large enough that one read usually takes everything the kernel has queued.
const READ_BUFFER_BYTES: usize = 32 * 1024;
/// Frames larger than this are refused rather than buffered.
const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Header size for the longest length encoding plus the mask key.
const MAX_CLIENT_HEADER: usize = 14;
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct WsUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
    /// Resolved once, so thousands of connects do no name lookups.
    pub addr: SocketAddr,
}

impl WsUrl {
    /// Parses `ws://host[:port][/path]`; TLS is out of scope for a loopback benchmark.
    pub fn parse(url: &str) -> Result<WsUrl> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("URL must start with ws:// (got {url})"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().context("bad port in URL")?),
            None => (authority, 80),
        };
        if host.is_empty() {
            bail!("URL has no host: {url}");
        }
        let addr = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host} has no address"))?;
        Ok(WsUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
            addr,
        })
    }

    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    fn from_bits(bits: u8) -> Result<OpCode> {
        Ok(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => bail!("unknown WebSocket opcode {other:#x}"),
        })
    }
}

/// The server closed the connection (close frame or EOF).
#[derive(Debug)]
pub struct Closed {
    pub code: Option<u16>,
    pub reason: String,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "closed by server with {code} {}", self.reason),
            None => write!(f, "connection closed by server"),
        }
    }
}

impl std::error::Error for Closed {}

/// Opens a TCP connection and performs the client upgrade.
pub async fn connect(url: &WsUrl, api_key: Option<&str>) -> Result<(WsReader, WsWriter)> {
    connect_offering(url, api_key, false).await
}

/// Like [`connect`]; with `deflate`, offers `permessage-deflate` and fails
/// unless the server agrees, so that a run meant to measure compression
/// cannot silently measure plain frames. Compressed server messages are
/// inflated by the reader; this client's own frames stay plain.
pub async fn connect_offering(
    url: &WsUrl,
    api_key: Option<&str>,
    deflate: bool,
) -> Result<(WsReader, WsWriter)> {
    let stream = TcpStream::connect(url.addr)
        .await
        .with_context(|| format!("connecting to {}", url.authority()))?;
    upgrade(stream, url, api_key, deflate).await
}

/// Like [`connect`], with the socket's receive buffer set to `bytes` before
/// connecting (the window scale is fixed then): once such a reader stops
/// reading, what the server sends piles up on the server's side.
pub async fn connect_with_receive_buffer(
    url: &WsUrl,
    api_key: Option<&str>,
    bytes: u32,
) -> Result<(WsReader, WsWriter)> {
    let socket = if url.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(bytes)?;
    let stream = socket
        .connect(url.addr)
        .await
        .with_context(|| format!("connecting to {}", url.authority()))?;
    upgrade(stream, url, api_key, false).await
}

/// The offer: the server may keep its compression context between messages
/// (nats-server and ringcast both decline to); this client never compresses.
const DEFLATE_OFFER: &str = "permessage-deflate; client_no_context_takeover";

async fn upgrade(
    mut stream: TcpStream,
    url: &WsUrl,
    api_key: Option<&str>,
    offer_deflate: bool,
) -> Result<(WsReader, WsWriter)> {
    stream.set_nodelay(true)?;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        url.path,
        url.authority()
    );
    if let Some(key) = api_key {
        request.push_str(&format!("X-API-Key: {key}\r\n"));
    }
    if offer_deflate {
        request.push_str(&format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;

    let local_port = stream.local_addr()?.port();
    let (read_half, write_half) = stream.into_split();
    let mut reader = WsReader::new(read_half);
    let agreed = reader.read_upgrade_response().await?;
    match (offer_deflate, agreed) {
        (true, None) => bail!("the server declined permessage-deflate"),
        (false, Some(_)) => bail!("the server answered an extension that was not offered"),
        _ => reader.decoder.inflater = agreed.map(Inflater::new),
    }
    let writer = WsWriter::new(write_half, u32::from(local_port));
    Ok((reader, writer))
}

/// Reads until `on_message` yields a reply (or an error), answering pings
/// meanwhile. For set-up request/reply exchanges, which happen before any
/// publishing, so nothing else can arrive in the same read.
pub async fn await_reply<T>(
    reader: &mut WsReader,
    writer: &mut WsWriter,
    mut on_message: impl FnMut(&[u8], &mut WsWriter) -> Result<Option<T>>,
) -> Result<T> {
    loop {
        reader.fill().await?;
        let mut reply = None;
        reader.drain(|message| {
            if let Some(value) = on_message(message, writer)? {
                reply = Some(value);
            }
            Ok(())
        })?;
        answer_ping(reader, writer);
        writer.flush().await?;
        if let Some(reply) = reply {
            return Ok(reply);
        }
    }
}

/// The closing handshake: sends a close frame with `code`, then reads until
/// the server's close frame or EOF, handing data messages still arriving to
/// `on_message`. Returns the server's close code (`None` for EOF).
pub async fn close(
    mut reader: WsReader,
    mut writer: WsWriter,
    code: u16,
    mut on_message: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Option<u16>> {
    writer.frame_from(OpCode::Close, &code.to_be_bytes());
    writer.flush().await?;
    loop {
        let read = reader.fill().await;
        if let Err(err) = read.and_then(|_| reader.drain(&mut on_message)) {
            return err.downcast::<Closed>().map(|closed| closed.code);
        }
    }
}

/// Queues the pong for a ping the reader has seen, if any.
pub fn answer_ping(reader: &mut WsReader, writer: &mut WsWriter) {
    if let Some(pong) = reader.take_pong() {
        writer.frame_from(OpCode::Pong, &pong);
    }
}

/// The read half of a connection and its frame decoder.
pub struct WsReader {
    half: OwnedReadHalf,
    decoder: FrameDecoder,
}

impl WsReader {
    fn new(half: OwnedReadHalf) -> WsReader {
        WsReader {
            half,
            decoder: FrameDecoder::new(),
        }
    }

    /// Reads the 101 response and the `permessage-deflate` terms it agrees
    /// to, if any; bytes after it stay buffered as the first frames.
    async fn read_upgrade_response(&mut self) -> Result<Option<DeflateTerms>> {
        loop {
            let buffered = self.decoder.buffered();
            if let Some(head_end) = memmem::find(buffered, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
                if !head.starts_with("HTTP/1.1 101") {
                    bail!("upgrade refused: {head}");
                }
                self.decoder.consume(head_end + 4);
                return deflate::agreed(&head);
            }
            if buffered.len() > MAX_RESPONSE_HEAD {
                bail!("upgrade response head too long");
            }
            self.fill().await.context("reading upgrade response")?;
        }
    }

    /// Waits for more bytes from the socket; returns how many were read.
    pub async fn fill(&mut self) -> Result<usize> {
        let read = self.half.read(self.decoder.spare()).await?;
        if read == 0 {
            return Err(Closed {
                code: None,
                reason: String::new(),
            }
            .into());
        }
        self.decoder.filled(read);
        Ok(read)
    }

    /// See [`FrameDecoder::drain`].
    pub fn drain(&mut self, on_message: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.decoder.drain(on_message)
    }

    /// The payload of the last ping not yet answered.
    pub fn take_pong(&mut self) -> Option<Vec<u8>> {
        self.decoder.pending_pong.take()
    }
}

/// Decodes server frames from one reusable buffer; payloads are handed out as
/// slices of it, so receiving allocates nothing. Compressed messages are
/// inflated into the inflater's own reusable buffer.
struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the frame at `start` needs in total, when it is incomplete.
    pending_frame_len: usize,
    /// A fragmented message being reassembled (rare: servers here do not fragment).
    fragments: Vec<u8>,
    /// Whether the message in `fragments` is compressed (RSV1 on its first frame).
    fragments_compressed: bool,
    pending_pong: Option<Vec<u8>>,
    /// Present once `permessage-deflate` was agreed: RSV1 is allowed then.
    inflater: Option<Inflater>,
}

/// One frame's header bits and where its payload is in the buffer.
struct FrameHead {
    fin: bool,
    /// RSV1: the first frame of a compressed message.
    compressed: bool,
    opcode: OpCode,
    payload: Range<usize>,
}

impl FrameDecoder {
    fn new() -> FrameDecoder {
        FrameDecoder {
            buf: vec![0; READ_BUFFER_BYTES],
            start: 0,
            end: 0,
            pending_frame_len: 0,
            fragments: Vec::new(),
            fragments_compressed: false,
            pending_pong: None,
            inflater: None,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, bytes: usize) {
        self.start += bytes;
    }

    /// Free space to read into, making room first: reuses the buffer from the
    /// start when it is empty, moves a partial frame to the front when the
    /// tail runs short, and grows for a frame larger than the buffer.
    fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let tail_is_short = self.buf.len() - self.end < READ_BUFFER_BYTES / 4;
        let frame_overruns = self.start + self.pending_frame_len > self.buf.len();
        if self.start > 0 && (tail_is_short || frame_overruns) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.pending_frame_len > self.buf.len() {
            self.buf
                .resize(self.pending_frame_len + READ_BUFFER_BYTES, 0);
        }
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, bytes: usize) {
        self.end += bytes;
    }

    /// Handles every complete frame in the buffer: data messages go to
    /// `on_message` (inflated if compressed), pings are remembered for
    /// [`WsReader::take_pong`]. Returns `Err(Closed)` on a close frame.
    fn drain(&mut self, mut on_message: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        while let Some(frame) = self.next_frame()? {
            let payload = frame.payload;
            match frame.opcode {
                OpCode::Text | OpCode::Binary if frame.fin && self.fragments.is_empty() => {
                    match self.inflater.as_mut().filter(|_| frame.compressed) {
                        Some(inflater) => on_message(inflater.inflate(&self.buf[payload])?)?,
                        None => on_message(&self.buf[payload])?,
                    }
                }
                OpCode::Text | OpCode::Binary => {
                    self.fragments.clear();
                    self.fragments.extend_from_slice(&self.buf[payload]);
                    self.fragments_compressed = frame.compressed;
                }
                OpCode::Continuation => {
                    self.fragments.extend_from_slice(&self.buf[payload]);
                    if frame.fin {
                        match self.inflater.as_mut().filter(|_| self.fragments_compressed) {
                            Some(inflater) => on_message(inflater.inflate(&self.fragments)?)?,
                            None => on_message(&self.fragments)?,
                        }
                        self.fragments.clear();
                    }
                }
                OpCode::Ping => self.pending_pong = Some(self.buf[payload].to_vec()),
                OpCode::Pong => {}
                OpCode::Close => return Err(close_frame(&self.buf[payload]).into()),
            }
        }
        Ok(())
    }

    /// Parses the frame at `start`, consuming it when complete.
    fn next_frame(&mut self) -> Result<Option<FrameHead>> {
        let available = &self.buf[self.start..self.end];
        let Some((header_len, payload_len)) = frame_lengths(available)? else {
            self.pending_frame_len = 0;
            return Ok(None);
        };
        let total = header_len + payload_len;
        if total > MAX_FRAME_BYTES {
            bail!("server frame of {payload_len} bytes exceeds {MAX_FRAME_BYTES}");
        }
        if available.len() < total {
            self.pending_frame_len = total;
            return Ok(None);
        }
        self.pending_frame_len = 0;
        let opcode = OpCode::from_bits(available[0] & 0x0F)?;
        let compressed = available[0] & RSV1 != 0;
        if compressed {
            if self.inflater.is_none() {
                bail!("server frame uses RSV1, but permessage-deflate was not agreed");
            }
            if !matches!(opcode, OpCode::Text | OpCode::Binary) {
                bail!("RSV1 on a {opcode:?} frame: only a message's first frame may carry it");
            }
        }
        let frame = FrameHead {
            fin: available[0] & 0x80 != 0,
            compressed,
            opcode,
            payload: self.start + header_len..self.start + total,
        };
        self.start += total;
        Ok(Some(frame))
    }
}

/// RSV1 marks the first frame of a compressed message (RFC 7692 §6).
const RSV1: u8 = 0x40;

/// Header and payload length of the frame at the start of `bytes`, or `None`
/// while the header itself is incomplete.
fn frame_lengths(bytes: &[u8]) -> Result<Option<(usize, usize)>> {
    if bytes.len() < 2 {
        return Ok(None);
    }
    if bytes[0] & 0x30 != 0 {
        bail!("server frame uses RSV2 or RSV3 (no extension defines them)");
    }
    if bytes[1] & 0x80 != 0 {
        bail!("server frame is masked");
    }
    let (header_len, payload_len) = match bytes[1] & 0x7F {
        126 if bytes.len() >= 4 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as u64),
        127 if bytes.len() >= 10 => (
            10,
            u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")),
        ),
        126 | 127 => return Ok(None),
        short => (2, u64::from(short)),
    };
    let payload_len = usize::try_from(payload_len).context("frame length")?;
    Ok(Some((header_len, payload_len)))
}

fn close_frame(payload: &[u8]) -> Closed {
    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
    Closed { code, reason }
}

/// Queues masked client frames in one buffer and writes them with one call.
pub struct WsWriter {
    half: OwnedWriteHalf,
    buf: Vec<u8>,
    mask_state: u32,
}

impl WsWriter {
    fn new(half: OwnedWriteHalf, seed: u32) -> WsWriter {
        WsWriter {
            half,
            buf: Vec::with_capacity(16 * 1024),
            // xorshift needs a non-zero state.
            mask_state: seed | 1,
        }
    }

    /// Queues one frame whose payload `write_payload` appends; the payload is
    /// written in place and masked there, so it is never copied.
    pub fn frame(&mut self, opcode: OpCode, write_payload: impl FnOnce(&mut Vec<u8>)) {
        let frame_start = self.buf.len();
        let payload_start = frame_start + MAX_CLIENT_HEADER;
        self.buf.resize(payload_start, 0);
        write_payload(&mut self.buf);
        let payload_len = self.buf.len() - payload_start;
        let mask = self.next_mask();
        let (header, header_len) = client_header(opcode, payload_len, mask);
        // Slide the payload down to sit right after the actual header size.
        self.buf
            .copy_within(payload_start.., frame_start + header_len);
        self.buf.truncate(frame_start + header_len + payload_len);
        self.buf[frame_start..frame_start + header_len].copy_from_slice(&header[..header_len]);
        apply_mask(&mut self.buf[frame_start + header_len..], mask);
    }

    pub fn frame_from(&mut self, opcode: OpCode, payload: &[u8]) {
        self.frame(opcode, |buf| buf.extend_from_slice(payload));
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.half.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes only the first half of what is queued and forgets the rest: a
    /// frame cut off mid-way, as a client that dies while sending leaves it.
    pub async fn flush_half(&mut self) -> Result<()> {
        let half = self.buf.len() / 2;
        self.half.write_all(&self.buf[..half]).await?;
        self.buf.clear();
        Ok(())
    }

    /// Mask keys only have to be unpredictable to the server's intermediaries;
    /// a per-connection xorshift is plenty for a load generator.
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_ne_bytes()
    }
}

fn client_header(
    opcode: OpCode,
    payload_len: usize,
    mask: [u8; 4],
) -> ([u8; MAX_CLIENT_HEADER], usize) {
    let mut header = [0u8; MAX_CLIENT_HEADER];
    header[0] = 0x80 | opcode as u8;
    let mut len = 2;
    if payload_len < 126 {
        header[1] = 0x80 | payload_len as u8;
    } else if let Ok(short) = u16::try_from(payload_len) {
        header[1] = 0x80 | 126;
        header[2..4].copy_from_slice(&short.to_be_bytes());
        len = 4;
    } else {
        header[1] = 0x80 | 127;
        header[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        len = 10;
    }
    header[len..len + 4].copy_from_slice(&mask);
    (header, len + 4)
}

/// XORs `data` with the repeating 4-byte key, eight bytes at a time.
fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // Chunks are a multiple of 4 long, so the key phase restarts at 0 here.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let url = WsUrl::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 8080, "/ws")
        );
        let url = WsUrl::parse("ws://localhost:4223").unwrap();
        assert_eq!((url.port, url.path.as_str()), (4223, "/"));
        assert!(WsUrl::parse("wss://x/").is_err());
    }

    #[test]
    fn masking_round_trips_at_any_length() {
        let original: Vec<u8> = (0..37).collect();
        let mut data = original.clone();
        apply_mask(&mut data, [1, 2, 3, 4]);
        assert_eq!(data[0], 1);
        assert_eq!(data[36], 36 ^ 1);
        apply_mask(&mut data, [1, 2, 3, 4]);
        assert_eq!(data, original);
    }

    /// An unmasked server frame.
    fn server_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first_byte];
        match payload.len() {
            len @ 0..=125 => frame.push(len as u8),
            len @ 126..=65535 => {
                frame.push(126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    /// Feeds `stream` to a decoder in reads of at most `read_size` bytes.
    fn decode(stream: &[u8], read_size: usize) -> (Vec<Vec<u8>>, Option<Vec<u8>>, Result<()>) {
        decode_with(FrameDecoder::new(), stream, read_size)
    }

    fn decode_with(
        mut decoder: FrameDecoder,
        stream: &[u8],
        read_size: usize,
    ) -> (Vec<Vec<u8>>, Option<Vec<u8>>, Result<()>) {
        let mut messages = Vec::new();
        let mut unread = stream;
        while !unread.is_empty() {
            let spare = decoder.spare();
            let read = spare.len().min(read_size).min(unread.len());
            spare[..read].copy_from_slice(&unread[..read]);
            decoder.filled(read);
            unread = &unread[read..];
            let result = decoder.drain(|message| {
                messages.push(message.to_vec());
                Ok(())
            });
            if result.is_err() {
                return (messages, decoder.pending_pong.take(), result);
            }
        }
        (messages, decoder.pending_pong.take(), Ok(()))
    }

    #[test]
    fn decodes_frames_across_reads_of_any_size() {
        let big = vec![b'b'; 100_000];
        let mut stream = Vec::new();
        stream.extend(server_frame(0x81, b"first"));
        stream.extend(server_frame(0x89, b"ping!"));
        stream.extend(server_frame(0x82, &big));
        stream.extend(server_frame(0x01, b"frag"));
        stream.extend(server_frame(0x80, b"mented"));
        stream.extend(server_frame(0x81, &[b'm'; 300]));
        for read_size in [1, 7, 4096, READ_BUFFER_BYTES, stream.len()] {
            let (messages, pong, result) = decode(&stream, read_size);
            result.unwrap();
            assert_eq!(messages.len(), 4, "read size {read_size}");
            assert_eq!(messages[0], b"first");
            assert_eq!(messages[1], big);
            assert_eq!(messages[2], b"fragmented");
            assert_eq!(messages[3], [b'm'; 300]);
            assert_eq!(pong.as_deref(), Some(&b"ping!"[..]));
        }
    }

    #[test]
    fn close_frame_ends_decoding_with_its_code() {
        let mut stream = server_frame(0x81, b"last");
        stream.extend(server_frame(0x88, b"\x03\xf0slow consumer"));
        let (messages, _, result) = decode(&stream, 64);
        assert_eq!(messages, [b"last"]);
        let closed = result.unwrap_err().downcast::<Closed>().unwrap();
        assert_eq!(closed.code, Some(1008));
        assert_eq!(closed.reason, "slow consumer");
    }

    /// `message` deflated as a server without context takeover sends it.
    fn deflated(message: &[u8]) -> Vec<u8> {
        let mut compress = flate2::Compress::new(flate2::Compression::fast(), false);
        let mut out = Vec::with_capacity(message.len() + 64);
        compress
            .compress_vec(message, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        out
    }

    fn inflating_decoder() -> FrameDecoder {
        let mut decoder = FrameDecoder::new();
        decoder.inflater = Some(Inflater::new(DeflateTerms {
            server_no_context_takeover: true,
        }));
        decoder
    }

    #[test]
    fn inflates_rsv1_messages_whole_or_fragmented() {
        let event = br#"{"type":"event","topic":"load-0","message":{"payload":{"pad":"abcabcabcabcabcabcabcabc"}}}"#;
        let compressed = deflated(event);
        let (head, tail) = compressed.split_at(compressed.len() / 2);
        let mut stream = Vec::new();
        stream.extend(server_frame(0xC1, &compressed));
        stream.extend(server_frame(0x81, b"plain"));
        // RSV1 on the first fragment only.
        stream.extend(server_frame(0x41, head));
        stream.extend(server_frame(0x80, tail));
        stream.extend(server_frame(0xC2, &deflated(b"MSG load-0 1 3\r\nabc\r\n")));
        for read_size in [1, 5, stream.len()] {
            let (messages, _, result) = decode_with(inflating_decoder(), &stream, read_size);
            result.unwrap();
            assert_eq!(messages.len(), 4, "read size {read_size}");
            assert_eq!(messages[0], event);
            assert_eq!(messages[1], b"plain");
            assert_eq!(messages[2], event);
            assert_eq!(messages[3], b"MSG load-0 1 3\r\nabc\r\n");
        }
    }

    #[test]
    fn rsv1_needs_the_extension_and_a_data_frame() {
        let compressed = server_frame(0xC1, &deflated(b"hello hello hello"));
        let (_, _, result) = decode(&compressed, 64);
        assert!(result.unwrap_err().to_string().contains("not agreed"));
        let (_, _, result) = decode_with(inflating_decoder(), &server_frame(0xC9, b"x"), 64);
        assert!(result.is_err());
        let (_, _, result) = decode_with(inflating_decoder(), &server_frame(0xA1, b"x"), 64);
        assert!(result.is_err(), "RSV2");
    }

    #[test]
    fn reads_frame_lengths() {
        assert_eq!(frame_lengths(&[0x81]).unwrap(), None);
        assert_eq!(frame_lengths(&[0x81, 5]).unwrap(), Some((2, 5)));
        assert_eq!(frame_lengths(&[0x81, 126, 1]).unwrap(), None);
        assert_eq!(frame_lengths(&[0x81, 126, 1, 0]).unwrap(), Some((4, 256)));
        assert!(frame_lengths(&[0x81, 0x85]).is_err());
    }
}
