//! The room and its changes: what a room is, what makes it valid, the forms it is kept in, and
//! what may happen to it.
//!
//! - here: [`RoomName`], [`Revision`], [`Rating`], timestamps, [`RoomDoc`];
//! - [`validate`](mod@validate): PROTOCOL.md section 4, once: the `FIELDS` table and the validator that names
//!   the offending field path; [`prepare`]: the one-pass fast path over the same table, built on
//!   the [`scan`] scanner;
//! - [`body`], [`entry`]: a room as the store keeps it (a changeable body, a published entry);
//!   [`cold`]: idle rooms kept compressed, and the pass that decides which;
//! - [`change`]: mutations, outcomes, refusals and the changes that are logged and replayed;
//! - [`error`]: [`RoomError`] and [`StoreError`], whose `Display` is the protocol's message.
//!
//! This layer sits below the protocol, the store, the backends and `remote`, and imports none of
//! them: it never touches storage, sockets or the wire's framing. Callers hand it JSON and get
//! typed values.

pub mod body;
pub mod change;
pub mod cold;
pub mod entry;
pub mod error;
pub mod minify;
pub mod packed;
pub mod prepare;
pub mod scan;
pub(crate) mod surrogate;
pub mod validate;

pub use error::{RoomError, StoreError};
pub use validate::{validate, ValidRoom};

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

/// How much of a client's string an error message quotes: a room name has at most 255 bytes,
/// and a 16 MB one no room can have must not come back as a 16 MB message.
const QUOTED_BYTES: usize = 256;

/// What serde_json says is wrong with a value, without its "at line 1 column N": the position
/// counts inside the value it was given (an argument, a room), not along the client's line.
pub fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.split_once(" at line ") {
        Some((reason, _)) => reason.to_owned(),
        None => text,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
