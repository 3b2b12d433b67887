//! A minimal HTTP/1.1 client for ringcast's REST API: one keep-alive
//! connection, requests one at a time, bodies framed by `Content-Length`.

use anyhow::{anyhow, bail, Context, Result};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws::WsUrl;

const MAX_RESPONSE_HEAD: usize = 16 * 1024;

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// REST requests to the server behind a WebSocket URL (same host and port).
pub struct HttpClient {
    url: WsUrl,
    api_key: Option<String>,
    /// Kept open between requests; `None` until the first one or after the
    /// server closed it.
    connection: Option<TcpStream>,
}

impl HttpClient {
    pub fn new(url: &WsUrl, api_key: Option<&str>) -> HttpClient {
        HttpClient {
            url: url.clone(),
            api_key: api_key.map(str::to_string),
            connection: None,
        }
    }

    pub async fn get(&mut self, path: &str) -> Result<Response> {
        self.request("GET", path, None).await
    }

    pub async fn post(&mut self, path: &str, body: &[u8]) -> Result<Response> {
        self.request("POST", path, Some(body)).await
    }

    pub async fn delete(&mut self, path: &str) -> Result<Response> {
        self.request("DELETE", path, None).await
    }

    /// Sends one request. A kept-alive connection the server has since closed
    /// fails before any response byte arrives; that request is sent once
    /// more on a fresh connection (the server never saw it).
    async fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response> {
        let request = self.encode(method, path, body);
        let reused = self.connection.is_some();
        match self.exchange(&request).await {
            Ok(response) => Ok(response),
            Err(Exchange::NoResponse(_)) if reused => self
                .exchange(&request)
                .await
                .map_err(|err| err.into_error(method, path)),
            Err(err) => Err(err.into_error(method, path)),
        }
    }

    fn encode(&self, method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.url.authority()
        );
        if let Some(key) = &self.api_key {
            request.push_str(&format!("X-API-Key: {key}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(body);
        request
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Response, Exchange> {
        let mut stream = match self.connection.take() {
            Some(stream) => stream,
            None => TcpStream::connect(self.url.addr)
                .await
                .with_context(|| format!("connecting to http://{}", self.url.authority()))
                .map_err(Exchange::Failed)?,
        };
        stream
            .write_all(request)
            .await
            .map_err(|err| Exchange::NoResponse(err.into()))?;
        let (response, keep_alive) = read_response(&mut stream).await?;
        if keep_alive {
            self.connection = Some(stream);
        }
        Ok(response)
    }
}

/// How an exchange failed: before any response byte (safe to resend) or later.
enum Exchange {
    NoResponse(anyhow::Error),
    Failed(anyhow::Error),
}

impl Exchange {
    fn into_error(self, method: &str, path: &str) -> anyhow::Error {
        let (Exchange::NoResponse(err) | Exchange::Failed(err)) = self;
        err.context(format!("{method} {path}"))
    }
}

/// Reads one response; also says whether the connection may be reused.
async fn read_response(stream: &mut TcpStream) -> Result<(Response, bool), Exchange> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = memmem::find(&buf, b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(Exchange::Failed(anyhow!("response head too long")));
        }
        match read_some(stream, &mut buf).await {
            Ok(0) if buf.is_empty() => {
                return Err(Exchange::NoResponse(anyhow!("connection closed")))
            }
            Err(err) if buf.is_empty() => return Err(Exchange::NoResponse(err)),
            Ok(0) => return Err(Exchange::Failed(anyhow!("connection closed mid-response"))),
            Ok(_) => {}
            Err(err) => return Err(Exchange::Failed(err)),
        }
    };
    let head = parse_head(&buf[..head_end]).map_err(Exchange::Failed)?;
    let mut body = buf.split_off(head_end + 4);
    let keep_alive = match head.content_length {
        Some(length) => {
            while body.len() < length {
                match read_some(stream, &mut body).await {
                    Ok(0) => return Err(Exchange::Failed(anyhow!("connection closed mid-body"))),
                    Ok(_) => {}
                    Err(err) => return Err(Exchange::Failed(err)),
                }
            }
            body.truncate(length);
            !head.close
        }
        // No length: the body runs to the end of the connection.
        None => {
            stream
                .read_to_end(&mut body)
                .await
                .map_err(|err| Exchange::Failed(err.into()))?;
            false
        }
    };
    Ok((
        Response {
            status: head.status,
            body,
        },
        keep_alive,
    ))
}

async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize> {
    buf.reserve(4096);
    Ok(stream.read_buf(buf).await?)
}

struct Head {
    status: u16,
    content_length: Option<usize>,
    close: bool,
}

fn parse_head(head: &[u8]) -> Result<Head> {
    let head = std::str::from_utf8(head).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line: {status_line}"))?;
    let mut parsed = Head {
        status,
        content_length: None,
        close: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("bad HTTP header line: {line}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length = Some(value.parse().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("connection") {
            parsed.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_response_heads() {
        let head =
            parse_head(b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\nConnection: close").unwrap();
        assert_eq!(
            (head.status, head.content_length, head.close),
            (201, Some(12), true)
        );
        let head = parse_head(b"HTTP/1.1 200 OK\r\ncontent-type: application/json").unwrap();
        assert_eq!(
            (head.status, head.content_length, head.close),
            (200, None, false)
        );
        assert!(parse_head(b"garbage").is_err());
    }
}
