//! Request decoding: one line of JSON into one typed [`Request`] (PROTOCOL.md sections 2-4).
//!
//! Every argument is checked here, with a message that names it, so that everything past this
//! module works with valid values only. Unknown arguments are refused; `null` means absent.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{ErrorCode, ErrorReply, RequestId};
use crate::room::prepare::{self, PreparedRoom};
use crate::room::scan::Scanner;
use crate::room::surrogate;
use crate::room::{self, EpochMillis, Rating, Revision, RoomName};

/// A decoded request: its `id` and what it asks for.
#[derive(Debug)]
pub struct Envelope {
    pub id: RequestId,
    pub request: Request,
}

/// Every operation of PROTOCOL.md section 3, with valid arguments.
#[derive(Debug)]
pub enum Request {
    SaveRoom {
        room: Box<PreparedRoom>,
        expected_revision: Option<Revision>,
    },
    GetRoom {
        room_name: RoomLookup,
    },
    HasRoom {
        room_name: RoomLookup,
    },
    DeleteRoom {
        room_name: RoomLookup,
        expected_revision: Option<Revision>,
    },
    ListRooms(ListQuery),
    AddRating {
        room_name: RoomLookup,
        media_id: String,
        user_name: String,
        rating: Rating,
        /// Epoch milliseconds; `None` means "now", resolved by the caller.
        timestamp: Option<u64>,
    },
    SetProgress {
        room_name: RoomLookup,
        user_name: String,
        progress: u64,
    },
    VerifyPassword {
        room_name: RoomLookup,
        password: String,
    },
    DeleteRooms {
        created_before: EpochMillis,
    },
    Ping,
    Stats,
    Flush,
    /// Not in PROTOCOL.md's table: brings every room file up to date (README "Backups and
    /// hand edits"); other backends answer as for `flush`.
    Fold,
    Watch {
        /// Only names a room can have: no event is ever about another.
        room_names: Option<Vec<RoomName>>,
    },
}

/// The `roomName` of any operation but `saveRoom`: any string (PROTOCOL.md section 3, "Names
/// in lookups"). MovieMatch looks up names its users type, and its own storage answers `null`
/// or `false` for a name it could never store, so the daemon answers such a name as it answers
/// a missing room instead of refusing the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomLookup {
    /// A name a room can have (section 4); the room may or may not exist.
    Storable(RoomName),
    /// Empty, over 255 bytes, or with a control character (half a surrogate pair is masked
    /// as one): no room has it, or ever will.
    Unstorable(String),
}

impl RoomLookup {
    fn new(name: String) -> RoomLookup {
        match RoomName::new(&name) {
            Ok(name) => RoomLookup::Storable(name),
            Err(_) => RoomLookup::Unstorable(name),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RoomLookup::Storable(name) => name.as_str(),
            RoomLookup::Unstorable(name) => name,
        }
    }

    /// The name as a room's, unless no room can have it.
    pub fn storable(&self) -> Option<&RoomName> {
        match self {
            RoomLookup::Storable(name) => Some(name),
            RoomLookup::Unstorable(_) => None,
        }
    }
}

impl Request {
    /// The room a lookup is about (`None` for `saveRoom` and the operations on no one room).
    pub fn lookup(&self) -> Option<&RoomLookup> {
        match self {
            Request::GetRoom { room_name }
            | Request::HasRoom { room_name }
            | Request::DeleteRoom { room_name, .. }
            | Request::AddRating { room_name, .. }
            | Request::SetProgress { room_name, .. }
            | Request::VerifyPassword { room_name, .. } => Some(room_name),
            _ => None,
        }
    }

    /// True for operations that change rooms and so go through the storage actor.
    pub fn is_mutation(&self) -> bool {
        matches!(
            self,
            Request::SaveRoom { .. }
                | Request::DeleteRoom { .. }
                | Request::AddRating { .. }
                | Request::SetProgress { .. }
                | Request::DeleteRooms { .. }
        )
    }
}

/// The filters and paging of `listRooms`; every field is optional and they combine.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub creator_plex_user_id: Option<String>,
    pub creator_plex_username: Option<String>,
    pub created_before: Option<EpochMillis>,
    pub created_after: Option<EpochMillis>,
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub summary: bool,
}

/// A request line that could not be decoded: the reply to send, with whatever `id` was found.
#[derive(Debug)]
pub struct Rejected {
    pub id: RequestId,
    pub error: ErrorReply,
}

