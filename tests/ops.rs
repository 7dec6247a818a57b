//! PROTOCOL.md sections 2-4 over a real socket: every operation except `watch`, every error code
//! a client can provoke, revisions and the room rules; each test runs on `memory` and `file`.

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

const NONE: [&str; 0] = [];

fn ping_answers_protocol_1(b: Backend) {
    let (_d, mut c) = start(b);
    let r = c.call(json!({"op": "ping"}));
    assert_eq!((&r["ok"], &r["protocol"]), (&json!(true), &json!(1)), "{r}");
    assert!(r.get("id").is_none(), "no id sent, none expected: {r}");
}

fn id_is_echoed_verbatim(b: Backend) {
    let (_d, mut c) = start(b);
    let ids = [
        json!(7),
        json!(0),
        json!(-3),
        json!(12345678901234u64),
        json!(2.5),
        json!("abc"),
    ];
    for id in ids.into_iter().chain([json!(""), json!("7")]) {
        let r = c.call(json!({"id": id, "op": "ping"}));
        assert_eq!((&r["ok"], r.get("id")), (&json!(true), Some(&id)), "{r}");
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
    assert_eq!(
        (&r["room"], &r["revision"]),
        (&room("movie-night"), &json!(1))
    );
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
    let nested = json!({"a": [1, {"b": null}, true, -2, 2.5, u64::MAX, "é🎬"], "empty": {}});
    let mut r = with(
        room("future"),
        json!({"roomType": "movie", "nested": nested}),
    );
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
        "listRooms entries are the room as getRoom has it"
    );
}

fn expected_revision_guards_save(b: Backend) {
    let (_d, mut c) = start(b);
    let save = |exp: u64| json!({"op": "saveRoom", "room": room("r"), "expectedRevision": exp});
    assert_eq!(
        c.err(save(3), "conflict")["revision"],
        0,
        "absent room is revision 0"
    );
    assert!(!c.has("r"));
    assert_eq!(revision(&c.ok(save(0))), 1, "0 = must not exist");
    assert_eq!(c.err(save(0), "conflict")["revision"], 1);
    assert_eq!(revision(&c.ok(save(1))), 2);
    assert_eq!(c.err(save(1), "conflict")["revision"], 2);
    assert_eq!(c.get("r").unwrap().1, 2, "a conflict changes nothing");
    assert_eq!(
        c.save(&room("r")),
        3,
        "without expectedRevision a save always applies"
    );
}

fn delete_room_rules(b: Backend) {
    let (_d, mut c) = start(b);
    let del = |exp: Value| json!({"op": "deleteRoom", "roomName": "r", "expectedRevision": exp});
    c.save(&room("r"));
    c.rate("r", "m", "u", "like");
    assert_eq!(c.err(del(json!(1)), "conflict")["revision"], 2);
    assert!(c.has("r"));
    assert_eq!(c.ok(del(json!(2)))["deleted"], true);
    assert!(!c.has("r"));
    assert_eq!(
        c.ok(del(json!(null)))["deleted"],
        false,
        "deleting a missing room is ok"
    );
    assert_eq!(
        c.ok(del(json!(0)))["deleted"],
        false,
        "0 = must not exist: matches"
    );
    assert_eq!(c.err(del(json!(4)), "conflict")["revision"], 0);
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
    let mut add = |m: &str, u: &str, rating: &str, ts: u64| {
        let r = c.ok(
            json!({"op": "addRating", "roomName": "r", "mediaId": m, "userName": u,
                            "rating": rating, "timestamp": ts}),
        );
        (revision(&r), r["added"].clone())
    };
    assert_eq!(add("plex://movie/1", "ann", "like", 10), (2, json!(true)));
    assert_eq!(
        add("plex://movie/1", "ann", "dislike", 11),
        (2, json!(false))
    );
    assert_eq!(
        add("plex://movie/1", "bob", "dislike", 12),
        (3, json!(true))
    );
    assert_eq!(add("plex://movie/2", "ann", "like", 13), (4, json!(true)));
    let want = with(
        bare_room("r"),
        json!({"ratings": {
            "plex://movie/1": [["ann", "like", 10], ["bob", "dislike", 12]],
            "plex://movie/2": [["ann", "like", 13]],
        }}),
    );
    assert_eq!(c.get("r"), Some((want, 4)));

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
    let rate = json!({"op": "addRating", "roomName": "r", "userName": "u", "rating": "like"});
    c.ok(with(rate, json!({"mediaId": "m"})));
    c.ok(
        json!({"op": "addRating", "roomName": "r", "mediaId": "n", "userName": "u",
                "rating": "like", "timestamp": null}),
    );
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
    let good = json!({"op": "addRating", "roomName": "r", "mediaId": "m", "userName": "u",
                      "rating": "like"});
    let mut cases = Vec::new();
    for field in ["roomName", "mediaId", "userName", "rating"] {
        cases.push(with(good.clone(), json!({ field: null })));
        cases.push(with(good.clone(), json!({ field: 5 })));
    }
    for (k, v) in [
        ("rating", json!("meh")),
        ("rating", json!("Like")),
        ("timestamp", json!(-1)),
    ]
    .into_iter()
    .chain([
        ("timestamp", json!("1")),
        ("timestamp", json!(1.5)),
        ("ratting", json!("like")),
    ]) {
        cases.push(with(good.clone(), json!({ k: v })));
    }
    for req in cases {
        c.err(req, "bad_request");
    }
    assert_eq!(c.get("r"), Some((room("r"), 1)));
}

