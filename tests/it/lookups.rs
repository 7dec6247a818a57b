//! PROTOCOL.md section 3, "Names in lookups", over a real socket on every backend: each operation
//! but `saveRoom` takes any string as its `roomName`, and a name no room can have (empty, over 255
//! bytes, a control character) is answered exactly as a missing room is. MovieMatch looks up the
//! names its users type, and its own storage answers `null`/`false` for those.

use crate::harness::*;
use moviematch_storaged::client::{Client, ClientError};
use moviematch_storaged::protocol::request::{self, RoomLookup};
use moviematch_storaged::protocol::response::{Deleted, Exists, NewRevision, Pong, Rated, Valid};
use moviematch_storaged::room::Rating;
use serde_json::value::RawValue;
use serde_json::{json, Value};

for_each_backend!(
    unstorable_names_are_answered_as_missing_rooms,
    unstorable_names_change_nothing,
    lookups_still_check_their_other_arguments,
    half_surrogate_pairs_are_unstorable_names,
    error_messages_quote_at_most_256_bytes_of_a_name,
    the_typed_client_reads_every_answer,
);

/// One name of each kind section 4 refuses.
fn unstorable_names() -> Vec<String> {
    vec![
        String::new(),
        "n".repeat(256),
        "é".repeat(128),
        "x".repeat(20_000),
        "a\nb".to_owned(),
        "\u{0}".to_owned(),
        "tab\there".to_owned(),
        "\u{1f}".to_owned(),
        "x\u{7f}".to_owned(),
        // A stored room's name with a control character added is another, unstorable, name.
        "r\u{0}".to_owned(),
    ]
}

/// Every request that takes a `roomName`, for `name`; what a missing room gets is in
/// [`missing_room_answers`], in the same order.
fn lookups(name: &str) -> Vec<Value> {
    vec![
        json!({"op": "getRoom", "roomName": name}),
        json!({"op": "hasRoom", "roomName": name}),
        json!({"op": "deleteRoom", "roomName": name}),
        json!({"op": "deleteRoom", "roomName": name, "expectedRevision": 0}),
        json!({"op": "deleteRoom", "roomName": name, "expectedRevision": 2}),
        json!({"op": "addRating", "roomName": name, "mediaId": "m", "userName": "u",
               "rating": "like"}),
        json!({"op": "addRating", "roomName": name, "mediaId": "m", "userName": "u",
               "rating": "dislike", "timestamp": 5}),
        json!({"op": "setProgress", "roomName": name, "userName": "u", "progress": 3}),
        json!({"op": "verifyPassword", "roomName": name, "password": "secret"}),
    ]
}

/// `text` as an error message quotes it: JSON-quoted, cut after 256 bytes (at a character's
/// end) with its length added.
fn quoted(text: &str) -> String {
    if text.len() <= 256 {
        return json!(text).to_string();
    }
    let end = (0..=256)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}... ({} bytes)", json!(text[..end]), text.len())
}

/// The protocol's answer for a missing room `name`, request by request of [`lookups`].
fn missing_room_answers(name: &str) -> Vec<Value> {
    let not_found = json!({"ok": false, "error": {"code": "not_found",
        "message": format!("room {} does not exist", quoted(name))}});
    vec![
        json!({"ok": true, "room": null}),
        json!({"ok": true, "exists": false}),
        json!({"ok": true, "deleted": false}),
        json!({"ok": true, "deleted": false}),
        json!({"ok": false, "error": {"code": "conflict", "revision": 0,
            "message": "expectedRevision does not match: the room is at revision 0"}}),
        not_found.clone(),
        not_found.clone(),
        not_found.clone(),
        not_found,
    ]
}

