//! What a connection does with its client's messages. The frame reading,
//! the inflate limits, pongs, the outbox, the writer and the close are the
//! same for every connection; the broker's session is one handler, and the
//! conformance echo (`examples/autobahn_echo.rs`) another, so the suite
//! checks the very code that serves `/ws`.

use std::future::Future;

use crate::wire::close::CloseReason;
use crate::ws::frame_reader::Message;

/// Handles one connection's client messages. Replies go into the
/// connection's [`Outbox`](crate::send::Outbox), which the handler is given
/// when it is made. Only [`on_message`](Self::on_message) is required; the
/// other methods let a handler wait for work of its own while the
/// connection reads.
pub trait MessageHandler: Send {
    /// Handles one complete message (reassembled, inflated, a text one
    /// checked as UTF-8). The next frame is read once this resolves.
    fn on_message(&mut self, message: Message) -> impl Future<Output = ()> + Send;

    /// Resolves when the handler has work besides the next frame: `None`
    /// once that work is done (the reader then goes on), `Some` to close
    /// the connection for that reason. Looked at before each read of the
    /// socket, not between the frames one read brought. Must be
    /// cancel-safe; never resolves by default.
    fn interrupted(&mut self) -> impl Future<Output = Option<CloseReason>> + Send {
        std::future::pending()
    }

    /// Whether the next frame may be read now (else only `interrupted` is
    /// waited for).
    fn may_read(&self) -> bool {
        true
    }

    /// Runs after every frame, before the next one is read.
    fn after_frame(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Runs once the connection is closing, before its close frame is
    /// queued: the last replies still owed go out first.
    fn closing(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
