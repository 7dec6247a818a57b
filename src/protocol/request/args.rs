//! The arguments of a request besides `id` and `op`, and the checks every argument shares.
//!
//! The line decoder (`protocol/decode.rs`) fills an [`Args`] from the line; each operation's [`super::Decode`]
//! takes the arguments it knows, checked, with a message that names the one that is wrong.

use std::borrow::Cow;

use serde_json::Value;

use super::RoomLookup;
use crate::protocol::{ErrorCode, ErrorReply};
use crate::room::prepare::PreparedRoom;
use crate::room::{self, EpochMillis};

/// The arguments besides `id` and `op`, in key order, `null` ones left out. A few at most, so a
/// list: no hashing, and the first unknown one reported is the first in key order. Each
/// operation takes the ones it knows; whatever is left is refused as unknown.
#[derive(Default)]
pub struct Args<'a> {
    pub(in crate::protocol) values: Vec<(Cow<'a, str>, Value)>,
    /// The arguments that held a lone surrogate escape, masked in `values` ([`surrogate`]).
    pub(in crate::protocol) unpaired: Vec<Cow<'a, str>>,
    /// `room`, kept apart: it is checked and prepared straight from its text, not as a tree.
    pub(in crate::protocol) room: Option<RoomArgument<'a>>,
}

/// The `room` argument as written, and prepared already when the line's scan did it.
pub(in crate::protocol) struct RoomArgument<'a> {
    pub raw: &'a str,
    pub prepared: Option<PreparedRoom>,
}

impl Args<'_> {
    /// The argument `key`, unchecked; `None` when absent or `null`.
    pub(in crate::protocol) fn take(&mut self, key: &str) -> Option<Value> {
        let at = self.values.iter().position(|(k, _)| k == key)?;
        Some(self.values.remove(at).1)
    }

    pub(in crate::protocol) fn first_key(&self) -> Option<&str> {
        self.values.first().map(|(key, _)| &**key)
    }

    /// `room`: a room object, checked against section 4 (`invalid_room` naming the field).
    pub(super) fn room(&mut self) -> Result<PreparedRoom, ErrorReply> {
        match self.room.take() {
            Some(RoomArgument {
                prepared: Some(prepared),
                ..
            }) => Ok(prepared),
            Some(RoomArgument { raw, .. }) if raw.starts_with('{') => {
                PreparedRoom::from_json_str(raw)
                    .map_err(|e| ErrorReply::new(ErrorCode::InvalidRoom, e.to_string()))
            }
            None => Err(ErrorReply::bad_request("room: required")),
            Some(_) => Err(ErrorReply::bad_request("room: expected an object")),
        }
    }

    /// A required string.
    pub(super) fn string(&mut self, key: &str) -> Result<String, ErrorReply> {
        match self.take(key) {
            Some(Value::String(s)) => Ok(s),
            None => Err(ErrorReply::bad_request(format!("{key}: required"))),
            Some(_) => Err(ErrorReply::bad_request(format!("{key}: expected a string"))),
        }
    }

    /// `roomName` of a lookup: any string.
    pub(super) fn room_name(&mut self) -> Result<RoomLookup, ErrorReply> {
        match self.take("roomName") {
            Some(value) => lookup(value, "roomName"),
            None => Err(ErrorReply::bad_request("roomName: required")),
        }
    }

    /// `roomNames` of `watch`: an array of any strings.
    pub(super) fn room_names(&mut self) -> Result<Option<Vec<RoomLookup>>, ErrorReply> {
        match self.take("roomNames") {
            None => Ok(None),
            Some(Value::Array(names)) => names
                .into_iter()
                .enumerate()
                .map(|(i, name)| lookup(name, &format!("roomNames[{i}]")))
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(ErrorReply::bad_request(
                "roomNames: expected an array of room names",
            )),
        }
    }

    pub(super) fn opt_u64(&mut self, key: &str) -> Result<Option<u64>, ErrorReply> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| ErrorReply::bad_request(format!("{key}: expected an integer >= 0"))),
        }
    }

    pub(super) fn opt_timestamp(&mut self, key: &str) -> Result<Option<EpochMillis>, ErrorReply> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => room::parse_timestamp(&s).map(Some).ok_or_else(|| {
                ErrorReply::bad_request(format!(
                    "{key}: expected an RFC 3339 date-time such as \"2025-10-25T20:00:00.000Z\""
                ))
            }),
            Some(_) => Err(ErrorReply::bad_request(format!(
                "{key}: expected an RFC 3339 date-time string"
            ))),
        }
    }
}

fn lookup(value: Value, path: &str) -> Result<RoomLookup, ErrorReply> {
    match value {
        Value::String(name) => Ok(RoomLookup::new(name)),
        _ => Err(ErrorReply::bad_request(format!(
            "{path}: expected a string"
        ))),
    }
}
