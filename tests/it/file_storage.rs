//! The `file` backend's directory as users see it (PROTOCOL.md sections 5-6): one pretty JSON
//! file per room, an injective name encoding that never leaves storagePath, hand-written and
//! hand-edited files, quarantine, symlinks, SIGHUP reloads, crash leftovers.

use crate::harness::*;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// A daemon on a storage dir prepared by hand: `files` are (file name, contents).
fn start_seeded(files: &[(&str, &[u8])]) -> Daemon {
    let b = Daemon::builder(Backend::File);
    fs::create_dir(b.storage_path()).unwrap();
    fs::set_permissions(b.storage_path(), fs::Permissions::from_mode(0o700)).unwrap();
    for (name, contents) in files {
        fs::write(b.storage_path().join(name), contents).unwrap();
    }
    b.start()
}

fn pretty(room: &Value) -> Vec<u8> {
    (serde_json::to_string_pretty(room).unwrap() + "\n").into_bytes()
}

/// The entry of `.quarantine/` that holds `file` (the daemon may add a suffix to its name).
fn quarantined(d: &Daemon, file: &str) -> Option<PathBuf> {
    let q = d.storage().join(".quarantine");
    dir_entries(&q)
        .into_iter()
        .find(|n| n.starts_with(file))
        .map(|n| q.join(n))
}

fn wait_quarantined(d: &Daemon, file: &str) -> PathBuf {
    d.wait_for(&format!("{file} in .quarantine/"), || {
        quarantined(d, file).is_some()
    });
    quarantined(d, file).unwrap()
}

#[test]
fn plain_names_live_in_name_dot_json_as_pretty_json() {
    let mut d = Daemon::start(Backend::File);
    let storage = d.storage().to_str().unwrap().to_string();
    d.wait_log(&format!("Using file storage at: {storage}"));
    let long = "a".repeat(250);
    let rooms = [room("movie-night_2"), bare_room("X"), room(&long)];
    let mut c = d.connect();
    for r in &rooms {
        c.save(r);
    }
    drop(c);
    d.stop();
    let mut want = vec![
        "X.json".to_string(),
        format!("{long}.json"),
        "movie-night_2.json".into(),
    ];
    want.sort();
    assert_eq!(room_files(d.storage()), want);
    for r in &rooms {
        let path = d
            .storage()
            .join(format!("{}.json", r["roomName"].as_str().unwrap()));
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\n  \""),
            "not pretty-printed: {}",
            path.display()
        );
        assert_eq!(
            &serde_json::from_str::<Value>(&text).unwrap(),
            r,
            "exactly the room, no revision"
        );
    }
}

#[test]
fn hostile_names_round_trip_in_their_own_files_inside_storage() {
    let long_plain = "a".repeat(255);
    let over_plain = "b".repeat(251);
    let long_spaces = " ".repeat(255);
    let long_utf8 = format!("{}a", "é".repeat(127));
    let hashed_lookalike = format!("={}", "0".repeat(64));
    let names: Vec<&str> = vec![
        "../x",
        "../../etc/passwd",
        "a/b",
        "a_b",
        "a%2Fb",
        "%41",
        "A",
        ".",
        "..",
        ".lock",
        ".index",
        ".quarantine",
        ".tmp-1",
        ".journal-0",
        "~x",
        "~",
        "~%7Ex",
        "x.json",
        "🎬 movie night",
        "Room",
        "room",
        "ROOM",
        "name with spaces?",
        "\u{a0}",
        &long_plain,
        &over_plain,
        &long_spaces,
        &long_utf8,
        &hashed_lookalike,
    ];
    let room_for = |i: usize, name: &str| {
        let mut r = bare_room(name);
        r["creatorPlexUsername"] = json!(format!("user{i}"));
        r
    };
    let mut d = Daemon::start(Backend::File);
    let mut c = d.connect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(c.save(&room_for(i, name)), 1, "{name:?}");
    }
    for (i, name) in names.iter().enumerate() {
        assert_eq!(c.get(name), Some((room_for(i, name), 1)), "{name:?}");
    }
    assert_eq!(c.list(json!({})).0.len(), names.len());
    drop(c);
    d.stop();

    // Nothing outside storagePath except the harness's own files.
    for p in all_paths_under(d.dir()) {
        let top = p.parent() == Some(d.dir());
        let harness = top
            && p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("daemon-");
        assert!(
            p.starts_with(d.storage()) || harness,
            "file outside storagePath: {}",
            p.display()
        );
    }
    let files = room_files(d.storage());
    assert_eq!(
        files.len(),
        names.len(),
        "rooms sharing a file, or stray files: {files:?}"
    );
    for f in &files {
        assert!(
            fs::symlink_metadata(d.storage().join(f)).unwrap().is_file(),
            "{f} is not a plain file"
        );
    }
    for (i, name) in names.iter().enumerate() {
        let path = d.room_path(name);
        assert!(path.is_file(), "{name:?} expected in {}", path.display());
        assert_eq!(read_json_file(&path), room_for(i, name), "{name:?}");
    }

    d.restart();
    let mut c = d.connect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            c.get(name),
            Some((room_for(i, name), 1)),
            "{name:?} after restart"
        );
    }
}

