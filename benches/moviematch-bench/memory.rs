//! Many rooms: memory and start-up (rooms loaded from files, and rooms saved through the socket
//! then folded), and a clean stop right after a burst of saves. Each against a Redis holding the
//! same room JSON under the same names.
//!
//! Rooms are generated as they are sent, never held all at once: 100,000 rooms of 5 KB would
//! be half a GiB in the benchmark's own memory, on a machine whose memory is being measured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::procs::{self, Server};
use crate::report::{Report, Row};
use crate::wire::{ndjson, resp, Proto};
use crate::work::{named_room, room_of_size};

/// Connections and pipeline depth of a burst of saves, as MovieMatch instances would send them.
const BURST_CONNECTIONS: usize = 16;
const BURST_DEPTH: usize = 64;

fn room_name(i: usize) -> String {
    format!("room-{i:06}")
}

/// A 5 KB room's JSON without its name: `{"sort":...}`.
fn payload() -> Arc<Vec<u8>> {
    let mut room = room_of_size("x", 5 * 1024);
    if let Some(room) = room.as_object_mut() {
        room.shift_remove("roomName");
    }
    Arc::new(serde_json::to_vec(&room).expect("encode a room"))
}

/// The room JSON named `name`, as both servers store it.
fn room_json(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut room = format!("{{\"roomName\":\"{name}\",").into_bytes();
    room.extend_from_slice(&payload[1..]);
    room
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Saves rooms `0..rooms` through `BURST_CONNECTIONS` connections, `BURST_DEPTH` at a time.
async fn burst(server: &Server, rooms: usize, payload: &Arc<Vec<u8>>) {
    let ours = server.proto == Proto::Ndjson;
    let mut tasks = Vec::new();
    for c in 0..BURST_CONNECTIONS {
        let mut conn = server.connect().await;
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (c..rooms).step_by(BURST_CONNECTIONS).collect();
            for batch in mine.chunks(BURST_DEPTH) {
                for &i in batch {
                    let name = room_name(i);
                    let request = if ours {
                        named_room(&name, &payload)
                    } else {
                        resp(&[b"SET", name.as_bytes(), &room_json(&name, &payload)])
                    };
                    conn.send(&request).await.expect("send a save");
                }
                conn.flush().await.expect("send a save");
                for _ in batch {
                    conn.recv().await.expect("a save failed");
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a saving connection");
    }
}

/// How many of rooms `0..rooms` have no room file in `storage`.
fn missing_files(storage: &Path, rooms: usize) -> usize {
    (0..rooms)
        .filter(|&i| !storage.join(format!("{}.json", room_name(i))).exists())
        .count()
}

/// The daemon's `compressedRooms` (rooms packed when its last compaction pass ended).
async fn compressed_rooms(server: &Server) -> u64 {
    let mut conn = server.connect().await;
    conn.send(b"{\"op\":\"stats\"}\n")
        .await
        .expect("ask for stats");
    conn.flush().await.expect("ask for stats");
    let line = conn.recv_line().await.expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&line).expect("stats is JSON");
    stats["compressedRooms"].as_u64().unwrap_or(0)
}

/// Waits (up to 5 minutes) until the daemon's compaction pass has compressed all `rooms`, as
/// it does with rooms nobody reads (`room/cold.rs`: unread for 30 s, then a pass); returns RSS
/// then (KiB), and how long that took. A daemon that never gets there is a failed check.
async fn rss_once_idle(report: &mut Report, server: &Server, rooms: usize, what: &str) -> u64 {
    let since = Instant::now();
    while compressed_rooms(server).await < rooms as u64 {
        if since.elapsed() > Duration::from_secs(300) {
            report.fail(format!(
                "{what}: the daemon had not compressed its {rooms} idle rooms after 300 s"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "  {what}: every room compressed {:.1} s later",
        since.elapsed().as_secs_f64()
    );
    server.rss_kb()
}

/// Memory and start-up with `rooms` rooms of 5 KB written as room files before the daemon
/// starts; Redis holds the same JSON and loads it from its RDB file.
pub async fn from_files(report: &mut Report, rooms: usize, dir: &Path) {
    let ours_dir = dir.join("many-ours");
    let storage = ours_dir.join("rooms");
    std::fs::create_dir_all(&storage).unwrap();
    let payload = payload();
    for i in 0..rooms {
        let name = room_name(i);
        let room: serde_json::Value =
            serde_json::from_slice(&room_json(&name, &payload)).expect("a room");
        std::fs::write(
            storage.join(format!("{name}.json")),
            serde_json::to_vec_pretty(&room).expect("encode a room"),
        )
        .expect("write a room file");
    }
    let (ours, first) = procs::daemon(&ours_dir, "strict").await;
    let ours_rss = ours.rss_kb();
    let ours_idle = rss_once_idle(report, &ours, rooms, "started from room files").await;
    ours.stop();
    let (ours, clean) = procs::daemon(&ours_dir, "strict").await;
    // Leave a journal behind: a rating in each of 10% of the rooms, then a crash.
    let mut conn = ours.connect().await;
    let rated: Vec<String> = (0..rooms).step_by(10).map(room_name).collect();
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
    let _ = std::fs::remove_dir_all(&ours_dir);

    let redis_dir = dir.join("many-redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let (redis, _) = procs::redis(&redis_dir, "none").await;
    burst(&redis, rooms, &payload).await;
    let redis_rss = redis.rss_kb();
    let mut conn = redis.connect().await;
    conn.send(&resp(&[b"SAVE"])).await.unwrap();
    conn.flush().await.unwrap();
    conn.recv().await.unwrap();
    drop(conn);
    redis.stop();
    let (redis, redis_load) = procs::redis(&redis_dir, "none").await;
    redis.stop();
    let _ = std::fs::remove_dir_all(&redis_dir);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let load = ms(redis_load);
    report.push(Row::single(
        &format!("RSS, {rooms} rooms of 5 KB started from room files (MiB)"),
        mib(ours_rss),
        mib(redis_rss),
    ));
    report.push(Row::single(
        &format!("RSS, {rooms} rooms of 5 KB started from room files, idle (MiB)"),
        mib(ours_idle),
        mib(redis_rss),
    ));
    report.push(Row::single(
        &format!("start-up, first, {rooms} rooms (ms)"),
        ms(first),
        load,
    ));
    report.push(Row::single(
        &format!("start-up, clean, {rooms} rooms (ms)"),
        ms(clean),
        load,
    ));
    report.push(Row::single(
        &format!("start-up, journal replay, {rooms} rooms (ms)"),
        ms(replay),
        load,
    ));
}

/// RSS (KiB) sampled every 100 ms until `done` says so or `limit` has passed; returns the peak
/// and whether `done` said so.
async fn peak_rss_until(
    server: &Server,
    mut done: impl FnMut() -> bool,
    limit: Duration,
) -> (u64, bool) {
    let started = Instant::now();
    let mut peak = server.rss_kb();
    while !done() {
        if started.elapsed() > limit {
            return (peak, false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(server.rss_kb());
    }
    (peak, true)
}

/// Memory with `rooms` rooms of 5 KB saved through the socket (strict): right after the burst,
/// at the peak of the fold that follows, after it, and after a restart. Redis gets the same
/// burst (`appendfsync always`), then is restarted from its AOF.
///
/// The fold is the daemon's own periodic one (it writes the rooms' files from a thread of its
/// own, within a minute of the burst); `--quick` asks for it with the `fold` operation instead,
/// which runs the same fold on the storage actor's thread.
pub async fn through_socket(report: &mut Report, rooms: usize, quick: bool, dir: &Path) {
    let payload = payload();
    let ours_dir = dir.join("socket-ours");
    let storage: PathBuf = ours_dir.join("rooms");
    std::fs::create_dir_all(&ours_dir).unwrap();
    let (ours, _) = procs::daemon(&ours_dir, "strict").await;
    burst(&ours, rooms, &payload).await;
    let after_burst = ours.rss_kb();
    let burst_done = Instant::now();
    let peak = if quick {
        let mut conn = ours.connect().await;
        let fold = tokio::spawn(async move {
            conn.send(b"{\"op\":\"fold\"}\n")
                .await
                .expect("ask for a fold");
            conn.flush().await.expect("ask for a fold");
            conn.recv().await.expect("the fold failed");
        });
        let peak = peak_rss_until(&ours, || fold.is_finished(), Duration::from_secs(60)).await;
        if peak.1 {
            fold.await.expect("the fold");
        }
        peak
    } else {
        // Done once every room has its file (files are checked in order, each once) and no
        // fold is running (`.index.next` exists only while one does).
        let mut next = 0;
        let done = || {
            while next < rooms && storage.join(format!("{}.json", room_name(next))).exists() {
                next += 1;
            }
            next == rooms && !storage.join(".index.next").exists()
        };
        peak_rss_until(&ours, done, Duration::from_secs(600)).await
    };
    let (peak, folded) = peak;
    if !folded {
        report.fail(format!(
            "{} s after a burst of {rooms} saves, the daemon had not written every room's file",
            burst_done.elapsed().as_secs()
        ));
    }
    eprintln!(
        "  every room file written {:.1} s after the burst",
        burst_done.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_fold = ours.rss_kb();
    let idle = rss_once_idle(report, &ours, rooms, "saved through the socket").await;
    eprintln!(
        "  (that is {:.1} s after the burst)",
        burst_done.elapsed().as_secs_f64()
    );
    ours.stop();
    let (ours, _) = procs::daemon(&ours_dir, "strict").await;
    let after_restart = ours.rss_kb();
    let restart_idle = rss_once_idle(report, &ours, rooms, "after a restart").await;
    ours.stop();
    let _ = std::fs::remove_dir_all(&ours_dir);

    let redis_dir = dir.join("socket-redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let (redis, _) = procs::redis(&redis_dir, "always").await;
    burst(&redis, rooms, &payload).await;
    let redis_after = redis.rss_kb();
    redis.stop();
    let (redis, _) = procs::redis(&redis_dir, "always").await;
    let redis_restart = redis.rss_kb();
    redis.stop();
    let _ = std::fs::remove_dir_all(&redis_dir);

    let what =
        |when: &str| format!("RSS, {rooms} rooms of 5 KB saved through the socket, {when} (MiB)");
    let redis_after = mib(redis_after);
    report.push(Row::single(
        &what("right after"),
        mib(after_burst),
        redis_after,
    ));
    report.push(Row::single(
        &what("peak during the fold"),
        mib(peak),
        redis_after,
    ));
    report.push(Row::single(
        &what("after the fold"),
        mib(after_fold),
        redis_after,
    ));
    report.push(Row::single(&what("idle"), mib(idle), redis_after));
    report.push(Row::single(
        &what("after a restart"),
        mib(after_restart),
        mib(redis_restart),
    ));
    report.push(Row::single(
        &what("after a restart, idle"),
        mib(restart_idle),
        mib(redis_restart),
    ));
}

/// SIGTERM right after a burst of `rooms` strict saves: how long the daemon takes to exit, and
/// that every room has its file afterwards. Redis (`appendfsync always`) gets the same burst.
pub async fn stop_after_burst(report: &mut Report, rooms: usize, dir: &Path) {
    let payload = payload();
    let ours_dir = dir.join("stop-ours");
    std::fs::create_dir_all(&ours_dir).unwrap();
    let (ours, _) = procs::daemon(&ours_dir, "strict").await;
    burst(&ours, rooms, &payload).await;
    let (ours_took, ours_ok) = ours.stop_timed();
    if !ours_ok {
        report.fail("the daemon did not exit 0 after SIGTERM right after a burst".into());
    }
    let missing = missing_files(&ours_dir.join("rooms"), rooms);
    if missing > 0 {
        report.fail(format!(
            "after SIGTERM right after {rooms} saves, {missing} room files are missing"
        ));
    }
    let _ = std::fs::remove_dir_all(&ours_dir);

    let redis_dir = dir.join("stop-redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let (redis, _) = procs::redis(&redis_dir, "always").await;
    burst(&redis, rooms, &payload).await;
    let (redis_took, _) = redis.stop_timed();
    let _ = std::fs::remove_dir_all(&redis_dir);

    report.push(Row::single(
        &format!("stop after a burst of {rooms} saves, every room file written (ms)"),
        ours_took.as_secs_f64() * 1000.0,
        redis_took.as_secs_f64() * 1000.0,
    ));
}
