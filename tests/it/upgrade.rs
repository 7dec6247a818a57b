//! Upgrading a storage directory MovieMatch's own `FileStorage` wrote, and downgrading and
//! upgrading again (issue 16): the newest write of every room is served, a copy under an
//! unrelated name never wins, losers are kept in `.quarantine/`, and taken-over files are 0600.
//!
//! MovieMatch writes `JSON.stringify(room, null, 2)` (no final newline) to
//! `<name with every character outside [a-zA-Z0-9_-] replaced by _>.json`, mode 0644.

use crate::harness::*;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Writes `room` as MovieMatch's FileStorage does, with the given age (mtime in the past).
fn movie_match_writes(dir: &Path, file: &str, room: &Value, age: Duration) {
    let path = dir.join(file);
    fs::write(&path, serde_json::to_string_pretty(room).unwrap()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let f = fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn by(room: Value, who: &str) -> Value {
    with(room, json!({ "creatorPlexUsername": who }))
}

fn quarantine(d: &Daemon) -> Vec<(String, Value)> {
    let q = d.storage().join(".quarantine");
    dir_entries(&q)
        .into_iter()
        .map(|n| {
            let v = read_json_file(&q.join(&n));
            (n, v)
        })
        .collect()
}

#[test]
fn a_stale_copy_under_another_name_never_wins() {
    let b = Daemon::builder(Backend::File);
    fs::create_dir(b.storage_path()).unwrap();
    let current = by(room("x.y"), "current");
    let stale = by(room("x.y"), "stale copy");
    // The copy is even the newer file: its name alone says it is not the room's file.
    movie_match_writes(
        b.storage_path(),
        "x_y.json",
        &current,
        Duration::from_secs(3600),
    );
    movie_match_writes(
        b.storage_path(),
        "x_y-copy.json",
        &stale,
        Duration::from_secs(60),
    );
    let mut d = b.start();
    assert_eq!(d.connect().get("x.y"), Some((current.clone(), 1)));
    let aside = quarantine(&d);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].0.starts_with("x_y-copy.json.") && aside[0].1 == stale);
    let warning = d.stderr();
    let warning = warning
        .lines()
        .find(|l| l.contains("is in both"))
        .expect("a warning naming both files");
    assert!(
        warning.contains("WARN")
            && warning.contains("x_y.json")
            && warning.contains("x_y-copy.json"),
        "{warning}"
    );
    d.stop();
    assert_eq!(room_files(d.storage()), [room_file_name("x.y")]);
    assert_eq!(read_json_file(&d.room_path("x.y")), current);
    d.restart();
    assert_eq!(d.connect().get("x.y"), Some((current, 1)));
}

#[test]
fn after_a_downgrade_and_an_upgrade_moviematchs_newer_file_wins() {
    let mut d = Daemon::start(Backend::File);
    let mut c = d.connect();
    let old = by(room("film.club"), "before the downgrade");
    c.save(&old);
    c.rate("film.club", "m", "u", "like");
    let (daemons_version, revision) = c.get("film.club").unwrap();
    assert_eq!(revision, 2);
    drop(c);
    d.stop();
    assert_eq!(room_files(d.storage()), ["~film%2Eclub.json"]);

    // MovieMatch runs again on the directory: it does not see `~film%2Eclub.json`, so the
    // room it creates under the same name goes to `film_club.json`.
    std::thread::sleep(Duration::from_millis(20));
    let newer = by(room("film.club"), "after the downgrade");
    movie_match_writes(d.storage(), "film_club.json", &newer, Duration::ZERO);

    d.restart();
    let (served, now) = d.connect().get("film.club").unwrap();
    assert_eq!(served, newer, "the older write was served");
    assert!(now > revision, "revision {now} not above {revision}");
    let aside = quarantine(&d);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].0.starts_with("~film%2Eclub.json."));
    assert_eq!(aside[0].1, daemons_version);
    let log = d.stderr();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("is in both")
            && l.contains("film_club.json")
            && l.contains("~film%2Eclub.json")),
        "{log}"
    );
    d.stop();
    assert_eq!(room_files(d.storage()), ["~film%2Eclub.json"]);
    assert_eq!(read_json_file(&d.room_path("film.club")), newer);
    d.restart();
    assert_eq!(d.connect().get("film.club"), Some((newer, now)));
}

#[test]
fn files_moviematch_wrote_0644_are_made_0600_without_a_write() {
    let b = Daemon::builder(Backend::File);
    fs::create_dir(b.storage_path()).unwrap();
    movie_match_writes(
        b.storage_path(),
        "movie-night.json",
        &room("movie-night"),
        Duration::ZERO,
    );
    let mut d = b.start();
    let mut c = d.connect();
    assert_eq!(c.get("movie-night"), Some((room("movie-night"), 1)));
    assert_eq!(mode(&d.room_path("movie-night")), 0o600);
    d.wait_log("made 1 room file(s)");
    // So is a file MovieMatch (or a hand) writes while the daemon runs, once SIGHUP takes it.
    movie_match_writes(d.storage(), "later.json", &room("later"), Duration::ZERO);
    d.sighup();
    d.wait_for("the new room", || c.has("later"));
    assert_eq!(mode(&d.room_path("later")), 0o600);
    drop(c);
    d.stop_and_restart();
    // Making a file private is not an edit: its revision stays.
    assert_eq!(
        d.connect().get("movie-night"),
        Some((room("movie-night"), 1))
    );
}
