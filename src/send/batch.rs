//! How much one write carries: the outbox hands the writer at most this
//! much at a time, and the writer gives it to one `writev`.

/// Most frames handed to one `writev`, and so most frames the writer takes
/// from the queue at a time (the rest stay where `drop_oldest` can reach).
pub const MAX_FRAMES_PER_WRITE: usize = 64;
/// Most bytes handed to one `writev`.
pub const MAX_BYTES_PER_WRITE: usize = 64 * 1024;