#[test]
fn hand_written_room_files_load_with_revision_1() {
    let alpha = room("alpha");
    let beta = bare_room("beta");
    let spaced = room("a b");
    let compact = serde_json::to_vec(&beta).unwrap();
    let mut d = start_seeded(&[
        ("alpha.json", &pretty(&alpha)),
        ("beta.json", &compact),
        ("~a%20b.json", &pretty(&spaced)),
    ]);
    let storage = d.storage().to_str().unwrap().to_string();
    d.wait_log(&format!("Using file storage at: {storage}"));
    let mut c = d.connect();
    assert_eq!(room_names(&c.list(json!({})).0), ["a b", "alpha", "beta"]);
    assert_eq!(c.get("alpha"), Some((alpha, 1)));
    assert_eq!(c.get("beta"), Some((beta, 1)));
    assert_eq!(c.get("a b"), Some((spaced, 1)));
    assert_eq!(c.rate("alpha", "m", "u", "like"), (2, true));
    drop(c);
    d.stop();
    // The hand-written file was 0644 (umask 022); the daemon's new version is 0600.
    assert_eq!(
        mode(&d.room_path("alpha")),
        0o600,
        "rewritten room file keeps its old mode"
    );
}

#[test]
fn invalid_files_are_quarantined_at_start_and_the_others_served() {
    let mut invalid = room("invalid");
    invalid["sort"] = json!("alphabetical");
    let broken = b"{\"roomName\": \"broken\", ".to_vec();
    let mut d = start_seeded(&[
        ("good.json", &pretty(&room("good"))),
        ("broken.json", &broken),
        ("invalid.json", &pretty(&invalid)),
        ("empty.json", b""),
    ]);
    let mut c = d.connect();
    assert_eq!(room_names(&c.list(json!({})).0), ["good"]);
    assert!(!c.has("invalid") && !c.has("broken"));
    for file in ["broken.json", "invalid.json", "empty.json"] {
        assert!(
            !d.storage().join(file).exists(),
            "{file} still in storagePath"
        );
        let moved = quarantined(&d, file).unwrap_or_else(|| panic!("{file} not in .quarantine/"));
        d.wait_log(file);
        if file == "broken.json" {
            assert_eq!(
                fs::read(moved).unwrap(),
                broken,
                "quarantined file must be kept as it was"
            );
        }
    }
    drop(c);
    d.stop_and_restart();
    assert_eq!(d.connect().get("good"), Some((room("good"), 1)));
}

#[test]
fn symlinks_in_storage_are_not_followed() {
    let b = Daemon::builder(Backend::File);
    let elsewhere = b.dir().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let target = elsewhere.join("target.json");
    let original = pretty(&room("link"));
    fs::write(&target, &original).unwrap();
    fs::create_dir(b.storage_path()).unwrap();
    fs::set_permissions(b.storage_path(), fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&target, b.storage_path().join("link.json")).unwrap();
    let mut d = b.start();
    let mut c = d.connect();
    assert!(!c.has("link"), "a symlinked room file must not be loaded");
    c.save(&bare_room("link"));
    c.rate("link", "m", "u", "like");
    drop(c);
    d.stop();
    assert_eq!(
        fs::read(&target).unwrap(),
        original,
        "symlink target was written through"
    );
    d.restart();
    assert_eq!(d.connect().get("link").unwrap().1, 2);
}

