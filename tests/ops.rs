//! PROTOCOL.md sections 2-4 over a real socket: every operation except `watch`, every error code a
//! client can provoke, revisions, and the room rules; each test runs on the memory and file backends.

#[macro_use]
mod common;

use common::*;
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
    ten_megabyte_room_round_trips,
);

fn start(b: Backend) -> (Daemon, Conn) {
    let d = Daemon::start(b);
    let c = d.connect();
    (d, c)
}

fn ping_answers_protocol_1(b: Backend) {
    let (_d, mut c) = start(b);
    let r = c.call(json!({"op": "ping"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["protocol"], 1, "{r}");
    assert!(r.get("id").is_none(), "no id sent, none expected: {r}");
}

fn id_is_echoed_verbatim(b: Backend) {
    let (_d, mut c) = start(b);
    for id in [
        json!(7),
        json!(0),
        json!(-3),
        json!(12345678901234u64),
        json!(2.5),
        json!("abc"),
        json!(""),
        json!("7"),
    ] {
        let r = c.call(json!({"id": id, "op": "ping"}));
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r.get("id"), Some(&id), "{r}");
        let r = c.call(json!({"id": id, "op": "noSuchOp"}));
        assert_err(&r, "bad_request");
        assert_eq!(
            r.get("id"),
            Some(&id),
            "id must be echoed on errors too: {r}"
        );
    }
    let r = c.call(json!({"op": "noSuchOp"}));
    assert_err(&r, "bad_request");
    assert!(r.get("id").is_none(), "{r}");
}

fn id_of_wrong_type_is_bad_request_and_still_echoed(b: Backend) {
    let (_d, mut c) = start(b);
    for id in [json!(true), json!(false), json!([1]), json!({"n": 1})] {
        let r = c.call(json!({"id": id, "op": "ping"}));
        assert_err(&r, "bad_request");
        assert_eq!(r.get("id"), Some(&id), "{r}");
    }
    c.ping();
}

fn save_then_get_returns_the_room_exactly(b: Backend) {
    let (_d, mut c) = start(b);
    let r = c.ok(json!({"id": 1, "op": "saveRoom", "room": room("movie-night")}));
    assert_eq!(r["revision"], 1, "{r}");
    let r = c.ok(json!({"id": 2, "op": "getRoom", "roomName": "movie-night"}));
    assert_eq!(r["room"], room("movie-night"));
    assert_eq!(r["revision"], 1);
    assert!(c.has("movie-night"));

    let r = c.ok(json!({"op": "getRoom", "roomName": "nope"}));
    assert_eq!(r["room"], Value::Null, "{r}");
    assert!(
        r.get("revision").is_none(),
        "revision is absent when room is null: {r}"
    );
    assert!(!c.has("nope"));
    assert!(!c.has("Movie-night"), "names are case-sensitive");
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
    let mut r = room("future");
    r["roomType"] = json!("movie");
    r["nested"] = json!({"a": [1, {"b": null}, true, -2, 2.5, u64::MAX, "é🎬"], "empty": {}});
    r["ratings"]["plex://movie/5d77"] = json!([["ann", "dislike", 0]]);
    c.save(&r);
    assert_eq!(c.get("future").unwrap().0, r);
    c.ok(
        json!({"op": "addRating", "roomName": "future", "mediaId": "m2", "userName": "bob",
               "rating": "like", "timestamp": 5}),
    );
    c.ok(json!({"op": "setProgress", "roomName": "future", "userName": "bob", "progress": 3}));
    r["ratings"]["m2"] = json!([["bob", "like", 5]]);
    r["userProgress"]["bob"] = json!(3);
    assert_eq!(c.get("future"), Some((r.clone(), 3)));
    assert_eq!(
        c.list(json!({})).0,
        vec![r],
        "listRooms entries are the room as getRoom returns it"
    );
}

fn expected_revision_guards_save(b: Backend) {
    let (_d, mut c) = start(b);
    let save = |c: &mut Conn, exp: u64| {
        c.call(json!({"op": "saveRoom", "room": room("r"), "expectedRevision": exp}))
    };
    let e = save(&mut c, 3);
    assert_eq!(
        assert_err(&e, "conflict")["revision"],
        0,
        "absent room is revision 0: {e}"
    );
    assert!(!c.has("r"));
    assert_eq!(revision(&save(&mut c, 0)), 1, "0 = must not exist");
    let e = save(&mut c, 0);
    assert_eq!(assert_err(&e, "conflict")["revision"], 1, "{e}");
    assert_eq!(revision(&save(&mut c, 1)), 2);
    let e = save(&mut c, 1);
    assert_eq!(assert_err(&e, "conflict")["revision"], 2, "{e}");
    assert_eq!(c.get("r").unwrap().1, 2, "a conflict changes nothing");
    assert_eq!(
        c.save(&room("r")),
        3,
        "without expectedRevision a save always applies"
    );
}

fn delete_room_rules(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("r"));
    c.rate("r", "m", "u", "like");
    let e = c.call(json!({"op": "deleteRoom", "roomName": "r", "expectedRevision": 1}));
    assert_eq!(assert_err(&e, "conflict")["revision"], 2, "{e}");
    assert!(c.has("r"));
    let r = c.ok(json!({"op": "deleteRoom", "roomName": "r", "expectedRevision": 2}));
    assert_eq!(r["deleted"], true, "{r}");
    assert!(!c.has("r"));
    let r = c.ok(json!({"op": "deleteRoom", "roomName": "r"}));
    assert_eq!(r["deleted"], false, "deleting a missing room is ok: {r}");
    let r = c.ok(json!({"op": "deleteRoom", "roomName": "r", "expectedRevision": 0}));
    assert_eq!(r["deleted"], false, "{r}");
    let e = c.call(json!({"op": "deleteRoom", "roomName": "r", "expectedRevision": 4}));
    assert_eq!(assert_err(&e, "conflict")["revision"], 0, "{e}");
    c.save(&room("s"));
    assert_eq!(
        c.ok(json!({"op": "deleteRoom", "roomName": "s"}))["deleted"],
        true
    );
    assert_eq!(
        c.save(&room("r")),
        1,
        "a re-created room starts at revision 1"
    );
}

