//! Model-based property test of the file backend under power loss, over [`SimFs`].
//!
//! Random sequences of every mutating operation (`saveRoom` / `deleteRoom` with and without
//! `expectedRevision`, `addRating` with duplicates, `setProgress`, `deleteRooms`), clean
//! restarts, upkeep ticks (background folds, which this backend starts as often as it can),
//! `flush`es, failing syncs (EIO) and power losses, driven through the store (`store::start`, `mutate`) and compared
//! with a model of the protocol: room name -> (revision, room JSON), as `tests/model.rs` does for
//! every backend over a real directory.
//!
//! After a power loss the daemon starts over what the disk kept, and:
//! - `strict`: every acknowledged change is there, so the rooms are exactly the model's;
//! - `relaxed`: the rooms are the model's state at some point since the last `flush` or start
//!   (a prefix of the acknowledged changes, possibly ending inside a `deleteRooms` that removed
//!   several rooms: each room's removal is its own journal record), never anything else.
//!
//! Every room file on the disk after a power loss must be a whole, valid room. A failed sync may
//! cost the mutation it hit (answered `storage`, nothing changed) and nothing else.
//!
//! Cases: `PROPTEST_CASES` (default 200 per mode, about a second). A failure prints its shrunk
//! sequence; it becomes an explicit test at the end of this file (there is no place for
//! regression files in the tree).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use super::sim::SimFs;
use super::FileBackend;
use crate::config::Durability;
use crate::room::{self, EpochMillis, Rating, Revision, RoomName};
use crate::store::apply::{Mutation, Outcome, PreparedRoom, Refusal};
use crate::store::{self, ActorThread, StoreError, StoreHandle};

// ---- The operations ----

/// Room names: plain, hostile to a file layout, non-ASCII, and one long enough to be hashed.
fn room_names() -> [String; 5] {
    [
        "movie-night".into(),
        "a/b".into(),
        "..".into(),
        "🎬 night".into(),
        "x".repeat(251),
    ]
}

/// `createdAt` values: `T0` and `T0_OFFSET` are the same instant.
const CREATED: [&str; 4] = [
    "2025-10-25T20:00:00.000Z",
    "2025-10-25T22:00:00+02:00",
    "2025-10-25T20:00:00.001Z",
    "2024-01-01T00:00:00Z",
];

#[derive(Debug, Clone, Copy)]
enum Expect {
    Absent,
    /// The room's current revision (0 when absent): a save or delete that should succeed.
    Current,
    /// A fixed revision: often stale.
    Fixed(Revision),
}

#[derive(Debug, Clone)]
enum Op {
    Save {
        room: usize,
        shape: u8,
        expect: Expect,
    },
    Delete {
        room: usize,
        expect: Expect,
    },
    Rate {
        room: usize,
        media: u8,
        user: u8,
        like: bool,
        timestamp: u64,
    },
    Progress {
        room: usize,
        user: u8,
        progress: u64,
    },
    /// `deleteRooms`: the cut-off is one of the rooms' instants, plus 0 or 1 ms.
    DeleteCreatedBefore {
        instant: usize,
        plus: i64,
    },
    /// A clean stop and a start over the same storage.
    Restart,
    /// Power loss now; `seed` picks how much of each unsynced tail reached the disk.
    Crash {
        seed: u64,
    },
    /// The actor's periodic upkeep: relaxed syncs, background folds.
    Tick,
    /// `flush`: everything acknowledged is on stable storage.
    Flush,
    /// The next file sync fails with EIO (a journal sync, or a room file written by a fold).
    FailNextSync,
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        2 => Just(Expect::Absent),
        2 => Just(Expect::Current),
        1 => (0u64..4).prop_map(Expect::Fixed),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let room = 0usize..5;
    prop_oneof![
        4 => (room.clone(), any::<u8>(), expect())
            .prop_map(|(room, shape, expect)| Op::Save { room, shape, expect }),
        2 => (room.clone(), expect()).prop_map(|(room, expect)| Op::Delete { room, expect }),
        6 => (room.clone(), 0u8..3, 0u8..3, any::<bool>(), 0u64..3).prop_map(
            |(room, media, user, like, timestamp)| Op::Rate { room, media, user, like, timestamp }
        ),
        3 => (room, 0u8..3, 0u64..4)
            .prop_map(|(room, user, progress)| Op::Progress { room, user, progress }),
        1 => (0usize..CREATED.len(), 0i64..2)
            .prop_map(|(instant, plus)| Op::DeleteCreatedBefore { instant, plus }),
        1 => Just(Op::Restart),
        2 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        2 => Just(Op::Tick),
        1 => Just(Op::Flush),
        1 => Just(Op::FailNextSync),
    ]
}

