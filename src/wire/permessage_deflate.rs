//! `permessage-deflate` negotiation (RFC 7692 §5, §7.1).
//!
//! The server accepts the first acceptable `permessage-deflate` offer of
//! `Sec-WebSocket-Extensions` (a comma-separated list, possibly over several
//! header lines) and always answers `server_no_context_takeover` and
//! `client_no_context_takeover` (§7.1.1.2 lets a server ask the latter
//! unasked), so neither side keeps a compression context: each event is
//! deflated once for every subscriber, and a client frame is inflated
//! without state kept between messages.
//!
//! An offer is declined, and the next one tried, when it names an unknown
//! parameter, repeats one, or gives one an invalid value (§5). A
//! `server_max_window_bits=N` offer is accepted and echoed: events are
//! deflated with the full 32 KiB window, so such a subscriber gets the
//! shared compressed frame only for events of at most 2^N bytes (a deflate
//! stream never refers further back than its own length), and the plain
//! frame otherwise. `client_max_window_bits` (with or without a value) is
//! accepted and not answered, so the client may use any window: the
//! inflater always has the full one.

/// The agreed parameters of an accepted offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The largest window (log2 bytes) the client can inflate with, 8 to 15.
    pub server_max_window_bits: u8,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value answering the accepted offer.
    pub fn response(&self) -> String {
        let mut value = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if self.server_max_window_bits < MAX_WINDOW_BITS {
            value.push_str("; server_max_window_bits=");
            value.push_str(&self.server_max_window_bits.to_string());
        }
        value
    }

    /// Whether a deflate stream of `len` input bytes, which refers at most
    /// `len - 1` bytes back, fits the client's window.
    pub fn fits_window(&self, len: usize) -> bool {
        len <= 1 << self.server_max_window_bits
    }
}

const EXTENSION: &[u8] = b"permessage-deflate";
const MAX_WINDOW_BITS: u8 = 15;

/// The first acceptable `permessage-deflate` offer among the values of the
/// `Sec-WebSocket-Extensions` header lines, if any.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreed> {
    header_values
        .into_iter()
        .flat_map(Elements::new)
        .filter_map(|element| element.ok())
        .filter(|(name, _)| name.eq_ignore_ascii_case(EXTENSION))
        .find_map(|(_, params)| accept(&params))
}

/// An offer's parameters, or `None` if it must be declined.
fn accept(params: &Params<'_>) -> Option<Agreed> {
    let mut seen = [false; 4];
    let mut server_max_window_bits = MAX_WINDOW_BITS;
    for (name, value) in params {
        let index = match &name.to_ascii_lowercase()[..] {
            b"server_no_context_takeover" => 0,
            b"client_no_context_takeover" => 1,
            b"server_max_window_bits" => 2,
            b"client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (index, value) {
            (0 | 1, None) | (3, None) => {}
            (2 | 3, Some(value)) => {
                let bits = window_bits(value)?;
                if index == 2 {
                    server_max_window_bits = bits;
                }
            }
            _ => return None,
        }
    }
    Some(Agreed {
        server_max_window_bits,
    })
}

/// A window size value: a decimal 8 to 15 without a leading zero (§7.1.2).
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [b'8'] => Some(8),
        [b'9'] => Some(9),
        [b'1', digit @ b'0'..=b'5'] => Some(10 + digit - b'0'),
        _ => None,
    }
}

/// One extension of the list: its name and parameters, or `Err` if it does
/// not follow the grammar of RFC 6455 §9.1.
type Element<'a> = Result<(&'a [u8], Params<'a>), ()>;

/// Parameter names with their values, unquoted.
type Params<'a> = Vec<(&'a [u8], Option<Vec<u8>>)>;

/// The elements of one `Sec-WebSocket-Extensions` value. A malformed element
/// is skipped up to the next comma outside a quoted string.
struct Elements<'a> {
    rest: &'a [u8],
}

impl<'a> Elements<'a> {
    fn new(value: &'a [u8]) -> Self {
        Self { rest: value }
    }

    fn skip_whitespace(&mut self) {
        self.rest = self.rest.trim_ascii_start();
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let len = self.rest.iter().take_while(|&&byte| is_tchar(byte)).count();
        let (token, rest) = self.rest.split_at(len);
        self.rest = rest;
        (len > 0).then_some(token)
    }

