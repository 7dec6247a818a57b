//! Room names to file names, and back to "is this file a room file?".
//!
//! A plain name (only `[A-Za-z0-9_-]`, at most 250 bytes) is `<name>.json`, as the original
//! TypeScript storage wrote it. Every other name is `~` + its UTF-8 bytes percent-encoded (each
//! byte outside `[A-Za-z0-9_-]` as `%XX`) + `.json`, unless that exceeds 255 bytes (the usual
//! file-name limit), in which case it is `~=` + the hex SHA-256 of the name + `.json`.
//!
//! Why this is injective: plain file names never contain `~`; encoded ones always start with `~`
//! and decode back to exactly one name; `=` is always escaped by the encoding, so `~=` never
//! begins a percent-encoded name; and SHA-256 names differ for different names (a collision
//! would be the first ever found). No output contains `/` or starts with `.`, so a room file is
//! always directly inside the storage directory and never one of the daemon's own dot-files.
//!
//! MovieMatch's own `FileStorage` names a room's file differently: every character outside
//! `[A-Za-z0-9_-]` becomes `_` (not injective: `x.y` and `x y` share `x_y.json`). For plain
//! names both are the same file. [`claim`] tells which of the two, if either, a file is for a
//! room, so that a directory MovieMatch wrote (or wrote again, after a downgrade) is taken over
//! without a stray copy ever winning.

use sha2::{Digest, Sha256};

use crate::room::RoomName;

/// The longest plain name kept as-is (250 + `.json` = 255 bytes).
const MAX_PLAIN_BYTES: usize = 250;
/// The usual limit on one path component (ext4, xfs, btrfs, tmpfs).
const MAX_FILE_NAME_BYTES: usize = 255;
const SUFFIX: &str = ".json";

fn is_plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The file name (not a path) that holds the room `name`.
pub fn file_name(name: &RoomName) -> String {
    let name = name.as_str();
    if name.len() <= MAX_PLAIN_BYTES && name.bytes().all(is_plain_byte) {
        return format!("{name}{SUFFIX}");
    }
    let mut encoded = String::with_capacity(1 + name.len() * 3 + SUFFIX.len());
    encoded.push('~');
    for b in name.bytes() {
        if is_plain_byte(b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded.push_str(SUFFIX);
    if encoded.len() <= MAX_FILE_NAME_BYTES {
        return encoded;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("~={hex}{SUFFIX}")
}

/// The file name MovieMatch's `FileStorage` gives the room `name`: each character outside
/// `[A-Za-z0-9_-]` replaced by `_`, one per UTF-16 code unit (JavaScript's
/// `name.replace(/[^a-zA-Z0-9_-]/g, "_")` sees an emoji as two), then `.json`.
pub fn movie_match_file_name(name: &RoomName) -> String {
    let mut file = String::with_capacity(name.as_str().len() + SUFFIX.len());
    for c in name.as_str().chars() {
        if c.is_ascii() && is_plain_byte(c as u8) {
            file.push(c);
        } else {
            file.extend(std::iter::repeat_n('_', c.len_utf16()));
        }
    }
    file.push_str(SUFFIX);
    file
}

/// Whose name a file holding a room has: the room's own file (the daemon's name for it, or
/// MovieMatch's), or an unrelated one (a copy, a backup, a hand-written file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Claim {
    Unrelated,
    MovieMatch,
    /// The daemon's own name (for plain names, MovieMatch's too).
    Own,
}

/// How `file` is named for the room `name` it holds.
pub fn claim(file: &str, name: &RoomName) -> Claim {
    if file == file_name(name) {
        Claim::Own
    } else if file == movie_match_file_name(name) {
        Claim::MovieMatch
    } else {
        Claim::Unrelated
    }
}

/// True for a directory entry that should hold a room: `*.json`, not one of our dot-files.
pub fn is_room_file(file_name: &str) -> bool {
    !file_name.starts_with('.') && file_name.ends_with(SUFFIX) && file_name.len() > SUFFIX.len()
}

/// The name of the room a file would hold, when its name says (plain and percent-encoded
/// names); `None` for hashed names and names that are not ours.
pub fn room_name_of(file_name: &str) -> Option<RoomName> {
    let stem = file_name.strip_suffix(SUFFIX)?;
    if stem.starts_with("~=") {
        return None;
    }
    let Some(encoded) = stem.strip_prefix('~') else {
        return RoomName::new(stem).ok();
    };
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut input = encoded.bytes();
    while let Some(b) = input.next() {
        if b == b'%' {
            let hex = [input.next()?, input.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    RoomName::new(&String::from_utf8(bytes).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn name(s: &str) -> RoomName {
        RoomName::new(s).unwrap()
    }

    #[test]
    fn plain_names_keep_the_seed_layout() {
        assert_eq!(file_name(&name("movie-night")), "movie-night.json");
        assert_eq!(file_name(&name("Friday_Watch2")), "Friday_Watch2.json");
    }

    #[test]
    fn hostile_names_stay_inside_and_apart() {
        let names = [
            "../x",
            "a/b",
            "a_b",
            "a%2Fb",
            ".",
            "..",
            "~a",
            "~",
            "%",
            "=",
            "~=x",
            "a.json",
            "Room",
            "room",
            "🎬 night",
            " ",
            ".hidden",
        ];
        let mut files = HashSet::new();
        for n in names {
            let file = file_name(&name(n));
            assert!(
                !file.contains('/') && !file.starts_with('.'),
                "{n} -> {file}"
            );
            assert!(file.len() <= MAX_FILE_NAME_BYTES);
            assert!(is_room_file(&file));
            assert!(files.insert(file.clone()), "{n} collides at {file}");
            assert_eq!(room_name_of(&file), Some(name(n)), "{file} does not decode");
        }
    }

    #[test]
    fn long_names_are_hashed_within_the_limit() {
        let long_plain = "x".repeat(255);
        let long_emoji = "🎬".repeat(63);
        for n in [long_plain.as_str(), long_emoji.as_str(), &"/".repeat(255)] {
            let file = file_name(&name(n));
            assert!(
                file.starts_with("~=") && file.len() <= MAX_FILE_NAME_BYTES,
                "{file}"
            );
            assert_eq!(room_name_of(&file), None);
        }
        assert_eq!(
            file_name(&name(&"x".repeat(250))),
            format!("{}.json", "x".repeat(250))
        );
        assert_ne!(
            file_name(&name(&"x".repeat(251))),
            file_name(&name(&"x".repeat(252)))
        );
    }

    #[test]
    fn movie_match_names_and_claims() {
        assert_eq!(movie_match_file_name(&name("film.club")), "film_club.json");
        assert_eq!(movie_match_file_name(&name("🎬 x")), "___x.json");
        assert_eq!(
            claim("film_club.json", &name("film.club")),
            Claim::MovieMatch
        );
        assert_eq!(claim("~film%2Eclub.json", &name("film.club")), Claim::Own);
        assert_eq!(claim("film_club.json", &name("film_club")), Claim::Own);
        assert_eq!(claim("x_y-copy.json", &name("x.y")), Claim::Unrelated);
    }

    #[test]
    fn our_own_files_are_not_rooms() {
        for f in [
            ".index",
            ".journal-3",
            ".tmp-1-a.json",
            ".lock",
            "notes.txt",
            ".json",
        ] {
            assert!(!is_room_file(f), "{f}");
        }
    }
}
