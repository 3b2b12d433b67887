//! The event payload and the clock its timestamps use.
//!
//! A payload is a JSON object of an exact size, identical for both servers:
//! `{"t":<scheduled ns>,"p":<publisher>,"n":<counter>,…,"msg":"…"}`. `t` is
//! the *scheduled* send time, so a subscriber's latency includes any delay in
//! sending (no coordinated omission). What follows the stamp is an order
//! event as an application would send it (see [`write()`]), so that
//! `permessage-deflate` shrinks it as much as it would shrink real events.

use std::sync::LazyLock;
use std::time::Instant;

use memchr::memmem;

use crate::rng::Rng;

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

/// The last field, whose text makes the payload exactly as long as asked.
const CLOSING: &[u8] = br#","msg":""}"#;

/// Longest possible stamp, `{"t":` + u64 + `,"p":` + u32 + `,"n":` + u64,
/// and the closing field.
pub const MIN_PAYLOAD_BYTES: usize = 5 + 20 + 5 + 10 + 5 + 20 + CLOSING.len();

const ORDER_EVENTS: [&str; 5] = ["created", "updated", "paid", "shipped", "cancelled"];
const STATUSES: [&str; 5] = ["pending", "confirmed", "packed", "in_transit", "delivered"];
const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "CHF"];
const REGIONS: [&str; 4] = ["eu-west-1", "eu-central-1", "us-east-1", "ap-southeast-2"];
const COLOURS: [&str; 8] = [
    "red", "navy", "olive", "black", "white", "sand", "teal", "grey",
];
const MATERIALS: [&str; 6] = ["cotton", "linen", "wool", "leather", "denim", "silk"];
const PRODUCTS: [&str; 8] = [
    "shirt", "jacket", "scarf", "trousers", "sneakers", "belt", "dress", "cap",
];
const WORDS: [&str; 16] = [
    "please", "deliver", "to", "the", "back", "door", "after", "six", "call", "when", "you",
    "arrive", "gift", "wrap", "thanks", "order",
];

