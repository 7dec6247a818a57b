//! Request decoding: one line of JSON into one typed [`Request`] (PROTOCOL.md sections 2-4).
//!
//! This module owns the envelope (`id`, `op`, the members as written) and the checks every
//! argument shares ([`Args`]); each operation takes its own arguments in its home in
//! [`super::request`]. Every argument is checked here, with a message that names it, so that
//! everything past this module works with valid values only. Unknown arguments are refused;
//! `null` means absent.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::request::{Request, RoomLookup};
use super::{ErrorCode, ErrorReply, RequestId};
use crate::room::prepare::{self, PreparedRoom};
use crate::room::scan::Scanner;
use crate::room::surrogate;
use crate::room::{self, EpochMillis};

/// A decoded request: its `id` and what it asks for.
#[derive(Debug)]
pub struct Envelope {
    pub id: RequestId,
    pub request: Request,
}

/// A request line that could not be decoded: the reply to send, with whatever `id` was found.
#[derive(Debug)]
pub struct Rejected {
    pub id: RequestId,
    pub error: ErrorReply,
}

/// The arguments besides `id` and `op`, in key order, `null` ones left out. A few at most, so a
/// list: no hashing, and the first unknown one reported is the first in key order. Each
/// operation takes the ones it knows; whatever is left is refused as unknown.
#[derive(Default)]
pub struct Args<'a> {
    values: Vec<(Cow<'a, str>, Value)>,
    /// The arguments that held a lone surrogate escape, masked in `values` ([`surrogate`]).
    unpaired: Vec<Cow<'a, str>>,
    /// `room`, kept apart: it is checked and prepared straight from its text, not as a tree.
    room: Option<RoomArgument<'a>>,
}

/// The `room` argument as written, and prepared already when the line's scan did it.
struct RoomArgument<'a> {
    raw: &'a str,
    prepared: Option<PreparedRoom>,
}

impl Args<'_> {
    /// The argument `key`, unchecked; `None` when absent or `null`.
    pub(super) fn take(&mut self, key: &str) -> Option<Value> {
        let at = self.values.iter().position(|(k, _)| k == key)?;
        Some(self.values.remove(at).1)
    }

    fn first_key(&self) -> Option<&str> {
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

/// A key of the request object, borrowed from the line unless it holds escapes.
#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// Decodes one request line.
pub fn decode(line: &[u8]) -> Result<Envelope, Rejected> {
    decode_with(line, true)
}

/// [`decode`], with the one-pass scan (`fast`) or serde_json alone (tests compare the two).
fn decode_with(line: &[u8], fast: bool) -> Result<Envelope, Rejected> {
    let scanned = std::str::from_utf8(line)
        .ok()
        .filter(|_| fast)
        .and_then(scan_line);
    let (mut object, prepared) = match scanned {
        Some(scanned) => scanned,
        None => (parse_line(line)?, None),
    };
    // Valid JSON by now (scanned or parsed), so it always makes a raw value.
    let id: RequestId = object
        .remove(&Key("id".into()))
        .and_then(|raw| RawValue::from_string(raw.to_owned()).ok());
    let reject = |error: ErrorReply, id: RequestId| Rejected { id, error };
    let id_is_valid = id.as_ref().is_none_or(|raw| {
        matches!(
            raw.get().as_bytes().first(),
            Some(b'"' | b'-' | b'0'..=b'9')
        )
    });
    if !id_is_valid {
        return Err(reject(
            ErrorReply::bad_request("id: expected a string or a number"),
            id,
        ));
    }
    // A room is checked and prepared straight from its text (no JSON tree); the other
    // arguments are small, and decoding them to values keeps their checks simple.
    let mut args = Args {
        room: object
            .remove(&Key("room".into()))
            .filter(|raw| *raw != "null")
            .map(|raw| RoomArgument { raw, prepared }),
        ..Args::default()
    };
    for (Key(key), raw) in object {
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Null) => {}
            Ok(value) => args.values.push((key, value)),
            // Valid JSON serde_json cannot decode: a string with half a surrogate pair.
            Err(e) => match surrogate::mask(raw).map(|m| serde_json::from_str::<Value>(&m)) {
                Some(Ok(value)) => {
                    args.unpaired.push(key.clone());
                    args.values.push((key, value));
                }
                _ => {
                    return Err(reject(
                        ErrorReply::new(
                            ErrorCode::BadJson,
                            format!("{}: invalid JSON", room::quoted(&key)),
                        )
                        .with_cause(e.to_string()),
                        id,
                    ))
                }
            },
        }
    }
    match decode_args(args) {
        Ok(request) => Ok(Envelope { id, request }),
        Err(error) => Err(reject(error, id)),
    }
}

/// The members of a request object, each value as written, in key order.
type Members<'a> = BTreeMap<Key<'a>, &'a str>;