/// A room of one of a few shapes: bare; with ratings and progress; with `null` ratings and an
/// unknown field; with a numeric Plex id, `null` progress and options.
fn room_json(name: &str, shape: u8) -> Value {
    let mut room = json!({
        "roomName": name, "sort": "random", "createdAt": CREATED[usize::from(shape / 4) % 4],
        "creatorPlexUserId": "1", "creatorPlexUsername": "john"
    });
    match shape % 4 {
        0 => {}
        1 => {
            room["ratings"] = json!({"m0": [["u0", "like", 1]], "m9": []});
            room["userProgress"] = json!({"u1": 2});
        }
        2 => {
            room["ratings"] = Value::Null;
            room["zeta"] = json!({"b": [1, true, null], "a": "z"});
        }
        _ => {
            room["creatorPlexUserId"] = json!(12345);
            room["userProgress"] = Value::Null;
            room["options"] = json!(["EndOnFirstMatch"]);
        }
    }
    room
}

// ---- The model ----

#[derive(Debug, Clone, PartialEq)]
struct ModelRoom {
    revision: Revision,
    created_at: EpochMillis,
    json: Value,
}

/// Room name -> (revision, JSON): the protocol's meaning of each operation, written plainly.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    rooms: Rooms,
    /// States a multi-change step passed through before its last change (a torn write may
    /// leave one of them); filled by `step`, emptied by the caller.
    partial: Vec<Rooms>,
}

type Rooms = BTreeMap<String, ModelRoom>;

/// What `getRoom` returns for every room: (name, revision, compact JSON).
type View = Vec<(String, Revision, String)>;

fn view_of(rooms: &Rooms) -> View {
    let text = |v: &Value| serde_json::to_string(v).expect("encode");
    let rooms = rooms.iter();
    rooms
        .map(|(n, r)| (n.clone(), r.revision, text(&r.json)))
        .collect()
}

type Answer = Result<Outcome, StoreError>;

fn conflict(current: Revision) -> Answer {
    Err(StoreError::Refused(Refusal::Conflict { current }))
}

fn not_found(name: &str) -> Answer {
    let name = RoomName::new(name).expect("a valid name");
    Err(StoreError::Refused(Refusal::NotFound { name }))
}

impl Model {
    fn current(&self, name: &str) -> Revision {
        self.rooms.get(name).map_or(0, |r| r.revision)
    }

    fn expected(&self, name: &str, expect: Expect) -> Option<Revision> {
        match expect {
            Expect::Absent => None,
            Expect::Current => Some(self.current(name)),
            Expect::Fixed(revision) => Some(revision),
        }
    }

