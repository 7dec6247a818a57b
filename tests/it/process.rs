//! PROTOCOL.md sections 5-6 seen from outside the process: signals, durability across restarts
//! and SIGKILL, the storage lock and the socket, file modes, configuration, room expiry.

use crate::harness::*;
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

for_each_backend!(
    sigterm_exits_zero_and_removes_the_socket,
    sigint_exits_zero_and_removes_the_socket
);

fn stop_with(b: Backend, sig: libc::c_int) {
    let mut d = Daemon::start(b);
    let mut c = d.connect();
    c.save(&room("r"));
    let _idle = d.connect(); // idle clients, even mid-line, must not hold the daemon up
    let mut partial = d.connect();
    partial.send_raw(b"{\"op\":\"pi");
    d.signal(sig);
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", d.stderr());
    assert!(!d.socket().exists(), "socket file left behind");
    assert_eq!(c.read_line(), None, "connections are closed on exit");
}

fn sigterm_exits_zero_and_removes_the_socket(b: Backend) {
    stop_with(b, libc::SIGTERM);
}

fn sigint_exits_zero_and_removes_the_socket(b: Backend) {
    stop_with(b, libc::SIGINT);
}

/// Several clients pipeline addRating; SIGTERM arrives mid-stream. Every response is `ok` or
/// `shutting_down`, in order; after a restart exactly the acknowledged ratings are there.
fn sigterm_with_requests_in_flight(durability: &str) {
    const CLIENTS: usize = 4;
    const EACH: usize = 3000;
    let mut d = Daemon::start_with(Backend::File, ["--durability", durability]);
    d.connect().save(&bare_room("r"));
    let (first_answer, first_answers) = mpsc::channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let mut c = d.connect();
            let mut w = c.writer();
            let first = first_answer.clone();
            thread::spawn(move || {
                let writer = thread::spawn(move || {
                    for i in 0..EACH {
                        let req = json!({"id": i, "op": "addRating", "roomName": "r", "mediaId": format!("m{t}-{i}"),
                                         "userName": "u", "rating": "like", "timestamp": i});
                        if w.write_all(format!("{req}\n").as_bytes()).is_err() {
                            break; // the daemon closed the connection
                        }
                    }
                });
                let mut outcomes: Vec<(String, bool)> = Vec::new();
                while let Some(line) = c.read_line() {
                    let r: Value = serde_json::from_str(&line).unwrap();
                    let i = outcomes.len();
                    assert_eq!(r["id"], i, "responses must come in request order: {r}");
                    if r["ok"] == true {
                        assert_eq!(r["added"], true, "{r}");
                    } else {
                        assert_err(&r, "shutting_down");
                    }
                    outcomes.push((format!("m{t}-{i}"), r["ok"] == true));
                    if i == 0 {
                        first.send(()).unwrap();
                    }
                }
                writer.join().unwrap();
                outcomes
            })
        })
        .collect();
    for _ in 0..CLIENTS {
        first_answers
            .recv_timeout(Duration::from_secs(30))
            .expect("every client got a first answer");
    }
    d.signal(libc::SIGTERM);
    let status = d.wait_exit();
    let outcomes: Vec<(String, bool)> = clients
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", d.stderr());
    d.restart();
    let (room, rev) = d.connect().get("r").unwrap();
    let stored = room["ratings"].as_object().cloned().unwrap_or_default();
    let acked: Vec<&String> = outcomes
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(m, _)| m)
        .collect();
    for (media, ok) in &outcomes {
        assert_eq!(
            stored.contains_key(media),
            *ok,
            "{media}: answered ok={ok} but stored={}",
            !ok
        );
    }
    assert!(!acked.is_empty());
    assert_eq!(
        stored.len(),
        acked.len(),
        "a request was applied but never answered"
    );
    assert_eq!(
        rev,
        1 + stored.len() as u64,
        "revision counts every stored rating"
    );
}

#[test]
fn sigterm_with_requests_in_flight_strict() {
    sigterm_with_requests_in_flight("strict");
}

