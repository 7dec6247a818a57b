//! `protocol::decode::decode` on arbitrary bytes: never panics, and its answer is consistent
//! with the line (PROTOCOL.md sections 1-3).
//!
//! - Accepted: the line is a JSON object with a string `op`; the echoed `id` is a string or a
//!   number, byte for byte as sent.
//! - Rejected: the error has a message; `bad_json` only when the line is not JSON (or one argument
//!   is not); an echoed `id` is itself valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moviematch_storaged::protocol::decode::decode;
use moviematch_storaged::protocol::request::Request;
use moviematch_storaged::protocol::ErrorCode;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(data).ok();
    match decode(data) {
        Ok(envelope) => {
            // (A line with a number out of f64 range is not a `Value`, but may be a request.)
            let Some(object) = parsed else {
                return;
            };
            assert!(matches!(object.get("op"), Some(Value::String(_))));
            if let Some(id) = &envelope.id {
                let first = id.get().as_bytes().first().copied();
                assert!(
                    matches!(first, Some(b'"' | b'-' | b'0'..=b'9')),
                    "accepted id {}",
                    id.get()
                );
                // Syntax only: an id such as 1e9999 is echoed as sent, out of f64 range or not.
                let echoed: &RawValue = serde_json::from_str(id.get()).expect("the id is JSON");
                assert_eq!(echoed.get(), id.get());
            }
            // Only the five mutating operations go through the store.
            let op = object["op"].as_str().unwrap_or_default();
            let mutating = matches!(
                op,
                "saveRoom" | "deleteRoom" | "addRating" | "setProgress" | "deleteRooms"
            );
            assert_eq!(envelope.request.is_mutation(), mutating, "op {op}");
            if let Request::SaveRoom(save) = &envelope.request {
                assert_eq!(
                    object["room"]["roomName"].as_str(),
                    Some(save.room.name.as_str())
                );
            }
        }
        Err(rejected) => {
            assert!(!rejected.error.message.is_empty());
            if let Some(id) = &rejected.id {
                serde_json::from_str::<&RawValue>(id.get()).expect("an echoed id is JSON");
            }
            if parsed.is_some() && rejected.error.code == ErrorCode::BadJson {
                // A JSON object is only bad_json if one of its members fails to re-parse,
                // which cannot happen for a line serde_json already accepted.
                panic!(
                    "bad_json for a valid JSON object: {}",
                    rejected.error.message
                );
            }
        }
    }
});
