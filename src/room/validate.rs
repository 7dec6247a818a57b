//! What makes a room valid (PROTOCOL.md section 4), written once: the [`FIELDS`] table.
//!
//! Two paths read the table. [`validate`] (here) checks a parsed JSON tree and names the
//! offending field path; the one-pass fast path in `prepare.rs` checks the room's text without
//! building a tree and hands anything it does not take to [`validate`]. A rule change (a field,
//! its type, whether it is required, the allowed `sort` values) is an edit of the table or of the
//! constants next to it, and both paths follow. The error messages live only here.

use serde_json::Value;

use super::error::RoomError;
use super::{parse_timestamp, quoted, Rating, RoomDoc, RoomName};
use crate::room::EpochMillis;

/// What one field of a room must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A string that is a valid [`RoomName`].
    Name,
    /// A string, one of these.
    OneOf(&'static [&'static str]),
    /// A string holding an RFC 3339 date-time; the room's creation instant.
    Timestamp,
    /// A string.
    String,
    /// A string or an integer (Plex user ids arrive as either).
    StringOrInteger,
    /// An array of strings.
    Strings,
    /// An array of filters, each `{key, operator, value}` ([`FILTER_STRINGS`], [`FILTER_VALUES`]).
    Filters,
    /// An object of media id to an array of `[userName, rating, timestamp]`.
    Ratings,
    /// An object of userName to an integer >= 0.
    Progress,
}

impl Shape {
    /// Whether the value is a single JSON token: the fast path keeps those as written and
    /// checks them after the scan; the others it checks while scanning.
    pub fn is_scalar(self) -> bool {
        matches!(
            self,
            Shape::Name
                | Shape::OneOf(_)
                | Shape::Timestamp
                | Shape::String
                | Shape::StringOrInteger
        )
    }
}

/// One field section 4 types. A field that is not required may also be absent or `null`.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub required: bool,
    pub shape: Shape,
}

/// `sort`'s values.
pub const SORTS: &[&str] = &["random", "rating"];

/// A filter's string members; all required.
pub const FILTER_STRINGS: [&str; 2] = ["key", "operator"];

/// A filter's array-of-strings member; required.
pub const FILTER_VALUES: &str = "value";

/// The fields section 4 types, in the order they are checked (the first failure is the one
/// reported). Every other field is kept as it is.
pub const FIELDS: [Field; 10] = [
    field("roomName", true, Shape::Name),
    field("sort", true, Shape::OneOf(SORTS)),
    field("createdAt", true, Shape::Timestamp),
    field("creatorPlexUserId", true, Shape::StringOrInteger),
    field("creatorPlexUsername", true, Shape::String),
    field("password", false, Shape::String),
    field("options", false, Shape::Strings),
    field("filters", false, Shape::Filters),
    field("ratings", false, Shape::Ratings),
    field("userProgress", false, Shape::Progress),
];

// The fast path marks the fields it has seen in a u16.
const _: () = assert!(FIELDS.len() <= 16);

const fn field(name: &'static str, required: bool, shape: Shape) -> Field {
    Field {
        name,
        required,
        shape,
    }
}

/// Where `name` is in [`FIELDS`]; evaluated at compile time where it is used in a `const`, so a
/// misspelt name does not build.
pub const fn position(name: &str) -> usize {
    let mut at = 0;
    while at < FIELDS.len() {
        let known = FIELDS[at].name.as_bytes();
        let name = name.as_bytes();
        if known.len() == name.len() {
            let mut i = 0;
            while i < name.len() && known[i] == name[i] {
                i += 1;
            }
            if i == name.len() {
                return at;
            }
        }
        at += 1;
    }
    panic!("not a field of section 4");
}

/// A room that passed validation, with the facts the store indexes pulled out once.
#[derive(Debug, Clone)]
pub struct ValidRoom {
    pub name: RoomName,
    pub doc: RoomDoc,
    pub created_at: EpochMillis,
}