    /// A quoted string's unescaped content (RFC 9110 §5.6.4).
    fn quoted(&mut self) -> Option<Vec<u8>> {
        let mut value = Vec::new();
        let mut bytes = self.rest.get(1..)?.iter().enumerate();
        while let Some((at, &byte)) = bytes.next() {
            match byte {
                b'"' => {
                    self.rest = &self.rest[at + 2..];
                    return Some(value);
                }
                b'\\' => value.push(*bytes.next()?.1),
                _ => value.push(byte),
            }
        }
        None
    }

    fn element(&mut self) -> Option<(&'a [u8], Params<'a>)> {
        self.skip_whitespace();
        let name = self.token()?;
        let mut params = Vec::new();
        loop {
            self.skip_whitespace();
            match self.rest.first() {
                None | Some(b',') => return Some((name, params)),
                Some(b';') => self.rest = &self.rest[1..],
                Some(_) => return None,
            }
            self.skip_whitespace();
            let param = self.token()?;
            self.skip_whitespace();
            let value = if self.rest.first() == Some(&b'=') {
                self.rest = &self.rest[1..];
                self.skip_whitespace();
                if self.rest.first() == Some(&b'"') {
                    Some(self.quoted()?)
                } else {
                    Some(self.token()?.to_vec())
                }
            } else {
                None
            };
            params.push((param, value));
        }
    }

    /// Moves past the next comma outside a quoted string.
    fn skip_to_next_element(&mut self) {
        let mut quoted = false;
        let mut escaped = false;
        for (at, &byte) in self.rest.iter().enumerate() {
            match byte {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    self.rest = &self.rest[at + 1..];
                    return;
                }
                _ => {}
            }
        }
        self.rest = &[];
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Element<'a>;

    fn next(&mut self) -> Option<Element<'a>> {
        loop {
            self.skip_whitespace();
            match self.rest.first() {
                None => return None,
                // Empty list elements are allowed (RFC 9110 §5.6.1).
                Some(b',') => self.rest = &self.rest[1..],
                Some(_) => break,
            }
        }
        let element = self.element();
        if element.is_none() {
            self.skip_to_next_element();
        } else if !self.rest.is_empty() {
            self.rest = &self.rest[1..];
        }
        Some(element.ok_or(()))
    }
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(lines: &[&str]) -> Option<Agreed> {
        negotiate(lines.iter().map(|line| line.as_bytes()))
    }

    fn full_window() -> Option<Agreed> {
        Some(Agreed {
            server_max_window_bits: 15,
        })
    }

    #[test]
    fn accepts_what_real_clients_offer() {
        // Chromium, Firefox, Node `ws`, Python `websockets` (client default).
        assert_eq!(
            agreed(&["permessage-deflate; client_max_window_bits"]),
            full_window()
        );
        // Python `websockets`, Safari.
        assert_eq!(agreed(&["permessage-deflate"]), full_window());
        assert_eq!(
            agreed(&["permessage-deflate; server_no_context_takeover; client_no_context_takeover"]),
            full_window()
        );
        // Python `websockets` with explicit window sizes; aiohttp.
        assert_eq!(
            agreed(&["permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"]),
            Some(Agreed {
                server_max_window_bits: 12
            })
        );
        assert_eq!(
            agreed(&["permessage-deflate; client_max_window_bits=\"10\""]),
            full_window()
        );
    }

    #[test]
    fn answers_both_no_context_takeovers_and_echoes_a_window_limit() {
        assert_eq!(
            full_window().unwrap().response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let small = Agreed {
            server_max_window_bits: 9,
        };
        assert_eq!(
            small.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9"
        );
        assert!(small.fits_window(512));
        assert!(!small.fits_window(513));
    }

    #[test]
    fn takes_the_first_acceptable_of_several_offers() {
        let offers = "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=16, \
                      permessage-deflate; server_max_window_bits=10, permessage-deflate";
        assert_eq!(
            agreed(&[offers]),
            Some(Agreed {
                server_max_window_bits: 10
            })
        );
        assert_eq!(
            agreed(&[
                "foo; bar=\"a,b\"",
                "permessage-deflate ; client_no_context_takeover"
            ]),
            full_window()
        );
        assert_eq!(agreed(&["foo; x=\"a, permessage-deflate\""]), None);
        assert_eq!(agreed(&[",, permessage-deflate ,"]), full_window());
    }

    #[test]
    fn declines_malformed_unknown_repeated_or_out_of_range_parameters() {
        for offer in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=\"1 0\"",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate client_max_window_bits",
            "permessage-deflate;",
            "permessage-deflate; =10",
            "deflate-frame",
            "",
        ] {
            assert_eq!(agreed(&[offer]), None, "{offer}");
        }
        assert_eq!(agreed(&[]), None);
    }
}