#[test]
fn sigterm_with_requests_in_flight_relaxed() {
    sigterm_with_requests_in_flight("relaxed");
}

/// Rooms, ratings, progress, deletions and revisions survive a clean restart.
fn state_survives_restart(args: &[&str], stop: libc::c_int) {
    let mut d = Daemon::start_with(Backend::File, args.iter().copied());
    let mut c = d.connect();
    let long = "L".repeat(255);
    for name in ["plain", "a/b", "🎬 night", &long, "gone"] {
        c.save(&room(name));
    }
    c.rate("plain", "m1", "ann", "like");
    c.rate("plain", "m1", "ann", "dislike"); // not added
    c.rate("a/b", "m2", "bob", "dislike");
    c.ok(json!({"op": "setProgress", "roomName": "🎬 night", "userName": "ann", "progress": 9}));
    c.save(&bare_room(&long));
    c.ok(json!({"op": "deleteRoom", "roomName": "gone"}));
    let before = c.list(json!({})).0;
    let revs: Vec<u64> = room_names(&before)
        .iter()
        .map(|n| c.get(n).unwrap().1)
        .collect();
    assert_eq!(revs, [2, 2, 2, 2]);
    drop(c);
    d.signal(stop);
    assert_eq!(d.wait_exit().code(), Some(0), "stderr:\n{}", d.stderr());
    for r in &before {
        let name = r["roomName"].as_str().unwrap();
        assert_eq!(
            &read_json_file(&d.room_path(name)),
            r,
            "room file of {name} after a clean stop"
        );
    }
    d.restart();
    let mut c = d.connect();
    assert_eq!(c.list(json!({})).0, before);
    for (r, rev) in before.iter().zip(revs) {
        let name = r["roomName"].as_str().unwrap();
        assert_eq!(c.get(name), Some((r.clone(), rev)), "{name}");
    }
    assert!(!c.has("gone"));
    assert_eq!(
        c.rate("plain", "m3", "ann", "like"),
        (3, true),
        "revisions carry on after a restart"
    );
}

#[test]
fn state_survives_sigterm_restart_strict() {
    state_survives_restart(&["--durability", "strict"], libc::SIGTERM);
}

#[test]
fn state_survives_sigint_restart_relaxed() {
    state_survives_restart(
        &["--durability", "relaxed", "--flush-interval-ms", "600000"],
        libc::SIGINT,
    );
}

fn survives_sigkill(args: &[&str], flush_first: bool) {
    let mut d = Daemon::start_with(Backend::File, args.iter().copied());
    // Rooms whose files are on disk before the changes: stale files must not win on restart.
    let mut c = d.connect();
    c.save(&room("old"));
    c.save(&room("old-doomed"));
    drop(c);
    d.stop_and_restart();
    let mut c = d.connect();
    assert_eq!(c.rate("old", "m", "ann", "like"), (2, true));
    c.ok(json!({"op": "deleteRoom", "roomName": "old-doomed"}));
    c.save(&room("r"));
    c.save(&room("doomed"));
    assert_eq!(c.rate("r", "m", "ann", "like"), (2, true));
    c.ok(json!({"op": "setProgress", "roomName": "r", "userName": "ann", "progress": 4}));
    c.ok(json!({"op": "deleteRoom", "roomName": "doomed"}));
    if flush_first {
        c.ok(json!({"op": "flush"}));
    }
    d.kill9();
    assert!(
        d.socket().exists(),
        "kill -9 leaves the socket file: the restart must replace it"
    );
    d.restart();
    let mut c = d.connect();
    let (room, rev) = c.get("r").expect("acknowledged room lost");
    assert_eq!(rev, 3);
    assert_eq!(
        room["ratings"]["m"],
        json!([["ann", "like", 1_700_000_000_000u64]])
    );
    assert_eq!(room["userProgress"]["ann"], 4);
    assert!(!c.has("doomed"), "acknowledged delete lost");
    assert!(
        !c.has("old-doomed"),
        "acknowledged delete of a room with a file lost"
    );
    let (room, rev) = c.get("old").unwrap();
    assert_eq!(
        (rev, &room["ratings"]["m"][0][0]),
        (2, &json!("ann")),
        "stale file won"
    );
}

