//! A room's changes: the [`Mutation`]s clients ask for, what they report ([`Outcome`],
//! [`Refusal`]), and the [`Change`]s that are logged, replayed and published as events.
//!
//! These are plain values: what each mutation does to the rooms is `store::apply`; how a change
//! is kept is each backend's (the file journal writes `Put` records without serde).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use super::error::Refusal;
use super::prepare::PreparedRoom;
use super::{EpochMillis, Rating, Revision, RoomName};

/// A change request, already validated, in the order the actor applies it.
#[derive(Debug)]
pub enum Mutation {
    Save {
        room: Box<PreparedRoom>,
        expected_revision: Option<Revision>,
    },
    Delete {
        name: RoomName,
        expected_revision: Option<Revision>,
    },
    AddRating {
        name: RoomName,
        media_id: String,
        user_name: String,
        rating: Rating,
        timestamp: u64,
    },
    SetProgress {
        name: RoomName,
        user_name: String,
        progress: u64,
    },
    /// `deleteRooms`: every room created before the instant.
    DeleteCreatedBefore { created_before: EpochMillis },
    /// `roomExpiry`: every room not changed since the instant.
    Expire { idle_since: EpochMillis },
}

/// What a successful mutation reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Saved { revision: Revision },
    Deleted { deleted: bool },
    Rated { revision: Revision, added: bool },
    Progressed { revision: Revision },
    DeletedMany { count: u64 },
}

/// One change to one room, as it is logged and replayed. Ratings and progress are deltas so that
/// a swipe costs a few bytes to log, not a rewrite of the room.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum Change {
    /// The whole room, at `revision`, as compact JSON.
    Put {
        name: RoomName,
        revision: Revision,
        at: EpochMillis,
        #[serde(with = "raw_json")]
        room: Bytes,
    },
    Rate {
        name: RoomName,
        revision: Revision,
        at: EpochMillis,
        media_id: String,
        user_name: String,
        rating: String,
        timestamp: u64,
    },
    Progress {
        name: RoomName,
        revision: Revision,
        at: EpochMillis,
        user_name: String,
        progress: u64,
    },
    Delete {
        name: RoomName,
    },
}

impl Change {
    pub fn room_name(&self) -> &RoomName {
        match self {
            Change::Put { name, .. }
            | Change::Rate { name, .. }
            | Change::Progress { name, .. }
            | Change::Delete { name } => name,
        }
    }
}

/// Serializes compact JSON bytes as the JSON they hold, verbatim (the journal writes `Put`
/// records without serde, `journal::encode_record`; this is for tests and tools).
mod raw_json {
    use bytes::Bytes;
    use serde::{Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(bytes).map_err(serde::ser::Error::custom)?;
        let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// A `Change` as written, every field optional: read as a plain struct, not as serde's
/// internally tagged enum, because that buffers the fields as values first, which turns the
/// numbers of a `Put`'s room into floats; a plain struct can keep the room as its text.
#[derive(Deserialize)]
struct ChangeRecord {
    t: String,
    name: RoomName,
    revision: Option<Revision>,
    at: Option<EpochMillis>,
    room: Option<Box<serde_json::value::RawValue>>,
    media_id: Option<String>,
    user_name: Option<String>,
    rating: Option<String>,
    timestamp: Option<u64>,
    progress: Option<u64>,
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let r = ChangeRecord::deserialize(d)?;
        let missing = |field: &'static str| D::Error::missing_field(field);
        Ok(match r.t.as_str() {
            "put" => Change::Put {
                name: r.name,
                revision: r.revision.ok_or_else(|| missing("revision"))?,
                at: r.at.ok_or_else(|| missing("at"))?,
                room: Bytes::copy_from_slice(
                    r.room.ok_or_else(|| missing("room"))?.get().as_bytes(),
                ),
            },
            "rate" => Change::Rate {
                name: r.name,
                revision: r.revision.ok_or_else(|| missing("revision"))?,
                at: r.at.ok_or_else(|| missing("at"))?,
                media_id: r.media_id.ok_or_else(|| missing("media_id"))?,
                user_name: r.user_name.ok_or_else(|| missing("user_name"))?,
                rating: r.rating.ok_or_else(|| missing("rating"))?,
                timestamp: r.timestamp.ok_or_else(|| missing("timestamp"))?,
            },
            "progress" => Change::Progress {
                name: r.name,
                revision: r.revision.ok_or_else(|| missing("revision"))?,
                at: r.at.ok_or_else(|| missing("at"))?,
                user_name: r.user_name.ok_or_else(|| missing("user_name"))?,
                progress: r.progress.ok_or_else(|| missing("progress"))?,
            },
            "delete" => Change::Delete { name: r.name },
            other => {
                return Err(D::Error::unknown_variant(
                    other,
                    &["put", "rate", "progress", "delete"],
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_through_json() {
        let change = Change::Rate {
            name: RoomName::new("a/b").unwrap(),
            revision: 4,
            at: 9,
            media_id: "plex://movie/1".into(),
            user_name: "jane".into(),
            rating: "dislike".into(),
            timestamp: 7,
        };
        let text = serde_json::to_string(&change).unwrap();
        assert!(text.starts_with(r#"{"t":"rate","name":"a/b""#), "{text}");
        assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), change);
    }
}
