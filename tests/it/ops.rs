//! PROTOCOL.md sections 2-4 over a real socket: every operation except `watch`, every error code
//! a client can provoke, revisions and the room rules; each test runs on `memory` and `file`.
//!
//! Most tests are scripts of `[request, expected response fields]` pairs, run in order.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

for_each_backend!(
    ping_answers_protocol_1,
    id_is_echoed_verbatim,
    id_of_wrong_type_is_bad_request_and_still_echoed,
    save_then_get_returns_the_room_exactly,
    save_replaces_the_whole_room,
    unknown_room_fields_are_kept,
    expected_revision_guards_save,
    delete_room_rules,
    add_rating_appends_once_per_user_and_media,
    add_rating_timestamp_defaults_to_now,
    add_rating_argument_errors_change_nothing,
    set_progress_rules,
    verify_password_rules,
    operations_needing_a_room_say_not_found,
    delete_rooms_by_creation_instant,
    stats_reports_the_daemon,
    flush_returns_ok_and_nothing_else,
    bad_json_is_answered,
    bad_request_cases,
    null_optional_arguments_mean_absent,
    invalid_room_names_the_field,
    room_name_rules,
    too_large_counts_bytes_without_terminator,
    list_rooms_sorted_by_byte_order,
    list_rooms_filters_by_creator,
    list_rooms_filters_by_creation_instant,
    list_rooms_after_and_limit_walk,
    list_rooms_limit_counts_only_matching_rooms,
    list_rooms_summary_has_exactly_the_summary_fields,
    list_rooms_argument_errors,
    mutation_is_visible_on_other_connections,
    concurrent_add_rating_loses_nothing,
    concurrent_expected_revision_saves_win_once_per_revision,
    ten_megabyte_room_round_trips,
);

fn start(b: Backend) -> (Daemon, Conn) {
    let d = Daemon::start(b);
    let c = d.connect();
    (d, c)
}

fn code(c: &str) -> Value {
    json!({"error": {"code": c}})
}

fn ping_answers_protocol_1(b: Backend) {
    let (_d, mut c) = start(b);
    let r = c.expect(json!({"op": "ping"}), json!({"ok": true, "protocol": 1}));
    assert!(r.get("id").is_none(), "no id sent, none expected: {r}");
}

fn id_is_echoed_verbatim(b: Backend) {
    let (_d, mut c) = start(b);
    let ids = json!([7, 0, -3, 12345678901234u64, 2.5, "abc", "", "7"]);
    for id in ids.as_array().unwrap() {
        c.expect(json!({"id": id, "op": "ping"}), json!({"id": id}));
        let err = json!({"id": id, "error": {"code": "bad_request"}});
        c.expect(json!({"id": id, "op": "noSuchOp"}), err);
    }
    let r = c.expect(json!({"op": "noSuchOp"}), code("bad_request"));
    assert!(r.get("id").is_none(), "{r}");
    // Verbatim: an integer beyond 64 bits must not come back rounded.
    c.send_raw(b"{\"id\":123456789012345678901234567890,\"op\":\"ping\"}\n");
    let line = c.read_line().unwrap();
    assert!(
        line.contains("123456789012345678901234567890"),
        "id not verbatim: {line}"
    );
}

fn id_of_wrong_type_is_bad_request_and_still_echoed(b: Backend) {
    let (_d, mut c) = start(b);
    for id in json!([true, false, [1], {"n": 1}]).as_array().unwrap() {
        let err = json!({"id": id, "error": {"code": "bad_request"}});
        c.expect(json!({"id": id, "op": "ping"}), err);
    }
    c.ping();
}

fn save_then_get_returns_the_room_exactly(b: Backend) {
    let (_d, mut c) = start(b);
    c.script(json!([
        [{"id": 1, "op": "saveRoom", "room": room("movie-night")}, {"id": 1, "revision": 1}],
        [{"id": 2, "op": "getRoom", "roomName": "movie-night"}, {"room": room("movie-night"), "revision": 1}],
        [{"op": "hasRoom", "roomName": "movie-night"}, {"exists": true}],
        [{"op": "hasRoom", "roomName": "Movie-night"}, {"exists": false}],
        [{"op": "hasRoom", "roomName": "nope"}, {"exists": false}],
    ]));
    let r = c.expect(
        json!({"op": "getRoom", "roomName": "nope"}),
        json!({"room": null}),
    );
    assert!(
        r.get("revision").is_none(),
        "revision is absent when room is null: {r}"
    );
}

