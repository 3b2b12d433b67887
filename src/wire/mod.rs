//! Bytes on the wire, with no I/O: what the other modules read from and
//! write to sockets and HTTP bodies.

pub mod batch;
pub mod close;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod history;
pub mod json;
pub mod permessage_deflate;
pub mod reply;
pub mod request;
pub mod timestamp;