/// The fast path: one scan of the line finds every member and checks a `room` object on the
/// way. `None` sends the line to [`parse_line`]: any error, and valid but unusual lines
/// (escaped or repeated keys, a room the full validator has to judge).
fn scan_line(line: &str) -> Option<(Members<'_>, Option<PreparedRoom>)> {
    let mut scanner = Scanner::new(line);
    let mut members = Members::new();
    let mut room = None;
    scanner.object(|s, key| {
        let key = key.plain()?;
        let value = if key == "room" && s.peek()? == b'{' {
            let (raw, prepared) = prepare::scan(s)?;
            room = Some(prepared);
            raw
        } else {
            s.value()?
        };
        members
            .insert(Key(Cow::Borrowed(key)), value)
            .is_none()
            .then_some(())
    })?;
    scanner.at_end().then_some((members, room))
}

/// serde_json's reading of a line, borrowing every value from it; it tells "not JSON" from
/// "not an object" only on failure. A repeated key: the last wins.
fn parse_line(line: &[u8]) -> Result<Members<'_>, Rejected> {
    match serde_json::from_slice::<BTreeMap<Key, &RawValue>>(line) {
        Ok(object) => Ok(object.into_iter().map(|(k, v)| (k, v.get())).collect()),
        Err(_) => {
            // serde_json skips over strings without checking them, so "not an object" must not
            // be concluded before the bytes are known to be UTF-8 (only failures pay for this).
            if let Err(e) = std::str::from_utf8(line) {
                let error = ErrorReply::new(
                    ErrorCode::BadJson,
                    format!(
                        "the request line is not valid UTF-8 (invalid byte at offset {}); send JSON encoded as UTF-8",
                        e.valid_up_to()
                    ),
                );
                return Err(Rejected { id: None, error });
            }
            let error = match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                Ok(_) => ErrorReply::new(ErrorCode::BadJson, "the request must be a JSON object"),
                Err(e) => {
                    ErrorReply::new(ErrorCode::BadJson, "the request is not valid UTF-8 JSON")
                        .with_cause(e.to_string())
                }
            };
            Err(Rejected { id: None, error })
        }
    }
}

fn decode_args(mut args: Args) -> Result<Request, ErrorReply> {
    let unpaired = std::mem::take(&mut args.unpaired);
    let request = decode_op(args)?;
    // A masked room name is unstorable and answered as missing; so is every request whose
    // room name is, whatever else it holds. Any other string with half a surrogate pair could
    // never be stored nor match a stored one: refused, naming it.
    let answered_as_missing = matches!(request.lookup(), Some(RoomLookup::Unstorable(_)));
    let refused = unpaired
        .iter()
        .find(|key| !matches!(&***key, "roomName" | "roomNames") && !answered_as_missing);
    match refused {
        Some(key) => Err(ErrorReply::bad_request(format!(
            "{key}: holds a lone UTF-16 surrogate escape (half a pair, such as \\ud800), \
             which no room can store; send well-formed text"
        ))),
        None => Ok(request),
    }
}