fn save_replaces_the_whole_room(b: Backend) {
    let (_d, mut c) = start(b);
    assert_eq!(c.save(&room("r")), 1);
    assert_eq!(c.save(&bare_room("r")), 2);
    assert_eq!(
        c.get("r"),
        Some((bare_room("r"), 2)),
        "old fields must be gone"
    );
    assert_eq!(c.save(&room("r")), 3);
    assert_eq!(c.get("r"), Some((room("r"), 3)));
}

fn unknown_room_fields_are_kept(b: Backend) {
    let (_d, mut c) = start(b);
    let nested = json!({"a": [1, {"b": null}, true, -2, 2.5, u64::MAX, "é🎬"], "empty": {}});
    let mut r = with(
        room("future"),
        json!({"roomType": "movie", "nested": nested}),
    );
    r["ratings"]["plex://movie/5d77"] = json!([["ann", "dislike", 0]]);
    c.save(&r);
    assert_eq!(c.get("future").unwrap().0, r);
    c.script(json!([
        [{"op": "addRating", "roomName": "future", "mediaId": "m2", "userName": "bob",
          "rating": "like", "timestamp": 5}, {"revision": 2}],
        [{"op": "setProgress", "roomName": "future", "userName": "bob", "progress": 3},
         {"revision": 3}],
    ]));
    r["ratings"]["m2"] = json!([["bob", "like", 5]]);
    r["userProgress"]["bob"] = json!(3);
    assert_eq!(c.get("future"), Some((r.clone(), 3)));
    assert_eq!(
        c.list(json!({})).0,
        [r],
        "listRooms entries are rooms as getRoom has them"
    );
}

fn expected_revision_guards_save(b: Backend) {
    let (_d, mut c) = start(b);
    let save = |exp: u64| json!({"op": "saveRoom", "room": room("r"), "expectedRevision": exp});
    c.script(json!([
        [save(3), {"error": {"code": "conflict", "revision": 0}}],
        [{"op": "hasRoom", "roomName": "r"}, {"exists": false}],
        [save(0), {"revision": 1}],
        [save(0), {"error": {"code": "conflict", "revision": 1}}],
        [save(1), {"revision": 2}],
        [save(1), {"error": {"code": "conflict", "revision": 2}}],
        [{"op": "getRoom", "roomName": "r"}, {"revision": 2}],
        [{"op": "saveRoom", "room": room("r")}, {"revision": 3}],
    ]));
}

fn delete_room_rules(b: Backend) {
    let (_d, mut c) = start(b);
    let del = |exp: Value| json!({"op": "deleteRoom", "roomName": "r", "expectedRevision": exp});
    c.save(&room("r"));
    c.rate("r", "m", "u", "like");
    c.script(json!([
        [del(json!(1)), {"error": {"code": "conflict", "revision": 2}}],
        [{"op": "hasRoom", "roomName": "r"}, {"exists": true}],
        [del(json!(2)), {"deleted": true}],
        [{"op": "hasRoom", "roomName": "r"}, {"exists": false}],
        [del(json!(null)), {"deleted": false}],
        [del(json!(0)), {"deleted": false}],
        [del(json!(4)), {"error": {"code": "conflict", "revision": 0}}],
        [{"op": "saveRoom", "room": room("s")}, {"revision": 1}],
        [{"op": "deleteRoom", "roomName": "s"}, {"deleted": true}],
        [{"op": "saveRoom", "room": room("r")}, {"revision": 1}],
    ]));
}

fn add_rating_appends_once_per_user_and_media(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&bare_room("r"));
    let add = |m: &str, u: &str, rating: &str, ts: u64| {
        json!({"op": "addRating", "roomName": "r", "mediaId": m, "userName": u, "rating": rating,
               "timestamp": ts})
    };
    c.script(json!([
        [add("plex://movie/1", "ann", "like", 10), {"revision": 2, "added": true}],
        [add("plex://movie/1", "ann", "dislike", 11), {"revision": 2, "added": false}],
        [add("plex://movie/1", "bob", "dislike", 12), {"revision": 3, "added": true}],
        [add("plex://movie/2", "ann", "like", 13), {"revision": 4, "added": true}],
        [add("", "ann", "like", 0), {"revision": 5, "added": true}],
    ]));
    let want = with(
        bare_room("r"),
        json!({"ratings": {
            "plex://movie/1": [["ann", "like", 10], ["bob", "dislike", 12]],
            "plex://movie/2": [["ann", "like", 13]],
            "": [["ann", "like", 0]],
        }}),
    );
    assert_eq!(c.get("r"), Some((want, 5)));

    // Ratings that came with a saved room count too.
    c.save(&room("s"));
    assert_eq!(c.rate("s", "movie-123", "john_doe", "dislike"), (1, false));
    assert_eq!(c.rate("s", "movie-123", "jane", "like"), (2, true));
    let want = json!([
        ["john_doe", "like", 1729890000000u64],
        ["jane", "like", 1700000000000u64]
    ]);
    assert_eq!(c.get("s").unwrap().0["ratings"]["movie-123"], want);
}

