//! How much one write carries: the outbox hands the writer at most this
//! much at a time, and the writer gives it to one `writev`.

/// Most frames handed to one `writev`, and so most frames the writer takes
/// from the queue at a time (the rest stay where `drop_oldest` can reach).
/// A quarter of the default queue bound: at full ingress rate the writes
/// carried this cap when it was 64, and at 256 each write's fixed kernel
/// cost (on loopback the receiver's TCP work too) fell by a fifth per
/// publish (`loadtest/reports/2026-12-07/publish-path`).
pub const MAX_FRAMES_PER_WRITE: usize = 256;
/// Most bytes handed to one `writev`.
pub const MAX_BYTES_PER_WRITE: usize = 64 * 1024;