/// Saves rooms, then restarts so their files are surely current before a test edits them.
fn daemon_with_rooms(names: &[&str]) -> Daemon {
    let mut d = Daemon::start(Backend::File);
    let mut c = d.connect();
    for n in names {
        c.save(&room(n));
        c.rate(n, "m", "u", "like");
    }
    drop(c);
    d.stop_and_restart();
    d
}

fn edited(name: &str) -> Value {
    let mut r = bare_room(name);
    r["creatorPlexUsername"] = json!("edited-by-hand");
    r["ratings"] = json!({"m": [["u", "like", 1]], "n": [["v", "dislike", 2]]});
    r
}

#[test]
fn sighup_applies_edited_new_and_removed_files() {
    let d = daemon_with_rooms(&["changed", "removed", "untouched"]);
    write_room_file(&d.room_path("changed"), &edited("changed"));
    write_room_file(&d.room_path("new room"), &room("new room"));
    fs::remove_file(d.room_path("removed")).unwrap();
    d.sighup();
    let mut c = d.connect();
    d.wait_for("the edited file to be reloaded", || {
        c.get("changed").unwrap().0 == edited("changed")
    });
    assert_eq!(
        c.get("changed").unwrap().1,
        3,
        "a hand-edited file raises the revision by one"
    );
    assert_eq!(c.get("new room"), Some((room("new room"), 1)));
    assert!(!c.has("removed"));
    let mut untouched = room("untouched");
    untouched["ratings"]["m"] = json!([["u", "like", 1_700_000_000_000u64]]);
    assert_eq!(c.get("untouched"), Some((untouched, 2)));

    // Files the daemon wrote itself are not hand edits: a second reload leaves them alone.
    assert_eq!(c.rate("changed", "o", "u", "like"), (4, true));
    write_room_file(&d.room_path("untouched"), &edited("untouched"));
    d.sighup();
    d.wait_for("the second reload", || {
        c.get("untouched").unwrap().0 == edited("untouched")
    });
    assert_eq!(c.get("changed").unwrap().1, 4);
    assert_eq!(c.get("new room").unwrap().1, 1);
}

#[test]
fn sighup_quarantines_an_invalid_edit_and_rewrites_the_room() {
    let mut d = daemon_with_rooms(&["r", "s"]);
    let mut c = d.connect();
    let (r_before, s_before) = (c.get("r").unwrap(), c.get("s").unwrap());
    fs::write(d.room_path("r"), b"{ this is not json").unwrap();
    let mut not_a_room = room("s");
    not_a_room["ratings"] = json!({"m": [["u", "meh", 1]]});
    write_room_file(&d.room_path("s"), &not_a_room);
    d.sighup();
    for (name, before) in [("r", &r_before), ("s", &s_before)] {
        let file = room_file_name(name);
        wait_quarantined(&d, &file);
        d.wait_log(&file);
        d.wait_for(&format!("{file} to be written again"), || {
            fs::read(d.room_path(name))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                == Some(before.0.clone())
        });
        assert_eq!(
            &c.get(name).unwrap(),
            before,
            "{name} keeps its state and revision"
        );
    }
    drop(c);
    d.stop_and_restart();
    assert_eq!(
        d.connect().get("r").unwrap(),
        r_before,
        "the rewritten file is not a hand edit"
    );
}

#[test]
fn hand_edit_while_stopped_raises_the_revision_once() {
    let mut d = daemon_with_rooms(&["r"]);
    assert_eq!(
        d.connect().get("r").unwrap().1,
        2,
        "an unchanged file keeps its revision"
    );
    d.stop();
    write_room_file(&d.room_path("r"), &edited("r"));
    d.restart();
    assert_eq!(d.connect().get("r"), Some((edited("r"), 3)));
    d.stop_and_restart();
    assert_eq!(d.connect().get("r"), Some((edited("r"), 3)));
}

#[test]
fn leftover_temporary_files_are_removed_at_start() {
    let d = start_seeded(&[
        ("r.json", &pretty(&room("r"))),
        (".tmp-123", b"{\"roomName\": \"half"),
        (".tmp-r.json.456", &pretty(&room("r"))),
    ]);
    d.wait_for("leftover .tmp-* files to be removed", || {
        dir_entries(d.storage())
            .iter()
            .all(|n| !n.starts_with(".tmp-"))
    });
    assert_eq!(d.connect().get("r"), Some((room("r"), 1)));
}

