//! Timestamps as every server frame carries them: RFC 3339 UTC with
//! milliseconds, formatted once per millisecond per thread.

use std::cell::Cell;
use std::fmt;
use std::io::Write as _;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

/// A point in time rendered as RFC 3339 UTC with milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    pub fn at(time: SystemTime) -> Self {
        Self(time)
    }
}

/// `2025-08-25T10:00:00.123Z`
const TIMESTAMP_LEN: usize = 24;

thread_local! {
    /// The last millisecond formatted on this thread: at load, thousands of
    /// frames share each one, so formatting is paid once per millisecond.
    static FORMATTED: Cell<(u128, [u8; TIMESTAMP_LEN])> = const { Cell::new((u128::MAX, [0; TIMESTAMP_LEN])) };
}

impl Timestamp {
    fn with_text<T>(self, use_text: impl FnOnce(&str) -> T) -> T {
        let millis = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let (cached_millis, mut text) = FORMATTED.get();
        if cached_millis != millis {
            // Into the array itself, so a publish allocates nothing for its
            // `ts`; every year from 1000 to 9999 takes exactly its length.
            let _ = write!(
                &mut text[..],
                "{}",
                humantime::format_rfc3339_millis(self.0)
            );
            FORMATTED.set((millis, text));
        }
        use_text(std::str::from_utf8(&text).expect("ASCII"))
    }

    /// Appends the quoted timestamp to a JSON buffer.
    pub(crate) fn write_json(self, buf: &mut Vec<u8>) {
        self.with_text(|text| {
            buf.push(b'"');
            buf.extend_from_slice(text.as_bytes());
            buf.push(b'"');
        });
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|text| f.write_str(text))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_text(|text| serializer.serialize_str(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timestamp_cache_follows_the_clock() {
        let at = |millis| {
            Timestamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(millis)).to_string()
        };
        assert_eq!(at(1_756_116_000_123), "2025-08-25T10:00:00.123Z");
        assert_eq!(at(1_756_116_000_123), "2025-08-25T10:00:00.123Z");
        assert_eq!(at(1_756_116_000_124), "2025-08-25T10:00:00.124Z");
        assert_eq!(at(1_756_116_000_123), "2025-08-25T10:00:00.123Z");
    }
}
