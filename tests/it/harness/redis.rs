//! A private `redis-server` for one test: on a Unix socket in the test's own directory, so tests
//! run in parallel and never touch a server they did not start. Dropping it kills the server.
//!
//! `redis-server` must be installed (`.ci/run` installs it); a test that needs it fails, never
//! skips, when it is missing.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    dir: PathBuf,
    child: Option<Child>,
    /// Extra arguments (TLS).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server keeping its files (an append-only file, so a restart keeps the data) in
    /// `dir`, listening on `dir/redis.sock` only.
    pub fn start(dir: &Path) -> RedisServer {
        std::fs::create_dir_all(dir).expect("create the Redis directory");
        RedisServer::start_with(dir, Vec::new())
    }

    /// Starts a server with extra arguments (it always listens on `dir/redis.sock` too).
    pub fn start_with(dir: &Path, extra: Vec<String>) -> RedisServer {
        std::fs::create_dir_all(dir).expect("create the Redis directory");
        let mut server = RedisServer {
            dir: dir.to_path_buf(),
            child: None,
            extra,
        };
        server.run();
        server
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The `redisUrl` of this server.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn run(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        super::process::dies_with_the_test(&mut cmd);
        let child = cmd
            .spawn()
            .expect("start redis-server (install it: apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {} within 10 s; see {}/redis.log",
                self.socket().display(),
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        // A server with a password answers NOAUTH: it is up all the same.
        self.command("PING")
            .is_some_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
    }

    /// Sends one inline command and returns the first reply chunk (for small checks).
    pub fn command(&self, line: &str) -> Option<String> {
        let mut s = UnixStream::connect(self.socket()).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Sends one command with binary-safe arguments (RESP) and returns the first reply chunk.
    pub fn command_args(&self, args: &[&[u8]]) -> Option<String> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        let mut s = UnixStream::connect(self.socket()).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(&request).ok()?;
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Sends `signal` to the server (SIGSTOP: it stops answering without closing anything).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("the server runs").id() as i32;
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe { libc::kill(pid, signal) };
    }

    /// Stops the server (an outage): SIGTERM, on which it syncs its append-only file and exits;
    /// killed if it has not exited within 5 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Starts the server again on the same socket and files.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
