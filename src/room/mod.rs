//! The room: its name, its validation (PROTOCOL.md section 4) and the facts the store indexes.
//!
//! This module owns what makes a room valid and the error messages that name the offending field
//! path. It never touches storage or the wire: callers hand it parsed JSON and get typed values.

pub mod body;
pub mod change;
pub mod entry;
pub mod prepare;
pub mod scan;
pub(crate) mod surrogate;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A room as a JSON object, kept field for field (unknown fields included) in the order received.
pub type RoomDoc = Map<String, Value>;

/// The longest room name, in bytes of UTF-8.
pub const MAX_ROOM_NAME_BYTES: usize = 255;

/// A valid room name: 1 to 255 bytes of UTF-8 with no control characters.
///
/// Names are exact and case-sensitive; `Ord` is byte order, which is the order `listRooms` uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomName(String);

impl RoomName {
    /// Checks `name` against PROTOCOL.md section 4; the error says what is wrong, without a path.
    pub fn new(name: &str) -> Result<RoomName, String> {
        if name.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if name.len() > MAX_ROOM_NAME_BYTES {
            return Err(format!(
                "must be at most {MAX_ROOM_NAME_BYTES} bytes of UTF-8, got {}",
                name.len()
            ));
        }
        if let Some(c) = name.chars().find(|c| c.is_ascii_control()) {
            return Err(format!(
                "must not contain control characters, found U+{:04X}",
                c as u32
            ));
        }
        Ok(RoomName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for RoomName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// As a JSON string; a name read back is checked again (a journal or a Redis hash may be damaged).
impl Serialize for RoomName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        RoomName::new(&name).map_err(serde::de::Error::custom)
    }
}

/// A room's revision: 1 when created, +1 per change. 0 is used on the wire for "absent".
pub type Revision = u64;

/// `"like"` or `"dislike"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rating {
    Like,
    Dislike,
}

impl Rating {
    pub fn parse(s: &str) -> Option<Rating> {
        match s {
            "like" => Some(Rating::Like),
            "dislike" => Some(Rating::Dislike),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Like => "like",
            Rating::Dislike => "dislike",
        }
    }
}

/// Milliseconds since the Unix epoch, as an instant that compares correctly across offsets.
pub type EpochMillis = i64;

/// Parses an RFC 3339 date-time (`Z` or a numeric offset) into epoch milliseconds.
pub fn parse_timestamp(s: &str) -> Option<EpochMillis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The current time in epoch milliseconds.
pub fn now_millis() -> EpochMillis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A room that passed validation, with the facts the store indexes pulled out once.
#[derive(Debug, Clone)]
pub struct ValidRoom {
    pub name: RoomName,
    pub doc: RoomDoc,
    pub created_at: EpochMillis,
}

/// Why a room is invalid: the field path and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomError {
    pub path: String,
    pub expected: String,
}

impl fmt::Display for RoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.expected)
    }
}

impl std::error::Error for RoomError {}

fn fail<T>(path: impl Into<String>, expected: impl Into<String>) -> Result<T, RoomError> {
    Err(RoomError {
        path: path.into(),
        expected: expected.into(),
    })
}

/// `ratings["plex://movie/1"]`: a key as it appears in a field path, JSON-quoted.
fn key_path(parent: &str, key: &str) -> String {
    format!("{parent}[{}]", quoted(key))
}

/// How much of a client's string an error message quotes: a room name has at most 255 bytes,
/// and a 16 MB one no room can have must not come back as a 16 MB message.
const QUOTED_BYTES: usize = 256;

/// `text` JSON-quoted for an error message: whole up to [`QUOTED_BYTES`], else its first bytes
/// (to a character boundary) and its length, `"xxxx…"... (20000 bytes)`.
pub fn quoted(text: &str) -> String {
    let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
    if text.len() <= QUOTED_BYTES {
        return json(text);
    }
    let mut end = QUOTED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", json(&text[..end]), text.len())
}

fn require_str<'a>(doc: &'a RoomDoc, field: &str) -> Result<&'a str, RoomError> {
    match doc.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => fail(field, "required"),
        Some(_) => fail(field, "expected a string"),
    }
}

