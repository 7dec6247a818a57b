//! The check of the client itself: our client and `redis-benchmark` (redis-tools) driving the
//! same Redis with the same request (`GET` of a 5 KB value, 50 connections, pipelined 1 and 16
//! deep, as many threads as our client has). If our client is as lean as `redis-benchmark`, the
//! two get about the same ops/s and Redis about the same CPU per request; the client CPU column
//! shows what each spends.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::procs::{self, Server};
use crate::report::{Report, Row, Stats};
use crate::wire::resp;
use crate::work::{measure, room_of_size, Work};
use crate::{row_duration, wanted};

const LABEL: &str = "check: our client vs redis-benchmark, same Redis";

pub async fn redis_benchmark(report: &mut Report, quick: bool, only: Option<&str>, dir: &Path) {
    let depths: Vec<usize> = [1, 16]
        .into_iter()
        .filter(|d| wanted(only, &format!("getRoom 5 KB / GET {LABEL} 50x{d};")))
        .collect();
    if depths.is_empty() {
        return;
    }
    if !have_redis_benchmark("check") {
        return;
    }
    let redis_dir = dir.join("check-redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let (redis, _) = procs::redis(&redis_dir, "none").await;
    let key = Work::Get5k.key(0);
    let value = serde_json::to_vec(&room_of_size(&key, 5 * 1024)).expect("encode a room");
    let mut conn = redis.connect().await;
    conn.send(&resp(&[b"SET", key.as_bytes(), &value]))
        .await
        .unwrap();
    conn.flush().await.unwrap();
    conn.recv().await.unwrap();
    drop(conn);
    let duration = row_duration(quick);
    for depth in depths {
        let ours = measure(&redis, Work::Get5k, 50, depth, duration).await;
        // As many requests as our client made, so both run about as long.
        let requests = ours.requests.max(1000);
        let get: [&[u8]; 2] = [b"GET", key.as_bytes()];
        let theirs = run(&redis, &get, 50, depth, requests, report.client_threads);
        eprintln!(
            "  redis-benchmark: GET 50x{depth}: {:.0}/s, {:.1} us of server CPU per request ({:.1} us of client CPU)",
            theirs.ops_per_sec, theirs.server_us, theirs.client_us
        );
        report.push(Row::throughput(
            "getRoom 5 KB / GET",
            LABEL,
            50,
            depth,
            ours,
            theirs,
        ));
    }
    redis.stop();
    let _ = std::fs::remove_dir_all(&redis_dir);
}

/// Whether `redis-benchmark` can be run; if not, says which rows (`what`) are left out.
pub fn have_redis_benchmark(what: &str) -> bool {
    let found = Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        eprintln!("  redis-benchmark not found (apt-get install redis-tools): no {what} rows");
    }
    found
}

/// Runs `redis-benchmark` for `requests` of the command `args` from `clients` connections,
/// `depth` deep, and reads its CSV line; its own CPU comes from wait4, the server's from
/// `/proc`. Each `__rand_int__` in the arguments is a new random number per request.
pub fn run(
    redis: &Server,
    args: &[&[u8]],
    clients: usize,
    depth: usize,
    requests: usize,
    threads: usize,
) -> Stats {
    let mut command = Command::new("redis-benchmark");
    command
        .arg("-s")
        .arg(&redis.socket)
        .args([
            "-c",
            &clients.to_string(),
            "-P",
            &depth.to_string(),
            "-n",
            &requests.to_string(),
            "-r",
            "1000000000",
        ])
        .arg("--csv");
    if threads > 1 {
        command.args(["--threads", &threads.to_string()]);
    }
    let server_before = redis.cpu_seconds();
    let client_before = procs::children_cpu_seconds();
    let child = command
        .args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start redis-benchmark");
    let output = child.wait_with_output().expect("redis-benchmark");
    let server = redis.cpu_seconds() - server_before;
    // Only redis-benchmark was waited for in between.
    let client = procs::children_cpu_seconds() - client_before;
    assert!(output.status.success(), "redis-benchmark failed");
    // "GET bench-5k","190476.20","2.633","0.368","1.623","12.343","16.183","16.703": the
    // command's text comes first, commas and all, so the seven numbers are read from the end.
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or_default()
        .rsplit(',')
        .take(7)
        .map(|f| f.trim_matches('"').parse().unwrap_or(0.0))
        .collect();
    fields.reverse();
    assert!(
        fields.first().is_some_and(|&ops| ops > 0.0),
        "no result from redis-benchmark: {text}"
    );
    let field = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    let mut stats = Stats {
        ops_per_sec: field(0),
        p50_us: (field(3) * 1000.0) as u32,
        p99_us: (field(5) * 1000.0) as u32,
        requests,
        ..Stats::default()
    };
    stats.set_cpu(server, client);
    stats
}