/// `op`, then the operation's own arguments; anything left over is unknown to it.
fn decode_op(mut args: Args) -> Result<Request, ErrorReply> {
    let op = match args.take("op") {
        Some(Value::String(op)) => op,
        None => return Err(ErrorReply::bad_request("op: required")),
        Some(_) => return Err(ErrorReply::bad_request("op: expected a string")),
    };
    let Some(request) = Request::decode(&op, &mut args) else {
        let quoted = room::quoted(&op);
        return Err(ErrorReply::bad_request(format!(
            "op: unknown operation {quoted}"
        )));
    };
    let request = request?;
    if args.room.is_some() {
        return Err(ErrorReply::bad_request(format!(
            "\"room\": unknown argument for {op}"
        )));
    }
    if let Some(unknown) = args.first_key() {
        let quoted = room::quoted(unknown);
        return Err(ErrorReply::bad_request(format!(
            "{quoted}: unknown argument for {op}"
        )));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::{DeleteRoom, GetRoom, HasRoom, Watch};
    use crate::room::RoomName;

    fn rejected(line: &str) -> Rejected {
        decode(line.as_bytes()).expect_err("line should be rejected")
    }

    #[test]
    fn decodes_an_operation_with_its_id() {
        let env = decode(br#"{"id":7,"op":"getRoom","roomName":"movie-night"}"#).unwrap();
        assert_eq!(env.id.unwrap().get(), "7");
        assert!(
            matches!(env.request, Request::GetRoom(GetRoom { room_name }) if room_name.as_str() == "movie-night")
        );
    }

    #[test]
    fn the_one_pass_scan_decodes_as_serde_json_does() {
        let room = r#"{"roomName":"r","sort":"random","createdAt":"2025-10-25T20:00:00.000Z","creatorPlexUserId":1,"creatorPlexUsername":"u","ratings":{"m":[["u","like",1]]}}"#;
        let lines = [
            format!(r#"{{"id":1,"op":"saveRoom","room":{room}}}"#),
            format!(r#"{{"room":{room},"op":"saveRoom","expectedRevision":2,"id":"x"}}"#),
            format!(r#" {{ "op" : "saveRoom" , "room" : {room} }} "#),
            format!(r#"{{"op":"saveRoom","room":{room},"room":null}}"#),
            format!(r#"{{"op":"saveRoom","room":5,"room":{room}}}"#),
            format!(r#"{{"op":"saveRoom","r\u006fom":{room}}}"#),
            format!(r#"{{"op":"getRoom","room":{room},"roomName":"r"}}"#),
            format!(r#"{{"op":"saveRoom","room":{}}}"#, room.replace("like", "meh")),
            r#"{"id":1e9991,"op":"ping"}"#.to_owned(),
            r#"{"id":-1.5,"op":"ping"}"#.to_owned(),
            r#"{"id":[1],"op":"ping"}"#.to_owned(),
            r#"{"op":"getRoom","roomName":"a","roomName":"b"}"#.to_owned(),
            r#"{"op":"addRating","roomName":"r","mediaId":"m","userName":"u","rating":"like","timestamp":5}"#.to_owned(),
            r#"{"op":"listRooms","limit":1.0}"#.to_owned(),
            r#"{"op":"ping"} x"#.to_owned(),
            r#"{"op":"ping","op":"stats"}"#.to_owned(),
            "[1]".to_owned(),
        ];
        for line in lines {
            let fast = format!("{:?}", decode_with(line.as_bytes(), true));
            let slow = format!("{:?}", decode_with(line.as_bytes(), false));
            assert_eq!(fast, slow, "{line}");
        }
    }

    #[test]
    fn lookups_take_any_string_and_tell_unstorable_names_apart() {
        let lookup_of = |name: &str| {
            let line = serde_json::json!({"op": "hasRoom", "roomName": name}).to_string();
            match decode(line.as_bytes()).map(|e| e.request) {
                Ok(Request::HasRoom(HasRoom { room_name })) => room_name,
                other => panic!("{line}: {other:?}"),
            }
        };
        assert_eq!(
            lookup_of("a b"),
            RoomLookup::Storable(RoomName::new("a b").unwrap())
        );
        for name in [String::new(), "a\nb".to_owned(), "n".repeat(256)] {
            assert_eq!(lookup_of(&name), RoomLookup::Unstorable(name.clone()));
        }
        let watched = decode(br#"{"op":"watch","roomNames":["","a","\u0001"]}"#).unwrap();
        let Request::Watch(watch @ Watch { .. }) = watched.request else {
            panic!("not a watch: {watched:?}");
        };
        assert_eq!(watch.rooms(), Some(vec![RoomName::new("a").unwrap()]));
    }

    #[test]
    fn null_means_absent() {
        let env = decode(br#"{"op":"deleteRoom","roomName":"a","expectedRevision":null}"#).unwrap();
        assert!(matches!(
            env.request,
            Request::DeleteRoom(DeleteRoom {
                expected_revision: None,
                ..
            })
        ));
    }

    #[test]
    fn bad_lines_get_the_right_code_and_keep_the_id() {
        assert_eq!(rejected("{nope").error.code, ErrorCode::BadJson);
        assert_eq!(rejected("[1,2]").error.code, ErrorCode::BadJson);
        assert_eq!(rejected("\"x\"").error.code, ErrorCode::BadJson);
        let r = rejected(r#"{"id":"a","op":"frobnicate"}"#);
        assert_eq!(r.error.code, ErrorCode::BadRequest);
        assert_eq!(r.id.unwrap().get(), "\"a\"");
        let r = rejected(r#"{"id":[1],"op":"ping"}"#);
        assert_eq!(r.error.message, "id: expected a string or a number");
        assert_eq!(r.id.unwrap().get(), "[1]");
        let r = rejected(r#"{"op":"ping","extra":1}"#);
        assert_eq!(r.error.message, "\"extra\": unknown argument for ping");
        assert_eq!(
            rejected(r#"{"op":"getRoom"}"#).error.message,
            "roomName: required"
        );
        assert_eq!(
            rejected(r#"{"op":"getRoom","roomName":5}"#).error.message,
            "roomName: expected a string"
        );
        assert_eq!(
            rejected(r#"{"op":"saveRoom","room":{"roomName":"x"}}"#)
                .error
                .code,
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            rejected(r#"{"op":"listRooms","limit":0}"#).error.code,
            ErrorCode::BadRequest
        );
    }
}
