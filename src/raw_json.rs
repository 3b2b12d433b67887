//! Locating a member's raw bytes in a JSON document.
//!
//! simd-json validates and decodes client frames, but decoding a payload and
//! encoding it again would change it (integers past 128 bits, key order of
//! large objects, lone surrogate escapes), and the contract passes payloads
//! through byte for byte. So the payload's bytes are located here, before
//! simd-json parses the frame in place.
//!
//! The scan is iterative, so nesting depth cannot exhaust the stack, and it
//! never panics. On invalid JSON it may find nothing or nonsense; that frame
//! is then rejected by simd-json anyway.

use std::ops::Range;

/// The byte range of the value at `path` (member names, outermost first),
/// taking the first member of each name, as simd-json's tape lookups do.
pub fn find_member(json: &[u8], path: &[&str]) -> Option<Range<usize>> {
    let mut scanner = Scanner { json, pos: 0 };
    let mut value = 0..json.len();
    for name in path {
        scanner.pos = value.start;
        value = scanner.member(name)?;
    }
    Some(value)
}

struct Scanner<'a> {
    json: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    /// With `pos` at an object, the range of its member `name`'s value.
    fn member(&mut self, name: &str) -> Option<Range<usize>> {
        self.skip_whitespace();
        self.expect(b'{')?;
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            let start = self.pos;
            self.skip_value()?;
            if key_is(&self.json[key], name) {
                return Some(start..self.pos);
            }
            self.skip_whitespace();
            self.expect(b',')?;
        }
    }

    /// Moves past one value of any nesting depth.
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match *self.json.get(self.pos)? {
                b'"' => {
                    self.string()?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    self.pos += 1;
                }
                _ if depth == 0 => {
                    let rest = &self.json[self.pos..];
                    let scalar_len = rest
                        .iter()
                        .position(|&b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                        .unwrap_or(rest.len());
                    self.pos += scalar_len;
                }
                _ => self.pos += 1,
            }
            if depth == 0 {
                return Some(());
            }
        }
    }

    /// With `pos` at a string, its range including the quotes.
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.pos;
        self.expect(b'"')?;
        loop {
            self.pos += memchr::memchr2(b'"', b'\\', self.json.get(self.pos..)?)?;
            if self.json[self.pos] == b'"' {
                self.pos += 1;
                return Some(start..self.pos);
            }
            self.pos += 2;
        }
    }

    fn skip_whitespace(&mut self) {
        while self
            .json
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.json.get(self.pos) == Some(&byte)).then(|| self.pos += 1)
    }
}

/// Whether a quoted key names `name`, decoding escapes when there are any.
fn key_is(quoted: &[u8], name: &str) -> bool {
    let unquoted = &quoted[1..quoted.len() - 1];
    if !unquoted.contains(&b'\\') {
        return unquoted == name.as_bytes();
    }
    simd_json::from_slice::<String>(&mut quoted.to_vec()).is_ok_and(|key| key == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member<'a>(json: &'a str, path: &[&str]) -> Option<&'a str> {
        find_member(json.as_bytes(), path).map(|range| &json[range])
    }

    #[test]
    fn finds_nested_members_verbatim() {
        let json = r#" { "type" : "publish", "message" : { "id":"x", "payload" : {"b":1, "a":[1E+2, -0, "\"}]"]} } } "#;
        assert_eq!(member(json, &["type"]), Some(r#""publish""#));
        assert_eq!(
            member(json, &["message", "payload"]),
            Some(r#"{"b":1, "a":[1E+2, -0, "\"}]"]}"#)
        );
        assert_eq!(
            member(
                r#"{"payload":123456789012345678901234567890123456789012}"#,
                &["payload"]
            ),
            Some("123456789012345678901234567890123456789012")
        );
        assert_eq!(member(r#"{"payload":null}"#, &["payload"]), Some("null"));
        assert_eq!(
            member(r#"{"payload":"\ud800"}"#, &["payload"]),
            Some(r#""\ud800""#)
        );
    }

    #[test]
    fn takes_the_first_of_duplicate_members_and_decodes_escaped_keys() {
        assert_eq!(
            member(r#"{"payload":1,"payload":2}"#, &["payload"]),
            Some("1")
        );
        assert_eq!(member(r#"{"pay\u006coad":3}"#, &["payload"]), Some("3"));
        assert_eq!(member(r#"{"other":{"payload":1}}"#, &["payload"]), None);
    }

    #[test]
    fn survives_deep_nesting_and_garbage() {
        let deep = format!(
            r#"{{"payload":{}{}}}"#,
            "[".repeat(200_000),
            "]".repeat(200_000)
        );
        assert_eq!(
            find_member(deep.as_bytes(), &["payload"]).map(|r| r.len()),
            Some(400_000)
        );
        for garbage in [
            "",
            "{",
            "{\"",
            "{\"payload\"",
            "{\"payload\":",
            "{\"payload\":\"\\",
            "}}}",
            "{\"a\":]}",
            "[1]",
        ] {
            assert_eq!(
                find_member(garbage.as_bytes(), &["payload"]),
                None,
                "{garbage}"
            );
        }
    }
}
