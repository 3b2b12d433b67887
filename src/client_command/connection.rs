//! The client's side of the WebSocket handshake: the URL, the credential
//! header, and a refusal explained in words; and the one REST request the
//! client makes, `POST /broadcast`, with the same credential.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{handshake, WebSocket, WebSocketError};
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::auth::API_KEY_HEADER;
use crate::config::ClientArgs;

/// The upgraded connection under a client WebSocket.
pub type Stream = TokioIo<Upgraded>;
/// An open client WebSocket.
pub type Socket = WebSocket<Stream>;

/// How long connecting and the handshake may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `args.url` and upgrades, presenting the credential given.
pub async fn connect(args: &ClientArgs) -> Result<Socket, String> {
    let target = Target::parse(&args.url)?;
    tokio::time::timeout(CONNECT_TIMEOUT, handshake_with(&target, args))
        .await
        .map_err(|_| {
            format!(
                "{} did not answer within {CONNECT_TIMEOUT:?}",
                target.authority
            )
        })?
}

async fn handshake_with(target: &Target, args: &ClientArgs) -> Result<Socket, String> {
    let stream = open(target).await?;
    let request = Request::get(&target.path)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "upgrade")
        .header("Sec-WebSocket-Key", handshake::generate_key())
        .header("Sec-WebSocket-Version", "13");
    let request = with_credential(request, target, args, Empty::<Bytes>::new())?;
    match handshake::client(&SpawnExecutor, request, stream).await {
        Ok((socket, _)) => Ok(socket),
        Err(WebSocketError::InvalidStatusCode(status)) => Err(refusal(status)),
        Err(err) => Err(format!("the WebSocket handshake failed: {err}")),
    }
}

/// POSTs the JSON `body` to `path` on the server `args.url` names, with
/// the same credential; the response's body, or why there is none (a
/// status other than 200 comes with the server's error body).
pub async fn post_json(args: &ClientArgs, path: &str, body: String) -> Result<String, String> {
    let target = Target::parse(&args.url)?;
    let exchange = async {
        let io = TokioIo::new(open(&target).await?);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|err| format!("POST {path}: {err}"))?;
        tokio::spawn(connection);
        let request = Request::post(path).header(CONTENT_TYPE, "application/json");
        let request = with_credential(request, &target, args, Full::new(Bytes::from(body)))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| format!("POST {path}: {err}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("POST {path}: {err}"))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        match status {
            StatusCode::OK => Ok(text),
            _ => Err(format!("POST {path}: {status}: {text}")),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("POST {path} was not answered within {CONNECT_TIMEOUT:?}"))?
}

/// A TCP connection to `target`, without Nagle's delay.
async fn open(target: &Target) -> Result<TcpStream, String> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|err| format!("cannot connect to {}: {err}", target.authority))?;
    stream
        .set_nodelay(true)
        .map_err(|err| format!("cannot set TCP_NODELAY: {err}"))?;
    Ok(stream)
}

/// `request` to `target` with the `Host` header, the credential given and
/// `body`.
fn with_credential<B>(
    mut request: hyper::http::request::Builder,
    target: &Target,
    args: &ClientArgs,
    body: B,
) -> Result<Request<B>, String> {
    request = request.header(HOST, &target.authority);
    if let Some(key) = &args.api_key {
        request = request.header(API_KEY_HEADER, key);
    }
    if let Some(token) = &args.token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    request
        .body(body)
        .map_err(|err| format!("cannot send this key or token in a header: {err}"))
}

/// Why the server answered the upgrade with `status` instead of 101.
fn refusal(code: u16) -> String {
    let status = StatusCode::from_u16(code);
    let hint = match status {
        Ok(StatusCode::UNAUTHORIZED) => {
            " (the API key or token is missing or wrong: see --api-key, --token)"
        }
        Ok(StatusCode::FORBIDDEN) => " (this origin or credential may not connect)",
        Ok(StatusCode::SERVICE_UNAVAILABLE) => {
            " (the server is at its connection limit or shutting down)"
        }
        Ok(StatusCode::NOT_FOUND | StatusCode::UPGRADE_REQUIRED) => {
            " (is the URL's path the broker's /ws?)"
        }
        _ => "",
    };
    let status = status.map_or(code.to_string(), |status| status.to_string());
    format!("the server refused the WebSocket upgrade: {status}{hint}")
}

/// Where a `ws://` URL points.
#[derive(Debug, PartialEq)]
struct Target {
    /// For the TCP connection; an IPv6 address without its brackets.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the `Host` header and messages.
    authority: String,
    /// Path and query, `/` when the URL has none.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|err| format!("'{url}' is not a URL: {err}"))?;
        let default_port = match uri.scheme_str() {
            Some("ws") => 80,
            Some("wss") => {
                return Err(
                    "wss:// is not supported: connect with ws:// to the broker, or to a \
                     local TLS tunnel in front of it"
                        .into(),
                )
            }
            _ => return Err(format!("'{url}' is not a ws:// URL")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("'{url}' names no host"))?;
        Ok(Self {
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: authority.port_u16().unwrap_or(default_port),
            authority: authority.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or("/", |path| path.as_str())
                .to_owned(),
        })
    }
}

/// Runs hyper's connection task (which drives the upgrade) on tokio.
struct SpawnExecutor;

impl hyper::rt::Executor<Pin<Box<dyn Future<Output = ()> + Send>>> for SpawnExecutor {
    fn execute(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(future);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_and_path() {
        let target = |host: &str, port, authority: &str, path: &str| Target {
            host: host.into(),
            port,
            authority: authority.into(),
            path: path.into(),
        };
        assert_eq!(
            Target::parse("ws://127.0.0.1:8080/ws").unwrap(),
            target("127.0.0.1", 8080, "127.0.0.1:8080", "/ws")
        );
        assert_eq!(
            Target::parse("ws://broker.example/ws?api_key=k").unwrap(),
            target("broker.example", 80, "broker.example", "/ws?api_key=k")
        );
        assert_eq!(
            Target::parse("ws://[::1]:9000").unwrap(),
            target("::1", 9000, "[::1]:9000", "/")
        );
        for (bad, expected) in [
            ("http://127.0.0.1/ws", "not a ws:// URL"),
            ("127.0.0.1:8080", "not a ws:// URL"),
            ("wss://broker.example/ws", "wss:// is not supported"),
            ("ws://", "not a URL"),
        ] {
            let why = Target::parse(bad).unwrap_err();
            assert!(why.contains(expected), "{bad}: {why}");
        }
    }

    #[test]
    fn refusals_are_explained() {
        assert!(refusal(401).contains("401 Unauthorized (the API key or token"));
        assert!(refusal(503).contains("connection limit"));
        assert!(refusal(418).ends_with("418 I'm a teapot"));
    }
}
