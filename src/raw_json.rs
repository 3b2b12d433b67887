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
//!
//! [`check_tokens`] covers what simd-json 0.17's validation lets through
//! (found by the fuzz targets in `fuzz/`).

use std::ops::Range;

/// Rejects what simd-json would accept but is not JSON, or would decode
/// into a different string than was sent:
///
/// - a raw NUL byte (simd-json ends a number or literal at it and skips
///   what follows);
/// - a number or literal followed by garbage (`12345678901234567890-x`:
///   simd-json's long-number path skips the terminator check);
/// - outside `verbatim` (the payload, which passes through byte for byte),
///   a lone surrogate escape, which simd-json decodes as U+0000 or merges
///   with the next escape into an unrelated character.
///
/// On the way it names two mistakes simd-json only reports as a tape error:
/// a UTF-8 byte order mark before the JSON, and anything after the first
/// complete value (a second object, or trailing text).
///
/// Everything else is left to simd-json's own validation.
pub fn check_tokens(json: &[u8], verbatim: Option<Range<usize>>) -> Result<(), String> {
    if json.starts_with(UTF8_BOM) {
        return Err(
            "it starts with a UTF-8 byte order mark (BOM); send the JSON without one".into(),
        );
    }
    if memchr::memchr(0, json).is_some() {
        return Err("a NUL byte is not allowed".into());
    }
    let verbatim = verbatim.unwrap_or_default();
    let mut depth = 0usize;
    let mut value_done = false;
    let mut pos = 0;
    while let Some(&byte) = json.get(pos) {
        if value_done && depth == 0 && !byte.is_ascii_whitespace() {
            return Err(after_the_value(byte, pos));
        }
        pos = match byte {
            b'"' => {
                value_done = depth == 0;
                string_end(json, pos, &verbatim)?
            }
            b'{' | b'[' => {
                depth += 1;
                pos + 1
            }
            // A close without an open is left to simd-json.
            b'}' | b']' if depth == 0 => pos + 1,
            b'}' | b']' => {
                depth -= 1;
                value_done = depth == 0;
                pos + 1
            }
            b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' => pos + 1,
            _ => {
                let rest = &json[pos..];
                let len = rest
                    .iter()
                    .position(|b| b"{}[],:\" \t\n\r".contains(b))
                    .unwrap_or(rest.len());
                if !is_scalar(&rest[..len]) {
                    return Err("malformed number or literal".into());
                }
                value_done = depth == 0;
                pos + len
            }
        };
    }
    Ok(())
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What to say of `byte`, found at `pos` after a complete JSON value.
fn after_the_value(byte: u8, pos: usize) -> String {
    if matches!(byte, b'{' | b'[') {
        format!("a second JSON value starts at byte {pos}; send exactly one JSON object")
    } else {
        format!("unexpected text at byte {pos}, after the end of the JSON value")
    }
}

/// With `start` at a string's opening quote, the position after its
/// closing one, checking `\u` surrogate escapes on the way.
fn string_end(json: &[u8], start: usize, verbatim: &Range<usize>) -> Result<usize, &'static str> {
    let mut pos = start + 1;
    loop {
        // An escape at the very end can step past it.
        let Some(found) = json
            .get(pos..)
            .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
        else {
            // Unterminated: simd-json rejects it.
            return Ok(json.len());
        };
        pos += found;
        if json[pos] == b'"' {
            return Ok(pos + 1);
        }
        let escape = &json[pos..];
        let high = match (escape.get(1), unicode_escape(&escape[1..])) {
            (Some(b'u'), Some(unit)) => unit,
            _ => {
                pos += 2;
                continue;
            }
        };
        let paired = (0xD800..=0xDBFF).contains(&high)
            && escape
                .get(6)
                .filter(|&&b| b == b'\\')
                .and_then(|_| unicode_escape(&escape[7..]))
                .is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
        if paired {
            pos += 12;
        } else {
            if (0xD800..=0xDFFF).contains(&high) && !verbatim.contains(&pos) {
                return Err("a lone surrogate escape is not allowed outside the payload");
            }
            pos += 6;
        }
    }
}

/// The code unit of `u` followed by four hex digits.
fn unicode_escape(escape: &[u8]) -> Option<u16> {
    let hex = escape.strip_prefix(b"u")?.get(..4)?;
    u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// `true`, `false`, `null` or a number as RFC 8259 spells it.
fn is_scalar(token: &[u8]) -> bool {
    if matches!(token, b"true" | b"false" | b"null") {
        return true;
    }
    let digits = |at: usize| {
        token[at.min(token.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut pos = usize::from(token.first() == Some(&b'-'));
    match digits(pos) {
        0 => return false,
        n if n > 1 && token[pos] == b'0' => return false,
        n => pos += n,
    }
    if token.get(pos) == Some(&b'.') {
        match digits(pos + 1) {
            0 => return false,
            n => pos += 1 + n,
        }
    }
    if matches!(token.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        if matches!(token.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        match digits(pos) {
            0 => return false,
            n => pos += n,
        }
    }
    pos == token.len()
}

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

    #[test]
    fn tokens_simd_json_would_let_through_are_caught() {
        let ok = |json: &str| check_tokens(json.as_bytes(), None);
        for good in [
            r#"{"a":[1,-0,0.5,1e9,-1.25E-3,12345678901234567890123,true,false,null]}"#,
            r#"{"s":"\\u00\\\"\ud83d\ude00\n"}"#,
            " [ 1 , 2 ] ",
        ] {
            assert_eq!(ok(good), Ok(()), "{good}");
        }
        for bad in [
            "[12345678901234567890-garbage]",
            "[1.234567890123456789x]",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[-]",
            "[tru]",
            "[nulll]",
            "[1\u{0}2]",
            r#"{"id":"\ud800"}"#,
            r#"{"id":"\ud800\ue000"}"#,
            r#"{"id":"x\udc00"}"#,
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bom_and_text_after_the_value_are_named() {
        let why = |json: &[u8]| check_tokens(json, None).unwrap_err();
        assert!(why(b"\xEF\xBB\xBF{\"a\":1}").contains("byte order mark"));
        assert_eq!(
            why(br#"{"a":1} {"b":2}"#),
            "a second JSON value starts at byte 8; send exactly one JSON object"
        );
        assert!(why(br#"{"a":"}"}[1]"#).contains("second JSON value starts at byte 9"));
        assert_eq!(
            why(br#"{"a":1}x"#),
            "unexpected text at byte 7, after the end of the JSON value"
        );
        assert!(why(br#""s" 1"#).contains("byte 4"));
        for fine in [&br#" {"a":[{}]} "#[..], b"{}\r\n", b"1", b"]]"] {
            assert_eq!(check_tokens(fine, None), Ok(()));
        }
    }

    #[test]
    fn lone_surrogates_pass_inside_the_verbatim_span_only() {
        let json = br#"{"request_id":"a","payload":"\ud800"}"#;
        let payload = find_member(json, &["payload"]);
        assert_eq!(check_tokens(json, payload), Ok(()));
        assert!(check_tokens(json, None).is_err());
    }
}
