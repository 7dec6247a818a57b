//! moviematch-bench: the daemon side by side with Redis, same machine, same run, same client.
//!
//! `cargo bench --bench moviematch-bench -- [--quick] [--csv FILE] [--svg FILE]`
//!
//! Starts its own daemons (file storage in a temporary directory, strict and relaxed) and its own
//! redis-servers on Unix sockets (`appendfsync always` and `everysec`), runs every workload
//! against both through one client (`wire.rs`), and prints one table: ops/s, p50 and p99 latency,
//! and the ratio ours / Redis (higher is better for us). Then memory and start-up with many 5 KB
//! rooms, and `listRooms` with `summary` over 10,000 rooms. Numbers drift on shared machines;
//! the ratios, taken in one run, are what to compare.

mod procs;
mod report;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::procs::Server;
use crate::report::{Report, Row, Stats};
use crate::wire::{ndjson, resp};

struct Options {
    quick: bool,
    csv: std::path::PathBuf,
    svg: Option<std::path::PathBuf>,
    /// Only the workloads whose name or mode contains this text (`--only saveRoom`).
    only: Option<String>,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        quick: false,
        csv: std::path::PathBuf::from("target/bench/moviematch-bench.csv"),
        svg: None,
        only: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--csv" => options.csv = args.next().expect("--csv FILE").into(),
            "--svg" => options.svg = Some(args.next().expect("--svg FILE").into()),
            "--only" => options.only = Some(args.next().expect("--only TEXT")),
            // `cargo bench` passes --bench; ignore anything else it adds.
            _ => {}
        }
    }
    options
}

/// A room of about `bytes` bytes of compact JSON, shaped like a real one (ratings dominate).
fn room_of_size(name: &str, bytes: usize) -> Value {
    let mut ratings = serde_json::Map::new();
    let mut room = json!({
        "roomName": name, "sort": "random", "createdAt": "2025-10-25T20:00:00.000Z",
        "creatorPlexUserId": "12345", "creatorPlexUsername": "john_doe",
        "options": ["EndOnFirstMatch"],
        "filters": [{"key": "genre", "operator": "=", "value": ["Action", "Comedy"]}],
        "userProgress": {"john_doe": 5, "jane": 3},
    });
    let mut n = 0;
    while serde_json::to_vec(&room).map_or(0, |v| v.len()) < bytes {
        for _ in 0..16 {
            ratings.insert(
                format!("plex://movie/5d776825880197001ec9{n:04x}"),
                json!([
                    ["john_doe", "like", 1729890000000u64 + n],
                    ["jane", "dislike", 1729890005000u64 + n]
                ]),
            );
            n += 1;
        }
        room["ratings"] = Value::Object(ratings.clone());
    }
    room
}

/// What one request of a workload looks like for each peer.
#[derive(Clone, Copy)]
enum Work {
    Get5k,
    Has,
    Save { kb: usize },
    Rate { kb: usize },
}

impl Work {
    fn name(self) -> String {
        match self {
            Work::Get5k => "getRoom 5 KB / GET".into(),
            Work::Has => "hasRoom / EXISTS".into(),
            Work::Save { kb } => format!("saveRoom {kb} KB / SET"),
            Work::Rate { kb } => format!("addRating {kb} KB room / RPUSH"),
        }
    }

    fn key(self, client: usize) -> String {
        match self {
            Work::Get5k | Work::Has => "bench-5k".into(),
            Work::Save { kb } => format!("save-{kb}k-{client}"),
            Work::Rate { kb } => format!("rate-{kb}k-{client}"),
        }
    }

    /// Puts what the workload reads or extends in place, on both peers.
    async fn prepare(self, ours: &Server, redis: &Server, clients: usize) {
        let keys: Vec<String> = match self {
            Work::Get5k | Work::Has => vec![self.key(0)],
            Work::Rate { .. } => (0..clients).map(|c| self.key(c)).collect(),
            Work::Save { .. } => return,
        };
        let kb = match self {
            Work::Rate { kb } => kb,
            _ => 5,
        };
        let (mut a, mut b) = (ours.connect().await, redis.connect().await);
        for key in keys {
            let room = room_of_size(&key, kb * 1024);
            a.send(&ndjson(&json!({"op": "saveRoom", "room": room})))
                .await
                .unwrap();
            a.flush().await.unwrap();
            a.recv().await.unwrap();
            let bytes = serde_json::to_vec(&room).unwrap();
            let command = match self {
                // The list holds the room's ratings as tuples, as RPUSH will append them.
                Work::Rate { .. } => resp(&[b"DEL", key.as_bytes()]),
                _ => resp(&[b"SET", key.as_bytes(), &bytes]),
            };
            b.send(&command).await.unwrap();
            b.flush().await.unwrap();
            b.recv().await.unwrap();
        }
    }