fn add_rating_timestamp_defaults_to_now(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&bare_room("r"));
    let before = now_ms();
    c.script(json!([
        [{"op": "addRating", "roomName": "r", "mediaId": "m", "userName": "u", "rating": "like"},
         {"added": true}],
        [{"op": "addRating", "roomName": "r", "mediaId": "n", "userName": "u", "rating": "like",
          "timestamp": null}, {"added": true}],
    ]));
    let after = now_ms();
    let room = c.get("r").unwrap().0;
    for m in ["m", "n"] {
        let ts = room["ratings"][m][0][2]
            .as_u64()
            .expect("integer timestamp");
        assert!(
            before <= ts && ts <= after,
            "{ts} not in [{before}, {after}]"
        );
    }
}

fn add_rating_argument_errors_change_nothing(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("r"));
    let good = json!({"op": "addRating", "roomName": "r", "mediaId": "m", "userName": "u",
                      "rating": "like"});
    let mut changes = Vec::new();
    for field in ["roomName", "mediaId", "userName", "rating"] {
        changes.push(json!({ field: null }));
        changes.push(json!({ field: 5 }));
    }
    let more = json!([{"rating": "meh"}, {"rating": "Like"}, {"timestamp": -1},
                      {"timestamp": "1"}, {"timestamp": 1.5}, {"ratting": "like"}]);
    for change in changes.iter().chain(more.as_array().unwrap()) {
        c.expect(with(good.clone(), change.clone()), code("bad_request"));
    }
    assert_eq!(c.get("r"), Some((room("r"), 1)));
}

fn set_progress_rules(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&bare_room("r"));
    let set = |u: &str, p: Value| json!({"op": "setProgress", "roomName": "r", "userName": u, "progress": p});
    c.script(json!([
        [set("ann", json!(0)), {"revision": 2}],
        [set("ann", json!(7)), {"revision": 3}],
        [set("ann", json!(7)), {"revision": 4}],
        [set("bob", json!(1)), {"revision": 5}],
        [set("eve", json!(9007199254740993u64)), {"revision": 6}],
        [set("ann", json!(-1)), {"error": {"code": "bad_request"}}],
        [set("ann", json!(1.5)), {"error": {"code": "bad_request"}}],
        [set("ann", json!("3")), {"error": {"code": "bad_request"}}],
        [set("ann", json!(null)), {"error": {"code": "bad_request"}}],
    ]));
    let progress = json!({"ann": 7, "bob": 1, "eve": 9007199254740993u64});
    let want = with(bare_room("r"), json!({ "userProgress": progress }));
    assert_eq!(c.get("r"), Some((want, 6)));
}

fn verify_password_rules(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("locked"));
    c.save(&bare_room("open"));
    c.save(&with(bare_room("empty"), json!({"password": ""})));
    let verify =
        |name: &str, pw: Value| json!({"op": "verifyPassword", "roomName": name, "password": pw});
    c.script(json!([
        [verify("locked", json!("secret")), {"valid": true}],
        [verify("locked", json!("Secret")), {"valid": false}],
        [verify("locked", json!("")), {"valid": false}],
        [verify("open", json!("anything")), {"valid": true}],
        [verify("open", json!("")), {"valid": true}],
        [verify("empty", json!("anything")), {"valid": true}],
        [verify("empty", json!("")), {"valid": true}],
        [verify("locked", json!(1)), {"error": {"code": "bad_request"}}],
        [{"op": "verifyPassword", "roomName": "locked"}, {"error": {"code": "bad_request"}}],
    ]));
}

fn operations_needing_a_room_say_not_found(b: Backend) {
    let (_d, mut c) = start(b);
    c.script(json!([
        [{"id": 1, "op": "addRating", "roomName": "x", "mediaId": "m", "userName": "u",
          "rating": "like"}, {"id": 1, "error": {"code": "not_found"}}],
        [{"id": 2, "op": "setProgress", "roomName": "x", "userName": "u", "progress": 1},
         {"id": 2, "error": {"code": "not_found"}}],
        [{"id": 3, "op": "verifyPassword", "roomName": "x", "password": "p"},
         {"id": 3, "error": {"code": "not_found"}}],
        [{"op": "getRoom", "roomName": "x"}, {"room": null}],
        [{"op": "hasRoom", "roomName": "x"}, {"exists": false}],
    ]));
}

