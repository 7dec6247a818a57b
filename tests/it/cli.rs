//! Black-box tests of the `moviematch-storage` binary against a fake daemon.
//!
//! The fake daemon is a plain `UnixListener` in a temp dir that records every request line and
//! answers with canned responses, so these tests pin down exactly what the CLI sends for each
//! command and how it prints answers, errors and exit codes, independently of the real daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use serde_json::{json, Value};

const CLI: &str = env!("CARGO_BIN_EXE_moviematch-storage");

/// What the fake daemon does with one request.
enum Reply {
    Line(String),
    /// Close the connection without answering.
    HangUp,
    /// Write this (one or more lines, or a partial one) and close the connection.
    Final(String),
}

struct FakeDaemon {
    dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    /// A daemon answering like the real one would for a store holding only `movie-night`.
    fn standard() -> FakeDaemon {
        FakeDaemon::start_in("storaged.sock", standard_reply)
    }

    fn start(reply: impl Fn(&Value) -> Reply + Send + 'static) -> FakeDaemon {
        FakeDaemon::start_in("storaged.sock", reply)
    }

    /// Listens on `relative_socket` inside a fresh temp dir.
    fn start_in(
        relative_socket: &str,
        reply: impl Fn(&Value) -> Reply + Send + 'static,
    ) -> FakeDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join(relative_socket);
        if let Some(parent) = socket.parent() {
            std::fs::create_dir_all(parent).expect("socket dir");
        }
        let listener = UnixListener::bind(&socket).expect("bind fake daemon");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        serve(stream, &reply, &requests);
                    }
                }
            })
        };
        FakeDaemon {
            dir,
            socket,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The requests received since the last call.
    fn take_requests(&self) -> Vec<Value> {
        std::mem::take(&mut *self.requests.lock().expect("requests lock"))
    }

    /// Runs the CLI with `--socket` pointing at this daemon.
    fn run(&self, args: &[&str]) -> Output {
        run_cli(cli().arg("--socket").arg(&self.socket).args(args), None)
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers the request lines of one connection in order, recording each before answering so a
/// test that saw the CLI exit also sees its request.
fn serve(stream: UnixStream, reply: &impl Fn(&Value) -> Reply, requests: &Mutex<Vec<Value>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let request = serde_json::from_str(&line).unwrap_or_else(|_| Value::String(line.clone()));
        requests
            .lock()
            .expect("requests lock")
            .push(request.clone());
        match reply(&request) {
            Reply::Line(response) => {
                if writeln!(writer, "{response}").is_err() {
                    return;
                }
            }
            Reply::HangUp => return,
            Reply::Final(text) => {
                let _ = writer.write_all(text.as_bytes());
                return;
            }
        }
    }
}

fn room() -> Value {
    json!({
        "roomName": "movie-night",
        "password": "secret",
        "sort": "random",
        "createdAt": "2025-10-25T20:00:00.000Z",
        "creatorPlexUserId": "12345",
        "creatorPlexUsername": "john_doe",
        "ratings": {"movie-123": [["john_doe", "like", 1729890000000u64]]},
        "userProgress": {"john_doe": 5},
        "roomType": "standard"
    })
}

fn stats() -> Value {
    json!({"version": "0.1.0", "backend": "memory", "rooms": 1, "uptimeSeconds": 5, "connections": 1})
}

fn ok(fields: Value) -> Reply {
    let mut response = json!({"ok": true});
    if let (Some(response), Value::Object(fields)) = (response.as_object_mut(), fields) {
        response.extend(fields);
    }
    Reply::Line(response.to_string())
}

fn error(code: &str, message: &str, extra: Value) -> Reply {
    let mut error = json!({"code": code, "message": message});
    if let (Some(error), Value::Object(extra)) = (error.as_object_mut(), extra) {
        error.extend(extra);
    }
    Reply::Line(json!({"ok": false, "error": error}).to_string())
}

fn standard_reply(request: &Value) -> Reply {
    let known = request["roomName"] == "movie-night";
    match request["op"].as_str().unwrap_or_default() {
        "ping" => ok(json!({"protocol": 1})),
        "stats" => ok(stats()),
        "getRoom" if known => ok(json!({"room": room(), "revision": 3})),
        "getRoom" => ok(json!({"room": null})),
        "hasRoom" => ok(json!({"exists": known})),
        "listRooms" => ok(json!({"rooms": [room()], "next": null})),
        "saveRoom" => ok(json!({"revision": 4})),
        "deleteRoom" => ok(json!({"deleted": known})),
        "flush" => ok(json!({})),
        "addRating" => ok(json!({"revision": 5, "added": true})),
        "setProgress" => ok(json!({"revision": 6})),
        "verifyPassword" => ok(json!({"valid": request["password"] == "secret"})),
        "deleteRooms" => ok(json!({"deleted": 2})),
        other => error("bad_request", &format!("unknown op {other:?}"), json!({})),
    }
}

/// The CLI with no socket inherited from the test's environment.
fn cli() -> Command {
    let mut command = Command::new(CLI);
    command.env_remove("STORAGE_SOCKET");
    command
}

fn run_cli(command: &mut Command, stdin: Option<&str>) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn CLI");
    let mut child_stdin = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        child_stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(child_stdin);
    child.wait_with_output().expect("CLI output")
}

