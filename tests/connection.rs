//! The connection and process side of a hostile or careless world (issue 14): the socket's
//! mode from its first moment, invalid UTF-8, numbers kept as written, bounded memory per
//! connection and per watcher, running out of descriptors, and logs that do not flood.

#[macro_use]
mod common;

use common::*;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const RACE_SOCKET: &str = "MM_TEST_RACE_SOCKET";

/// Not a test of its own: the racing connector of `the_socket_is_never_served_wider_than_its_mode`,
/// run as a child process under another uid. It connects as fast as it can and prints `SERVED`
/// for every connection on which a `ping` was answered.
#[test]
fn racing_connector_helper() {
    let Some(socket) = std::env::var_os(RACE_SOCKET) else {
        return;
    };
    let mut out = std::io::stdout();
    loop {
        let Ok(mut s) = UnixStream::connect(&socket) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"{\"op\":\"ping\"}\n").is_err() {
            continue;
        }
        let mut line = String::new();
        if BufReader::new(&mut s).read_line(&mut line).is_ok() && line.contains("\"ok\":true") {
            let _ = writeln!(out, "SERVED");
            let _ = out.flush();
        }
    }
}

fn nobody() -> (u32, u32) {
    // SAFETY: getpwnam returns NULL or a pointer to a static entry, read at once.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(!pw.is_null(), "no user called nobody on this machine");
    // SAFETY: non-null, as checked.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// PROTOCOL.md section 6 / issue 14 item 2: the socket exists only with `socketMode`. Under
/// umask 000 a socket bound in place is 0777 until it is chmod'ed; a client of another user
/// that connects in that moment keeps its connection.
#[test]
fn the_socket_is_never_served_wider_than_its_mode() {
    // SAFETY: getuid cannot fail.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test runs as root (it switches to nobody)"
    );
    let open = tempfile::tempdir().unwrap();
    fs::set_permissions(open.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let socket = open.path().join("storaged.sock");
    let (uid, gid) = nobody();
    let mut racer = Command::new(std::env::current_exe().unwrap());
    racer
        .args(["racing_connector_helper", "--exact", "--nocapture"])
        .env(RACE_SOCKET, &socket)
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        racer.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut racer = racer.spawn().expect("start the racing connector");
    let mut d = Daemon::builder(Backend::Memory)
        .socket(&socket)
        .umask(0)
        .spawn();
    d.wait_ready();
    for i in 0..100 {
        if i > 0 {
            if i % 2 == 0 {
                d.stop();
            } else {
                d.kill9(); // leaves a stale socket file to be replaced
            }
            d.restart();
        }
        let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "start {i}: socket mode");
    }
    d.stop();
    let _ = racer.kill();
    let mut served = String::new();
    racer
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut served)
        .unwrap();
    let _ = racer.wait();
    assert_eq!(
        served.lines().filter(|l| *l == "SERVED").count(),
        0,
        "user nobody was served on a 0660 root socket"
    );
    let leftovers: Vec<_> = dir_entries(open.path())
        .into_iter()
        .filter(|n| n != "storaged.sock")
        .collect();
    assert!(
        leftovers.is_empty(),
        "left next to the socket: {leftovers:?}"
    );
}

/// PROTOCOL.md section 1.4: invalid UTF-8 is `bad_json`, and the message says so.
#[test]
fn invalid_utf8_is_named_as_such() {
    let d = Daemon::start(Backend::Memory);
    let mut c = d.connect();
    for line in [
        &b"\xff\xfe"[..],
        b"{\"op\":\"getRoom\",\"roomName\":\"caf\xe9\"}",
    ] {
        c.send_raw(&[line, b"\n"].concat());
        let r = c.read_json();
        let e = assert_err(&r, "bad_json");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains("not valid UTF-8"), "{r}");
        c.ping();
    }
}

for_each_backend!(numbers_are_kept_byte_for_byte_through_every_path);

/// The room in a response line, as its text.
fn room_text(line: &str) -> String {
    let fields: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    fields["room"].get().to_owned()
}

fn raw_call(c: &mut Conn, line: &str) -> String {
    c.send_raw(format!("{line}\n").as_bytes());
    c.read_line().expect("an answer")
}

