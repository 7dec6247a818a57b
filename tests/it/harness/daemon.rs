//! Daemons: the real `moviematch-storaged` binary started in its own temp dir (or a sibling's),
//! waited on until it answers, signalled, stopped and restarted, its logs read. Dropping a
//! `Daemon` kills it.

use std::fs;
use std::io::{self, BufRead, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::client::Conn;
use super::fixtures::{new_tmp, room_file_name};
use super::process::{proc_status_kb, process_state, strip_ansi, test_child, BIN, EXIT_TIMEOUT};
use super::redis;

pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

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
        // Even if the test process is killed (a nextest timeout), the daemon does not outlive it.
        test_child(&mut cmd);
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
    #[allow(dead_code)] // held, not read: dropping it removes the directory
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
    /// Client `c`'s socket when clients alternate between this daemon and `other`.
    pub fn alternating_socket(&self, other: &Daemon, c: usize) -> PathBuf {
        if c.is_multiple_of(2) {
            self.socket()
        } else {
            other.socket()
        }
        .to_owned()
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
