//! The `moviematch-storage` commands that stream (`export`, `import`, `watch`) against the real
//! daemon, and the socat cookbook (`tests/socat-cookbook.md`), whose every `sh` block is run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{bare_room, room, room_names, with, Backend, Conn, Daemon};
use serde_json::{json, Value};

const CLI: &str = env!("CARGO_BIN_EXE_moviematch-storage");

/// The CLI pointed at `socket`, with nothing inherited from the developer's environment.
fn cli(socket: &Path) -> Command {
    let mut command = Command::new(CLI);
    command
        .env_remove("STORAGE_SOCKET")
        .arg("--socket")
        .arg(socket);
    command
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("run moviematch-storage")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Names no file system or shell would like, all valid room names.
fn hostile_names() -> Vec<String> {
    vec![
        "../../etc/passwd".into(),
        "a/b\\c".into(),
        "спасибо 🎬".into(),
        " leading and trailing ".into(),
        "\"quoted\" {json} [x]".into(),
        "Room".into(),
        "room".into(),
        "~movie%20night.json".into(),
        ".hidden".into(),
        "-n".into(),
        "\u{2028}\u{feff}".into(),
        "x".repeat(255),
        "é".repeat(127),
    ]
}

/// A room of about `bytes` bytes of ratings.
fn big_room(name: &str, bytes: usize) -> Value {
    let count = bytes / 45;
    let ratings: Vec<Value> = (0..count)
        .map(|i| {
            json!([
                format!("user-{i:08}"),
                "like",
                1_700_000_000_000u64 + i as u64
            ])
        })
        .collect();
    with(
        room(name),
        json!({"ratings": {"plex://movie/big": ratings}}),
    )
}

/// Every room of the daemon, by name, with `getRoom`.
fn all_rooms(conn: &mut Conn) -> Vec<(String, Value)> {
    let names = conn.names(json!({}));
    names
        .into_iter()
        .map(|name| {
            let (room, _) = conn.get(&name).expect("listed room exists");
            (name, room)
        })
        .collect()
}

#[test]
fn export_then_import_copies_every_room_exactly() {
    let source = Daemon::start(Backend::File);
    let mut conn = source.connect();
    let mut names = hostile_names();
    for (i, name) in names.iter().enumerate() {
        let room = if i % 2 == 0 {
            room(name)
        } else {
            with(bare_room(name), json!({"roomType": "later", "n": i}))
        };
        conn.save(&room);
    }
    conn.save(&big_room("big", 1 << 20));
    names.push("big".into());
    // Changes made after the save must be exported too.
    conn.rate("Room", "plex://movie/1", "jane", "dislike");
    conn.ok(json!({"op": "setProgress", "roomName": "room", "userName": "jane", "progress": 9}));

    let export = run(cli(source.socket()).arg("export"));
    assert_eq!(export.status.code(), Some(0), "{}", stderr(&export));
    assert_eq!(stderr(&export), "", "no progress bar when piped");
    let text = String::from_utf8(export.stdout).expect("UTF-8 export");
    let exported: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a room"))
        .collect();
    assert_eq!(exported.len(), names.len());
    assert!(text.ends_with('\n'));
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(room_names(&exported), sorted, "sorted by name, byte order");
    let expected = all_rooms(&mut conn);
    for ((_, room), line) in expected.iter().zip(&exported) {
        assert_eq!(room, line);
    }

    let file = source.dir().join("export.ndjson");
    std::fs::write(&file, &text).expect("write export");
    let target = Daemon::start(Backend::Memory);
    let import = run(cli(target.socket()).arg("import").arg(&file));
    assert_eq!(import.status.code(), Some(0), "{}", stderr(&import));
    let summary: Value = serde_json::from_slice(&import.stdout).expect("summary JSON");
    assert_eq!(summary, json!({"imported": names.len()}));

    let copied = all_rooms(&mut target.connect());
    assert_eq!(copied.len(), expected.len());
    for ((name, room), (copied_name, copy)) in expected.iter().zip(&copied) {
        assert_eq!(name, copied_name);
        assert_eq!(room, copy, "room {name:?} differs after export and import");
    }

    // Importing from stdin works the same, and a second import replaces the rooms.
    let mut child = cli(target.socket())
        .arg("import")
        .stdin(std::fs::File::open(&file).expect("open export"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import");
    let _ = child.stdin.take();
    let again = child.wait_with_output().expect("import output");
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(all_rooms(&mut target.connect()), copied);
}

#[test]
fn export_is_one_snapshot_while_a_writer_keeps_changing_rooms() {
    // A writer saves `snap-a` then `snap-z` with the same counter, waiting for each answer, so
    // at every instant snap-z's counter is snap-a's or one less. Pages read one after another
    // (snap-a early, snap-z later, hundreds of rooms apart) could see snap-z ahead of snap-a.
    let daemon = Daemon::start(Backend::Memory);
    let mut conn = daemon.connect();
    for i in 0..500 {
        conn.save(&bare_room(&format!("snap-m{i:04}")));
    }
    let counted = |name: &str, n: u64| with(bare_room(name), json!({"counter": n}));
    conn.save(&counted("snap-a", 0));
    conn.save(&counted("snap-z", 0));
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let rounds = std::sync::Arc::new(AtomicU64::new(0));
    let writer = {
        let (mut conn, stop, rounds) = (daemon.connect(), stop.clone(), rounds.clone());
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                conn.save(&counted("snap-a", n));
                conn.save(&counted("snap-z", n));
                rounds.store(n, Ordering::SeqCst);
            }
        })
    };
    crate::harness::wait_until("the writer's first round", || {
        rounds.load(Ordering::SeqCst) > 0
    });
    for attempt in 0..10 {
        let export = run(cli(daemon.socket()).arg("export"));
        assert_eq!(
            export.status.code(),
            Some(0),
            "attempt {attempt}: {}",
            stderr(&export)
        );
        let rooms: Vec<Value> = String::from_utf8_lossy(&export.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("room line"))
            .collect();
        assert_eq!(rooms.len(), 502, "attempt {attempt}");
        let counter = |room: &Value| {
            room["counter"]
                .as_u64()
                .unwrap_or_else(|| panic!("attempt {attempt}: no counter in {room}"))
        };
        let (a, z) = (counter(&rooms[0]), counter(&rooms[501]));
        assert!(
            z == a || z + 1 == a,
            "attempt {attempt}: not one snapshot: snap-a {a}, snap-z {z}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
}

#[test]
fn a_bad_import_line_fails_loudly_with_its_number_and_imports_nothing() {
    let daemon = Daemon::start(Backend::File);
    let mut conn = daemon.connect();
    conn.save(&room("already-there"));
    let good = |name: &str| room(name).to_string();
    let not_a_room = json!({"roomName": "bad", "sort": "random"}).to_string();
    for (third, reason) in [
        ("{\"roomName\": \"x\",", "not valid JSON"),
        ("this is not JSON", "not valid JSON"),
        ("[\"an\", \"array\"]", "not a JSON object"),
        ("42", "not a JSON object"),
        (not_a_room.as_str(), "createdAt"),
    ] {
        let text = format!(
            "{}\n{}\n{third}\n{}\n",
            good("one"),
            good("two"),
            good("four")
        );
        let file = daemon.dir().join("broken.ndjson");
        std::fs::write(&file, text).expect("write");
        let output = run(cli(daemon.socket()).arg("import").arg(&file));
        assert_eq!(
            output.status.code(),
            Some(4),
            "{third}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains(&format!("{}: line 3: ", file.display()))
                && message.contains(reason)
                && message.contains("nothing was imported"),
            "{third}: {message}"
        );
        assert!(output.stdout.is_empty(), "{third}");
        assert_eq!(conn.names(json!({})), vec!["already-there"], "{third}");
    }
}

#[test]
fn import_reports_what_was_imported_when_the_daemon_refuses_a_room() {
    // Request lines of at most 2 KiB: the small rooms fit, the 4 KiB one gets too_large.
    let daemon = Daemon::start_with(Backend::Memory, ["--max-request-bytes", "2048"]);
    let lines: Vec<String> = (1..=5)
        .map(|n| bare_room(&format!("r{n}")).to_string())
        .chain([big_room("huge", 4096).to_string()])
        .chain((7..=9).map(|n| bare_room(&format!("r{n}")).to_string()))
        .collect();
    let file = daemon.dir().join("rooms.ndjson");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let output = run(cli(daemon.socket()).arg("import").arg(&file));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("line 6 (room \"huge\"): too_large"),
        "{message}"
    );
    assert!(message.contains("imported "), "{message}");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("summary");
    let names = daemon.connect().names(json!({}));
    assert_eq!(summary["imported"], names.len(), "{summary} vs {names:?}");
    for n in 1..=5 {
        assert!(names.contains(&format!("r{n}")), "{names:?}");
    }
    assert!(!names.contains(&"huge".to_owned()));
}

/// Spawns `moviematch-storage watch ARGS`; its stdout lines arrive on the receiver.
fn spawn_watch(socket: &Path, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = cli(socket)
        .arg("watch")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn next_event(rx: &mpsc::Receiver<String>, timeout: Duration) -> Option<Value> {
    let line = rx.recv_timeout(timeout).ok()?;
    Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
}

#[test]
fn watch_prints_the_changes_another_client_makes_in_order() {
    let mut daemon = Daemon::start(Backend::File);
    let mut conn = daemon.connect();
    let (child, rx) = spawn_watch(daemon.socket(), &["movie night", "sentinel"]);
    // The watch starts some time after the process: touch a sentinel room until it shows up.
    let started = Instant::now();
    loop {
        conn.save(&bare_room("sentinel"));
        if let Some(event) = next_event(&rx, Duration::from_millis(200)) {
            assert_eq!(event["roomName"], "sentinel", "{event}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the watch printed nothing"
        );
    }
    while next_event(&rx, Duration::from_millis(300)).is_some() {}

    let name = "movie night";
    let mut expected = Vec::new();
    let r1 = crate::harness::revision(&conn.ok(json!({"op": "saveRoom", "room": room(name)})));
    expected.push(json!({"event": "saved", "roomName": name, "revision": r1}));
    conn.save(&bare_room("not watched"));
    let rated = conn.ok(
        json!({"op": "addRating", "roomName": name, "mediaId": "plex://movie/2",
                               "userName": "jane", "rating": "like", "timestamp": 1234}),
    );
    expected.push(
        json!({"event": "rated", "roomName": name, "revision": rated["revision"],
                         "mediaId": "plex://movie/2", "userName": "jane", "rating": "like",
                         "timestamp": 1234}),
    );
    let progress =
        conn.ok(json!({"op": "setProgress", "roomName": name, "userName": "jane", "progress": 4}));
    expected.push(json!({"event": "progress", "roomName": name,
                         "revision": progress["revision"], "userName": "jane", "progress": 4}));
    conn.ok(json!({"op": "deleteRoom", "roomName": "not watched"}));
    conn.ok(json!({"op": "deleteRoom", "roomName": name}));
    expected.push(json!({"event": "deleted", "roomName": name}));

    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let event = next_event(&rx, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("missing events; got {seen:?}"));
        seen.push(event);
    }
    assert_eq!(seen, expected);

    // The daemon stopping is the clean end of a watch.
    daemon.stop();
    let output = child.wait_with_output().expect("watch exit");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(next_event(&rx, Duration::from_millis(100)).is_none());
}

/// socat is a documented way to talk to the daemon; the cookbook must run, so it must be there.
fn ensure_socat() {
    let present = || {
        Command::new("socat")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !apt(&["install", "-y", "socat"]) && apt(&["update"]) {
            apt(&["install", "-y", "socat"]);
        }
    }
    assert!(
        present(),
        "socat is not installed and could not be installed: run `apt-get install -y socat` \
         (as root) to run the socat cookbook test"
    );
}

/// The ```sh blocks of a Markdown file, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == "```sh" => current = Some(String::new()),
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "unterminated ```sh block");
    blocks
}