fn stdout_json(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        text.lines().count(),
        1,
        "piped output is one line: {text:?}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text:?}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn each_command_sends_its_request_and_prints_the_answer() {
    let daemon = FakeDaemon::standard();
    let cases: Vec<(Vec<&str>, Value, Value, i32)> = vec![
        (
            vec!["ping"],
            json!({"op": "ping"}),
            json!({"protocol": 1}),
            0,
        ),
        (vec!["stats"], json!({"op": "stats"}), stats(), 0),
        (
            vec!["get", "movie-night"],
            json!({"op": "getRoom", "roomName": "movie-night"}),
            room(),
            0,
        ),
        (
            vec!["get", "missing"],
            json!({"op": "getRoom", "roomName": "missing"}),
            Value::Null,
            1,
        ),
        (
            vec!["get", "--with-revision", "movie-night"],
            json!({"op": "getRoom", "roomName": "movie-night"}),
            json!({"room": room(), "revision": 3}),
            0,
        ),
        (
            vec!["get", "--with-revision", "missing"],
            json!({"op": "getRoom", "roomName": "missing"}),
            json!({"room": null}),
            1,
        ),
        (
            vec!["has", "movie-night"],
            json!({"op": "hasRoom", "roomName": "movie-night"}),
            json!({"exists": true}),
            0,
        ),
        (
            vec!["has", "missing"],
            json!({"op": "hasRoom", "roomName": "missing"}),
            json!({"exists": false}),
            1,
        ),
        (
            vec!["list"],
            json!({"op": "listRooms"}),
            json!({"rooms": [room()], "next": null}),
            0,
        ),
        (
            vec![
                "list",
                "--creator-plex-user-id",
                "13692262",
                "--creator-plex-username",
                "john_doe",
                "--created-before",
                "2025-12-01T00:00:00Z",
                "--created-after",
                "2025-01-01T00:00:00.000+02:00",
                "--after",
                "a room",
                "--limit",
                "10",
                "--summary",
            ],
            json!({
                "op": "listRooms",
                "creatorPlexUserId": "13692262",
                "creatorPlexUsername": "john_doe",
                "createdBefore": "2025-12-01T00:00:00Z",
                "createdAfter": "2025-01-01T00:00:00.000+02:00",
                "after": "a room",
                "limit": 10,
                "summary": true,
            }),
            json!({"rooms": [room()], "next": null}),
            0,
        ),
        (
            vec!["delete", "movie-night"],
            json!({"op": "deleteRoom", "roomName": "movie-night"}),
            json!({"deleted": true}),
            0,
        ),
        // Deleting a missing room is a success, not a "no".
        (
            vec!["delete", "missing", "--expected-revision", "0"],
            json!({"op": "deleteRoom", "roomName": "missing", "expectedRevision": 0}),
            json!({"deleted": false}),
            0,
        ),
        (vec!["flush"], json!({"op": "flush"}), json!({}), 0),
        (
            vec!["rate", "movie-night", "plex://movie/1", "john_doe", "like"],
            json!({"op": "addRating", "roomName": "movie-night", "mediaId": "plex://movie/1",
                   "userName": "john_doe", "rating": "like"}),
            json!({"revision": 5, "added": true}),
            0,
        ),
        (
            vec![
                "rate",
                "movie-night",
                "m",
                "jane",
                "dislike",
                "--timestamp",
                "1729890000000",
            ],
            json!({"op": "addRating", "roomName": "movie-night", "mediaId": "m",
                   "userName": "jane", "rating": "dislike", "timestamp": 1729890000000u64}),
            json!({"revision": 5, "added": true}),
            0,
        ),
        (
            vec!["progress", "movie-night", "john_doe", "7"],
            json!({"op": "setProgress", "roomName": "movie-night", "userName": "john_doe",
                   "progress": 7}),
            json!({"revision": 6}),
            0,
        ),
        (
            vec!["verify-password", "movie-night", "secret"],
            json!({"op": "verifyPassword", "roomName": "movie-night", "password": "secret"}),
            json!({"valid": true}),
            0,
        ),
        (
            vec!["verify-password", "movie-night", "guess"],
            json!({"op": "verifyPassword", "roomName": "movie-night", "password": "guess"}),
            json!({"valid": false}),
            1,
        ),
        (
            vec!["delete-rooms", "--created-before", "2025-01-01T00:00:00Z"],
            json!({"op": "deleteRooms", "createdBefore": "2025-01-01T00:00:00Z"}),
            json!({"deleted": 2}),
            0,
        ),
    ];
    for (args, request, printed, code) in cases {
        let output = daemon.run(&args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(daemon.take_requests(), vec![request], "{args:?}");
        assert_eq!(stdout_json(&output), printed, "{args:?}");
        assert_eq!(stderr(&output), "", "{args:?}");
    }
}

#[test]
fn save_sends_the_room_from_a_file_verbatim() {
    let daemon = FakeDaemon::standard();
    // Unknown fields and key order must survive the trip.
    let text = r#"{"sort":"rating","roomName":"zzz","future":{"b":1,"a":[true,null]},
                   "createdAt":"2025-10-25T20:00:00.000Z","creatorPlexUserId":13692262,
                   "creatorPlexUsername":"x"}"#;
    let file = daemon.dir.path().join("room.json");
    std::fs::write(&file, text).expect("write room");
    let file = file.to_str().expect("utf-8 path");

    let output = daemon.run(&["save", file, "--expected-revision", "0"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout_json(&output), json!({"revision": 4}));
    let requests = daemon.take_requests();
    let sent: Value = serde_json::from_str(text).expect("room JSON");
    assert_eq!(
        requests,
        vec![json!({"op": "saveRoom", "room": sent, "expectedRevision": 0})]
    );
    assert_eq!(requests[0]["room"].to_string(), sent.to_string());
}

#[test]
fn save_reads_stdin_when_the_file_is_dash_or_absent() {
    let daemon = FakeDaemon::standard();
    for args in [&["save", "-"][..], &["save"][..]] {
        let output = run_cli(
            cli().arg("--socket").arg(&daemon.socket).args(args),
            Some(&room().to_string()),
        );
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(
            daemon.take_requests(),
            vec![json!({"op": "saveRoom", "room": room()})],
            "{args:?}"
        );
    }
}

#[test]
fn save_with_bad_input_exits_4_naming_it_and_sends_nothing() {
    let daemon = FakeDaemon::standard();
    let bad = daemon.dir.path().join("bad.json");
    std::fs::write(&bad, "{\"roomName\": ").expect("write");
    let missing = daemon.dir.path().join("missing.json");
    for path in [&bad, &missing] {
        let output = daemon.run(&["save", path.to_str().expect("utf-8 path")]);
        assert_eq!(output.status.code(), Some(4), "{path:?}");
        let message = stderr(&output);
        assert!(
            message.starts_with("moviematch-storage: ")
                && message.contains(&*path.to_string_lossy()),
            "{message}"
        );
        assert!(output.stdout.is_empty());
    }
    let output = run_cli(
        cli().arg("--socket").arg(&daemon.socket).arg("save"),
        Some("not json"),
    );
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains("stdin"), "{}", stderr(&output));
    assert_eq!(daemon.take_requests(), Vec::<Value>::new());
}

