//! Rows beyond the main table: the daemon with `storageType: redis` against the same Redis used
//! directly, `addRating` as one media's ratings grow, and `listRooms` with `summary`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::procs::{self, Server};
use crate::report::{Report, Row, Stats};
use crate::wire::{ndjson, resp, Conn};
use crate::work::{measure, room_of_size, Work};
use crate::{check, row_duration, wanted};

/// The daemon with `storageType: redis` (its CPU counted with its Redis's) against that same
/// Redis (`appendfsync everysec`) used directly, at 1 and 50 clients.
pub async fn redis_backend(report: &mut Report, quick: bool, only: Option<&str>, dir: &Path) {
    let label = "storageType redis vs the same Redis";
    let works = [
        Work::Get5k,
        Work::Save { kb: 5 },
        Work::Rate { kb: 5 },
        Work::Progress { kb: 5 },
    ];
    let shapes = [(1, 1), (50, 1)];
    let rows: Vec<(Work, usize, usize)> = works
        .iter()
        .flat_map(|&w| shapes.iter().map(move |&(c, d)| (w, c, d)))
        .filter(|(w, c, d)| wanted(only, &format!("{} {label} {c}x{d};", w.name())))
        .collect();
    let mut ceilings: Vec<(Work, Vec<(usize, usize)>)> = works[1..]
        .iter()
        .map(|&w| {
            let shapes = shapes
                .iter()
                .copied()
                .filter(|(c, d)| wanted(only, &format!("{} {CEILING} {c}x{d};", w.name())))
                .collect::<Vec<_>>();
            (w, shapes)
        })
        .filter(|(_, shapes)| !shapes.is_empty())
        .collect();
    if !ceilings.is_empty() && !check::have_redis_benchmark("ceiling") {
        ceilings.clear();
    }
    if rows.is_empty() && ceilings.is_empty() {
        return;
    }
    let redis_dir = dir.join("backend-redis");
    let ours_dir = dir.join("backend-ours");
    std::fs::create_dir_all(&redis_dir).unwrap();
    std::fs::create_dir_all(&ours_dir).unwrap();
    let (redis, _) = procs::redis(&redis_dir, "everysec").await;
    let (ours, _) = procs::redis_daemon(&ours_dir, &redis).await;
    let duration = row_duration(quick);
    for (work, clients, depth) in rows {
        work.prepare(&ours, &redis, clients).await;
        let a = measure(&ours, work, clients, depth, duration).await;
        let b = measure(&redis, work, clients, depth, duration).await;
        report.push(Row::throughput(&work.name(), label, clients, depth, a, b));
    }
    for (work, shapes) in ceilings {
        script_ceiling(report, &ours, &redis, work, &shapes, quick).await;
    }
    ours.stop();
    redis.stop();
    let _ = std::fs::remove_dir_all(&redis_dir);
    let _ = std::fs::remove_dir_all(&ours_dir);
}

/// The label of the rows that bound the `storageType redis` rows from above.
const CEILING: &str = "ceiling: the daemon's script vs the command, both by redis-benchmark";

/// The request number the ceiling rows catch; twelve digits, as many as `__rand_int__` has.
const CAUGHT: u64 = 424_242_424_242;

/// The most of Redis's speed a daemon with `storageType: redis` could keep for `work`: Redis
/// running the script the daemon sends for one such request (caught with `MONITOR`) against the
/// command used directly, both sent by `redis-benchmark` to the same Redis. A daemon that cost
/// nothing would reach this ratio; with the script as it is, the daemon's row can only be lower.
/// For `addRating` each request rates a new media, as in the daemon's rows.
async fn script_ceiling(
    report: &mut Report,
    ours: &Server,
    redis: &Server,
    work: Work,
    shapes: &[(usize, usize)],
    quick: bool,
) {
    let mut script = caught_script(ours, redis, work).await;
    if let Work::Rate { .. } = work {
        let caught = format!("bench{CAUGHT}");
        for arg in &mut script {
            let text = String::from_utf8_lossy(arg).replace(&caught, "bench__rand_int__");
            *arg = text.into_bytes();
        }
    }
    let plain = resp_args(&work.request(false, 0, CAUGHT));
    let script: Vec<&[u8]> = script.iter().map(Vec::as_slice).collect();
    let plain: Vec<&[u8]> = plain.iter().map(Vec::as_slice).collect();
    for &(clients, depth) in shapes {
        let requests = match (quick, clients) {
            (true, _) => 2_000,
            (false, 1) => 60_000,
            (false, _) => 150_000,
        };
        let threads = report.client_threads;
        let a = check::run(redis, &script, clients, depth, requests, threads);
        let b = check::run(redis, &plain, clients, depth, requests, threads);
        eprintln!(
            "  ceiling: {} {clients}x{depth}: the script {:.0}/s ({:.1} us of Redis CPU), the command {:.0}/s ({:.1} us)",
            work.name(),
            a.ops_per_sec,
            a.server_us,
            b.ops_per_sec,
            b.server_us
        );
        report.push(Row::throughput(&work.name(), CEILING, clients, depth, a, b));
    }
}

