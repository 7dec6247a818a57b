//! `backend::file::names` on arbitrary room names.
//!
//! Input: UTF-8 text, split in two at a place picked by its first byte: both halves and the
//! whole text are checked when they are valid room names. For each: the file name has
//! no `/` or NUL, does not start with `.`, is at most 255 bytes, is a room file, and decodes
//! back to the same name (`room_name_of`) unless it is a hashed `~=<sha256>.json` name, which
//! only names longer than the encoding allows get. Injectivity: different names, different files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moviematch_storaged::backend::file::names::{file_name, is_room_file, room_name_of};
use moviematch_storaged::room::RoomName;

fn check(name: &RoomName) -> String {
    let file = file_name(name);
    assert!(
        !file.contains('/') && !file.contains('\0'),
        "{name:?} -> {file:?}"
    );
    assert!(!file.starts_with('.'), "{name:?} -> {file:?}");
    assert!(file.len() <= 255, "{name:?} -> {} bytes", file.len());
    assert!(is_room_file(&file), "{file:?}");
    assert!(file != "." && file != "..");
    match file.strip_prefix("~=") {
        Some(hashed) => {
            let hex = hashed.strip_suffix(".json").expect(".json");
            assert_eq!(hex.len(), 64, "{file:?}");
            assert!(hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(room_name_of(&file), None);
            // Only a name whose percent-encoding would not fit is hashed.
            assert!(name.as_str().len() > 83, "{name:?} hashed");
        }
        None => assert_eq!(room_name_of(&file).as_ref(), Some(name), "{file:?}"),
    }
    file
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Any string: `room_name_of` must not panic, and whatever it decodes round-trips.
    for candidate in [
        text.to_owned(),
        format!("{text}.json"),
        format!("~{text}.json"),
    ] {
        if let Some(name) = room_name_of(&candidate) {
            check(&name);
        }
    }
    let split = text
        .char_indices()
        .nth(usize::from(data.first().copied().unwrap_or(0)) % (text.chars().count() + 1))
        .map_or(text.len(), |(i, _)| i);
    let (a, b) = text.split_at(split);
    let names: Vec<RoomName> = [a, b, text]
        .iter()
        .filter_map(|s| RoomName::new(s).ok())
        .collect();
    let files: Vec<String> = names.iter().map(check).collect();
    for (i, x) in names.iter().enumerate() {
        for (j, y) in names.iter().enumerate() {
            if x != y {
                assert_ne!(files[i], files[j], "{x:?} and {y:?} share a file");
            }
        }
    }
});
