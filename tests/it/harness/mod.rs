//! Shared harness for the black-box tests: starts the real `moviematch-storaged` binary in its
//! own temp dir, speaks NDJSON to it over its Unix socket, and never leaves a process behind
//! (dropping a `Daemon` kills it).
//!
//! Layout of a test's temp dir: `rooms/` (storagePath), `storaged.sock`, `daemon-N.stderr` /
//! `daemon-N.stdout` (one pair per run), `config.yaml` when a test writes one.
#![allow(dead_code)]

pub mod redis;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::RawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_moviematch-storaged");
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs each listed `fn name(backend: Backend)` once per backend, as `memory::name` and `file::name`.
#[allow(unused_macros)]
macro_rules! for_each_backend {
    ($($test:ident),* $(,)?) => {
        mod memory { $( #[test] fn $test() { super::$test(crate::harness::Backend::Memory) } )* }
        mod file { $( #[test] fn $test() { super::$test(crate::harness::Backend::File) } )* }
        mod redis { $( #[test] fn $test() { super::$test(crate::harness::Backend::Redis) } )* }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    File,
    /// A private `redis-server` per test directory, shared by sibling daemons.
    Redis,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::File => "file",
            Backend::Redis => "redis",
        }
    }
}

/// Everything needed to start the daemon, kept so it can be started again on the same directory.
#[derive(Clone)]
pub struct DaemonBuilder {
    tmp: Arc<TempDir>,
    backend: Option<Backend>,
    cwd: PathBuf,
    socket: PathBuf,
    storage: PathBuf,
    /// false: pass neither `--socket` nor `--storage-path` (defaults, config file or env decide).
    pass_paths: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    umask: Option<libc::mode_t>,
    /// RLIMIT_FSIZE for the daemon (writes past it fail with EFBIG; SIGXFSZ is ignored).
    file_size_limit: Option<u64>,
    /// A listening socket handed over as fd 3, systemd style (LISTEN_FDS=1), and whether
    /// LISTEN_PID names the daemon (else it names pid 1, another process).
    listen_fd: Option<(RawFd, bool)>,
    /// The Redis server of a `redis` daemon, shared with its siblings.
    redis: Option<Arc<std::sync::Mutex<redis::RedisServer>>>,
}

/// Env vars of the developer's shell that must never reach the daemon.
fn is_leaky_env(key: &str) -> bool {
    ["STORAGE_", "REDIS_", "LISTEN_", "WATCHDOG_"]
        .iter()
        .any(|p| key.starts_with(p))
        || ["NOTIFY_SOCKET", "JOURNAL_STREAM", "RUST_LOG", "LOG_LEVEL"].contains(&key)
}

fn new_tmp() -> Arc<TempDir> {
    Arc::new(
        tempfile::Builder::new()
            .prefix("mm-")
            .tempdir()
            .expect("create temp dir"),
    )
}

impl DaemonBuilder {
    pub fn new(backend: Backend) -> Self {
        let tmp = new_tmp();
        let root = tmp.path().to_path_buf();
        DaemonBuilder {
            tmp,
            backend: Some(backend),
            cwd: root.clone(),
            socket: root.join("storaged.sock"),
            storage: root.join("rooms"),
            pass_paths: true,
            args: Vec::new(),
            env: Vec::new(),
            umask: None,
            file_size_limit: None,
            listen_fd: None,
            redis: (backend == Backend::Redis).then(|| {
                Arc::new(std::sync::Mutex::new(redis::RedisServer::start(
                    &root.join("redis"),
                )))
            }),
        }
    }

    /// The Redis server of a `redis` daemon.
    pub fn redis(&self) -> std::sync::MutexGuard<'_, redis::RedisServer> {
        self.redis
            .as_ref()
            .expect("a redis daemon")
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// No flags at all, started in an empty directory `<tmp>/cwd`: the documented defaults apply.
    pub fn bare() -> Self {
        let mut b = DaemonBuilder::new(Backend::File)
            .no_backend_flag()
            .no_path_flags();
        b.cwd = b.tmp.path().join("cwd");
        fs::create_dir(&b.cwd).unwrap();
        b.socket = b.cwd.join("data/storaged.sock");
        b.storage = b.cwd.join("data/rooms");
        b
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }
    pub fn storage_path(&self) -> &Path {
        &self.storage
    }
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn umask(mut self, mask: libc::mode_t) -> Self {
        self.umask = Some(mask);
        self
    }
    /// Makes every write past `bytes` in any one file fail (EFBIG), to provoke `storage` errors.
    pub fn file_size_limit(mut self, bytes: u64) -> Self {
        self.file_size_limit = Some(bytes);
        self
    }
    pub fn socket(mut self, p: impl Into<PathBuf>) -> Self {
        self.socket = p.into();
        self
    }
    pub fn storage(mut self, p: impl Into<PathBuf>) -> Self {
        self.storage = p.into();
        self
    }
    /// Do not pass `--storage-type` (a config file or env decides).
    pub fn no_backend_flag(mut self) -> Self {
        self.backend = None;
        self
    }
    /// Do not pass `--socket`/`--storage-path`; the builder still expects them at the given paths.
    pub fn no_path_flags(mut self) -> Self {
        self.pass_paths = false;
        self
    }
    /// Writes `<tmp>/config.yaml` and passes `--config` with it.
    pub fn config_yaml(self, yaml: &str) -> Self {
        let path = self.tmp.path().join("config.yaml");
        fs::write(&path, yaml).unwrap();
        self.arg("--config").arg(path.to_str().unwrap())
    }

    /// Hands `fd` (a listening socket the caller keeps open) to the daemon as systemd does.
    pub fn listen_fd(mut self, fd: RawFd, pid_is_daemon: bool) -> Self {
        self.listen_fd = Some((fd, pid_is_daemon));
        self
    }

    fn command(&self, run: usize) -> (Command, PathBuf) {
        let mut cmd = match self.listen_fd {
            None => Command::new(BIN),
            Some((fd, pid_is_daemon)) => {
                // `exec` keeps the shell's pid, so `$$` is the daemon's pid.
                let pid = if pid_is_daemon { "$$" } else { "1" };
                let mut sh = Command::new("/bin/sh");
                let script = format!("LISTEN_PID={pid} LISTEN_FDS=1 exec \"$0\" \"$@\"");
                sh.arg("-c").arg(script).arg(BIN);
                // SAFETY: dup2 and fcntl are async-signal-safe. dup2 onto itself keeps
                // close-on-exec, so then the flag is cleared by hand.
                unsafe {
                    sh.pre_exec(move || {
                        let rc = match fd {
                            3 => libc::fcntl(3, libc::F_SETFD, 0),
                            _ => libc::dup2(fd, 3),
                        };
                        if rc == -1 {
                            return Err(io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                sh
            }
        };
        cmd.current_dir(&self.cwd);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(is_leaky_env) {
                cmd.env_remove(&k);
            }
        }
        cmd.env("NO_COLOR", "1");
        if let Some(b) = self.backend {
            cmd.arg("--storage-type").arg(b.name());
        }
        if let Some(redis) = &self.redis {
            let url = redis.lock().unwrap_or_else(|e| e.into_inner()).url();
            cmd.arg("--redis-url").arg(url);
        }
        if self.pass_paths {
            cmd.arg("--storage-path").arg(&self.storage);
            cmd.arg("--socket").arg(&self.socket);
        }
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log = self.tmp.path().join(format!("daemon-{run}.stderr"));
        let out = self.tmp.path().join(format!("daemon-{run}.stdout"));
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(out).unwrap())
            .stderr(fs::File::create(&log).unwrap());
        // Even if the test process is killed (a nextest timeout), the daemon does not outlive it.
        // (The signal comes when the thread that spawned the daemon ends: the test's own thread.)
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        if let Some(limit) = self.file_size_limit {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit and signal are async-signal-safe; an ignored signal stays
            // ignored across exec, so the daemon sees EFBIG instead of being killed.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(mask) = self.umask {
            // SAFETY: umask is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        (cmd, log)
    }

    /// Spawns without waiting for readiness.
    pub fn spawn(self) -> Daemon {
        let mut d = Daemon {
            spec: self,
            child: None,
            log: PathBuf::new(),
            runs: 0,
        };
        d.spawn_run();
        d
    }

    /// Spawns and waits until the socket accepts a connection.
    pub fn start(self) -> Daemon {
        let mut d = self.spawn();
        d.wait_ready();
        d
    }

    /// For a daemon expected to refuse to start: waits for it to exit and returns what it said.
    pub fn run_to_exit(self) -> Exited {
        let mut d = self.spawn();
        let status = d.wait_exit();
        let (stderr, tmp) = (d.stderr(), d.spec.tmp.clone());
        Exited {
            status,
            stderr,
            tmp,
        }
    }
}

pub struct Exited {
    pub status: ExitStatus,
    pub stderr: String,
    /// Keeps the temp dir (and anything a test put there) while the result is looked at.
    pub tmp: Arc<TempDir>,
}

pub struct Daemon {
    spec: DaemonBuilder,
    child: Option<Child>,
    log: PathBuf,
    runs: usize,
}

impl Daemon {
    pub fn start(backend: Backend) -> Daemon {
        DaemonBuilder::new(backend).start()
    }
    /// Starts with extra command-line arguments.
    pub fn start_with<S: Into<String>>(b: Backend, args: impl IntoIterator<Item = S>) -> Daemon {
        DaemonBuilder::new(b).args(args).start()
    }
    pub fn builder(backend: Backend) -> DaemonBuilder {
        DaemonBuilder::new(backend)
    }
    /// A builder sharing this daemon's temp dir and paths (for a second daemon, or a restart
    /// with other flags once this one stopped).
    pub fn sibling(&self) -> DaemonBuilder {
        self.spec.clone()
    }

    /// The Redis server of a `redis` daemon.
    pub fn redis(&self) -> std::sync::MutexGuard<'_, redis::RedisServer> {
        self.spec.redis()
    }

    pub fn dir(&self) -> &Path {
        self.spec.tmp.path()
    }
    pub fn storage(&self) -> &Path {
        &self.spec.storage
    }
    pub fn socket(&self) -> &Path {
        &self.spec.socket
    }
    pub fn room_path(&self, name: &str) -> PathBuf {
        self.spec.storage.join(room_file_name(name))
    }
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon not running").id() as i32
    }

    fn spawn_run(&mut self) {
        assert!(
            self.child.is_none(),
            "previous daemon process still running"
        );
        // Unique per process run, also across sibling daemons sharing the temp dir.
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        self.runs = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let (mut cmd, log) = self.spec.command(self.runs);
        self.child = Some(cmd.spawn().expect("spawn moviematch-storaged"));
        self.log = log;
    }

    /// Starts the daemon again on the same directory, socket and flags; waits until ready.
    pub fn restart(&mut self) {
        self.spawn_run();
        self.wait_ready();
    }

    /// Later runs (restarts) write files without a size limit.
    pub fn clear_file_size_limit(&mut self) {
        self.spec.file_size_limit = None;
    }

    /// Stops with SIGTERM and asserts the clean exit (code 0).
    pub fn stop(&mut self) {
        let status = self.sigterm();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM: {status}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Stops with SIGTERM (asserting exit 0) and starts again.
    pub fn stop_and_restart(&mut self) {
        self.stop();
        self.restart();
    }

    /// The current run's stderr (the logs), without ANSI colour codes.
    pub fn stderr(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(
            &fs::read(&self.log).unwrap_or_default(),
        ))
    }

    /// Polls the log until it contains `needle` (logs can be written after the fact).
    pub fn wait_log(&self, needle: &str) {
        self.wait_for(&format!("log line containing {needle:?}"), || {
            self.stderr().contains(needle)
        });
    }

    /// `wait_until`, with this daemon's stderr in the failure message.
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > Duration::from_secs(10) {
                let state = self.child.as_ref().map(|c| process_state(c.id() as i32));
                let stderr = self.stderr();
                panic!("timed out waiting for {what}; process state {state:?}; stderr:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                panic!(
                    "daemon exited before ready with {status}; stderr:\n{}",
                    self.stderr()
                );
            }
            // The socket is bound before the rooms are loaded (a client that connects early
            // waits in the backlog), so a connection is not readiness: an answer to `ping` is.
            if self.spec.socket.exists() && answers_ping(&self.spec.socket) {
                return;
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "daemon not ready after {READY_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit (killing it and panicking after `EXIT_TIMEOUT`).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            if start.elapsed() > EXIT_TIMEOUT {
                self.kill9();
                panic!(
                    "daemon did not exit within {EXIT_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }
    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn try_connect(&self) -> io::Result<Conn> {
        Conn::connect(&self.spec.socket)
    }
    pub fn connect(&self) -> Conn {
        self.try_connect()
            .unwrap_or_else(|e| panic!("connect: {e}; stderr:\n{}", self.stderr()))
    }

    pub fn rss_kb(&self) -> u64 {
        proc_status_kb(self.pid(), "VmRSS")
    }
    /// Peak resident set size so far.
    pub fn hwm_kb(&self) -> u64 {
        proc_status_kb(self.pid(), "VmHWM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The state letter of /proc/<pid>/stat ('Z': exited, not yet reaped).
fn process_state(pid: i32) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn proc_status_kb(pid: i32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `cond` every 10 ms for up to 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One client connection: one request line out, one response line in.
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    pub fn connect(path: &Path) -> io::Result<Conn> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.writer.set_read_timeout(Some(t)).unwrap();
    }

    /// A second handle on the socket, for a writer thread while this one reads.
    pub fn writer(&self) -> UnixStream {
        self.writer.try_clone().unwrap()
    }

    /// `send_raw` that reports a closed connection instead of panicking.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to daemon");
    }

    pub fn try_send(&mut self, req: &Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        self.writer.write_all(&line)
    }

    pub fn send(&mut self, req: &Value) {
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// The next line without its `\n`; `None` at EOF. Panics on timeout.
    pub fn read_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                assert_eq!(buf.pop(), Some(b'\n'), "response not ended by \\n: {buf:?}");
                Some(String::from_utf8(buf).expect("response is not UTF-8"))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a response: {e} (a hang or a missing response)"),
        }
    }

    /// The next line, or `None` on EOF, error or timeout.
    pub fn try_read_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf).trim_end().to_string()),
            _ => None,
        }
    }

    /// The next line, parsed; it must be one JSON object.
    pub fn read_json(&mut self) -> Value {
        let line = self
            .read_line()
            .expect("connection closed instead of a response");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {line}"));
        assert!(v.is_object(), "response is not an object: {line}");
        v
    }

    pub fn call(&mut self, req: Value) -> Value {
        self.send(&req);
        self.read_json()
    }

    /// `call` that must succeed; returns the response.
    pub fn ok(&mut self, req: Value) -> Value {
        let resp = self.call(req.clone());
        assert_ok(&resp, &req);
        resp
    }

    /// Sends `req`; every field of `want` must equal that field of the response (for `error`,
    /// each field of the error object). Without `error` in `want` the response must be `ok`.
    pub fn expect(&mut self, req: Value, want: Value) -> Value {
        let resp = self.call(req.clone());
        let want = want.as_object().expect("want is an object");
        match want.get("error") {
            Some(Value::Object(err)) => {
                let code = err["code"].as_str().expect("error.code in want");
                let got = assert_err(&resp, code);
                for (k, v) in err {
                    assert_eq!(got.get(k), Some(v), "request {req}\nerror.{k}: got {resp}");
                }
            }
            _ => assert_ok(&resp, &req),
        }
        for (k, v) in want.iter().filter(|(k, _)| *k != "error") {
            assert_eq!(resp.get(k), Some(v), "request {req}\nfield {k}: got {resp}");
        }
        resp
    }

    /// `expect` for each `[request, want]` pair of `steps`, in order.
    pub fn script(&mut self, steps: Value) {
        for step in steps.as_array().expect("steps is an array") {
            self.expect(step[0].clone(), step[1].clone());
        }
    }

    /// `call` that must fail with `code`; returns the error object.
    pub fn err(&mut self, req: Value, code: &str) -> Map<String, Value> {
        let resp = self.call(req.clone());
        assert_eq!(
            resp["ok"], false,
            "request {req}\nshould fail with {code}: {resp}"
        );
        assert_err(&resp, code).clone()
    }

    /// Names of the rooms `listRooms` returns with these arguments (first page).
    pub fn names(&mut self, args: Value) -> Vec<String> {
        room_names(&self.list(args).0)
    }

    pub fn ping(&mut self) {
        let r = self.ok(json!({"op": "ping"}));
        assert_eq!(r["protocol"], 1);
    }

    pub fn save(&mut self, room: &Value) -> u64 {
        revision(&self.ok(json!({"op": "saveRoom", "room": room})))
    }

    /// The room and its revision, or `None`.
    pub fn get(&mut self, name: &str) -> Option<(Value, u64)> {
        let r = self.ok(json!({"op": "getRoom", "roomName": name}));
        if r["room"].is_null() {
            assert!(
                r.get("revision").is_none(),
                "revision present for a missing room: {r}"
            );
            None
        } else {
            Some((r["room"].clone(), revision(&r)))
        }
    }

    pub fn has(&mut self, name: &str) -> bool {
        let r = self.ok(json!({"op": "hasRoom", "roomName": name}));
        r["exists"]
            .as_bool()
            .unwrap_or_else(|| panic!("exists not a bool: {r}"))
    }

    /// `(revision, added)`
    pub fn rate(&mut self, room: &str, media: &str, user: &str, rating: &str) -> (u64, bool) {
        let r = self.ok(json!({"op": "addRating", "roomName": room, "mediaId": media,
                              "userName": user, "rating": rating, "timestamp": 1_700_000_000_000u64}));
        (
            revision(&r),
            r["added"]
                .as_bool()
                .unwrap_or_else(|| panic!("added not a bool: {r}")),
        )
    }

    /// `listRooms` with the given extra arguments: `(rooms, next)`.
    pub fn list(&mut self, args: Value) -> (Vec<Value>, Option<String>) {
        let mut req = args;
        req["op"] = json!("listRooms");
        let r = self.ok(req);
        let rooms = r["rooms"]
            .as_array()
            .unwrap_or_else(|| panic!("rooms not an array: {r}"));
        assert!(
            r.get("next").is_some(),
            "next missing (must be a string or null): {r}"
        );
        (rooms.clone(), r["next"].as_str().map(String::from))
    }
}

pub fn revision(resp: &Value) -> u64 {
    let rev = resp["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("no revision in {resp}"));
    assert!(rev >= 1, "revisions are positive: {resp}");
    rev
}

pub fn assert_ok(resp: &Value, req: &Value) {
    assert_eq!(resp["ok"], true, "request {req}\nfailed: {resp}");
    assert!(
        resp.get("error").is_none(),
        "ok response with an error: {resp}"
    );
}

/// Asserts a well-formed failure with `code`; returns the error object.
pub fn assert_err<'a>(resp: &'a Value, code: &str) -> &'a Map<String, Value> {
    assert_eq!(resp["ok"], false, "expected error {code}, got {resp}");
    let err = resp["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error object: {resp}"));
    assert_eq!(
        err.get("code").and_then(Value::as_str),
        Some(code),
        "wrong code in {resp}"
    );
    assert!(
        err.get("message").is_some_and(Value::is_string),
        "no message in {resp}"
    );
    if let Some(cause) = err.get("cause") {
        assert!(cause.is_string(), "cause must be a string: {resp}");
    }
    err
}

pub fn room_names(rooms: &[Value]) -> Vec<String> {
    rooms
        .iter()
        .map(|r| r["roomName"].as_str().expect("roomName").to_string())
        .collect()
}

/// A valid room with every documented field (the example of PROTOCOL.md section 4).
pub fn room(name: &str) -> Value {
    json!({
        "roomName": name,
        "password": "secret",
        "sort": "random",
        "createdAt": "2025-10-25T20:00:00.000Z",
        "creatorPlexUserId": "12345",
        "creatorPlexUsername": "john_doe",
        "options": ["EndOnFirstMatch"],
        "filters": [{ "key": "genre", "operator": "=", "value": ["Action", "Comedy"] }],
        "ratings": { "movie-123": [["john_doe", "like", 1729890000000u64]] },
        "userProgress": { "john_doe": 5 }
    })
}

/// `room` with `fields` set (a `null` value removes the field).
pub fn with(mut room: Value, fields: Value) -> Value {
    let obj = room.as_object_mut().expect("room is an object");
    for (k, v) in fields.as_object().expect("fields is an object") {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    room
}

/// A valid room with only the required fields.
pub fn bare_room(name: &str) -> Value {
    json!({
        "roomName": name,
        "sort": "rating",
        "createdAt": "2025-10-26T08:30:00.000Z",
        "creatorPlexUserId": "777",
        "creatorPlexUsername": "jane"
    })
}

/// The file name of a room in storagePath: `<name>.json` for plain names, else `~` + percent
/// encoding + `.json` when that fits in 255 bytes, else `~=` + hex SHA-256 + `.json`.
pub fn room_file_name(name: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !name.is_empty() && name.len() <= 250 && name.bytes().all(plain) {
        return format!("{name}.json");
    }
    let mut enc = String::from("~");
    for b in name.bytes() {
        if plain(b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    enc.push_str(".json");
    if enc.len() <= 255 {
        enc
    } else {
        format!("~={:x}.json", Sha256::digest(name.as_bytes()))
    }
}

pub fn read_json_file(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Writes a room file by hand, pretty-printed, as a user editing the directory would.
/// Whether a daemon on `socket` answers a `ping` within a moment.
fn answers_ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(b"{\"op\":\"ping\"}\n").is_err() {
        return false;
    }
    let mut line = String::new();
    io::BufReader::new(stream).read_line(&mut line).is_ok() && line.ends_with('\n')
}

pub fn write_room_file(path: &Path, room: &Value) {
    fs::write(path, serde_json::to_string_pretty(room).unwrap() + "\n").unwrap();
}

/// Entry names of a directory, sorted (empty if it does not exist).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Room files in storagePath: every entry not starting with `.`.
pub fn room_files(storage: &Path) -> Vec<String> {
    dir_entries(storage)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Every path under `dir`, recursively, symlinks not followed.
pub fn all_paths_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(all_paths_under(&p));
        }
        out.push(p);
    }
    out
}

pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
