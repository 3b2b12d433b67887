//! WebSocket `/ws`: a connection's life, from the upgrade to its close.
//!
//! - [`upgrade`]: the handshake checks, the extension and subprotocol
//!   negotiated, and the start of a connection task.
//! - `connection`: the socket split into owned halves (reading and
//!   writing never share a lock), the reader and the writer run together,
//!   and the close.
//! - [`frame_reader`]: client frames decoded with no buffer held while
//!   idle.
//! - `reader`: frames in, pongs out, each message to the connection's
//!   [`MessageHandler`].
//! - `session`: the broker's handler: client requests to node calls;
//!   `subscriptions`: the topics it holds.
//! - [`Route`]: the same connections at another path, with a handler of
//!   the embedder's (the conformance echo).
//! - the writer is [`crate::send`]'s, which owns everything outbound.

mod connection;
pub mod frame_reader;
mod handler;
mod reader;
mod route;
mod session;
mod subscriptions;
mod upgrade;

pub use frame_reader::Message;
pub use handler::MessageHandler;
pub use route::Route;
pub use upgrade::upgrade;
