//! Lone UTF-16 surrogate escapes: valid JSON that no Rust string, and so no room, can hold.
//!
//! `JSON.stringify` writes a JavaScript string with half a surrogate pair as `"\ud800"`, and
//! serde_json refuses to decode it ("unexpected end of hex escape"). Such a string can never be a
//! stored room's name, media id, user name or password, so the request decoder masks each lone
//! escape with `\u0000` (a control character, which section 4 refuses in room names) and
//! remembers which argument held one; everything past the decoder sees ordinary strings.

/// `raw` (JSON text as written) with every lone surrogate escape replaced by `\u0000`, or
/// `None` when it holds none. Backslashes only occur inside JSON strings, so the text need not
/// be parsed: each escape is read from its backslash.
pub fn mask(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut masked: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(unit) = hex_escape(bytes, i) else {
            // `\"`, `\\`, `\n`, ...: two bytes, skipped whole so `\\u` is not read as `\u`.
            i += 2;
            continue;
        };
        let paired = (0xD800..0xDC00).contains(&unit)
            && hex_escape(bytes, i + 6).is_some_and(|next| (0xDC00..0xE000).contains(&next));
        if paired {
            i += 12;
        } else if (0xD800..0xE000).contains(&unit) {
            let out = masked.get_or_insert_with(|| String::with_capacity(raw.len()));
            out.push_str(&raw[copied..i]);
            out.push_str("\\u0000");
            i += 6;
            copied = i;
        } else {
            i += 6;
        }
    }
    let mut out = masked?;
    out.push_str(&raw[copied..]);
    Some(out)
}

/// The code unit of the `\uXXXX` escape whose backslash is at `at`, if there is one.
fn hex_escape(bytes: &[u8], at: usize) -> Option<u32> {
    if bytes.get(at) != Some(&b'\\') || bytes.get(at + 1) != Some(&b'u') {
        return None;
    }
    let hex = std::str::from_utf8(bytes.get(at + 2..at + 6)?).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks_lone_halves_and_keeps_pairs_and_other_escapes() {
        assert_eq!(mask(r#""\ud800""#).as_deref(), Some(r#""\u0000""#));
        assert_eq!(mask(r#""a\udc00b""#).as_deref(), Some(r#""a\u0000b""#));
        assert_eq!(
            mask(r#"["\uDBFF\uD800", "x"]"#).as_deref(),
            Some(r#"["\u0000\u0000", "x"]"#)
        );
        assert_eq!(mask(r#""\ud83d\ude00 \u00e9 \n \\ud800""#), None);
        assert_eq!(mask(r#""\ud83d""#).as_deref(), Some(r#""\u0000""#));
        assert_eq!(
            mask(r#""\ud83d\u0041""#).as_deref(),
            Some(r#""\u0000\u0041""#)
        );
        assert_eq!(mask("\"plain\""), None);
    }

    #[test]
    fn what_it_masks_serde_json_then_decodes() {
        for raw in [r#""\ud800""#, r#"["a\udc00b", "\ud800\ud800\udc00"]"#] {
            assert!(serde_json::from_str::<serde_json::Value>(raw).is_err());
            let masked = mask(raw).expect("a lone surrogate");
            assert!(serde_json::from_str::<serde_json::Value>(&masked).is_ok());
        }
    }
}