    /// The store's mutation for `op`, and the answer the protocol requires.
    fn step(&mut self, names: &[String], op: &Op) -> Option<(Mutation, Answer)> {
        let name_of = |room: usize| names[room].clone();
        Some(match *op {
            Op::Save {
                room,
                shape,
                expect,
            } => {
                let name = name_of(room);
                let json = room_json(&name, shape);
                let expected_revision = self.expected(&name, expect);
                let valid = room::validate(json.clone()).expect("a valid room");
                let mutation = Mutation::Save {
                    room: Box::new(PreparedRoom::new(valid)),
                    expected_revision,
                };
                let current = self.current(&name);
                if expected_revision.is_some_and(|e| e != current) {
                    return Some((mutation, conflict(current)));
                }
                let created_at = room::parse_timestamp(json["createdAt"].as_str()?)?;
                let revision = current + 1;
                self.rooms.insert(
                    name,
                    ModelRoom {
                        revision,
                        created_at,
                        json,
                    },
                );
                (mutation, Ok(Outcome::Saved { revision }))
            }
            Op::Delete { room, expect } => {
                let name = name_of(room);
                let expected_revision = self.expected(&name, expect);
                let mutation = Mutation::Delete {
                    name: RoomName::new(&name).ok()?,
                    expected_revision,
                };
                let current = self.current(&name);
                if expected_revision.is_some_and(|e| e != current) {
                    return Some((mutation, conflict(current)));
                }
                let deleted = self.rooms.remove(&name).is_some();
                (mutation, Ok(Outcome::Deleted { deleted }))
            }
            Op::Rate {
                room,
                media,
                user,
                like,
                timestamp,
            } => {
                let name = name_of(room);
                let (media, user) = (format!("m{media}"), format!("u{user}"));
                let rating = if like { Rating::Like } else { Rating::Dislike };
                let mutation = Mutation::AddRating {
                    name: RoomName::new(&name).ok()?,
                    media_id: media.clone(),
                    user_name: user.clone(),
                    rating,
                    timestamp,
                };
                let Some(r) = self.rooms.get_mut(&name) else {
                    return Some((mutation, not_found(&name)));
                };
                let rated = r.json["ratings"][&media]
                    .as_array()
                    .is_some_and(|entries| entries.iter().any(|e| e[0] == user.as_str()));
                if rated {
                    let revision = r.revision;
                    return Some((
                        mutation,
                        Ok(Outcome::Rated {
                            revision,
                            added: false,
                        }),
                    ));
                }
                // A missing or null `ratings` becomes an object (a missing one goes last).
                if !r.json["ratings"].is_object() {
                    r.json["ratings"] = json!({});
                }
                let entry = json!([user, rating.as_str(), timestamp]);
                match r.json["ratings"]
                    .get_mut(&media)
                    .and_then(Value::as_array_mut)
                {
                    Some(entries) => entries.push(entry),
                    None => r.json["ratings"][&media] = json!([entry]),
                }
                r.revision += 1;
                let revision = r.revision;
                (
                    mutation,
                    Ok(Outcome::Rated {
                        revision,
                        added: true,
                    }),
                )
            }
            Op::Progress {
                room,
                user,
                progress,
            } => {
                let name = name_of(room);
                let user = format!("u{user}");
                let mutation = Mutation::SetProgress {
                    name: RoomName::new(&name).ok()?,
                    user_name: user.clone(),
                    progress,
                };
                let Some(r) = self.rooms.get_mut(&name) else {
                    return Some((mutation, not_found(&name)));
                };
                if !r.json["userProgress"].is_object() {
                    r.json["userProgress"] = json!({});
                }
                r.json["userProgress"][&user] = json!(progress);
                r.revision += 1;
                let revision = r.revision;
                (mutation, Ok(Outcome::Progressed { revision }))
            }
            Op::DeleteCreatedBefore { instant, plus } => {
                let created_before = room::parse_timestamp(CREATED[instant])? + plus;
                let doomed: Vec<String> = self
                    .rooms
                    .iter()
                    .filter(|(_, r)| r.created_at < created_before)
                    .map(|(n, _)| n.clone())
                    .collect();
                // One change per room, in name order: a torn journal may keep some of them.
                for name in &doomed {
                    self.rooms.remove(name);
                    self.partial.push(self.rooms.clone());
                }
                self.partial.pop();
                let count = doomed.len() as u64;
                let mutation = Mutation::DeleteCreatedBefore { created_before };
                (mutation, Ok(Outcome::DeletedMany { count }))
            }
            Op::Restart | Op::Crash { .. } | Op::Tick | Op::Flush | Op::FailNextSync => {
                return None
            }
        })
    }

    fn view(&self) -> View {
        view_of(&self.rooms)
    }
}

// ---- Running the store over the simulated disk ----

/// Whether `FailNextSync` makes a sync fail (else it does nothing).
///
/// Off until a bug in `FileBackend::merge_fold` is fixed: when a background fold fails part-way,
/// the room files it already put in place are not recorded in `files`, so a later `deleteRoom`
/// of such a room leaves its file behind and the room comes back (at revision 1) at the next
/// start. Turn on with the fix to keep it fixed.
const SYNC_FAILURES: bool = true;

fn dir() -> PathBuf {
    PathBuf::from("/sim/rooms")
}

struct Running {
    store: StoreHandle,
    actor: ActorThread,
}

impl Running {
    fn start(fs: &SimFs, durability: Durability) -> Running {
        // Fold as often as possible, so power losses land inside folds too.
        let backend = FileBackend::with_fs(Arc::new(fs.clone()), dir(), durability)
            .with_fold_policy(2048, Duration::ZERO);
        let (store, actor) = store::start(Box::new(backend)).expect("recovery succeeds");
        Running { store, actor }
    }

    /// Drops the last handle and joins the actor; `clean` insists the close succeeded.
    fn stop(self, clean: bool) {
        drop(self.store);
        let closed = self.actor.join().expect("the actor does not panic");
        if clean {
            closed.expect("the backend closes cleanly");
        }
    }

    fn view(&self) -> View {
        let snapshot = self.store.snapshot();
        let rooms = snapshot.rooms.values();
        let text = |e: &[u8]| String::from_utf8_lossy(e).into_owned();
        rooms
            .map(|e| (e.name.to_string(), e.revision, text(e.encoded())))
            .collect()
    }
}