fn is_non_negative_integer(v: &Value) -> bool {
    v.as_u64().is_some()
}

/// Validates a room object (PROTOCOL.md section 4) and returns it with its indexed facts.
pub fn validate(value: Value) -> Result<ValidRoom, RoomError> {
    let Value::Object(doc) = value else {
        return fail("room", "expected an object");
    };
    let name = RoomName::new(require_str(&doc, "roomName")?).or_else(|e| fail("roomName", e))?;
    match require_str(&doc, "sort")? {
        "random" | "rating" => {}
        _ => return fail("sort", "expected \"random\" or \"rating\""),
    }
    let created_at = parse_timestamp(require_str(&doc, "createdAt")?).ok_or_else(|| RoomError {
        path: "createdAt".into(),
        expected: "expected an RFC 3339 date-time such as \"2025-10-25T20:00:00.000Z\"".into(),
    })?;
    match doc.get("creatorPlexUserId") {
        Some(Value::String(_)) => {}
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        None | Some(Value::Null) => return fail("creatorPlexUserId", "required"),
        Some(_) => return fail("creatorPlexUserId", "expected a string or an integer"),
    }
    require_str(&doc, "creatorPlexUsername")?;
    validate_optional_fields(&doc)?;
    Ok(ValidRoom {
        name,
        doc,
        created_at,
    })
}

fn validate_optional_fields(doc: &RoomDoc) -> Result<(), RoomError> {
    match doc.get("password") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => return fail("password", "expected a string"),
    }
    if let Some(options) = present(doc, "options") {
        let items = options
            .as_array()
            .ok_or_else(|| err("options", "expected an array of strings"))?;
        for (i, item) in items.iter().enumerate() {
            if !item.is_string() {
                return fail(format!("options[{i}]"), "expected a string");
            }
        }
    }
    if let Some(filters) = present(doc, "filters") {
        validate_filters(filters)?;
    }
    if let Some(ratings) = present(doc, "ratings") {
        validate_ratings(ratings)?;
    }
    if let Some(progress) = present(doc, "userProgress") {
        let map = progress
            .as_object()
            .ok_or_else(|| err("userProgress", "expected an object of userName to integer"))?;
        for (user, p) in map {
            if !is_non_negative_integer(p) {
                return fail(key_path("userProgress", user), "expected an integer >= 0");
            }
        }
    }
    Ok(())
}

fn present<'a>(doc: &'a RoomDoc, field: &str) -> Option<&'a Value> {
    doc.get(field).filter(|v| !v.is_null())
}

fn err(path: impl Into<String>, expected: impl Into<String>) -> RoomError {
    RoomError {
        path: path.into(),
        expected: expected.into(),
    }
}

fn validate_filters(filters: &Value) -> Result<(), RoomError> {
    let items = filters
        .as_array()
        .ok_or_else(|| err("filters", "expected an array of {key, operator, value}"))?;
    for (i, filter) in items.iter().enumerate() {
        let obj = filter
            .as_object()
            .ok_or_else(|| err(format!("filters[{i}]"), "expected an object"))?;
        for field in ["key", "operator"] {
            match obj.get(field) {
                Some(Value::String(_)) => {}
                None => return fail(format!("filters[{i}].{field}"), "required"),
                Some(_) => return fail(format!("filters[{i}].{field}"), "expected a string"),
            }
        }
        let values = match obj.get("value") {
            Some(Value::Array(values)) => values,
            None => return fail(format!("filters[{i}].value"), "required"),
            Some(_) => {
                return fail(
                    format!("filters[{i}].value"),
                    "expected an array of strings",
                )
            }
        };
        for (j, v) in values.iter().enumerate() {
            if !v.is_string() {
                return fail(format!("filters[{i}].value[{j}]"), "expected a string");
            }
        }
    }
    Ok(())
}

