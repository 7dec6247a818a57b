//! Crash tests against the real binary: SIGKILL at random moments under concurrent writes, many
//! times over one storage directory. Every acknowledged change must survive, and every room file
//! must parse, whenever the daemon dies.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::harness::*;
use serde_json::json;

const WRITERS: usize = 8;
const ROUNDS: u64 = 12;

/// A writer that owns one room and adds ratings m0, m1, ... in order; `acked` counts the ratings
/// the daemon acknowledged. Stops at the first failure (the daemon died).
fn rate_until_killed(
    mut conn: Conn,
    name: String,
    first: u64,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut n = first;
    while !stop.load(Ordering::SeqCst) {
        let request = json!({
            "op": "addRating", "roomName": name, "mediaId": format!("m{n}"),
            "userName": "u", "rating": "like", "timestamp": n,
        });
        if conn.try_send(&request).is_err() {
            return;
        }
        match conn.read_line() {
            Some(line) if line.contains("\"ok\":true") => {
                n += 1;
                acked.store(n, Ordering::SeqCst);
            }
            _ => return,
        }
    }
}

/// A writer that replaces a whole ~60 KB room again and again; `acked` is the last saved version.
fn save_until_killed(mut conn: Conn, acked: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut version = acked.load(Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) {
        version += 1;
        let room = with(
            room("big"),
            json!({"version": version, "padding": "p".repeat(60_000)}),
        );
        if conn
            .try_send(&json!({"op": "saveRoom", "room": room}))
            .is_err()
        {
            return;
        }
        match conn.read_line() {
            Some(line) if line.contains("\"ok\":true") => acked.store(version, Ordering::SeqCst),
            _ => return,
        }
    }
}

fn seeded_delay(round: u64) -> Duration {
    // Spread the kills over the first ~300 ms of each run, deterministically.
    Duration::from_millis(20 + (round * 7919) % 300)
}

#[test]
fn sigkill_under_write_load_loses_no_acknowledged_change() {
    let mut d = Daemon::start(Backend::File);
    let names: Vec<String> = (0..WRITERS).map(|w| format!("crash room {w}")).collect();
    let mut setup = d.connect();
    for name in &names {
        setup.ok(json!({"op": "saveRoom", "room": bare_room(name)}));
    }
    drop(setup);
    let acked: Vec<Arc<AtomicU64>> = (0..WRITERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let big = Arc::new(AtomicU64::new(0));

    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (name, acked) in names.iter().zip(&acked) {
            let (conn, name, acked, stop) =
                (d.connect(), name.clone(), acked.clone(), stop.clone());
            let first = acked.load(Ordering::SeqCst);
            threads.push(thread::spawn(move || {
                rate_until_killed(conn, name, first, acked, stop)
            }));
        }
        let (conn, big_acked, big_stop) = (d.connect(), big.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            save_until_killed(conn, big_acked, big_stop)
        }));

        thread::sleep(seeded_delay(round));
        d.kill9();
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }

        // Whatever moment the kill hit, every room file is whole.
        for file in room_files(d.storage()) {
            read_json_file(&d.storage().join(&file));
        }
        d.restart();
        let mut check = d.connect();
        for (name, counter) in names.iter().zip(&acked) {
            let resp = check.ok(json!({"op": "getRoom", "roomName": name}));
            let ratings = resp["room"]["ratings"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let acked = counter.load(Ordering::SeqCst) as usize;
            assert!(
                ratings.len() >= acked,
                "round {round}, {name}: {acked} ratings acknowledged, {} survived",
                ratings.len()
            );
            // Any extra rating is the one in flight at the kill: applied, just never answered.
            assert!(
                ratings.len() <= acked + 1,
                "round {round}, {name}: ratings from nowhere"
            );
            for n in 0..ratings.len() {
                assert!(
                    ratings.contains_key(&format!("m{n}")),
                    "round {round}, {name}: gap at m{n}"
                );
            }
            assert_eq!(
                revision(&resp),
                ratings.len() as u64 + 1,
                "round {round}, {name}"
            );
            // Continue from what survived, so the next round's ratings stay gap-free.
            counter.store(ratings.len() as u64, Ordering::SeqCst);
        }
        let resp = check.ok(json!({"op": "getRoom", "roomName": "big"}));
        let acked_version = big.load(Ordering::SeqCst);
        if acked_version > 0 {
            let version = resp["room"]["version"].as_u64().unwrap_or(0);
            assert!(
                version >= acked_version,
                "round {round}: big room at {version}, {acked_version} acknowledged"
            );
            big.store(version, Ordering::SeqCst);
        }
    }
    assert_eq!(d.sigterm().code(), Some(0));
}
