//! soak: hundreds of connections against one daemon for a long while, watching for leaks, lost
//! writes and unanswered requests.
//!
//! `cargo bench --bench soak -- [--quick] [--seconds N] [--connections N]`
//! (Without `--bench`, which `cargo bench` passes, or `--quick`/`--seconds`, it does nothing:
//! `cargo test --all-targets` also runs benches.)
//!
//! Starts its own `moviematch-storaged` (file storage, strict, in a temporary directory, a
//! 64 KiB `maxRequestBytes` so over-long lines are cheap to send), then runs 300 client
//! connections for 10 minutes (`--quick`: 30 s). Each connection pipelines batches of mixed
//! requests (`addRating`, `setProgress`, `getRoom`, `hasRoom`, `listRooms`, `saveRoom`,
//! `deleteRoom`, `deleteRooms`, `ping`, `stats`), sends malformed lines (bad JSON, invalid
//! UTF-8, an unknown op) and over-long lines, and now and then hangs up in the middle of a line
//! or before reading its answers, then reconnects. Every second (`--quick`; else every 5 s) it
//! samples the daemon's RSS (`/proc/<pid>/status`) and open fds (`/proc/<pid>/fd`).
//!
//! It fails (exit 1) on:
//! - a crash: the daemon exits while the soak runs, or does not stop with 0 on SIGTERM;
//! - an unanswered request: a complete line on a connection kept open gets no answer within
//!   10 s, or answers come out of order (each request carries an `id`);
//! - a wrong answer: over-long lines must get `too_large`, bad JSON `bad_json`;
//! - a lost write: at the end, and again after a clean restart, every room's ratings include
//!   every `addRating` that was acknowledged (`"ok": true`);
//! - a leak: RSS of the last third of the samples above the first third's by more than
//!   max(48 MiB, 50%); fds of the last third above the first third's by more than 64; or fds,
//!   once every client has gone, more than 4 above the count before any client connected.
//!
//! Ratings go to a few "ledger" rooms that are never saved over or deleted, over a bounded set of
//! media and users (so rooms stop growing once every pair was rated and memory can settle);
//! the other requests churn through their own rooms.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const BIN: &str = env!("CARGO_BIN_EXE_moviematch-storaged");
const MAX_REQUEST_BYTES: usize = 64 * 1024;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const LEDGER_ROOMS: usize = 8;
const LEDGER_MEDIA: u64 = 32;
const LEDGER_USERS: u64 = 16;
const CHURN_ROOMS: u64 = 64;

struct Options {
    seconds: u64,
    connections: usize,
    sample_every: Duration,
}

fn options() -> Options {
    let mut options = Options {
        seconds: 600,
        connections: 300,
        sample_every: Duration::from_secs(5),
    };
    let all: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs benches without `--bench`: a soak is not a unit test.
    if !all
        .iter()
        .any(|a| matches!(a.as_str(), "--bench" | "--quick" | "--seconds"))
    {
        println!("soak: skipped (run it with `cargo bench --bench soak -- [--quick]`)");
        std::process::exit(0);
    }
    let mut args = all.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                options.seconds = 30;
                options.sample_every = Duration::from_secs(1);
            }
            "--seconds" => options.seconds = number(args.next(), "--seconds N"),
            "--connections" => options.connections = number(args.next(), "--connections N"),
            // `cargo bench` passes --bench; ignore anything else it adds.
            _ => {}
        }
    }
    options
}

fn number<T: std::str::FromStr>(arg: Option<String>, usage: &str) -> T {
    match arg.and_then(|a| a.parse().ok()) {
        Some(n) => n,
        None => {
            eprintln!("soak: expected {usage}");
            std::process::exit(2);
        }
    }
}

// ---- The daemon ----

struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, run: usize) -> Daemon {
        let socket = dir.join("storaged.sock");
        let log = dir.join(format!("daemon-{run}.stderr"));
        let child = Command::new(BIN)
            .args(["--storage-type", "file", "--durability", "strict"])
            .arg("--storage-path")
            .arg(dir.join("rooms"))
            .arg("--socket")
            .arg(&socket)
            .args(["--max-request-bytes", &MAX_REQUEST_BYTES.to_string()])
            .args(["--max-connections", "4096", "--log-level", "warn"])
            .env_remove("STORAGE_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the daemon's log"))
            .spawn()
            .expect("start moviematch-storaged");
        let mut daemon = Daemon { child, socket, log };
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&daemon.socket).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                fail_now(&format!("the daemon exited at start ({status})"), &daemon);
            }
            if started.elapsed() > Duration::from_secs(20) {
                fail_now("the daemon did not become ready in 20 s", &daemon);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then the exit status (killed after 60 s).
    fn stop(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return status.code();
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reports, kills the daemon (`exit` runs no destructors) and exits 1; the temporary directory
/// stays for a post-mortem.
fn fail_now(why: &str, daemon: &Daemon) -> ! {
    eprintln!(
        "soak: FAILED: {why}\ndaemon log (last lines):\n{}",
        daemon.log_tail()
    );
    eprintln!(
        "soak: the daemon's files are in {}",
        daemon.socket.with_file_name("").display()
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(daemon.pid() as libc::pid_t, libc::SIGKILL);
    }
    std::process::exit(1);
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample { rss_kib, fds })
}

// ---- The clients ----

#[derive(Default)]
struct Shared {
    served: AtomicU64,
    connections: AtomicU64,
    hangups: AtomicU64,
    acked: Mutex<HashSet<(u64, u64, u64)>>,
    failures: Mutex<Vec<String>>,
}

impl Shared {
    fn fail(&self, why: String) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() < 20 {
            failures.push(why);
        }
    }

    fn failed(&self) -> bool {
        !self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// xorshift64*: enough randomness for a soak, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn ledger_name(n: u64) -> String {
    format!("ledger {n}")
}

fn churn_room(name: &str, rng: &mut Rng) -> Value {
    let mut ratings = serde_json::Map::new();
    for m in 0..rng.below(40) {
        ratings.insert(format!("plex://movie/{m}"), json!([["jane", "like", m]]));
    }
    json!({
        "roomName": name, "sort": "random", "createdAt": "2024-01-01T00:00:00.000Z",
        "creatorPlexUserId": rng.below(5), "creatorPlexUsername": "soak",
        "options": ["EndOnFirstMatch"], "ratings": ratings
    })
}

/// What a request line is, and what its answer must be.
enum Expect {
    Ok,
    /// `ok: true` acknowledges this rating.
    Rating(u64, u64, u64),
    /// Either `ok` or a refusal (`not_found`, `conflict`): churn races other connections.
    OkOrRefused,
    Error(&'static str),
}

fn request(rng: &mut Rng, id: u64) -> (Vec<u8>, Expect) {
    let churn = format!("churn {}", rng.below(CHURN_ROOMS));
    let (value, expect) = match rng.below(100) {
        0..=39 => {
            let (room, media, user) = (
                rng.below(LEDGER_ROOMS as u64),
                rng.below(LEDGER_MEDIA),
                rng.below(LEDGER_USERS),
            );
            let rating = if rng.below(2) == 0 { "like" } else { "dislike" };
            let req = json!({"op": "addRating", "roomName": ledger_name(room),
                "mediaId": format!("m{media}"), "userName": format!("u{user}"),
                "rating": rating, "timestamp": id});
            (req, Expect::Rating(room, media, user))
        }
        40..=49 => {
            let room = ledger_name(rng.below(LEDGER_ROOMS as u64));
            let user = format!("u{}", rng.below(LEDGER_USERS));
            let req = json!({"op": "setProgress", "roomName": room, "userName": user,
                "progress": rng.below(1000)});
            (req, Expect::Ok)
        }
        50..=59 => {
            let room = if rng.below(2) == 0 {
                ledger_name(rng.below(LEDGER_ROOMS as u64))
            } else {
                churn.clone()
            };
            (json!({"op": "getRoom", "roomName": room}), Expect::Ok)
        }
        60..=64 => (json!({"op": "hasRoom", "roomName": churn}), Expect::Ok),
        65..=69 => (
            json!({"op": "listRooms", "summary": true, "limit": 20}),
            Expect::Ok,
        ),
        70..=79 => {
            let room = churn_room(&churn, rng);
            (json!({"op": "saveRoom", "room": room}), Expect::Ok)
        }
        80..=84 => (
            json!({"op": "deleteRoom", "roomName": churn, "expectedRevision": rng.below(3)}),
            Expect::OkOrRefused,
        ),
        85..=86 => (
            json!({"op": "deleteRooms", "createdBefore": "2024-06-01T00:00:00.000Z"}),
            Expect::Ok,
        ),
        87..=88 => (
            json!({"op": "addRating", "roomName": churn, "mediaId": "x", "userName": "y",
                "rating": "like"}),
            Expect::OkOrRefused,
        ),
        89..=90 => (json!({"op": "stats"}), Expect::Ok),
        91..=93 => (json!({"op": "ping"}), Expect::Ok),
        94 => (json!({"op": "frobnicate"}), Expect::Error("bad_request")),
        95..=96 => {
            let mut line = format!("{{\"id\":{id},\"op\":\"getRoom\",\"roomName\":\"").into_bytes();
            line.extend_from_slice(b"\xff\xfe\"}\n");
            return (line, Expect::Error("bad_json"));
        }
        97 => {
            let line = format!("{{\"id\":{id},\"op\":\"ping\",\n").into_bytes();
            return (line, Expect::Error("bad_json"));
        }
        _ => {
            let len = MAX_REQUEST_BYTES + 1 + rng.below(3 * MAX_REQUEST_BYTES as u64) as usize;
            let mut line = vec![b'x'; len];
            line.push(b'\n');
            return (line, Expect::Error("too_large"));
        }
    };
    let mut value = value;
    value["id"] = json!(id);
    let mut line = serde_json::to_vec(&value).expect("encode");
    line.push(b'\n');
    (line, expect)
}

/// One client: connects, pipelines batches, checks answers; hangs up now and then; reconnects.
async fn client(socket: PathBuf, n: usize, deadline: Instant, shared: Arc<Shared>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut id = (n as u64) << 40;
    let mut acked = Vec::new();
    while Instant::now() < deadline && !shared.failed() {
        let stream = match UnixStream::connect(&socket).await {
            Ok(stream) => stream,
            Err(e) => {
                shared.fail(format!("client {n}: cannot connect: {e}"));
                break;
            }
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let batches = 1 + rng.below(40);
        'connection: for _ in 0..batches {
            if Instant::now() >= deadline {
                break;
            }
            let size = 1 + rng.below(16);
            let mut bytes = Vec::new();
            let mut pending = Vec::new();
            for _ in 0..size {
                id += 1;
                let (line, expect) = request(&mut rng, id);
                bytes.extend_from_slice(&line);
                pending.push((id, expect));
            }
            match rng.below(50) {
                0 => {
                    // Hang up in the middle of a line.
                    let cut = rng.below(bytes.len() as u64) as usize;
                    let _ = write.write_all(&bytes[..cut]).await;
                    shared.hangups.fetch_add(1, Ordering::Relaxed);
                    break 'connection;
                }
                1 => {
                    // Hang up before reading the answers.
                    let _ = write.write_all(&bytes).await;
                    shared.hangups.fetch_add(1, Ordering::Relaxed);
                    break 'connection;
                }
                _ => {}
            }
            // Write while reading, so a large pipelined batch cannot deadlock on full buffers.
            let writing = write.write_all(&bytes);
            let reading = answers(&mut read, &pending, n, &shared, &mut acked);
            let (written, read_ok) = tokio::join!(writing, reading);
            if let Err(e) = written {
                shared.fail(format!(
                    "client {n}: write failed on an open connection: {e}"
                ));
                break 'connection;
            }
            if !read_ok {
                break 'connection;
            }
            if rng.below(4) == 0 {
                tokio::time::sleep(Duration::from_millis(rng.below(5))).await;
            }
        }
    }
    let mut all = shared.acked.lock().unwrap_or_else(|e| e.into_inner());
    all.extend(acked);
}

/// Reads one answer per pending request, in order; false (after recording why) on a failure.
async fn answers(
    read: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    pending: &[(u64, Expect)],
    n: usize,
    shared: &Shared,
    acked: &mut Vec<(u64, u64, u64)>,
) -> bool {
    for (id, expect) in pending {
        let mut line = String::new();
        match tokio::time::timeout(ANSWER_TIMEOUT, read.read_line(&mut line)).await {
            Err(_) => {
                shared.fail(format!(
                    "client {n}: request {id} unanswered after {ANSWER_TIMEOUT:?}"
                ));
                return false;
            }
            Ok(Err(e)) => {
                shared.fail(format!("client {n}: reading the answer to {id}: {e}"));
                return false;
            }
            Ok(Ok(0)) => {
                shared.fail(format!(
                    "client {n}: connection closed before answering {id}"
                ));
                return false;
            }
            Ok(Ok(_)) => {}
        }
        shared.served.fetch_add(1, Ordering::Relaxed);
        let answer: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                shared.fail(format!("client {n}: answer is not JSON ({e}): {line}"));
                return false;
            }
        };
        // Lines that are not JSON cannot carry their id back; the rest must, in order.
        let id_ok = match expect {
            Expect::Error("bad_json" | "too_large") => true,
            _ => answer["id"] == json!(id),
        };
        let code = answer["error"]["code"].as_str().unwrap_or("");
        let ok = answer["ok"] == json!(true);
        let right = match expect {
            Expect::Ok => ok,
            Expect::Rating(room, media, user) => {
                if ok {
                    acked.push((*room, *media, *user));
                }
                ok
            }
            Expect::OkOrRefused => ok || code == "not_found" || code == "conflict",
            Expect::Error(want) => code == *want,
        };
        if !id_ok || !right {
            shared.fail(format!(
                "client {n}: request {id}: unexpected answer {line}"
            ));
            return false;
        }
    }
    true
}