#[test]
fn a_failed_write_is_a_storage_error_and_changes_nothing() {
    let mut d = Daemon::builder(Backend::File)
        .file_size_limit(2 << 20)
        .start();
    let mut c = d.connect();
    c.save(&room("small"));
    let pad = json!({"pad": "x".repeat(3 << 20)});
    c.err(
        json!({"op": "saveRoom", "room": with(room("big"), pad.clone())}),
        "storage",
    );
    c.err(
        json!({"op": "saveRoom", "room": with(room("small"), pad)}),
        "storage",
    );
    assert_eq!(c.get("big"), None, "a failed save created the room");
    assert_eq!(
        c.get("small"),
        Some((room("small"), 1)),
        "a failed save changed the room"
    );
    assert_eq!(
        c.rate("small", "m", "u", "like"),
        (2, true),
        "the daemon carries on"
    );
    drop(c);
    d.stop();
    d.clear_file_size_limit();
    d.restart();
    let mut c = d.connect();
    assert!(!c.has("big"));
    let (room, rev) = c.get("small").unwrap();
    assert_eq!((rev, room.get("pad")), (2, None));
}

#[test]
fn acknowledged_changes_survive_sigkill_in_strict_mode() {
    survives_sigkill(&["--durability", "strict"], false);
}

#[test]
fn flushed_changes_survive_sigkill_in_relaxed_mode() {
    survives_sigkill(
        &["--durability", "relaxed", "--flush-interval-ms", "600000"],
        true,
    );
}

#[test]
fn second_daemon_on_the_same_storage_dir_is_refused() {
    let d = Daemon::start(Backend::File);
    d.connect().save(&room("r"));
    let other_socket = d.dir().join("other.sock");
    let e = d.sibling().socket(&other_socket).run_to_exit();
    let dir = d.storage().to_str().unwrap();
    assert!(
        !e.status.success(),
        "second daemon exited with {}",
        e.status
    );
    assert!(
        e.stderr.contains(dir),
        "message must name {dir}:\n{}",
        e.stderr
    );
    assert!(
        !other_socket.exists(),
        "a refused daemon leaves no socket behind"
    );
    // The same directory under another path is the same directory.
    let alias = d.dir().join("alias");
    std::os::unix::fs::symlink(d.storage(), &alias).unwrap();
    let e = d
        .sibling()
        .socket(&other_socket)
        .storage(&alias)
        .run_to_exit();
    assert!(
        !e.status.success(),
        "second daemon via a symlink exited with {}",
        e.status
    );
    assert_eq!(
        d.connect().get("r"),
        Some((room("r"), 1)),
        "first daemon unaffected"
    );
}

#[test]
fn a_regular_file_at_the_socket_path_is_not_replaced() {
    let b = Daemon::builder(Backend::Memory);
    std::fs::write(b.socket_path(), "important").unwrap();
    let path = b.socket_path().to_path_buf();
    let e = b.run_to_exit();
    assert!(
        !e.status.success() && e.stderr.contains(path.to_str().unwrap()),
        "{}",
        e.stderr
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "important");
}

#[test]
fn second_daemon_on_a_live_socket_is_refused() {
    let d = Daemon::start(Backend::File);
    let e = Daemon::builder(Backend::File)
        .socket(d.socket())
        .run_to_exit();
    assert!(
        !e.status.success(),
        "second daemon exited with {}",
        e.status
    );
    let sock = d.socket().to_str().unwrap();
    assert!(
        e.stderr.contains(sock),
        "message must name {sock}:\n{}",
        e.stderr
    );
    assert!(
        d.socket().exists(),
        "the live daemon's socket file was removed"
    );
    d.connect().ping();
}

