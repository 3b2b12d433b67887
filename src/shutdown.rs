//! `Shutdown`: the server's graceful stop, one handle that every task
//! listens to (after mini-redis's). It goes in two steps, so that every
//! publish that was acknowledged is in the queues being flushed:
//!
//! 1. **Begun** (SIGTERM, SIGINT, or [`Shutdown::begin`]): the listener
//!    stops accepting, HTTP connections finish their request and close,
//!    upgrades are refused.
//! 2. **Draining**, once publishes have stopped: every connection flushes
//!    what is queued and closes with 1001; the server waits for the
//!    tracked tasks within `SHUTDOWN_TIMEOUT`.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// Cheap to clone; every clone sees the same shutdown.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    begun: CancellationToken,
    draining: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    /// Starts the shutdown: the server stops accepting and then drains.
    pub fn begin(&self) {
        self.begun.cancel();
    }

    pub fn is_begun(&self) -> bool {
        self.begun.is_cancelled()
    }

    /// Resolves once the shutdown has begun.
    pub fn begun(&self) -> WaitForCancellationFuture<'_> {
        self.begun.cancelled()
    }

    /// Resolves once connections are to flush and close.
    pub fn draining(&self) -> WaitForCancellationFuture<'_> {
        self.draining.cancelled()
    }

    /// A task the drain waits for (a connection).
    pub fn track(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Tells every connection to flush and close, and waits up to `timeout`
    /// for the tracked tasks to end; `false` if some were still running.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.draining.cancel();
        self.tasks.close();
        tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_ok()
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
