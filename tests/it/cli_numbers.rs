//! Issue 14: `moviematch-storage` passes rooms through as text. Numbers a room holds in fields
//! the daemon does not interpret (`12345678901234567890123`, `2.50`, `1E+2`, `-0`,
//! `-9223372036854775809`) reach the daemon and the terminal exactly as written, through every
//! command that sends or prints rooms: save (file and stdin), get, list, export, import.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::{Backend, Conn, Daemon};

const CLI: &str = env!("CARGO_BIN_EXE_moviematch-storage");

/// Fields with numbers that a parse into f64/i64 and back would change.
const ODD: &str = r#""a":12345678901234567890123,"b":2.50,"c":1E+2,"d":-0,"f":-9223372036854775809,"nested":{"k":[1.10,-0.0]}"#;

fn room_text(name: &str) -> String {
    format!(
        r#"{{"roomName":"{name}","sort":"random","createdAt":"2025-10-25T20:00:00.000Z","creatorPlexUserId":"1","creatorPlexUsername":"u",{ODD}}}"#
    )
}

fn cli(socket: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(CLI);
    command
        .env_remove("STORAGE_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run moviematch-storage");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The room as the daemon holds it, read over the socket (not through the CLI).
fn stored(c: &mut Conn, name: &str) -> String {
    c.send_raw(format!("{{\"op\":\"getRoom\",\"roomName\":\"{name}\"}}\n").as_bytes());
    let line = c.read_line().expect("an answer");
    let fields: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    fields["room"].get().to_owned()
}

#[test]
fn save_sends_and_get_list_export_print_numbers_as_written() {
    let d = Daemon::builder(Backend::Memory).start();
    let socket = d.socket().to_owned();
    let mut c = d.connect();

    // save FILE, written with indentation as a person would: sent as written, on one line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("room.json");
    let pretty_in_file = room_text("from-file").replace(",\"", ",\n  \"");
    std::fs::write(&file, &pretty_in_file).unwrap();
    cli(&socket, &["save", file.to_str().unwrap()], None);
    assert_eq!(
        stored(&mut c, "from-file"),
        room_text("from-file"),
        "save FILE"
    );

    // save - (stdin)
    cli(&socket, &["save", "-"], Some(&room_text("from-stdin")));
    assert_eq!(
        stored(&mut c, "from-stdin"),
        room_text("from-stdin"),
        "save -"
    );

    // get prints the room as the daemon holds it (one line when not on a terminal).
    let got = cli(&socket, &["get", "from-stdin"], None);
    assert_eq!(
        stdout(&got),
        format!("{}\n", room_text("from-stdin")),
        "get"
    );
    let got = cli(&socket, &["get", "from-stdin", "--with-revision"], None);
    assert!(
        stdout(&got).contains(&room_text("from-stdin")),
        "get --with-revision: {}",
        stdout(&got)
    );

    // list (whole rooms) and export.
    let listed = stdout(&cli(&socket, &["list"], None));
    for name in ["from-file", "from-stdin"] {
        assert!(listed.contains(&room_text(name)), "list: {listed}");
    }
    let exported = stdout(&cli(&socket, &["export"], None));
    let mut lines: Vec<&str> = exported.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [room_text("from-file"), room_text("from-stdin")],
        "export"
    );

    // import of what was exported, into another daemon, keeps them too.
    let other = Daemon::builder(Backend::Memory).start();
    cli(other.socket(), &["import", "-"], Some(&exported));
    let mut oc = other.connect();
    assert_eq!(
        stored(&mut oc, "from-file"),
        room_text("from-file"),
        "import"
    );
}

/// On a terminal the room is indented, and still every number is as written.
#[test]
fn get_on_a_terminal_is_indented_with_numbers_as_written() {
    let d = Daemon::builder(Backend::Memory).start();
    let socket = d.socket().to_owned();
    // Saved over the socket, so that only `get` is under test here.
    let mut c = d.connect();
    c.send_raw(format!("{{\"op\":\"saveRoom\",\"room\":{}}}\n", room_text("tty")).as_bytes());
    let saved = c.read_line().expect("an answer");
    assert!(saved.contains("\"ok\":true"), "{saved}");
    assert_eq!(stored(&mut c, "tty"), room_text("tty"));
    // `script` gives the command a pseudo-terminal for its stdout.
    let shown = Command::new("script")
        .args(["-qec"])
        .arg(format!("{CLI} --socket '{}' get tty", socket.display()))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("run script (util-linux)");
    let shown = String::from_utf8_lossy(&shown.stdout).replace("\r\n", "\n");
    for token in [
        "\"a\": 12345678901234567890123,",
        "\"b\": 2.50,",
        "\"c\": 1E+2,",
        "\"d\": -0,",
        "\"f\": -9223372036854775809,",
        "    1.10,",
        "    -0.0\n",
    ] {
        assert!(shown.contains(token), "{token:?} not in:\n{shown}");
    }
    assert!(shown.contains("\n  \"roomName\": \"tty\",\n"), "{shown}");
}