/// Issue 14 item 4: numbers in unknown fields read back as written after ratings, progress,
/// a restart (journal replay), a fold (the room file) and with Redis, on the fast path and on
/// the path a room takes when the scanner leaves it to serde_json (an escaped key).
fn numbers_are_kept_byte_for_byte_through_every_path(b: Backend) {
    let odd = r#""big":12345678901234567890123,"a":2.50,"e":1E+2,"n":-9223372036854775809,"f":1.0,"z":-0,"s":1e-7,"nested":{"k":[1.10,{"q":-0.0,"r":[1E400000000]}]}"#;
    // `1E400000000` would be out of range; keep only numbers a room may hold.
    let odd = odd.replace(
        ",\"r\":[1E400000000]",
        ",\"r\":[5e-324,-1.7976931348623157e308]",
    );
    let head = r#""sort":"random","createdAt":"2025-10-25T20:00:00.000Z","creatorPlexUserId":"1","creatorPlexUsername":"u","filters":[{"key":"genre","operator":"=","value":["Action"],"weight":0.50,"n":1E+2}],"list":[1.0,-0,2.50]"#;
    let fast = format!(r#"{{"roomName":"fast",{head},{odd},"ratings":{{"m":[["a","like",1]]}}}}"#);
    // An escaped key sends the room to serde_json and the full validator; it comes back plain.
    let slow_sent = format!(r#"{{"roomName":"slow",{head},"\u0061b":1.50,{odd}}}"#);
    let slow = format!(r#"{{"roomName":"slow",{head},"ab":1.50,{odd}}}"#);
    let mut d = Daemon::builder(b).args(["--durability", "strict"]).start();
    let mut c = d.connect();
    for room in [&fast, &slow_sent] {
        let r = raw_call(&mut c, &format!(r#"{{"op":"saveRoom","room":{room}}}"#));
        assert!(r.contains("\"ok\":true"), "{r}");
    }
    let get = |c: &mut Conn, name: &str| {
        room_text(&raw_call(
            c,
            &format!(r#"{{"op":"getRoom","roomName":"{name}"}}"#),
        ))
    };
    assert_eq!(get(&mut c, "fast"), fast, "as saved");
    assert_eq!(get(&mut c, "slow"), slow, "as saved (through serde_json)");
    for name in ["fast", "slow"] {
        let r = raw_call(
            &mut c,
            &format!(
                r#"{{"op":"addRating","roomName":"{name}","mediaId":"m","userName":"b","rating":"like","timestamp":2}}"#
            ),
        );
        assert!(r.contains("\"added\":true"), "{r}");
        let r = raw_call(
            &mut c,
            &format!(r#"{{"op":"setProgress","roomName":"{name}","userName":"b","progress":7}}"#),
        );
        assert!(r.contains("\"ok\":true"), "{r}");
    }
    let fast_after = fast.replace(
        r#""ratings":{"m":[["a","like",1]]}"#,
        r#""ratings":{"m":[["a","like",1],["b","like",2]]},"userProgress":{"b":7}"#,
    );
    let slow_after = format!(
        r#"{},"ratings":{{"m":[["b","like",2]]}},"userProgress":{{"b":7}}}}"#,
        &slow[..slow.len() - 1]
    );
    let expect = |c: &mut Conn, when: &str| {
        assert_eq!(get(c, "fast"), fast_after, "{when}");
        assert_eq!(get(c, "slow"), slow_after, "{when}");
        let listed = raw_call(c, r#"{"op":"listRooms"}"#);
        assert!(
            listed.contains(&fast_after) && listed.contains(&slow_after),
            "{when}: {listed}"
        );
    };
    expect(&mut c, "after addRating and setProgress");
    if b == Backend::Memory {
        return;
    }
    // Redis keeps the rooms; the file backend replays its journal.
    d.kill9();
    d.restart();
    let mut c = d.connect();
    expect(&mut c, "after a restart");
    drop(c);
    d.stop();
    if b == Backend::File {
        let file = fs::read_to_string(d.room_path("fast")).unwrap();
        for number in [
            "12345678901234567890123,",
            "2.50,",
            "1E+2,",
            "-9223372036854775809,",
            "-0,",
            "1e-7,",
        ] {
            assert!(
                file.contains(&format!(": {number}")),
                "room file lost {number}:\n{file}"
            );
        }
    }
    d.restart();
    let mut c = d.connect();
    expect(&mut c, "after a fold and a restart");
}