#[test]
fn stale_socket_file_is_replaced() {
    let b = Daemon::builder(Backend::Memory);
    drop(UnixListener::bind(b.socket_path()).unwrap()); // bound, then abandoned
    assert!(b.socket_path().exists());
    let d = b.start();
    d.connect().ping();
}

fn modes_under_umask(mask: libc::mode_t) {
    let mut d = Daemon::builder(Backend::File).umask(mask).start();
    let mut c = d.connect();
    c.save(&room("r"));
    c.save(&room("a b"));
    c.rate("r", "m", "u", "like");
    assert_eq!(
        mode(d.socket()),
        0o660,
        "socket mode under umask {mask:03o}"
    );
    drop(c);
    d.stop_and_restart();
    assert_eq!(
        mode(d.socket()),
        0o660,
        "socket mode under umask {mask:03o}"
    );
    assert_eq!(
        mode(d.storage()),
        0o700,
        "storage dir under umask {mask:03o}"
    );
    for name in ["r", "a b"] {
        assert_eq!(
            mode(&d.room_path(name)),
            0o600,
            "room file {name} under umask {mask:03o}"
        );
    }
    // The daemon's own files (journal, index) can hold passwords too.
    for p in all_paths_under(d.storage()) {
        assert_eq!(mode(&p) & 0o077, 0, "{} is readable by others", p.display());
    }
}

#[test]
fn modes_under_a_permissive_umask() {
    modes_under_umask(0o000);
}

#[test]
fn modes_under_a_restrictive_umask() {
    modes_under_umask(0o077);
}

#[test]
fn socket_mode_is_configurable() {
    let d = Daemon::start_with(Backend::Memory, ["--socket-mode", "0600"]);
    assert_eq!(mode(d.socket()), 0o600);
    let d = Daemon::builder(Backend::Memory)
        .config_yaml("socketMode: 0640\n")
        .start();
    assert_eq!(
        mode(d.socket()),
        0o640,
        "an unquoted YAML number is read as octal digits"
    );
}

#[test]
fn no_configuration_in_an_empty_directory_just_works() {
    let mut d = DaemonBuilder::bare().start();
    let mut c = d.connect();
    assert_eq!(c.ok(json!({"op": "stats"}))["backend"], "file");
    c.save(&room("r"));
    drop(c);
    assert!(
        d.stderr().contains("Using file storage at: "),
        "stderr:\n{}",
        d.stderr()
    );
    assert!(d.stderr().contains("data/rooms"), "stderr:\n{}", d.stderr());
    d.stop();
    assert!(!d.socket().exists());
    assert_eq!(read_json_file(&d.storage().join("r.json")), room("r"));
}

/// Starting must fail with exactly one stderr line naming one of `keys` and each of `allowed`.
fn refused(b: DaemonBuilder, keys: &[&str], allowed: &[&str]) {
    let e = b.run_to_exit();
    assert!(
        !e.status.success(),
        "started despite an invalid value; stderr:\n{}",
        e.stderr
    );
    let lines: Vec<&str> = e.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one clear line, got:\n{}",
        e.stderr
    );
    assert!(
        keys.iter().any(|k| lines[0].contains(k)),
        "line must name {keys:?}: {}",
        lines[0]
    );
    for a in allowed {
        assert!(
            lines[0].contains(a),
            "line must say what is allowed ({a}): {}",
            lines[0]
        );
    }
}

