//! Everything systemd, seen from outside the process: the READY/STOPPING/WATCHDOG notifications
//! and socket activation as the daemon sees them (a datagram socket standing in for
//! NOTIFY_SOCKET, a listening socket passed as fd 3), socket activation through the real
//! `systemd-socket-activate`, access control by peer credentials (`allowedUids`/`allowedGids`)
//! against a client running as `nobody`, and the watchdog's keep-alives (their rate, and that
//! they stop while the process, or only its storage actor, is stopped).
//!
//! The tests of the real `systemd-socket-activate` and of peer credentials need Debian's
//! `systemd` package, `socat`, and root (to run a client as `nobody`, and to install what is
//! missing with apt-get). They fail with a message saying what is missing rather than skip.

use crate::harness::*;
use serde_json::json;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Prerequisites
// ---------------------------------------------------------------------------------------------

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    })
}

/// Makes sure `program` is installed: installs the Debian `package` with apt-get when running as
/// root, else fails saying what to install. Never skips.
fn require_program(program: &str, package: &str) {
    if on_path(program) {
        return;
    }
    assert!(
        is_root() && on_path("apt-get"),
        "this test needs `{program}` from the Debian package `{package}`: \
         install it (sudo apt-get install {package}) or run the tests as root"
    );
    // Two tests may get here at once: dpkg's lock makes the second wait (-o DPkg::Lock::Timeout).
    let out = Command::new("apt-get")
        .args([
            "-o",
            "DPkg::Lock::Timeout=300",
            "install",
            "-y",
            "-qq",
            package,
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("run apt-get");
    assert!(
        out.status.success() && on_path(program),
        "apt-get install {package} failed ({}); install it by hand:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_root(why: &str) {
    assert!(
        is_root(),
        "this test must run as root: {why} (run `cargo nextest run -E 'test(/^systemd::/)'` as root)"
    );
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("mm-systemd-")
        .tempdir()
        .expect("create temp dir")
}

/// The daemon under `systemd-socket-activate`, listening on `listen` (one `-l` each) with the
/// given `--fdname=`; `--socket` names a path the daemon must NOT bind.
fn socket_activate(dir: &Path, listen: &[&Path], fdnames: &str) -> Proc {
    require_program("systemd-socket-activate", "systemd");
    let mut cmd = Command::new("systemd-socket-activate");
    for path in listen {
        cmd.arg("-l").arg(path);
    }
    cmd.arg(format!("--fdname={fdnames}"))
        .arg(BIN)
        .args(["--storage-type", "memory"])
        .arg("--socket")
        .arg(dir.join("own.sock"))
        .arg("--storage-path")
        .arg(dir.join("rooms"))
        .current_dir(dir);
    Proc::spawn(cmd, dir, "daemon")
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

/// Inodes of the sockets among `pid`'s open file descriptors.
fn socket_inodes(pid: i32) -> Vec<u64> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?.to_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The paths of the listening Unix sockets `pid` holds ("" for an unnamed one).
fn listening_unix_sockets(pid: i32) -> Vec<String> {
    const SO_ACCEPTCON: u64 = 0x10000; // "Flags" column of /proc/net/unix: a listening socket
    let inodes = socket_inodes(pid);
    fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode [Path]
            let cols: Vec<&str> = line.split_whitespace().collect();
            let flags = u64::from_str_radix(cols.get(3)?, 16).ok()?;
            let inode: u64 = cols.get(6)?.parse().ok()?;
            (flags & SO_ACCEPTCON != 0 && inodes.contains(&inode))
                .then(|| cols.get(7).unwrap_or(&"").to_string())
        })
        .collect()
}

/// The state letter of every thread of `pid` (`T`: stopped, `t`: stopped by a tracer).
fn thread_states(pid: i32) -> Vec<char> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| {
            let stat = fs::read_to_string(e.unwrap().path().join("stat")).unwrap_or_default();
            stat.rsplit(')')
                .next()
                .and_then(|s| s.trim_start().chars().next())
                .unwrap_or('?')
        })
        .collect()
}

