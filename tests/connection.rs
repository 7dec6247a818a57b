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
