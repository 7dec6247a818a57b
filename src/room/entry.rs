//! The published view of every room: immutable, shared, cheap to clone.
//!
//! The actor builds a new [`Snapshot`] after each batch of mutations and publishes it; readers
//! load the current one without waiting for the actor. A [`RoomEntry`] is *cold* (only its
//! compact JSON, which is all a read needs) or *hot* (a [`RoomBody`] being changed by swipes,
//! encoded lazily, once, by the first reader of each version, so a burst of ratings costs no
//! re-encoding at all). A cold room nobody used for a while is *packed*: its JSON compressed
//! (`Packed`, chosen by the compaction pass in `cold.rs`, or at once by start-up for the rooms
//! it reads: see [`LoadedRoom`]), which is what a hundred thousand idle rooms should cost; a
//! read unpacks it once into the entry, and the compaction pass drops that copy again if no
//! read followed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::Value;

use super::body::{self, RoomBody};
use super::packed::Packed;
use crate::room::{parse_timestamp, EpochMillis, Revision, RoomDoc, RoomName};

/// A cold room's compact JSON as it is kept: as it is, or packed.
#[derive(Debug, Clone)]
pub enum RoomText {
    Json(Bytes),
    Packed(Packed),
}

impl RoomText {
    /// `json` packed, or as it is when packing would not save a quarter of it.
    pub fn packed_if_smaller(json: Bytes) -> RoomText {
        match Packed::of(&json) {
            Some(packed) => RoomText::Packed(packed),
            None => RoomText::Json(json),
        }
    }
}

/// A room as read from storage at start, before it has a revision: kept packed when that saves
/// memory, so that 100,000 room files are never all held as text at once. Packing each room on
/// the thread that read it, right away, frees its text there and then, where the next room
/// reuses it; texts freed later, once the compaction pass packed them, left holes among the
/// small allocations that stay (names, facts), which the allocator (then glibc) could not give
/// back (measured with 100,000 rooms of 5 KB: 560-590 MiB idle after a start from `.cache`,
/// against 313-322 packed as read).
#[derive(Debug, Clone)]
pub struct LoadedRoom {
    pub name: RoomName,
    pub facts: Arc<RoomFacts>,
    pub rating_count: usize,
    pub text: RoomText,
}

impl LoadedRoom {
    /// The room's compact JSON (unpacked if packed).
    pub fn json(&self) -> Bytes {
        match &self.text {
            RoomText::Json(json) => json.clone(),
            RoomText::Packed(packed) => packed.unpack(&self.name),
        }
    }

    /// The room as a cold entry at `revision`. A packed one counts as unread: nobody has read
    /// it since it was loaded.
    pub fn entry(&self, revision: Revision, updated_at: EpochMillis) -> RoomEntry {
        let json = match &self.text {
            RoomText::Json(json) => json.clone(),
            RoomText::Packed(_) => Bytes::new(),
        };
        let (name, facts) = (self.name.clone(), self.facts.clone());
        let entry = RoomEntry::cold(name, facts, json, self.rating_count, revision, updated_at);
        match &self.text {
            RoomText::Json(_) => entry,
            RoomText::Packed(packed) => RoomEntry {
                packed: Some(packed.clone()),
                encoded: OnceLock::new(),
                used: AtomicBool::new(false),
                ..entry
            },
        }
    }
}

/// The facts about a room that reads and filters use, taken out once when it is saved.
#[derive(Debug)]
pub struct RoomFacts {
    pub created_at: EpochMillis,
    /// `creatorPlexUserId` as text: Plex ids arrive as numbers or strings and compare as text.
    pub creator_plex_user_id: Option<String>,
    pub creator_plex_username: Option<String>,
    /// The stored password; absent or empty means the room has none.
    pub password: Option<String>,
    /// The summary fields that come from the room itself, as JSON object members.
    pub(crate) summary_head: String,
}