/// The arguments besides `id` and `room`, in key order, `null` ones left out. A few at most,
/// so a list: no hashing, and the first unknown one reported is the first in key order.
#[derive(Default)]
struct Fields<'a> {
    values: Vec<(Cow<'a, str>, Value)>,
    /// The arguments that held a lone surrogate escape, masked in `values` ([`surrogate`]).
    unpaired: Vec<Cow<'a, str>>,
}

impl Fields<'_> {
    fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self.values.iter().position(|(k, _)| k == key)?;
        Some(self.values.remove(at).1)
    }

    fn first_key(&self) -> Option<&str> {
        self.values.first().map(|(key, _)| &**key)
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
    let room = object
        .remove(&Key("room".into()))
        .filter(|raw| *raw != "null")
        .map(|raw| RoomArgument { raw, prepared });
    let mut fields = Fields::default();
    for (Key(key), raw) in object {
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Null) => {}
            Ok(value) => fields.values.push((key, value)),
            // Valid JSON serde_json cannot decode: a string with half a surrogate pair.
            Err(e) => match surrogate::mask(raw).map(|m| serde_json::from_str::<Value>(&m)) {
                Some(Ok(value)) => {
                    fields.unpaired.push(key.clone());
                    fields.values.push((key, value));
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
    match decode_fields(fields, room) {
        Ok(request) => Ok(Envelope { id, request }),
        Err(error) => Err(reject(error, id)),
    }
}

/// The members of a request object, each value as written, in key order.
type Members<'a> = BTreeMap<Key<'a>, &'a str>;

/// The `room` argument as written, and prepared already when the line's scan did it.
struct RoomArgument<'a> {
    raw: &'a str,
    prepared: Option<PreparedRoom>,
}

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

fn decode_fields(mut f: Fields, room: Option<RoomArgument>) -> Result<Request, ErrorReply> {
    let unpaired = std::mem::take(&mut f.unpaired);
    let request = decode_op(f, room)?;
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

fn decode_op(mut f: Fields, room: Option<RoomArgument>) -> Result<Request, ErrorReply> {
    let op = match f.remove("op") {
        Some(Value::String(op)) => op,
        None => return Err(ErrorReply::bad_request("op: required")),
        Some(_) => return Err(ErrorReply::bad_request("op: expected a string")),
    };
    let has_room = room.is_some();
    let request = match op.as_str() {
        "saveRoom" => {
            let room = match room {
                Some(RoomArgument {
                    prepared: Some(prepared),
                    ..
                }) => prepared,
                Some(RoomArgument { raw, .. }) if raw.starts_with('{') => {
                    PreparedRoom::from_json_str(raw)
                        .map_err(|e| ErrorReply::new(ErrorCode::InvalidRoom, e.to_string()))?
                }
                None => return Err(ErrorReply::bad_request("room: required")),
                Some(_) => return Err(ErrorReply::bad_request("room: expected an object")),
            };
            Request::SaveRoom {
                room: Box::new(room),
                expected_revision: opt_u64(&mut f, "expectedRevision")?,
            }
        }
        "getRoom" => Request::GetRoom {
            room_name: room_name(&mut f)?,
        },
        "hasRoom" => Request::HasRoom {
            room_name: room_name(&mut f)?,
        },
        "deleteRoom" => Request::DeleteRoom {
            room_name: room_name(&mut f)?,
            expected_revision: opt_u64(&mut f, "expectedRevision")?,
        },
        "listRooms" => Request::ListRooms(list_query(&mut f)?),
        "addRating" => Request::AddRating {
            room_name: room_name(&mut f)?,
            media_id: string(&mut f, "mediaId")?,
            user_name: string(&mut f, "userName")?,
            rating: {
                let rating = string(&mut f, "rating")?;
                Rating::parse(&rating).ok_or_else(|| {
                    ErrorReply::bad_request("rating: expected \"like\" or \"dislike\"")
                })?
            },
            timestamp: opt_u64(&mut f, "timestamp")?,
        },
        "setProgress" => Request::SetProgress {
            room_name: room_name(&mut f)?,
            user_name: string(&mut f, "userName")?,
            progress: opt_u64(&mut f, "progress")?
                .ok_or_else(|| ErrorReply::bad_request("progress: required"))?,
        },
        "verifyPassword" => Request::VerifyPassword {
            room_name: room_name(&mut f)?,
            password: string(&mut f, "password")?,
        },
        "deleteRooms" => Request::DeleteRooms {
            created_before: opt_timestamp(&mut f, "createdBefore")?
                .ok_or_else(|| ErrorReply::bad_request("createdBefore: required"))?,
        },
        "ping" => Request::Ping,
        "stats" => Request::Stats,
        "flush" => Request::Flush,
        "fold" => Request::Fold,
        "watch" => Request::Watch {
            room_names: match f.remove("roomNames") {
                None => None,
                // A name no room can have is accepted and dropped: it would match no event.
                // All of them dropped leaves an empty list, which watches nothing.
                Some(Value::Array(names)) => Some(
                    names
                        .into_iter()
                        .enumerate()
                        .map(|(i, name)| lookup(name, &format!("roomNames[{i}]")))
                        .filter_map(|lookup| match lookup {
                            Ok(RoomLookup::Storable(name)) => Some(Ok(name)),
                            Ok(RoomLookup::Unstorable(_)) => None,
                            Err(e) => Some(Err(e)),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Some(_) => {
                    return Err(ErrorReply::bad_request(
                        "roomNames: expected an array of room names",
                    ))
                }
            },
        },
        other => {
            let quoted = room::quoted(other);
            return Err(ErrorReply::bad_request(format!(
                "op: unknown operation {quoted}"
            )));
        }
    };
    if has_room && op != "saveRoom" {
        return Err(ErrorReply::bad_request(format!(
            "\"room\": unknown argument for {op}"
        )));
    }
    if let Some(unknown) = f.first_key() {
        let quoted = room::quoted(unknown);
        return Err(ErrorReply::bad_request(format!(
            "{quoted}: unknown argument for {op}"
        )));
    }
    Ok(request)
}

fn string(f: &mut Fields, key: &str) -> Result<String, ErrorReply> {
    match f.remove(key) {
        Some(Value::String(s)) => Ok(s),
        None => Err(ErrorReply::bad_request(format!("{key}: required"))),
        Some(_) => Err(ErrorReply::bad_request(format!("{key}: expected a string"))),
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

fn room_name(f: &mut Fields) -> Result<RoomLookup, ErrorReply> {
    match f.remove("roomName") {
        Some(value) => lookup(value, "roomName"),
        None => Err(ErrorReply::bad_request("roomName: required")),
    }
}

fn opt_u64(f: &mut Fields, key: &str) -> Result<Option<u64>, ErrorReply> {
    match f.remove(key) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| ErrorReply::bad_request(format!("{key}: expected an integer >= 0"))),
    }
}

fn opt_timestamp(f: &mut Fields, key: &str) -> Result<Option<EpochMillis>, ErrorReply> {
    match f.remove(key) {
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

fn list_query(f: &mut Fields) -> Result<ListQuery, ErrorReply> {
    let creator_plex_user_id = match f.remove("creatorPlexUserId") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(_) => {
            return Err(ErrorReply::bad_request(
                "creatorPlexUserId: expected a string or an integer",
            ))
        }
    };
    let creator_plex_username = match f.remove("creatorPlexUsername") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ErrorReply::bad_request(
                "creatorPlexUsername: expected a string",
            ))
        }
    };
    let limit = match opt_u64(f, "limit") {
        Ok(Some(0)) | Err(_) => {
            return Err(ErrorReply::bad_request(
                "limit: expected a positive integer",
            ))
        }
        Ok(limit) => limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let summary = match f.remove("summary") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(ErrorReply::bad_request("summary: expected true or false")),
    };
    let after = match f.remove("after") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(ErrorReply::bad_request("after: expected a string")),
    };
    Ok(ListQuery {
        creator_plex_user_id,
        creator_plex_username,
        created_before: opt_timestamp(f, "createdBefore")?,
        created_after: opt_timestamp(f, "createdAfter")?,
        after,
        limit,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(line: &str) -> Rejected {
        decode(line.as_bytes()).expect_err("line should be rejected")
    }

    #[test]
    fn decodes_an_operation_with_its_id() {
        let env = decode(br#"{"id":7,"op":"getRoom","roomName":"movie-night"}"#).unwrap();
        assert_eq!(env.id.unwrap().get(), "7");
        assert!(
            matches!(env.request, Request::GetRoom { room_name } if room_name.as_str() == "movie-night")
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
                Ok(Request::HasRoom { room_name }) => room_name,
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
        assert!(matches!(
            watched.request,
            Request::Watch { room_names: Some(names) } if names == [RoomName::new("a").unwrap()]
        ));
    }

    #[test]
    fn null_means_absent() {
        let env = decode(br#"{"op":"deleteRoom","roomName":"a","expectedRevision":null}"#).unwrap();
        assert!(matches!(
            env.request,
            Request::DeleteRoom {
                expected_revision: None,
                ..
            }
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
