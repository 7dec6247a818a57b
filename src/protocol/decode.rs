//! Request decoding: one line of JSON into one typed [`Request`] (PROTOCOL.md sections 2-4).
//!
//! This module owns the envelope (`id`, `op`, the members as written) and the checks every
//! argument shares ([`Args`], in `request/args.rs`); each operation takes its own arguments in its home in
//! [`super::request`]. Every argument is checked here, with a message that names it, so that
//! everything past this module works with valid values only. Unknown arguments are refused;
//! `null` means absent.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::request::args::{Args, RoomArgument};
use super::request::{Request, RoomLookup};
use super::{ErrorCode, ErrorReply, RequestId};
use crate::room;
use crate::room::prepare::{self, PreparedRoom};
use crate::room::scan::Scanner;
use crate::room::surrogate;

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
    let id: RequestId =
        take_member(&mut object, "id").and_then(|raw| RawValue::from_string(raw.to_owned()).ok());
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
        room: take_member(&mut object, "room")
            .filter(|raw| *raw != "null")
            .map(|raw| RoomArgument { raw, prepared }),
        ..Args::default()
    };
    for (Key(key), raw) in object {
        match value_of(raw) {
            Ok(Value::Null) => {}
            Ok(value) => args.values.push((key, value)),
            // Valid JSON serde_json cannot decode: a string with half a surrogate pair.
            Err(e) => match surrogate::mask(raw).map(|m| serde_json::from_str::<Value>(&m)) {
                Some(Ok(value)) => {
                    args.unpaired.push(key.clone());
                    args.values.push((key, value));
                }
                // The line is valid JSON (scanned or parsed already), so what serde_json cannot
                // hold is a number past a float's range or nesting past its depth: a value no
                // argument takes, not bad JSON.
                _ => {
                    let reason = room::json_reason(&e);
                    return Err(reject(
                        ErrorReply::bad_request(format!(
                            "{}: no argument takes such a value ({reason})",
                            room::quoted(&key)
                        )),
                        id,
                    ));
                }
            },
        }
    }
    match decode_args(args) {
        Ok(request) => Ok(Envelope { id, request }),
        Err(error) => Err(reject(error, id)),
    }
}

/// A member's value from its text, which is valid JSON (scanned or parsed already). The common
/// small values, a string without escapes and an integer that fits a `u64`, are read here as
/// serde_json would read them; anything else is left to serde_json.
fn value_of(raw: &str) -> Result<Value, serde_json::Error> {
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
            return Ok(Value::String(inner.to_owned()));
        }
    } else if raw.len() <= 19 && raw.bytes().all(|b| b.is_ascii_digit()) {
        // At most 19 digits always fit a u64; JSON allows no leading zero except "0" itself,
        // and the text is valid JSON.
        if let Ok(n) = raw.parse::<u64>() {
            return Ok(Value::from(n));
        }
    }
    serde_json::from_str::<Value>(raw)
}

/// The members of a request object, each value as written, in key order, each key once. A
/// request has a handful, so a sorted list: no tree to build and take apart per request.
type Members<'a> = Vec<(Key<'a>, &'a str)>;

/// Takes the member `key` out of `members`.
fn take_member<'a>(members: &mut Members<'a>, key: &str) -> Option<&'a str> {
    let at = members.iter().position(|(Key(k), _)| k == key)?;
    Some(members.remove(at).1)
}