/// Every room file the disk holds is whole and valid.
fn files_are_whole(fs: &SimFs) -> Result<(), TestCaseError> {
    for (file, bytes) in fs.files(&dir()) {
        if super::names::is_room_file(&file) {
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| TestCaseError::fail(format!("room file {file} is torn: {e}")))?;
            room::validate(value)
                .map_err(|e| TestCaseError::fail(format!("room file {file} is invalid: {e}")))?;
        }
    }
    Ok(())
}

fn check(durability: Durability, ops: &[Op]) -> Result<(), TestCaseError> {
    let names = room_names();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut fs = SimFs::default();
    let mut model = Model::default();
    // Relaxed mode: every state since the last durable point; a power loss may return to any.
    let mut since_durable: Vec<Rooms> = vec![model.rooms.clone()];
    let mut running = Running::start(&fs, durability);
    // A sync set to fail that may not have failed yet: until then a mutation may be answered
    // `storage` (and must then have changed nothing), and a clean stop may fail.
    let mut failure_pending = false;
    // A sync failed or may yet fail since the store started: a background fold it hit reports
    // its error at the next fold, the clean stop's included, so that stop may fail (the journal,
    // synced first, still holds everything).
    let mut injected = false;
    for (i, op) in ops.iter().enumerate() {
        let before = model.rooms.clone();
        if let Some((mutation, want)) = model.step(&names, op) {
            let got = runtime.block_on(running.store.mutate(mutation));
            if failure_pending && matches!(got, Err(StoreError::Storage { .. })) {
                failure_pending = false;
                model.rooms = before;
                model.partial.clear();
            } else {
                prop_assert_eq!(got, want, "step {}: {:?}", i, op);
            }
            since_durable.append(&mut model.partial);
            since_durable.push(model.rooms.clone());
        }
        match op {
            Op::FailNextSync if SYNC_FAILURES => {
                fs.fail_next_syncs(1);
                failure_pending = true;
                injected = true;
            }
            Op::Restart => {
                running.stop(!injected);
                fs.fail_next_syncs(0);
                failure_pending = false;
                injected = false;
                running = Running::start(&fs, durability);
                // Even after a failed clean stop the journal holds every acknowledged change.
                prop_assert_eq!(running.view(), model.view(), "step {}: after a restart", i);
                since_durable = vec![model.rooms.clone()];
            }
            Op::Crash { seed } => {
                let image = fs.power_loss(*seed);
                running.stop(false);
                failure_pending = false;
                injected = false;
                files_are_whole(&image)?;
                running = Running::start(&image, durability);
                fs = image;
                let found = running.view();
                if durability == Durability::Strict {
                    prop_assert_eq!(&found, &model.view(), "step {}: strict keeps every ack", i);
                } else {
                    let kept = since_durable.iter().rev().find(|r| view_of(r) == found);
                    let Some(kept) = kept else {
                        return Err(TestCaseError::fail(format!(
                            "step {i}: after a power loss the rooms are {found:?}, which is no \
                             state since the last flush: {:?}",
                            since_durable.iter().map(view_of).collect::<Vec<_>>()
                        )));
                    };
                    model.rooms = kept.clone();
                }
                since_durable = vec![model.rooms.clone()];
            }
            Op::Tick => {
                let ticked = runtime.block_on(running.store.tick());
                prop_assert_eq!(ticked, Ok(()), "step {}: tick", i);
            }
            Op::Flush => {
                let flushed = runtime.block_on(running.store.flush());
                if !(failure_pending && matches!(flushed, Err(StoreError::Storage { .. }))) {
                    prop_assert_eq!(flushed, Ok(()), "step {}: flush", i);
                    since_durable = vec![model.rooms.clone()];
                }
            }
            _ => {}
        }
        prop_assert_eq!(
            running.view(),
            model.view(),
            "rooms after step {}: {:?}",
            i,
            op
        );
    }
    fs.fail_next_syncs(0);
    running.stop(!injected);
    // After a clean stop even a power loss keeps everything.
    let image = fs.power_loss(ops.len() as u64);
    files_are_whole(&image)?;
    let again = Running::start(&image, durability);
    prop_assert_eq!(again.view(), model.view(), "rooms after the clean stop");
    again.stop(true);
    Ok(())
}

fn run(durability: Durability) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let ops = proptest::collection::vec(op(), 1..48);
    if let Err(e) = runner.run(&ops, |ops| check(durability, &ops)) {
        panic!("{e}");
    }
}

