//! The echo server the Autobahn TestSuite drives (`tests/autobahn/`):
//!
//! ```sh
//! PORT=9001 cargo run --release --example autobahn_echo
//! ```
//!
//! listens on 127.0.0.1:`PORT` and echoes every message, text or binary,
//! sent to a WebSocket at `/`. The connections are ringcast's own, as on
//! `/ws`: the same upgrade and `permessage-deflate` negotiation, frame
//! reader, inflate limits, outbox, writer and close; only the message
//! handler differs. Messages up to 16 MiB are accepted (the suite's
//! section 9 sends that much), and the broker's heartbeat (an `info` text frame, which
//! the suite would take for an echo) is pushed out of a run's way.

use std::sync::Arc;

use ringcast::send::Outbox;
use ringcast::wire::deflate::deflate_frame_within;
use ringcast::wire::frame::frame_of;
use ringcast::ws::{Message, MessageHandler, Route};
use ringcast::{Config, Server};

/// The largest message of the suite (case 9.1.6 and others: 16 MiB).
const MAX_MESSAGE_SIZE: u32 = 16 << 20;

/// Echoes each message to the connection it came from.
struct Echo(Arc<Outbox>);

impl MessageHandler for Echo {
    /// With `permessage-deflate` agreed, every echo is compressed, within
    /// the window the client asked for, so that the suite checks the
    /// deflate side of every message (events go out uncompressed when that
    /// is smaller, which the suite's runner does not expect).
    async fn on_message(&mut self, message: Message) {
        let (opcode, data) = (message.opcode(), &message.data[..]);
        let compressed = self.0.deflate().and_then(|deflate| {
            deflate_frame_within(opcode, data, deflate.agreed.server_max_window_bits)
        });
        let echo = compressed.unwrap_or_else(|| frame_of(opcode, &[data]));
        self.0.push_held_reply(echo);
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let max_message_size = MAX_MESSAGE_SIZE.to_string();
    let flags = [
        "--host",
        "127.0.0.1",
        "--max-message-size",
        &max_message_size,
        "--heartbeat-interval",
        "1h",
    ];
    let config = match Config::from_args(flags) {
        Ok(config) => config,
        Err(err) => err.exit(),
    };
    let server = match Server::bind(config).await {
        Ok(server) => server.route(Route::new("/", Echo)),
        Err(err) => {
            eprintln!("autobahn_echo: cannot listen: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = server.local_addr() {
        println!("autobahn_echo listening on ws://{addr}/");
    }
    let stop = server.shutdown();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.begin();
    });
    server.run().await;
    std::process::ExitCode::SUCCESS
}