fn validate_ratings(ratings: &Value) -> Result<(), RoomError> {
    let map = ratings.as_object().ok_or_else(|| {
        err(
            "ratings",
            "expected an object of media id to rating entries",
        )
    })?;
    for (media, entries) in map {
        let path = key_path("ratings", media);
        let entries = entries
            .as_array()
            .ok_or_else(|| err(&path, "expected an array of [userName, rating, timestamp]"))?;
        for (i, entry) in entries.iter().enumerate() {
            let entry_path = format!("{path}[{i}]");
            match entry.as_array().map(Vec::as_slice) {
                Some([user, rating, ts]) => {
                    if !user.is_string() {
                        return fail(format!("{entry_path}[0]"), "expected a string (userName)");
                    }
                    if rating.as_str().and_then(Rating::parse).is_none() {
                        return fail(
                            format!("{entry_path}[1]"),
                            "expected \"like\" or \"dislike\"",
                        );
                    }
                    if !is_non_negative_integer(ts) {
                        return fail(
                            format!("{entry_path}[2]"),
                            "expected an integer timestamp in epoch milliseconds >= 0",
                        );
                    }
                }
                _ => return fail(entry_path, "expected [userName, rating, timestamp]"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "roomName": "movie-night",
            "sort": "random",
            "createdAt": "2025-10-25T20:00:00.000Z",
            "creatorPlexUserId": "12345",
            "creatorPlexUsername": "john_doe",
        })
    }

    fn with(field: &str, value: Value) -> Value {
        let mut room = base();
        room[field] = value;
        room
    }

    fn message(room: Value) -> String {
        validate(room)
            .expect_err("room should be invalid")
            .to_string()
    }

    #[test]
    fn a_minimal_room_is_valid() {
        let room = validate(base()).unwrap();
        assert_eq!(room.name.as_str(), "movie-night");
        assert_eq!(room.created_at, 1_761_422_400_000);
    }

    #[test]
    fn a_full_room_with_unknown_fields_is_valid() {
        let room = json!({
            "roomName": "🎬 a/b ..", "password": "secret", "sort": "rating",
            "createdAt": "2025-10-25T22:00:00+02:00", "creatorPlexUserId": 13692262,
            "creatorPlexUsername": "john", "options": ["EndOnFirstMatch"],
            "filters": [{"key": "genre", "operator": "=", "value": ["Action"]}],
            "ratings": {"plex://movie/1": [["john", "like", 1729890000000u64]]},
            "userProgress": {"john": 5}, "roomType": {"future": true}
        });
        let valid = validate(room).unwrap();
        assert_eq!(valid.created_at, 1_761_422_400_000);
        assert!(valid.doc.contains_key("roomType"));
    }

    #[test]
    fn messages_name_the_field_path() {
        let bad_rating = with("ratings", json!({"plex://movie/1": [["john", "meh", 1]]}));
        assert_eq!(
            message(bad_rating),
            r#"ratings["plex://movie/1"][0][1]: expected "like" or "dislike""#
        );
        assert_eq!(
            message(with("userProgress", json!({"jane": -1}))),
            r#"userProgress["jane"]: expected an integer >= 0"#
        );
        assert!(message(with(
            "filters",
            json!([{"key": "g", "operator": "=", "value": [1]}])
        ))
        .starts_with("filters[0].value[0]: "));
        assert_eq!(
            message(with("sort", json!("best"))),
            r#"sort: expected "random" or "rating""#
        );
        assert!(message(with("createdAt", json!("yesterday"))).starts_with("createdAt: "));
        assert_eq!(
            message(with("creatorPlexUsername", Value::Null)),
            "creatorPlexUsername: required"
        );
    }

    #[test]
    fn room_names_follow_the_rules() {
        assert!(RoomName::new("").is_err());
        assert!(RoomName::new("a\u{7f}b").is_err());
        assert!(RoomName::new("a\nb").is_err());
        assert!(RoomName::new(&"x".repeat(255)).is_ok());
        assert!(RoomName::new(&"x".repeat(256)).is_err());
        assert!(RoomName::new("../..").is_ok());
        // 64 four-byte emoji = 256 bytes.
        assert!(RoomName::new(&"🎬".repeat(64)).is_err());
    }

    #[test]
    fn timestamps_compare_as_instants() {
        assert_eq!(
            parse_timestamp("2025-10-25T20:00:00Z"),
            parse_timestamp("2025-10-25T22:00:00+02:00")
        );
        assert!(parse_timestamp("2025-10-25").is_none());
    }
}