fn delete_rooms_by_creation_instant(b: Backend) {
    let (_d, mut c) = start(b);
    let created = json!([
        ["a", "2025-01-01T00:00:00.000Z"],
        ["b", "2025-01-01T02:30:00+02:00"],
        ["c", "2024-12-31T20:00:00-05:00"],
        ["d", "2025-01-01T01:30:00Z"]
    ]);
    for pair in created.as_array().unwrap() {
        c.save(&with(
            bare_room(pair[0].as_str().unwrap()),
            json!({"createdAt": pair[1]}),
        ));
    }
    let before = |at: Value| json!({"op": "deleteRooms", "createdBefore": at});
    c.script(json!([
        // 01:00+01:00 is 00:00Z; exclusive, so `a` stays.
        [before(json!("2025-01-01T01:00:00+01:00")), {"deleted": 0}],
        // 00:45Z: a (00:00Z) and b (00:30Z) go; c (01:00Z) sorts first as a string but is later.
        [before(json!("2025-01-01T00:45:00.000Z")), {"deleted": 2}],
        [{"op": "deleteRooms"}, {"error": {"code": "bad_request"}}],
        [before(json!("last week")), {"error": {"code": "bad_request"}}],
        [before(json!(1735689600000u64)), {"error": {"code": "bad_request"}}],
    ]));
    assert_eq!(c.names(json!({})), ["c", "d"]);
}

fn stats_reports_the_daemon(b: Backend) {
    let (d, mut c) = start(b);
    c.save(&room("a"));
    c.save(&room("b"));
    let _other = d.connect();
    let r = c.expect(
        json!({"op": "stats"}),
        json!({"backend": b.name(), "rooms": 2}),
    );
    assert!(r["version"].is_string(), "{r}");
    assert!(r["uptimeSeconds"].is_number(), "{r}");
    assert!(r["connections"].as_u64().is_some_and(|n| n >= 1), "{r}");
}

fn flush_returns_ok_and_nothing_else(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("a"));
    assert_eq!(c.call(json!({"op": "flush"})), json!({"ok": true}));
    let r = c.call(json!({"id": "f", "op": "flush"}));
    assert_eq!(r, json!({"id": "f", "ok": true}));
}

fn bad_json_is_answered(b: Backend) {
    let (_d, mut c) = start(b);
    c.assert_bad_json_lines(&[
        "not json",
        r#"{"op":"ping""#,
        r#"{"op":"ping",}"#,
        "[1,2]",
        "42",
        "null",
    ]);
    c.ping();
}

fn bad_request_cases(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("r"));
    let cases = json!([
        {"op": "launchRockets"},
        {"roomName": "r"},
        {"op": 5},
        {"op": "getroom", "roomName": "r"},
        {"op": "getRoom"},
        {"op": "getRoom", "roomName": 5},
        {"op": "getRoom", "roomName": null},
        {"op": "getRoom", "roomName": "r", "roomname": "r"},
        {"op": "ping", "verbose": true},
        {"op": "hasRoom", "roomName": ["r"]},
        {"op": "saveRoom"},
        {"op": "saveRoom", "room": "r"},
        {"op": "saveRoom", "room": room("r"), "expectedRevision": -1},
        {"op": "saveRoom", "room": room("r"), "expectedRevision": "1"},
        {"op": "saveRoom", "room": room("r"), "expectedRevision": 1.5},
        {"op": "deleteRoom", "roomName": "r", "expectedRevision": "1"},
        {"op": "deleteRoom"},
        {"op": "setProgress", "roomName": "r", "userName": "u", "progress": 1, "expectedRevision": 1},
        {"op": "addRating", "roomName": "r", "mediaId": "m", "userName": "u", "rating": "like",
         "expectedRevision": 1}
    ]);
    for (i, req) in cases.as_array().unwrap().iter().enumerate() {
        let want = json!({"id": i, "error": {"code": "bad_request"}});
        c.expect(with(req.clone(), json!({"id": i})), want);
    }
    assert_eq!(c.get("r"), Some((room("r"), 1)));
}