fn add_rating_appends_once_per_user_and_media(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&bare_room("r"));
    let add = |c: &mut Conn, m: &str, u: &str, rating: &str, ts: u64| {
        c.ok(
            json!({"op": "addRating", "roomName": "r", "mediaId": m, "userName": u,
                    "rating": rating, "timestamp": ts}),
        )
    };
    let r = add(&mut c, "plex://movie/1", "ann", "like", 10);
    assert_eq!(
        (r["revision"].clone(), r["added"].clone()),
        (json!(2), json!(true)),
        "{r}"
    );
    let r = add(&mut c, "plex://movie/1", "ann", "dislike", 11);
    assert_eq!(
        (r["revision"].clone(), r["added"].clone()),
        (json!(2), json!(false)),
        "{r}"
    );
    let r = add(&mut c, "plex://movie/1", "bob", "dislike", 12);
    assert_eq!(
        (r["revision"].clone(), r["added"].clone()),
        (json!(3), json!(true)),
        "{r}"
    );
    let r = add(&mut c, "plex://movie/2", "ann", "like", 13);
    assert_eq!(
        (r["revision"].clone(), r["added"].clone()),
        (json!(4), json!(true)),
        "{r}"
    );
    let mut want = bare_room("r");
    want["ratings"] = json!({
        "plex://movie/1": [["ann", "like", 10], ["bob", "dislike", 12]],
        "plex://movie/2": [["ann", "like", 13]],
    });
    assert_eq!(c.get("r"), Some((want, 4)));

    // Existing ratings of a saved room count too.
    c.save(&room("s"));
    assert_eq!(c.rate("s", "movie-123", "john_doe", "dislike"), (1, false));
    assert_eq!(c.rate("s", "movie-123", "jane", "like"), (2, true));
    assert_eq!(
        c.get("s").unwrap().0["ratings"]["movie-123"],
        json!([
            ["john_doe", "like", 1729890000000u64],
            ["jane", "like", 1_700_000_000_000u64]
        ])
    );
}