    fn request(self, ours: bool, client: usize, seq: u64, payload: &Arc<Vec<u8>>) -> Vec<u8> {
        let key = self.key(client);
        match (self, ours) {
            (Work::Get5k, true) => ndjson(&json!({"op": "getRoom", "roomName": key})),
            (Work::Get5k, false) => resp(&[b"GET", key.as_bytes()]),
            (Work::Has, true) => ndjson(&json!({"op": "hasRoom", "roomName": key})),
            (Work::Has, false) => resp(&[b"EXISTS", key.as_bytes()]),
            (Work::Save { .. }, true) => {
                let mut line = format!("{{\"op\":\"saveRoom\",\"room\":{{\"roomName\":\"{key}\",")
                    .into_bytes();
                line.extend_from_slice(&payload[1..]);
                line.push(b'}');
                line.push(b'\n');
                line
            }
            (Work::Save { .. }, false) => resp(&[b"SET", key.as_bytes(), payload]),
            (Work::Rate { .. }, true) => ndjson(&json!({
                "op": "addRating", "roomName": key, "mediaId": format!("plex://movie/bench{seq}"),
                "userName": "u", "rating": "like", "timestamp": 1729890000000u64 + seq,
            })),
            (Work::Rate { .. }, false) => {
                let tuple = format!("[\"u\",\"like\",{}]", 1729890000000u64 + seq);
                resp(&[b"RPUSH", key.as_bytes(), tuple.as_bytes()])
            }
        }
    }

    /// The bytes saved by `Save` (a room without its name, which each client puts first).
    fn payload(self) -> Arc<Vec<u8>> {
        match self {
            Work::Save { kb } => {
                let mut room = room_of_size("x", kb * 1024);
                room.as_object_mut().unwrap().shift_remove("roomName");
                Arc::new(serde_json::to_vec(&room).unwrap())
            }
            _ => Arc::new(Vec::new()),
        }
    }
}

