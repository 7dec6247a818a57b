//! Cold rooms kept compressed: the packed form of a room's JSON, and the compaction pass that
//! packs the rooms nobody used for a while and unpacks again the ones being read.
//!
//! Most rooms are idle most of the time (an evening of swipes, then nothing for days), and an
//! idle room's JSON compresses well: the same media-id prefixes, user names and rating words
//! over and over. LZ4 is used because unpacking a 5 KB room takes a few microseconds, so a room
//! read again after a while costs little, and packing 100,000 of them takes about a second of
//! one core. A room being read is never paying that: see [`Compactor`].
//!
//! This module decides and packs; it never publishes. The storage actor owns the rooms: it calls
//! [`Compactor::tick`] on its upkeep tick with its working copy, which is changed only where the
//! room is still the very entry the pass looked at.

use std::ops::Bound;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::entry::{RoomEntry, RoomMap};
use super::RoomName;

/// How long a room must go unread and unchanged before it is packed: between one and two of
/// these (a pass clears the room's "used" flag, the next one packs it if it is still clear).
/// Long enough that a room in use (MovieMatch reads a room on every swipe of its members) is
/// never packed while its evening lasts; short enough that a burst of saves is packed within a
/// couple of minutes.
pub const IDLE_BEFORE_PACKING: Duration = Duration::from_secs(30);

/// Rooms looked at per tick, and rooms packed or unpacked per tick at most: about 20 ms of one
/// core for 5 KB rooms, off the actor, and as much replaced in the map on the actor (a few ms).
/// With a tick a second, 100,000 idle rooms are packed in about 25 s.
const VISITS_PER_TICK: usize = 16_384;
const WORK_PER_TICK: usize = 4_096;

/// A freed total this large is handed back to the OS once a pass ends, from the thread that
/// freed it (`heap::give_back`).
const TRIM_AFTER_BYTES: usize = 8 << 20;

/// What the worker is asked to do with one room.
enum Job {
    Pack(Arc<RoomEntry>),
    Unpack(Arc<RoomEntry>),
}

/// A room the worker made: put `with` in place of `seen` if the room is still `seen`.
struct Swap {
    seen: Arc<RoomEntry>,
    with: Arc<RoomEntry>,
}

enum Message {
    Work(Vec<Job>),
    /// Give freed memory back to the OS (after a pass that freed a lot).
    Trim,
}

/// The compaction pass, walked a slice per tick over the rooms in name order; the packing
/// itself runs on a thread of its own.
pub struct Compactor {
    /// How long a room must be idle before it is packed (see [`IDLE_BEFORE_PACKING`]).
    idle: Duration,
    /// Where the walk stands: the last room looked at (`None`: between passes).
    cursor: Option<RoomName>,
    /// When the current (or last) pass started; `None` before the first.
    started: Option<Instant>,
    /// Whether this is the first pass since start: every room then was loaded from storage and
    /// nobody has read it yet, so it is packed without waiting a pass.
    first: bool,
    /// Rooms found packed (or packed) in this pass so far.
    packed_this_pass: u64,
    /// Rooms packed after the last finished pass, once its memory was given back.
    packed_rooms: u64,
    /// Rooms packed after the last finished pass, before that.
    counted: u64,
    /// Bytes that swapping freed since the last trim.
    freed: usize,
    /// Work (or a trim) handed to the worker that has not come back yet.
    in_flight: bool,
    /// The walk reached the end of the map; the pass ends when its work is back.
    ending: bool,
    worker: Option<Worker>,
}

struct Worker {
    jobs: mpsc::Sender<Message>,
    done: mpsc::Receiver<Vec<Swap>>,
}

impl Default for Compactor {
    fn default() -> Self {
        Compactor {
            idle: IDLE_BEFORE_PACKING,
            cursor: None,
            started: None,
            first: true,
            packed_this_pass: 0,
            packed_rooms: 0,
            counted: 0,
            freed: 0,
            in_flight: false,
            ending: false,
            worker: None,
        }
    }
}

impl Compactor {
    /// A compactor that packs rooms left alone for `idle` (tests: [`IDLE_BEFORE_PACKING`] is
    /// the daemon's).
    pub fn with_idle(idle: Duration) -> Compactor {
        Compactor {
            idle,
            ..Compactor::default()
        }
    }