/// The room's own fields in a `listRooms` summary, in its order.
pub(crate) const SUMMARY_FIELDS: [&str; 5] = [
    "roomName",
    "sort",
    "createdAt",
    "creatorPlexUserId",
    "creatorPlexUsername",
];

/// [`RoomFacts::summary_head`] from the JSON texts of the [`SUMMARY_FIELDS`] (every save builds
/// one: pieces, not `format!`).
pub(crate) fn summary_head(values: [&str; 5], has_password: bool) -> String {
    let has_password = if has_password { "true" } else { "false" };
    let len = SUMMARY_FIELDS
        .iter()
        .zip(values)
        .map(|(key, value)| key.len() + value.len() + 4)
        .sum::<usize>();
    let mut head = String::with_capacity(len + 14 + has_password.len());
    for (key, value) in SUMMARY_FIELDS.iter().zip(values) {
        head.push('"');
        head.push_str(key);
        head.push_str("\":");
        head.push_str(value);
        head.push(',');
    }
    head.push_str("\"hasPassword\":");
    head.push_str(has_password);
    head
}

impl RoomFacts {
    pub fn of(doc: &RoomDoc) -> RoomFacts {
        let text = |field: &str| doc.get(field).and_then(Value::as_str).map(str::to_owned);
        let password = text("password").filter(|p| !p.is_empty());
        let values = SUMMARY_FIELDS.map(|field| doc.get(field).unwrap_or(&Value::Null).to_string());
        let summary_head = summary_head(values.each_ref().map(String::as_str), password.is_some());
        RoomFacts {
            created_at: text("createdAt")
                .as_deref()
                .and_then(parse_timestamp)
                .unwrap_or(0),
            creator_plex_user_id: match doc.get("creatorPlexUserId") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
            creator_plex_username: text("creatorPlexUsername"),
            password,
            summary_head,
        }
    }
}

/// One stored room with everything a read needs.
#[derive(Debug)]
pub struct RoomEntry {
    pub name: RoomName,
    pub revision: Revision,
    /// When the room last changed (epoch ms), for `roomExpiry`.
    pub updated_at: EpochMillis,
    pub facts: Arc<RoomFacts>,
    pub rating_count: usize,
    /// The `listRooms` summary object as compact JSON.
    pub summary: Bytes,
    /// Present while the room is hot.
    body: Option<Arc<RoomBody>>,
    /// The compact JSON compressed, once the room was idle for a while (then `encoded` is
    /// filled only by a read).
    packed: Option<Packed>,
    /// The compact JSON; set at once for a cold room that is not packed, filled on first read
    /// for a hot or packed one.
    encoded: OnceLock<Bytes>,
    /// Set when the entry is made and by every read; the compaction pass clears it, so a room
    /// whose flag the pass finds clear was not read for a whole pass.
    used: AtomicBool,
}

impl RoomEntry {
    /// A cold entry from a room's compact JSON and the facts already taken from it.
    pub fn cold(
        name: RoomName,
        facts: Arc<RoomFacts>,
        encoded: Bytes,
        rating_count: usize,
        revision: Revision,
        updated_at: EpochMillis,
    ) -> RoomEntry {
        let summary = summary(&facts, rating_count, revision);
        RoomEntry {
            name,
            revision,
            updated_at,
            facts,
            rating_count,
            summary,
            body: None,
            packed: None,
            encoded: OnceLock::from(encoded),
            used: AtomicBool::new(true),
        }
    }

    /// A cold entry from a parsed, valid room (start-up, replay, SIGHUP).
    pub fn from_doc(
        name: RoomName,
        doc: &RoomDoc,
        revision: Revision,
        updated_at: EpochMillis,
    ) -> RoomEntry {
        let facts = Arc::new(RoomFacts::of(doc));
        let rating_count = count_ratings(doc);
        let encoded = Bytes::from(
            serde_json::to_vec(doc)
                .unwrap_or_default()
                .into_boxed_slice(),
        );
        RoomEntry::cold(name, facts, encoded, rating_count, revision, updated_at)
    }