#[test]
fn every_socat_cookbook_snippet_runs_against_the_daemon() {
    ensure_socat();
    let daemon = Daemon::start(Backend::File);
    let cookbook = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/socat-cookbook.md"
    ))
    .expect("read tests/socat-cookbook.md");
    let blocks = sh_blocks(&cookbook);
    assert!(blocks.len() >= 6, "expected at least 6 sh blocks");
    let workdir = daemon.dir().join("cookbook");
    std::fs::create_dir(&workdir).expect("cookbook dir");
    crate::harness::write_room_file(&workdir.join("room.json"), &room("movie-night"));
    let mut ops_seen = Vec::new();
    for block in &blocks {
        let output = Command::new("bash")
            .arg("-c")
            .arg(format!("set -o pipefail\n{block}"))
            .current_dir(&workdir)
            .env("SOCK", daemon.socket())
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let code = output.status.code();
        let allowed = if block.contains("timeout ") {
            code == Some(0) || code == Some(124)
        } else {
            code == Some(0)
        };
        assert!(
            allowed,
            "snippet exited {code:?}:\n{block}\nstdout:\n{stdout}\nstderr:\n{}",
            stderr(&output)
        );
        let answers: Vec<Value> = stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nsnippet:\n{block}"))
            })
            .collect();
        assert!(
            answers.iter().any(|a| a["ok"] == true),
            "no \"ok\":true line from:\n{block}\nstdout:\n{stdout}"
        );
        for answer in answers.iter().filter(|a| a.get("ok").is_some()) {
            assert_eq!(answer["ok"], true, "{block}\n{answer}");
            assert!(answer["id"].is_number(), "answers carry the id: {answer}");
        }
        ops_seen.extend(answers);
    }
    // The snippets did what they say: the room was saved from the file and read back.
    let mut conn = daemon.connect();
    let (saved, _) = conn
        .get("movie-night")
        .expect("the save snippet saved the room");
    assert_eq!(saved["roomName"], "movie-night");
    assert!(
        ops_seen
            .iter()
            .any(|a| a["room"]["roomName"] == "movie-night"),
        "getRoom snippet"
    );
    assert!(ops_seen.iter().any(|a| a["protocol"] == 1), "ping snippet");
    assert!(
        ops_seen.iter().any(|a| a["uptimeSeconds"].is_number()),
        "stats snippet"
    );
}