/// The id of `pid`'s thread called `name`.
fn thread_id(pid: i32, name: &str) -> i32 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|task| fs::read_to_string(task.join("comm")).is_ok_and(|c| c.trim_end() == name))
        .unwrap_or_else(|| panic!("no thread called {name:?} in process {pid}"))
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Socket activation through systemd-socket-activate
// ---------------------------------------------------------------------------------------------

/// Connects and pings until the daemon answers (systemd-socket-activate starts it only once a
/// first connection arrives; that connection waits in the backlog and must be answered too).
fn ping_until_answered(path: &Path, daemon: &Proc) {
    let mut conn = None;
    wait_until(&format!("{} to accept connections", path.display()), || {
        conn = Conn::connect(path).ok();
        conn.is_some()
    });
    let mut conn = conn.unwrap();
    let resp = conn.call(json!({"id": 1, "op": "ping"}));
    assert_eq!(
        resp,
        json!({"id": 1, "ok": true, "protocol": 1}),
        "stderr:\n{}",
        daemon.stderr()
    );
}

#[test]
fn socket_activate_serves_the_passed_socket_binds_none_and_leaves_it() {
    let dir = temp_dir();
    let passed = dir.path().join("activated.sock");
    let mut d = socket_activate(dir.path(), &[&passed], "storage");
    ping_until_answered(&passed, &d);

    // systemd-socket-activate exec'd the daemon in place: same pid.
    let exe = fs::read_link(format!("/proc/{}/exe", d.pid())).unwrap();
    assert_eq!(exe, fs::canonicalize(BIN).unwrap(), "not the daemon yet?");
    let mut c = Conn::connect(&passed).unwrap();
    c.save(&room("movie-night"));
    assert_eq!(c.get("movie-night").unwrap().0, room("movie-night"));

    let own = dir.path().join("own.sock");
    assert!(
        !own.exists(),
        "the daemon bound --socket {} although systemd passed a socket",
        own.display()
    );
    let listening = listening_unix_sockets(d.pid());
    assert_eq!(
        listening,
        vec![passed.to_str().unwrap().to_string()],
        "the daemon must listen on the passed socket only"
    );
    assert!(
        d.stderr()
            .contains("serving on the socket passed by systemd"),
        "stderr:\n{}",
        d.stderr()
    );

    drop(c);
    d.stop();
    let meta = fs::symlink_metadata(&passed)
        .unwrap_or_else(|e| panic!("the daemon removed the socket file it did not create ({e})"));
    assert!(meta.file_type().is_socket());
    assert!(!own.exists());
}

