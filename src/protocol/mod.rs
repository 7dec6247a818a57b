//! The wire contract, protocol version 1 (PROTOCOL.md sections 1-3).
//!
//! 1. A request is one JSON object on one line; a response is one JSON object on one line.
//! 2. Every non-empty request line gets exactly one response, in request order per connection.
//! 3. `id` (string or number) is echoed verbatim, byte for byte; absent `id`, no `id` in the reply.
//! 4. Failures are `{"ok":false,"error":{"code","message","cause"?}}` with a stable `code`.
//!
//! This module owns the shapes on the wire: [`codec`] cuts bytes into bounded lines, [`request`]
//! turns a line into a typed [`request::Request`], [`event`] encodes `watch` events, and [`Response`] writes replies, splicing in the
//! already-encoded room bytes the store keeps so a read never re-serializes a room. It never
//! touches storage.

pub mod codec;
pub mod event;
pub mod request;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use crate::room::Revision;

/// The protocol version `ping` reports.
pub const PROTOCOL_VERSION: u32 = 1;

/// The stable error codes of PROTOCOL.md section 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    BadRequest,
    InvalidRoom,
    NotFound,
    Conflict,
    TooLarge,
    Storage,
    ShuttingDown,
    Busy,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Storage => "storage",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Busy => "busy",
        }
    }
}

/// A failure as sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    /// For humans; names the offending field path where there is one.
    pub message: String,
    /// The underlying error's text, e.g. the OS error of a failed write.
    pub cause: Option<String>,
    /// With `conflict`: the room's current revision (0 = absent).
    pub revision: Option<Revision>,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            code,
            message: message.into(),
            cause: None,
            revision: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ErrorReply {
        ErrorReply::new(ErrorCode::BadRequest, message)
    }

    pub fn with_cause(mut self, cause: impl Into<String>) -> ErrorReply {
        self.cause = Some(cause.into());
        self
    }
}

/// The request's `id`, kept as the exact JSON text the client sent.
pub type RequestId = Option<Box<RawValue>>;

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

#[cfg(test)]
mod tests {
    use super::*;

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