    /// How long a room must be left alone before it is packed.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Rooms kept packed when the last full pass ended.
    pub fn packed_rooms(&self) -> u64 {
        self.packed_rooms
    }

    /// One tick of upkeep: puts into `rooms` what the worker finished (each room only if it is
    /// still the entry the pass saw), then hands the worker the next slice. Returns whether
    /// `rooms` changed (the caller publishes it).
    pub fn tick(&mut self, rooms: &mut RoomMap) -> bool {
        let changed = self.take_finished(rooms);
        if self.in_flight {
            return changed;
        }
        if self.ending {
            // Only in a tick after the last swaps were published are the rooms they replaced
            // freed; a trim before that gives back nothing, and their memory stays for good.
            if !changed {
                self.end_pass();
            }
            return changed;
        }
        let due = match self.started {
            None => true,
            Some(started) => self.cursor.is_some() || started.elapsed() >= self.idle,
        };
        if due {
            let jobs = self.visit(rooms);
            if !jobs.is_empty() {
                self.send(Message::Work(jobs));
            }
        }
        changed
    }

    /// Swaps in every finished room; a room changed since the pass looked at it keeps its new
    /// entry (the change made it, and the next pass will look again).
    fn take_finished(&mut self, rooms: &mut RoomMap) -> bool {
        let Some(worker) = &self.worker else {
            return false;
        };
        let mut changed = false;
        while let Ok(swaps) = worker.done.try_recv() {
            self.in_flight = false;
            // Counted once the memory the pass freed has been given back (or needed not be).
            self.packed_rooms = self.counted;
            for Swap { seen, with } in swaps {
                let current = rooms.get(seen.name.as_str());
                if !current.is_some_and(|current| Arc::ptr_eq(current, &seen)) {
                    continue;
                }
                if with.is_packed() {
                    self.packed_this_pass += 1;
                }
                self.freed += seen.held_bytes().saturating_sub(with.held_bytes());
                rooms.insert(seen.name.clone(), with);
                changed = true;
            }
        }
        changed
    }

    /// Looks at the next slice of rooms after the cursor; returns the work they need.
    fn visit(&mut self, rooms: &RoomMap) -> Vec<Job> {
        if self.cursor.is_none() {
            self.started = Some(Instant::now());
            self.packed_this_pass = 0;
        }
        let from = match &self.cursor {
            Some(name) => Bound::Excluded(name.clone()),
            None => Bound::Unbounded,
        };
        let mut jobs = Vec::new();
        let mut visited = 0;
        let mut last = None;
        for (name, entry) in rooms.range((from, Bound::Unbounded)) {
            if visited == VISITS_PER_TICK || jobs.len() == WORK_PER_TICK {
                break;
            }
            visited += 1;
            last = Some(name);
            if entry.is_hot() {
                continue;
            }
            // The first pass after start treats every loaded room as idle.
            let used = entry.take_used() && !self.first;
            match (used, entry.is_packed(), entry.is_unpacked()) {
                // Read again while packed: keep it unpacked, so reads stop paying for it.
                (true, true, true) => jobs.push(Job::Unpack(entry.clone())),
                (true, _, _) => {}
                // Idle: pack it, or drop the copy a read unpacked.
                (false, false, _) | (false, true, true) => jobs.push(Job::Pack(entry.clone())),
                (false, true, false) => self.packed_this_pass += 1,
            }
        }
        match last {
            Some(name) if visited == VISITS_PER_TICK || jobs.len() == WORK_PER_TICK => {
                self.cursor = Some(name.clone());
            }
            // The end of the map: this pass is done once its last work comes back.
            _ => {
                self.cursor = None;
                self.first = false;
                self.ending = true;
            }
        }
        jobs
    }

    fn end_pass(&mut self) {
        self.ending = false;
        self.counted = self.packed_this_pass;
        if self.freed >= TRIM_AFTER_BYTES {
            self.freed = 0;
            self.send(Message::Trim);
        }
        if !self.in_flight {
            self.packed_rooms = self.counted;
        }
    }