/// The `EVALSHA` the daemon `ours` sends to `redis` for request [`CAUGHT`] of `work`.
async fn caught_script(ours: &Server, redis: &Server, work: Work) -> Vec<Vec<u8>> {
    // The room as the daemon's rows leave it: saved, and split by a first swipe.
    work.prepare(ours, redis, 1).await;
    let mut conn = ours.connect().await;
    conn.send(&work.request(true, 0, CAUGHT - 1))
        .await
        .expect("send");
    conn.flush().await.expect("send");
    conn.recv()
        .await
        .expect("a request before the caught one failed");
    let mut monitor = redis.connect().await;
    monitor.send(&resp(&[b"MONITOR"])).await.expect("MONITOR");
    monitor.flush().await.expect("MONITOR");
    monitor.recv().await.expect("MONITOR");
    conn.send(&work.request(true, 0, CAUGHT))
        .await
        .expect("send");
    conn.flush().await.expect("send");
    conn.recv().await.expect("the caught request failed");
    let caught = async {
        loop {
            let line = monitor.recv_line().await.expect("MONITOR ended");
            let args = monitor_args(&line);
            if args.first().is_some_and(|a| a == b"EVALSHA") {
                return args;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), caught)
        .await
        .unwrap_or_else(|_| panic!("no EVALSHA seen for {}", work.name()))
}

/// The arguments of a `MONITOR` line (`+1700000000.1 [0 unix:/x] "EVALSHA" "..."`), unescaped
/// as Redis escapes them (`\\`, `\"`, `\n`, `\r`, `\t`, `\a`, `\b`, `\xHH`).
fn monitor_args(line: &[u8]) -> Vec<Vec<u8>> {
    let Some(start) = line.iter().position(|&b| b == b']') else {
        return Vec::new();
    };
    let mut args = Vec::new();
    let mut bytes = line[start..].iter().copied();
    while let Some(b) = bytes.next() {
        if b != b'"' {
            continue;
        }
        let mut arg = Vec::new();
        while let Some(b) = bytes.next() {
            match b {
                b'"' => break,
                b'\\' => match bytes.next() {
                    Some(b'n') => arg.push(b'\n'),
                    Some(b'r') => arg.push(b'\r'),
                    Some(b't') => arg.push(b'\t'),
                    Some(b'a') => arg.push(7),
                    Some(b'b') => arg.push(8),
                    Some(b'x') => {
                        let hex = [bytes.next().unwrap_or(b'0'), bytes.next().unwrap_or(b'0')];
                        let hex = std::str::from_utf8(&hex).unwrap_or("00");
                        arg.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                    }
                    Some(other) => arg.push(other),
                    None => break,
                },
                _ => arg.push(b),
            }
        }
        args.push(arg);
    }
    args
}

/// The arguments of a RESP command as [`resp`] writes it.
fn resp_args(command: &[u8]) -> Vec<Vec<u8>> {
    let mut args = Vec::new();
    let mut rest = command;
    let line = |rest: &mut &[u8]| -> usize {
        let end = memchr::memmem::find(rest, b"\r\n").expect("a RESP line");
        let n = std::str::from_utf8(&rest[1..end]).unwrap().parse().unwrap();
        *rest = &rest[end + 2..];
        n
    };
    for _ in 0..line(&mut rest) {
        let len = line(&mut rest);
        args.push(rest[..len].to_vec());
        rest = &rest[len + 2..];
    }
    args
}

/// One request at a time; returns the wall time it took, in microseconds.
async fn one(conn: &mut Conn, request: &[u8]) -> f64 {
    let sent = Instant::now();
    conn.send(request).await.expect("send");
    conn.flush().await.expect("send");
    conn.recv().await.expect("a rating failed");
    sent.elapsed().as_secs_f64() * 1e6
}

/// Wall time per rating (us) at each of `marks` ratings on one media of one room, each mark the
/// mean of the last `window` ratings before it; `request(n)` is the n-th rating.
async fn per_rating_at(
    server: &Server,
    marks: &[usize],
    window: usize,
    request: impl Fn(usize) -> Vec<u8>,
) -> Vec<f64> {
    let mut conn = server.connect().await;
    let mut n = 0;
    let mut costs = Vec::new();
    for &mark in marks {
        while n < mark - window {
            one(&mut conn, &request(n)).await;
            n += 1;
        }
        let mut total = 0.0;
        let cpu = server.cpu_seconds();
        while n < mark {
            total += one(&mut conn, &request(n)).await;
            n += 1;
        }
        eprintln!(
            "  {:?} at {mark} ratings: {:.0} us per rating, {:.0} us of server CPU",
            server.proto,
            total / window as f64,
            (server.cpu_seconds() - cpu) * 1e6 / window as f64
        );
        costs.push(total / window as f64);
    }
    costs
}

/// One client adding ratings to one 100 KB room, every rating for the same media from a new
/// user (relaxed, against Redis `RPUSH` with `appendfsync everysec`): what a rating costs as
/// that media's ratings grow. Then the same through a daemon with `storageType: redis`
/// against the same Redis used directly.
pub async fn growing_ratings(report: &mut Report, quick: bool, dir: &Path) {
    let (marks, window): (&[usize], usize) = if quick {
        (&[200, 400], 50)
    } else {
        (&[2_000, 4_000, 8_000, 12_000], 200)
    };
    for backend in ["file", "redis"] {
        let ours_dir = dir.join(format!("grow-ours-{backend}"));
        let redis_dir = dir.join(format!("grow-redis-{backend}"));
        std::fs::create_dir_all(&ours_dir).unwrap();
        std::fs::create_dir_all(&redis_dir).unwrap();
        let (redis, _) = procs::redis(&redis_dir, "everysec").await;
        let (ours, _) = if backend == "file" {
            procs::daemon(&ours_dir, "relaxed").await
        } else {
            procs::redis_daemon(&ours_dir, &redis).await
        };
        let work = Work::Rate { kb: 100 };
        work.prepare(&ours, &redis, 1).await;
        let key = work.key(0);
        let at = |n: usize| 1729890000000u64 + n as u64;
        let ours_costs = per_rating_at(&ours, marks, window, |n| {
            ndjson(&json!({
                "op": "addRating", "roomName": key, "mediaId": "plex://movie/popular",
                "userName": format!("user{n}"), "rating": "like", "timestamp": at(n),
            }))
        })
        .await;
        // Its own list, so that the Redis daemon's hash is not in the way.
        let list = format!("{key}:list");
        let redis_costs = per_rating_at(&redis, marks, window, |n| {
            let tuple = format!("[\"user{n}\",\"like\",{}]", at(n));
            resp(&[b"RPUSH", list.as_bytes(), tuple.as_bytes()])
        })
        .await;
        ours.stop();
        redis.stop();
        let _ = std::fs::remove_dir_all(&ours_dir);
        let _ = std::fs::remove_dir_all(&redis_dir);
        let through = if backend == "file" {
            String::new()
        } else {
            ", storageType redis".to_owned()
        };
        for ((mark, ours), redis) in marks.iter().zip(ours_costs).zip(redis_costs) {
            report.push(Row::single(
                &format!(
                    "addRating, one media of a 100 KB room holding {mark} ratings{through} (us per rating)"
                ),
                ours,
                redis,
            ));
        }
    }
}

/// `listRooms` with `summary` over 10,000 rooms (a relaxed daemon: this measures serving).
pub async fn list_summary(report: &mut Report, dir: &Path) {
    let ours_dir = dir.join("list");
    std::fs::create_dir_all(&ours_dir).unwrap();
    let (ours, _) = procs::daemon(&ours_dir, "relaxed").await;
    let mut conn = ours.connect().await;
    let template = room_of_size("x", 5 * 1024);
    let names: Vec<String> = (0..10_000).map(|i| format!("list-{i:05}")).collect();
    for chunk in names.chunks(500) {
        for name in chunk {
            let mut room = template.clone();
            room["roomName"] = json!(name);
            conn.send(&ndjson(&json!({"op": "saveRoom", "room": room})))
                .await
                .unwrap();
        }
        conn.flush().await.unwrap();
        for _ in chunk {
            conn.recv().await.unwrap();
        }
    }
    let mut latencies = Vec::new();
    let request = ndjson(&json!({"op": "listRooms", "summary": true}));
    let start = Instant::now();
    for _ in 0..50 {
        let sent = Instant::now();
        conn.send(&request).await.unwrap();
        conn.flush().await.unwrap();
        let line = conn.recv_line().await.unwrap();
        assert!(
            line.len() > 10_000 * 100,
            "listRooms returned {} bytes",
            line.len()
        );
        latencies.push(sent.elapsed().as_micros() as u32);
    }
    let stats = Stats::from_latencies(latencies, start.elapsed());
    report.push(Row::latency("listRooms summary, 10,000 rooms", stats));
    ours.stop();
    let _ = std::fs::remove_dir_all(&ours_dir);
}