/// Every acknowledged rating is in its ledger room; returns how many were checked.
fn verify(socket: &Path, acked: &HashSet<(u64, u64, u64)>) -> Result<usize, String> {
    use std::io::{BufRead, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut write = stream.try_clone().map_err(|e| e.to_string())?;
    let mut read = std::io::BufReader::new(stream);
    let mut have = HashSet::new();
    for room in 0..LEDGER_ROOMS as u64 {
        let req = json!({"op": "getRoom", "roomName": ledger_name(room)});
        writeln!(write, "{req}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        read.read_line(&mut line).map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        let ratings = answer["room"]["ratings"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (media, entries) in ratings {
            let media: u64 = media[1..].parse().map_err(|_| format!("media {media}"))?;
            for entry in entries.as_array().into_iter().flatten() {
                let user = entry[0].as_str().unwrap_or("");
                let user: u64 = user[1..].parse().map_err(|_| format!("user {user}"))?;
                have.insert((room, media, user));
            }
        }
    }
    let lost: Vec<_> = acked.difference(&have).take(10).collect();
    if !lost.is_empty() {
        return Err(format!(
            "{} acknowledged rating(s) lost, e.g. (room, media, user) {lost:?}",
            acked.difference(&have).count()
        ));
    }
    Ok(acked.len())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

#[cfg_attr(test, allow(dead_code))]
fn main() {
    let options = options();
    let tmp = tempfile::Builder::new()
        .prefix("mm-soak-")
        .tempdir()
        .expect("a temporary directory");
    let mut daemon = Daemon::start(tmp.path(), 1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");

    // The ledger rooms: created once, never saved over, created after every deleteRooms cut-off.
    {
        let socket = daemon.socket.clone();
        let created = runtime.block_on(async move {
            let stream = UnixStream::connect(&socket)
                .await
                .map_err(|e| e.to_string())?;
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            for room in 0..LEDGER_ROOMS as u64 {
                let req = json!({"op": "saveRoom", "room": {
                    "roomName": ledger_name(room), "sort": "rating",
                    "createdAt": "2030-01-01T00:00:00.000Z", "creatorPlexUserId": "1",
                    "creatorPlexUsername": "soak"}});
                let line = format!("{req}\n");
                write
                    .write_all(line.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut answer = String::new();
                read.read_line(&mut answer)
                    .await
                    .map_err(|e| e.to_string())?;
                if !answer.contains("\"ok\":true") {
                    return Err(answer);
                }
            }
            Ok::<(), String>(())
        });
        if let Err(e) = created {
            fail_now(&format!("cannot create the ledger rooms: {e}"), &daemon);
        }
    }

    let pid = daemon.pid();
    let Some(before) = sample(pid) else {
        fail_now("cannot read /proc for the daemon", &daemon);
    };
    println!(
        "soak: {} connections for {} s against pid {pid} (storage {})",
        options.connections,
        options.seconds,
        tmp.path().display()
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds);
    let shared = Arc::new(Shared::default());
    let clients: Vec<_> = (0..options.connections)
        .map(|n| {
            let (socket, shared) = (daemon.socket.clone(), shared.clone());
            runtime.spawn(client(socket, n, deadline, shared))
        })
        .collect();

    let mut samples = Vec::new();
    let mut crashed = None;
    while Instant::now() < deadline && !shared.failed() {
        std::thread::sleep(
            options
                .sample_every
                .min(deadline.saturating_duration_since(Instant::now())),
        );
        if let Some(status) = daemon.exited() {
            crashed = Some(status);
            break;
        }
        if let Some(s) = sample(pid) {
            samples.push(s);
            if samples.len() % 12 == 0 {
                println!(
                    "soak: {:>4} s  rss {:7.1} MiB  fds {:4}  served {}",
                    started.elapsed().as_secs(),
                    mib(s.rss_kib),
                    s.fds,
                    shared.served.load(Ordering::Relaxed)
                );
            }
        }
    }
    if let Some(status) = crashed {
        fail_now(
            &format!("the daemon died during the soak ({status})"),
            &daemon,
        );
    }
    runtime.block_on(async {
        for c in clients {
            let _ = tokio::time::timeout(ANSWER_TIMEOUT * 2, c).await;
        }
    });
    let elapsed = started.elapsed();

    let mut failures: Vec<String> = shared
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // Once every client is gone, the daemon's fds must come back to where they were.
    let settle = Instant::now();
    let mut after = sample(pid);
    while after.is_some_and(|s| s.fds > before.fds + 4)
        && settle.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
        after = sample(pid);
    }
    let after = after.unwrap_or(before);
    if after.fds > before.fds + 4 {
        failures.push(format!(
            "fd leak: {} open before the clients, {} after they all left",
            before.fds, after.fds
        ));
    }
    let third = samples.len() / 3;
    let peak_rss = samples
        .iter()
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(before.rss_kib);
    if third >= 2 {
        let first = &samples[..third];
        let last = &samples[samples.len() - third..];
        let rss = |s: &[Sample]| median(s.iter().map(|s| s.rss_kib).collect());
        let fds = |s: &[Sample]| median(s.iter().map(|s| s.fds).collect());
        let (rss_first, rss_last) = (rss(first), rss(last));
        let allowed = (rss_first / 2).max(48 * 1024);
        if rss_last > rss_first + allowed {
            failures.push(format!(
                "memory leak: RSS median {:.1} MiB in the first third, {:.1} MiB in the last",
                mib(rss_first),
                mib(rss_last)
            ));
        }
        if fds(last) > fds(first) + 64 {
            failures.push(format!(
                "fd growth: median {} open fds in the first third, {} in the last",
                fds(first),
                fds(last)
            ));
        }
    } else {
        failures.push(format!(
            "too few samples ({}) to judge leaks",
            samples.len()
        ));
    }

    let acked = shared
        .acked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match verify(&daemon.socket, &acked) {
        Ok(_) => {}
        Err(e) => failures.push(format!("before the restart: {e}")),
    }
    match daemon.stop() {
        Some(0) => {}
        other => failures.push(format!("SIGTERM: the daemon exited with {other:?}")),
    }
    let restarted = Daemon::start(tmp.path(), 2);
    match verify(&restarted.socket, &acked) {
        Ok(_) => {}
        Err(e) => failures.push(format!("after a clean restart: {e}")),
    }
    drop(restarted);

    let served = shared.served.load(Ordering::Relaxed);
    println!(
        "soak: {served} requests served in {:.0} s ({:.0}/s) over {} connections ({} hung up on \
         purpose); {} acknowledged ratings verified",
        elapsed.as_secs_f64(),
        served as f64 / elapsed.as_secs_f64().max(0.001),
        shared.connections.load(Ordering::Relaxed),
        shared.hangups.load(Ordering::Relaxed),
        acked.len()
    );
    println!(
        "soak: RSS {:.1} MiB at start, {:.1} MiB peak, {:.1} MiB at the end; fds {} at start, \
         {} at the end ({} samples)",
        mib(before.rss_kib),
        mib(peak_rss),
        mib(after.rss_kib),
        before.fds,
        after.fds,
        samples.len()
    );
    if failures.is_empty() {
        println!("soak: ok");
    } else {
        for f in &failures {
            eprintln!("soak: FAILED: {f}");
        }
        std::process::exit(1);
    }
}