/// Validates a room object (PROTOCOL.md section 4) and returns it with its indexed facts.
pub fn validate(value: Value) -> Result<ValidRoom, RoomError> {
    let Value::Object(doc) = value else {
        return fail("room", "expected an object");
    };
    let mut name = None;
    let mut created_at = None;
    for field in &FIELDS {
        let value = match doc.get(field.name) {
            None | Some(Value::Null) if field.required => return fail(field.name, "required"),
            None | Some(Value::Null) => continue,
            Some(value) => value,
        };
        match field.shape {
            Shape::Name => {
                let text = string(field.name, value)?;
                name = Some(RoomName::new(text).or_else(|e| fail(field.name, e))?);
            }
            Shape::Timestamp => {
                let text = string(field.name, value)?;
                created_at = Some(parse_timestamp(text).ok_or_else(|| {
                    err(
                        field.name,
                        "expected an RFC 3339 date-time such as \"2025-10-25T20:00:00.000Z\"",
                    )
                })?);
            }
            shape => check(field.name, shape, value)?,
        }
    }
    // Both are required fields, so both are set; a table without them has no valid room.
    let missing = |shape| {
        let field = FIELDS.iter().find(|f| f.shape == shape);
        err(field.map_or("room", |f| f.name), "required")
    };
    Ok(ValidRoom {
        name: name.ok_or_else(|| missing(Shape::Name))?,
        created_at: created_at.ok_or_else(|| missing(Shape::Timestamp))?,
        doc,
    })
}

/// Checks a present, non-null value of a field of `shape`, other than the facts `validate` keeps.
fn check(path: &str, shape: Shape, value: &Value) -> Result<(), RoomError> {
    match shape {
        Shape::Name | Shape::Timestamp | Shape::String => string(path, value).map(drop),
        Shape::OneOf(allowed) => {
            if allowed.contains(&string(path, value)?) {
                return Ok(());
            }
            let allowed: Vec<String> = allowed.iter().map(|a| quoted(a)).collect();
            fail(path, format!("expected {}", allowed.join(" or ")))
        }
        Shape::StringOrInteger => match value {
            Value::String(_) => Ok(()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            Value::Number(_) => fail(
                path,
                "expected a string, or an integer from -9223372036854775808 to 18446744073709551615 (send a larger id as a string)",
            ),
            _ => fail(path, "expected a string or an integer"),
        },
        Shape::Strings => {
            let items = value
                .as_array()
                .ok_or_else(|| err(path, "expected an array of strings"))?;
            for (i, item) in items.iter().enumerate() {
                if !item.is_string() {
                    return fail(format!("{path}[{i}]"), "expected a string");
                }
            }
            Ok(())
        }
        Shape::Filters => check_filters(path, value),
        Shape::Ratings => check_ratings(path, value),
        Shape::Progress => {
            let map = value
                .as_object()
                .ok_or_else(|| err(path, "expected an object of userName to integer"))?;
            for (user, p) in map {
                if !is_non_negative_integer(p) {
                    return fail(key_path(path, user), "expected an integer >= 0");
                }
            }
            Ok(())
        }
    }
}

fn string<'a>(path: &str, value: &'a Value) -> Result<&'a str, RoomError> {
    value.as_str().ok_or_else(|| err(path, "expected a string"))
}

fn is_non_negative_integer(v: &Value) -> bool {
    v.as_u64().is_some()
}

fn check_filters(path: &str, filters: &Value) -> Result<(), RoomError> {
    let items = filters
        .as_array()
        .ok_or_else(|| err(path, "expected an array of {key, operator, value}"))?;
    for (i, filter) in items.iter().enumerate() {
        let obj = filter
            .as_object()
            .ok_or_else(|| err(format!("{path}[{i}]"), "expected an object"))?;
        for member in FILTER_STRINGS {
            match obj.get(member) {
                Some(Value::String(_)) => {}
                None => return fail(format!("{path}[{i}].{member}"), "required"),
                Some(_) => return fail(format!("{path}[{i}].{member}"), "expected a string"),
            }
        }
        let values_path = format!("{path}[{i}].{FILTER_VALUES}");
        let values = match obj.get(FILTER_VALUES) {
            Some(Value::Array(values)) => values,
            None => return fail(values_path, "required"),
            Some(_) => return fail(values_path, "expected an array of strings"),
        };
        for (j, v) in values.iter().enumerate() {
            if !v.is_string() {
                return fail(format!("{values_path}[{j}]"), "expected a string");
            }
        }
    }
    Ok(())
}

fn check_ratings(path: &str, ratings: &Value) -> Result<(), RoomError> {
    let map = ratings
        .as_object()
        .ok_or_else(|| err(path, "expected an object of media id to rating entries"))?;
    for (media, entries) in map {
        let path = key_path(path, media);
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

/// `ratings["plex://movie/1"]`: a key as it appears in a field path, JSON-quoted.
fn key_path(parent: &str, key: &str) -> String {
    format!("{parent}[{}]", quoted(key))
}

fn err(path: impl Into<String>, expected: impl Into<String>) -> RoomError {
    RoomError {
        path: path.into(),
        expected: expected.into(),
    }
}

fn fail<T>(path: impl Into<String>, expected: impl Into<String>) -> Result<T, RoomError> {
    Err(err(path, expected))
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
}
