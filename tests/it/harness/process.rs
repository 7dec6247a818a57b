//! Child processes of a test: none outlives the test, none gets the developer's environment, and
//! every wait has a time limit.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_moviematch-storaged");
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Env vars of the developer's shell that must never reach the daemon.
pub fn is_leaky_env(key: &str) -> bool {
    ["STORAGE_", "REDIS_", "LISTEN_", "WATCHDOG_"]
        .iter()
        .any(|p| key.starts_with(p))
        || ["NOTIFY_SOCKET", "JOURNAL_STREAM", "RUST_LOG", "LOG_LEVEL"].contains(&key)
}

/// Prepares `cmd` to run as a child of the test: without the developer's `STORAGE_*`, `REDIS_*`,
/// systemd and logging variables, without colours, and killed when the thread that spawns it
/// (the test's own thread) ends, also when nextest kills the test process.
pub fn test_child(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(is_leaky_env) {
            cmd.env_remove(&k);
        }
    }
    cmd.env("NO_COLOR", "1");
    dies_with_the_test(cmd);
}

/// Makes `cmd`'s child get SIGKILL when the thread that spawns it (the test's own thread) ends,
/// also when nextest kills the test process. Set in the child after any uid change `cmd`
/// makes, so it stays set.
pub fn dies_with_the_test(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// One test of this binary, alone, as a child of the test (`test_child`): a helper that must run
/// as another user or process. libtest knows a test by its path inside the test crate, so
/// `module` is the caller's `module_path!()` (`it::connection`) less the crate's name; with a
/// bare name `--exact` would match nothing and the child would pass without running anything.
pub fn one_test_of_this_binary(module: &str, test: &str) -> Command {
    let name = match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{test}"),
        None => test.to_string(),
    };
    let exe = std::env::current_exe().expect("the path of the running test binary");
    let mut cmd = Command::new(exe);
    cmd.args([name.as_str(), "--exact", "--nocapture"]);
    test_child(&mut cmd);
    cmd
}

/// [`one_test_of_this_binary`] run as the user `nobody`, its stdout piped (what the helper
/// saw) and its stderr dropped.
pub fn one_test_as_nobody(module: &str, test: &str) -> Command {
    let (uid, gid) = nobody();
    let mut cmd = one_test_of_this_binary(module, test);
    cmd.uid(uid)
        .gid(gid)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// A child process that is killed (and reaped) when dropped, and also when the test's thread
/// dies first (PR_SET_PDEATHSIG), so no test leaves a process behind.
pub struct Proc {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Proc {
        test_child(&mut cmd);
        let stderr = dir.join(format!("{name}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(dir.join(format!("{name}.stdout"))).unwrap())
            .stderr(fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            child: Some(child),
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("process already reaped").id() as i32
    }

    pub fn stderr(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.stderr).unwrap_or_default())
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child, not reaped yet.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill({sig})");
    }

    /// Waits for the exit, killing the process and failing after `EXIT_TIMEOUT`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        let child = self.child.as_mut().expect("process already reaped");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if start.elapsed() > EXIT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "process did not exit within {EXIT_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the clean exit (code 0) the daemon promises.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM: {status}; stderr:\n{}",
            self.stderr()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The state letter of /proc/<pid>/stat ('Z': exited, not yet reaped).
pub fn process_state(pid: i32) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

pub fn proc_status_kb(pid: i32, field: &str) -> u64 {
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

/// Fails the test unless it runs as root; `why` says what needs it.
pub fn assert_root(why: &str) {
    // SAFETY: getuid cannot fail.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test runs as root ({why})"
    );
}

/// The uid and gid of the user `nobody`, for a child that must not be root.
pub fn nobody() -> (u32, u32) {
    // SAFETY: getpwnam returns NULL or a pointer to a static entry, read at once.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(!pw.is_null(), "no user called nobody on this machine");
    // SAFETY: non-null, as checked.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}
