//! A validating JSON scanner: it checks text against the JSON grammar and hands back the spans
//! of the values its caller asks for, without building any value.
//!
//! It serves the two paths that read big JSON only to check it and keep it as text: a
//! `saveRoom` request line and a room file. Parsing such a room with serde_json took two passes
//! and most of the CPU a `saveRoom` costs; this is one pass with no allocation.
//!
//! It is deliberately partial. It answers `None` for anything it does not handle itself: bad
//! syntax, escaped keys where its caller compares keys, `\u` escapes of surrogates, numbers
//! at or past a float's largest value, nesting deeper than serde_json allows. The caller then asks
//! serde_json, which decides and says exactly what is wrong. So the one rule is that the
//! scanner never accepts text serde_json refuses (as a value, not only as text to skip); the
//! tests and the `scan` fuzz target hold it to that. The text must already be known to be UTF-8
//! (a `&str`), so strings need no check beyond escapes and control characters.

/// serde_json's nesting limit; deeper text goes to serde_json, which refuses it.
const MAX_DEPTH: usize = 128;

/// A cursor over JSON text. Every method skips the whitespace before what it reads.
pub struct Scanner<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

/// A string as written between its quotes: escapes are still escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Str<'a> {
    pub inner: &'a str,
    /// Whether it holds a backslash escape (then `inner` is not its value).
    pub escaped: bool,
}