/// `clients` connections, each sending `depth` requests then reading `depth` replies, for
/// `duration`. Latency is per request, from its batch's send to its reply.
async fn measure(
    server: &Server,
    work: Work,
    clients: usize,
    depth: usize,
    duration: Duration,
) -> Stats {
    let ours = server.proto == wire::Proto::Ndjson;
    let payload = work.payload();
    let cpu_before = server.cpu_seconds();
    let client_cpu_before = procs::cpu_seconds("/proc/self/stat");
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let mut conn = server.connect().await;
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut seq = (client as u64) << 32;
            while Instant::now() < deadline {
                let sent = Instant::now();
                for _ in 0..depth {
                    seq += 1;
                    conn.send(&work.request(ours, client, seq, &payload))
                        .await
                        .expect("send");
                }
                conn.flush().await.expect("flush");
                for _ in 0..depth {
                    conn.recv().await.expect("a benchmark request failed");
                    latencies.push(sent.elapsed().as_micros() as u32);
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    // The server's own CPU time per request: steadier than ops/s on a shared machine.
    // The client's too: both share the machine's cores, so each one's cost bounds the other.
    let cpu = server.cpu_seconds() - cpu_before;
    let client_cpu = procs::cpu_seconds("/proc/self/stat") - client_cpu_before;
    let per_request = |seconds: f64| seconds * 1e6 / latencies.len().max(1) as f64;
    eprintln!(
        "  {}: {} {clients}x{depth}: {:.1} us of server CPU per request ({:.1} us of client CPU)",
        if ours { "ours" } else { "redis" },
        work.name(),
        per_request(cpu),
        per_request(client_cpu),
    );
    Stats::from_latencies(latencies, start.elapsed())
}

async fn throughput(report: &mut Report, quick: bool, only: Option<&str>, dir: &std::path::Path) {
    let duration = Duration::from_millis(if quick { 300 } else { 3000 });
    let shapes: &[(usize, usize)] = &[(1, 1), (50, 1), (50, 16)];
    for (mode, appendfsync) in [("strict", "always"), ("relaxed", "everysec")] {
        let ours_dir = dir.join(format!("ours-{mode}"));
        let redis_dir = dir.join(format!("redis-{appendfsync}"));
        std::fs::create_dir_all(&ours_dir).unwrap();
        std::fs::create_dir_all(&redis_dir).unwrap();
        let (ours, _) = procs::daemon(&ours_dir, mode).await;
        let (redis, _) = procs::redis(&redis_dir, appendfsync).await;
        let mut works = vec![
            Work::Save { kb: 5 },
            Work::Save { kb: 100 },
            Work::Rate { kb: 5 },
            Work::Rate { kb: 100 },
        ];
        if mode == "strict" {
            works.splice(0..0, [Work::Get5k, Work::Has]);
        }
        for work in works {
            let label = match work {
                Work::Get5k | Work::Has => String::new(),
                _ => format!("{mode} vs appendfsync {appendfsync}"),
            };
            for &(clients, depth) in shapes {
                let what = format!("{} {label} {clients}x{depth};", work.name());
                if only.is_some_and(|only| !what.contains(only)) {
                    continue;
                }
                work.prepare(&ours, &redis, clients).await;
                let a = measure(&ours, work, clients, depth, duration).await;
                let b = measure(&redis, work, clients, depth, duration).await;
                report.push(Row::throughput(&work.name(), &label, clients, depth, a, b));
            }
        }
        ours.stop();
        redis.stop();
    }
}

/// Memory and start-up with `rooms` rooms of 5 KB, against Redis holding the same JSON.
async fn memory_and_startup(report: &mut Report, rooms: usize, dir: &std::path::Path) {
    let ours_dir = dir.join("many-ours");
    let storage = ours_dir.join("rooms");
    std::fs::create_dir_all(&storage).unwrap();
    let template = room_of_size("x", 5 * 1024);
    let mut compact = Vec::with_capacity(rooms);
    for i in 0..rooms {
        let name = format!("room-{i:06}");
        let mut room = template.clone();
        room["roomName"] = json!(name);
        std::fs::write(
            storage.join(format!("{name}.json")),
            serde_json::to_vec_pretty(&room).unwrap(),
        )
        .unwrap();
        compact.push((name, serde_json::to_vec(&room).unwrap()));
    }
    let (ours, first) = procs::daemon(&ours_dir, "strict").await;
    let ours_rss = ours.rss_kb();
    ours.stop();
    let (ours, clean) = procs::daemon(&ours_dir, "strict").await;
    // Leave a journal behind: a rating in each of 10% of the rooms, then a crash.
    let mut conn = ours.connect().await;
    let rated: Vec<&String> = compact.iter().step_by(10).map(|(name, _)| name).collect();
    // In chunks: a client that writes without reading would deadlock against the daemon's
    // bounded pipeline.
    for chunk in rated.chunks(500) {
        for name in chunk {
            let request = json!({"op": "addRating", "roomName": name, "mediaId": "m", "userName": "u", "rating": "like"});
            conn.send(&ndjson(&request)).await.unwrap();
        }
        conn.flush().await.unwrap();
        for _ in chunk {
            conn.recv().await.unwrap();
        }
    }
    ours.kill9();
    let (ours, replay) = procs::daemon(&ours_dir, "strict").await;
    ours.stop();

    let redis_dir = dir.join("many-redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let (redis, _) = procs::redis(&redis_dir, "none").await;
    let mut conn = redis.connect().await;
    for chunk in compact.chunks(1000) {
        for (name, bytes) in chunk {
            conn.send(&resp(&[b"SET", name.as_bytes(), bytes]))
                .await
                .unwrap();
        }
        conn.flush().await.unwrap();
        for _ in chunk {
            conn.recv().await.unwrap();
        }
    }
    let redis_rss = redis.rss_kb();
    conn.send(&resp(&[b"SAVE"])).await.unwrap();
    conn.flush().await.unwrap();
    conn.recv().await.unwrap();
    drop(conn);
    redis.stop();
    let (redis, redis_load) = procs::redis(&redis_dir, "none").await;
    redis.stop();

    report.facts.push(format!("{rooms} rooms of 5 KB"));
    report.push(Row::single(
        "RSS (MiB), lower is better",
        ours_rss as f64 / 1024.0,
        redis_rss as f64 / 1024.0,
    ));
    report.push(Row::single(
        "start-up, first (ms)",
        first.as_secs_f64() * 1000.0,
        redis_load.as_secs_f64() * 1000.0,
    ));
    report.push(Row::single(
        "start-up, clean (ms)",
        clean.as_secs_f64() * 1000.0,
        redis_load.as_secs_f64() * 1000.0,
    ));
    report.push(Row::single(
        "start-up, journal replay (ms)",
        replay.as_secs_f64() * 1000.0,
        redis_load.as_secs_f64() * 1000.0,
    ));
}

/// `listRooms` with `summary` over 10,000 rooms (a memory daemon: this measures serving).
async fn list_summary(report: &mut Report, dir: &std::path::Path) {
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
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("mm-bench-")
        .tempdir()
        .unwrap();
    let mut report = Report::default();
    runtime.block_on(async {
        let only = options.only.as_deref();
        throughput(&mut report, options.quick, only, dir.path()).await;
        if only.is_none_or(|only| "start-up".contains(only)) {
            memory_and_startup(
                &mut report,
                if options.quick { 10_000 } else { 100_000 },
                dir.path(),
            )
            .await;
        }
        if only.is_none_or(|only| "listRooms".contains(only)) {
            list_summary(&mut report, dir.path()).await;
        }
    });
    print!("{}", report.markdown());
    report.write_csv(&options.csv).expect("write the CSV");
    println!("\nCSV: {}", options.csv.display());
    if let Some(svg) = &options.svg {
        report.write_svg(svg).expect("write the SVG");
        println!("SVG: {}", svg.display());
    }
}