#[test]
fn a_daemon_error_goes_to_stderr_as_one_line_with_exit_2() {
    let daemon = FakeDaemon::start(|request| match request["op"].as_str() {
        Some("deleteRoom") => error(
            "conflict",
            "expectedRevision 2 does not match",
            json!({"revision": 3}),
        ),
        Some("flush") => error(
            "storage",
            "cannot sync the room files",
            json!({"cause": "No space left on device (os error 28)"}),
        ),
        _ => error("not_found", "no room named \"x\"", json!({})),
    });
    let cases = [
        (
            vec!["delete", "movie-night", "--expected-revision", "2"],
            "moviematch-storage: conflict: expectedRevision 2 does not match (current revision: 3)\n",
        ),
        (
            vec!["flush"],
            "moviematch-storage: storage: cannot sync the room files \
             (cause: No space left on device (os error 28))\n",
        ),
        (
            vec!["rate", "x", "m", "u", "like"],
            "moviematch-storage: not_found: no room named \"x\"\n",
        ),
    ];
    for (args, expected) in cases {
        let output = daemon.run(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&output), expected);
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_response_that_is_not_an_envelope_exits_2() {
    let daemon = FakeDaemon::start(|_| Reply::Line("HTTP/1.1 400 Bad Request".to_owned()));
    let output = daemon.run(&["ping"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("unexpected response"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_daemon_hanging_up_exits_3() {
    let daemon = FakeDaemon::start(|_| Reply::HangUp);
    let output = daemon.run(&["stats"]);
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert!(
        message.contains(&*daemon.socket.to_string_lossy()),
        "{message}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn a_missing_socket_exits_3_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("nobody-home.sock");
    let output = run_cli(cli().arg("--socket").arg(&socket).arg("ping"), None);
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains(&*socket.to_string_lossy()), "{message}");
    assert!(message.contains("seems not to be running"), "{message}");
    assert!(message.contains("--socket"), "{message}");
    assert!(output.stdout.is_empty());
}

#[test]
fn a_stale_socket_file_exits_3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("stale.sock");
    // Binding leaves the file behind after the listener is gone, as a crashed daemon would.
    drop(UnixListener::bind(&socket).expect("bind"));
    let output = run_cli(cli().arg("--socket").arg(&socket).arg("ping"), None);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("seems not to be running"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_socket_comes_from_the_flag_then_the_environment_then_the_default() {
    let daemon = FakeDaemon::standard();
    let elsewhere = daemon.dir.path().join("elsewhere.sock");

    let from_env = run_cli(
        cli().env("STORAGE_SOCKET", &daemon.socket).arg("ping"),
        None,
    );
    assert_eq!(from_env.status.code(), Some(0), "{}", stderr(&from_env));

    let flag_wins = run_cli(
        cli()
            .env("STORAGE_SOCKET", &elsewhere)
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("ping"),
        None,
    );
    assert_eq!(flag_wins.status.code(), Some(0), "{}", stderr(&flag_wins));

    let default = FakeDaemon::start_in("data/storaged.sock", standard_reply);
    let from_default = run_cli(cli().current_dir(default.dir.path()).arg("ping"), None);
    assert_eq!(
        from_default.status.code(),
        Some(0),
        "{}",
        stderr(&from_default)
    );
    assert_eq!(default.take_requests(), vec![json!({"op": "ping"})]);

    let nowhere = tempfile::tempdir().expect("temp dir");
    let missing_default = run_cli(cli().current_dir(nowhere.path()).arg("ping"), None);
    assert_eq!(missing_default.status.code(), Some(3));
    assert!(stderr(&missing_default).contains("./data/storaged.sock"));
}

#[test]
fn usage_errors_exit_4_without_contacting_the_daemon() {
    let daemon = FakeDaemon::standard();
    for args in [
        &["rate", "r", "m", "u", "meh"][..],
        &["list", "--limit", "0"][..],
        &["progress", "r", "u", "-1"][..],
        &["delete-rooms"][..],
        &["export", "extra"][..],
        &[][..],
    ] {
        let output = daemon.run(args);
        assert_eq!(output.status.code(), Some(4), "{args:?}");
        assert!(!stderr(&output).is_empty(), "{args:?}");
    }
    assert_eq!(daemon.take_requests(), Vec::<Value>::new());
}

#[test]
fn help_documents_the_exit_codes() {
    let output = run_cli(cli().arg("--help"), None);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "Exit codes",
        "prints null",
        "STORAGE_SOCKET",
        "./data/storaged.sock",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}

fn import_room(name: &str) -> Value {
    json!({"roomName": name, "sort": "random", "createdAt": "2025-10-25T20:00:00.000Z",
           "creatorPlexUserId": 1, "creatorPlexUsername": "x", "later": {"z": 1, "a": 1.5}})
}

#[test]
fn export_prints_each_room_of_one_unlimited_list_request_on_its_own_line() {
    let rooms = [import_room("a"), room(), import_room("z z")];
    let answer = json!({"ok": true, "rooms": rooms, "next": null}).to_string();
    let daemon = FakeDaemon::start(move |request| match request["op"].as_str() {
        Some("listRooms") => Reply::Line(answer.clone()),
        _ => error("bad_request", "unexpected", json!({})),
    });
    let output = daemon.run(&["export"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // One request, without `limit`: one snapshot.
    assert_eq!(daemon.take_requests(), vec![json!({"op": "listRooms"})]);
    let expected: String = rooms.iter().map(|r| format!("{r}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    // Piped stderr: no progress bar.
    assert_eq!(stderr(&output), "");
}

#[test]
fn export_of_no_rooms_prints_nothing_and_a_daemon_error_exits_2() {
    let daemon = FakeDaemon::start(|_| ok(json!({"rooms": [], "next": null})));
    let output = daemon.run(&["export"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(output.stdout.is_empty());

    let daemon = FakeDaemon::start(|_| error("storage", "broken", json!({})));
    let output = daemon.run(&["export"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr(&output), "moviematch-storage: storage: broken\n");
    assert!(output.stdout.is_empty());

    let daemon = FakeDaemon::start(|_| Reply::Line("[true]".to_owned()));
    assert_eq!(daemon.run(&["export"]).status.code(), Some(2));
}

#[test]
fn import_sends_each_line_verbatim_and_prints_the_count() {
    let daemon = FakeDaemon::standard();
    let lines = [import_room("a"), room(), import_room("b/../c")];
    let text = format!(
        "{}\r\n\n   \n{}\n{}",
        lines[0],
        serde_json::to_string_pretty(&lines[1])
            .unwrap()
            .replace('\n', ""),
        lines[2]
    );
    let file = daemon.dir.path().join("rooms.ndjson");
    std::fs::write(&file, &text).expect("write");
    for args in [
        vec!["import", file.to_str().expect("utf-8")],
        vec!["import", "-"],
        vec!["import"],
    ] {
        let output = run_cli(
            cli().arg("--socket").arg(&daemon.socket).args(&args),
            Some(&text),
        );
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(stdout_json(&output), json!({"imported": 3}), "{args:?}");
        let requests = daemon.take_requests();
        let expected: Vec<Value> = lines
            .iter()
            .map(|room| json!({"op": "saveRoom", "room": room}))
            .collect();
        assert_eq!(requests, expected, "{args:?}");
        // Unknown fields keep their order and their numbers.
        assert_eq!(requests[0]["room"].to_string(), lines[0].to_string());
    }
}

#[test]
fn import_with_a_bad_line_names_it_exits_4_and_sends_nothing() {
    let daemon = FakeDaemon::standard();
    let good = import_room("a").to_string();
    let invalid_room = json!({"roomName": "x", "sort": "sideways"}).to_string();
    for (third, reason) in [
        ("{\"roomName\": ", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("\"a string\"", "not a JSON object"),
        (invalid_room.as_str(), "sort"),
    ] {
        let text = format!("{good}\n\n{third}\n{good}\n");
        let output = run_cli(
            cli().arg("--socket").arg(&daemon.socket).arg("import"),
            Some(&text),
        );
        assert_eq!(output.status.code(), Some(4), "{third}");
        let message = stderr(&output);
        assert!(
            message.starts_with("moviematch-storage: stdin: line 3: ")
                && message.contains(reason)
                && message.contains("nothing was imported"),
            "{third}: {message}"
        );
        assert!(output.stdout.is_empty());
    }
    assert_eq!(daemon.take_requests(), Vec::<Value>::new());
}

#[test]
fn import_stops_at_the_first_refused_room_and_says_what_was_imported() {
    let daemon = FakeDaemon::start(|request| {
        if request["room"]["roomName"] == "r3" {
            error("storage", "disk full", json!({}))
        } else {
            ok(json!({"revision": 1}))
        }
    });
    let text: String = (1..=200)
        .map(|n| format!("{}\n", import_room(&format!("r{n}"))))
        .collect();
    let output = run_cli(
        cli().arg("--socket").arg(&daemon.socket).arg("import"),
        Some(&text),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("line 3 (room \"r3\"): storage: disk full"),
        "{message}"
    );
    // What was sent before the failure was seen may have been imported after it too; the
    // message and the summary count exactly what the daemon acknowledged.
    let requests = daemon.take_requests();
    let imported = requests.len() - 1;
    assert!(requests.len() < 200, "the import did not stop");
    assert!(
        message.contains(&format!("imported {imported} of 200 rooms")),
        "{message}"
    );
    assert!(message.contains("were not sent"), "{message}");
    let summary = stdout_json(&output);
    assert_eq!(summary["imported"], imported);
    assert!(summary["lastImported"].is_string(), "{summary}");
}

#[test]
fn watch_prints_each_event_and_exits_by_how_the_stream_ended() {
    let events = [
        json!({"event": "saved", "roomName": "a", "revision": 1}),
        json!({"event": "rated", "roomName": "a", "revision": 2, "mediaId": "m",
               "userName": "u", "rating": "like", "timestamp": 5}),
        json!({"event": "deleted", "roomName": "a"}),
    ];
    let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
    let cases = [
        ("", 0, ""),
        ("{\"event\":\"overflow\"}\n", 5, "re-read"),
        ("{\"event\":\"sav", 3, "middle"),
    ];
    for (tail, code, said) in cases {
        let stream = format!("{{\"ok\":true}}\n{lines}{tail}");
        let daemon = FakeDaemon::start(move |_| Reply::Final(stream.clone()));
        let output = daemon.run(&["watch", "a", "b c"]);
        assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
        assert!(stderr(&output).contains(said), "{}", stderr(&output));
        assert_eq!(
            daemon.take_requests(),
            vec![json!({"op": "watch", "roomNames": ["a", "b c"]})]
        );
        let printed: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("event line is JSON"))
            .collect();
        let mut expected = events.to_vec();
        if code == 5 {
            expected.push(json!({"event": "overflow"}));
        }
        assert_eq!(printed, expected);
    }
    let daemon = FakeDaemon::start(|_| Reply::Final("{\"ok\":true}\n".to_owned()));
    let output = daemon.run(&["watch"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(daemon.take_requests(), vec![json!({"op": "watch"})]);

    let daemon = FakeDaemon::start(|_| error("bad_request", "nope", json!({})));
    assert_eq!(daemon.run(&["watch"]).status.code(), Some(2));
}