#[test]
fn socket_activate_with_several_sockets_serves_the_one_named_storage() {
    let dir = temp_dir();
    let other = dir.path().join("other.sock");
    let passed = dir.path().join("activated.sock");
    // The socket named "storage" comes second: the daemon must pick it by name, not position.
    let d = socket_activate(dir.path(), &[&other, &passed], "metrics:storage");
    ping_until_answered(&passed, &d);
    assert!(!dir.path().join("own.sock").exists());

    // The other socket is held (inherited) but not served: a request there gets no answer.
    let mut c = Conn::connect(&other).unwrap();
    c.set_read_timeout(Duration::from_millis(500));
    c.send(&json!({"id": 1, "op": "ping"}));
    assert_eq!(
        c.try_read_line(),
        None,
        "the socket not named storage was served"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. allowedUids / allowedGids
// ---------------------------------------------------------------------------------------------

fn denied_line(uid: u32, gid: u32) -> String {
    format!(
        r#"{{"ok":false,"error":{{"code":"bad_request","message":"access denied for uid {uid} gid {gid}"}}}}"#
    )
}

#[test]
fn a_peer_outside_allowed_uids_gets_one_error_line_then_eof() {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let other = if uid == 4242 { 4243 } else { 4242 };
    let d = Daemon::builder(Backend::Memory)
        .args(["--allowed-uids", &other.to_string()])
        .args(["--allowed-gids", &other.to_string()])
        .start();
    let mut c = d.connect();
    // A request is never answered: the refusal comes first, then the end of the connection.
    let _ = c.try_send(&json!({"id": 1, "op": "ping"}));
    assert_eq!(
        c.read_line().as_deref(),
        Some(denied_line(uid, gid).as_str())
    );
    assert_eq!(c.read_line(), None, "expected EOF after the refusal");
    d.wait_log(&format!("refused a connection from uid {uid} gid {gid}"));
}

/// nobody's uid and gid, from the user database.
/// Connects to the socket with `socat` running as `nobody` (no supplementary groups), sends
/// `input` if given (else only reads: `socat -u`), and returns what came back, line by line.
/// socat ends when the daemon closes the connection; if it is still running after `IO_TIMEOUT`
/// the connection was never closed, and that fails.
///
/// A refused peer is best checked without input: socat exits at once on EPIPE when it writes to
/// a connection the daemon already closed, possibly before reading the refusal.
fn as_nobody(socket: &Path, input: Option<&str>) -> Vec<String> {
    require_root("only root can run a client as the user nobody");
    require_program("socat", "socat");
    let (uid, gid) = nobody();
    let mut cmd = Command::new("socat");
    // -t: after one direction ends, wait this long for the other (the daemon's answer).
    cmd.args(["-t", "10"]);
    if input.is_none() {
        cmd.arg("-u"); // one direction only: from the socket to stdout
    }
    cmd.arg(format!("UNIX-CONNECT:{}", socket.display()))
        .arg("-")
        .uid(uid)
        .gid(gid) // std drops the supplementary groups (setgroups) when it changes uid as root
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    dies_with_the_test(&mut cmd);
    let mut child = cmd.spawn().expect("spawn socat");
    let mut stdin = child.stdin.take().unwrap();
    // The daemon may already have closed the connection: socat then stops reading its input.
    let _ = stdin.write_all(input.unwrap_or("").as_bytes()); // EPIPE shows in the result
    drop(stdin);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > IO_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the connection as nobody was not closed within {IO_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        !err.contains("Permission denied"),
        "nobody could not reach the socket (a test setup problem): {err}"
    );
    if !err.is_empty() {
        eprintln!("socat as nobody said: {err}");
    }
    out.lines().map(String::from).collect()
}

/// A daemon whose socket `nobody` can reach: 0666 in a 0777 directory.
fn daemon_reachable_by_nobody(args: &[&str]) -> (Daemon, TempDir) {
    let open = temp_dir();
    fs::set_permissions(open.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let d = Daemon::builder(Backend::Memory)
        .socket(open.path().join("storaged.sock"))
        .args(["--socket-mode", "0666"])
        .args(args.iter().copied())
        .start();
    (d, open)
}

const PING: &str = "{\"id\":1,\"op\":\"ping\"}\n";
const PONG: &str = r#"{"id":1,"ok":true,"protocol":1}"#;

#[test]
fn nobody_is_refused_when_only_root_is_allowed() {
    let (uid, gid) = nobody();
    let (d, _open) = daemon_reachable_by_nobody(&["--allowed-uids", "0"]);
    assert_eq!(
        as_nobody(d.socket(), None),
        vec![denied_line(uid, gid)],
        "nobody must get exactly one error line, then EOF"
    );
    d.wait_log(&format!("refused a connection from uid {uid} gid {gid}"));
    // Root, which is listed, still gets in.
    d.connect().ping();
}

#[test]
fn nobody_is_let_in_by_its_uid_or_by_its_gid() {
    let (uid, gid) = nobody();
    let (d, _open) = daemon_reachable_by_nobody(&["--allowed-uids", &uid.to_string()]);
    assert_eq!(as_nobody(d.socket(), Some(PING)), vec![PONG.to_string()]);
    drop(d);

    // The uid is not listed but the gid is: a peer is let in if either is listed.
    let (d, _open) =
        daemon_reachable_by_nobody(&["--allowed-uids", "0", "--allowed-gids", &gid.to_string()]);
    assert_eq!(as_nobody(d.socket(), Some(PING)), vec![PONG.to_string()]);
    // And root, listed by uid, too.
    d.connect().ping();
}

// ---------------------------------------------------------------------------------------------
// 3. Watchdog
// ---------------------------------------------------------------------------------------------

/// WATCHDOG_USEC for the watchdog tests: keep-alives every 100 ms.
const WATCHDOG_USEC: u64 = 200_000;

/// A datagram socket standing in for systemd's NOTIFY_SOCKET.
struct Notify {
    sock: UnixDatagram,
    path: String,
}

impl Notify {
    fn bind(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        Notify {
            sock,
            path: path.to_str().unwrap().to_string(),
        }
    }

    /// The next datagram received before `deadline`, if any.
    fn recv_until(&self, deadline: Instant) -> Option<String> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.sock
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("receiving notifications: {e}"),
        }
    }

    /// Waits up to 10 s for a datagram with the line `what`.
    fn expect(&self, what: &str, d: &Daemon) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(msg) = self.recv_until(deadline) {
            if msg.lines().any(|l| l == what) {
                return;
            }
        }
        panic!("no {what} within 10 s; stderr:\n{}", d.stderr());
    }

    /// Throws away every datagram already queued.
    fn drain(&self) {
        while self
            .recv_until(Instant::now() + Duration::from_millis(1))
            .is_some()
        {}
    }

    /// How many WATCHDOG=1 arrive during `window`.
    fn count_watchdogs(&self, window: Duration) -> usize {
        let deadline = Instant::now() + window;
        let mut n = 0;
        while let Some(msg) = self.recv_until(deadline) {
            n += msg.lines().filter(|l| *l == "WATCHDOG=1").count();
        }
        n
    }
}

