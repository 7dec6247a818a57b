//! Responses (PROTOCOL.md section 2): the lines the daemon writes, and the types clients read.
//!
//! The daemon writes with [`Response`], appending fields as raw JSON so that stored room bytes
//! go out as they are and a read never re-serializes a room. Clients decode a success into the
//! reply type of its operation ([`super::request::Operation::Reply`]); every reply type ignores
//! `ok`, `id` and fields it does not name, so newer daemons may add some.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ErrorReply, RequestId};
use crate::room::Revision;

/// One response line under construction. Fields are appended as raw JSON so that stored room
/// bytes go out as they are.
pub struct Response {
    buf: BytesMut,
}

impl Response {
    /// Starts `{"id":…,"ok":true`.
    pub fn ok(id: &RequestId) -> Response {
        Response::start(id, true, 64)
    }

    /// The end of a response whose start was written separately: fields appended to it start
    /// with their comma, and [`Response::finish`] closes the object.
    pub fn tail() -> Response {
        Response {
            buf: BytesMut::with_capacity(64),
        }
    }

    /// The response so far, followed by `,"name":`, for a value written separately.
    pub fn key_only(mut self, name: &str) -> Bytes {
        self.key(name);
        self.buf.freeze()
    }

    fn start(id: &RequestId, ok: bool, capacity: usize) -> Response {
        let mut buf = BytesMut::with_capacity(capacity);
        buf.put_u8(b'{');
        if let Some(id) = id {
            buf.put_slice(b"\"id\":");
            buf.put_slice(id.get().as_bytes());
            buf.put_u8(b',');
        }
        buf.put_slice(if ok { b"\"ok\":true" } else { b"\"ok\":false" });
        Response { buf }
    }

    /// Appends `,"name":` followed by `raw`, which must already be valid JSON.
    pub fn raw(mut self, name: &str, raw: &[u8]) -> Response {
        self.key(name);
        self.buf.put_slice(raw);
        self
    }

    pub fn u64(mut self, name: &str, value: u64) -> Response {
        self.key(name);
        self.buf
            .put_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    pub fn bool(mut self, name: &str, value: bool) -> Response {
        self.key(name);
        self.buf
            .put_slice(if value { b"true" as &[u8] } else { b"false" });
        self
    }

    pub fn str(mut self, name: &str, value: &str) -> Response {
        self.key(name);
        self.put_json_string(value);
        self
    }

    /// Appends any serializable value (for small, rarely sent fields such as `stats`).
    pub fn value(mut self, name: &str, value: &impl serde::Serialize) -> Response {
        self.key(name);
        // Serializing plain data into memory cannot fail; null keeps the line valid if it did.
        let json = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        self.buf.put_slice(&json);
        self
    }

    /// Closes the object and the line.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_slice(b"}\n");
        self.buf.freeze()
    }

    fn key(&mut self, name: &str) {
        self.buf.put_u8(b',');
        self.put_json_string(name);
        self.buf.put_u8(b':');
    }

    fn put_json_string(&mut self, s: &str) {
        let json = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
        self.buf.put_slice(json.as_bytes());
    }
}

/// Encodes a failure response line.
pub fn error_line(id: &RequestId, error: &ErrorReply) -> Bytes {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cause: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        revision: Option<Revision>,
    }
    let body = Body {
        code: error.code.as_str(),
        message: &error.message,
        cause: error.cause.as_deref(),
        revision: error.revision,
    };
    Response::start(id, false, 128 + error.message.len())
        .value("error", &body)
        .finish()
}

/// `saveRoom`, `setProgress`: the room's revision after the change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewRevision {
    pub revision: Revision,
}

/// `getRoom`: the room as saved, or `None` when there is none (no revision then).
#[derive(Debug, Deserialize)]
pub struct FoundRoom {
    pub room: Option<Box<RawValue>>,
    pub revision: Option<Revision>,
}

/// `hasRoom`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Exists {
    pub exists: bool,
}

/// `deleteRoom`: `false` when there was no such room.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Deleted {
    pub deleted: bool,
}

/// `listRooms`: the rooms (or summaries) sorted by name, and the name to pass as `after` for the
/// next page when there is one. `Room` may borrow from the line (`&RawValue`) for a listing too
/// large to hold twice.
#[derive(Debug, Deserialize)]
pub struct RoomList<Room = Box<RawValue>> {
    pub rooms: Vec<Room>,
    pub next: Option<String>,
}

/// `addRating`: the revision, and whether the rating was added (`false`: the user had already
/// rated that media; the room is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Rated {
    pub revision: Revision,
    pub added: bool,
}

/// `verifyPassword`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Valid {
    pub valid: bool,
}

/// `deleteRooms`: how many rooms were deleted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeletedCount {
    pub deleted: u64,
}

/// `ping`: the protocol version the daemon speaks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pong {
    pub protocol: u32,
}

/// `stats`: every field as the daemon sent it; which ones there are depends on the backend.
pub type Stats = serde_json::Map<String, serde_json::Value>;

/// `flush`, `fold`, `watch`: nothing besides `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Done {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn id(text: &str) -> RequestId {
        Some(RawValue::from_string(text.to_owned()).unwrap())
    }

    #[test]
    fn ids_are_echoed_byte_for_byte() {
        let line = Response::ok(&id("1.50")).u64("revision", 3).finish();
        assert_eq!(&line[..], b"{\"id\":1.50,\"ok\":true,\"revision\":3}\n");
        let line = Response::ok(&None).bool("exists", false).finish();
        assert_eq!(&line[..], b"{\"ok\":true,\"exists\":false}\n");
    }

    #[test]
    fn errors_carry_code_message_cause_and_revision() {
        let mut error = ErrorReply::new(ErrorCode::Conflict, "expected revision 2, found 3");
        error.revision = Some(3);
        let line = error_line(&id("\"a\""), &error.with_cause("x"));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["id"], "a");
        assert_eq!(value["ok"], false);
        assert_eq!(value["error"]["code"], "conflict");
        assert_eq!(value["error"]["revision"], 3);
        assert_eq!(value["error"]["cause"], "x");
    }
}
