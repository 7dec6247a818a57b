//! A room's contents in a form that is cheap to change and to share: [`RoomBody`].
//!
//! Swipes change a room thousands of times, and a room can be megabytes. So the parts that swipes
//! change, `ratings` and `userProgress`, live in persistent (structurally shared) vectors: adding
//! a rating to a 100 KB room copies a few hundred bytes, and the previous version, still held by
//! readers of an older snapshot, stays valid. Every other field is kept as its JSON text, in the
//! order received, and so is every rating entry and progress value: a body never turns a number
//! into a float and back, so `12345678901234567890123`, `2.50`, `1E+2` and `-0` come back as
//! written (README "Decisions"). Serializing a body (compact or pretty) writes the other fields
//! first, then `ratings`, then `userProgress`: PROTOCOL.md allows any key order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::room::RoomDoc;

/// A JSON value kept as its text.
type Raw = Box<RawValue>;

fn null() -> Raw {
    RawValue::NULL.to_owned()
}

/// One `[userName, rating, timestamp]` entry as written, with the user it names.
#[derive(Debug)]
struct RatingEntry {
    user: Arc<str>,
    json: Raw,
}

/// One media's ratings, in the order given, and who gave them. Both are persistent, so a
/// rating on a media that has thousands copies a chunk and a path (O(log n)), never the list,
/// and "already rated" is a set lookup, not a scan (issue 18: the whole list was copied and
/// scanned, 1.7 ms per rating at 12,000 ratings on one media). Entries are behind an `Arc` so
/// copying a chunk of the list touches one counter per entry, not two allocations.
///
/// The set is made only once a media has more than [`SCANNED_RATINGS`] ratings: most media have a
/// few (one per member of the room), a set's first node is an allocation of hundreds of bytes,
/// and a scan of a few entries costs less than the hash.
#[derive(Debug, Clone)]
struct Media {
    id: Box<str>,
    entries: imbl::Vector<Arc<RatingEntry>>,
    users: Option<imbl::HashSet<Arc<str>>>,
}

/// Up to this many ratings, "already rated" scans a media's entries instead of a set.
const SCANNED_RATINGS: usize = 8;

/// One reference count per media: copying a chunk of [`RoomBody::ratings`] (which every change
/// to a shared version does) then touches one counter per element, not three.
#[derive(Debug, Clone)]
struct MediaRatings(Arc<Media>);

impl MediaRatings {
    fn new(id: &str, entries: impl IntoIterator<Item = RatingEntry>) -> MediaRatings {
        let mut media = Media {
            id: id.into(),
            entries: imbl::Vector::new(),
            users: None,
        };
        for entry in entries {
            media.push(entry);
        }
        MediaRatings(Arc::new(media))
    }

    fn media(&self) -> &str {
        &self.0.id
    }

    fn entries(&self) -> &imbl::Vector<Arc<RatingEntry>> {
        &self.0.entries
    }

    fn has_rated(&self, user: &str) -> bool {
        match &self.0.users {
            Some(users) => users.contains(user),
            None => self.0.entries.iter().any(|entry| &*entry.user == user),
        }
    }
}

impl Media {
    fn push(&mut self, entry: RatingEntry) {
        match &mut self.users {
            Some(users) => {
                users.insert(entry.user.clone());
            }
            None if self.entries.len() >= SCANNED_RATINGS => {
                let users = self.entries.iter().map(|e| e.user.clone());
                self.users = Some(users.chain([entry.user.clone()]).collect());
            }
            None => {}
        }
        self.entries.push_back(Arc::new(entry));
    }
}