fn add_rating_timestamp_defaults_to_now(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&bare_room("r"));
    let before = now_ms();
    c.ok(json!({"op": "addRating", "roomName": "r", "mediaId": "m", "userName": "u", "rating": "like"}));
    c.ok(json!({"op": "addRating", "roomName": "r", "mediaId": "n", "userName": "u", "rating": "like",
               "timestamp": null}));
    let after = now_ms();
    let room = c.get("r").unwrap().0;
    for m in ["m", "n"] {
        let ts = room["ratings"][m][0][2]
            .as_u64()
            .unwrap_or_else(|| panic!("timestamp: {room}"));
        assert!(
            before <= ts && ts <= after,
            "{ts} not in [{before}, {after}]"
        );
    }
}

fn add_rating_argument_errors_change_nothing(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("r"));
    let good = json!({"op": "addRating", "roomName": "r", "mediaId": "m", "userName": "u", "rating": "like"});
    let mut cases = Vec::new();
    for field in ["roomName", "mediaId", "userName", "rating"] {
        let mut req = good.clone();
        req.as_object_mut().unwrap().remove(field);
        cases.push(req.clone());
        req[field] = json!(5);
        cases.push(req);
    }
    for (k, v) in [
        ("rating", json!("meh")),
        ("rating", json!("Like")),
        ("timestamp", json!(-1)),
        ("timestamp", json!("1")),
        ("timestamp", json!(1.5)),
        ("ratting", json!("like")),
    ] {
        let mut req = good.clone();
        req[k] = v;
        cases.push(req);
    }
    for req in cases {
        assert_err(&c.call(req.clone()), "bad_request");
    }
    assert_eq!(c.get("r"), Some((room("r"), 1)));
}

fn set_progress_rules(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&bare_room("r"));
    let set = |c: &mut Conn, u: &str, p: Value| {
        c.call(json!({"op": "setProgress", "roomName": "r", "userName": u, "progress": p}))
    };
    assert_eq!(revision(&set(&mut c, "ann", json!(0))), 2);
    assert_eq!(revision(&set(&mut c, "ann", json!(7))), 3);
    assert_eq!(
        revision(&set(&mut c, "ann", json!(7))),
        4,
        "every successful setProgress counts"
    );
    assert_eq!(revision(&set(&mut c, "bob", json!(1))), 5);
    for bad in [json!(-1), json!(1.5), json!("3"), json!(null)] {
        assert_err(&set(&mut c, "ann", bad), "bad_request");
    }
    let mut want = bare_room("r");
    want["userProgress"] = json!({"ann": 7, "bob": 1});
    assert_eq!(c.get("r"), Some((want, 5)));
}

fn verify_password_rules(b: Backend) {
    let (_d, mut c) = start(b);
    let mut empty = bare_room("empty");
    empty["password"] = json!("");
    c.save(&room("locked"));
    c.save(&bare_room("open"));
    c.save(&empty);
    let valid = |c: &mut Conn, name: &str, pw: &str| {
        c.ok(json!({"op": "verifyPassword", "roomName": name, "password": pw}))["valid"].clone()
    };
    assert_eq!(valid(&mut c, "locked", "secret"), true);
    assert_eq!(valid(&mut c, "locked", "Secret"), false);
    assert_eq!(valid(&mut c, "locked", ""), false);
    for name in ["open", "empty"] {
        assert_eq!(
            valid(&mut c, name, "anything"),
            true,
            "{name} has no password"
        );
        assert_eq!(valid(&mut c, name, ""), true, "{name} has no password");
    }
    assert_err(
        &c.call(json!({"op": "verifyPassword", "roomName": "locked"})),
        "bad_request",
    );
    assert_err(
        &c.call(json!({"op": "verifyPassword", "roomName": "locked", "password": 1})),
        "bad_request",
    );
}

