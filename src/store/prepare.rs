//! Turning room JSON into a [`PreparedRoom`]: checked, compact, facts taken out.
//!
//! The fast path never builds a JSON tree: it checks the bytes against PROTOCOL.md section 4 by
//! deserializing into borrowed views (which fails on anything the full validator would refuse),
//! and keeps the room's own bytes with insignificant whitespace removed. Loading 100,000 room
//! files or saving a big room is then a scan, not thousands of allocations. Anything the fast
//! path does not accept (including valid-but-unusual input such as duplicate keys) goes through
//! [`room::validate`], which decides, and says exactly what is wrong.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::snapshot::{RoomEntry, RoomFacts};
use crate::room::{self, RoomError, RoomName, ValidRoom};

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

    /// From room JSON (compact or pretty): the fast path, or the full validator when needed.
    pub fn from_json(json: &[u8]) -> Result<PreparedRoom, RoomError> {
        // One check of the whole text is cheaper than the parser's, string by string.
        match std::str::from_utf8(json) {
            Ok(text) => PreparedRoom::from_json_str(text),
            Err(_) => slow(json),
        }
    }

    /// [`PreparedRoom::from_json`] for text already known to be UTF-8 (a request's `room`).
    pub fn from_json_str(json: &str) -> Result<PreparedRoom, RoomError> {
        if let Some(prepared) = fast(serde_json::from_str(json).ok(), json.as_bytes()) {
            return Ok(prepared);
        }
        slow(json.as_bytes())
    }
}

/// The full validator, which decides and says exactly what is wrong.
fn slow(json: &[u8]) -> Result<PreparedRoom, RoomError> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| RoomError {
        path: "room".into(),
        expected: format!("expected a JSON object ({e})"),
    })?;
    room::validate(value).map(PreparedRoom::new)
}

/// `"random"` or `"rating"`.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Sort {
    Random,
    Rating,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RatingWord {
    Like,
    Dislike,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PlexId<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Signed(i64),
    Unsigned(u64),
}

#[derive(Deserialize)]
struct FilterView<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    #[allow(dead_code)]
    operator: Cow<'a, str>,
    #[serde(borrow)]
    #[allow(dead_code)]
    value: Vec<Cow<'a, str>>,
}

type RatingTuple<'a> = (Cow<'a, str>, RatingWord, u64);

/// The room's fields as section 4 types them; unknown fields are skipped (and kept, verbatim,
/// in the bytes). The summary's fields stay raw so they are copied, not re-encoded.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomView<'a> {
    #[serde(borrow)]
    room_name: &'a RawValue,
    #[serde(borrow)]
    sort: &'a RawValue,
    #[serde(borrow)]
    created_at: &'a RawValue,
    #[serde(borrow)]
    creator_plex_user_id: &'a RawValue,
    #[serde(borrow)]
    creator_plex_username: &'a RawValue,
    #[serde(borrow, default)]
    password: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    options: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    filters: Option<Vec<FilterView<'a>>>,
    #[serde(default)]
    ratings: Option<Counted<Counted<RatingTuple<'a>, false>, true>>,
    #[serde(default)]
    #[allow(dead_code)]
    user_progress: Option<Counted<u64, true>>,
}

/// Checks every value of a JSON object (`MAP`) or array as a `T` without keeping any, and
/// counts them (for `ratings`, the count of a count: the number of rating entries).
struct Counted<T, const MAP: bool> {
    count: usize,
    _of: std::marker::PhantomData<T>,
}

trait Count {
    fn count(&self) -> usize;
}

impl<'a> Count for RatingTuple<'a> {
    fn count(&self) -> usize {
        1
    }
}

impl<T, const MAP: bool> Count for Counted<T, MAP> {
    fn count(&self) -> usize {
        self.count
    }
}

impl Count for u64 {
    fn count(&self) -> usize {
        1
    }
}

impl<'de, T: Deserialize<'de> + Count, const MAP: bool> Deserialize<'de> for Counted<T, MAP> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Unexpected};
        struct Visit<T, const MAP: bool>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Count, const MAP: bool> serde::de::Visitor<'de> for Visit<T, MAP> {
            type Value = Counted<T, MAP>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(if MAP { "an object" } else { "an array" })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                if !MAP {
                    return Err(A::Error::invalid_type(Unexpected::Map, &self));
                }
                let mut count = 0;
                while let Some((_, value)) = map.next_entry::<serde::de::IgnoredAny, T>()? {
                    count += value.count();
                }
                Ok(Counted {
                    count,
                    _of: std::marker::PhantomData,
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                if MAP {
                    return Err(A::Error::invalid_type(Unexpected::Seq, &self));
                }
                let mut count = 0;
                while let Some(value) = seq.next_element::<T>()? {
                    count += value.count();
                }
                Ok(Counted {
                    count,
                    _of: std::marker::PhantomData,
                })
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// The fast path, given the view parsed from `json` (`None`: the view did not parse).
fn fast(view: Option<RoomView>, json: &[u8]) -> Option<PreparedRoom> {
    let view = view?;
    let name: Cow<str> = serde_json::from_str(view.room_name.get()).ok()?;
    let name = RoomName::new(&name).ok()?;
    let _: Sort = serde_json::from_str(view.sort.get()).ok()?;
    let created_at: Cow<str> = serde_json::from_str(view.created_at.get()).ok()?;
    let created_at = room::parse_timestamp(&created_at)?;
    let creator_id = match serde_json::from_str::<PlexId>(view.creator_plex_user_id.get()).ok()? {
        PlexId::Text(text) => text.into_owned(),
        PlexId::Signed(n) => n.to_string(),
        PlexId::Unsigned(n) => n.to_string(),
    };
    let creator_name: Cow<str> = serde_json::from_str(view.creator_plex_username.get()).ok()?;
    let rating_count = view.ratings.as_ref().map_or(0, Count::count);
    let password = view.password.filter(|p| !p.is_empty()).map(Cow::into_owned);
    let summary_head = format!(
        "\"roomName\":{},\"sort\":{},\"createdAt\":{},\"creatorPlexUserId\":{},\"creatorPlexUsername\":{},\"hasPassword\":{}",
        view.room_name.get(),
        view.sort.get(),
        view.created_at.get(),
        view.creator_plex_user_id.get(),
        view.creator_plex_username.get(),
        password.is_some()
    );
    let facts = RoomFacts {
        created_at,
        creator_plex_user_id: Some(creator_id),
        creator_plex_username: Some(creator_name.into_owned()),
        password,
        summary_head,
    };
    Some(PreparedRoom {
        name,
        facts: Arc::new(facts),
        encoded: minify(json),
        rating_count,
    })
}

/// Removes the whitespace between JSON tokens (never inside strings). Works on runs found with
/// `memchr`, not byte by byte: pretty room files are mostly indentation and short strings.
/// (A tab or carriage return between tokens is kept: still valid JSON on one line.)
fn minify_into(json: &[u8], out: &mut Vec<u8>) {
    out.clear();
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

/// The compact form of `json`, in an allocation of exactly its size (a room is kept for as long
/// as the daemon runs; a shrunk oversized buffer would leave a hole per room in the heap).
fn minify(json: &[u8]) -> Bytes {
    // Compact already (what clients send): nothing to remove, so no string-by-string walk.
    if memchr::memchr2(b' ', b'\n', json).is_none() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn both(room: &Value) -> (Option<PreparedRoom>, Result<ValidRoom, RoomError>) {
        let pretty = serde_json::to_vec_pretty(room).unwrap();
        (
            fast(serde_json::from_slice(&pretty).ok(), &pretty),
            room::validate(room.clone()),
        )
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
}