fn watched_daemon() -> (Daemon, Notify) {
    let b = Daemon::builder(Backend::File);
    let notify = Notify::bind(b.dir());
    let d = b
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", &WATCHDOG_USEC.to_string())
        .start();
    notify.expect("READY=1", &d);
    (d, notify)
}

/// With keep-alives due every 100 ms, 2 s hold about 20. Loose bounds: a loaded CI machine may
/// delay some; many more would mean the interval is not WATCHDOG_USEC/2.
fn assert_watchdog_rate(notify: &Notify, d: &Daemon) {
    let n = notify.count_watchdogs(Duration::from_secs(2));
    assert!(
        (6..=30).contains(&n),
        "{n} WATCHDOG=1 in 2 s, expected about 20 (WATCHDOG_USEC={WATCHDOG_USEC}); stderr:\n{}",
        d.stderr()
    );
}

fn sigterm_sends_stopping(mut d: Daemon, notify: &Notify) {
    d.signal(libc::SIGTERM);
    notify.expect("STOPPING=1", &d);
    assert_eq!(d.wait_exit().code(), Some(0), "stderr:\n{}", d.stderr());
}

#[test]
fn watchdog_keep_alives_come_at_half_the_timeout_and_stop_while_the_process_is_stopped() {
    let (d, notify) = watched_daemon();
    assert_watchdog_rate(&notify, &d);

    d.signal(libc::SIGSTOP);
    d.wait_for("every thread to stop", || {
        thread_states(d.pid()).iter().all(|s| *s == 'T')
    });
    notify.drain(); // sent before the stop took effect
    let n = notify.count_watchdogs(Duration::from_secs(1));
    assert_eq!(n, 0, "{n} WATCHDOG=1 while the daemon was stopped");

    d.signal(libc::SIGCONT);
    notify.expect("WATCHDOG=1", &d);
    assert_watchdog_rate(&notify, &d);
    d.connect().ping();
    sigterm_sends_stopping(d, &notify);
}

/// Stops one thread of another process with ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT stop only
/// that thread; the rest of the process runs on). Resumed when dropped.
struct StoppedThread(i32);

impl StoppedThread {
    fn stop(tid: i32) -> StoppedThread {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: plain ptrace requests on a thread of our own child; no memory is passed.
        unsafe {
            let rc = libc::ptrace(libc::PTRACE_SEIZE, tid, null, null);
            assert_eq!(
                rc,
                0,
                "ptrace(PTRACE_SEIZE) on thread {tid}: {} (ptrace is needed to stop \
                 only the storage actor)",
                std::io::Error::last_os_error()
            );
            let stopped = StoppedThread(tid);
            let rc = libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null);
            assert_eq!(
                rc,
                0,
                "PTRACE_INTERRUPT: {}",
                std::io::Error::last_os_error()
            );
            let mut status = 0;
            let rc = libc::waitpid(tid, &mut status, libc::__WALL);
            assert!(
                rc == tid && libc::WIFSTOPPED(status),
                "waitpid({tid}) = {rc}, status {status:#x}"
            );
            stopped
        }
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: detaching resumes the thread; harmless if it is gone.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, null, null) };
    }
}

