//! A room's contents in a form that is cheap to change and to share: [`RoomBody`].
//!
//! Swipes change a room thousands of times, and a room can be megabytes. So the parts that swipes
//! change, `ratings` and `userProgress`, live in persistent (structurally shared) vectors: adding
//! a rating to a 100 KB room copies a few hundred bytes, and the previous version, still held by
//! readers of an older snapshot, stays valid. Every other field is kept verbatim, in the order
//! received. Serializing a body (compact or pretty) writes the other fields first, then
//! `ratings`, then `userProgress`: PROTOCOL.md allows any key order.

use std::sync::Arc;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::room::RoomDoc;

/// One media's ratings: `[userName, rating, timestamp]` entries, in the order given.
#[derive(Debug, Clone)]
struct MediaRatings {
    media: Arc<str>,
    entries: Arc<Vec<Value>>,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RoomBody {
    /// Every field, in order; a structured `ratings` / `userProgress` keeps its place here with
    /// a `null` placeholder, so key order survives.
    fields: Arc<RoomDoc>,
    /// `Some` when the room has a `ratings` object (possibly empty).
    ratings: Option<imbl::Vector<MediaRatings>>,
    rating_slots: imbl::HashMap<Arc<str>, usize>,
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
            rating_slots: imbl::HashMap::new(),
            progress: None,
            progress_slots: imbl::HashMap::new(),
            rating_count: 0,
        };
        if let Some(Value::Object(ratings)) = doc.get("ratings") {
            let mut vector = imbl::Vector::new();
            for (media, entries) in ratings {
                let entries = entries.as_array().cloned().unwrap_or_default();
                body.rating_count += entries.len();
                let media: Arc<str> = media.as_str().into();
                body.rating_slots.insert(media.clone(), vector.len());
                vector.push_back(MediaRatings {
                    media,
                    entries: Arc::new(entries),
                });
            }
            body.ratings = Some(vector);
            doc.insert("ratings".to_owned(), Value::Null);
        }
        if let Some(Value::Object(progress)) = doc.get("userProgress") {
            let mut vector = imbl::Vector::new();
            for (user, value) in progress {
                let user: Arc<str> = user.as_str().into();
                body.progress_slots.insert(user.clone(), vector.len());
                vector.push_back((user, value.clone()));
            }
            body.progress = Some(vector);
            doc.insert("userProgress".to_owned(), Value::Null);
        }
        body.fields = Arc::new(doc);
        body
    }

    /// The number of rating entries, over every media.
    pub fn rating_count(&self) -> usize {
        self.rating_count
    }

    /// True if `user` already rated `media` in this room.
    pub fn has_rated(&self, media: &str, user: &str) -> bool {
        let Some(&slot) = self.rating_slots.get(media) else {
            return false;
        };
        self.ratings
            .as_ref()
            .and_then(|r| r.get(slot))
            .is_some_and(|m| {
                m.entries
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
        let ratings = self.ratings.get_or_insert_with(imbl::Vector::new);
        match self.rating_slots.get(media) {
            Some(&slot) => {
                if let Some(m) = ratings.get_mut(slot) {
                    Arc::make_mut(&mut m.entries).push(entry);
                }
            }
            None => {
                let media: Arc<str> = media.into();
                self.rating_slots.insert(media.clone(), ratings.len());
                ratings.push_back(MediaRatings {
                    media,
                    entries: Arc::new(vec![entry]),
                });
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
                    &Entries(ratings.iter().map(|m| (&*m.media, &*m.entries))),
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
    match serde_json::from_slice(bytes) {
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
}
