//! Turning room JSON into a [`PreparedRoom`]: checked, compact, facts taken out.
//!
//! The fast path never builds a JSON tree: one pass of the [`super::scan`] scanner checks the
//! text against PROTOCOL.md section 4, read from the same rules table as the validator
//! ([`FIELDS`]), failing on anything the full validator would refuse, and
//! keeps the room's own bytes, with insignificant whitespace removed. Loading 100,000 room
//! files or saving a big room is then a scan, not thousands of allocations. Anything the fast
//! path does not accept (including valid-but-unusual input such as duplicate keys) goes through
//! [`room::validate`], which decides, and says exactly what is wrong.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::body::RoomBody;
use super::entry::{self, LoadedRoom, RoomEntry, RoomFacts, RoomText, SUMMARY_FIELDS};
use super::minify::minify;
use super::scan::Scanner;
use super::surrogate;
use super::validate::{position, Shape, FIELDS, FILTER_STRINGS, FILTER_VALUES};
use crate::room::{self, Rating, RoomError, RoomName, ValidRoom};

/// A validated room made ready for the actor: encoded and its facts taken out, off the actor.
/// Cloning it is cheap (the JSON and the facts are shared).
#[derive(Debug, Clone)]
pub struct PreparedRoom {
    pub name: RoomName,
    pub facts: Arc<RoomFacts>,
    /// Compact JSON.
    pub encoded: Bytes,
    pub rating_count: usize,
}

impl PreparedRoom {
    /// The room as start-up keeps it: its JSON packed if that saves memory.
    pub fn loaded(self) -> LoadedRoom {
        LoadedRoom {
            name: self.name,
            facts: self.facts,
            rating_count: self.rating_count,
            text: RoomText::packed_if_smaller(self.encoded),
        }
    }

    /// From a room already validated as a tree (it is encoded here).
    pub fn new(room: ValidRoom) -> PreparedRoom {
        let entry = RoomEntry::from_doc(room.name.clone(), &room.doc, 0, 0);
        PreparedRoom {
            name: room.name,
            facts: entry.facts.clone(),
            encoded: entry.encoded().clone(),
            rating_count: entry.rating_count,
        }
    }

    /// From a room validated as a tree, encoded from its text `json`, so that numbers stay
    /// as written (a tree holds them as floats or 64-bit integers).
    fn from_text(room: ValidRoom, json: &[u8]) -> PreparedRoom {
        match RoomBody::parse(json) {
            Some(body) => {
                let mut prepared = PreparedRoom::new(room);
                prepared.encoded = Bytes::from(body.to_compact());
                prepared
            }
            None => PreparedRoom::new(room),
        }
    }

    /// From room JSON (compact or pretty): the fast path, or the full validator when needed.
    pub fn from_json(json: &[u8]) -> Result<PreparedRoom, RoomError> {
        // One check of the whole text is cheaper than the parser's, string by string.
        match std::str::from_utf8(json) {
            Ok(text) => PreparedRoom::from_json_str(text),
            Err(_) => slow(json),
        }
    }

    /// [`PreparedRoom::from_json`] for text already known to be UTF-8.
    pub fn from_json_str(json: &str) -> Result<PreparedRoom, RoomError> {
        let mut scanner = Scanner::new(json);
        match scan(&mut scanner) {
            Some((_, prepared)) if scanner.at_end() => Ok(prepared),
            _ => slow(json.as_bytes()),
        }
    }
}

/// The full validator, which decides and says exactly what is wrong.
fn slow(json: &[u8]) -> Result<PreparedRoom, RoomError> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| {
        lone_surrogate(json).unwrap_or_else(|| RoomError {
            path: "room".into(),
            expected: unreadable(json, &e),
        })
    })?;
    room::validate(value).map(|room| PreparedRoom::from_text(room, json))
}

/// The error for a room that is valid JSON but holds half a surrogate pair (`"\ud800"`, as
/// `JSON.stringify` writes it), which no stored room can: it names `roomName` when that is
/// where it is, since such a room name is one no room can have (PROTOCOL.md section 4).
fn lone_surrogate(json: &[u8]) -> Option<RoomError> {
    let text = std::str::from_utf8(json).ok()?;
    let masked = surrogate::mask(text)?;
    // Only when the half pairs are all that is wrong with it.
    serde_json::from_str::<serde::de::IgnoredAny>(&masked).ok()?;
    // A half pair in one of the room's own keys leaves no member to look at: it is the room's.
    let in_name = serde_json::from_str::<BTreeMap<Cow<str>, &RawValue>>(text).is_ok_and(|m| {
        m.get("roomName")
            .is_some_and(|raw| surrogate::mask(raw.get()).is_some())
    });
    Some(RoomError {
        path: if in_name { "roomName" } else { "room" }.into(),
        expected: "holds a lone UTF-16 surrogate escape (half a pair, such as \\ud800), which \
                   cannot be stored; send well-formed text"
            .into(),
    })
}

