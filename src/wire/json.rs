//! Client JSON checked in one scan, with the members the protocol reads
//! located on the way.
//!
//! A publish is validated, and its envelope and payload found, by a single
//! pass over the frame: no tape, no copy, no allocation (but for documents
//! nested deeper than [`INLINE_DEPTH`]). Values are located by byte range,
//! so a payload passes through byte for byte (decoding and encoding it
//! again would change key order, number spelling and escapes), and the
//! envelope's strings are borrowed from the input, decoded in place only
//! when they hold escapes ([`decode_strings`]).
//!
//! The scan is iterative, so nesting depth cannot exhaust the stack, and
//! it never panics. It accepts exactly RFC 8259 JSON, with the limits the
//! server had when simd-json validated frames, kept so that what was
//! refused stays refused (the fuzz targets in `fuzz/` compare it with
//! serde_json):
//!
//! - a number must fit a double (`1e400` is refused), and an exponent may
//!   not run past 2^32;
//! - a lone surrogate escape is refused, except a high one inside the
//!   verbatim member (the payload), which passes through untouched;
//! - a raw NUL byte, a UTF-8 byte order mark before the JSON, and anything
//!   after the first complete value (a second object, or trailing text) are
//!   named in the error.

use std::ops::Range;

/// Nesting depth tracked without allocating; deeper documents spill the
/// container stack to the heap.
pub const INLINE_DEPTH: usize = 256;

/// What a located value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    /// `escaped`: it holds a backslash escape, so its text is not its
    /// bytes until [`decode_strings`] has run.
    String {
        escaped: bool,
    },
    Array,
    Object,
}

/// A value's bytes in the document, and its kind. After [`decode_strings`]
/// a string's range is its decoded text, without the quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub range: Range<usize>,
    pub kind: Kind,
}