/// Appends a payload of exactly `size` bytes (`size >= MIN_PAYLOAD_BYTES`):
/// after the stamp, an order event whose values are drawn per event from
/// (`publisher`, `counter`) — type, customer, status, currency, total,
/// region, then as many line items as fit — and a free-text `msg` that
/// takes up the rest. Keys repeat from event to event and values vary, as
/// in real traffic: neither all-alike filler, which deflates to almost
/// nothing, nor random bytes, which do not deflate at all.
pub fn write(buf: &mut Vec<u8>, size: usize, scheduled_ns: u64, publisher: u32, counter: u64) {
    let start = buf.len();
    let end = start + size;
    let mut digits = itoa::Buffer::new();
    buf.extend_from_slice(br#"{"t":"#);
    buf.extend_from_slice(digits.format(scheduled_ns).as_bytes());
    buf.extend_from_slice(br#","p":"#);
    buf.extend_from_slice(digits.format(publisher).as_bytes());
    buf.extend_from_slice(br#","n":"#);
    buf.extend_from_slice(digits.format(counter).as_bytes());

    let mut rng = Rng::seeded(u64::from(publisher) << 48 ^ counter);
    let mut order = Order {
        buf,
        rng: &mut rng,
        room_end: end - CLOSING.len(),
    };
    order.fields();
    order.items();
    let Order { buf, rng, .. } = order;

    buf.extend_from_slice(br#","msg":""#);
    let text_end = end - 2;
    while buf.len() < text_end {
        let word = WORDS[rng.below(WORDS.len())].as_bytes();
        let take = word.len().min(text_end - buf.len());
        buf.extend_from_slice(&word[..take]);
        if buf.len() < text_end {
            buf.push(b' ');
        }
    }
    buf.extend_from_slice(br#""}"#);
    debug_assert_eq!(buf.len(), end);
}

/// Writes an order event's fields for as long as they fit before `room_end`.
struct Order<'a> {
    buf: &'a mut Vec<u8>,
    rng: &'a mut Rng,
    room_end: usize,
}

impl Order<'_> {
    fn fields(&mut self) {
        let fits = self.field(|order| {
            let event = order.pick(&ORDER_EVENTS);
            order.put(&[r#","type":"order."#, event, "\""]);
        }) && self.field(|order| {
            order.put(&[r#","customer":"cust-"#]);
            order.number(100_000, 999_999);
            order.put(&["\""]);
        }) && self.field(|order| {
            let status = order.pick(&STATUSES);
            order.put(&[r#","status":""#, status, "\""]);
        }) && self.field(|order| {
            let currency = order.pick(&CURRENCIES);
            order.put(&[r#","currency":""#, currency, r#"","total":"#]);
            order.price(100_000);
        });
        if fits {
            self.field(|order| {
                let region = order.pick(&REGIONS);
                order.put(&[r#","region":""#, region, "\""]);
            });
        }
    }

    /// `"items":[…]` with as many line items as fit, if one does.
    fn items(&mut self) {
        let before = self.buf.len();
        self.buf.extend_from_slice(br#","items":["#);
        // Leave room for the closing bracket.
        self.room_end -= 1;
        let mut first = true;
        while self.field(|order| {
            order.put(&[if first { "{" } else { ",{" }, r#""sku":"SKU-"#]);
            order.number(10_000, 99_999);
            let (colour, material, product) = (
                order.pick(&COLOURS),
                order.pick(&MATERIALS),
                order.pick(&PRODUCTS),
            );
            order.put(&[r#"","name":""#, colour, " ", material, " ", product]);
            order.put(&[r#"","qty":"#]);
            order.number(1, 9);
            order.put(&[r#","price":"#]);
            order.price(20_000);
            order.put(&["}"]);
        }) {
            first = false;
        }
        self.room_end += 1;
        if first {
            self.buf.truncate(before);
        } else {
            self.buf.push(b']');
        }
    }

    /// Writes a field, or takes it back if it overruns; returns whether it fitted.
    fn field(&mut self, write: impl FnOnce(&mut Self)) -> bool {
        let before = self.buf.len();
        write(self);
        let fits = self.buf.len() <= self.room_end;
        if !fits {
            self.buf.truncate(before);
        }
        fits
    }

    fn put(&mut self, parts: &[&str]) {
        for part in parts {
            self.buf.extend_from_slice(part.as_bytes());
        }
    }

    fn pick<'s>(&mut self, choices: &[&'s str]) -> &'s str {
        choices[self.rng.below(choices.len())]
    }

    fn number(&mut self, low: u64, high: u64) {
        let value = self.rng.between(low as usize, high as usize);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A price below `max_cents / 100` with two decimals.
    fn price(&mut self, max_cents: u64) {
        let cents = self.rng.below(max_cents as usize);
        let mut digits = itoa::Buffer::new();
        self.buf
            .extend_from_slice(digits.format(cents / 100).as_bytes());
        self.buf.push(b'.');
        self.buf.push(b'0' + (cents / 10 % 10) as u8);
        self.buf.push(b'0' + (cents % 10) as u8);
    }
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
        let sizes = (MIN_PAYLOAD_BYTES..400).chain([1000, 1024, 4096, 65536]);
        for size in sizes {
            for (t, p, n) in [(u64::MAX, u32::MAX, u64::MAX), (12_345, 0, 7), (1, 3, 999)] {
                let mut buf = b"prefix".to_vec();
                write(&mut buf, size, t, p, n);
                assert_eq!(buf.len(), 6 + size);
                let value: serde_json::Value = serde_json::from_slice(&buf[6..])
                    .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&buf)));
                assert_eq!(
                    (value["p"].as_u64(), value["n"].as_u64()),
                    (Some(p.into()), Some(n))
                );
                // Stamps are read up to 19 digits: u64::MAX only tests the size.
                if t < u64::MAX {
                    let expected = Stamp {
                        scheduled_ns: t,
                        publisher: p,
                        counter: n,
                    };
                    assert_eq!(stamp(&buf), Some(expected));
                }
            }
        }
    }

    fn deflated_len(data: &[u8]) -> usize {
        let mut compress = flate2::Compress::new(flate2::Compression::fast(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        compress
            .compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        out.len()
    }

    /// An order event of 128 B has room for its first fields only; from
    /// 1 KiB on it is mostly line items. Alone (no context kept between
    /// messages) it deflates about as well as real JSON events: to between a
    /// fifth and three fifths of its size once it is large enough to repeat
    /// keys (the backend matters: zlib-rs leaves 1 KiB at 0.56, miniz_oxide
    /// at 0.45).
    #[test]
    fn payloads_are_orders_that_deflate_like_real_events() {
        let mut small = Vec::new();
        write(&mut small, 128, 1_234_567_890, 1, 42);
        let small: serde_json::Value = serde_json::from_slice(&small).unwrap();
        assert!(small["type"].as_str().unwrap().starts_with("order."));
        for size in [1024, 4096] {
            let mut payload = Vec::new();
            write(&mut payload, size, 1_234_567_890, 1, 42);
            let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let items = value["items"].as_array().unwrap();
            assert!(items.len() >= size / 120, "{size}: {} items", items.len());
            let ratio = deflated_len(&payload) as f64 / size as f64;
            assert!(
                (0.2..0.6).contains(&ratio),
                "{size} B deflates to {ratio:.2}"
            );
        }
    }

    #[test]
    fn consecutive_events_differ_beyond_their_stamp() {
        let body = |counter| {
            let mut payload = Vec::new();
            write(&mut payload, 1024, 5, 0, counter);
            payload[payload.iter().position(|&b| b == b'n').unwrap() + 6..].to_vec()
        };
        assert_ne!(body(1), body(2));
        assert_eq!(body(3), body(3));
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
