//! The NATS client protocol over WebSocket: a streaming parser (protocol
//! messages may be split across or packed within WebSocket frames), the
//! CONNECT/SUB handshakes confirmed by PING/PONG, and PUB encoding.
//! Messages with headers (`HMSG`) are read too; JetStream's publishes are
//! in `jetstream`.

use anyhow::{anyhow, bail, Result};

use crate::payload;
use crate::ws::{self, OpCode, WsReader, WsWriter};

const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\
\"headers\":true,\"no_responders\":false}\r\nPING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Msg(&'a [u8]),
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
    Info,
}

/// Turns the byte stream carried by WebSocket messages into protocol events.
/// Only a message cut by a frame boundary is copied, into `partial`.
#[derive(Default)]
pub struct Parser {
    partial: Vec<u8>,
}

impl Parser {
    pub fn feed(&mut self, data: &[u8], mut on_event: impl FnMut(Event<'_>)) -> Result<()> {
        if self.partial.is_empty() {
            let used = parse(data, &mut on_event)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            self.partial.extend_from_slice(data);
            let used = parse(&self.partial, &mut on_event)?;
            self.partial.drain(..used);
        }
        Ok(())
    }
}

/// Emits every complete message in `data`; returns how many bytes they took.
fn parse(data: &[u8], on_event: &mut impl FnMut(Event<'_>)) -> Result<usize> {
    let mut used = 0;
    loop {
        let rest = &data[used..];
        let Some(newline) = memchr::memchr(b'\n', rest) else {
            return Ok(used);
        };
        let line = rest[..newline]
            .strip_suffix(b"\r")
            .unwrap_or(&rest[..newline]);
        let mut consumed = newline + 1;
        if line.starts_with(b"MSG ") {
            let payload_len = msg_payload_len(line)?;
            let payload_end = consumed + payload_len;
            if rest.len() < payload_end + 2 {
                return Ok(used);
            }
            on_event(Event::Msg(&rest[consumed..payload_end]));
            consumed = payload_end + 2;
        } else if line.starts_with(b"HMSG ") {
            let (header_len, total_len) = hmsg_lens(line)?;
            let payload_end = consumed + total_len;
            if rest.len() < payload_end + 2 {
                return Ok(used);
            }
            on_event(Event::Msg(&rest[consumed + header_len..payload_end]));
            consumed = payload_end + 2;
        } else {
            on_event(control_event(line)?);
        }
        used += consumed;
    }
}

fn control_event(line: &[u8]) -> Result<Event<'_>> {
    Ok(match line {
        b"PING" => Event::Ping,
        b"PONG" => Event::Pong,
        b"+OK" => Event::Ok,
        _ if line.starts_with(b"-ERR") => Event::Err(line),
        _ if line.starts_with(b"INFO ") => Event::Info,
        _ => bail!(
            "unexpected NATS protocol line: {}",
            String::from_utf8_lossy(line)
        ),
    })
}

/// `MSG <subject> <sid> [reply-to] <#bytes>`: the size is always the last token.
fn msg_payload_len(line: &[u8]) -> Result<usize> {
    line.rsplit(|&b| b == b' ')
        .next()
        .and_then(payload::parse_digits)
        .map(|len| len as usize)
        .ok_or_else(|| anyhow!("bad MSG line: {}", String::from_utf8_lossy(line)))
}

/// `HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>`: the
/// two sizes are the last tokens.
fn hmsg_lens(line: &[u8]) -> Result<(usize, usize)> {
    let mut tokens = line.rsplit(|&b| b == b' ').map(payload::parse_digits);
    match (tokens.next().flatten(), tokens.next().flatten()) {
        (Some(total), Some(header)) if header <= total => Ok((header as usize, total as usize)),
        _ => bail!("bad HMSG line: {}", String::from_utf8_lossy(line)),
    }
}

/// Whether an `-ERR` line reports a slow consumer (`-ERR 'Slow Consumer…'`).
pub fn is_slow_consumer(err: &[u8]) -> bool {
    err.windows(13)
        .any(|window| window.eq_ignore_ascii_case(b"slow consumer"))
}

/// Sends CONNECT and waits for the PONG that confirms it.
pub async fn connect(
    reader: &mut WsReader,
    writer: &mut WsWriter,
    parser: &mut Parser,
) -> Result<()> {
    writer.frame_from(OpCode::Binary, CONNECT);
    writer.flush().await?;
    await_pong(reader, writer, parser).await
}

/// Subscribes and waits for the PONG that confirms the server registered it.
/// Runs before any publishing starts, so no MSG can arrive meanwhile.
pub async fn subscribe(
    reader: &mut WsReader,
    writer: &mut WsWriter,
    parser: &mut Parser,
    subject: &str,
) -> Result<()> {
    writer.frame(OpCode::Binary, |buf| {
        buf.extend_from_slice(b"SUB ");
        buf.extend_from_slice(subject.as_bytes());
        buf.extend_from_slice(b" 1\r\nPING\r\n");
    });
    writer.flush().await?;
    await_pong(reader, writer, parser).await
}

async fn await_pong(
    reader: &mut WsReader,
    writer: &mut WsWriter,
    parser: &mut Parser,
) -> Result<()> {
    ws::await_reply(reader, writer, |message, writer| {
        let mut reply = None;
        parser.feed(message, |event| match event {
            Event::Pong => reply = Some(Ok(())),
            Event::Err(err) => reply = Some(Err(anyhow!("{}", String::from_utf8_lossy(err)))),
            Event::Ping => writer.frame_from(OpCode::Binary, PONG),
            Event::Msg(_) | Event::Ok | Event::Info => {}
        })?;
        reply.transpose()
    })
    .await
}

/// Appends `PUB <subject> <len>\r\n<payload>\r\n`; many fit in one WebSocket frame.
pub fn write_publish(
    buf: &mut Vec<u8>,
    subject: &str,
    publisher: u32,
    counter: u64,
    payload_bytes: usize,
    scheduled_ns: u64,
) {
    buf.extend_from_slice(b"PUB ");
    buf.extend_from_slice(subject.as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(itoa::Buffer::new().format(payload_bytes).as_bytes());
    buf.extend_from_slice(b"\r\n");
    payload::write(buf, payload_bytes, scheduled_ns, publisher, counter);
    buf.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = Parser::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            parser
                .feed(chunk, |event| seen.push(format!("{event:?}")))
                .unwrap();
        }
        seen
    }