#[test]
fn watchdog_keep_alives_stop_while_only_the_storage_actor_is_stuck() {
    let (d, notify) = watched_daemon();
    assert_watchdog_rate(&notify, &d);

    // Stop the storage actor's thread alone: the process stays alive and keeps answering what
    // does not need the actor, yet the watchdog must go quiet, since a keep-alive is sent only
    // once the actor answered.
    let actor = StoppedThread::stop(thread_id(d.pid(), "storage-actor"));
    let states = thread_states(d.pid());
    assert!(
        states.contains(&'t') && states.iter().any(|s| *s != 't' && *s != 'T'),
        "only the actor should be stopped: thread states {states:?}"
    );
    // A keep-alive whose answer was already on its way may still come.
    std::thread::sleep(Duration::from_millis(300));
    notify.drain();
    let n = notify.count_watchdogs(Duration::from_secs(1));
    assert_eq!(n, 0, "{n} WATCHDOG=1 while the storage actor was stopped");
    let mut c = d.connect();
    c.set_read_timeout(Duration::from_secs(5));
    c.ping();
    d.wait_log("the storage actor did not answer within");

    drop(actor);
    notify.expect("WATCHDOG=1", &d);
    assert_watchdog_rate(&notify, &d);
    c.save(&room("after"));
    drop(c);
    sigterm_sends_stopping(d, &notify);
}

// ---------------------------------------------------------------------------------------------
// Notifications and socket activation, without systemd: a datagram socket stands in for
// NOTIFY_SOCKET, and the harness passes a listening socket as fd 3
// ---------------------------------------------------------------------------------------------

/// A datagram socket standing in for systemd's NOTIFY_SOCKET.
fn notify_socket(dir: &std::path::Path) -> (std::os::unix::net::UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (sock, path.to_str().unwrap().to_string())
}

/// Receives notifications until one contains `what`.
fn expect_notification(sock: &std::os::unix::net::UnixDatagram, what: &str) {
    let mut buf = [0u8; 4096];
    loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {what} from the daemon: {e}"));
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == what)
        {
            return;
        }
    }
}

#[test]
fn systemd_notify_ready_stopping_and_watchdog() {
    let b = Daemon::builder(Backend::File);
    let (sock, path) = notify_socket(b.dir());
    let mut d = b
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .start();
    expect_notification(&sock, "READY=1");
    d.connect().ping();
    for _ in 0..3 {
        expect_notification(&sock, "WATCHDOG=1");
    }
    d.signal(libc::SIGTERM);
    expect_notification(&sock, "STOPPING=1");
    assert_eq!(d.wait_exit().code(), Some(0));
}

#[test]
fn socket_activation_serves_the_passed_socket_and_binds_none() {
    let b = Daemon::builder(Backend::File);
    let passed = b.dir().join("activated.sock");
    let listener = UnixListener::bind(&passed).unwrap();
    let own = b.socket_path().to_path_buf();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let mut d = b.listen_fd(fd, true).spawn();
    let fd3 = std::fs::read_link(format!("/proc/{}/fd/3", d.pid())).unwrap();
    assert!(
        fd3.to_str().unwrap().starts_with("socket:"),
        "harness: fd 3 is {fd3:?}"
    );
    drop(listener); // from now on only the daemon holds the passed socket
    d.wait_for("an answer on the passed socket", || {
        let Ok(mut c) = Conn::connect(&passed) else {
            return false;
        };
        c.set_read_timeout(Duration::from_millis(500));
        c.try_send(&json!({"op": "ping"})).is_ok() && c.try_read_line().is_some()
    });
    Conn::connect(&passed).unwrap().save(&room("r"));
    assert!(
        !own.exists(),
        "a socket was bound although systemd passed one"
    );
    d.stop();
    assert!(
        passed.exists(),
        "the daemon removed a socket file it did not create"
    );
}

#[test]
fn a_passed_socket_for_another_pid_is_ignored() {
    let b = Daemon::builder(Backend::Memory);
    let passed = b.dir().join("activated.sock");
    let listener = UnixListener::bind(&passed).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let d = b.listen_fd(fd, false).start(); // ready on its own socket
    d.connect().ping();
}
