//! The one-pass scanner (`scan`) and the room fast path built on it, against serde_json and the
//! full validator.
//!
//! The scanner may leave anything to serde_json, but it must never take what serde_json
//! refuses. Input: UTF-8 text, read as one JSON value and as a room.
//! - A value the scanner takes, serde_json reads into a value too.
//! - A room the fast path takes is valid to `room::validate`, with the same name, creation time,
//!   rating count and password, and its compact text is the same JSON as the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moviematch_storaged::room;
use moviematch_storaged::room::prepare;
use moviematch_storaged::room::scan::Scanner;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut scanner = Scanner::new(text);
    if scanner.skip_value().is_some() && scanner.at_end() {
        assert!(
            serde_json::from_str::<Value>(text).is_ok(),
            "the scanner took what serde_json refuses: {text:?}"
        );
    }
    let mut scanner = Scanner::new(text);
    let Some((raw, prepared)) = prepare::scan(&mut scanner) else {
        return;
    };
    if !scanner.at_end() {
        return;
    }
    assert_eq!(raw, text.trim_matches([' ', '\n', '\r', '\t']));
    let value: Value = serde_json::from_str(text).expect("a scanned room is JSON");
    let valid = room::validate(value.clone()).expect("a scanned room is valid");
    assert_eq!(prepared.name, valid.name);
    assert_eq!(prepared.facts.created_at, valid.created_at);
    let full = prepare::PreparedRoom::new(valid);
    assert_eq!(prepared.rating_count, full.rating_count);
    assert_eq!(prepared.facts.password, full.facts.password);
    assert_eq!(
        prepared.facts.creator_plex_user_id,
        full.facts.creator_plex_user_id
    );
    let compact: Value = serde_json::from_slice(&prepared.encoded).expect("compact JSON");
    assert_eq!(compact, value);
});