#[test]
fn invalid_configuration_values_stop_startup() {
    let yaml = |text: &str| {
        Daemon::builder(Backend::File)
            .no_backend_flag()
            .config_yaml(text)
    };
    refused(
        yaml("storageType: floppy\n"),
        &["storageType"],
        &["memory", "file"],
    );
    refused(
        yaml("durability: sometimes\n"),
        &["durability"],
        &["strict", "relaxed"],
    );
    refused(yaml("roomExpiry: 5x\n"), &["roomExpiry"], &[]);
    refused(yaml("roomExpiry: 0s\n"), &["roomExpiry"], &[]);
    refused(yaml("socketMode: \"0999\"\n"), &["socketMode"], &[]);
    refused(yaml("maxRequestBytes: lots\n"), &["maxRequestBytes"], &[]);
    refused(yaml("flushIntervalMs: -5\n"), &["flushIntervalMs"], &[]);
    let env = Daemon::builder(Backend::File).env("STORAGE_DURABILITY", "sometimes");
    refused(
        env,
        &["STORAGE_DURABILITY", "durability"],
        &["strict", "relaxed"],
    );
    let flag = Daemon::builder(Backend::File).args(["--room-expiry", "10"]);
    refused(flag, &["room-expiry", "roomExpiry"], &[]);
    let flag = Daemon::builder(Backend::File)
        .no_backend_flag()
        .args(["--storage-type", "floppy"]);
    refused(flag, &["storage-type", "storageType"], &["memory", "file"]);
}

#[test]
fn unusable_files_and_paths_stop_startup_with_a_message_naming_them() {
    let b = Daemon::builder(Backend::File);
    let missing = b.dir().join("missing.yaml");
    let e = b
        .arg("--config")
        .arg(missing.to_str().unwrap())
        .run_to_exit();
    assert!(
        !e.status.success() && e.stderr.contains(missing.to_str().unwrap()),
        "{}",
        e.stderr
    );

    let b = Daemon::builder(Backend::File).config_yaml("storageType: [file\n");
    let yaml = b.dir().join("config.yaml");
    let e = b.run_to_exit();
    assert!(
        !e.status.success() && e.stderr.contains(yaml.to_str().unwrap()),
        "{}",
        e.stderr
    );

    let b = Daemon::builder(Backend::File);
    std::fs::write(b.storage_path(), "a file, not a directory").unwrap();
    let path = b.storage_path().to_str().unwrap().to_string();
    let e = b.run_to_exit();
    assert!(
        !e.status.success() && e.stderr.contains(&path),
        "{}",
        e.stderr
    );

    let b = Daemon::builder(Backend::Memory);
    let long = b.dir().join(format!("{}.sock", "s".repeat(120)));
    let e = b.socket(&long).run_to_exit();
    assert!(
        !e.status.success() && e.stderr.contains(long.to_str().unwrap()),
        "{}",
        e.stderr
    );
}

#[test]
fn relaxed_sigkill_loses_at_most_unflushed_changes_and_stays_consistent() {
    let args = ["--durability", "relaxed", "--flush-interval-ms", "50"];
    let mut d = Daemon::start_with(Backend::File, args);
    let mut c = d.connect();
    c.save(&bare_room("r"));
    c.ok(json!({"op": "flush"}));
    for i in 0..300 {
        c.rate("r", &format!("m{i}"), "u", "like");
    }
    d.kill9();
    for f in room_files(d.storage()) {
        read_json_file(&d.storage().join(f)); // every room file is whole
    }
    d.restart();
    let (room, rev) = d.connect().get("r").expect("a flushed room was lost");
    let n = room["ratings"].as_object().map_or(0, |m| m.len());
    assert_eq!(rev, 1 + n as u64, "revision and ratings disagree");
    for i in 0..n {
        assert!(
            room["ratings"].get(format!("m{i}")).is_some(),
            "gap at m{i}: {room}"
        );
    }
}

#[test]
fn unknown_yaml_keys_are_only_warned_about() {
    let yaml =
        "storageType: memory\nplexUrl: http://plex.local:32400\nmoviematch:\n  title: Friday\n";
    let d = Daemon::builder(Backend::Memory)
        .no_backend_flag()
        .config_yaml(yaml)
        .start();
    let mut c = d.connect();
    assert_eq!(c.ok(json!({"op": "stats"}))["backend"], "memory");
    d.wait_log("plexUrl");
}