    const STREAM: &[u8] = b"INFO {\"server_id\":\"x\"}\r\nPING\r\nMSG load-0 1 5\r\nhello\r\n\
MSG load-0 1 reply.to 7\r\n{\"t\":1}\r\n+OK\r\n-ERR 'Slow Consumer'\r\nPONG\r\n";

    #[test]
    fn parses_packed_messages() {
        let seen = events_of(&[STREAM]);
        assert_eq!(
            seen,
            [
                "Info",
                "Ping",
                &format!("{:?}", Event::Msg(b"hello")),
                &format!("{:?}", Event::Msg(b"{\"t\":1}")),
                "Ok",
                &format!("{:?}", Event::Err(b"-ERR 'Slow Consumer'")),
                "Pong",
            ]
        );
    }

    #[test]
    fn parses_messages_split_at_every_byte() {
        let whole = events_of(&[STREAM]);
        for cut in 1..STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            assert_eq!(events_of(&[a, b]), whole, "cut at {cut}");
        }
        let single_bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(events_of(&single_bytes), whole);
    }

    #[test]
    fn payload_may_contain_crlf() {
        assert_eq!(
            events_of(&[b"MSG s 1 4\r\n", b"a\r\nb", b"\r\n"]),
            [format!("{:?}", Event::Msg(b"a\r\nb"))]
        );
    }

    #[test]
    fn recognises_slow_consumer_errors() {
        assert!(is_slow_consumer(b"-ERR 'Slow Consumer Detected'"));
        assert!(!is_slow_consumer(b"-ERR 'Authorization Violation'"));
    }

    #[test]
    fn rejects_garbage() {
        let mut parser = Parser::default();
        assert!(parser.feed(b"BOGUS\r\n", |_| {}).is_err());
        assert!(parser.feed(b"MSG s 1 x\r\n", |_| {}).is_err());
    }

    #[test]
    fn publish_is_framed_with_its_length() {
        let mut buf = Vec::new();
        write_publish(&mut buf, "load-3", 0, 1, 100, 5);
        assert!(buf.starts_with(b"PUB load-3 100\r\n{\"t\":5,"));
        assert_eq!(buf.len(), "PUB load-3 100\r\n".len() + 100 + 2);
        let mut parser = Parser::default();
        let mut delivered = b"MSG load-3 1 100\r\n".to_vec();
        delivered.extend_from_slice(&buf[16..]);
        let mut payloads = Vec::new();
        parser
            .feed(&delivered, |event| {
                if let Event::Msg(payload) = event {
                    payloads.push(payload::scheduled_ns(payload));
                }
            })
            .unwrap();
        assert_eq!(payloads, [Some(5)]);
    }
}
