//! Compact JSON from pretty: the whitespace between tokens removed, strings untouched.
//!
//! Room files are pretty-printed; the daemon keeps and answers rooms compact.

use bytes::Bytes;

/// Removes the whitespace between JSON tokens (never inside strings). Works on runs found with
/// `memchr`, not byte by byte: pretty room files are mostly indentation and short strings.
fn minify_into(json: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if has_tab_or_cr(json) {
        // A file from an editor that ends lines with CR LF, or indents with tabs: byte by byte.
        // A carriage return left in an answer ends the line for many readers.
        return minify_slowly(json, out);
    }
    let mut rest = json;
    while let Some(at) = memchr::memchr3(b'"', b' ', b'\n', rest) {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        if rest[0] != b'"' {
            let spaces = rest
                .iter()
                .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
            rest = &rest[spaces.unwrap_or(rest.len())..];
            continue;
        }
        // A string, escapes included, copied whole.
        let mut end = 1;
        while let Some(at) = memchr::memchr2(b'"', b'\\', &rest[end..]) {
            end += at;
            if rest[end] == b'\\' {
                end += 2;
                if end >= rest.len() {
                    break;
                }
            } else {
                end += 1;
                break;
            }
        }
        let end = end.min(rest.len());
        out.extend_from_slice(&rest[..end]);
        rest = &rest[end..];
    }
    out.extend_from_slice(rest);
}

/// Whether `json` may hold whitespace between tokens (or only inside strings).
pub fn has_whitespace(json: &[u8]) -> bool {
    memchr::memchr2(b' ', b'\n', json).is_some() || has_tab_or_cr(json)
}

fn has_tab_or_cr(json: &[u8]) -> bool {
    memchr::memchr2(b'\r', b'\t', json).is_some()
}

/// [`minify_into`] for any whitespace, a byte at a time.
fn minify_slowly(json: &[u8], out: &mut Vec<u8>) {
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            (in_string, escaped) = match (escaped, b) {
                (true, _) => (true, false),
                (false, b'\\') => (true, true),
                (false, b'"') => (false, false),
                _ => (true, false),
            };
        } else if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            continue;
        } else {
            in_string = b == b'"';
        }
        out.push(b);
    }
}

/// The compact form of `json`, in an allocation of exactly its size (a room is kept for as long
/// as the daemon runs; a shrunk oversized buffer would leave a hole per room in the heap).
pub fn minify(json: &[u8]) -> Bytes {
    // Compact already (what clients send): nothing to remove, so no string-by-string walk.
    if !has_whitespace(json) {
        return Bytes::copy_from_slice(json);
    }
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        minify_into(json, &mut scratch);
        let compact = Bytes::copy_from_slice(&scratch);
        // Keep a big buffer only while it is in use.
        if scratch.capacity() > 1 << 20 {
            *scratch = Vec::new();
        }
        compact
    })
}