#[test]
fn flags_beat_environment_beat_yaml() {
    let yaml_in = |b: DaemonBuilder| {
        let text = format!(
            "storageType: file\nsocketPath: {}\nstoragePath: {}\n",
            b.dir().join("yaml.sock").display(),
            b.dir().join("yaml-rooms").display()
        );
        b.no_path_flags().config_yaml(&text)
    };
    let backend = |d: &Daemon| d.connect().ok(json!({"op": "stats"}))["backend"].clone();

    let b = Daemon::builder(Backend::Memory).no_backend_flag();
    let sock = b.dir().join("yaml.sock");
    let d = yaml_in(b.socket(sock)).start();
    assert_eq!(backend(&d), "file");
    assert!(d.dir().join("yaml-rooms").is_dir(), "storagePath from YAML");

    let b = Daemon::builder(Backend::Memory).no_backend_flag();
    let sock = b.dir().join("env.sock");
    let env = b
        .env("STORAGE_TYPE", "memory")
        .env("STORAGE_SOCKET", sock.to_str().unwrap());
    let d = yaml_in(env.socket(&sock)).start();
    assert_eq!(backend(&d), "memory");
    assert!(!d.dir().join("yaml.sock").exists());

    let b = Daemon::builder(Backend::File);
    let env_sock = b.dir().join("env.sock");
    let env = b
        .env("STORAGE_TYPE", "memory")
        .env("STORAGE_SOCKET", env_sock.to_str().unwrap());
    let flag_sock = env.socket_path().to_path_buf();
    let d = yaml_in(env)
        .args(["--socket", flag_sock.to_str().unwrap()])
        .start();
    assert_eq!(backend(&d), "file");
    assert!(!env_sock.exists() && !d.dir().join("yaml.sock").exists());
}

/// `roomExpiry`: rooms not *changed* for that long go; changes keep a room, reads do not.
#[test]
fn idle_rooms_expire_and_changed_rooms_stay() {
    let mut d = Daemon::start_with(Backend::File, ["--room-expiry", "3s"]);
    let mut c = d.connect();
    for name in ["idle", "read", "active"] {
        c.save(&room(name));
    }
    let start = std::time::Instant::now();
    let mut progress = 0;
    while c.has("idle") || c.has("read") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "idle rooms never expired"
        );
        c.get("read");
        progress += 1;
        let req = json!({"op": "setProgress", "roomName": "active", "userName": "u", "progress": progress});
        c.expect(req, json!({"ok": true}));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        start.elapsed() >= Duration::from_millis(2500),
        "expired before 3 s"
    );
    assert!(c.has("active"), "a room changed every 200 ms expired");
    drop(c);
    d.stop();
    assert!(
        !d.room_path("idle").exists(),
        "expired room's file still there"
    );
}

/// Ready (the socket accepts) means signals are handled: `systemctl reload` or `stop` may come at
/// once. Polls without sleeping so the signal follows the first accepted connection closely.
#[test]
fn signals_right_after_ready_are_handled() {
    let spawn_ready = || {
        let d = Daemon::builder(Backend::File).spawn();
        let start = std::time::Instant::now();
        while d.try_connect().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "not ready: {}",
                d.stderr()
            );
        }
        d
    };
    for _ in 0..5 {
        let mut d = spawn_ready();
        d.sighup();
        std::thread::sleep(Duration::from_millis(100));
        assert!(d.is_running(), "SIGHUP right after ready killed the daemon");
        let mut d = spawn_ready();
        let status = d.sigterm();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM right after ready: {status}"
        );
        assert!(!d.socket().exists(), "socket file left behind");
    }
}

#[test]
fn sighup_on_the_memory_backend_is_harmless() {
    let mut d = Daemon::start(Backend::Memory);
    let mut c = d.connect();
    c.save(&room("r"));
    d.sighup();
    for _ in 0..20 {
        c.ping();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        d.is_running(),
        "SIGHUP stopped the daemon; stderr:\n{}",
        d.stderr()
    );
    assert_eq!(c.get("r"), Some((room("r"), 1)));
}

