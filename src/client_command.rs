//! `ringcast client`: an interactive client. Command lines go in (typed on
//! a terminal, or piped), each becomes the contract's request frame with a
//! `request_id`, and every server frame comes out as one line of JSON on
//! standard output, so it pipes into `jq`. Errors go to standard error.
//!
//! When input ends, the client waits for the reply to every request, then
//! closes with 1000. A server that closes first is an error (exit 1).
//!
//! `pub` to several topics is a broadcast, which only REST offers: it goes
//! as `POST /broadcast` to the same server with the same credential, and
//! its answer is printed as one line like a frame.

mod connection;
mod input;
mod request;

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError, WebSocketWrite,
};
use serde::Deserialize;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::config::ClientArgs;
use connection::Stream;
use input::{Input, Lines, Output};
use request::{Command, Request};

/// How long the server has to answer our close before the client exits
/// anyway. It answers after what it had queued for us (the events a last
/// `sub` replays, say), which is printed meanwhile.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type Writer = WebSocketWrite<WriteHalf<Stream>>;

/// Runs the client; the exit code says whether it ended as asked.
pub fn run(args: &ClientArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(session(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("ringcast client: {why}");
            ExitCode::FAILURE
        }
    }
}

/// What the socket reader hands the session.
enum FromServer {
    /// A text (or binary) frame's text.
    Frame(String),
    /// A frame the protocol obliges us to send back (a pong, a close echo).
    Obligation(Frame<'static>),
    /// The server's close frame.
    Closed { code: Option<u16>, reason: String },
    /// The connection failed without a close frame.
    Lost(String),
}

async fn session(args: &ClientArgs) -> Result<(), String> {
    let socket = connection::connect(args).await?;
    let (reader, mut writer) = socket.split(tokio::io::split);
    let (events, mut from_server) = mpsc::channel(64);
    tokio::spawn(read_frames(FragmentCollectorRead::new(reader), events));
    let (mut lines, mut output) = Lines::start();
    let mut pending = Pending::default();
    let (broadcast_answers, mut answered) = mpsc::channel(16);
    let mut input_open = true;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);

    while input_open || !pending.is_empty() {
        tokio::select! {
            input = lines.recv(), if input_open => match input {
                Input::Line(line) => {
                    match request::parse(&line) {
                        Ok(None) => {}
                        Ok(Some(Command::Quit)) => break,
                        Ok(Some(Command::Send(request))) => {
                            pending.send(&mut writer, &request).await?;
                        }
                        Ok(Some(Command::Broadcast(broadcast))) => {
                            pending.broadcasts += 1;
                            let (args, answers) = (args.clone(), broadcast_answers.clone());
                            tokio::spawn(async move {
                                let body = broadcast.to_body();
                                let answer = connection::post_json(&args, "/broadcast", body).await;
                                let _ = answers.send(answer).await;
                            });
                        }
                        Err(why) => eprintln!("ringcast client: {why}"),
                    }
                    lines.read_next();
                }
                Input::End => input_open = false,
                Input::Interrupted => break,
            },
            _ = &mut interrupt => break,
            Some(answer) = answered.recv(), if pending.broadcasts > 0 => {
                pending.broadcasts -= 1;
                match answer {
                    Ok(text) => {
                        if output.print(&text).is_err() {
                            break;
                        }
                    }
                    Err(why) => eprintln!("ringcast client: {why}"),
                }
            }
            event = from_server.recv() => match event {
                Some(FromServer::Frame(text)) => {
                    if show(&text, &mut pending, &mut output).is_err() {
                        // Nobody reads what we print (`| head -1` exited).
                        break;
                    }
                }
                Some(FromServer::Obligation(frame)) => {
                    writer.write_frame(frame).await.map_err(connection_lost)?;
                }
                Some(FromServer::Closed { code, reason }) => {
                    return Err(format!(
                        "the server closed the connection: {}",
                        describe_close(code, &reason)
                    ));
                }
                Some(FromServer::Lost(why)) => return Err(why),
                None => return Err("the connection was lost".into()),
            },
        }
    }
    close(&mut writer, &mut from_server, &mut pending, &mut output).await
}