fn snapshot(storage: &Path) -> Vec<(String, Vec<u8>)> {
    room_files(storage)
        .into_iter()
        .map(|f| (f.clone(), fs::read(storage.join(&f)).unwrap()))
        .collect()
}

#[test]
fn bad_input_never_changes_stored_data() {
    let mut d = Daemon::start_with(Backend::File, ["--max-request-bytes", "65536"]);
    let mut c = d.connect();
    c.save(&room("r"));
    c.save(&room("s"));
    c.rate("s", "m", "u", "like");
    drop(c);
    d.stop_and_restart();
    let files = snapshot(d.storage());
    let mut c = d.connect();
    let state = c.list(json!({"summary": true})).0;

    let mut bad_room = room("r");
    bad_room["ratings"] = json!({"plex://movie/1": [["u", "meh", 1]]});
    let mut oversized = room("r");
    oversized["pad"] = json!("x".repeat(100_000));
    let garbage: Vec<Vec<u8>> = vec![
        b"{\"op\":\"saveRoom\",\"room\":".to_vec(),
        b"\xff\xfe{\"op\":\"deleteRoom\",\"roomName\":\"r\"}".to_vec(),
        b"[{\"op\":\"deleteRoom\",\"roomName\":\"r\"}]".to_vec(),
        json!({"op": "saveRoom", "room": oversized}).to_string().into_bytes(),
        json!({"op": "saveRoom", "room": bad_room}).to_string().into_bytes(),
        json!({"op": "saveRoom", "room": room("r"), "expectedRevision": 7}).to_string().into_bytes(),
        json!({"op": "saveRoom", "room": room("r"), "expectedRevision": 0}).to_string().into_bytes(),
        json!({"op": "saveRoom", "room": room("r"), "extra": 1}).to_string().into_bytes(),
        json!({"op": "saveRoom", "room": room("r\n")}).to_string().into_bytes(),
        json!({"op": "deleteRoom", "roomName": "r", "expectedRevision": 3}).to_string().into_bytes(),
        json!({"op": "deleteRoom", "roomName": ["r"]}).to_string().into_bytes(),
        json!({"op": "deleteRooms", "createdBefore": "tomorrow"}).to_string().into_bytes(),
        json!({"op": "addRating", "roomName": "s", "mediaId": "m", "userName": "v", "rating": "meh"}).to_string().into_bytes(),
        json!({"op": "addRating", "roomName": "s", "mediaId": "m", "userName": "u", "rating": "dislike"}).to_string().into_bytes(),
        json!({"op": "setProgress", "roomName": "s", "userName": "u", "progress": -1}).to_string().into_bytes(),
        json!({"op": "setProgress", "roomName": "nope", "userName": "u", "progress": 1}).to_string().into_bytes(),
        json!({"op": "dropAllRooms"}).to_string().into_bytes(),
    ];
    for line in &garbage {
        c.send_raw(&[line.as_slice(), b"\n"].concat());
        let r = c.read_json();
        assert!(
            r["ok"] == false || r["added"] == false,
            "bad input was accepted: {r}"
        );
    }
    assert_eq!(c.list(json!({"summary": true})).0, state);
    assert_eq!(snapshot(d.storage()), files, "room files changed");
    drop(c);
    d.stop();
    let after = snapshot(d.storage());
    assert_eq!(
        after.iter().map(|f| &f.0).collect::<Vec<_>>(),
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, bytes), (_, old)) in after.iter().zip(&files) {
        let (now, was): (Value, Value) = (
            serde_json::from_slice(bytes).unwrap(),
            serde_json::from_slice(old).unwrap(),
        );
        assert_eq!(now, was, "{name} changed");
    }
    d.restart();
    assert_eq!(d.connect().list(json!({"summary": true})).0, state);
}