    /// A hot entry: a body just changed, encoded only when someone reads it.
    pub fn hot(
        name: RoomName,
        facts: Arc<RoomFacts>,
        body: Arc<RoomBody>,
        revision: Revision,
        updated_at: EpochMillis,
    ) -> RoomEntry {
        let rating_count = body.rating_count();
        RoomEntry {
            summary: summary(&facts, rating_count, revision),
            name,
            revision,
            updated_at,
            facts,
            rating_count,
            body: Some(body),
            packed: None,
            encoded: OnceLock::new(),
            used: AtomicBool::new(true),
        }
    }

    /// The room as compact JSON, exactly what `getRoom` returns. Kept in the entry once made
    /// (a packed room is unpacked once, however many read it), and counts as a use.
    pub fn encoded(&self) -> &Bytes {
        // A load first: the flag's cache line stays shared between the cores reading the room.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        self.encoded.get_or_init(|| self.make_json())
    }

    /// The compact JSON without keeping it or counting a use: for the fold, the journal and
    /// parsing, which must not unpack every room into memory or keep idle rooms from packing.
    pub fn json(&self) -> Bytes {
        match self.encoded.get() {
            Some(json) => json.clone(),
            None => self.make_json(),
        }
    }

    fn make_json(&self) -> Bytes {
        match (&self.body, &self.packed) {
            (Some(body), _) => Bytes::from(body.to_compact().into_boxed_slice()),
            (None, Some(packed)) => packed.unpack(&self.name),
            (None, None) => Bytes::new(),
        }
    }

    /// The length of the compact JSON, without unpacking it.
    pub fn json_len(&self) -> usize {
        match (self.encoded.get(), &self.packed) {
            (Some(json), _) => json.len(),
            (None, Some(packed)) => packed.json_len(),
            (None, None) => self.json().len(),
        }
    }

    /// The room's body, to change it: shared if hot, parsed from its JSON if cold.
    pub fn body(&self) -> Arc<RoomBody> {
        match &self.body {
            Some(body) => body.clone(),
            None => Arc::new(RoomBody::parse(&self.json()).unwrap_or_default()),
        }
    }

    pub fn is_hot(&self) -> bool {
        self.body.is_some()
    }

    /// Whether the room is kept compressed.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Whether a read unpacked this packed room (it then holds both forms).
    pub(crate) fn is_unpacked(&self) -> bool {
        self.packed.is_some() && self.encoded.get().is_some()
    }

    /// The bytes of JSON the entry holds, packed and unpacked (not its facts or summary).
    pub(crate) fn held_bytes(&self) -> usize {
        self.encoded.get().map_or(0, Bytes::len) + self.packed.as_ref().map_or(0, Packed::len)
    }

    /// The room's JSON in the form the entry keeps it, without unpacking it or counting a use
    /// (`.cache` keeps a packed room packed).
    pub fn text(&self) -> RoomText {
        match (&self.body, &self.packed) {
            (None, Some(packed)) => RoomText::Packed(packed.clone()),
            _ => RoomText::Json(self.json()),
        }
    }

    /// Whether the room was read (or made) since the last call; clears the flag.
    pub(crate) fn take_used(&self) -> bool {
        self.used.swap(false, Ordering::Relaxed)
    }

    /// The same room, cold, packed (`None` if hot, or if packing would not save much).
    pub(crate) fn packed(&self) -> Option<RoomEntry> {
        if self.is_hot() {
            return None;
        }
        let packed = match &self.packed {
            Some(packed) => packed.clone(),
            None => Packed::of(self.encoded.get()?)?,
        };
        Some(RoomEntry {
            packed: Some(packed),
            encoded: OnceLock::new(),
            used: AtomicBool::new(false),
            ..self.same_facts()
        })
    }

    /// The same room, cold and not packed (for a packed room that is being read again). Its
    /// "used" flag starts clear: the read that unpacked it was counted by the pass asking.
    pub(crate) fn unpacked(&self) -> RoomEntry {
        RoomEntry {
            encoded: OnceLock::from(self.json()),
            used: AtomicBool::new(false),
            ..self.same_facts()
        }
    }