fn operations_needing_a_room_say_not_found(b: Backend) {
    let (_d, mut c) = start(b);
    for req in [
        json!({"id": 1, "op": "addRating", "roomName": "x", "mediaId": "m", "userName": "u", "rating": "like"}),
        json!({"id": 2, "op": "setProgress", "roomName": "x", "userName": "u", "progress": 1}),
        json!({"id": 3, "op": "verifyPassword", "roomName": "x", "password": "p"}),
    ] {
        let r = c.call(req.clone());
        assert_err(&r, "not_found");
        assert_eq!(r["id"], req["id"]);
    }
    assert!(
        !c.has("x"),
        "a not_found operation must not create the room"
    );
}

fn delete_rooms_by_creation_instant(b: Backend) {
    let (_d, mut c) = start(b);
    for (name, at) in [
        ("a", "2025-01-01T00:00:00.000Z"),
        ("b", "2025-01-01T02:30:00+02:00"),
        ("c", "2024-12-31T20:00:00-05:00"),
        ("d", "2025-01-01T01:30:00Z"),
    ] {
        let mut r = bare_room(name);
        r["createdAt"] = json!(at);
        c.save(&r);
    }
    // 01:00+01:00 is 00:00Z: exclusive, so `a` stays.
    let r = c.ok(json!({"op": "deleteRooms", "createdBefore": "2025-01-01T01:00:00+01:00"}));
    assert_eq!(r["deleted"], 0, "{r}");
    // 00:45Z: a (00:00Z) and b (00:30Z) go; c (01:00Z) sorts first as a string but is later.
    let r = c.ok(json!({"op": "deleteRooms", "createdBefore": "2025-01-01T00:45:00.000Z"}));
    assert_eq!(r["deleted"], 2, "{r}");
    assert_eq!(room_names(&c.list(json!({})).0), ["c", "d"]);
    assert_err(&c.call(json!({"op": "deleteRooms"})), "bad_request");
    assert_err(
        &c.call(json!({"op": "deleteRooms", "createdBefore": "last week"})),
        "bad_request",
    );
    assert_err(
        &c.call(json!({"op": "deleteRooms", "createdBefore": 1735689600000u64})),
        "bad_request",
    );
    assert_eq!(c.list(json!({})).0.len(), 2);
}

fn stats_reports_the_daemon(b: Backend) {
    let (d, mut c) = start(b);
    c.save(&room("a"));
    c.save(&room("b"));
    let _other = d.connect();
    let r = c.ok(json!({"op": "stats"}));
    assert!(r["version"].is_string(), "{r}");
    assert_eq!(r["backend"], b.name(), "{r}");
    assert_eq!(r["rooms"], 2, "{r}");
    assert!(r["uptimeSeconds"].is_number(), "{r}");
    assert!(r["connections"].as_u64().is_some_and(|n| n >= 1), "{r}");
}

fn flush_returns_ok_and_nothing_else(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("a"));
    assert_eq!(c.call(json!({"op": "flush"})), json!({"ok": true}));
    assert_eq!(
        c.call(json!({"id": "f", "op": "flush"})),
        json!({"id": "f", "ok": true})
    );
}

fn bad_json_is_answered(b: Backend) {
    let (_d, mut c) = start(b);
    for line in [
        &b"not json"[..],
        b"{\"op\":\"ping\"",
        b"{\"op\":\"ping\",}",
        b"[1,2]",
        b"42",
        b"\"ping\"",
        b"null",
    ] {
        c.send_raw(&[line, b"\n"].concat());
        let r = c.read_json();
        assert_err(&r, "bad_json");
        assert!(r.get("id").is_none(), "{r}");
    }
    c.ping();
}