#[test]
fn sighup_refuses_an_edit_of_a_file_behind_the_journal() {
    let mut d = daemon_with_rooms(&["r"]);
    let mut c = d.connect();
    assert_eq!(c.rate("r", "later", "u", "like"), (3, true)); // only in the journal yet
    let latest = c.get("r").unwrap();
    write_room_file(&d.room_path("r"), &edited("r"));
    d.sighup();
    let aside = wait_quarantined(&d, "r.json");
    assert_eq!(
        read_json_file(&aside),
        edited("r"),
        "the edit is kept aside"
    );
    d.wait_log("refused the hand edit of room \"r\"");
    d.wait_for("the file to be written again", || {
        fs::read(d.room_path("r"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            == Some(latest.0.clone())
    });
    assert_eq!(
        c.get("r").unwrap(),
        latest,
        "the acknowledged rating was undone"
    );
    drop(c);
    d.stop_and_restart();
    assert_eq!(d.connect().get("r").unwrap(), latest);
}

#[test]
fn a_file_named_otherwise_is_loaded_under_its_room_name() {
    // E.g. a file the original storage layer named after a sanitised room name.
    let mut d = start_seeded(&[("movie_night.json", &pretty(&room("movie night")))]);
    assert_eq!(
        d.connect().get("movie night"),
        Some((room("movie night"), 1))
    );
    assert!(!d.connect().has("movie_night"));
    d.stop();
    assert_eq!(room_files(d.storage()), [room_file_name("movie night")]);
    d.restart();
    assert_eq!(
        d.connect().get("movie night"),
        Some((room("movie night"), 1))
    );
}

#[test]
fn two_files_for_one_room_lose_nothing() {
    let canonical = room("a b");
    let other = with(room("a b"), json!({"creatorPlexUsername": "other"}));
    let mut d = start_seeded(&[
        ("~a%20b.json", &pretty(&canonical)),
        ("copy.json", &pretty(&other)),
    ]);
    let (served, rev) = d.connect().get("a b").unwrap();
    assert!(served == canonical || served == other, "{served}");
    assert_eq!((rev, d.connect().list(json!({})).0.len()), (1, 1));
    d.stop();
    let mut kept = Vec::new();
    for p in all_paths_under(d.storage())
        .into_iter()
        .filter(|p| p.is_file())
    {
        if let Ok(v) = serde_json::from_slice::<Value>(&fs::read(&p).unwrap()) {
            kept.push(v);
        }
    }
    assert!(
        kept.contains(&canonical) && kept.contains(&other),
        "a version was lost: {kept:?}"
    );
}

#[test]
fn other_files_and_directories_in_storage_are_left_alone() {
    let b = Daemon::builder(Backend::File);
    let old = b.storage_path().join("old");
    fs::create_dir_all(&old).unwrap();
    fs::set_permissions(b.storage_path(), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(old.join("x.json"), pretty(&room("x"))).unwrap();
    fs::write(b.storage_path().join("notes.txt"), "not a room\n").unwrap();
    fs::create_dir(b.storage_path().join("dir.json")).unwrap();
    // Reading a FIFO would block the daemon forever.
    let fifo =
        std::ffi::CString::new(b.storage_path().join("fifo.json").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path that mkfifo only reads.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let mut d = b.start();
    assert_eq!(d.connect().list(json!({})).0, Vec::<Value>::new());
    d.stop();
    assert_eq!(fs::read(old.join("x.json")).unwrap(), pretty(&room("x")));
    assert_eq!(
        fs::read_to_string(d.storage().join("notes.txt")).unwrap(),
        "not a room\n"
    );
    assert!(d.storage().join("dir.json").is_dir() && d.storage().join("fifo.json").exists());
}

/// Contents of every file in `.quarantine/`, sorted.
fn quarantine_contents(d: &Daemon) -> Vec<Vec<u8>> {
    let q = d.storage().join(".quarantine");
    let mut all: Vec<Vec<u8>> = dir_entries(&q)
        .iter()
        .map(|n| fs::read(q.join(n)).unwrap())
        .collect();
    all.sort();
    all
}

#[test]
fn quarantine_keeps_every_invalid_version_of_a_file() {
    let d = start_seeded(&[("broken.json", b"{ first")]);
    wait_quarantined(&d, "broken.json");
    fs::write(d.storage().join("broken.json"), b"{ second").unwrap();
    d.sighup();
    d.wait_for("the second broken.json in .quarantine/", || {
        quarantine_contents(&d).len() == 2
    });
    assert_eq!(
        quarantine_contents(&d),
        [b"{ first".to_vec(), b"{ second".to_vec()]
    );
    d.connect().ping();
}

#[test]
fn an_invalid_file_with_a_255_byte_name_is_quarantined_too() {
    // The longest name the daemon itself uses: a plain 250-byte room name plus ".json".
    let long = format!("{}.json", "q".repeat(250));
    let d = start_seeded(&[
        (long.as_str(), b"{ long"),
        ("good.json", &pretty(&room("good"))),
    ]);
    d.wait_log(&long);
    assert_eq!(d.connect().get("good"), Some((room("good"), 1)));
    let stderr = d.stderr();
    assert!(
        !d.storage().join(&long).exists(),
        "not moved aside; stderr:\n{stderr}"
    );
    assert_eq!(quarantine_contents(&d), [b"{ long".to_vec()]);
}

#[test]
fn a_ten_megabyte_room_survives_a_restart_in_its_file() {
    let mut d = Daemon::start(Backend::File);
    let big = with(room("huge"), json!({"blob": "é🎬x".repeat(1_500_000)}));
    let mut c = d.connect();
    c.save(&big);
    assert_eq!(c.rate("huge", "m", "u", "like"), (2, true));
    drop(c);
    d.stop();
    let on_disk = read_json_file(&d.room_path("huge"));
    assert_eq!(
        (
            on_disk["blob"] == big["blob"],
            &on_disk["ratings"]["m"][0][0]
        ),
        (true, &json!("u"))
    );
    d.restart();
    assert_eq!(d.connect().get("huge"), Some((on_disk, 2)));
}

#[test]
fn an_invalid_edit_of_a_room_with_a_250_byte_name_is_not_lost() {
    let name = "q".repeat(250); // plain: its file name is 255 bytes
    let d = daemon_with_rooms(&[name.as_str()]);
    let before = d.connect().get(&name).unwrap();
    fs::write(d.room_path(&name), b"{ hand edit").unwrap();
    d.sighup();
    d.wait_for("the room file to be written again", || {
        fs::read(d.room_path(&name))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            == Some(before.0.clone())
    });
    assert_eq!(d.connect().get(&name), Some(before));
    let stderr = d.stderr();
    assert_eq!(
        quarantine_contents(&d),
        [b"{ hand edit".to_vec()],
        "edit lost; stderr:\n{stderr}"
    );
}

#[test]
fn deleted_rooms_leave_no_file_behind() {
    let d = daemon_with_rooms(&["a", "b c", "d"]);
    let mut c = d.connect();
    c.expect(
        json!({"op": "deleteRoom", "roomName": "a"}),
        json!({"deleted": true}),
    );
    let all = json!({"op": "deleteRooms", "createdBefore": "2999-01-01T00:00:00Z"});
    c.expect(all, json!({"deleted": 2}));
    drop(c);
    let mut d = d;
    d.stop();
    assert_eq!(room_files(d.storage()), Vec::<String>::new());
    d.restart();
    assert_eq!(d.connect().list(json!({})).0, Vec::<Value>::new());
}

#[test]
fn a_torn_journal_tail_is_ignored_and_writing_goes_on() {
    let mut d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("r"));
    assert_eq!(c.rate("r", "m1", "u", "like"), (2, true));
    d.kill9();
    // What a power cut in the middle of an append leaves: a partial record at the end.
    let journal = dir_entries(d.storage())
        .into_iter()
        .filter(|n| n.starts_with(".journal-"))
        .max_by_key(|n| n[9..].parse::<u64>().unwrap_or(0))
        .expect("a .journal-* file");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(d.storage().join(&journal))
        .unwrap();
    std::io::Write::write_all(&mut f, b"\x00\x00\x10\x00{\"op\":\"save\",\"ro").unwrap();
    drop(f);
    d.restart();
    let mut c = d.connect();
    assert_eq!(
        c.get("r").unwrap().1,
        2,
        "acknowledged changes before the torn tail"
    );
    assert_eq!(c.rate("r", "m2", "u", "like"), (3, true));
    d.kill9();
    d.restart();
    let (room, rev) = d.connect().get("r").unwrap();
    assert_eq!(
        (rev, room["ratings"]["m2"][0][0].as_str()),
        (3, Some("u")),
        "lost after the tail"
    );
}

/// Writes `marker.json` by hand and sends SIGHUP; returns once that reload was applied.
fn sighup_and_wait(d: &Daemon, c: &mut Conn) {
    let marker = with(
        room("marker"),
        json!({"creatorPlexUsername": format!("m{}", now_ms())}),
    );
    write_room_file(&d.storage().join("marker.json"), &marker);
    d.sighup();
    d.wait_for("the SIGHUP reload", || {
        c.get("marker").is_some_and(|m| m.0 == marker)
    });
}

#[test]
fn sighup_does_not_undo_changes_not_yet_in_the_files() {
    let d = daemon_with_rooms(&["rated", "deleted"]);
    let mut c = d.connect();
    assert_eq!(c.rate("rated", "later", "u", "like"), (3, true));
    c.expect(
        json!({"op": "deleteRoom", "roomName": "deleted"}),
        json!({"deleted": true}),
    );
    sighup_and_wait(&d, &mut c);
    let (room, rev) = c.get("rated").unwrap();
    assert_eq!(
        (rev, room["ratings"]["later"][0][0].as_str()),
        (3, Some("u")),
        "reverted: {room}"
    );
    assert!(
        !c.has("deleted"),
        "a deleted room came back from its old file"
    );
}

#[test]
fn sighup_after_removing_a_file_with_pending_changes_keeps_the_room() {
    // The file lacked an acknowledged rating: removing it must not delete the room (issue 14).
    let mut d = daemon_with_rooms(&["r"]);
    let mut c = d.connect();
    assert_eq!(c.rate("r", "later", "u", "like"), (3, true));
    let (latest, _) = c.get("r").unwrap();
    fs::remove_file(d.room_path("r")).unwrap();
    sighup_and_wait(&d, &mut c);
    assert_eq!(c.get("r"), Some((latest.clone(), 3)));
    drop(c);
    d.stop();
    assert_eq!(
        read_json_file(&d.room_path("r")),
        latest,
        "the room's file was not written again"
    );
    d.restart();
    assert_eq!(d.connect().get("r"), Some((latest, 3)));
}

#[test]
fn sighup_sets_aside_a_hand_written_file_for_a_room_not_yet_on_disk() {
    let mut d = Daemon::start(Backend::File);
    let mut c = d.connect();
    c.save(&room("fresh")); // its file does not exist yet: the edit was not made on it
    write_room_file(&d.room_path("fresh"), &edited("fresh"));
    sighup_and_wait(&d, &mut c);
    assert_eq!(c.get("fresh"), Some((room("fresh"), 1)));
    assert_eq!(
        read_json_file(&wait_quarantined(&d, "fresh.json")),
        edited("fresh")
    );
    drop(c);
    d.stop();
    assert_eq!(read_json_file(&d.room_path("fresh")), room("fresh"));
}

#[test]
fn the_start_up_cache_is_private_and_never_hides_a_hand_edit() {
    // The restart in `daemon_with_rooms` parsed both files, so it wrote `.cache`.
    let mut d = daemon_with_rooms(&["a", "b"]);
    d.stop();
    let cache = d.storage().join(".cache");
    let mode = fs::metadata(&cache)
        .expect("a start that parsed room files writes .cache")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    write_room_file(&d.room_path("a"), &edited("a"));
    d.restart();
    let mut c = d.connect();
    assert_eq!(c.get("a").unwrap().0, edited("a"));
    assert_eq!(c.get("b").unwrap().0["roomName"], "b");
    drop(c);
    d.wait_log("loaded 2 room(s)");
    assert!(
        d.stderr().contains("(1 of them as .cache had them)"),
        "{}",
        d.stderr()
    );
    // A damaged cache costs only time.
    d.stop();
    fs::write(
        &cache,
        b"moviematch-storaged room cache 1\n\xff\xff\xff\xff",
    )
    .unwrap();
    d.restart();
    assert_eq!(d.connect().get("a").unwrap().0, edited("a"));
}

/// Issue 14: a SIGHUP that cannot re-read the room files logs the error as text that names the
/// directory and the OS error, not as a Rust debug structure.
#[test]
fn a_failed_sighup_is_logged_as_text() {
    let mut d = daemon_with_rooms(&["r"]);
    let storage = d.storage().to_owned();
    let away = storage.with_extension("away");
    fs::rename(&storage, &away).unwrap();
    d.sighup();
    d.wait_log("SIGHUP: could not re-read the room files");
    fs::rename(&away, &storage).unwrap();
    let log = d.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("SIGHUP: could not re-read"))
        .unwrap();
    assert!(
        line.contains("could not re-read the room files: cannot ")
            && line.contains(&storage.display().to_string())
            && line.ends_with("No such file or directory (os error 2)"),
        "{line}"
    );
    assert!(
        !line.contains("Storage {") && !line.contains("cause:"),
        "{line}"
    );
    d.stop();
}