// ---- migrate: between backends, offline ----

/// `migrate` (it contacts no daemon; `--socket` is only there to show it is ignored).
fn migrate(from: &str, to: &str, extra: &[&str]) -> Output {
    let mut command = cli(Path::new("/nonexistent/storaged.sock"));
    command
        .args(["migrate", "--from", from, "--to", to])
        .args(extra);
    run(&mut command)
}

/// Every room as (name, exact compact JSON text, revision), through a running daemon.
fn exact_rooms(conn: &mut Conn) -> Vec<(String, String, u64)> {
    let names = conn.names(json!({}));
    names
        .into_iter()
        .map(|name| {
            let answer = conn.ok(json!({"op": "getRoom", "roomName": name}));
            let text = serde_json::to_string(&answer["room"]).expect("encode");
            let revision = answer["revision"].as_u64().expect("a revision");
            (name, text, revision)
        })
        .collect()
}

/// Every file of a storage directory that is a room file, by name, with its bytes.
fn room_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("list the storage directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read a room file"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn migrate_file_to_redis_and_back_round_trips_every_room_byte_for_byte() {
    let mut source = Daemon::start(Backend::File);
    let mut conn = source.connect();
    let mut names = hostile_names();
    names.extend(["movie-night".to_owned(), "big".to_owned()]);
    for name in &names {
        let mut r = room(name);
        r["roomType"] = json!({"kept": [1.25, null, "x"]});
        conn.save(&r);
    }
    conn.save(&big_room("big", 200_000));
    conn.save(&bare_room("bare"));
    conn.rate("movie-night", "plex://movie/1", "jane", "dislike");
    conn.ok(
        json!({"op": "setProgress", "roomName": "movie-night", "userName": "jane", "progress": 3}),
    );
    conn.rate("bare", "m", "john", "like");
    let before = exact_rooms(&mut conn);
    drop(conn);
    assert_eq!(source.sigterm().code(), Some(0));
    let files_before = room_files(source.storage());

    // file -> redis
    let target = Daemon::builder(Backend::Redis);
    let url = target.redis().url();
    let from = format!("file:{}", source.storage().display());
    let out = migrate(&from, &url, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON"),
        json!({"migrated": before.len()})
    );
    assert_eq!(stderr(&out), "", "quiet when not on a terminal");
    let mut redis_daemon = target.start();
    assert_eq!(
        exact_rooms(&mut redis_daemon.connect()),
        before,
        "redis serves every room exactly"
    );
    assert_eq!(redis_daemon.sigterm().code(), Some(0));

    // redis -> file (a new directory)
    let back = source.dir().join("back");
    let out = migrate(&url, &format!("file:{}", back.display()), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        room_files(&back),
        files_before,
        "every room file is byte for byte the same"
    );
    let restored = Daemon::builder(Backend::File).storage(back).start();
    assert_eq!(
        exact_rooms(&mut restored.connect()),
        before,
        "with the same revisions"
    );
}

#[test]
fn migrate_refuses_a_directory_a_daemon_holds() {
    let daemon = Daemon::start(Backend::File);
    daemon.connect().save(&room("held"));
    let target = Daemon::builder(Backend::Redis);
    let out = migrate(
        &format!("file:{}", daemon.storage().display()),
        &target.redis().url(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(
        message.contains(&daemon.storage().display().to_string()) && message.contains("in use"),
        "{message}"
    );
    assert_eq!(
        target.redis().command("DBSIZE").as_deref(),
        Some(":0\r\n"),
        "nothing was copied"
    );
}

#[test]
fn migrate_refuses_a_redis_prefix_a_daemon_uses_and_a_target_with_rooms() {
    let daemon = Daemon::start(Backend::Redis);
    daemon.connect().save(&room("busy"));
    let url = daemon.redis().url();
    let empty = daemon.dir().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let out = migrate(&url, &format!("file:{}", empty.display()), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("in use by 1 running daemon"),
        "{}",
        stderr(&out)
    );
    assert!(room_files(&empty).is_empty());

    let mut daemon = daemon;
    assert_eq!(daemon.sigterm().code(), Some(0));
    // The daemon is gone (its announcement withdrawn): redis -> file works now...
    let out = migrate(&url, &format!("file:{}", empty.display()), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // ...but not again into a directory that now has rooms, unless forced.
    let out = migrate(&url, &format!("file:{}", empty.display()), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("already holds 1 room"),
        "{}",
        stderr(&out)
    );
    let out = migrate(&url, &format!("file:{}", empty.display()), &["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A missing source directory is an error, not an empty migration.
    let out = migrate("file:/nonexistent/rooms", &url, &["--force"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));
}