/// Why serde_json could not read a room: not JSON (or not an object), or valid JSON holding a
/// number past a float's range or nesting 128 levels deep, which no room can keep (the daemon
/// must read every room back to apply a swipe to it). serde_json's position is left out of the
/// second: it counts inside the room, not along the request line.
fn unreadable(json: &[u8], e: &serde_json::Error) -> String {
    let valid = serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
        && json.trim_ascii_start().first() == Some(&b'{');
    if !valid {
        return format!("expected a JSON object ({e})");
    }
    let reason = room::json_reason(e);
    format!(
        "holds a value no room can keep ({reason}): numbers must be within a float's range, \
         and nesting under 128 levels"
    )
}

/// The fast path: the room at the scanner's place, checked and prepared in the one pass that
/// also returns its text. `None` when the full validator has to decide (an invalid room, or
/// valid but unusual, such as a repeated field or an escaped key).
pub fn scan<'a>(scanner: &mut Scanner<'a>) -> Option<(&'a str, PreparedRoom)> {
    let (json, view) = scanner.spanned(scan_room)?;
    Some((json, prepare(view, json.as_bytes())?))
}

/// The room's scalar fields as written (`None` when absent), in [`FIELDS`] order, and its rating
/// count.
struct RoomView<'a> {
    raw: [Option<&'a str>; FIELDS.len()],
    rating_count: usize,
}

/// Checks a room object's structure against section 4 ([`FIELDS`]); unknown fields are passed
/// over (and kept, verbatim, in the room's text). Scalar fields are kept as written and checked
/// by [`prepare`], which takes the facts from them.
fn scan_room<'a>(scanner: &mut Scanner<'a>) -> Option<RoomView<'a>> {
    let mut raw = [None; FIELDS.len()];
    let mut seen = 0u16;
    let mut rating_count = 0;
    scanner.object(|s, key| {
        // An escaped key may spell a known field: the validator decides.
        let key = key.plain()?;
        let Some(at) = FIELDS.iter().position(|known| known.name == key) else {
            return s.skip_value();
        };
        if seen & (1 << at) != 0 {
            return None; // repeated: the validator decides which one counts
        }
        seen |= 1 << at;
        let field = &FIELDS[at];
        if field.shape.is_scalar() {
            raw[at] = Some(s.value()?);
            return Some(());
        }
        if field.required && s.peek()? == b'n' {
            return None; // null: the validator says it is required
        }
        s.nullable(|s| match field.shape {
            Shape::Strings => s.array(|s| s.string().map(drop)),
            Shape::Filters => s.array(filter),
            Shape::Ratings => s.object(|s, _movie| {
                s.array(|s| {
                    rating(s)?;
                    rating_count += 1;
                    Some(())
                })
            }),
            Shape::Progress => s.object(|s, _user| s.uint().map(drop)),
            // Kept as written above.
            Shape::Name
            | Shape::OneOf(_)
            | Shape::Timestamp
            | Shape::String
            | Shape::StringOrInteger => None,
        })
    })?;
    Some(RoomView { raw, rating_count })
}

/// One filter: the [`FILTER_STRINGS`] strings and a [`FILTER_VALUES`] array of strings, all
/// required.
fn filter(scanner: &mut Scanner) -> Option<()> {
    const ALL: u8 = (1 << (FILTER_STRINGS.len() + 1)) - 1;
    let mut seen = 0u8;
    scanner.object(|s, key| {
        let key = key.plain()?;
        let field = match FILTER_STRINGS.iter().position(|known| *known == key) {
            Some(at) => at,
            None if key == FILTER_VALUES => FILTER_STRINGS.len(),
            None => return s.skip_value(),
        };
        if seen & (1 << field) != 0 {
            return None;
        }
        seen |= 1 << field;
        if field == FILTER_STRINGS.len() {
            s.array(|s| s.string().map(drop))
        } else {
            s.string().map(drop)
        }
    })?;
    (seen == ALL).then_some(())
}