    /// Hands the worker a message; every one is answered (a trim with no swaps).
    fn send(&mut self, message: Message) {
        let worker = match self.worker.take() {
            Some(worker) => worker,
            None => match start_worker() {
                Some(worker) => worker,
                // No thread: rooms stay as they are (logged once, by start_worker).
                None => return,
            },
        };
        if worker.jobs.send(message).is_ok() {
            self.in_flight = true;
            self.worker = Some(worker);
        }
    }
}

fn start_worker() -> Option<Worker> {
    let (jobs, inbox) = mpsc::channel::<Message>();
    let (outbox, done) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("room-packer".into())
        .spawn(move || {
            // Ends when the actor (the Compactor) is gone.
            while let Ok(message) = inbox.recv() {
                match message {
                    Message::Work(jobs) => {
                        if outbox.send(work(jobs)).is_err() {
                            return;
                        }
                    }
                    Message::Trim => {
                        crate::heap::give_back();
                        if outbox.send(Vec::new()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    match spawned {
        Ok(_) => Some(Worker { jobs, done }),
        Err(e) => {
            crate::logging::limited_warn(
                "room-packer",
                format_args!(
                    "could not start the thread that compresses idle rooms ({e}); \
                     rooms stay uncompressed, using more memory"
                ),
            );
            None
        }
    }
}

fn work(jobs: Vec<Job>) -> Vec<Swap> {
    let mut swaps = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (seen, with) = match job {
            Job::Pack(seen) => match seen.packed() {
                Some(with) => (seen, with),
                None => continue,
            },
            Job::Unpack(seen) => {
                let with = seen.unpacked();
                (seen, with)
            }
        };
        swaps.push(Swap {
            seen,
            with: Arc::new(with),
        });
    }
    swaps
}

#[cfg(test)]
impl Compactor {
    /// A compactor whose passes follow each other without waiting (tests run many passes).
    fn eager() -> Compactor {
        Compactor::with_idle(Duration::ZERO)
    }

    /// Runs ticks until one whole pass has been walked and its work swapped in.
    fn pass(&mut self, rooms: &mut RoomMap) {
        self.tick(rooms);
        for _ in 0..10_000 {
            if self.cursor.is_none() && !self.in_flight && !self.ending {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
            self.tick(rooms);
        }
        panic!(
            "a compaction pass over {} rooms did not finish in 10 s",
            rooms.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::{json, Value};

    /// A room of about `bytes` of JSON as the benchmark saves it: media ids that differ in their
    /// last four hex digits, two users rating each (benches/moviematch-bench/work.rs).
    fn bench_room(name: &str, bytes: usize) -> Value {
        let mut ratings = serde_json::Map::new();
        let mut room = json!({
            "roomName": name, "sort": "random", "createdAt": "2025-10-25T20:00:00.000Z",
            "creatorPlexUserId": "12345", "creatorPlexUsername": "john_doe",
            "options": ["EndOnFirstMatch"],
            "filters": [{"key": "genre", "operator": "=", "value": ["Action", "Comedy"]}],
            "userProgress": {"john_doe": 5, "jane": 3},
        });
        let mut n = 0u64;
        while serde_json::to_vec(&room).map_or(0, |v| v.len()) < bytes {
            ratings.insert(
                format!("plex://movie/5d776825880197001ec9{n:04x}"),
                json!([
                    ["john_doe", "like", 1729890000000u64 + n],
                    ["jane", "dislike", 1729890005000u64 + n]
                ]),
            );
            n += 1;
            room["ratings"] = Value::Object(ratings.clone());
        }
        room
    }

    /// A room as MovieMatch fills it in an evening: Plex GUIDs (random hex), three members who
    /// swipe at their own pace, each media rated by one to three of them.
    fn evening_room(name: &str, bytes: usize, seed: u64) -> Value {
        let mut state = seed | 1;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let users = ["alice_in_chains", "bob", "carol.plex"];
        let mut ratings = serde_json::Map::new();
        let mut room = json!({
            "roomName": name, "password": "", "sort": "rating",
            "createdAt": "2025-10-25T19:04:31.123Z",
            "creatorPlexUserId": 48_312_907u64, "creatorPlexUsername": "alice_in_chains",
            "options": [], "filters": [{"key": "contentRating", "operator": "!=", "value": ["R"]}],
        });
        let mut at = 1_761_418_000_000u64;
        while serde_json::to_vec(&room).map_or(0, |v| v.len()) < bytes {
            let id = format!("plex://movie/{:016x}{:08x}", random(), random() as u32);
            let raters = 1 + random() % 3;
            let entries: Vec<Value> = (0..raters)
                .map(|u| {
                    at += 1_000 + random() % 20_000;
                    let rating = if random() % 3 == 0 { "like" } else { "dislike" };
                    json!([users[u as usize], rating, at])
                })
                .collect();
            ratings.insert(id, Value::Array(entries));
            room["ratings"] = Value::Object(ratings.clone());
            room["userProgress"] =
                json!({"alice_in_chains": ratings.len(), "bob": ratings.len() / 2});
        }
        room
    }

    fn entry(room: &Value, revision: u64) -> RoomEntry {
        let Value::Object(doc) = room else {
            unreachable!("rooms are objects")
        };
        let name = doc["roomName"].as_str().unwrap_or("r");
        RoomEntry::from_doc(RoomName::new(name).unwrap(), doc, revision, 7)
    }

    fn map(rooms: &[Value]) -> RoomMap {
        rooms
            .iter()
            .map(|room| {
                let entry = entry(room, 1);
                (entry.name.clone(), Arc::new(entry))
            })
            .collect()
    }

    fn room_of(rooms: &RoomMap, name: &str) -> Arc<RoomEntry> {
        rooms.get(name).cloned().expect("the room is there")
    }

    #[test]
    fn a_packed_room_reads_back_byte_for_byte() {
        for room in [bench_room("b", 5 * 1024), evening_room("e", 5 * 1024, 42)] {
            let plain = entry(&room, 3);
            let json = plain.encoded().clone();
            let packed = plain.packed().expect("a 5 KB room packs");
            assert!(packed.is_packed() && !packed.is_unpacked());
            let ratio = json.len() as f64 / packed.held_bytes() as f64;
            eprintln!(
                "{}: {} bytes of JSON, packed {ratio:.2}x",
                room["roomName"],
                json.len()
            );
            assert!(ratio > 1.5, "a 5 KB room packs only {ratio:.2}x");
            assert_eq!(packed.json_len(), json.len());
            // Reading it for the fold or the journal leaves it packed and unread...
            assert_eq!(packed.json(), json);
            assert_eq!(packed.pretty(), plain.pretty());
            assert_eq!(packed.to_value(), room);
            assert_eq!(packed.body().to_compact(), json.to_vec());
            assert!(!packed.is_unpacked() && !packed.take_used());
            // ...and a read answers the same bytes and counts as a use.
            assert_eq!(packed.encoded(), &json);
            assert!(packed.is_unpacked() && packed.take_used());
            assert_eq!(
                (&packed.summary, packed.revision, packed.updated_at),
                (&plain.summary, plain.revision, plain.updated_at)
            );
        }
    }

    #[test]
    fn rooms_that_do_not_shrink_stay_as_they_are() {
        // Random letters and digits: nothing for LZ4 to find.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: String = (0..4000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                char::from(alphabet[(state % 62) as usize])
            })
            .collect();
        let room = json!({"roomName": "n", "sort": "random", "createdAt": "2025-10-25T20:00:00Z", "x": noise});
        assert!(entry(&room, 1).packed().is_none());
    }

    /// `count` benchmark rooms of 5 KB, named by `name`.
    fn bench_rooms(count: usize, name: impl Fn(usize) -> String) -> Vec<Value> {
        (0..count).map(|i| bench_room(&name(i), 5 * 1024)).collect()
    }

    #[test]
    fn idle_rooms_are_packed_and_rooms_being_read_never_pay_for_it() {
        let rooms_json = bench_rooms(40, |i| format!("room-{i:02}"));
        let mut rooms = map(&rooms_json);
        let mut compactor = Compactor::eager();
        // The first pass after start packs every room (all were loaded, none read yet).
        compactor.pass(&mut rooms);
        assert!(rooms.values().all(|e| e.is_packed()));
        assert_eq!(compactor.packed_rooms(), 40);

        // A read unpacks a room once; a pass that finds it read keeps it unpacked...
        let read = room_of(&rooms, "room-07");
        assert_eq!(read.encoded(), &rooms_json_bytes(&rooms_json[7]));
        compactor.pass(&mut rooms);
        assert!(!room_of(&rooms, "room-07").is_packed());
        assert_eq!(compactor.packed_rooms(), 39);
        // ...and as long as it is read between passes it stays so: no read unpacks it again.
        for _ in 0..5 {
            let entry = room_of(&rooms, "room-07");
            assert!(!entry.is_packed());
            assert_eq!(entry.encoded(), &rooms_json_bytes(&rooms_json[7]));
            compactor.pass(&mut rooms);
        }
        // Once nobody reads it for a whole pass, the next one packs it again.
        compactor.pass(&mut rooms);
        compactor.pass(&mut rooms);
        assert!(room_of(&rooms, "room-07").is_packed());
        assert_eq!(compactor.packed_rooms(), 40);

        // A packed room read once and then left alone is not kept unpacked: the next pass drops
        // the copy the read made.
        let _ = room_of(&rooms, "room-11").encoded();
        assert!(room_of(&rooms, "room-11").is_unpacked());
        compactor.pass(&mut rooms);
        compactor.pass(&mut rooms);
        let again = room_of(&rooms, "room-11");
        assert!(again.is_packed() && !again.is_unpacked());
    }

    #[test]
    fn a_pass_gives_memory_back_only_after_its_last_swaps_are_published() {
        let rooms = bench_rooms(300, |i| format!("r{i:03}"));
        let mut rooms = map(&rooms);
        let mut compactor = Compactor::eager();
        // What readers hold: the map as last published (the actor publishes after a tick
        // that changed it, and the rooms that tick replaced are freed only then).
        let mut published = rooms.clone();
        let mut ends = 0;
        for _ in 0..10_000 {
            let was_ending = compactor.ending;
            let changed = compactor.tick(&mut rooms);
            if was_ending && !compactor.ending {
                ends += 1;
                assert!(
                    !changed,
                    "the pass ended (and asked for a trim) in the tick that swapped rooms in, \
                     before the rooms they replaced were freed"
                );
                assert_eq!(compactor.packed_this_pass, 300);
                break;
            }
            if changed {
                published = rooms.clone();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(ends, 1, "the pass did not end");
        assert!(published.values().all(|e| e.is_packed()));
    }

    #[test]
    fn a_room_changed_while_it_was_packed_keeps_its_change() {
        let rooms_json: Vec<Value> = (0..3)
            .map(|i| bench_room(&format!("r{i}"), 5 * 1024))
            .collect();
        let mut rooms = map(&rooms_json);
        let mut compactor = Compactor::eager();
        compactor.tick(&mut rooms);
        // The worker is packing what the pass saw; meanwhile r1 is saved again.
        let newer = Arc::new(entry(&rooms_json[1], 2));
        rooms.insert(newer.name.clone(), newer.clone());
        compactor.pass(&mut rooms);
        let r1 = room_of(&rooms, "r1");
        assert!(
            Arc::ptr_eq(&r1, &newer),
            "the pass replaced a newer version of the room"
        );
        assert_eq!(r1.revision, 2);
        assert!(room_of(&rooms, "r0").is_packed() && room_of(&rooms, "r2").is_packed());
    }

    #[test]
    fn a_thousand_idle_5_kb_rooms_hold_under_3_5_mb() {
        let rooms_json: Vec<Value> = (0..1000)
            .map(|i| evening_room(&format!("room-{i:04}"), 5 * 1024, i + 1))
            .collect();
        let json_bytes: usize = rooms_json.iter().map(|r| rooms_json_bytes(r).len()).sum();
        let before = crate::allocated::live();
        let rooms: Vec<RoomEntry> = rooms_json
            .iter()
            .map(|room| {
                let plain = entry(room, 1);
                plain.packed().expect("an evening's room packs")
            })
            .collect();
        let held = crate::allocated::live() - before;
        eprintln!("1000 rooms, {json_bytes} bytes of JSON: {held} bytes held packed");
        // Unpacked, their JSON alone is over 5 MB.
        assert!(json_bytes > 5_000_000);
        assert!(held < 3_500_000, "1000 idle 5 KB rooms hold {held} bytes");
        drop(rooms);
    }

    fn rooms_json_bytes(room: &Value) -> Bytes {
        Bytes::from(serde_json::to_vec(room).unwrap())
    }
}