    /// A cold entry without its JSON, sharing everything else with this one.
    fn same_facts(&self) -> RoomEntry {
        RoomEntry {
            name: self.name.clone(),
            revision: self.revision,
            updated_at: self.updated_at,
            facts: self.facts.clone(),
            rating_count: self.rating_count,
            summary: self.summary.clone(),
            body: None,
            packed: None,
            encoded: OnceLock::new(),
            used: AtomicBool::new(true),
        }
    }

    /// The same room, cold: keeps only its compact JSON (encoding it now if no reader did).
    pub fn cooled(&self) -> RoomEntry {
        self.cooled_at(self.revision, self.updated_at)
    }

    /// The same room, cold, at another revision and change time (a hand edit taken in).
    pub fn cooled_at(&self, revision: Revision, updated_at: EpochMillis) -> RoomEntry {
        RoomEntry::cold(
            self.name.clone(),
            self.facts.clone(),
            self.json(),
            self.rating_count,
            revision,
            updated_at,
        )
    }

    /// Pretty JSON plus a final newline, as the room's file holds it.
    pub fn pretty(&self) -> Vec<u8> {
        match &self.body {
            Some(body) => body.to_pretty(),
            None => {
                let mut bytes = Vec::new();
                body::prettify(&self.json(), &mut bytes);
                bytes.push(b'\n');
                bytes
            }
        }
    }

    /// The room as a JSON value (tests and rare paths).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.json()).unwrap_or(Value::Null)
    }
}

fn count_ratings(doc: &RoomDoc) -> usize {
    doc.get("ratings")
        .and_then(Value::as_object)
        .map_or(0, |ratings| {
            ratings
                .values()
                .map(|e| e.as_array().map_or(0, Vec::len))
                .sum()
        })
}

fn summary(facts: &RoomFacts, rating_count: usize, revision: Revision) -> Bytes {
    // Built on the actor for every change: pieces, not `format!`.
    let (mut count, mut rev) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (count, rev) = (count.format(rating_count), rev.format(revision));
    let mut text = Vec::with_capacity(facts.summary_head.len() + count.len() + rev.len() + 29);
    text.push(b'{');
    text.extend_from_slice(facts.summary_head.as_bytes());
    text.extend_from_slice(b",\"ratingCount\":");
    text.extend_from_slice(count.as_bytes());
    text.extend_from_slice(b",\"revision\":");
    text.extend_from_slice(rev.as_bytes());
    text.push(b'}');
    Bytes::from(text)
}

/// Every room, sorted by name in byte order.
pub type RoomMap = imbl::OrdMap<RoomName, Arc<RoomEntry>>;

/// An immutable view of all rooms at one point in the actor's order of mutations.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub rooms: RoomMap,
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<&Arc<RoomEntry>> {
        self.rooms.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summaries_hold_exactly_the_summary_fields() {
        let room = json!({
            "roomName": "r", "password": "p", "sort": "random", "createdAt": "2025-10-25T20:00:00Z",
            "creatorPlexUserId": 12, "creatorPlexUsername": "j", "ratings": {"m": [["a", "like", 1]]}
        });
        let Value::Object(doc) = room else {
            unreachable!()
        };
        let entry = RoomEntry::from_doc(RoomName::new("r").unwrap(), &doc, 3, 0);
        let summary: Value = serde_json::from_slice(&entry.summary).unwrap();
        assert_eq!(
            summary,
            json!({"roomName": "r", "sort": "random", "createdAt": "2025-10-25T20:00:00Z",
                   "creatorPlexUserId": 12, "creatorPlexUsername": "j", "hasPassword": true,
                   "ratingCount": 1, "revision": 3})
        );
        assert_eq!(entry.facts.creator_plex_user_id.as_deref(), Some("12"));
        assert_eq!(entry.to_value(), Value::Object(doc));
    }
}