fn null_optional_arguments_mean_absent(b: Backend) {
    let (_d, mut c) = start(b);
    c.script(json!([
        [{"op": "saveRoom", "room": room("r")}, {"revision": 1}],
        [{"op": "saveRoom", "room": room("r"), "expectedRevision": null}, {"revision": 2}],
        [{"op": "saveRoom", "room": room("s")}, {"revision": 1}],
        [{"op": "listRooms", "creatorPlexUserId": null, "creatorPlexUsername": null,
          "createdBefore": null, "createdAfter": null, "after": null, "limit": null,
          "summary": null}, {"rooms": [room("r"), room("s")], "next": null}],
        [{"op": "deleteRoom", "roomName": "s", "expectedRevision": null}, {"deleted": true}],
    ]));
}

fn invalid_room_names_the_field(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("keep"));
    // Each case: fields set on a valid room (null: removed), and the path the message names.
    let cases = json!([
        [{"roomName": null}, "roomName"],
        [{"roomName": 5}, "roomName"],
        [{"sort": null}, "sort"],
        [{"sort": "alpha"}, "sort"],
        [{"createdAt": null}, "createdAt"],
        [{"createdAt": "yesterday"}, "createdAt"],
        [{"createdAt": "2025-10-25"}, "createdAt"],
        [{"createdAt": "2025-10-25T20:00:00"}, "createdAt"],
        [{"createdAt": "2025-13-01T00:00:00Z"}, "createdAt"],
        [{"createdAt": 1729890000000u64}, "createdAt"],
        [{"creatorPlexUserId": null}, "creatorPlexUserId"],
        [{"creatorPlexUserId": true}, "creatorPlexUserId"],
        [{"creatorPlexUsername": null}, "creatorPlexUsername"],
        [{"creatorPlexUsername": 3}, "creatorPlexUsername"],
        [{"password": 5}, "password"],
        [{"options": "EndOnFirstMatch"}, "options"],
        [{"options": ["ok", 1]}, "options[1]"],
        [{"filters": [{"key": "genre", "operator": "="}]}, "filters[0]"],
        [{"filters": [{"key": "g", "operator": "=", "value": [1]}]}, "filters[0]"],
        [{"ratings": []}, "ratings"],
        [{"ratings": {"plex://movie/1": [["u", "meh", 1]]}}, r#"ratings["plex://movie/1"][0][1]"#],
        [{"ratings": {"plex://movie/1": [["u", "like", 1], ["v", "like", -1]]}},
         r#"ratings["plex://movie/1"][1][2]"#],
        [{"ratings": {"m": [["u", "like", 1.5]]}}, r#"ratings["m"][0][2]"#],
        [{"ratings": {"m": [[7, "like", 1]]}}, r#"ratings["m"][0][0]"#],
        [{"ratings": {"m": [["u", "like"]]}}, r#"ratings["m"][0]"#],
        [{"ratings": {"m": "u"}}, r#"ratings["m"]"#],
        [{"userProgress": {"u": -1}}, r#"userProgress["u"]"#],
        [{"userProgress": {"u": "5"}}, r#"userProgress["u"]"#]
    ]);
    for case in cases.as_array().unwrap() {
        let (fields, path) = (case[0].clone(), case[1].as_str().unwrap());
        let req = json!({"op": "saveRoom", "room": with(room("keep"), fields)});
        let err = c.err(req, "invalid_room");
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains(path), "message must name {path}: {msg}");
    }
    c.err(json!({"op": "saveRoom", "room": {}}), "invalid_room");
    assert_eq!(
        c.get("keep"),
        Some((room("keep"), 1)),
        "invalid saves change nothing"
    );
}

fn room_name_rules(b: Backend) {
    let (_d, mut c) = start(b);
    let (long_ascii, long_utf8) = ("n".repeat(255), format!("{}a", "é".repeat(127)));
    let valid = [
        "line\u{2028}separator",
        long_ascii.as_str(),
        &long_utf8,
        "Room",
        "room",
        "a/b",
        "../x",
        "..",
        ".",
        " ",
    ];
    for name in valid
        .into_iter()
        .chain(["🎬 night", "a\u{85}b", "~x", "tab\u{a0}nbsp"])
    {
        assert_eq!(c.save(&room(name)), 1, "{name:?} is a valid name");
        assert_eq!(c.get(name), Some((room(name), 1)), "{name:?}");
    }
    let (too_long, too_long_utf8) = ("n".repeat(256), "é".repeat(128));
    let invalid = [
        too_long.as_str(),
        &too_long_utf8,
        "",
        "a\nb",
        "a\u{0}b",
        "\u{1f}",
        "x\u{7f}",
    ];
    for name in invalid {
        let err = c.err(
            json!({"op": "saveRoom", "room": room(name)}),
            "invalid_room",
        );
        assert!(
            err["message"].as_str().unwrap().contains("roomName"),
            "{err:?}"
        );
    }
    // Exact names: NFC and NFD spellings of "é" are two rooms.
    assert_eq!(c.save(&room("caf\u{e9}")), 1);
    assert_eq!(c.save(&room("cafe\u{301}")), 1);
    assert_eq!(c.list(json!({})).0.len(), 16);
}

fn too_large_counts_bytes_without_terminator(b: Backend) {
    let d = Daemon::start_with(b, ["--max-request-bytes", "1024"]);
    let mut c = d.connect();
    // A ping padded with spaces to `len` bytes, then `end`.
    let line = |len: usize, end: &str| {
        let head = r#"{"id":1,"op":"ping""#;
        format!("{head}{}}}{end}", " ".repeat(len - head.len() - 1))
    };
    for end in ["\n", "\r\n"] {
        assert_eq!(line(1024, end).len(), 1024 + end.len());
        c.send_raw(line(1024, end).as_bytes());
        let r = c.read_json();
        assert_eq!(
            r["ok"], true,
            "{end:?}: exactly maxRequestBytes is accepted: {r}"
        );
        c.send_raw(line(1025, end).as_bytes());
        assert_err(&c.read_json(), "too_large");
    }
    let big = with(room("big"), json!({"pad": "x".repeat(2000)}));
    c.err(json!({"op": "saveRoom", "room": big}), "too_large");
    assert!(!c.has("big"));
}

/// Saves rooms from `[name, createdAt, creatorPlexUserId, creatorPlexUsername]` rows.
fn save_created(c: &mut Conn, rows: Value) {
    for row in rows.as_array().unwrap() {
        let fields = json!({"createdAt": row[1], "creatorPlexUserId": row[2],
                            "creatorPlexUsername": row[3]});
        c.save(&with(bare_room(row[0].as_str().unwrap()), fields));
    }
}

fn list_rooms_sorted_by_byte_order(b: Backend) {
    let (_d, mut c) = start(b);
    let mut names = vec![
        "b", "B", "a", "Z", "ä", "a-", "a_", "10", "9", "~", "a b", "🎬",
    ];
    for n in &names {
        c.save(&room(n));
    }
    names.sort(); // str ordering is UTF-8 byte order
    let rooms: Vec<Value> = names.iter().map(|n| room(n)).collect();
    c.expect(
        json!({"op": "listRooms"}),
        json!({"rooms": rooms, "next": null}),
    );
}

fn list_rooms_filters_by_creator(b: Backend) {
    let (_d, mut c) = start(b);
    let at = "2025-01-01T00:00:00Z";
    save_created(
        &mut c,
        json!([
            ["n", at, 13692262, "john"],
            ["s", at, "13692262", "John"],
            ["t", at, "999", "john_doe"]
        ]),
    );
    let cases = json!([
        [{"creatorPlexUserId": 13692262}, ["n", "s"]],
        [{"creatorPlexUserId": "13692262"}, ["n", "s"]],
        [{"creatorPlexUserId": "999"}, ["t"]],
        [{"creatorPlexUserId": 1369226}, []],
        [{"creatorPlexUsername": "john"}, ["n"]],
        [{"creatorPlexUsername": "john", "creatorPlexUserId": "999"}, []]
    ]);
    for case in cases.as_array().unwrap() {
        assert_eq!(json!(c.names(case[0].clone())), case[1], "{}", case[0]);
    }
    assert_eq!(
        c.get("n").unwrap().0["creatorPlexUserId"],
        json!(13692262),
        "kept as sent"
    );
}

fn list_rooms_filters_by_creation_instant(b: Backend) {
    let (_d, mut c) = start(b);
    save_created(
        &mut c,
        json!([
            ["r1", "2025-01-01T00:00:00.000Z", "1", "u"],
            ["r2", "2025-01-01T02:30:00+02:00", "1", "u"],
            ["r3", "2024-12-31T20:00:00-05:00", "1", "u"],
            ["r4", "2025-01-01T01:30:00.5Z", "1", "u"]
        ]),
    ); // instants: 00:00Z, 00:30Z, 01:00Z, 01:30:00.5Z
    let cases = json!([
        [{"createdAfter": "2025-01-01T00:30:00Z"}, ["r3", "r4"]],
        [{"createdBefore": "2025-01-01T01:00:00.000Z"}, ["r1", "r2"]],
        [{"createdAfter": "2025-01-01T01:00:00+01:00"}, ["r2", "r3", "r4"]],
        [{"createdAfter": "2025-01-01T00:00:00Z", "createdBefore": "2025-01-01T03:00:00+02:00"},
         ["r2"]],
        [{"createdAfter": "2025-01-01T01:30:00Z"}, ["r4"]],
        [{"createdAfter": "2025-01-01T01:30:00.5Z"}, []]
    ]);
    for case in cases.as_array().unwrap() {
        assert_eq!(json!(c.names(case[0].clone())), case[1], "{}", case[0]);
    }
}

fn list_rooms_after_and_limit_walk(b: Backend) {
    let (_d, mut c) = start(b);
    let all: Vec<String> = (0..21).map(|i| format!("room-{i:02}")).collect();
    for n in all.iter().rev() {
        c.save(&bare_room(n));
    }
    assert_eq!(
        c.names(json!({"after": "room-17"})),
        ["room-18", "room-19", "room-20"]
    );
    assert_eq!(
        c.names(json!({"after": "room-175"})),
        ["room-18", "room-19", "room-20"]
    );
    let (mut seen, mut after, mut pages) = (Vec::new(), Value::Null, 0);
    loop {
        let (rooms, next) = c.list(json!({"limit": 7, "after": after}));
        pages += 1;
        assert!(
            rooms.len() <= 7 && pages < 10,
            "page {pages} has {} rooms",
            rooms.len()
        );
        seen.extend(room_names(&rooms));
        let Some(next) = next else { break };
        assert_eq!(Some(&next), seen.last(), "next is the last returned name");
        after = json!(next);
    }
    assert_eq!(seen, all);
    assert_eq!(
        pages, 3,
        "no rooms remain after the third page of 7: next must be null there"
    );
    let (rooms, next) = c.list(json!({"limit": 25}));
    assert_eq!((rooms.len(), next), (21, None));
}

fn list_rooms_limit_counts_only_matching_rooms(b: Backend) {
    let (_d, mut c) = start(b);
    for i in 0..10 {
        let user = if i % 2 == 0 { "even" } else { "odd" };
        save_created(
            &mut c,
            json!([[format!("r{i}"), "2025-01-01T00:00:00Z", "1", user]]),
        );
    }
    let page = |after: Value, limit: u64| json!({"op": "listRooms", "creatorPlexUsername": "even", "limit": limit, "after": after});
    let r = c.expect(page(json!(null), 3), json!({"next": "r4"}));
    assert_eq!(
        room_names(r["rooms"].as_array().unwrap()),
        ["r0", "r2", "r4"]
    );
    let r = c.expect(page(json!("r4"), 3), json!({"next": null}));
    assert_eq!(room_names(r["rooms"].as_array().unwrap()), ["r6", "r8"]);
    // r9 remains but does not match: there are no more rooms, so next is null.
    let r = c.expect(page(json!("r4"), 2), json!({"next": null}));
    assert_eq!(room_names(r["rooms"].as_array().unwrap()), ["r6", "r8"]);
}

fn list_rooms_summary_has_exactly_the_summary_fields(b: Backend) {
    let (_d, mut c) = start(b);
    let ratings = json!({"a": [["u", "like", 1], ["v", "dislike", 2]], "b": [["u", "like", 3]]});
    let fields = json!({"ratings": ratings, "creatorPlexUserId": 13692262, "roomType": "movie"});
    c.save(&with(room("full"), fields));
    c.rate("full", "c", "w", "like");
    c.save(&with(bare_room("open"), json!({"password": ""})));
    c.expect(
        json!({"op": "listRooms", "summary": true}),
        json!({"next": null, "rooms": [
            {"roomName": "full", "sort": "random", "createdAt": "2025-10-25T20:00:00.000Z",
             "creatorPlexUserId": 13692262, "creatorPlexUsername": "john_doe",
             "hasPassword": true, "ratingCount": 4, "revision": 2},
            {"roomName": "open", "sort": "rating", "createdAt": "2025-10-26T08:30:00.000Z",
             "creatorPlexUserId": "777", "creatorPlexUsername": "jane",
             "hasPassword": false, "ratingCount": 0, "revision": 1},
        ]}),
    );
    let (rooms, _) = c.list(json!({"summary": false}));
    assert_eq!(
        rooms[0]["ratings"]["c"],
        json!([["w", "like", 1_700_000_000_000u64]])
    );
}

fn list_rooms_argument_errors(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("r"));
    let cases = json!([{"limit": 0}, {"limit": -1}, {"limit": "5"}, {"limit": 2.5},
                       {"createdBefore": "soon"}, {"createdAfter": 5}, {"after": 5},
                       {"summary": "yes"}, {"creatorPlexUsername": 5},
                       {"creatorPlexUserId": true}, {"sortBy": "name"}]);
    for args in cases.as_array().unwrap() {
        c.expect(
            with(args.clone(), json!({"op": "listRooms"})),
            code("bad_request"),
        );
    }
}

fn mutation_is_visible_on_other_connections(b: Backend) {
    let d = Daemon::start(b);
    let (mut a, mut other) = (d.connect(), d.connect());
    for i in 0..50 {
        let name = format!("r{i}");
        a.save(&room(&name));
        assert!(
            other.has(&name),
            "acknowledged save of {name} not seen on another connection"
        );
        let (rev, _) = other.rate(&name, "m", "u", "like");
        assert_eq!(a.get(&name).unwrap().1, rev);
    }
}

fn concurrent_add_rating_loses_nothing(b: Backend) {
    const CLIENTS: usize = 16;
    const EACH: usize = 25;
    let d = Daemon::start(b);
    d.connect().save(&bare_room("party"));
    let revisions: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let mut c = d.connect();
                s.spawn(move || {
                    let user = format!("user-{t}");
                    let mut revs = Vec::new();
                    for i in 0..EACH {
                        let (rev, added) = c.rate("party", &format!("media-{i}"), &user, "like");
                        assert!(added);
                        revs.push(rev);
                    }
                    assert!(
                        !c.rate("party", "media-0", &user, "dislike").1,
                        "rated twice"
                    );
                    revs
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let total = (CLIENTS * EACH) as u64;
    let unique: BTreeSet<u64> = revisions.iter().copied().collect();
    assert_eq!(
        unique,
        (2..=1 + total).collect(),
        "each added rating has its own revision"
    );
    let (room, rev) = d.connect().get("party").unwrap();
    assert_eq!(rev, 1 + total);
    for i in 0..EACH {
        let entries = room["ratings"][format!("media-{i}")].as_array().unwrap();
        let users: BTreeSet<&str> = entries.iter().map(|e| e[0].as_str().unwrap()).collect();
        assert_eq!(
            (entries.len(), users.len()),
            (CLIENTS, CLIENTS),
            "media-{i}: {users:?}"
        );
    }
}

fn concurrent_expected_revision_saves_win_once_per_revision(b: Backend) {
    let d = Daemon::start(b);
    d.connect().save(&bare_room("cas"));
    let wins: Vec<(u64, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let mut c = d.connect();
                s.spawn(move || {
                    let mut wins = Vec::new();
                    for _ in 0..30 {
                        let (room, rev) = c.get("cas").unwrap();
                        let mut next = room;
                        next["userProgress"][format!("t{t}")] = json!(rev);
                        let req = json!({"op": "saveRoom", "room": next, "expectedRevision": rev});
                        let r = c.call(req);
                        if r["ok"] == true {
                            assert_eq!(r["revision"], rev + 1, "{r}");
                            wins.push((rev + 1, t));
                        } else {
                            assert_err(&r, "conflict");
                        }
                    }
                    wins
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let revs: BTreeSet<u64> = wins.iter().map(|w| w.0).collect();
    assert_eq!(
        revs.len(),
        wins.len(),
        "two saves won the same revision: {wins:?}"
    );
    let (room, rev) = d.connect().get("cas").unwrap();
    assert_eq!(rev, 1 + wins.len() as u64);
    // No lost update: each thread's entry from its last win survives the later wins of others.
    let recorded = room["userProgress"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (t, seen) in recorded {
        let t: usize = t[1..].parse().unwrap();
        let last_win = wins.iter().filter(|w| w.1 == t).map(|w| w.0).max().unwrap();
        assert_eq!(seen, last_win - 1, "t{t}");
    }
}

fn ten_megabyte_room_round_trips(b: Backend) {
    let (_d, mut c) = start(b);
    let ratings: serde_json::Map<String, Value> = (0..20_000u64)
        .map(|m| {
            let ts = 1729890000000u64 + m;
            let entries = json!([["john_doe", "like", ts], ["jane", "dislike", ts + 1]]);
            (format!("plex://movie/{m:08}"), entries)
        })
        .collect();
    let big = with(
        room("huge"),
        json!({"ratings": ratings, "blob": "é🎬x".repeat(1_200_000)}),
    );
    let size = serde_json::to_vec(&big).unwrap().len();
    assert!((10_000_000..16_000_000).contains(&size), "{size}");
    assert_eq!(c.save(&big), 1);
    assert_eq!(c.get("huge"), Some((big.clone(), 1)));
    assert_eq!(c.rate("huge", "new", "u", "like"), (2, true));
    assert_eq!(
        c.get("huge").unwrap().0["ratings"]
            .as_object()
            .unwrap()
            .len(),
        20_001
    );
}