/// The key of a media in [`RoomBody::rating_slots`]: a hash of its id, with keys chosen once
/// per process (so no client can aim for collisions in advance).
fn media_key(media: &str) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(media)
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct RoomBody {
    /// Every field as JSON text, in order; a structured `ratings` / `userProgress` keeps its
    /// place here with a `null` placeholder, so key order survives.
    fields: Arc<Vec<(Box<str>, Raw)>>,
    /// `Some` when the room has a `ratings` object (possibly empty).
    ratings: Option<imbl::Vector<MediaRatings>>,
    /// Where each media sits in `ratings`, by [`media_key`]: a hint, shared by every version of
    /// the body and only ever added to, so a rating costs one hash insert and no copy. Each
    /// lookup checks the id at the slot; a slot this version does not have, or another id there
    /// (a key collision, or a version the actor dropped after a failed commit), means a scan.
    rating_slots: Arc<Mutex<HashMap<u64, usize>>>,
    /// `Some` when the room has a `userProgress` object (possibly empty).
    progress: Option<imbl::Vector<(Arc<str>, Raw)>>,
    progress_slots: imbl::HashMap<Arc<str>, usize>,
    rating_count: usize,
}

impl RoomBody {
    /// Takes valid room JSON (compact or pretty) apart; `None` if it is not a JSON object.
    /// PROTOCOL.md section 4 guarantees the shapes used here; a repeated key counts once, at
    /// its first place, with its last value (as a JSON tree would have it).
    pub fn parse(bytes: &[u8]) -> Option<RoomBody> {
        let compact;
        let bytes = if super::minify::has_whitespace(bytes) {
            compact = super::minify::minify(bytes);
            &compact[..]
        } else {
            bytes
        };
        // One UTF-8 check for the whole text is cheaper than the parser's, string by string.
        let text = std::str::from_utf8(bytes).ok()?;
        let mut body = RoomBody::default();
        let mut fields = Vec::new();
        for (key, value) in members(text)? {
            match key.as_ref() {
                "ratings" if value.get().starts_with('{') => {
                    body.take_ratings(value)?;
                    fields.push((key.into(), null()));
                }
                "userProgress" if value.get().starts_with('{') => {
                    let mut vector = imbl::Vector::new();
                    for (user, value) in members(value.get())? {
                        let user: Arc<str> = user.as_ref().into();
                        body.progress_slots.insert(user.clone(), vector.len());
                        vector.push_back((user, value.to_owned()));
                    }
                    body.progress = Some(vector);
                    fields.push((key.into(), null()));
                }
                _ => fields.push((key.into(), value.to_owned())),
            }
        }
        body.fields = Arc::new(fields);
        Some(body)
    }

    fn take_ratings(&mut self, ratings: &RawValue) -> Option<()> {
        let mut vector = imbl::Vector::new();
        let mut slots = HashMap::new();
        for (media, entries) in members(ratings.get())? {
            let entries: Vec<&RawValue> = serde_json::from_str(entries.get()).ok()?;
            self.rating_count += entries.len();
            slots.entry(media_key(&media)).or_insert(vector.len());
            let entries = entries.into_iter().map(|json| RatingEntry {
                user: rating_user(json).into(),
                json: json.to_owned(),
            });
            vector.push_back(MediaRatings::new(&media, entries));
        }
        self.ratings = Some(vector);
        self.rating_slots = Arc::new(Mutex::new(slots));
        Some(())
    }

    /// Replaces (or adds, last) a top-level field other than `ratings` / `userProgress`.
    pub fn set_field(&mut self, key: &str, value: &impl Serialize) {
        let Ok(json) = serde_json::value::to_raw_value(value) else {
            return;
        };
        let fields = Arc::make_mut(&mut self.fields);
        match fields.iter_mut().find(|(k, _)| &**k == key) {
            Some((_, slot)) => *slot = json,
            None => fields.push((key.into(), json)),
        }
    }

    /// The number of rating entries, over every media.
    pub fn rating_count(&self) -> usize {
        self.rating_count
    }

