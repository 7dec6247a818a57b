//! The two servers under test, each started privately in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::wire::{resp, Conn, Proto};

pub const DAEMON: &str = env!("CARGO_BIN_EXE_moviematch-storaged");

/// A server process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub socket: PathBuf,
    pub proto: Proto,
    /// Another process whose CPU counts as this server's (the Redis behind a daemon with
    /// `storageType: redis`).
    pub behind: Option<u32>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kb(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU time the process (and the one behind it) has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let behind = self
            .behind
            .map_or(0.0, |pid| cpu_seconds(&format!("/proc/{pid}/stat")));
        cpu_seconds(&format!("/proc/{}/stat", self.pid())) + behind
    }

    /// CPU time the process behind this one (if any) has used so far.
    pub fn behind_cpu_seconds(&self) -> f64 {
        self.behind
            .map_or(0.0, |pid| cpu_seconds(&format!("/proc/{pid}/stat")))
    }

    pub async fn connect(&self) -> Conn {
        Conn::connect(&self.socket, self.proto)
            .await
            .expect("connect to server")
    }

    /// SIGTERM and wait (the daemon folds its journal; Redis is told not to save).
    pub fn stop(self) {
        self.stop_timed();
    }

    /// SIGTERM and wait; returns how long the process took to exit and whether it exited 0.
    pub fn stop_timed(mut self) -> (Duration, bool) {
        let started = Instant::now();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let ok = self.child.wait().is_ok_and(|status| status.success());
        (started.elapsed(), ok)
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until `ready` answers, returning how long the start took.
async fn wait_ready(server: &Server, ping: &[u8], started: Instant) -> Duration {
    loop {
        if let Ok(mut conn) = Conn::connect(&server.socket, server.proto).await {
            // Redis answers -LOADING while it loads: keep asking until PING succeeds.
            if conn.send(ping).await.is_ok()
                && conn.flush().await.is_ok()
                && conn.recv().await.is_ok()
            {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Starts the daemon with file storage in `dir`; returns it and its start-up time.
pub async fn daemon(dir: &Path, durability: &str) -> (Server, Duration) {
    let storage = dir.join("rooms");
    let args: [&std::ffi::OsStr; 6] = [
        "--storage-type".as_ref(),
        "file".as_ref(),
        "--durability".as_ref(),
        durability.as_ref(),
        "--storage-path".as_ref(),
        storage.as_os_str(),
    ];
    daemon_with(dir, &args).await
}

/// Starts the daemon with `storageType: redis` on `redis` (keys under `bench:`), its own socket
/// in `dir`. Its CPU includes that Redis's.
pub async fn redis_daemon(dir: &Path, redis: &Server) -> (Server, Duration) {
    let url = format!("unix://{}?db=0", redis.socket.display());
    let args: [&std::ffi::OsStr; 6] = [
        "--storage-type".as_ref(),
        "redis".as_ref(),
        "--redis-url".as_ref(),
        url.as_ref(),
        "--redis-prefix".as_ref(),
        "bench:".as_ref(),
    ];
    let (mut server, took) = daemon_with(dir, &args).await;
    server.behind = Some(redis.pid());
    (server, took)
}

async fn daemon_with(dir: &Path, args: &[&std::ffi::OsStr]) -> (Server, Duration) {
    let socket = dir.join("storaged.sock");
    let started = Instant::now();
    let mut command = Command::new(DAEMON);
    // For experiments: the daemon's tokio worker threads (`BENCH_DAEMON_WORKERS=1`).
    if let Ok(workers) = std::env::var("BENCH_DAEMON_WORKERS") {
        command.env("TOKIO_WORKER_THREADS", workers);
    }
    let child = command
        .current_dir(dir)
        .args(args)
        .args(["--log-level", "warn"])
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start moviematch-storaged");
    let server = Server {
        child,
        socket,
        proto: Proto::Ndjson,
        behind: None,
    };
    let took = wait_ready(&server, b"{\"op\":\"ping\"}\n", started).await;
    (server, took)
}

/// Starts a private redis-server on a Unix socket in `dir` with the given persistence.
/// `appendfsync` is `always`, `everysec`, or `none` (no AOF; RDB file `dump.rdb` loaded if present).
pub async fn redis(dir: &Path, appendfsync: &str) -> (Server, Duration) {
    let socket = dir.join("redis.sock");
    let mut command = Command::new("redis-server");
    command
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ])
        .arg("--unixsocket")
        .arg(&socket)
        .args(["--unixsocketperm", "700", "--dir"])
        .arg(dir);
    if appendfsync == "none" {
        command.args(["--appendonly", "no", "--dbfilename", "dump.rdb"]);
    } else {
        command.args(["--appendonly", "yes", "--appendfsync", appendfsync]);
    }
    let started = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-server is needed for the comparison (apt-get install redis-server)");
    let server = Server {
        child,
        socket,
        proto: Proto::Resp,
        behind: None,
    };
    let took = wait_ready(&server, &resp(&[b"PING"]), started).await;
    (server, took)
}

/// User + system CPU time this process (the benchmark's client) has used so far, to the
/// microsecond (`/proc` counts in 10 ms ticks).
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    rusage_seconds(&usage)
}

/// User + system CPU time of the child processes waited for so far.
pub fn children_cpu_seconds() -> f64 {
    // SAFETY: as in `own_cpu_seconds`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    rusage_seconds(&usage)
}

/// User + system time in a `rusage`.
fn rusage_seconds(usage: &libc::rusage) -> f64 {
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// User + system CPU time used so far by the process whose `stat` file is `stat_path`.
pub fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}
