//! The test bed of one sweep case: a daemon process on a copy of a seed directory, and a fault
//! (an `strace` attached to it that fails one system call) that can be started and ended at any
//! moment.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{dies_with_the_test, Conn, BIN};

/// How many `.tmp-<pid>-<n>` names, `.journal-<g>` generations and `/proc/self/fd/<n>` paths the
/// fault covers. strace's `-P` matches paths (and descriptors open on them) exactly, so every
/// name the daemon may use during a case is listed; a case uses far fewer than these.
const TMP_NAMES: u32 = 1500;
const JOURNALS: u32 = 200;
const PROC_FDS: u32 = 64;

/// One daemon process (and its restarts) on its own directory.
pub struct Bed {
    pub tmp: tempfile::TempDir,
    pub storage: PathBuf,
    pub socket: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// How the last run ended, once it has.
    exit: Option<ExitStatus>,
    runs: usize,
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Bed {
    /// A bed whose storage directory starts as a copy of `seed` (absent: empty).
    pub fn new(seed: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Bed {
        let tmp = keep_if_asked(tempfile::Builder::new().prefix("mm-sweep-"))
            .tempdir()
            .expect("create a temp dir");
        let storage = tmp.path().join("rooms");
        if let Some(seed) = seed {
            copy_dir(seed, &storage);
        }
        Bed {
            socket: tmp.path().join("s.sock"),
            storage,
            tmp,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            exit: None,
            runs: 0,
        }
    }

    /// Starts the daemon; with `stopped`, a shell that stops itself (SIGSTOP) and then `exec`s
    /// the daemon in the same process, so a fault can be attached before the daemon's first
    /// system call. (A `pre_exec` hook cannot stop: `spawn` waits for the `exec`.)
    pub fn spawn(&mut self, stopped: bool) {
        assert!(self.child.is_none(), "the daemon still runs");
        self.runs += 1;
        self.exit = None;
        let log = fs::File::create(self.log()).expect("create the daemon's log");
        let mut cmd = if stopped {
            let mut sh = Command::new("/bin/sh");
            sh.args(["-c", "kill -STOP $$; exec \"$0\" \"$@\"", BIN]);
            sh
        } else {
            Command::new(BIN)
        };
        cmd.args(["--storage-type", "file", "--storage-path"])
            .arg(&self.storage)
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // The daemon does not outlive the test.
        dies_with_the_test(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn moviematch-storaged"));
        if stopped {
            let pid = self.pid();
            wait_for(
                "the daemon to stop before exec",
                Duration::from_secs(10),
                || proc_state(pid) == "T",
            );
        }
    }

    /// Starts the daemon and waits until it answers.
    pub fn start(&mut self) {
        self.spawn(false);
        assert!(
            self.wait_ready(Duration::from_secs(20)),
            "the daemon did not start; stderr:\n{}",
            self.stderr()
        );
    }

    /// Waits until the daemon answers a ping (true), or the daemon exits (false).
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            // A ping, not a connection: the socket may be bound before the rooms are loaded.
            if answers_ping(&self.socket) {
                return true;
            }
            if self.exited().is_some() {
                return false;
            }
            assert!(
                start.elapsed() < timeout,
                "the daemon neither answered nor exited within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("the daemon runs").id() as i32
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connect: {e}; stderr:\n{}", self.stderr()))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which has not been reaped (`child` is Some).
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill({sig})");
    }

    /// The exit status if the daemon has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut() {
            self.exit = child.try_wait().expect("wait for the daemon");
            if self.exit.is_some() {
                self.child = None;
            }
        }
        self.exit
    }

    /// Waits for the daemon to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "the daemon did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops every thread of the daemon (SIGSTOP) and waits until they all are: the directory
    /// then holds what a `kill -9` at this moment would leave.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let pid = self.pid();
        wait_for(
            "the daemon's threads to stop",
            Duration::from_secs(10),
            || {
                fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
                    tasks.flatten().all(|t| {
                        matches!(
                            proc_state_of(&t.path().join("stat")).as_str(),
                            "T" | "t" | "Z" | "X"
                        )
                    })
                })
            },
        );
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn running(&mut self) -> bool {
        self.exited().is_none() && self.child.is_some()
    }

    fn log(&self) -> PathBuf {
        self.tmp.path().join(format!("daemon-{}.stderr", self.runs))
    }

    /// The current run's log (its last 30 lines: enough to see why, not a flood).
    pub fn stderr(&self) -> String {
        let log = fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Every run's log, for the panic check.
    pub fn all_stderr(&self) -> String {
        (1..=self.runs)
            .map(|n| {
                fs::read_to_string(self.tmp.path().join(format!("daemon-{n}.stderr")))
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// An `strace` attached to the daemon, failing `syscalls` with `errno` at the calls `when`
/// selects (strace counts per system call and per thread), on the storage directory's files
/// only. Dropping it (or [`Fault::end`]) detaches strace: the fault is over.
pub struct Fault {
    strace: Child,
    out: PathBuf,
}

impl Drop for Fault {
    fn drop(&mut self) {
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

impl Fault {
    pub fn attach(bed: &Bed, syscalls: &str, errno: &str, when: &str) -> Fault {
        Fault::inject(bed, syscalls, &format!("error={errno}"), when)
    }

    /// A crash at an exact call: the daemon is killed (SIGKILL) when it makes it.
    pub fn crash_at(bed: &Bed, syscalls: &str, when: &str) -> Fault {
        Fault::inject(bed, syscalls, "signal=KILL", when)
    }

    /// `attach` on the given files only.
    pub fn attach_to(
        bed: &Bed,
        paths: &[PathBuf],
        syscalls: &str,
        errno: &str,
        when: &str,
    ) -> Fault {
        Fault::inject_on(
            bed,
            paths.to_vec(),
            syscalls,
            &format!("error={errno}"),
            when,
        )
    }

    fn inject(bed: &Bed, syscalls: &str, action: &str, when: &str) -> Fault {
        Fault::inject_on(
            bed,
            watched_paths(&bed.storage, bed.pid()),
            syscalls,
            action,
            when,
        )
    }

    fn inject_on(
        bed: &Bed,
        paths: Vec<PathBuf>,
        syscalls: &str,
        action: &str,
        when: &str,
    ) -> Fault {
        let pid = bed.pid();
        let out = bed.tmp.path().join(format!("strace-{}.txt", bed.runs));
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .arg("-e")
            .arg(format!("trace={syscalls}"))
            .arg("-e")
            .arg(format!("inject={syscalls}:{action}:when={when}"));
        for path in paths {
            cmd.arg("-P").arg(path);
        }
        let strace = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace is needed for the fault sweep (apt-get install strace)");
        let fault = Fault { strace, out };
        wait_for("strace to attach", Duration::from_secs(10), || traced(pid));
        fault
    }

    /// Detaches strace (the fault ends) and returns how many calls it failed.
    pub fn end(mut self) -> usize {
        // SAFETY: kill(2) on our own child; SIGTERM makes strace detach from every thread.
        unsafe { libc::kill(self.strace.id() as i32, libc::SIGTERM) };
        let _ = self.strace.wait();
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .matches("(INJECTED)")
            .count()
    }
}

/// Every path the daemon's file backend may touch in `storage`.
fn watched_paths(storage: &Path, pid: i32) -> Vec<PathBuf> {
    let mut paths = vec![storage.to_path_buf()];
    for fixed in [".index", ".index.next", ".cache", ".lock", ".quarantine"] {
        paths.push(storage.join(fixed));
    }
    paths.push(storage.join(format!(".tmp-clock-{pid}")));
    paths.push(storage.join(format!(".tmp-cache-{pid}")));
    paths.extend((0..TMP_NAMES).map(|n| storage.join(format!(".tmp-{pid}-{n}"))));
    paths.extend((1..=JOURNALS).map(|g| storage.join(format!(".journal-{g}"))));
    paths.extend(
        super::workload::ROOMS
            .iter()
            .map(|r| storage.join(format!("{r}.json"))),
    );
    // The journal's filler opens its file again through /proc.
    paths.extend((0..PROC_FDS).map(|n| PathBuf::from(format!("/proc/self/fd/{n}"))));
    paths
}

/// Whether every thread of `pid` is traced.
fn traced(pid: i32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return true; // gone: nothing left to wait for
    };
    tasks.flatten().all(|task| {
        let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .is_some_and(|t| t.trim() != "0")
    })
}

fn proc_state(pid: i32) -> String {
    proc_state_of(Path::new(&format!("/proc/{pid}/stat")))
}

/// The state letter of a `/proc/.../stat` file.
fn proc_state_of(stat: &Path) -> String {
    let stat = fs::read_to_string(stat).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("?")
        .to_string()
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create the storage dir");
    for entry in fs::read_dir(from).expect("read the seed dir") {
        let entry = entry.expect("read the seed dir");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("stat a seed file").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy a seed file");
        }
    }
    let _ = fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o700));
}

/// Entry names of `dir` that start with `.tmp-`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

fn answers_ping(socket: &Path) -> bool {
    let Ok(mut c) = Conn::connect(socket) else {
        return false;
    };
    c.set_read_timeout(Duration::from_secs(5));
    c.try_send(&serde_json::json!({"op": "ping"})).is_ok()
        && c.try_read_line().is_some_and(|l| l.contains("\"ok\":true"))
}

/// `FAULT_SWEEP_KEEP=1` keeps every case's directories (to look at a failure).
pub fn keep_if_asked<'a, 'b>(
    builder: &'b mut tempfile::Builder<'a, 'a>,
) -> &'b mut tempfile::Builder<'a, 'a> {
    let keep = std::env::var_os("FAULT_SWEEP_KEEP").is_some();
    builder.disable_cleanup(keep)
}
