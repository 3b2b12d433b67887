//! Timestamps as every server frame carries them: RFC 3339 UTC with
//! milliseconds, formatted once per millisecond per thread.

use std::cell::Cell;
use std::fmt;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

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
    /// The last millisecond formatted on this thread, as the times it spans
    /// and its text: at load, thousands of frames share each one, so
    /// formatting is paid once per millisecond, and a frame in the same
    /// millisecond costs two comparisons.
    static FORMATTED: Cell<(SystemTime, SystemTime, [u8; TIMESTAMP_LEN])> =
        const { Cell::new((SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH, [0; TIMESTAMP_LEN])) };
}

impl Timestamp {
    /// The timestamp's text, in ASCII.
    fn text(self) -> [u8; TIMESTAMP_LEN] {
        let (from, until, mut text) = FORMATTED.get();
        if self.0 < from || self.0 >= until {
            // Into the array itself, so a publish allocates nothing for its
            // `ts`; every year from 1000 to 9999 takes exactly its length.
            let _ = write!(
                &mut text[..],
                "{}",
                humantime::format_rfc3339_millis(self.0)
            );
            let since_epoch = self
                .0
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let from =
                SystemTime::UNIX_EPOCH + Duration::from_millis(since_epoch.as_millis() as u64);
            FORMATTED.set((from, from + Duration::from_millis(1), text));
        }
        text
    }

    fn with_text<T>(self, use_text: impl FnOnce(&str) -> T) -> T {
        use_text(std::str::from_utf8(&self.text()).expect("ASCII"))
    }

    /// Appends the quoted timestamp to a JSON buffer: every publish writes
    /// two, as bytes, without the UTF-8 check a `str` would cost.
    pub(crate) fn write_json(self, buf: &mut Vec<u8>) {
        buf.push(b'"');
        buf.extend_from_slice(&self.text());
        buf.push(b'"');
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
        let at =
            |millis| Timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(millis)).to_string();
        assert_eq!(at(1_756_116_000_123), "2025-08-25T10:00:00.123Z");
        assert_eq!(at(1_756_116_000_123), "2025-08-25T10:00:00.123Z");
        assert_eq!(at(1_756_116_000_124), "2025-08-25T10:00:00.124Z");
        assert_eq!(at(1_756_116_000_123), "2025-08-25T10:00:00.123Z");
        let at_nanos = |millis, nanos| {
            Timestamp(
                SystemTime::UNIX_EPOCH
                    + Duration::from_millis(millis)
                    + Duration::from_nanos(nanos),
            )
            .to_string()
        };
        assert_eq!(
            at_nanos(1_756_116_000_123, 999_999),
            "2025-08-25T10:00:00.123Z"
        );
        assert_eq!(at_nanos(1_756_116_000_124, 0), "2025-08-25T10:00:00.124Z");
        assert_eq!(
            at_nanos(1_756_116_000_123, 999_999),
            "2025-08-25T10:00:00.123Z"
        );
        assert_eq!(at_nanos(1_756_116_000_123, 0), "2025-08-25T10:00:00.123Z");
    }
}