#[test]
fn argon2_password_hashing_stores_only_a_hash() {
    let mut d = Daemon::start_with(Backend::File, ["--password-hashing", "argon2"]);
    let mut c = d.connect();
    c.save(&room("r"));
    c.save(&with(room("open"), json!({"password": ""})));
    let hash = c.get("r").unwrap().0["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        hash.starts_with("$argon2id$"),
        "getRoom returns the hash: {hash}"
    );
    c.save(&with(room("copy"), json!({ "password": hash })));
    assert_eq!(
        c.get("copy").unwrap().0["password"],
        json!(hash),
        "a PHC string is kept"
    );
    let verify =
        |name: &str, pw: &str| json!({"op": "verifyPassword", "roomName": name, "password": pw});
    let script = json!([
        [verify("r", "secret"), {"valid": true}],
        [verify("r", "Secret"), {"valid": false}],
        [verify("r", &hash), {"valid": false}],
        [verify("copy", "secret"), {"valid": true}],
        [verify("open", "anything"), {"valid": true}],
    ]);
    c.script(script.clone());
    drop(c);
    d.stop();
    for name in ["r", "copy"] {
        let text = std::fs::read_to_string(d.room_path(name)).unwrap();
        assert!(
            !text.contains("\"secret\""),
            "plain password on disk in {name}"
        );
    }
    d.restart();
    d.connect().script(script);
}

/// A client that keeps sending after SIGTERM gets `shutting_down` for what it had sent, then
/// its connection closes, and the daemon stops: a ping every 10 ms once held the stop open for
/// as long as the client went on (found by an outside probe).
#[test]
fn a_client_that_keeps_sending_cannot_hold_the_stop_open() {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut d = Daemon::start(Backend::File);
    d.connect().save(&bare_room("movie-night"));
    let stream = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let done = done.clone();
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if writer.write_all(b"{\"op\":\"ping\"}\n").is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let reader = thread::spawn(move || {
        let mut codes = Vec::new();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let answer: Value = serde_json::from_str(&line).unwrap();
            codes.push(answer["error"]["code"].as_str().unwrap_or("ok").to_string());
        }
        codes
    });
    thread::sleep(Duration::from_millis(300));
    d.signal(libc::SIGTERM);
    let status = d.wait_exit();
    done.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let codes = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", d.stderr());
    assert!(codes.iter().any(|c| c == "ok"), "{codes:?}");
    assert!(
        codes.iter().all(|c| c == "ok" || c == "shutting_down"),
        "{codes:?}"
    );
    assert!(
        d.stderr().contains("every room is in its file"),
        "stderr:\n{}",
        d.stderr()
    );
}

/// A daemon whose log reader is gone (stderr a pipe nobody reads) serves, and stops on SIGTERM
/// with exit 0 and its rooms in their files. tracing reported a failed log write with a print
/// that panicked on that same stderr: the daemon died with 101 at its second log line, or, when
/// the reader left later, the task that handles SIGTERM died logging `SIGTERM: stopping` and
/// the daemon no longer stopped (found by hand: `moviematch-storaged 2>&1 | head -1`).
#[test]
fn a_daemon_whose_log_reader_is_gone_serves_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().join("rooms");
    let socket = dir.path().join("storaged.sock");
    let mut cmd = std::process::Command::new(BIN);
    test_child(&mut cmd);
    cmd.arg("--storage-type")
        .arg("file")
        .arg("--storage-path")
        .arg(&storage)
        .arg("--socket")
        .arg(&socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start the daemon");
    // The reader goes away before the daemon logs anything.
    drop(child.stderr.take());
    wait_until("the daemon to serve", || Conn::connect(&socket).is_ok());
    let mut c = Conn::connect(&socket).expect("connect");
    c.save(&room("kept"));
    drop(c);
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut status = None;
    wait_until("the daemon to stop after SIGTERM", || {
        status = child.try_wait().expect("wait for the daemon");
        status.is_some()
    });
    let status = status.expect("exited");
    assert!(status.success(), "the daemon ended with {status}");
    assert!(storage.join("kept.json").exists(), "the room has no file");
}
