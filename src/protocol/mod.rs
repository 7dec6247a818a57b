//! The wire contract, protocol version 1 (PROTOCOL.md sections 1-3).
//!
//! 1. A request is one JSON object on one line; a response is one JSON object on one line.
//! 2. Every non-empty request line gets exactly one response, in request order per connection.
//! 3. `id` (string or number) is echoed verbatim, byte for byte; absent `id`, no `id` in the reply.
//! 4. Failures are `{"ok":false,"error":{"code","message","cause"?}}` with a stable `code`.
//!
//! This module owns the shapes on the wire, for the daemon and its clients alike: [`codec`] cuts
//! bytes into bounded lines, [`decode`] turns a line into a typed [`request::Request`],
//! [`request`] holds one type per operation (which clients serialize to send it), [`event`]
//! encodes `watch` events, and
//! [`response`] writes replies, splicing in the already-encoded room bytes the store keeps so a
//! read never re-serializes a room, and holds the reply types clients decode. It never touches
//! storage.

pub mod codec;
pub mod decode;
pub mod event;
pub mod request;
pub mod response;

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

pub use response::{error_line, Response};
