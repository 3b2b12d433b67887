//! The event payload and the clock its timestamps use.
//!
//! A payload is a JSON object of an exact size,
//! `{"t":<scheduled ns>,"p":<publisher>,"n":<counter>,"pad":"xxx…"}`,
//! identical for both servers. `t` is the *scheduled* send time, so a
//! subscriber's latency includes any delay in sending (no coordinated omission).

use std::sync::LazyLock;
use std::time::Instant;

use memchr::memmem;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since the process-wide epoch.
pub fn now_ns() -> u64 {
    ns_at(Instant::now())
}

pub fn ns_at(instant: Instant) -> u64 {
    instant.saturating_duration_since(*EPOCH).as_nanos() as u64
}

/// The instant `ns` after the epoch: the inverse of [`ns_at`].
pub fn instant_at(ns: u64) -> Instant {
    *EPOCH + std::time::Duration::from_nanos(ns)
}

/// Longest possible fixed part: `{"t":` + u64 + `,"p":` + u32 + `,"n":` + u64 + `,"pad":""}`.
pub const MIN_PAYLOAD_BYTES: usize = 5 + 20 + 5 + 10 + 5 + 20 + 10;

/// Appends a payload of exactly `size` bytes (`size >= MIN_PAYLOAD_BYTES`).
pub fn write(buf: &mut Vec<u8>, size: usize, scheduled_ns: u64, publisher: u32, counter: u64) {
    let start = buf.len();
    let mut digits = itoa::Buffer::new();
    buf.extend_from_slice(br#"{"t":"#);
    buf.extend_from_slice(digits.format(scheduled_ns).as_bytes());
    buf.extend_from_slice(br#","p":"#);
    buf.extend_from_slice(digits.format(publisher).as_bytes());
    buf.extend_from_slice(br#","n":"#);
    buf.extend_from_slice(digits.format(counter).as_bytes());
    buf.extend_from_slice(br#","pad":""#);
    let pad = size - (buf.len() - start) - 2;
    buf.resize(buf.len() + pad, b'x');
    buf.extend_from_slice(br#""}"#);
}

/// What a payload's leading fields say about its event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stamp {
    pub scheduled_ns: u64,
    pub publisher: u32,
    /// The publisher's own event counter, consecutive over its whole run.
    pub counter: u64,
}

static SCHEDULED_FIELD: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(br#"{"t":"#));

/// The stamp of the payload somewhere in `message`. The first `{"t":` is the
/// payload's: envelope fields before it never contain one. `p` and `n`
/// follow it directly, so they cost no further search.
pub fn stamp(message: &[u8]) -> Option<Stamp> {
    let at = SCHEDULED_FIELD.find(message)?;
    let (scheduled_ns, rest) = leading_number(&message[at + 5..])?;
    let (publisher, rest) = leading_number(rest.strip_prefix(br#","p":"#)?)?;
    let (counter, _) = leading_number(rest.strip_prefix(br#","n":"#)?)?;
    Some(Stamp {
        scheduled_ns,
        publisher: u32::try_from(publisher).ok()?,
        counter,
    })
}

/// The scheduled send time carried by the payload somewhere in `message`.
pub fn scheduled_ns(message: &[u8]) -> Option<u64> {
    stamp(message).map(|stamp| stamp.scheduled_ns)
}

/// Parses the unsigned decimal integer at the start of `bytes`.
pub fn parse_digits(bytes: &[u8]) -> Option<u64> {
    leading_number(bytes).map(|(value, _)| value)
}

/// The unsigned decimal integer at the start of `bytes`, and what follows it.
fn leading_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let value = bytes[..digits]
        .iter()
        .fold(0, |value, &d| value * 10 + u64::from(d - b'0'));
    Some((value, &bytes[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_exact_size_and_is_json() {
        for size in [MIN_PAYLOAD_BYTES, 128, 1000] {
            let mut buf = b"prefix".to_vec();
            write(&mut buf, size, u64::MAX, u32::MAX, u64::MAX);
            assert_eq!(buf.len(), 6 + size);
            let value: serde_json::Value = serde_json::from_slice(&buf[6..]).unwrap();
            assert_eq!(value["p"], u32::MAX);
        }
    }

    #[test]
    fn extracts_the_scheduled_time() {
        let mut payload = Vec::new();
        write(&mut payload, 128, 123_456_789, 3, 42);
        let mut event =
            br#"{"type":"event","topic":"load-0","message":{"id":"x","payload":"#.to_vec();
        event.extend_from_slice(&payload);
        event.extend_from_slice(br#"},"seq":7,"ts":"2025-01-01T00:00:00.000Z"}"#);
        assert_eq!(scheduled_ns(&event), Some(123_456_789));
        assert_eq!(scheduled_ns(&payload), Some(123_456_789));
        assert_eq!(scheduled_ns(br#"{"x":1}"#), None);
        assert_eq!(scheduled_ns(br#"{"t":}"#), None);
    }

    #[test]
    fn extracts_publisher_and_counter() {
        let mut payload = Vec::new();
        write(&mut payload, 128, 99, 3, 42);
        let expected = Stamp {
            scheduled_ns: 99,
            publisher: 3,
            counter: 42,
        };
        assert_eq!(stamp(&payload), Some(expected));
        assert_eq!(stamp(br#"{"t":1,"p":2}"#), None);
        assert_eq!(stamp(br#"{"t":1,"n":2,"p":3}"#), None);
        assert_eq!(stamp(br#"{"t":1,"p":4294967296,"n":0}"#), None);
    }
}