fn bad_request_cases(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("r"));
    let cases = [
        json!({"id": 1, "op": "launchRockets"}),
        json!({"id": 2, "roomName": "r"}),
        json!({"id": 3, "op": 5}),
        json!({"id": 4, "op": "getroom", "roomName": "r"}),
        json!({"id": 5, "op": "getRoom"}),
        json!({"id": 6, "op": "getRoom", "roomName": 5}),
        json!({"id": 7, "op": "getRoom", "roomName": null}),
        json!({"id": 8, "op": "getRoom", "roomName": "r", "roomname": "r"}),
        json!({"id": 9, "op": "ping", "verbose": true}),
        json!({"id": 10, "op": "hasRoom", "roomName": ["r"]}),
        json!({"id": 11, "op": "saveRoom"}),
        json!({"id": 12, "op": "saveRoom", "room": "r"}),
        json!({"id": 13, "op": "saveRoom", "room": room("r"), "expectedRevision": -1}),
        json!({"id": 14, "op": "saveRoom", "room": room("r"), "expectedRevision": "1"}),
        json!({"id": 15, "op": "saveRoom", "room": room("r"), "expectedRevision": 1.5}),
        json!({"id": 16, "op": "deleteRoom", "roomName": "r", "expectedRevision": "1"}),
        json!({"id": 17, "op": "deleteRoom"}),
    ];
    for req in cases {
        let r = c.call(req.clone());
        assert_err(&r, "bad_request");
        assert_eq!(r["id"], req["id"], "{r}");
    }
    assert_eq!(c.get("r"), Some((room("r"), 1)));
}

fn null_optional_arguments_mean_absent(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("r"));
    let r = c.ok(json!({"op": "saveRoom", "room": room("r"), "expectedRevision": null}));
    assert_eq!(r["revision"], 2);
    c.save(&room("s"));
    let (rooms, next) = c.list(json!({"creatorPlexUserId": null, "creatorPlexUsername": null,
        "createdBefore": null, "createdAfter": null, "after": null, "limit": null, "summary": null}));
    assert_eq!(
        (room_names(&rooms), next),
        (vec!["r".to_string(), "s".into()], None)
    );
    let r = c.ok(json!({"op": "deleteRoom", "roomName": "s", "expectedRevision": null}));
    assert_eq!(r["deleted"], true);
}