/// Closes with 1000 and waits for the server's close, printing the frames
/// that arrive meanwhile.
async fn close(
    writer: &mut Writer,
    from_server: &mut mpsc::Receiver<FromServer>,
    pending: &mut Pending,
    output: &mut Output,
) -> Result<(), String> {
    writer
        .write_frame(Frame::close(1000, b""))
        .await
        .map_err(connection_lost)?;
    let until_closed = async {
        while let Some(event) = from_server.recv().await {
            match event {
                FromServer::Frame(text) => {
                    if show(&text, pending, output).is_err() {
                        return;
                    }
                }
                // Nothing more may be sent after a close.
                FromServer::Obligation(_) => {}
                FromServer::Closed { .. } | FromServer::Lost(_) => return,
            }
        }
    };
    // A server that does not answer the close is its problem, not ours.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, until_closed).await;
    Ok(())
}

/// The requests sent whose reply (the `ack`, `pong` or `error` carrying
/// their `request_id`) has not arrived yet.
#[derive(Default)]
struct Pending {
    sent: u64,
    waiting: HashSet<String>,
    /// Broadcasts whose REST answer has not arrived yet.
    broadcasts: usize,
}

impl Pending {
    /// Sends `request` with a request id not used before on this
    /// connection (`cli-1`, `cli-2`, …), and waits for its reply from now on.
    async fn send(&mut self, writer: &mut Writer, request: &Request) -> Result<(), String> {
        self.sent += 1;
        let id = format!("cli-{}", self.sent);
        let frame = request.to_frame(&id);
        self.waiting.insert(id);
        writer
            .write_frame(Frame::text(Payload::Owned(frame.into_bytes())))
            .await
            .map_err(connection_lost)
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.broadcasts == 0
    }
}

/// Prints a server frame as one line, and notes the reply it may be. An
/// error means the output is gone.
fn show(text: &str, pending: &mut Pending, output: &mut Output) -> std::io::Result<()> {
    #[derive(Deserialize)]
    struct Reply<'a> {
        #[serde(borrow)]
        request_id: Option<std::borrow::Cow<'a, str>>,
    }
    let Ok(reply) = serde_json::from_str::<Reply>(text) else {
        eprintln!("ringcast client: the server sent a frame that is not JSON: {text}");
        return Ok(());
    };
    if let Some(id) = &reply.request_id {
        pending.waiting.remove(id.as_ref());
    }
    // JSON allows line breaks only between tokens, where a space means the
    // same: one frame stays one line.
    if text.contains(['\n', '\r']) {
        output.print(&text.replace(['\n', '\r'], " "))
    } else {
        output.print(text)
    }
}

/// Reads frames until the connection closes, and hands them to the session.
async fn read_frames(
    mut reader: FragmentCollectorRead<ReadHalf<Stream>>,
    events: mpsc::Sender<FromServer>,
) {
    let mut obliged = |frame: Frame<'static>| {
        let events = events.clone();
        async move {
            events
                .send(FromServer::Obligation(frame))
                .await
                .map_err(|_| "the session has ended")
        }
    };
    loop {
        let event = match reader.read_frame(&mut obliged).await {
            Ok(frame) => match frame.opcode {
                OpCode::Text | OpCode::Binary => match String::from_utf8(frame.payload.to_vec()) {
                    Ok(text) => FromServer::Frame(text),
                    Err(_) => FromServer::Lost("the server sent a frame that is not UTF-8".into()),
                },
                OpCode::Close => {
                    let payload = &frame.payload[..];
                    FromServer::Closed {
                        code: payload
                            .get(..2)
                            .map(|code| u16::from_be_bytes([code[0], code[1]])),
                        reason: String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
                            .into_owned(),
                    }
                }
                _ => continue,
            },
            Err(err) => FromServer::Lost(connection_lost(err)),
        };
        let last = !matches!(event, FromServer::Frame(_));
        if events.send(event).await.is_err() || last {
            return;
        }
    }
}

fn connection_lost(err: WebSocketError) -> String {
    format!("the connection was lost: {err}")
}

/// A close frame's code and reason, in words.
fn describe_close(code: Option<u16>, reason: &str) -> String {
    let Some(code) = code else {
        return "no close code".into();
    };
    let meaning = match code {
        _ if !reason.is_empty() => reason,
        1000 => "normal",
        1001 => "server shutting down",
        1002 => "protocol error",
        1007 => "invalid UTF-8",
        1008 => "policy: slow consumer, heartbeat timeout or expired token",
        1009 => "message too big",
        _ => "no reason given",
    };
    format!("{code} ({meaning})")
}