fn unstorable_names_are_answered_as_missing_rooms(b: Backend) {
    let d = Daemon::start(b);
    let mut c = d.connect();
    c.save(&room("r"));
    // The expectations hold for a missing room with a valid name: that is what is matched.
    for (request, want) in lookups("missing")
        .into_iter()
        .zip(missing_room_answers("missing"))
    {
        assert_eq!(c.call(request.clone()), want, "{request}");
    }
    for name in unstorable_names() {
        let answers = lookups(&name).into_iter().zip(missing_room_answers(&name));
        for (i, (request, want)) in answers.enumerate() {
            let request = with(request, json!({"id": i}));
            let want = with(want, json!({"id": i}));
            assert_eq!(c.call(request.clone()), want, "{request}");
        }
    }
    // Pipelined, they keep their place among the answers.
    let name = "";
    let requests = lookups(name);
    for request in &requests {
        c.send(request);
    }
    for (request, want) in requests.iter().zip(missing_room_answers(name)) {
        assert_eq!(c.read_json(), want, "{request}");
    }
}

fn unstorable_names_change_nothing(b: Backend) {
    let mut d = Daemon::start(b);
    let mut c = d.connect();
    assert_eq!(c.save(&room("r")), 1);
    for name in unstorable_names() {
        for request in lookups(&name) {
            c.call(request);
        }
    }
    assert_eq!(c.get("r"), Some((room("r"), 1)));
    assert_eq!(c.names(json!({})), ["r"]);
    assert_eq!(c.ok(json!({"op": "stats"}))["rooms"], 1);
    // Saving one is still refused: only saveRoom checks the name.
    for name in unstorable_names() {
        c.err(
            json!({"op": "saveRoom", "room": room(&name)}),
            "invalid_room",
        );
    }
    if b == Backend::File {
        // After a clean stop the room files hold every room (PROTOCOL.md section 5).
        d.stop();
        let mut files: Vec<String> = std::fs::read_dir(d.storage())
            .expect("read the storage directory")
            .map(|entry| entry.expect("a directory entry").file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        files.sort();
        assert_eq!(files, ["r.json"]);
    }
}

fn lookups_still_check_their_other_arguments(b: Backend) {
    let d = Daemon::start(b);
    let mut c = d.connect();
    let bad = json!([
        {"op": "getRoom", "roomName": 5},
        {"op": "getRoom", "roomName": ["r"]},
        {"op": "hasRoom", "roomName": {"name": ""}},
        {"op": "deleteRoom", "roomName": false},
        {"op": "deleteRoom", "roomName": "", "expectedRevision": -1},
        {"op": "addRating", "roomName": "", "mediaId": "m", "userName": "u", "rating": "meh"},
        {"op": "addRating", "roomName": "", "userName": "u", "rating": "like"},
        {"op": "setProgress", "roomName": "", "userName": "u", "progress": 1.5},
        {"op": "verifyPassword", "roomName": ""},
        {"op": "getRoom", "roomName": "", "password": "p"},
        {"op": "watch", "roomNames": ["", 1]},
    ]);
    for request in bad.as_array().expect("an array") {
        c.err(request.clone(), "bad_request");
    }
}

/// `request` as one line with the string `"HALF"` written as `escaped` (a JSON string body):
/// serde_json can write no lone surrogate escape, `JSON.stringify` writes them.
fn line_with(request: &Value, escaped: &str) -> Vec<u8> {
    let line = request
        .to_string()
        .replace("\"HALF\"", &format!("\"{escaped}\""));
    assert_ne!(line, request.to_string(), "{request} has no \"HALF\"");
    format!("{line}\n").into_bytes()
}

fn half_surrogate_pairs_are_unstorable_names(b: Backend) {
    let d = Daemon::start(b);
    let mut c = d.connect();
    c.save(&room("r"));
    // Each lone half is masked as U+0000, which the not_found message then shows.
    for (escaped, masked) in [
        (r"\ud800", "\u{0}"),
        (r"a\udc00b", "a\u{0}b"),
        (r"\udbff\ud800\udc00", "\u{0}\u{10000}"),
    ] {
        let answers = lookups("HALF")
            .into_iter()
            .zip(missing_room_answers(masked));
        for (request, want) in answers {
            c.send_raw(&line_with(&request, escaped));
            assert_eq!(c.read_json(), want, "{request} with {escaped}");
        }
        // Other strings with a half do not matter when the room name is answered as missing.
        let rate = json!({"op": "addRating", "roomName": "HALF", "mediaId": "m\u{0}",
                          "userName": "u", "rating": "like"});
        let line = String::from_utf8(line_with(&rate, escaped)).expect("UTF-8");
        c.send_raw(line.replace(r"m\u0000", escaped).as_bytes());
        assert_err(&c.read_json(), "not_found");
        let mut watcher = d.connect();
        let watch = json!({"op": "watch", "roomNames": ["HALF"]});
        watcher.send_raw(&line_with(&watch, escaped));
        assert_eq!(watcher.read_json(), json!({"ok": true}));
        let mut c2 = d.connect();
        c2.send_raw(&line_with(
            &json!({"op": "saveRoom", "room": room("HALF")}),
            escaped,
        ));
        let error = assert_err(&c2.read_json(), "invalid_room").clone();
        let message = error["message"].as_str().expect("a message");
        assert!(message.starts_with("roomName: "), "{message}");
        assert!(message.contains("surrogate"), "{message}");
    }
    // On a room that exists, a half in another string can be neither stored nor matched.
    let mut c = d.connect();
    for (request, field) in [
        (
            json!({"op": "addRating", "roomName": "r", "mediaId": "HALF", "userName": "u",
                "rating": "like"}),
            "mediaId",
        ),
        (
            json!({"op": "setProgress", "roomName": "r", "userName": "HALF", "progress": 1}),
            "userName",
        ),
        (
            json!({"op": "verifyPassword", "roomName": "r", "password": "HALF"}),
            "password",
        ),
    ] {
        c.send_raw(&line_with(&request, r"\udfff"));
        let error = assert_err(&c.read_json(), "bad_request").clone();
        let message = error["message"].as_str().expect("a message");
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    assert_eq!(c.get("r"), Some((room("r"), 1)));
}

fn error_messages_quote_at_most_256_bytes_of_a_name(b: Backend) {
    let d = Daemon::start(b);
    let mut c = d.connect();
    let huge = format!("é{}", "x".repeat(8 << 20));
    let cut = format!("\"é{}\"... ({} bytes)", "x".repeat(254), huge.len());
    for (request, code, message) in [
        (
            json!({"op": "getRoom", "roomName": huge}),
            "",
            String::new(),
        ),
        (
            json!({"op": "hasRoom", "roomName": huge}),
            "",
            String::new(),
        ),
        (
            json!({"op": "verifyPassword", "roomName": huge, "password": "p"}),
            "not_found",
            format!("room {cut} does not exist"),
        ),
        (
            json!({"op": "setProgress", "roomName": huge, "userName": "u", "progress": 1}),
            "not_found",
            format!("room {cut} does not exist"),
        ),
        (
            json!({"op": huge}),
            "bad_request",
            format!("op: unknown operation {cut}"),
        ),
        (
            json!({"op": "ping", huge.clone(): 1}),
            "bad_request",
            format!("{cut}: unknown argument for ping"),
        ),
        (
            json!({"op": "saveRoom", "room": with(room("r"), json!({"ratings": {huge.clone(): 1}}))}),
            "invalid_room",
            format!("ratings[{cut}]: expected an array of [userName, rating, timestamp]"),
        ),
    ] {
        let answer = c.call(request);
        let line = answer.to_string();
        assert!(
            line.len() < 1024,
            "{} bytes: {}...",
            line.len(),
            &line[..300]
        );
        if !code.is_empty() {
            assert_eq!(assert_err(&answer, code)["message"], json!(message));
        }
    }
}

/// The library client sends the protocol's request types and reads each answer as its reply
/// type, from every backend; lookups of names no room can have read as missing rooms.
fn the_typed_client_reads_every_answer(b: Backend) {
    let d = Daemon::start(b);
    let mut c = Client::connect(d.socket()).expect("connect");
    let lookup = RoomLookup::new;
    assert_eq!(
        c.request(&request::Ping).expect("ping"),
        Pong { protocol: 1 }
    );
    for (name, revision) in [("r", 1), ("s", 1)] {
        let text = room(name).to_string();
        let room: &RawValue = serde_json::from_str(&text).expect("room JSON");
        let save = request::SaveRoom {
            room,
            expected_revision: Some(0),
        };
        assert_eq!(c.request(&save).expect("save"), NewRevision { revision });
    }
    let found = c
        .request(&request::GetRoom {
            room_name: lookup("r"),
        })
        .expect("get");
    let text = found.room.expect("room r").get().to_owned();
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("JSON"),
        room("r")
    );
    assert_eq!(found.revision, Some(1));
    for name in ["missing", ""] {
        let found = c
            .request(&request::GetRoom {
                room_name: lookup(name),
            })
            .expect("get");
        assert!(found.room.is_none() && found.revision.is_none(), "{name:?}");
        let has = request::HasRoom {
            room_name: lookup(name),
        };
        assert_eq!(c.request(&has).expect("has"), Exists { exists: false });
    }
    let rate = request::AddRating {
        room_name: lookup("r"),
        media_id: "plex://movie/1".to_owned(),
        user_name: "jane".to_owned(),
        rating: Rating::Like,
        timestamp: None,
    };
    let rated = |revision, added| Rated { revision, added };
    assert_eq!(c.request(&rate).expect("rate"), rated(2, true));
    assert_eq!(c.request(&rate).expect("rate again"), rated(2, false));
    let progress = request::SetProgress {
        room_name: lookup("r"),
        user_name: "jane".to_owned(),
        progress: 4,
    };
    assert_eq!(
        c.request(&progress).expect("progress"),
        NewRevision { revision: 3 }
    );
    for (password, valid) in [("secret", true), ("guess", false)] {
        let verify = request::VerifyPassword {
            room_name: lookup("r"),
            password: password.to_owned(),
        };
        assert_eq!(c.request(&verify).expect("verify"), Valid { valid });
    }
    let verify = request::VerifyPassword {
        room_name: lookup("a\nb"),
        password: "secret".to_owned(),
    };
    let error = c.request(&verify).expect_err("no such room");
    assert!(
        matches!(&error, ClientError::Remote { code, .. } if code == "not_found"),
        "{error:?}"
    );
    let page = c
        .request(&request::ListRooms::<&str> {
            limit: Some(1),
            summary: true,
            created_after: Some("2025-01-01T00:00:00Z"),
            ..request::ListRooms::default()
        })
        .expect("list");
    assert_eq!(page.next.as_deref(), Some("r"));
    let summary: Value = serde_json::from_str(page.rooms[0].get()).expect("summary JSON");
    assert_eq!(summary["ratingCount"], 2);
    let stats = c.request(&request::Stats).expect("stats");
    assert_eq!(stats["backend"], b.name());
    assert_eq!(stats["rooms"], 2);
    c.request(&request::Flush).expect("flush");
    c.request(&request::Fold).expect("fold");
    let delete = request::DeleteRoom {
        room_name: lookup("s"),
        expected_revision: Some(1),
    };
    assert_eq!(
        c.request(&delete).expect("delete"),
        Deleted { deleted: true }
    );
    let deleted = c
        .request(&request::DeleteRooms {
            created_before: "2100-01-01T00:00:00Z",
        })
        .expect("deleteRooms");
    assert_eq!(deleted.deleted, 1);
    let watch = c.watch(Some(&["r".to_owned()]));
    assert!(watch.is_ok(), "{watch:?}");
}