fn invalid_room_names_the_field(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("keep"));
    let cases: Vec<(&str, Value, &str)> = vec![
        ("roomName", Value::Null, "roomName"),
        ("roomName", json!(5), "roomName"),
        ("sort", Value::Null, "sort"),
        ("sort", json!("alpha"), "sort"),
        ("createdAt", Value::Null, "createdAt"),
        ("createdAt", json!("yesterday"), "createdAt"),
        ("createdAt", json!("2025-10-25"), "createdAt"),
        ("createdAt", json!("2025-10-25T20:00:00"), "createdAt"),
        ("createdAt", json!("2025-13-01T00:00:00Z"), "createdAt"),
        ("createdAt", json!(1729890000000u64), "createdAt"),
        ("creatorPlexUserId", Value::Null, "creatorPlexUserId"),
        ("creatorPlexUserId", json!(true), "creatorPlexUserId"),
        ("creatorPlexUsername", Value::Null, "creatorPlexUsername"),
        ("creatorPlexUsername", json!(3), "creatorPlexUsername"),
        ("password", json!(5), "password"),
        ("options", json!("EndOnFirstMatch"), "options"),
        ("options", json!(["ok", 1]), "options[1]"),
        (
            "filters",
            json!([{"key": "genre", "operator": "="}]),
            "filters[0]",
        ),
        (
            "filters",
            json!([{"key": "genre", "operator": "=", "value": [1]}]),
            "filters[0]",
        ),
        ("ratings", json!([]), "ratings"),
        (
            "ratings",
            json!({"plex://movie/1": [["u", "meh", 1]]}),
            r#"ratings["plex://movie/1"][0][1]"#,
        ),
        (
            "ratings",
            json!({"plex://movie/1": [["u", "like", 1], ["v", "like", -1]]}),
            r#"ratings["plex://movie/1"][1][2]"#,
        ),
        (
            "ratings",
            json!({"m": [["u", "like", 1.5]]}),
            r#"ratings["m"][0][2]"#,
        ),
        (
            "ratings",
            json!({"m": [[7, "like", 1]]}),
            r#"ratings["m"][0][0]"#,
        ),
        (
            "ratings",
            json!({"m": [["u", "like"]]}),
            r#"ratings["m"][0]"#,
        ),
        ("ratings", json!({"m": "u"}), r#"ratings["m"]"#),
        ("userProgress", json!({"u": -1}), r#"userProgress["u"]"#),
        ("userProgress", json!({"u": "5"}), r#"userProgress["u"]"#),
    ];
    for (field, value, path) in cases {
        let mut r = room("keep");
        if value.is_null() {
            r.as_object_mut().unwrap().remove(field);
        } else {
            r[field] = value;
        }
        let resp = c.call(json!({"op": "saveRoom", "room": r}));
        let err = assert_err(&resp, "invalid_room");
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains(path), "message must name {path}: {resp}");
    }
    assert_err(
        &c.call(json!({"op": "saveRoom", "room": {}})),
        "invalid_room",
    );
    assert_eq!(
        c.get("keep"),
        Some((room("keep"), 1)),
        "invalid saves change nothing"
    );
}

fn room_name_rules(b: Backend) {
    let (_d, mut c) = start(b);
    let long_ascii = "n".repeat(255);
    let long_utf8 = format!("{}a", "é".repeat(127));
    for name in [
        long_ascii.as_str(),
        &long_utf8,
        "Room",
        "room",
        "a/b",
        "../x",
        "..",
        ".",
        " ",
        "🎬 night",
        "a\u{85}b",
        "~x",
        "tab\u{a0}nbsp",
    ] {
        assert_eq!(c.save(&room(name)), 1, "{name:?} is a valid name");
        assert_eq!(c.get(name), Some((room(name), 1)), "{name:?}");
    }
    let too_long_utf8 = "é".repeat(128);
    for name in [
        &"n".repeat(256),
        too_long_utf8.as_str(),
        "",
        "a\nb",
        "a\u{0}b",
        "\u{1f}",
        "x\u{7f}",
        "\r",
    ] {
        let r = c.call(json!({"op": "saveRoom", "room": room(name)}));
        let msg = assert_err(&r, "invalid_room")["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains("roomName"), "{r}");
    }
    assert_eq!(c.list(json!({})).0.len(), 13);
}

fn too_large_counts_bytes_without_terminator(b: Backend) {
    let d = Daemon::builder(b)
        .args(["--max-request-bytes", "1024"])
        .start();
    let mut c = d.connect();
    let line = |len: usize| {
        let head = r#"{"id":1,"op":"ping""#;
        format!("{head}{}}}", " ".repeat(len - head.len() - 1))
    };
    assert_eq!(line(1024).len(), 1024);
    c.send_raw(format!("{}\n", line(1024)).as_bytes());
    assert_eq!(
        c.read_json()["ok"],
        true,
        "a line of exactly maxRequestBytes is accepted"
    );
    c.send_raw(format!("{}\n", line(1025)).as_bytes());
    assert_err(&c.read_json(), "too_large");
    let mut big = room("big");
    big["pad"] = json!("x".repeat(2000));
    assert_err(&c.call(json!({"op": "saveRoom", "room": big})), "too_large");
    assert!(!c.has("big"));
}

fn save_created(c: &mut Conn, name: &str, created_at: &str, creator: Value, username: &str) {
    let mut r = bare_room(name);
    r["createdAt"] = json!(created_at);
    r["creatorPlexUserId"] = creator;
    r["creatorPlexUsername"] = json!(username);
    c.save(&r);
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
    let (rooms, next) = c.list(json!({}));
    assert_eq!(room_names(&rooms), names);
    assert_eq!(next, None);
    assert_eq!(rooms[0], room(names[0]));
}

fn list_rooms_filters_by_creator(b: Backend) {
    let (_d, mut c) = start(b);
    save_created(&mut c, "n", "2025-01-01T00:00:00Z", json!(13692262), "john");
    save_created(
        &mut c,
        "s",
        "2025-01-01T00:00:00Z",
        json!("13692262"),
        "John",
    );
    save_created(
        &mut c,
        "t",
        "2025-01-01T00:00:00Z",
        json!("999"),
        "john_doe",
    );
    let names = |c: &mut Conn, args: Value| room_names(&c.list(args).0);
    assert_eq!(
        names(&mut c, json!({"creatorPlexUserId": 13692262})),
        ["n", "s"]
    );
    assert_eq!(
        names(&mut c, json!({"creatorPlexUserId": "13692262"})),
        ["n", "s"]
    );
    assert_eq!(names(&mut c, json!({"creatorPlexUserId": "999"})), ["t"]);
    assert_eq!(
        names(&mut c, json!({"creatorPlexUserId": 1369226})),
        Vec::<String>::new()
    );
    assert_eq!(names(&mut c, json!({"creatorPlexUsername": "john"})), ["n"]);
    assert_eq!(
        names(
            &mut c,
            json!({"creatorPlexUsername": "john", "creatorPlexUserId": "999"})
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        c.get("n").unwrap().0["creatorPlexUserId"],
        json!(13692262),
        "kept as sent"
    );
}

fn list_rooms_filters_by_creation_instant(b: Backend) {
    let (_d, mut c) = start(b);
    save_created(&mut c, "r1", "2025-01-01T00:00:00.000Z", json!("1"), "u"); // 00:00Z
    save_created(&mut c, "r2", "2025-01-01T02:30:00+02:00", json!("1"), "u"); // 00:30Z
    save_created(&mut c, "r3", "2024-12-31T20:00:00-05:00", json!("1"), "u"); // 01:00Z
    save_created(&mut c, "r4", "2025-01-01T01:30:00.5Z", json!("1"), "u"); // 01:30:00.5Z
    let names = |c: &mut Conn, args: Value| room_names(&c.list(args).0);
    assert_eq!(
        names(&mut c, json!({"createdAfter": "2025-01-01T00:30:00Z"})),
        ["r3", "r4"]
    );
    assert_eq!(
        names(&mut c, json!({"createdBefore": "2025-01-01T01:00:00.000Z"})),
        ["r1", "r2"]
    );
    assert_eq!(
        names(&mut c, json!({"createdAfter": "2025-01-01T01:00:00+01:00"})),
        ["r2", "r3", "r4"]
    );
    assert_eq!(
        names(
            &mut c,
            json!({"createdAfter": "2025-01-01T00:00:00Z",
                                    "createdBefore": "2025-01-01T03:00:00+02:00"})
        ),
        ["r2"]
    );
    assert_eq!(
        names(&mut c, json!({"createdAfter": "2025-01-01T01:30:00Z"})),
        ["r4"],
        "sub-second"
    );
    assert_eq!(
        names(&mut c, json!({"createdAfter": "2025-01-01T01:30:00.5Z"})),
        Vec::<String>::new()
    );
}

fn list_rooms_after_and_limit_walk(b: Backend) {
    let (_d, mut c) = start(b);
    let all: Vec<String> = (0..21).map(|i| format!("room-{i:02}")).collect();
    for n in all.iter().rev() {
        c.save(&bare_room(n));
    }
    assert_eq!(
        room_names(&c.list(json!({"after": "room-17"})).0),
        ["room-18", "room-19", "room-20"]
    );
    assert_eq!(
        room_names(&c.list(json!({"after": "room-175"})).0),
        ["room-18", "room-19", "room-20"]
    );
    let (mut seen, mut after, mut pages) = (Vec::new(), Value::Null, 0);
    loop {
        let (rooms, next) = c.list(json!({"limit": 7, "after": after}));
        pages += 1;
        assert!(rooms.len() <= 7);
        seen.extend(room_names(&rooms));
        match next {
            Some(n) => {
                assert_eq!(Some(&n), seen.last(), "next is the last returned name");
                after = json!(n);
            }
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, all);
    assert_eq!(
        pages, 3,
        "no more rooms after the third page of 7: next must be null there"
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
            &format!("r{i}"),
            "2025-01-01T00:00:00Z",
            json!("1"),
            user,
        );
    }
    let (rooms, next) = c.list(json!({"creatorPlexUsername": "even", "limit": 3}));
    assert_eq!(room_names(&rooms), ["r0", "r2", "r4"]);
    assert_eq!(next.as_deref(), Some("r4"));
    let (rooms, next) = c.list(json!({"creatorPlexUsername": "even", "limit": 3, "after": "r4"}));
    assert_eq!(room_names(&rooms), ["r6", "r8"]);
    assert_eq!(next, None);
    let (rooms, next) = c.list(json!({"creatorPlexUsername": "even", "limit": 2, "after": "r4"}));
    assert_eq!(room_names(&rooms), ["r6", "r8"]);
    assert_eq!(next, None, "r9 remains but does not match: no more rooms");
}

fn list_rooms_summary_has_exactly_the_summary_fields(b: Backend) {
    let (_d, mut c) = start(b);
    let mut full = room("full");
    full["ratings"] =
        json!({"a": [["u", "like", 1], ["v", "dislike", 2]], "b": [["u", "like", 3]]});
    full["creatorPlexUserId"] = json!(13692262);
    full["roomType"] = json!("movie");
    c.save(&full);
    c.rate("full", "c", "w", "like");
    let mut empty_pw = bare_room("open");
    empty_pw["password"] = json!("");
    c.save(&empty_pw);
    let (rooms, _) = c.list(json!({"summary": true}));
    assert_eq!(
        rooms,
        vec![
            json!({"roomName": "full", "sort": "random", "createdAt": "2025-10-25T20:00:00.000Z",
               "creatorPlexUserId": 13692262, "creatorPlexUsername": "john_doe",
               "hasPassword": true, "ratingCount": 4, "revision": 2}),
            json!({"roomName": "open", "sort": "rating", "createdAt": "2025-10-26T08:30:00.000Z",
               "creatorPlexUserId": "777", "creatorPlexUsername": "jane",
               "hasPassword": false, "ratingCount": 0, "revision": 1}),
        ]
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
    for args in [
        json!({"limit": 0}),
        json!({"limit": -1}),
        json!({"limit": "5"}),
        json!({"limit": 2.5}),
        json!({"createdBefore": "soon"}),
        json!({"createdAfter": 5}),
        json!({"after": 5}),
        json!({"summary": "yes"}),
        json!({"creatorPlexUsername": 5}),
        json!({"creatorPlexUserId": true}),
        json!({"sortBy": "name"}),
    ] {
        let mut req = args.clone();
        req["op"] = json!("listRooms");
        assert_err(&c.call(req), "bad_request");
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
            "acknowledged save of {name} not visible on another connection"
        );
        let (rev, _) = other.rate(&name, "m", "u", "like");
        assert_eq!(a.get(&name).unwrap().1, rev);
    }
}

fn concurrent_add_rating_loses_nothing(b: Backend) {
    let d = Daemon::start(b);
    d.connect().save(&bare_room("party"));
    const CLIENTS: usize = 16;
    const EACH: usize = 25;
    let revisions: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let mut c = d.connect();
                s.spawn(move || {
                    let mut revs = Vec::new();
                    for i in 0..EACH {
                        let (rev, added) =
                            c.rate("party", &format!("media-{i}"), &format!("user-{t}"), "like");
                        assert!(added);
                        revs.push(rev);
                    }
                    // A second rating of the same media by the same user is refused.
                    assert!(
                        !c.rate("party", "media-0", &format!("user-{t}"), "dislike")
                            .1
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
    let total = CLIENTS * EACH;
    let unique: BTreeSet<u64> = revisions.iter().copied().collect();
    assert_eq!(
        unique,
        (2..=1 + total as u64).collect(),
        "each added rating gets its own revision"
    );
    let mut c = d.connect();
    let (room, rev) = c.get("party").unwrap();
    assert_eq!(rev, 1 + total as u64);
    for i in 0..EACH {
        let users: BTreeSet<&str> = room["ratings"][format!("media-{i}")]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[0].as_str().unwrap())
            .collect();
        assert_eq!(users.len(), CLIENTS, "media-{i} lost ratings: {users:?}");
    }
}

fn ten_megabyte_room_round_trips(b: Backend) {
    let (_d, mut c) = start(b);
    let mut big = room("huge");
    let ratings: serde_json::Map<String, Value> = (0..20_000)
        .map(|m| {
            (
                format!("plex://movie/{m:08}"),
                json!([
                    ["john_doe", "like", 1729890000000u64 + m],
                    ["jane", "dislike", 1729890000001u64 + m]
                ]),
            )
        })
        .collect();
    big["ratings"] = Value::Object(ratings);
    big["blob"] = json!("é🎬x".repeat(1_200_000));
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