/// A member to locate: a member of the top-level object, or a member of
/// one of its members.
pub type Path<'p> = &'p [&'p str];

/// What the scan of a valid document found: the top-level value's kind,
/// and for each path asked for, the first member on that path.
#[derive(Debug)]
pub struct Scanned<const N: usize> {
    pub root: Kind,
    pub found: [Option<Located>; N],
}

/// Validates `json` and locates the value of each of `paths` (one or two
/// member names, outermost first), taking the first member of each name,
/// and for a two-name path only inside the first member of the outer name.
/// A lone high surrogate escape is allowed inside the value of
/// `paths[verbatim]`, which passes through byte for byte.
pub fn scan<const N: usize>(
    json: &[u8],
    paths: &[Path<'_>; N],
    verbatim: Option<usize>,
) -> Result<Scanned<N>, String> {
    const { assert!(N <= 64, "paths are tracked in the bits of a u64") };
    Scan::new(json, paths, verbatim).document()
}

/// The value at the very start of `json`, checked as [`scan`] checks the
/// verbatim member's value inside a document (a lone high surrogate escape
/// passes), and located in `json`: for a caller that has checked the bytes
/// around the value itself. `None` if `json` does not start with a valid
/// value, whitespace before it included; what follows the value is the
/// caller's to check.
pub(crate) fn verbatim_value(json: &[u8]) -> Option<Located> {
    let mut scan = Scan::new(json, &[], None);
    scan.inside_verbatim = true;
    scan.skip_whitespace();
    if scan.pos != 0 {
        return None;
    }
    let kind = match scan.peek_kind().ok()? {
        // Read as a string directly, which tells whether it holds an
        // escape (`values` reads a top-level string without keeping that).
        Kind::String { .. } => Kind::String {
            escaped: scan.string(scan.inside_verbatim).ok()?,
        },
        other => {
            scan.values().ok()?;
            other
        }
    };
    // `values` also skips the whitespace after the value, which no value
    // ends with.
    let len = json[..scan.pos].trim_ascii_end().len();
    Some(Located {
        range: 0..len,
        kind,
    })
}

/// Bit `index` of entry `len`: `paths[index]`'s first name is `len` bytes
/// long (the last entry: that long or longer).
fn first_names_by_len(paths: &[Path<'_>]) -> [u64; 16] {
    let mut by_len = [0; 16];
    for (index, path) in paths.iter().enumerate() {
        if let Some(name) = path.first() {
            by_len[name.len().min(15)] |= 1 << index;
        }
    }
    by_len
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A located member whose value is a container still being scanned.
#[derive(Clone, Copy)]
struct Open {
    slot: usize,
    start: usize,
}

struct Scan<'j, 'p, const N: usize> {
    json: &'j [u8],
    pos: usize,
    paths: &'p [Path<'p>; N],
    verbatim: Option<usize>,
    found: [Option<Located>; N],
    /// Located members whose values are containers being scanned: a
    /// member of the top-level object, and one of its members.
    open: [Option<Open>; 2],
    /// Whether the verbatim member's container value is being scanned: kept
    /// as `open` changes rather than searched for at every string.
    inside_verbatim: bool,
    nesting: Nesting,
    /// Bit `index`: a member named as `paths[index]`'s outer name was met.
    outer_seen: u64,
    /// While inside the first object named by a two-name path's outer
    /// name: the bits of the paths that name leads to.
    inner_paths: u64,
    /// The paths a top-level member name can match, by its length, so that
    /// a name is compared with those of its length only.
    by_first_len: [u64; 16],
}

impl<'j, 'p, const N: usize> Scan<'j, 'p, N> {
    fn new(json: &'j [u8], paths: &'p [Path<'p>; N], verbatim: Option<usize>) -> Self {
        Scan {
            json,
            pos: 0,
            paths,
            verbatim,
            found: std::array::from_fn(|_| None),
            open: [None, None],
            inside_verbatim: false,
            nesting: Nesting::default(),
            outer_seen: 0,
            inner_paths: 0,
            by_first_len: first_names_by_len(paths),
        }
    }

    fn document(mut self) -> Result<Scanned<N>, String> {
        if self.json.starts_with(UTF8_BOM) {
            return Err(
                "it starts with a UTF-8 byte order mark (BOM); send the JSON without one".into(),
            );
        }
        self.skip_whitespace();
        let root = self.peek_kind()?;
        self.values()?;
        self.skip_whitespace();
        if let Some(&byte) = self.json.get(self.pos) {
            return Err(after_the_value(byte, self.pos));
        }
        Ok(Scanned {
            root,
            found: self.found,
        })
    }

    /// Scans the value at `pos` and, for a container, everything in it,
    /// with an explicit stack instead of recursion.
    fn values(&mut self) -> Result<(), String> {
        let mut capture = None;
        loop {
            // A value is expected at `pos`.
            self.skip_whitespace();
            let start = self.pos;
            match self.json.get(start) {
                Some(&opening @ (b'{' | b'[')) => {
                    let container = Container::opened_by(opening);
                    self.pos += 1;
                    self.open_container(container, capture.take(), start);
                    self.skip_whitespace();
                    if self.json.get(self.pos) == Some(&container.closing()) {
                        self.pos += 1;
                        self.close_container();
                    } else {
                        if container == Container::Object {
                            capture = self.member_name()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    let allow_lone_high =
                        self.inside_verbatim || capture.is_some() && capture == self.verbatim;
                    let escaped = self.string(allow_lone_high)?;
                    self.record(capture.take(), start, Kind::String { escaped });
                }
                Some(_) => {
                    let kind = self.scalar()?;
                    self.record(capture.take(), start, kind);
                }
                None => return Err(self.expected("a value")),
            }
            // After a complete value: a separator, the end of containers,
            // or the end of the document.
            loop {
                self.skip_whitespace();
                let Some(container) = self.nesting.innermost() else {
                    return Ok(());
                };
                match self.json.get(self.pos) {
                    Some(b',') => {
                        self.pos += 1;
                        if container == Container::Object {
                            self.skip_whitespace();
                            capture = self.member_name()?;
                        }
                        break;
                    }
                    Some(&byte) if byte == container.closing() => {
                        self.pos += 1;
                        self.close_container();
                    }
                    _ => {
                        let closing = container.closing() as char;
                        return Err(self.expected(&format!("',' or '{closing}'")));
                    }
                }
            }
        }
    }

    /// Members are located at depth 1 and 2 only (see `member_slot`), so
    /// a located container value opens at one of those.
    fn open_container(&mut self, container: Container, capture: Option<usize>, start: usize) {
        if let Some(slot) = capture {
            self.open[self.nesting.depth - 1] = Some(Open { slot, start });
            self.inside_verbatim |= Some(slot) == self.verbatim;
        }
        self.nesting.push(container);
    }

    fn close_container(&mut self) {
        let container = self.nesting.pop();
        let depth = self.nesting.depth;
        if depth == 1 {
            self.inner_paths = 0;
        }
        let open = depth
            .checked_sub(1)
            .and_then(|level| self.open.get_mut(level))
            .and_then(Option::take);
        if let Some(Open { slot, start }) = open {
            self.inside_verbatim &= Some(slot) != self.verbatim;
            let kind = match container {
                Container::Object => Kind::Object,
                Container::Array => Kind::Array,
            };
            self.found[slot] = Some(Located {
                range: start..self.pos,
                kind,
            });
        }
    }

    fn record(&mut self, capture: Option<usize>, start: usize, kind: Kind) {
        if let Some(slot) = capture {
            self.found[slot] = Some(Located {
                range: start..self.pos,
                kind,
            });
        }
    }

    /// Reads a member's name and its colon; returns the slot whose path
    /// ends at this member, if it is the first of that path.
    fn member_name(&mut self) -> Result<Option<usize>, String> {
        if self.json.get(self.pos) != Some(&b'"') {
            return Err(self.expected("a member name in double quotes"));
        }
        let start = self.pos;
        let escaped = self.string(self.inside_verbatim)?;
        let key = &self.json[start + 1..self.pos - 1];
        self.skip_whitespace();
        if self.json.get(self.pos) != Some(&b':') {
            return Err(self.expected("':'"));
        }
        self.pos += 1;
        // Only the top two levels hold members to locate (most names are
        // deeper, in the payload), so the search is a call made for those.
        Ok(if self.nesting.depth <= 2 {
            self.member_slot(key, escaped)
        } else {
            None
        })
    }

    #[inline(never)]
    fn member_slot(&mut self, key: &[u8], escaped: bool) -> Option<usize> {
        let is = |name: &str| key_is(key, escaped, name);
        match self.nesting.depth {
            1 => {
                self.inner_paths = 0;
                // An escaped name may decode to a name of any length.
                let mut candidates = if escaped {
                    self.by_first_len.iter().fold(0, |all, paths| all | paths)
                } else {
                    self.by_first_len[key.len().min(15)]
                };
                let mut slot = None;
                while candidates != 0 {
                    let index = candidates.trailing_zeros() as usize;
                    candidates &= candidates - 1;
                    let bit = 1 << index;
                    match *self.paths[index] {
                        [name] if self.found[index].is_none() && is(name) => slot = Some(index),
                        [outer, _] if self.outer_seen & bit == 0 && is(outer) => {
                            self.outer_seen |= bit;
                            self.inner_paths |= bit;
                        }
                        _ => {}
                    }
                }
                slot
            }
            2 => {
                let mut candidates = self.inner_paths;
                while candidates != 0 {
                    let index = candidates.trailing_zeros() as usize;
                    candidates &= candidates - 1;
                    if self.found[index].is_none() && is(self.paths[index][1]) {
                        return Some(index);
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// With `pos` at an opening quote, moves past the closing one,
    /// checking escapes and UTF-8. Returns whether it held an escape.
    fn string(&mut self, allow_lone_high: bool) -> Result<bool, String> {
        let start = self.pos;
        self.pos += 1 + ordinary_run(&self.json[start + 1..]);
        if self.json.get(self.pos) == Some(&b'"') {
            self.pos += 1;
            return Ok(false);
        }
        self.string_from_special(start, allow_lone_high)
    }

    /// The rest of the string that starts at `start`, from its first byte
    /// that is not plain ASCII content (kept out of line: most strings
    /// have none).
    #[inline(never)]
    fn string_from_special(&mut self, start: usize, allow_lone_high: bool) -> Result<bool, String> {
        let mut escaped = false;
        let mut ascii = true;
        loop {
            let Some(&byte) = self.json.get(self.pos) else {
                return Err(format!("a string starting at byte {start} is not closed"));
            };
            match byte {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\\' => {
                    escaped = true;
                    self.pos += escape_len(&self.json[self.pos..], allow_lone_high)
                        .map_err(|why| format!("{why} at byte {}", self.pos))?;
                    self.pos += ordinary_run(&self.json[self.pos..]);
                }
                0 => return Err(NUL.into()),
                0x01..=0x1F => {
                    return Err(format!(
                        "a control character at byte {} must be escaped",
                        self.pos
                    ))
                }
                _ => {
                    ascii = false;
                    self.pos += 1;
                    self.pos += ordinary_run(&self.json[self.pos..]);
                }
            }
        }
        if !ascii && simdutf8::basic::from_utf8(&self.json[start..self.pos]).is_err() {
            return Err(format!(
                "the string starting at byte {start} is not valid UTF-8"
            ));
        }
        Ok(escaped)
    }

    /// A number or literal at `pos`, which runs to the next delimiter: the
    /// literal or number its first byte promises is read, then the token
    /// must end there, so that a valid one is walked only once.
    fn scalar(&mut self) -> Result<Kind, String> {
        let rest = &self.json[self.pos..];
        let literal = |text: &[u8], kind| rest.starts_with(text).then_some((kind, text.len()));
        let read = match rest.first() {
            Some(b't') => literal(b"true", Kind::Bool),
            Some(b'f') => literal(b"false", Kind::Bool),
            Some(b'n') => literal(b"null", Kind::Null),
            _ => number_len(rest).map(|len| (Kind::Number, len)),
        };
        match read {
            Some((kind, len)) if rest.get(len).is_none_or(|&b| ENDS_SCALAR[usize::from(b)]) => {
                self.pos += len;
                Ok(kind)
            }
            _ => Err(self.malformed_scalar()),
        }
    }

    /// Why the token at `pos`, which runs to the next delimiter, is no
    /// literal or number.
    fn malformed_scalar(&self) -> String {
        let rest = &self.json[self.pos..];
        let token = rest
            .iter()
            .position(|&b| ENDS_SCALAR[usize::from(b)])
            .map_or(rest, |len| &rest[..len]);
        if token.is_empty() {
            self.expected("a value")
        } else if token.contains(&0) {
            NUL.into()
        } else {
            "malformed number or literal".into()
        }
    }

    fn peek_kind(&self) -> Result<Kind, String> {
        Ok(match self.json.get(self.pos) {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String { escaped: false },
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            Some(_) => Kind::Number,
            None => return Err(self.expected("a value")),
        })
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.json.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expected(&self, what: &str) -> String {
        match self.json.get(self.pos) {
            None => format!("the document ends where {what} is expected"),
            Some(0) => NUL.into(),
            Some(_) => format!("expected {what} at byte {}", self.pos),
        }
    }
}

const NUL: &str = "a NUL byte is not allowed";

/// The bytes that end a number or literal: a table rather than a search
/// of the list for every byte of every number.
const ENDS_SCALAR: [bool; 256] = {
    let mut table = [false; 256];
    let delimiters = b"{}[],:\" \t\n\r";
    let mut index = 0;
    while index < delimiters.len() {
        table[delimiters[index] as usize] = true;
        index += 1;
    }
    table
};

/// What to say of `byte`, found at `pos` after a complete JSON value.
fn after_the_value(byte: u8, pos: usize) -> String {
    if matches!(byte, b'{' | b'[') {
        format!("a second JSON value starts at byte {pos}; send exactly one JSON object")
    } else if byte == 0 {
        NUL.into()
    } else {
        format!("unexpected text at byte {pos}, after the end of the JSON value")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

impl Container {
    fn opened_by(byte: u8) -> Self {
        if byte == b'{' {
            Self::Object
        } else {
            Self::Array
        }
    }

    fn closing(self) -> u8 {
        match self {
            Self::Object => b'}',
            Self::Array => b']',
        }
    }
}

/// The kinds of the containers the scan is inside, one bit per level.
#[derive(Default)]
struct Nesting {
    depth: usize,
    inline: [u64; INLINE_DEPTH / 64],
    deeper: Vec<u64>,
    /// The last level's kind, asked for after every value: kept rather
    /// than read from the bits each time.
    innermost: Option<Container>,
}

impl Nesting {
    fn push(&mut self, container: Container) {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if word >= self.inline.len() && word - self.inline.len() == self.deeper.len() {
            self.deeper.push(0);
        }
        let words = match self.inline.get_mut(word) {
            Some(inline) => inline,
            None => &mut self.deeper[word - INLINE_DEPTH / 64],
        };
        let mask = 1 << bit;
        match container {
            Container::Object => *words |= mask,
            Container::Array => *words &= !mask,
        }
        self.depth += 1;
        self.innermost = Some(container);
    }

    fn pop(&mut self) -> Container {
        let container = self.innermost.expect("a container is open");
        self.depth -= 1;
        self.innermost = self.level_kind();
        container
    }

    fn innermost(&self) -> Option<Container> {
        self.innermost
    }

    /// The kind of the container at the last level, from its bit.
    fn level_kind(&self) -> Option<Container> {
        let level = self.depth.checked_sub(1)?;
        let (word, bit) = (level / 64, level % 64);
        let words = match self.inline.get(word) {
            Some(inline) => *inline,
            None => self.deeper[word - INLINE_DEPTH / 64],
        };
        Some(if words & (1 << bit) != 0 {
            Container::Object
        } else {
            Container::Array
        })
    }
}

/// How many bytes from the start of `bytes` are plain ASCII string
/// content: no quote, backslash, control character or non-ASCII byte.
/// Sixteen at a time with SSE2 (part of every x86-64) when there are at
/// least sixteen, else eight at a time while it can.
pub(crate) fn ordinary_run(bytes: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if let Some(last) = bytes.len().checked_sub(16) {
        let mut pos = 0;
        loop {
            // The last chunk ends at the end, overlapping the one before;
            // the shift drops the bytes already checked.
            let at = pos.min(last);
            let chunk = bytes[at..at + 16].try_into().expect("16 bytes");
            let special = sse2::specials(chunk) >> (pos - at);
            if special != 0 {
                return pos + special.trailing_zeros() as usize;
            }
            if at == last {
                return bytes.len();
            }
            pos += 16;
        }
    }
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_byte = |word: u64, byte: u8| {
        let matched = word ^ (ONES * u64::from(byte));
        matched.wrapping_sub(ONES) & !matched & HIGHS
    };
    let mut pos = 0;
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // Bytes under 0x20, and bytes at or over 0x80.
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
        let special = control | (word & HIGHS) | has_byte(word, b'"') | has_byte(word, b'\\');
        if special != 0 {
            // A borrow can mark a byte after a match, never one before
            // it: the lowest mark is the first special byte.
            return pos + special.trailing_zeros() as usize / 8;
        }
        pos += 8;
    }
    pos + bytes[pos..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
        .unwrap_or(bytes.len() - pos)
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// Bit `i` set when `chunk[i]` cannot be plain string content: a quote,
    /// a backslash, or a byte under 0x20 or at or over 0x80 (one signed
    /// comparison: those over 0x7F are negative as `i8`).
    pub(super) fn specials(chunk: &[u8; 16]) -> u32 {
        // SAFETY: SSE2 is in every x86-64 target's baseline, so these
        // intrinsics are available; `chunk` is 16 readable bytes, and
        // `loadu` needs no alignment.
        unsafe {
            let bytes = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
            let outside = _mm_cmplt_epi8(bytes, _mm_set1_epi8(0x20));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), outside)) as u32
        }
    }
}

/// The length of the escape at the start of `escape` (a backslash), or
/// why it is refused.
fn escape_len(escape: &[u8], allow_lone_high: bool) -> Result<usize, &'static str> {
    match escape.get(1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => return Ok(2),
        Some(b'u') => {}
        _ => return Err("invalid escape"),
    }
    let unit = unicode_escape(&escape[1..]).ok_or("invalid \\u escape")?;
    if (0xDC00..0xE000).contains(&unit) {
        return Err(if allow_lone_high {
            "a lone low surrogate escape"
        } else {
            LONE_SURROGATE
        });
    }
    if !(0xD800..0xDC00).contains(&unit) {
        return Ok(6);
    }
    let next = escape
        .get(6)
        .filter(|&&b| b == b'\\')
        .and_then(|_| unicode_escape(&escape[7..]));
    match next {
        Some(low) if (0xDC00..0xE000).contains(&low) => Ok(12),
        // simd-json refused these after a high surrogate; so still.
        Some(unit) if unit < 0xDC00 => Err("a high surrogate escape followed by a non-surrogate"),
        _ if allow_lone_high => Ok(6),
        _ => Err(LONE_SURROGATE),
    }
}

const LONE_SURROGATE: &str = "a lone surrogate escape is not allowed outside the payload";

/// The code unit of `u` followed by four hex digits.
fn unicode_escape(escape: &[u8]) -> Option<u16> {
    let hex = escape.strip_prefix(b"u")?.get(..4)?;
    hex.iter().try_fold(0u16, |unit, &digit| {
        Some(unit << 4 | (digit as char).to_digit(16)? as u16)
    })
}

/// The length of the number as RFC 8259 spells it at the start of `rest`,
/// if there is one whose magnitude a double can hold and whose exponent
/// does not run past 2^32. Whether the token ends there is the caller's.
fn number_len(rest: &[u8]) -> Option<usize> {
    let digits = |at: usize| {
        rest[at.min(rest.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut pos = usize::from(rest.first() == Some(&b'-'));
    let integer = pos..pos + digits(pos);
    match integer.len() {
        0 => return None,
        n if n > 1 && rest[pos] == b'0' => return None,
        n => pos += n,
    }
    let mut fraction = pos..pos;
    if rest.get(pos) == Some(&b'.') {
        fraction = pos + 1..pos + 1 + digits(pos + 1);
        if fraction.is_empty() {
            return None;
        }
        pos = fraction.end;
    }
    let mut exponent: i64 = 0;
    if matches!(rest.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        let negative = rest.get(pos) == Some(&b'-');
        if matches!(rest.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        let exponent_digits = &rest[pos..pos + digits(pos)];
        if exponent_digits.is_empty() {
            return None;
        }
        for &digit in exponent_digits {
            if exponent > 1 << 32 {
                return None;
            }
            exponent = exponent * 10 + i64::from(digit - b'0');
        }
        if negative {
            exponent = -exponent;
        }
        pos += exponent_digits.len();
    }
    // At a zero exponent, up to 308 integer digits fit (under 1e308).
    let fits = exponent == 0 && integer.len() <= 308
        || fits_a_double(&rest[..pos], &integer, &fraction, exponent);
    fits.then_some(pos)
}

/// Whether a well-formed number's magnitude is at most `f64::MAX`
/// (about 1.8e308): by its decimal exponent, parsing only when close.
fn fits_a_double(
    token: &[u8],
    integer: &Range<usize>,
    fraction: &Range<usize>,
    exponent: i64,
) -> bool {
    let significant = |range: &Range<usize>| {
        token[range.clone()]
            .iter()
            .position(|&b| b != b'0')
            .map(|first| range.start + first)
    };
    // The power of ten of the first significant digit.
    let magnitude = match (significant(integer), significant(fraction)) {
        (Some(first), _) => (integer.end - first) as i64 - 1,
        (None, Some(first)) => -((first - fraction.start) as i64) - 1,
        (None, None) => return true,
    };
    match magnitude + exponent {
        ..308 => true,
        308 => std::str::from_utf8(token)
            .ok()
            .and_then(|text| text.parse::<f64>().ok())
            .is_some_and(f64::is_finite),
        _ => false,
    }
}

/// Whether a member name (between its quotes) is `name`, decoding
/// escapes when there are any.
fn key_is(key: &[u8], escaped: bool, name: &str) -> bool {
    if escaped {
        escaped_key_is(key, name)
    } else {
        same_bytes(key, name.as_bytes())
    }
}

/// Whether a member name holding escapes decodes to `name`.
#[inline(never)]
fn escaped_key_is(key: &[u8], name: &str) -> bool {
    let mut decoded = [0; 64];
    // An escape takes at most six bytes per decoded byte, so a longer key
    // cannot decode to `name`.
    if key.len() > 6 * name.len() || key.len() > decoded.len() {
        return false;
    }
    let decoded = &mut decoded[..key.len()];
    decoded.copy_from_slice(key);
    let len = unescape_in_place(decoded);
    &decoded[..len] == name.as_bytes()
}

/// `a == b`, inline for the short names members have rather than a call
/// to `memcmp`: two overlapping words cover 4 to 16 bytes.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let word = |bytes: &[u8], at: usize| {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    };
    let half = |bytes: &[u8], at: usize| {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    };
    match a.len() {
        len if len != b.len() => false,
        17.. => a == b,
        len @ 8.. => word(a, 0) == word(b, 0) && word(a, len - 8) == word(b, len - 8),
        len @ 4.. => half(a, 0) == half(b, 0) && half(a, len - 4) == half(b, len - 4),
        _ => a.iter().zip(b).all(|(x, y)| x == y),
    }
}

/// Decodes, in place, the strings `scan` found that hold escapes, so that
/// every string found can be borrowed as text: each found string's range
/// becomes its text, without quotes. The `verbatim` one is left as it is.
pub fn decode_strings(json: &mut [u8], found: &mut [Option<Located>], verbatim: Option<usize>) {
    let decoded = found
        .iter_mut()
        .enumerate()
        .filter(|&(slot, _)| Some(slot) != verbatim)
        .filter_map(|(_, located)| located.as_mut());
    for located in decoded {
        if let Kind::String { escaped } = located.kind {
            let content = located.range.start + 1..located.range.end - 1;
            let len = if escaped {
                unescape_in_place(&mut json[content.clone()])
            } else {
                content.len()
            };
            located.range = content.start..content.start + len;
            located.kind = Kind::String { escaped: false };
        }
    }
}

/// Decodes the escapes of a valid string's content (no lone surrogates)
/// into its own bytes, front to back; returns the decoded length.
fn unescape_in_place(text: &mut [u8]) -> usize {
    let (mut read, mut write) = (0, 0);
    while read < text.len() {
        if text[read] != b'\\' {
            text[write] = text[read];
            read += 1;
            write += 1;
            continue;
        }
        let simple = match text.get(read + 1) {
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0C),
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            Some(b'u') => None,
            Some(&other) => Some(other),
            None => return write,
        };
        if let Some(byte) = simple {
            text[write] = byte;
            read += 2;
            write += 1;
            continue;
        }
        let Some(unit) = unicode_escape(&text[read + 1..]) else {
            return write;
        };
        let (code, used) = match text
            .get(read + 7..)
            .and_then(unicode_escape)
            .filter(|low| (0xD800..0xDC00).contains(&unit) && (0xDC00..0xE000).contains(low))
        {
            Some(low) => (
                0x10000 + ((u32::from(unit) - 0xD800) << 10 | (u32::from(low) - 0xDC00)),
                12,
            ),
            None => (u32::from(unit), 6),
        };
        let character = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut utf8 = [0; 4];
        let encoded = character.encode_utf8(&mut utf8).as_bytes();
        text[write..write + encoded.len()].copy_from_slice(encoded);
        read += used;
        write += encoded.len();
    }
    write
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_run_stops_at_the_first_special_byte_wherever_it_is() {
        // Several specials at once too: a borrow from the first must not
        // hide it or mark a byte before it.
        for special in [b'"', b'\\', 0x00, 0x1F, 0x80, 0xFF] {
            for at in 0..20 {
                let mut bytes = vec![b'a'; 20];
                bytes[at] = special;
                assert_eq!(ordinary_run(&bytes), at, "{special:#x} at {at}");
                bytes[at + 1..].fill(0x00);
                assert_eq!(ordinary_run(&bytes), at, "{special:#x} at {at}, then NULs");
            }
        }
        assert_eq!(ordinary_run(&[b' '; 19]), 19);
    }

    const FRAME: [Path<'static>; 4] = [
        &["type"],
        &["message"],
        &["message", "id"],
        &["message", "payload"],
    ];

    fn located<'a>(json: &'a str, paths: &[Path<'_>; 4]) -> [Option<&'a str>; 4] {
        let scanned = scan(json.as_bytes(), paths, Some(3)).unwrap();
        scanned
            .found
            .map(|found| found.map(|located| &json[located.range]))
    }

    fn why(json: &[u8]) -> String {
        scan(json, &FRAME, Some(3)).unwrap_err()
    }

    #[test]
    fn locates_nested_members_verbatim() {
        let json = r#" { "type" : "publish", "message" : { "id":"x", "payload" : {"b":1, "a":[1E+2, -0, "\"}]"]} } } "#;
        assert_eq!(
            located(json, &FRAME),
            [
                Some(r#""publish""#),
                Some(r#"{ "id":"x", "payload" : {"b":1, "a":[1E+2, -0, "\"}]"]} }"#),
                Some(r#""x""#),
                Some(r#"{"b":1, "a":[1E+2, -0, "\"}]"]}"#),
            ]
        );
        for payload in [
            "123456789012345678901234567890123456789012",
            "null",
            r#""\ud800""#,
            "[]",
            "{}",
        ] {
            let json = format!(r#"{{"message":{{"payload":{payload}}}}}"#);
            assert_eq!(located(&json, &FRAME)[3], Some(payload), "{json}");
        }
        let scanned = scan(b"[1]", &FRAME, Some(3)).unwrap();
        assert_eq!(scanned.root, Kind::Array);
        assert_eq!(scanned.found, [None, None, None, None]);
    }

    #[test]
    fn takes_the_first_of_duplicate_members_and_decodes_escaped_keys() {
        let json = r#"{"type":1,"type":2,"message":{"id":"a","id":"b"},"message":{"payload":3}}"#;
        assert_eq!(
            located(json, &FRAME),
            [
                Some("1"),
                Some(r#"{"id":"a","id":"b"}"#),
                Some(r#""a""#),
                None
            ]
        );
        let json = r#"{"ty\u0070e":3,"m\u0065ssage":{"p\u0061yload":4}}"#;
        assert_eq!(located(json, &FRAME)[0], Some("3"));
        assert_eq!(located(json, &FRAME)[3], Some("4"));
        // Inner members count only inside the first outer one, and only
        // one level down.
        for json in [
            r#"{"payload":1,"id":"x"}"#,
            r#"{"message":5,"other":{"payload":1}}"#,
            r#"{"message":{"x":{"payload":1}}}"#,
            r#"{"message":[{"payload":1}]}"#,
        ] {
            assert_eq!(located(json, &FRAME)[3], None, "{json}");
        }
    }

    #[test]
    fn top_level_names_are_found_whatever_their_length() {
        // Names of 15 bytes and more share a length bucket.
        const LONG: [Path<'static>; 4] = [
            &["a"],
            &["fifteen_bytes_x"],
            &["twenty_bytes_long_xx"],
            &["a_long_outer_name_b", "in"],
        ];
        let json = r#"{"fifteen_bytes_y":0,"twenty_bytes_long_xx":1,"fifteen_bytes_x":2,"b":0,"a":3,"a_long_outer_name_b":{"in":4}}"#;
        assert_eq!(
            located(json, &LONG),
            [Some("3"), Some("2"), Some("1"), Some("4")]
        );
        let json =
            r#"{"fifteen_bytes_\u0078":2,"\u0061":3,"a_long_outer_name_\u0062":{"\u0069n":4}}"#;
        assert_eq!(
            located(json, &LONG),
            [Some("3"), Some("2"), None, Some("4")]
        );
    }

    #[test]
    fn survives_deep_nesting_and_garbage() {
        let deep = format!(
            r#"{{"message":{{"payload":{}1{}}}}}"#,
            "[{\"a\":".repeat(100_000),
            "}]".repeat(100_000)
        );
        let scanned = scan(deep.as_bytes(), &FRAME, Some(3)).unwrap();
        assert_eq!(scanned.found[3].as_ref().unwrap().range.len(), 800_001);
        assert!(scan(&deep.as_bytes()[..deep.len() - 3], &FRAME, Some(3)).is_err());
        for garbage in [
            "",
            " ",
            "{",
            "{\"",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":\"\\",
            "}}}",
            "{\"a\":]}",
            "[1",
            "{\"a\" 1}",
            "[1 2]",
            "{1:2}",
            "{\"a\":1,}",
            "[1,]",
            "{\"a\":1]",
            "[1}",
            "{,}",
            "[,1]",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12G4\"",
            "\"a\tb\"",
            "'a'",
            "\u{e9}",
        ] {
            assert!(
                scan(garbage.as_bytes(), &FRAME, Some(3)).is_err(),
                "{garbage:?}"
            );
        }
        assert!(scan(b"\"\xff\"", &FRAME, None).is_err(), "not UTF-8");
        assert!(scan(b"\"\xc3\xa9\"", &FRAME, None).is_ok());
    }

    #[test]
    fn refuses_what_simd_json_used_to_let_through() {
        for good in [
            r#"{"a":[1,-0,0.5,1e9,-1.25E-3,12345678901234567890123,true,false,null]}"#,
            r#"{"s":"\\u00\\\"\ud83d\ude00\n"}"#,
            " [ 1 , 2 ] ",
        ] {
            assert!(scan(good.as_bytes(), &FRAME, None).is_ok(), "{good}");
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
            assert!(scan(bad.as_bytes(), &FRAME, None).is_err(), "{bad}");
        }
        assert_eq!(why(b"[1\x002]"), "a NUL byte is not allowed");
        assert_eq!(why(b"{\"a\":\"\x00\"}"), "a NUL byte is not allowed");
        assert_eq!(why(b"[tru]"), "malformed number or literal");
    }

    #[test]
    fn numbers_must_fit_a_double_as_before() {
        let fits = |number: &str| scan(number.as_bytes(), &FRAME, None).is_ok();
        for number in [
            "1e308",
            "1.7976931348623157e308",
            "0.00017976931348623157e312",
            "-1e-400",
            "0e400",
            &"9".repeat(308),
            "1e0000000000000000000001",
        ] {
            assert!(fits(number), "{number}");
        }
        for number in [
            "1.8e308",
            "1e309",
            "-1e400",
            "0.001e312",
            &"9".repeat(309),
            // simd-json's limit on the exponent's digits.
            "0e99999999999",
            "1e-99999999999",
        ] {
            assert!(!fits(number), "{number}");
        }
    }

    #[test]
    fn a_bom_and_text_after_the_value_are_named() {
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
        for fine in [&br#" {"a":[{}]} "#[..], b"{}\r\n", b"1"] {
            assert!(scan(fine, &FRAME, None).is_ok());
        }
    }

    #[test]
    fn lone_high_surrogates_pass_inside_the_verbatim_member_only() {
        let inside = [
            r#"{"message":{"payload":"\ud800"}}"#,
            r#"{"message":{"payload":["\ud800x",{"\udbff":"\ud800\ue000"}]}}"#,
        ];
        for json in inside {
            assert!(scan(json.as_bytes(), &FRAME, Some(3)).is_ok(), "{json}");
            let why = scan(json.as_bytes(), &FRAME, None).unwrap_err();
            assert!(
                why.starts_with("a lone surrogate escape is not allowed outside the payload"),
                "{json}: {why}"
            );
        }
        for outside in [
            r#"{"type":"\ud800","message":{"payload":1}}"#,
            r#"{"message":{"payload":1,"payload":"\ud800"}}"#,
            r#"{"message":{"payload":1},"message":{"payload":"\ud800"}}"#,
        ] {
            assert!(
                scan(outside.as_bytes(), &FRAME, Some(3)).is_err(),
                "{outside}"
            );
        }
        // simd-json refused these in the payload too.
        for never in [r#""\udc00""#, r#""\ud800\u0041""#, r#""\ud800\ud800""#] {
            let json = format!(r#"{{"message":{{"payload":{never}}}}}"#);
            assert!(scan(json.as_bytes(), &FRAME, Some(3)).is_err(), "{json}");
        }
    }

    #[test]
    fn escaped_strings_are_decoded_in_place() {
        let mut json =
            br#"{"type":"a\"b\\c\/d\b\f\n\r\t\u00e9\u2603\ud83d\ude00","message":{"id":"plain"}}"#
                .to_vec();
        let Scanned { mut found, .. } = scan(&json, &FRAME, Some(3)).unwrap();
        decode_strings(&mut json, &mut found, Some(3));
        let text = |slot: usize| {
            let range = found[slot].as_ref().unwrap().range.clone();
            std::str::from_utf8(&json[range]).unwrap().to_owned()
        };
        assert_eq!(text(0), "a\"b\\c/d\u{8}\u{c}\n\r\t\u{e9}\u{2603}\u{1f600}");
        assert_eq!(text(2), "plain");
    }

    #[test]
    fn the_chunked_string_scan_stops_where_a_byte_at_a_time_one_does() {
        // Every byte value at every offset of inputs of every length up to
        // three chunks: the 16-byte steps, the last chunk overlapping the
        // one before, and the word and byte steps of short inputs.
        let special = |b: &u8| *b == b'"' || *b == b'\\' || !(0x20..0x80).contains(b);
        for len in 0..=48 {
            let mut bytes = vec![b'a'; len];
            for at in 0..len {
                for byte in 0..=u8::MAX {
                    bytes[at] = byte;
                    let expected = bytes.iter().position(special).unwrap_or(len);
                    assert_eq!(ordinary_run(&bytes), expected, "{byte:#x} at {at} of {len}");
                }
                bytes[at] = b'"';
                bytes[len - 1] = 0x80;
                assert_eq!(
                    ordinary_run(&bytes),
                    at,
                    "a quote at {at} of {len}, then 0x80"
                );
                bytes[at..].fill(b'a');
            }
            assert_eq!(ordinary_run(&bytes), len);
        }
    }

    #[test]
    fn strings_read_the_same_wherever_their_specials_fall_in_a_chunk() {
        for pad in 0..40 {
            let text = "p".repeat(pad);
            for (content, decoded) in [
                ("", ""),
                (r#"\""#, "\""),
                (r"\u00e9x", "\u{e9}x"),
                (r"\ud83d\ude00", "\u{1f600}"),
                ("\u{e9}\u{2603}", "\u{e9}\u{2603}"),
            ] {
                let mut json =
                    format!(r#"{{"type":"{text}{content}","message":{{"id":"{content}{text}"}}}}"#)
                        .into_bytes();
                let Scanned { mut found, .. } = scan(&json, &FRAME, Some(3)).unwrap();
                decode_strings(&mut json, &mut found, Some(3));
                let string = |slot: usize| {
                    let range = found[slot].as_ref().unwrap().range.clone();
                    String::from_utf8(json[range].to_vec()).unwrap()
                };
                assert_eq!(string(0), format!("{text}{decoded}"), "{pad}: {content}");
                assert_eq!(string(2), format!("{decoded}{text}"), "{pad}: {content}");
            }
            let at = 9 + pad;
            let json =
                |special: &[u8]| [br#"{"type":""#, text.as_bytes(), special, br#"x"}"#].concat();
            assert_eq!(
                why(&json(b"\x1f")),
                format!("a control character at byte {at} must be escaped")
            );
            assert_eq!(why(&json(b"\0")), "a NUL byte is not allowed");
            assert_eq!(why(&json(b"\\x")), format!("invalid escape at byte {at}"));
            assert_eq!(
                why(&json(b"\xff")),
                "the string starting at byte 8 is not valid UTF-8"
            );
            assert_eq!(
                why(&[br#"{"type":""#, text.as_bytes()].concat()),
                "a string starting at byte 8 is not closed"
            );
        }
    }

    #[test]
    fn a_scalar_ends_only_at_a_delimiter() {
        for token in [
            "0", "-0", "12", "1.5", "2e3", "-1.25E-3", "true", "false", "null",
        ] {
            // The scalar is read; what follows it is judged as before
            // (`[1` ends early, `[1,` lacks a value, `[1}` a bracket...).
            for after in ["", " ", "\t", "\n", "\r", ",", "}", ":", "\"", "[", "{"] {
                let json = format!("[{token}{after}");
                let why = scan(json.as_bytes(), &FRAME, None).unwrap_err();
                assert!(
                    !why.contains("malformed") && !why.contains("NUL"),
                    "{json:?}: {why}"
                );
            }
            assert!(scan(format!("[{token}]").as_bytes(), &FRAME, None).is_ok());
            for after in ["x", ".", "e", "-", "+", "t", "\u{e9}"] {
                let json = format!("[{token}{after}]");
                assert_eq!(
                    why(json.as_bytes()),
                    "malformed number or literal",
                    "{json}"
                );
            }
            assert_eq!(
                why(format!("[{token}\0]").as_bytes()),
                "a NUL byte is not allowed"
            );
        }
        assert_eq!(
            why(b"[]]"),
            "unexpected text at byte 2, after the end of the JSON value"
        );
        assert_eq!(why(b"[1,]"), "expected a value at byte 3");
        assert_eq!(why(b"[1,"), "the document ends where a value is expected");
        assert_eq!(why(b"[\0]"), "a NUL byte is not allowed");
        for malformed in [&b"[-]"[..], b"[00]", b"[-01]", b"[1.]", b"[1e+]", b"[nul]"] {
            assert_eq!(why(malformed), "malformed number or literal");
        }
    }

    #[test]
    fn member_names_compare_as_a_byte_by_byte_comparison_would() {
        for len in 0..24_usize {
            let name: Vec<u8> = (0..len).map(|n| b'a' + n as u8).collect();
            assert!(same_bytes(&name, &name));
            if let Some(shorter) = len.checked_sub(1) {
                assert!(!same_bytes(&name, &name[..shorter]), "{len}");
            }
            for at in 0..len {
                let mut other = name.clone();
                other[at] = b'_';
                assert!(!same_bytes(&name, &other), "{len}, differing at {at}");
            }
        }
    }

    /// Mutations of valid frames: accepted exactly when serde_json accepts
    /// them, but where ringcast deliberately differs (see `fuzz/README.md`).
    #[test]
    fn agrees_with_serde_json_on_mutated_frames() {
        let seeds = [
            r#"{"type":"publish","topic":"t","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":{"a":[1,2.5e3,"x\n"],"b":null}},"request_id":"r"}"#,
            r#"{"type":"subscribe","topic":"t","last_n":5,"request_id":"\u00e9"}"#,
            r#"[true,false,null,-0.5E-2,{"":[]}]"#,
        ];
        let alphabet = b"{}[],:\"\\ 0123456789-+.eEtrufalsn\nu\x01\x7f\xc3\xa9";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let mut compared = 0;
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(input.len() + 1);
                match next(3) {
                    0 if at < input.len() => {
                        input.remove(at);
                    }
                    1 if at < input.len() => input[at] = alphabet[next(alphabet.len())],
                    _ => input.insert(at, alphabet[next(alphabet.len())]),
                }
            }
            let reference = serde_json::from_slice::<serde_json::Value>(&input);
            if let Err(err) = &reference {
                let why = err.to_string();
                if why.contains("surrogate") || why.contains("number out of range") {
                    continue;
                }
            }
            compared += 1;
            assert_eq!(
                scan(&input, &FRAME, None).is_ok(),
                reference.is_ok(),
                "{:?}: serde_json says {reference:?}",
                String::from_utf8_lossy(&input)
            );
        }
        assert!(compared > 15_000, "{compared}");
    }
}