    /// Where `media`'s ratings sit in `ratings`, if it has any.
    fn slot_of(&self, media: &str) -> Option<usize> {
        let ratings = self.ratings.as_ref()?;
        let slot = *self.slots().get(&media_key(media))?;
        if ratings.get(slot).is_some_and(|m| m.media() == media) {
            Some(slot)
        } else {
            // A stale hint or a collision (see `rating_slots`).
            ratings.iter().position(|m| m.media() == media)
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, usize>> {
        // Only the actor uses the hints; a panic elsewhere cannot leave them half-written.
        self.rating_slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// True if `user` already rated `media` in this room.
    pub fn has_rated(&self, media: &str, user: &str) -> bool {
        let Some(slot) = self.slot_of(media) else {
            return false;
        };
        self.ratings
            .as_ref()
            .and_then(|r| r.get(slot))
            .is_some_and(|m| m.has_rated(user))
    }

    /// Appends `[user, rating, timestamp]` to `ratings[media]`, creating what is missing.
    pub fn add_rating(&mut self, media: &str, user: &str, rating: &str, timestamp: u64) {
        let Ok(json) = serde_json::value::to_raw_value(&(user, rating, timestamp)) else {
            return;
        };
        let entry = RatingEntry {
            user: user.into(),
            json,
        };
        if self.ratings.is_none() {
            // A non-object `ratings` (e.g. null) is replaced in place; a missing one goes last.
            self.place_structured("ratings");
        }
        let slot = self.slot_of(media);
        let ratings = self.ratings.get_or_insert_with(imbl::Vector::new);
        match slot {
            Some(slot) => {
                if let Some(m) = ratings.get_mut(slot) {
                    Arc::make_mut(&mut m.0).push(entry);
                }
            }
            None => {
                let slot = ratings.len();
                let mut slots = self
                    .rating_slots
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let key = media_key(media);
                let hint = slots.entry(key).or_insert(slot);
                // Keep a hint only while it is true for the id it points at (a collision).
                if ratings
                    .get(*hint)
                    .is_none_or(|m| media_key(m.media()) != key)
                {
                    *hint = slot;
                }
                drop(slots);
                ratings.push_back(MediaRatings::new(media, [entry]));
            }
        }
        self.rating_count += 1;
    }

    /// Sets `userProgress[user]`, creating the object if missing.
    pub fn set_progress(&mut self, user: &str, progress: u64) {
        if self.progress.is_none() {
            self.place_structured("userProgress");
        }
        let Ok(json) = serde_json::value::to_raw_value(&progress) else {
            return;
        };
        let vector = self.progress.get_or_insert_with(imbl::Vector::new);
        match self.progress_slots.get(user) {
            Some(&slot) => {
                if let Some(p) = vector.get_mut(slot) {
                    p.1 = json;
                }
            }
            None => {
                let user: Arc<str> = user.into();
                self.progress_slots.insert(user.clone(), vector.len());
                vector.push_back((user, json));
            }
        }
    }

    /// Makes `key` a structured field: its place is kept if it has one, else it goes last.
    fn place_structured(&mut self, key: &str) {
        let fields = Arc::make_mut(&mut self.fields);
        match fields.iter_mut().find(|(k, _)| &**k == key) {
            Some((_, value)) => *value = null(),
            None => fields.push((key.into(), null())),
        }
    }

    /// Compact JSON, as `getRoom` returns it.
    pub fn to_compact(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Pretty JSON plus a final newline, as room files hold it.
    pub fn to_pretty(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        prettify(&self.to_compact(), &mut bytes);
        bytes.push(b'\n');
        bytes
    }
}

impl Serialize for RoomBody {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (key, value) in self.fields.iter() {
            match (&**key, &self.ratings, &self.progress) {
                ("ratings", Some(ratings), _) => map.serialize_entry(
                    key,
                    &Entries(ratings.iter().map(|m| (m.media(), RatingList(m.entries())))),
                )?,
                ("userProgress", _, Some(progress)) => {
                    map.serialize_entry(key, &Entries(progress.iter().map(|(u, p)| (&**u, &**p))))?
                }
                _ => map.serialize_entry(key, &**value)?,
            }
        }
        map.end()
    }
}

/// Serializes an iterator of pairs as a JSON object, without building a map first.
struct Entries<I>(I);

impl<'a, I, V> Serialize for Entries<I>
where
    I: Iterator<Item = (&'a str, V)> + Clone,
    V: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0.clone() {
            map.serialize_entry(key, &value)?;
        }
        map.end()
    }
}

/// One media's entries as a JSON array of their texts.
struct RatingList<'a>(&'a imbl::Vector<Arc<RatingEntry>>);

impl Serialize for RatingList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for entry in self.0.iter() {
            seq.serialize_element(&*entry.json)?;
        }
        seq.end()
    }
}