fn set_progress_rules(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&bare_room("r"));
    let set = |u: &str, p: Value| json!({"op": "setProgress", "roomName": "r", "userName": u, "progress": p});
    assert_eq!(revision(&c.ok(set("ann", json!(0)))), 2);
    assert_eq!(revision(&c.ok(set("ann", json!(7)))), 3);
    assert_eq!(
        revision(&c.ok(set("ann", json!(7)))),
        4,
        "every setProgress counts"
    );
    assert_eq!(revision(&c.ok(set("bob", json!(1)))), 5);
    for bad in [json!(-1), json!(1.5), json!("3"), json!(null)] {
        c.err(set("ann", bad), "bad_request");
    }
    let want = with(
        bare_room("r"),
        json!({"userProgress": {"ann": 7, "bob": 1}}),
    );
    assert_eq!(c.get("r"), Some((want, 5)));
}

fn verify_password_rules(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("locked"));
    c.save(&bare_room("open"));
    c.save(&with(bare_room("empty"), json!({"password": ""})));
    let verify =
        |name: &str, pw: Value| json!({"op": "verifyPassword", "roomName": name, "password": pw});
    let mut valid = |name: &str, pw: &str| c.ok(verify(name, json!(pw)))["valid"].clone();
    assert_eq!(valid("locked", "secret"), true);
    assert_eq!(valid("locked", "Secret"), false);
    assert_eq!(valid("locked", ""), false);
    for name in ["open", "empty"] {
        assert_eq!(valid(name, "anything"), true, "{name} has no password");
        assert_eq!(valid(name, ""), true, "{name} has no password");
    }
    c.err(verify("locked", json!(1)), "bad_request");
    c.err(
        json!({"op": "verifyPassword", "roomName": "locked"}),
        "bad_request",
    );
}

fn operations_needing_a_room_say_not_found(b: Backend) {
    let (_d, mut c) = start(b);
    for req in [
        json!({"id": 1, "op": "addRating", "roomName": "x", "mediaId": "m", "userName": "u",
               "rating": "like"}),
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
    ]
    .into_iter()
    .chain([
        ("c", "2024-12-31T20:00:00-05:00"),
        ("d", "2025-01-01T01:30:00Z"),
    ]) {
        c.save(&with(bare_room(name), json!({"createdAt": at})));
    }
    let before = |at: Value| json!({"op": "deleteRooms", "createdBefore": at});
    // 01:00+01:00 is 00:00Z: exclusive, so `a` stays.
    assert_eq!(
        c.ok(before(json!("2025-01-01T01:00:00+01:00")))["deleted"],
        0
    );
    // 00:45Z: a (00:00Z) and b (00:30Z) go; c (01:00Z) sorts first as a string but is later.
    assert_eq!(
        c.ok(before(json!("2025-01-01T00:45:00.000Z")))["deleted"],
        2
    );
    assert_eq!(c.names(json!({})), ["c", "d"]);
    c.err(json!({"op": "deleteRooms"}), "bad_request");
    c.err(before(json!("last week")), "bad_request");
    c.err(before(json!(1735689600000u64)), "bad_request");
    assert_eq!(c.names(json!({})), ["c", "d"]);
}

fn stats_reports_the_daemon(b: Backend) {
    let (d, mut c) = start(b);
    c.save(&room("a"));
    c.save(&room("b"));
    let _other = d.connect();
    let r = c.ok(json!({"op": "stats"}));
    assert!(r["version"].is_string(), "{r}");
    assert_eq!(
        (&r["backend"], &r["rooms"]),
        (&json!(b.name()), &json!(2)),
        "{r}"
    );
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
        "not json",
        "{\"op\":\"ping\"",
        "{\"op\":\"ping\",}",
        "[1,2]",
        "42",
        "null",
    ] {
        c.send_raw(format!("{line}\n").as_bytes());
        let r = c.read_json();
        assert_err(&r, "bad_json");
        assert!(r.get("id").is_none(), "{r}");
    }
    c.ping();
}