/// The fast path: one scan of the line finds every member and checks a `room` object on the
/// way. `None` sends the line to [`parse_line`]: any error, and valid but unusual lines
/// (escaped or repeated keys, a room the full validator has to judge).
fn scan_line(line: &str) -> Option<(Members<'_>, Option<PreparedRoom>)> {
    let mut scanner = Scanner::new(line);
    let mut members = Members::with_capacity(8);
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
        members.push((Key(Cow::Borrowed(key)), value));
        Some(())
    })?;
    scanner.at_end().then_some(())?;
    // A repeated key goes to serde_json, which keeps the last.
    members.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    let repeated = members.windows(2).any(|pair| pair[0].0 == pair[1].0);
    (!repeated).then_some((members, room))
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
            if let Some(rejected) = unpaired_key(line) {
                return Err(rejected);
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

/// A request object with a lone surrogate escape in one of its own keys (`"x\ud800"`): valid
/// JSON that serde_json cannot read as an object. No argument has such a name, so it is refused
/// as one, with the `id` echoed.
fn unpaired_key(line: &[u8]) -> Option<Rejected> {
    let line = std::str::from_utf8(line).ok()?;
    let masked = surrogate::mask(line)?;
    let object = serde_json::from_str::<BTreeMap<Key, &RawValue>>(&masked).ok()?;
    // The `id` as sent: masking keeps every escape's length, so it sits at the same place in
    // the line as in the masked text (where a half pair of its own reads as `\u0000`).
    let id = object.get(&Key("id".into())).and_then(|raw| {
        let at = raw.get().as_ptr() as usize - masked.as_ptr() as usize;
        let sent = line.get(at..at + raw.get().len())?;
        RawValue::from_string(sent.to_owned()).ok()
    });
    let error = ErrorReply::bad_request(
        "a key of the request holds a lone UTF-16 surrogate escape (half a pair, such as \\ud800), \
         which no argument has; send well-formed text",
    );
    Some(Rejected { id, error })
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
    fn small_values_are_read_as_serde_json_reads_them() {
        let raws = [
            r#""""#,
            r#""movie-night""#,
            "\"é 🎬 \u{7f}\"",
            r#""a\"b""#,
            r#""\u0041""#,
            r#""\ud800""#,
            "0",
            "7",
            "1234567890123456789",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "-0",
            "1.5",
            "1e3",
            "true",
            "null",
            r#"[1,"a"]"#,
            r#"{"a":1}"#,
        ];
        for raw in raws {
            let ours = value_of(raw).map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<Value>(raw).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{raw}");
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

    /// Outside probe s9: valid JSON that serde_json cannot hold was answered `bad_json`, and a
    /// lone surrogate in a key lost the `id` too.
    #[test]
    fn valid_json_no_argument_takes_is_a_bad_request_with_the_id() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for line in [
            r#"{"id":5,"op":"setProgress","roomName":"r","userName":"u","progress":1e400}"#
                .to_owned(),
            r#"{"id":5,"op":"ping","x":-1e400}"#.to_owned(),
            format!(r#"{{"id":5,"op":"ping","x":{deep}}}"#),
            r#"{"id":5,"op":"ping","x\ud800":1}"#.to_owned(),
            r#"{"id":5,"op":"hasRoom","roomName":"a","\udc00":null}"#.to_owned(),
        ] {
            let r = rejected(&line);
            assert_eq!(r.error.code, ErrorCode::BadRequest, "{line}: {r:?}");
            assert_eq!(r.id.map(|id| id.get().to_owned()).as_deref(), Some("5"));
            assert!(
                !r.error.message.contains("line 1 column"),
                "{line}: a position inside the value is not one in the line: {}",
                r.error.message
            );
        }
        // An `id` with a half pair of its own is still echoed as sent (outside probe s9b).
        let r = rejected(r#"{"id":"a\ud800b","op":"ping","x\ud800":1}"#);
        assert_eq!(r.id.unwrap().get(), r#""a\ud800b""#);
        let r = rejected(r#"{"id":5,"op":"ping","x":1e400}"#);
        assert_eq!(
            r.error.message,
            "\"x\": no argument takes such a value (number out of range)"
        );
        // Still bad JSON: a lone surrogate does not make a broken line valid.
        assert_eq!(
            rejected(r#"{"id":5,"op":"ping","x\ud800":}"#).error.code,
            ErrorCode::BadJson
        );
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