/// A JSON object's members in order, values as written; a repeated key keeps its first place
/// and takes its last value. `None` if `json` is not an object.
fn members(json: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members: Self::Value = Vec::new();
            let mut places: HashMap<Cow<'de, str>, usize> = HashMap::new();
            while let Some((key, value)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                match places.get(&key) {
                    Some(&at) => members[at].1 = value,
                    None => {
                        places.insert(key.clone(), members.len());
                        members.push((key, value));
                    }
                }
            }
            Ok(members)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let members = (&mut deserializer).deserialize_map(Members).ok()?;
    deserializer.end().ok()?;
    Some(members)
}

/// The user a rating entry names (its first element), or "" if it names none.
fn rating_user(entry: &RawValue) -> String {
    struct First;
    impl<'de> Visitor<'de> for First {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a rating entry")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            let user = seq.next_element::<String>()?.unwrap_or_default();
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(user)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(entry.get());
    (&mut deserializer)
        .deserialize_seq(First)
        .unwrap_or_default()
}

/// Writes compact JSON `json` as serde_json's pretty printer would write the same value (two
/// spaces of indent, `": "`), but from the text: numbers and strings are copied as written.
pub fn prettify(json: &[u8], out: &mut Vec<u8>) {
    fn newline(out: &mut Vec<u8>, depth: usize) {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', 2 * depth));
    }
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    out.reserve(json.len() + json.len() / 4);
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        match b {
            b'"' => {
                let end = string_end(json, i);
                out.extend_from_slice(&json[i..end]);
                i = end;
                continue;
            }
            b'{' | b'[' => {
                let close = if b == b'{' { b'}' } else { b']' };
                let next = json[i + 1..]
                    .iter()
                    .position(|&c| !is_space(c))
                    .map(|at| i + 1 + at);
                if next.is_some_and(|at| json[at] == close) {
                    out.extend_from_slice(&[b, close]);
                    i = next.map_or(json.len(), |at| at + 1);
                    continue;
                }
                out.push(b);
                depth += 1;
                newline(out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b',');
                newline(out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            _ if is_space(b) => {}
            _ => out.push(b),
        }
        i += 1;
    }
}

/// The index just past the string that starts at `start` (a `"`), escapes included.
fn string_end(json: &[u8], start: usize) -> usize {
    let mut at = start + 1;
    while let Some(found) = memchr::memchr2(b'"', b'\\', &json[at.min(json.len())..]) {
        at += found;
        if json[at] == b'\\' {
            at += 2;
        } else {
            return at + 1;
        }
    }
    json.len()
}

/// Parses compact or pretty room JSON that was valid when stored, as a tree (rare paths only:
/// a tree turns numbers into floats).
pub fn parse(bytes: &[u8]) -> Option<RoomDoc> {
    let text = std::str::from_utf8(bytes).ok()?;
    match serde_json::from_str(text) {
        Ok(Value::Object(doc)) => Some(doc),
        _ => None,
    }
}

/// The room as a plain JSON object (tests and rare paths; O(size)).
pub fn to_value(body: &RoomBody) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Object(Map::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> RoomBody {
        RoomBody::parse(&serde_json::to_vec(&value).unwrap()).unwrap()
    }

    #[test]
    fn round_trips_every_field() {
        let room = json!({
            "roomName": "r", "z": 1, "ratings": {"m": [["a", "like", 1]]},
            "a": [1, 2], "userProgress": {"a": 3}, "nested": {"k": null}
        });
        let body = body(room.clone());
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            room.to_string(),
            "key order kept"
        );
        assert_eq!(body.rating_count(), 1);
        let pretty = body.to_pretty();
        assert_eq!(serde_json::from_slice::<Value>(&pretty).unwrap(), room);
    }

    #[test]
    fn changes_leave_older_versions_intact() {
        let before = body(json!({"roomName": "r", "ratings": null}));
        let mut after = before.clone();
        after.add_rating("m", "a", "like", 1);
        after.add_rating("m", "b", "dislike", 2);
        after.add_rating("n", "a", "like", 3);
        after.set_progress("a", 4);
        assert!(after.has_rated("m", "b") && !after.has_rated("n", "b"));
        assert_eq!(
            serde_json::to_string(&after).unwrap(),
            r#"{"roomName":"r","ratings":{"m":[["a","like",1],["b","dislike",2]],"n":[["a","like",3]]},"userProgress":{"a":4}}"#
        );
        assert_eq!(to_value(&before), json!({"roomName": "r", "ratings": null}));
        assert_eq!(after.rating_count(), 3);
    }

    #[test]
    fn a_dropped_version_leaves_no_wrong_answers() {
        // The actor drops a version whose commit failed and goes on from the previous one; the
        // shared slot hints then point at slots that version does not have, or holds otherwise.
        let base = body(json!({"roomName": "r", "ratings": {"m": []}}));
        let mut dropped = base.clone();
        dropped.add_rating("x", "a", "like", 1);
        let mut kept = base.clone();
        assert!(!kept.has_rated("x", "a"));
        kept.add_rating("y", "b", "like", 2);
        assert!(!kept.has_rated("x", "a") && kept.has_rated("y", "b"));
        kept.add_rating("x", "c", "dislike", 3);
        kept.add_rating("x", "d", "like", 4);
        assert!(kept.has_rated("x", "c") && kept.has_rated("x", "d"));
        assert!(!kept.has_rated("x", "a") && dropped.has_rated("x", "a"));
        assert_eq!(
            serde_json::to_string(&kept).unwrap(),
            r#"{"roomName":"r","ratings":{"m":[],"y":[["b","like",2]],"x":[["c","dislike",3],["d","like",4]]}}"#
        );
        assert_eq!(kept.rating_count(), 3);
    }

    #[test]
    fn numbers_stay_as_written_through_changes() {
        let text = r#"{"roomName":"r","big":12345678901234567890123,"a":2.50,"e":1E+2,"n":-9223372036854775809,"f":1.0,"z":-0,"s":1e-7,"x":{"k":[1.10,{"q":-0.0}]},"ratings":{"m":[["u","like",1]]},"userProgress":{"u":3}}"#;
        let mut body = RoomBody::parse(text.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(body.to_compact()).unwrap(), text);
        body.add_rating("m", "v", "dislike", 2);
        body.set_progress("v", 4);
        let after = String::from_utf8(body.to_compact()).unwrap();
        let expected = text
            .replace(r#"["u","like",1]]"#, r#"["u","like",1],["v","dislike",2]]"#)
            .replace(r#""u":3}"#, r#""u":3,"v":4}"#);
        assert_eq!(after, expected);
        let pretty = String::from_utf8(body.to_pretty()).unwrap();
        assert!(
            pretty.contains("\"big\": 12345678901234567890123,"),
            "{pretty}"
        );
        let again = RoomBody::parse(pretty.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(again.to_compact()).unwrap(), expected);
    }

    #[test]
    fn prettify_writes_what_serde_json_writes() {
        for value in [
            json!({}),
            json!([]),
            json!({"a": {}, "b": [], "c": [1, [2, {}], {"d": "e\"f\\", "g": null}], "h": true}),
            json!({"k e:y,": "v{a}l[u]e", "u": "🎬\u{1}\n", "n": -1.5, "arr": [[[]]]}),
            json!(["x", {"y": [{"z": {}}]}]),
        ] {
            let mut out = Vec::new();
            prettify(&serde_json::to_vec(&value).unwrap(), &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string_pretty(&value).unwrap()
            );
        }
    }
}