#[test]
fn strict_keeps_every_acknowledged_change_through_power_losses() {
    run(Durability::Strict);
}

#[test]
fn relaxed_loses_at_most_what_came_after_the_last_flush() {
    run(Durability::Relaxed);
}

// ---- Regressions ----

#[test]
fn a_power_loss_inside_a_multi_room_delete_keeps_a_prefix() {
    let save = |room, shape| Op::Save {
        room,
        shape,
        expect: Expect::Absent,
    };
    let ops = [
        save(0, 0),
        save(1, 0),
        save(2, 0),
        Op::Flush,
        Op::DeleteCreatedBefore {
            instant: 2,
            plus: 0,
        },
        Op::Crash { seed: 3 },
        save(3, 1),
        Op::Tick,
        Op::Crash { seed: 4 },
    ];
    for durability in [Durability::Strict, Durability::Relaxed] {
        check(durability, &ops).expect("the model holds");
    }
}

/// A [`SimFs`] whose whole-file writes (folds) fail once, after a given number succeed.
struct FailingWrites {
    inner: SimFs,
    /// `Some(n)`: n more writes succeed, the next fails, then all succeed again.
    allowed: std::sync::Mutex<Option<usize>>,
}

impl super::Fs for FailingWrites {
    fn create_private_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.inner.create_private_dir(dir)
    }
    fn read_dir(&self, dir: &std::path::Path) -> std::io::Result<Vec<super::fs::DirEntry>> {
        self.inner.read_dir(dir)
    }
    fn read(&self, path: &std::path::Path) -> std::io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn stat(&self, path: &std::path::Path) -> std::io::Result<Option<super::fs::FileStat>> {
        self.inner.stat(path)
    }
    fn write_new_synced(&self, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
        let mut allowed = self.allowed.lock().unwrap_or_else(|e| e.into_inner());
        match allowed.as_mut() {
            Some(0) => {
                *allowed = None;
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            Some(n) => *n -= 1,
            None => {}
        }
        drop(allowed);
        self.inner.write_new_synced(path, bytes)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn open_append(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<Box<dyn super::fs::AppendFile>> {
        self.inner.open_append(path)
    }
    fn try_lock(&self, path: &std::path::Path) -> std::io::Result<Option<super::fs::LockGuard>> {
        self.inner.try_lock(path)
    }
}

/// Found by `relaxed_loses_at_most_what_came_after_the_last_flush` with `SYNC_FAILURES` on (a
/// sync failing inside a background fold), made deterministic here: a fold that fails after
/// writing some room files must still record them, or a later deletion of such a room leaves
/// its file behind and the room comes back at the next start.
#[test]
fn a_room_deleted_after_a_failed_fold_stays_deleted() {
    use crate::backend::Backend;
    use crate::store::apply::Change;
    use crate::store::snapshot::{RoomEntry, Snapshot};

    let fs = Arc::new(FailingWrites {
        inner: SimFs::default(),
        allowed: std::sync::Mutex::new(None),
    });
    let open = || FileBackend::with_fs(fs.clone(), dir(), Durability::Strict);
    let mut backend = open();
    let mut rooms = backend.load().expect("an empty directory loads");
    let name = |n: &str| RoomName::new(n).expect("a valid name");
    for n in ["a", "b"] {
        let Value::Object(doc) = room_json(n, 0) else {
            unreachable!()
        };
        let entry = RoomEntry::from_doc(name(n), &doc, 1, 1);
        let put = Change::Put {
            name: name(n),
            revision: 1,
            at: 1,
            room: entry.encoded().clone(),
        };
        rooms.insert(name(n), Arc::new(entry));
        let snapshot = Snapshot {
            rooms: rooms.clone(),
        };
        backend.commit(&[put], &snapshot).expect("commit");
    }
    // The fold writes `.index.next` and `a.json`, then fails to write `b.json`.
    *fs.allowed.lock().unwrap_or_else(|e| e.into_inner()) = Some(2);
    let snapshot = Snapshot {
        rooms: rooms.clone(),
    };
    assert!(backend.close(&snapshot).is_err(), "the fold fails");
    rooms.remove("a");
    let snapshot = Snapshot {
        rooms: rooms.clone(),
    };
    let delete = Change::Delete { name: name("a") };
    backend.commit(&[delete], &snapshot).expect("commit");
    backend.close(&snapshot).expect("the disk works again");
    drop(backend);
    let loaded = open().load().expect("recovery");
    assert!(loaded.get("a").is_none(), "the deleted room came back");
    assert!(loaded.get("b").is_some());
}