impl<'a> Str<'a> {
    /// The string's text when it has no escapes (the common case): compare it with a key.
    pub fn plain(self) -> Option<&'a str> {
        (!self.escaped).then_some(self.inner)
    }
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Scanner<'a> {
        Scanner {
            text,
            at: 0,
            depth: 0,
        }
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.at) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    /// Nothing but whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// The punctuation byte `want` (`[`, `,`, ...), consumed.
    #[inline]
    pub fn punct(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.at += 1)
    }

    /// Runs `read` and returns it with the text it consumed.
    pub fn spanned<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<(&'a str, T)> {
        self.peek()?;
        let start = self.at;
        let value = read(self)?;
        Some((&self.text[start..self.at], value))
    }

    /// Any JSON value, returned as written.
    pub fn value(&mut self) -> Option<&'a str> {
        self.spanned(Self::skip_value).map(|(raw, ())| raw)
    }

    /// Any JSON value, checked and passed over.
    pub fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip_value()),
            b'[' => self.array(Self::skip_value),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.peek()?;
        let end = self.at + word.len();
        (self.text.as_bytes().get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    /// `null`, or what `read` reads: a field that may be absent.
    pub fn nullable(&mut self, read: impl FnOnce(&mut Self) -> Option<()>) -> Option<()> {
        if self.peek()? == b'n' {
            self.literal("null")
        } else {
            read(self)
        }
    }

    /// An object, handing each key to `member`, which must read the member's value.
    ///
    /// (`object` and `array` are written out alike on purpose: one shared reader with the
    /// closing byte as a parameter measured 2-3 us more per 5 KB `saveRoom`.)
    pub fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, Str<'a>) -> Option<()>,
    ) -> Option<()> {
        self.punct(b'{')?;
        self.enter()?;
        if self.peek()? == b'}' {
            self.at += 1;
        } else {
            loop {
                let key = self.string()?;
                self.punct(b':')?;
                member(self, key)?;
                match self.peek()? {
                    b',' => self.at += 1,
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// An array, calling `element` to read each element.
    pub fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.punct(b'[')?;
        self.enter()?;
        if self.peek()? == b']' {
            self.at += 1;
        } else {
            loop {
                element(self)?;
                match self.peek()? {
                    b',' => self.at += 1,
                    b']' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// A string.
    pub fn string(&mut self) -> Option<Str<'a>> {
        self.punct(b'"')?;
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut i = start;
        let mut escaped = false;
        loop {
            i = skip_plain(bytes, i);
            match *bytes.get(i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    i = escape_end(bytes, i + 1)?;
                }
                _ => return None, // a control character
            }
        }
        self.at = i + 1;
        Some(Str {
            inner: &self.text[start..i],
            escaped,
        })
    }

    /// A number, checked by its grammar and below a float's largest value: a value under
    /// 10^308 judged by its digits before the point and its exponent. serde_json decides the
    /// others (it refuses `1e999`, which has no float value, as a value; it reads `1e-999` as 0).
    pub fn number(&mut self) -> Option<()> {
        self.peek()?;
        let bytes = self.text.as_bytes();
        let mut i = self.at;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        let end = digits_end(bytes, i);
        if end == i || (bytes[i] == b'0' && end - i > 1) {
            return None;
        }
        // The value is below 10^magnitude.
        let mut magnitude = if bytes[i] == b'0' {
            0
        } else {
            (end - i) as i64
        };
        i = end;
        if bytes.get(i) == Some(&b'.') {
            let end = digits_end(bytes, i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            let negative = bytes.get(i) == Some(&b'-');
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let end = digits_end(bytes, i);
            let digits = self
                .text
                .get(i..end)
                .filter(|e| !e.is_empty() && e.len() <= 6)?;
            let exponent: i64 = digits.parse().ok()?;
            magnitude += if negative { -exponent } else { exponent };
            i = end;
        }
        if magnitude > 308 {
            return None;
        }
        self.at = i;
        Some(())
    }

    /// A non-negative integer that fits a `u64`, written plainly (no sign, fraction or
    /// exponent: serde_json refuses a fraction or an exponent for a `u64` too).
    pub fn uint(&mut self) -> Option<u64> {
        self.peek()?;
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut end = start;
        let mut n: u64 = 0;
        // Timestamps have 13 digits: the first eight in one step.
        if let Some(first) = bytes.get(start..start + 8).and_then(|chunk| {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            eight_digits(u64::from_le_bytes(word))
        }) {
            n = first;
            end += 8;
        }
        while let Some(digit) = bytes
            .get(end)
            .map(|b| b.wrapping_sub(b'0'))
            .filter(|d| *d <= 9)
        {
            // Nineteen digits cannot overflow; a twentieth is checked below.
            n = n.wrapping_mul(10).wrapping_add(u64::from(digit));
            end += 1;
        }
        let len = end - start;
        if len == 0 || (bytes[start] == b'0' && len > 1) {
            return None;
        }
        if matches!(bytes.get(end), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        if len > 19 {
            n = self.text[start..end].parse().ok()?;
        }
        self.at = end;
        Some(n)
    }
}

fn digits_end(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Where the escape whose letter is at `i` ends. `\u` escapes of surrogates are left to
/// serde_json, which pairs them.
fn escape_end(bytes: &[u8], i: usize) -> Option<usize> {
    match bytes.get(i)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
        b'u' => {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 5)?).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let unit = u16::from_str_radix(hex, 16).ok()?;
            (!(0xD800..=0xDFFF).contains(&unit)).then_some(i + 5)
        }
        _ => None,
    }
}

/// Bytes that end a string's plain run: the closing quote, a backslash, a control character.
const fn special_bytes() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
}
static SPECIAL: [bool; 256] = special_bytes();

/// The end of the run of ordinary string bytes starting at `i`: eight bytes at a time, then
/// byte by byte for the last few.
#[inline]
fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let special = special_mask(u64::from_le_bytes(word));
        if special != 0 {
            // The lowest flagged byte is a true one (see `special_mask`).
            return i + (special.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while bytes.get(i).is_some_and(|&b| !SPECIAL[usize::from(b)]) {
        i += 1;
    }
    i
}

/// The high bit of every byte of `word` that is `"`, `\` or a control character, and maybe of
/// some bytes after the first such byte: the subtractions borrow only towards higher bytes,
/// so the lowest flag is always exact (the bit trick "has a byte less than n").
#[inline]
fn special_mask(word: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    below(word, 0x20)
        | below(word ^ (ONES * u64::from(b'"')), 1)
        | below(word ^ (ONES * u64::from(b'\\')), 1)
}

/// The value of eight ASCII digits (the first in the lowest byte), or `None` if one is not a
/// digit.
#[inline]
fn eight_digits(word: u64) -> Option<u64> {
    const ZEROS: u64 = u64::from_ne_bytes([b'0'; 8]);
    let digits = word.wrapping_sub(ZEROS);
    // Every byte was at least '0' (no borrow set a high bit) and is at most 9 after it.
    let all_digits = (word & 0xF0F0_F0F0_F0F0_F0F0) == 0x3030_3030_3030_3030
        && (digits.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) == 0;
    if !all_digits {
        return None;
    }
    let pairs = (digits.wrapping_mul(10) + (digits >> 8)) & 0x00FF_00FF_00FF_00FF;
    let quads = (pairs.wrapping_mul(100) + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((quads.wrapping_mul(10000) + (quads >> 32)) & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the scanner takes `text` as one JSON value.
    fn takes(text: &str) -> bool {
        let mut s = Scanner::new(text);
        s.skip_value().is_some() && s.at_end()
    }

    #[test]
    fn takes_what_json_allows() {
        for text in [
            "0",
            "-0",
            "12",
            "-12",
            "9999999999999999999",
            "-1.5e+3",
            "1E9",
            "0.25",
            "2.50",
            "1e-280",
            "true",
            "false",
            "null",
            "\"\"",
            "\"a\\\"b\\\\c\\/\\b\\f\\n\\r\\t\\u00e9\"",
            "\"🎬 é\"",
            " [ 1 , { \"a\" : [ ] } ] ",
            "{}",
            "[]",
            "\"\u{7f}\"",
            "{\"a\":1,\"a\":2}",
        ] {
            assert!(takes(text), "{text}");
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_json_refuses() {
        for text in [
            "",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "tru",
            "nul",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"a\u{1}\"",
            "[1,]",
            "[1 2]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{1:2}",
            "[",
            "]",
            "1 2",
            "{\"a\":1}}",
            "NaN",
            "Infinity",
        ] {
            assert!(!takes(text), "{text:?}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(text).is_err(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn leaves_surrogates_huge_numbers_and_deep_nesting_to_serde_json() {
        for huge in [
            "1e999",
            "1e309",
            "-2e308",
            "10e308",
            "1e1234567",
            &"9".repeat(309),
        ] {
            assert!(!takes(huge), "{huge}");
        }
        for big in [
            "9e307",
            "0.5e308",
            "12345678901234567890.5",
            "1e-999",
            &"9".repeat(308),
        ] {
            assert!(takes(big), "{big}");
            assert!(
                serde_json::from_str::<serde_json::Value>(big).is_ok(),
                "{big}"
            );
        }
        assert!(!takes("\"\\ud83c\\udfac\""));
        assert!(!takes("\"\\udfac\""));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(takes(&deep));
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(!takes(&deeper));
        assert!(serde_json::from_str::<serde_json::Value>(&deeper).is_err());
    }

    #[test]
    fn word_tricks_agree_with_byte_by_byte() {
        let samples: Vec<u8> = (0u8..=255).collect();
        for (i, &a) in samples.iter().enumerate() {
            for &b in samples.iter().skip(i % 7).step_by(7) {
                let bytes = [b'x', a, b'y', b, a, b'z', b'0', b];
                let word = u64::from_le_bytes(bytes);
                let first = bytes.iter().position(|&c| SPECIAL[usize::from(c)]);
                let mask = special_mask(word);
                assert_eq!(
                    (mask != 0).then(|| mask.trailing_zeros() as usize / 8),
                    first,
                    "{bytes:?}"
                );
                let digits = [b'1', b'2', a, b'4', b'5', b, b'7', b'8'];
                let expected = std::str::from_utf8(&digits)
                    .ok()
                    .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
                    .map(|t| t.parse::<u64>().unwrap());
                assert_eq!(
                    eight_digits(u64::from_le_bytes(digits)),
                    expected,
                    "{digits:?}"
                );
            }
        }
        assert_eq!(
            eight_digits(u64::from_le_bytes(*b"17298900")),
            Some(17298900)
        );
        assert_eq!(eight_digits(u64::from_le_bytes(*b"00000000")), Some(0));
        assert_eq!(
            eight_digits(u64::from_le_bytes(*b"99999999")),
            Some(99999999)
        );
    }

    #[test]
    fn strings_and_numbers_are_read_as_written() {
        let mut s = Scanner::new(
            r#" "plex://movie/1", "a\"b", 18446744073709551615, 18446744073709551616 "#,
        );
        assert_eq!(s.string().and_then(Str::plain), Some("plex://movie/1"));
        s.punct(b',').unwrap();
        let escaped = s.string().unwrap();
        assert_eq!((escaped.inner, escaped.escaped), (r#"a\"b"#, true));
        s.punct(b',').unwrap();
        assert_eq!(s.uint(), Some(u64::MAX));
        s.punct(b',').unwrap();
        assert_eq!(s.uint(), None);
        for refused in ["1.0", "1e3", "-1", "01"] {
            assert_eq!(Scanner::new(refused).uint(), None, "{refused}");
        }
        // Every length around the eight-byte steps, with the special byte at every place.
        for len in 0..20 {
            for at in 0..len {
                for special in ["\\n", "\u{1}", "\u{1f}"] {
                    let mut inner = "x".repeat(len);
                    inner.replace_range(at..at + 1, special);
                    let text = format!("\"{inner}\"");
                    assert_eq!(takes(&text), special == "\\n", "{text:?}");
                }
            }
            let text = format!("\"{}é\"", "y".repeat(len));
            assert_eq!(Scanner::new(&text).string().unwrap().inner.len(), len + 2);
        }
    }
}
