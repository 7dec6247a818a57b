//! The published view of every room: immutable, shared, cheap to clone.
//!
//! The actor builds a new [`Snapshot`] after each batch of mutations and publishes it; readers
//! load the current one without waiting for the actor. Each [`RoomEntry`] keeps the room's
//! compact JSON and its summary already encoded, so serving a read is a copy of bytes.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::room::{EpochMillis, Revision, RoomDoc, RoomName};

/// One stored room with everything a read needs, computed once per change.
#[derive(Debug)]
pub struct RoomEntry {
    pub name: RoomName,
    /// The room as a JSON object, for mutations that edit it.
    pub doc: Arc<RoomDoc>,
    /// The room as compact JSON, exactly what `getRoom` returns.
    pub encoded: Bytes,
    /// The `listRooms` summary object as compact JSON.
    pub summary: Bytes,
    pub revision: Revision,
    pub created_at: EpochMillis,
    /// When the room last changed (epoch ms), for `roomExpiry`.
    pub updated_at: EpochMillis,
}

impl RoomEntry {
    /// Builds an entry, encoding the room and its summary.
    pub fn new(
        name: RoomName,
        doc: Arc<RoomDoc>,
        revision: Revision,
        created_at: EpochMillis,
        updated_at: EpochMillis,
    ) -> RoomEntry {
        // Encoding a `Map<String, Value>` into memory cannot fail.
        let encoded = Bytes::from(serde_json::to_vec(&*doc).unwrap_or_default());
        let summary = Bytes::from(encode_summary(&doc, revision));
        RoomEntry {
            name,
            doc,
            encoded,
            summary,
            revision,
            created_at,
            updated_at,
        }
    }

    /// `creatorPlexUserId` as a string: Plex ids arrive as numbers or strings and compare as text.
    pub fn creator_plex_user_id(&self) -> Option<String> {
        match self.doc.get("creatorPlexUserId")? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub fn creator_plex_username(&self) -> Option<&str> {
        self.doc.get("creatorPlexUsername")?.as_str()
    }

    /// The stored password; absent or empty means the room has none.
    pub fn password(&self) -> Option<&str> {
        self.doc
            .get("password")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
    }
}

fn encode_summary(doc: &RoomDoc, revision: Revision) -> Vec<u8> {
    let rating_count: usize = doc
        .get("ratings")
        .and_then(Value::as_object)
        .map(|ratings| {
            ratings
                .values()
                .map(|entries| entries.as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    let has_password = doc
        .get("password")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty());
    let summary = serde_json::json!({
        "roomName": doc.get("roomName"),
        "sort": doc.get("sort"),
        "createdAt": doc.get("createdAt"),
        "creatorPlexUserId": doc.get("creatorPlexUserId"),
        "creatorPlexUsername": doc.get("creatorPlexUsername"),
        "hasPassword": has_password,
        "ratingCount": rating_count,
        "revision": revision,
    });
    serde_json::to_vec(&summary).unwrap_or_default()
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
