//! A server-sent events subscriber's connection to ringcast: `GET /sse`,
//! then the chunked body decoded and cut into events, each event's `data:`
//! handed on as the JSON `/ws` would send, with no allocation per event.

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws::WsUrl;

/// How much one read takes.
const READ_SIZE: usize = 64 * 1024;
/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Where the chunked transfer coding is.
enum Chunking {
    /// Reading a chunk's size line.
    Size,
    /// This many bytes of the chunk's data left.
    Data(usize),
    /// The CRLF after a chunk's data.
    End,
}

pub struct SseReader {
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    raw: Vec<u8>,
    chunking: Chunking,
    /// The decoded body not yet cut into events.
    body: Vec<u8>,
    /// An event's `data:` lines joined, when it has more than one.
    joined: Vec<u8>,
}

/// Opens a stream of `topic` and checks the response head.
pub async fn connect(url: &WsUrl, api_key: Option<&str>, topic: &str) -> Result<SseReader> {
    let mut stream = TcpStream::connect(url.addr)
        .await
        .with_context(|| format!("connecting to {}", url.authority()))?;
    stream.set_nodelay(true)?;
    let key = api_key
        .map(|key| format!("X-API-Key: {key}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /sse?topic={topic} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{key}\r\n",
        url.authority()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::with_capacity(READ_SIZE);
    let head_end = loop {
        if let Some(at) = memchr::memmem::find(&raw, b"\r\n\r\n") {
            break at + 4;
        }
        if raw.len() > MAX_HEAD {
            bail!("the response head is over {MAX_HEAD} bytes");
        }
        read_some(&mut stream, &mut raw).await?;
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        let body = String::from_utf8_lossy(&raw[head_end..]);
        bail!(
            "GET /sse answered {}{body}",
            head.lines().next().unwrap_or_default()
        );
    }
    if !head.contains("transfer-encoding: chunked") {
        bail!("the stream is not chunked: {head}");
    }
    raw.drain(..head_end);
    Ok(SseReader {
        stream,
        raw,
        chunking: Chunking::Size,
        body: Vec::with_capacity(READ_SIZE),
        joined: Vec::new(),
    })
}

/// Reads once into `buf`; the end of the stream is an error.
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize> {
    buf.reserve(READ_SIZE);
    let read = stream.read_buf(buf).await?;
    if read == 0 {
        bail!("the server ended the stream");
    }
    Ok(read)
}

impl SseReader {
    /// Reads what the socket has; returns how many bytes.
    pub async fn fill(&mut self) -> Result<usize> {
        read_some(&mut self.stream, &mut self.raw).await
    }

    /// Decodes what was read and hands each complete event's data to
    /// `on_data`; comments (the heartbeat) and event names are skipped.
    pub fn drain(&mut self, mut on_data: impl FnMut(&[u8])) -> Result<()> {
        self.dechunk()?;
        let mut consumed = 0;
        while let Some(end) = memchr::memmem::find(&self.body[consumed..], b"\n\n") {
            let event = &self.body[consumed..consumed + end];
            let mut data = event
                .split(|byte| *byte == b'\n')
                .filter_map(|line| line.strip_prefix(b"data: "));
            if let Some(first) = data.next() {
                match data.next() {
                    None => on_data(first),
                    Some(second) => {
                        self.joined.clear();
                        self.joined.extend_from_slice(first);
                        for line in std::iter::once(second).chain(data) {
                            self.joined.push(b'\n');
                            self.joined.extend_from_slice(line);
                        }
                        on_data(&self.joined);
                    }
                }
            }
            consumed += end + 2;
        }
        self.body.drain(..consumed);
        Ok(())
    }

    /// Moves the chunks' data from `raw` to `body`.
    fn dechunk(&mut self) -> Result<()> {
        let mut at = 0;
        loop {
            let rest = &self.raw[at..];
            match self.chunking {
                Chunking::Size => {
                    let Some(end) = memchr::memmem::find(rest, b"\r\n") else {
                        break;
                    };
                    let line = std::str::from_utf8(&rest[..end])?;
                    let hex = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| anyhow!("bad chunk size line {line:?}"))?;
                    if size == 0 {
                        bail!("the server ended the stream");
                    }
                    at += end + 2;
                    self.chunking = Chunking::Data(size);
                }
                Chunking::Data(left) => {
                    if rest.is_empty() {
                        break;
                    }
                    let taken = left.min(rest.len());
                    self.body.extend_from_slice(&rest[..taken]);
                    at += taken;
                    self.chunking = match left - taken {
                        0 => Chunking::End,
                        left => Chunking::Data(left),
                    };
                }
                Chunking::End => {
                    if rest.len() < 2 {
                        break;
                    }
                    at += 2;
                    self.chunking = Chunking::Size;
                }
            }
        }
        self.raw.drain(..at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_come_out_of_any_split_of_the_chunked_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = WsUrl::parse(&format!("ws://{}/", listener.local_addr().unwrap())).unwrap();
        let body = "event: subscribed\ndata: {\"type\":\"subscribed\"}\n\n: ping\n\n\
                    id: a.e.1\ndata: {\"seq\":1}\n\nid: a.e.2\ndata: {\"a\":\ndata: 2}\n\n";
        let chunked: String = body
            .as_bytes()
            .chunks(7)
            .map(|chunk| {
                format!(
                    "{:x}\r\n{}\r\n",
                    chunk.len(),
                    std::str::from_utf8(chunk).unwrap()
                )
            })
            .collect();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            for piece in format!("{head}{chunked}").as_bytes().chunks(5) {
                socket.write_all(piece).await.unwrap();
                socket.flush().await.unwrap();
            }
            socket
        });
        let mut reader = connect(&url, Some("k"), "a").await.unwrap();
        let mut events = Vec::new();
        while events.len() < 3 {
            reader.fill().await.unwrap();
            reader
                .drain(|data| events.push(String::from_utf8(data.to_vec()).unwrap()))
                .unwrap();
        }
        assert_eq!(
            events,
            ["{\"type\":\"subscribed\"}", "{\"seq\":1}", "{\"a\":\n2}"]
        );
        drop(server.await.unwrap());
    }
}