fn bad_request_cases(b: Backend) {
    let (_d, mut c) = start(b);
    c.save(&room("r"));
    let save = json!({"op": "saveRoom", "room": room("r")});
    let cases = [
        json!({"op": "launchRockets"}),
        json!({"roomName": "r"}),
        json!({"op": 5}),
        json!({"op": "getroom", "roomName": "r"}),
        json!({"op": "getRoom"}),
        json!({"op": "getRoom", "roomName": 5}),
        json!({"op": "getRoom", "roomName": null}),
        json!({"op": "getRoom", "roomName": "r", "roomname": "r"}),
        json!({"op": "ping", "verbose": true}),
        json!({"op": "hasRoom", "roomName": ["r"]}),
        json!({"op": "saveRoom"}),
        json!({"op": "saveRoom", "room": "r"}),
        with(save.clone(), json!({"expectedRevision": -1})),
        with(save.clone(), json!({"expectedRevision": "1"})),
        with(save.clone(), json!({"expectedRevision": 1.5})),
        json!({"op": "deleteRoom", "roomName": "r", "expectedRevision": "1"}),
        json!({"op": "deleteRoom"}),
    ];
    for (i, req) in cases.into_iter().enumerate() {
        let r = c.call(with(req, json!({"id": i})));
        assert_err(&r, "bad_request");
        assert_eq!(r["id"], i, "{r}");
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
    let r1 = r#"ratings["plex://movie/1"]"#;
    let cases = [
        (json!({"roomName": null}), "roomName".to_string()),
        (json!({"roomName": 5}), "roomName".into()),
        (json!({"sort": null}), "sort".into()),
        (json!({"sort": "alpha"}), "sort".into()),
        (json!({"createdAt": null}), "createdAt".into()),
        (json!({"createdAt": "yesterday"}), "createdAt".into()),
        (json!({"createdAt": "2025-10-25"}), "createdAt".into()),
        (
            json!({"createdAt": "2025-10-25T20:00:00"}),
            "createdAt".into(),
        ),
        (
            json!({"createdAt": "2025-13-01T00:00:00Z"}),
            "createdAt".into(),
        ),
        (json!({"createdAt": 1729890000000u64}), "createdAt".into()),
        (
            json!({"creatorPlexUserId": null}),
            "creatorPlexUserId".into(),
        ),
        (
            json!({"creatorPlexUserId": true}),
            "creatorPlexUserId".into(),
        ),
        (
            json!({"creatorPlexUsername": null}),
            "creatorPlexUsername".into(),
        ),
        (
            json!({"creatorPlexUsername": 3}),
            "creatorPlexUsername".into(),
        ),
        (json!({"password": 5}), "password".into()),
        (json!({"options": "EndOnFirstMatch"}), "options".into()),
        (json!({"options": ["ok", 1]}), "options[1]".into()),
        (
            json!({"filters": [{"key": "genre", "operator": "="}]}),
            "filters[0]".into(),
        ),
        (
            json!({"filters": [{"key": "g", "operator": "=", "value": [1]}]}),
            "filters[0]".into(),
        ),
        (json!({"ratings": []}), "ratings".into()),
        (
            json!({"ratings": {"plex://movie/1": [["u", "meh", 1]]}}),
            format!("{r1}[0][1]"),
        ),
        (
            json!({"ratings": {"plex://movie/1": [["u", "like", 1], ["v", "like", -1]]}}),
            format!("{r1}[1][2]"),
        ),
        (
            json!({"ratings": {"m": [["u", "like", 1.5]]}}),
            r#"ratings["m"][0][2]"#.into(),
        ),
        (
            json!({"ratings": {"m": [[7, "like", 1]]}}),
            r#"ratings["m"][0][0]"#.into(),
        ),
        (
            json!({"ratings": {"m": [["u", "like"]]}}),
            r#"ratings["m"][0]"#.into(),
        ),
        (json!({"ratings": {"m": "u"}}), r#"ratings["m"]"#.into()),
        (
            json!({"userProgress": {"u": -1}}),
            r#"userProgress["u"]"#.into(),
        ),
        (
            json!({"userProgress": {"u": "5"}}),
            r#"userProgress["u"]"#.into(),
        ),
    ];
    for (fields, path) in cases {
        let err = c.err(
            json!({"op": "saveRoom", "room": with(room("keep"), fields)}),
            "invalid_room",
        );
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains(&path), "message must name {path}: {msg}");
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
    assert_eq!(c.list(json!({})).0.len(), 13);
}

fn too_large_counts_bytes_without_terminator(b: Backend) {
    let d = Daemon::builder(b)
        .args(["--max-request-bytes", "1024"])
        .start();
    let mut c = d.connect();
    let line = |len: usize| {
        let head = r#"{"id":1,"op":"ping""#;
        format!("{head}{}}}\n", " ".repeat(len - head.len() - 1))
    };
    assert_eq!(line(1024).len(), 1025);
    c.send_raw(line(1024).as_bytes());
    assert_eq!(
        c.read_json()["ok"],
        true,
        "a line of exactly maxRequestBytes is accepted"
    );
    c.send_raw(line(1025).as_bytes());
    assert_err(&c.read_json(), "too_large");
    let big = with(room("big"), json!({"pad": "x".repeat(2000)}));
    c.err(json!({"op": "saveRoom", "room": big}), "too_large");
    assert!(!c.has("big"));
}

fn save_created(c: &mut Conn, name: &str, at: &str, creator: Value, username: &str) {
    let fields = json!({"createdAt": at, "creatorPlexUserId": creator,
                        "creatorPlexUsername": username});
    c.save(&with(bare_room(name), fields));
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
    assert_eq!(
        (room_names(&rooms), next),
        (
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            None
        )
    );
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
    assert_eq!(c.names(json!({"creatorPlexUserId": 13692262})), ["n", "s"]);
    assert_eq!(
        c.names(json!({"creatorPlexUserId": "13692262"})),
        ["n", "s"]
    );
    assert_eq!(c.names(json!({"creatorPlexUserId": "999"})), ["t"]);
    assert_eq!(c.names(json!({"creatorPlexUserId": 1369226})), NONE);
    assert_eq!(c.names(json!({"creatorPlexUsername": "john"})), ["n"]);
    assert_eq!(
        c.names(json!({"creatorPlexUsername": "john", "creatorPlexUserId": "999"})),
        NONE
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
    assert_eq!(
        c.names(json!({"createdAfter": "2025-01-01T00:30:00Z"})),
        ["r3", "r4"]
    );
    assert_eq!(
        c.names(json!({"createdBefore": "2025-01-01T01:00:00.000Z"})),
        ["r1", "r2"]
    );
    let after_offset = json!({"createdAfter": "2025-01-01T01:00:00+01:00"});
    assert_eq!(c.names(after_offset), ["r2", "r3", "r4"]);
    let both = json!({"createdAfter": "2025-01-01T00:00:00Z",
                      "createdBefore": "2025-01-01T03:00:00+02:00"});
    assert_eq!(c.names(both), ["r2"]);
    assert_eq!(
        c.names(json!({"createdAfter": "2025-01-01T01:30:00Z"})),
        ["r4"],
        "sub-second"
    );
    assert_eq!(
        c.names(json!({"createdAfter": "2025-01-01T01:30:00.5Z"})),
        NONE
    );
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
            &format!("r{i}"),
            "2025-01-01T00:00:00Z",
            json!("1"),
            user,
        );
    }
    let page = |after: Value, limit: u64| json!({"creatorPlexUsername": "even", "limit": limit, "after": after});
    let (rooms, next) = c.list(page(json!(null), 3));
    assert_eq!(
        (room_names(&rooms), next.as_deref()),
        (vec!["r0".into(), "r2".into(), "r4".into()], Some("r4"))
    );
    let (rooms, next) = c.list(page(json!("r4"), 3));
    assert_eq!(
        (room_names(&rooms), next),
        (vec!["r6".into(), "r8".into()], None)
    );
    let (rooms, next) = c.list(page(json!("r4"), 2));
    assert_eq!(room_names(&rooms), ["r6", "r8"]);
    assert_eq!(next, None, "r9 remains but does not match: no more rooms");
}

fn list_rooms_summary_has_exactly_the_summary_fields(b: Backend) {
    let (_d, mut c) = start(b);
    let ratings = json!({"a": [["u", "like", 1], ["v", "dislike", 2]], "b": [["u", "like", 3]]});
    let fields = json!({"ratings": ratings, "creatorPlexUserId": 13692262, "roomType": "movie"});
    c.save(&with(room("full"), fields));
    c.rate("full", "c", "w", "like");
    c.save(&with(bare_room("open"), json!({"password": ""})));
    let (rooms, _) = c.list(json!({"summary": true}));
    assert_eq!(
        rooms,
        [
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
    let cases = [
        json!({"limit": 0}),
        json!({"limit": -1}),
        json!({"limit": "5"}),
    ];
    for args in cases.into_iter().chain([
        json!({"limit": 2.5}),
        json!({"createdBefore": "soon"}),
        json!({"createdAfter": 5}),
        json!({"after": 5}),
        json!({"summary": "yes"}),
        json!({"creatorPlexUsername": 5}),
        json!({"creatorPlexUserId": true}),
        json!({"sortBy": "name"}),
    ]) {
        c.err(with(args, json!({"op": "listRooms"})), "bad_request");
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