/// One rating tuple: `[userName, "like" | "dislike", epoch milliseconds]`.
fn rating(s: &mut Scanner) -> Option<()> {
    s.punct(b'[')?;
    s.string()?;
    s.punct(b',')?;
    Rating::parse(s.string()?.plain()?)?;
    s.punct(b',')?;
    s.uint()?;
    s.punct(b']')
}

/// A JSON string's value, given as written; `None` if it is not a string.
fn text(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str(raw).ok()
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// A Plex user id given as a JSON integer, as text. (`-0` is a float to serde_json, and so not
/// an integer to the validator either.)
fn integer_text(raw: &str) -> Option<String> {
    if raw == "-0" {
        return None;
    }
    match raw.parse::<i64>() {
        Ok(n) => Some(n.to_string()),
        Err(_) => raw.parse::<u64>().ok().map(|n| n.to_string()),
    }
}

/// Where the facts are in [`FIELDS`] (a misspelt name does not build).
const CREATOR_ID: usize = position("creatorPlexUserId");
const CREATOR_NAME: usize = position("creatorPlexUsername");
const PASSWORD: usize = position("password");
const SUMMARY: [usize; SUMMARY_FIELDS.len()] = {
    let mut at = [0; SUMMARY_FIELDS.len()];
    let mut i = 0;
    while i < at.len() {
        at[i] = position(SUMMARY_FIELDS[i]);
        i += 1;
    }
    at
};

/// Checks the scalar fields' values against [`FIELDS`] and builds the prepared room from the
/// room's text, `json`.
fn prepare(view: RoomView, json: &[u8]) -> Option<PreparedRoom> {
    let mut name = None;
    let mut created_at = None;
    for (field, raw) in FIELDS.iter().zip(view.raw) {
        let Some(raw) = raw.filter(|raw| *raw != "null") else {
            if field.required {
                return None;
            }
            continue;
        };
        match field.shape {
            Shape::Name => name = Some(RoomName::new(&text(raw)?).ok()?),
            Shape::Timestamp => created_at = Some(room::parse_timestamp(&text(raw)?)?),
            Shape::OneOf(allowed) => {
                if !allowed.contains(&&*text(raw)?) {
                    return None;
                }
            }
            Shape::String => drop(text(raw)?),
            Shape::StringOrInteger => {
                if text(raw).is_none() {
                    integer_text(raw)?;
                }
            }
            // Checked while scanning.
            Shape::Strings | Shape::Filters | Shape::Ratings | Shape::Progress => {}
        }
    }
    // Present and checked above: each of these fields is required, or `None` when absent.
    let string = |at: usize| view.raw[at].filter(|raw| *raw != "null").and_then(text);
    let creator_id = match string(CREATOR_ID) {
        Some(id) => Some(id.into_owned()),
        None => view.raw[CREATOR_ID].and_then(integer_text),
    };
    let password = string(PASSWORD)
        .filter(|p| !p.is_empty())
        .map(Cow::into_owned);
    let summary_head = entry::summary_head(
        SUMMARY.map(|at| view.raw[at].unwrap_or("null")),
        password.is_some(),
    );
    let facts = RoomFacts {
        created_at: created_at?,
        creator_plex_user_id: creator_id,
        creator_plex_username: string(CREATOR_NAME).map(Cow::into_owned),
        password,
        summary_head,
    };
    Some(PreparedRoom {
        name: name?,
        facts: Arc::new(facts),
        encoded: minify(json),
        rating_count: view.rating_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::validate::SORTS;
    use serde_json::{json, Value};

    /// The fast path alone, on a whole text.
    fn fast(json: &str) -> Option<PreparedRoom> {
        let mut scanner = Scanner::new(json);
        let (_, room) = scan(&mut scanner)?;
        scanner.at_end().then_some(room)
    }

    fn both(room: &Value) -> (Option<PreparedRoom>, Result<ValidRoom, RoomError>) {
        let pretty = serde_json::to_string_pretty(room).unwrap();
        (fast(&pretty), room::validate(room.clone()))
    }

    #[test]
    fn the_fast_path_agrees_with_the_validator() {
        let base = json!({
            "roomName": "a \"b\" 🎬", "password": "p", "sort": "rating",
            "createdAt": "2025-10-25T22:00:00+02:00", "creatorPlexUserId": 13692262,
            "creatorPlexUsername": "j", "options": ["x"], "roomType": {"k": [1, " a b "]},
            "filters": [{"key": "g", "operator": "=", "value": ["A"], "extra": 1}],
            "ratings": {"plex://movie/1": [["j", "like", 1]]}, "userProgress": {"j": 5}
        });
        let (prepared, valid) = both(&base);
        let prepared = prepared.expect("the fast path takes a valid room");
        let slow = PreparedRoom::new(valid.unwrap());
        assert_eq!(prepared.name, slow.name);
        assert_eq!(prepared.rating_count, 1);
        assert_eq!(prepared.facts.created_at, slow.facts.created_at);
        assert_eq!(prepared.facts.summary_head, slow.facts.summary_head);
        assert_eq!(
            prepared.facts.creator_plex_user_id,
            slow.facts.creator_plex_user_id
        );
        let fast_value: Value = serde_json::from_slice(&prepared.encoded).unwrap();
        assert_eq!(fast_value, base);
        assert!(!prepared.encoded.contains(&b'\n'));

        let invalid = [
            ("sort", json!("best")),
            ("roomName", json!("")),
            ("roomName", json!("a\u{1}")),
            ("createdAt", json!("yesterday")),
            ("creatorPlexUserId", json!(1.5)),
            ("creatorPlexUsername", Value::Null),
            ("ratings", json!({"m": [["j", "meh", 1]]})),
            ("ratings", json!({"m": [["j", "like", -1]]})),
            ("ratings", json!({"m": [["j", "like"]]})),
            ("ratings", json!([])),
            ("ratings", json!({"m": {"0": ["j", "like", 1]}})),
            ("userProgress", json!([1])),
            ("userProgress", json!({"j": 1.5})),
            ("filters", json!([{"key": "g", "operator": "="}])),
            ("options", json!([1])),
            ("password", json!(5)),
        ];
        for (field, value) in invalid {
            let mut room = base.clone();
            room[field] = value;
            let (prepared, valid) = both(&room);
            assert!(prepared.is_none(), "fast path accepted a bad {field}");
            assert!(valid.is_err(), "validator accepted a bad {field}");
        }
    }

    /// Every row of the rules table, read by both paths: absent, `null` and mistyped, each
    /// path takes exactly what the other takes, and the validator names the field.
    #[test]
    fn both_paths_follow_every_row_of_the_rules() {
        let base = json!({
            "roomName": "r", "password": "p", "sort": "rating",
            "createdAt": "2025-10-25T20:00:00Z", "creatorPlexUserId": "1",
            "creatorPlexUsername": "j", "options": ["x"],
            "filters": [{"key": "g", "operator": "=", "value": ["A"]}],
            "ratings": {"m": [["j", "like", 1]]}, "userProgress": {"j": 5}
        });
        assert!(both(&base).0.is_some());
        for field in &FIELDS {
            let mut absent = base.clone();
            absent.as_object_mut().unwrap().remove(field.name);
            let mut null = base.clone();
            null[field.name] = Value::Null;
            for room in [absent, null] {
                let (prepared, valid) = both(&room);
                assert_eq!(prepared.is_some(), !field.required, "{}", field.name);
                match valid {
                    Ok(_) => assert!(!field.required, "{}", field.name),
                    Err(e) => assert_eq!(
                        (e.path.as_str(), e.expected.as_str()),
                        (field.name, "required")
                    ),
                }
            }
            for wrong in [json!(1.5), json!(true), json!([{}])] {
                let mut room = base.clone();
                room[field.name] = wrong;
                let (prepared, valid) = both(&room);
                assert!(prepared.is_none(), "{}", field.name);
                let error = valid.expect_err(field.name);
                assert!(error.path.starts_with(field.name), "{error}");
            }
        }
        for sort in SORTS {
            let mut room = base.clone();
            room["sort"] = json!(sort);
            let (prepared, valid) = both(&room);
            assert!(prepared.is_some() && valid.is_ok(), "{sort}");
        }
    }

    #[test]
    fn no_one_byte_change_makes_the_fast_path_take_what_the_validator_refuses() {
        let room = r#"{"roomName":"a \"b\" 🎬","password":"p","sort":"rating","createdAt":"2025-10-25T22:00:00+02:00","creatorPlexUserId":-13692262,"creatorPlexUsername":"j","options":["x"],"filters":[{"key":"g","operator":"=","value":["A"]}],"ratings":{"m1":[["j","like",1],["k","dislike",20]]},"userProgress":{"j":5},"x":[true,null,{}]}"#;
        assert!(fast(room).is_some());
        let mut taken = 0;
        for at in 0..room.len() {
            for replacement in [
                "", " ", "\"", "\\", ",", ":", "[", "]", "{", "}", "0", "-", "1", "e", ".", "n",
                "\u{1}",
            ] {
                let mut text = room.as_bytes().to_vec();
                text.splice(at..at + 1, replacement.bytes());
                let Ok(text) = String::from_utf8(text) else {
                    continue;
                };
                let Some(prepared) = fast(&text) else {
                    continue;
                };
                taken += 1;
                let value: Value = serde_json::from_str(&text).expect("JSON");
                let valid = room::validate(value.clone()).expect("a valid room");
                assert_eq!(prepared.name, valid.name, "{text}");
                let full = PreparedRoom::new(valid);
                assert_eq!(prepared.rating_count, full.rating_count, "{text}");
                assert_eq!(prepared.facts.password, full.facts.password, "{text}");
                assert_eq!(
                    serde_json::from_slice::<Value>(&prepared.encoded).unwrap(),
                    value,
                    "{text}"
                );
            }
        }
        // Some changes keep the room valid (a digit for a digit, a space): those are taken.
        assert!(taken > 100, "{taken}");
    }

    #[test]
    fn numbers_are_kept_as_written_unless_they_have_no_value() {
        let room = |x: &str| {
            format!(
                r#"{{"roomName":"r","sort":"random","createdAt":"2025-10-25T20:00:00Z","creatorPlexUserId":1,"creatorPlexUsername":"u","x":[{x}]}}"#
            )
        };
        for kept in [
            "2.50",
            "-0",
            "1E+2",
            "123456789012345678901234567890",
            "1e-400",
        ] {
            let prepared = PreparedRoom::from_json_str(&room(kept)).expect(kept);
            let text = String::from_utf8(prepared.encoded.to_vec()).unwrap();
            assert!(text.contains(&format!("[{kept}]")), "{kept}: {text}");
        }
        let refused = PreparedRoom::from_json_str(&room("1e999")).unwrap_err();
        assert_eq!(refused.path, "room");
        // Outside probe s9b: the room is an object; the message says what is wrong with it.
        for (json, path) in [
            (room(r#"1],"k\ud800":[1"#), "room"),
            (room(r#"1],"k":["\ud800""#), "room"),
            (
                r#"{"roomName":"a\udc00","sort":"random","createdAt":"2025-10-25T20:00:00.000Z","creatorPlexUserId":"1","creatorPlexUsername":"u"}"#.to_owned(),
                "roomName",
            ),
        ] {
            let refused = PreparedRoom::from_json_str(&json).unwrap_err();
            assert_eq!(refused.path, path, "{json}");
            assert!(
                refused.expected.starts_with("holds a lone UTF-16 surrogate escape"),
                "{json}: {}",
                refused.expected
            );
        }
        let broken = PreparedRoom::from_json_str(r#"{"k\ud800":1,}"#).unwrap_err();
        assert!(broken.expected.starts_with("expected a JSON object"));
        assert_eq!(
            refused.expected,
            "holds a value no room can keep (number out of range): numbers must be within a \
             float's range, and nesting under 128 levels"
        );
    }

    #[test]
    fn minify_keeps_strings_whole() {
        let pretty = b"{\n  \"a b\": \"x \\\" y\\\\\",\n  \"c\": [ 1, 2 ], \"\": \"\\\\\"\n}";
        assert_eq!(
            minify(pretty),
            br#"{"a b":"x \" y\\","c":[1,2],"":"\\"}"#.to_vec()
        );
        let value = serde_json::json!({"k": [" ", "\"\\", "a\tb"], "n": {"m": null}});
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert_eq!(minify(&pretty), serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn minify_removes_carriage_returns_and_tabs_between_tokens() {
        // A room file saved by an editor with CR LF line ends, or tabs, or a bare CR: the
        // answer is one line (a CR left in it ends the line for many readers).
        let value = serde_json::json!({"k": [" ", "\"\\", "a\tb\r\n"], "n": {"m": 1}});
        let compact = serde_json::to_vec(&value).unwrap();
        let pretty = String::from_utf8(serde_json::to_vec_pretty(&value).unwrap()).unwrap();
        for spaced in [
            pretty.replace('\n', "\r\n"),
            pretty.replace("  ", "\t"),
            pretty.replace('\n', "\r"),
            String::from_utf8(compact.clone())
                .unwrap()
                .replace(':', ":\r"),
            String::from_utf8(compact.clone())
                .unwrap()
                .replace(',', "\t,"),
        ] {
            assert_eq!(minify(spaced.as_bytes()), compact, "{spaced:?}");
            let body = crate::room::body::RoomBody::parse(spaced.as_bytes()).unwrap();
            assert_eq!(body.to_compact(), compact, "{spaced:?}");
        }
    }
}
