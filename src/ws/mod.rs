//! WebSocket `/ws`: a connection's life, from the upgrade to its close.
//!
//! - [`upgrade`]: the handshake checks, the extension and subprotocol
//!   negotiated, and the start of a connection task.
//! - `connection`: the socket split into owned halves (reading and
//!   writing never share a lock), the session and the writer run together,
//!   and the close.
//! - [`frame_reader`]: client frames decoded with no buffer held while
//!   idle.
//! - `session`: the reader, client requests to node calls.
//! - the writer is [`crate::send`]'s, which owns everything outbound.

mod connection;
pub mod frame_reader;
mod session;
mod upgrade;

pub use upgrade::upgrade;
