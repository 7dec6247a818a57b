//! A room's contents in a form that is cheap to change and to share: [`RoomBody`].
//!
//! Swipes change a room thousands of times, and a room can be megabytes. So the parts that swipes
//! change, `ratings` and `userProgress`, live in persistent (structurally shared) vectors: adding
//! a rating to a 100 KB room copies a few hundred bytes, and the previous version, still held by
//! readers of an older snapshot, stays valid. Every other field is kept verbatim, in the order
//! received. Serializing a body (compact or pretty) writes the other fields first, then
//! `ratings`, then `userProgress`: PROTOCOL.md allows any key order.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::room::RoomDoc;

/// One media's ratings: `[userName, rating, timestamp]` entries, in the order given. One
/// reference count per media: copying a chunk of the vector (which every change to a shared
/// version does) then touches one counter per element, not two.
#[derive(Debug, Clone)]
struct MediaRatings(Arc<(Box<str>, Vec<Value>)>);

impl MediaRatings {
    fn media(&self) -> &str {
        &self.0 .0
    }

    fn entries(&self) -> &Vec<Value> {
        &self.0 .1
    }
}

/// The key of a media in [`RoomBody::rating_slots`]: a hash of its id, with keys chosen once
/// per process (so no client can aim for collisions in advance).
fn media_key(media: &str) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(media)
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RoomBody {
    /// Every field, in order; a structured `ratings` / `userProgress` keeps its place here with
    /// a `null` placeholder, so key order survives.
    fields: Arc<RoomDoc>,
    /// `Some` when the room has a `ratings` object (possibly empty).
    ratings: Option<imbl::Vector<MediaRatings>>,
    /// Where each media sits in `ratings`, by [`media_key`]: a hint, shared by every version of
    /// the body and only ever added to, so a rating costs one hash insert and no copy. Each
    /// lookup checks the id at the slot; a slot this version does not have, or another id there
    /// (a key collision, or a version the actor dropped after a failed commit), means a scan.
    rating_slots: Arc<Mutex<HashMap<u64, usize>>>,
    /// `Some` when the room has a `userProgress` object (possibly empty).
    progress: Option<imbl::Vector<(Arc<str>, Value)>>,
    progress_slots: imbl::HashMap<Arc<str>, usize>,
    rating_count: usize,
}

impl RoomBody {
    /// Takes a validated room apart (PROTOCOL.md section 4 guarantees the shapes used here).
    pub fn from_doc(mut doc: RoomDoc) -> RoomBody {
        let mut body = RoomBody {
            fields: Arc::new(RoomDoc::new()),
            ratings: None,
            rating_slots: Arc::default(),
            progress: None,
            progress_slots: imbl::HashMap::new(),
            rating_count: 0,
        };
        // The structured parts are moved out of `doc` (a `null` keeps their place), not copied.
        if let Some(Value::Object(ratings)) = doc
            .get_mut("ratings")
            .filter(|v| v.is_object())
            .map(Value::take)
        {
            let mut vector = imbl::Vector::new();
            let mut slots = HashMap::with_capacity(ratings.len());
            for (media, entries) in ratings {
                let entries = match entries {
                    Value::Array(entries) => entries,
                    _ => Vec::new(),
                };
                body.rating_count += entries.len();
                slots.entry(media_key(&media)).or_insert(vector.len());
                vector.push_back(MediaRatings(Arc::new((media.into_boxed_str(), entries))));
            }
            body.ratings = Some(vector);
            body.rating_slots = Arc::new(Mutex::new(slots));
        }
        if let Some(Value::Object(progress)) = doc
            .get_mut("userProgress")
            .filter(|v| v.is_object())
            .map(Value::take)
        {
            let mut vector = imbl::Vector::new();
            for (user, value) in progress {
                let user: Arc<str> = user.as_str().into();
                body.progress_slots.insert(user.clone(), vector.len());
                vector.push_back((user, value));
            }
            body.progress = Some(vector);
        }
        body.fields = Arc::new(doc);
        body
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
            .is_some_and(|m| {
                m.entries()
                    .iter()
                    .any(|e| e.get(0).and_then(Value::as_str) == Some(user))
            })
    }

    /// Appends `[user, rating, timestamp]` to `ratings[media]`, creating what is missing.
    pub fn add_rating(&mut self, media: &str, user: &str, rating: &str, timestamp: u64) {
        let entry = serde_json::json!([user, rating, timestamp]);
        if self.ratings.is_none() {
            // A non-object `ratings` (e.g. null) is replaced in place; a missing one goes last.
            Arc::make_mut(&mut self.fields).insert("ratings".to_owned(), Value::Null);
        }
        let slot = self.slot_of(media);
        let ratings = self.ratings.get_or_insert_with(imbl::Vector::new);
        match slot {
            Some(slot) => {
                if let Some(m) = ratings.get_mut(slot) {
                    Arc::make_mut(&mut m.0).1.push(entry);
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
                ratings.push_back(MediaRatings(Arc::new((media.into(), vec![entry]))));
            }
        }
        self.rating_count += 1;
    }

    /// Sets `userProgress[user]`, creating the object if missing.
    pub fn set_progress(&mut self, user: &str, progress: u64) {
        if self.progress.is_none() {
            Arc::make_mut(&mut self.fields).insert("userProgress".to_owned(), Value::Null);
        }
        let vector = self.progress.get_or_insert_with(imbl::Vector::new);
        match self.progress_slots.get(user) {
            Some(&slot) => {
                if let Some(p) = vector.get_mut(slot) {
                    p.1 = Value::from(progress);
                }
            }
            None => {
                let user: Arc<str> = user.into();
                self.progress_slots.insert(user.clone(), vector.len());
                vector.push_back((user, Value::from(progress)));
            }
        }
    }

    /// Compact JSON, as `getRoom` returns it.
    pub fn to_compact(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Pretty JSON plus a final newline, as room files hold it.
    pub fn to_pretty(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

impl Serialize for RoomBody {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (key, value) in self.fields.iter() {
            match (key.as_str(), &self.ratings, &self.progress) {
                ("ratings", Some(ratings), _) => map.serialize_entry(
                    key,
                    &Entries(ratings.iter().map(|m| (m.media(), m.entries()))),
                )?,
                ("userProgress", _, Some(progress)) => {
                    map.serialize_entry(key, &Entries(progress.iter().map(|(u, p)| (&**u, p))))?
                }
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

/// Serializes an iterator of pairs as a JSON object, without building a map first.
struct Entries<I>(I);

impl<'a, I, V> Serialize for Entries<I>
where
    I: Iterator<Item = (&'a str, &'a V)> + Clone,
    V: Serialize + 'a,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0.clone() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Parses compact or pretty room JSON that was valid when stored.
pub fn parse(bytes: &[u8]) -> Option<RoomDoc> {
    // One UTF-8 check for the whole text is cheaper than the parser's, string by string.
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

    fn doc(value: Value) -> RoomDoc {
        match value {
            Value::Object(doc) => doc,
            _ => unreachable!(),
        }
    }

    #[test]
    fn round_trips_every_field() {
        let room = json!({
            "roomName": "r", "z": 1, "ratings": {"m": [["a", "like", 1]]},
            "a": [1, 2], "userProgress": {"a": 3}, "nested": {"k": null}
        });
        let body = RoomBody::from_doc(doc(room.clone()));
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
        let before = RoomBody::from_doc(doc(json!({"roomName": "r", "ratings": null})));
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
        let base = RoomBody::from_doc(doc(json!({"roomName": "r", "ratings": {"m": []}})));
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
}
