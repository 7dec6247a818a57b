//! Model-based property test of the store, for every backend: random sequences of every mutating
//! operation and clean restarts, driven through the library (`store::start`, `mutate`), each
//! answer and the rooms after it compared with a model of the protocol small enough to be
//! obviously right: a map of room name to (revision, room JSON).
//!
//! The operations: `saveRoom` and `deleteRoom` with and without `expectedRevision` (matching,
//! stale, or 0), `addRating` (duplicates included, over rooms saved with and without ratings),
//! `setProgress`, `deleteRooms` (`createdBefore`, around the rooms' instants), and a clean
//! restart (stop, then start over the same storage). After every step the published snapshot
//! must hold exactly the model's rooms, compared as the JSON text `getRoom` returns (key order
//! included), with their revisions.
//!
//! Backends: `memory` (a restart empties it), `file` on a real temporary directory, strict and
//! relaxed, and `redis` on a private redis-server, each case under a key prefix of its own (a
//! restart keeps everything). Crashes of the file backend are modelled inside the crate,
//! over the simulated file system: `src/backend/file/proptests.rs`.
//!
//! Cases: `PROPTEST_CASES` (default 256 for memory, 64 per file mode: a few seconds in all). A failure prints the
//! shrunk sequence of operations; add it to the regression tests at the end of this file.

use std::collections::BTreeMap;

use moviematch_storaged::backend::file::FileBackend;
use moviematch_storaged::backend::memory::MemoryBackend;
use moviematch_storaged::config::Durability;
use moviematch_storaged::protocol::request::ListQuery;
use moviematch_storaged::remote::RemoteStore;
use moviematch_storaged::room::{self, EpochMillis, Rating, Revision, RoomName};
use moviematch_storaged::rooms::Rooms;
use moviematch_storaged::store::apply::{Mutation, Outcome, PreparedRoom, Refusal};
use moviematch_storaged::store::{ActorThread, StoreError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

#[path = "common/redis.rs"]
mod redis_server;
use redis_server::{Opened, RedisServer};

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
    Restart,
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
    rooms: BTreeMap<String, ModelRoom>,
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
                let before = self.rooms.len();
                self.rooms.retain(|_, r| r.created_at >= created_before);
                let count = (before - self.rooms.len()) as u64;
                let mutation = Mutation::DeleteCreatedBefore { created_before };
                (mutation, Ok(Outcome::DeletedMany { count }))
            }
            Op::Restart => return None,
        })
    }

    /// What `getRoom` must return for every room: (name, revision, compact JSON).
    fn view(&self) -> Vec<(String, Revision, String)> {
        let text = |v: &Value| serde_json::to_string(v).expect("encode");
        let rooms = self.rooms.iter();
        rooms
            .map(|(n, r)| (n.clone(), r.revision, text(&r.json)))
            .collect()
    }
}

// ---- Running the store ----

/// How to open the backend under test, again and again over the same storage.
trait Fixture {
    fn open(&self) -> Opened;
    fn persistent(&self) -> bool;
}

struct Memory;

impl Fixture for Memory {
    fn open(&self) -> Opened {
        Opened::Local(Box::new(MemoryBackend))
    }
    fn persistent(&self) -> bool {
        false
    }
}

struct Files {
    root: tempfile::TempDir,
    durability: Durability,
}

impl Files {
    fn new(durability: Durability) -> Files {
        let root = tempfile::tempdir().expect("a temporary directory");
        Files { root, durability }
    }

    fn dir(&self) -> std::path::PathBuf {
        self.root.path().join("rooms")
    }
}

impl Fixture for Files {
    fn open(&self) -> Opened {
        Opened::Local(Box::new(FileBackend::new(self.dir(), self.durability)))
    }
    fn persistent(&self) -> bool {
        true
    }
}

/// A key prefix of its own on a shared private redis-server.
struct Redis {
    url: String,
    prefix: String,
}

impl Fixture for Redis {
    fn open(&self) -> Opened {
        Opened::Remote(RemoteStore::open(&self.url, &self.prefix, false).expect("a usable URL"))
    }
    fn persistent(&self) -> bool {
        true
    }
}

struct Running {
    rooms: Rooms,
    actor: Option<ActorThread>,
}

impl Running {
    fn start(fixture: &dyn Fixture, runtime: &tokio::runtime::Runtime) -> Running {
        let _inside = runtime.enter();
        let (rooms, actor) = fixture.open().start();
        Running { rooms, actor }
    }

    /// The clean stop: drop the last handle; the actor closes the backend and ends.
    fn stop(self, runtime: &tokio::runtime::Runtime) {
        if let Rooms::Remote(remote) = &self.rooms {
            runtime.block_on(remote.close());
        }
        drop(self.rooms);
        if let Some(actor) = self.actor {
            let closed = actor.join().expect("the actor does not panic");
            closed.expect("the backend closes cleanly");
        }
    }

    fn view(&self, runtime: &tokio::runtime::Runtime) -> Vec<(String, Revision, String)> {
        let listing = runtime.block_on(self.rooms.list(&ListQuery::default()));
        let text = |e: &[u8]| String::from_utf8_lossy(e).into_owned();
        listing
            .expect("the store answers")
            .rooms
            .iter()
            .map(|e| (e.name.to_string(), e.revision, text(e.encoded())))
            .collect()
    }
}

/// Runs `ops` against the store over `fixture` and against the model, step by step.
fn check(fixture: &dyn Fixture, ops: &[Op]) -> Result<(), TestCaseError> {
    let names = room_names();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut model = Model::default();
    let mut running = Running::start(fixture, &runtime);
    for (i, op) in ops.iter().enumerate() {
        match model.step(&names, op) {
            Some((mutation, want)) => {
                let got = runtime.block_on(running.rooms.mutate(mutation));
                prop_assert_eq!(got, want, "step {}: {:?}", i, op);
            }
            None => {
                running.stop(&runtime);
                if !fixture.persistent() {
                    model = Model::default();
                }
                running = Running::start(fixture, &runtime);
            }
        }
        prop_assert_eq!(
            running.view(&runtime),
            model.view(),
            "rooms after step {}: {:?}",
            i,
            op
        );
    }
    running.stop(&runtime);
    if fixture.persistent() {
        let again = Running::start(fixture, &runtime);
        prop_assert_eq!(
            again.view(&runtime),
            model.view(),
            "rooms after the last restart"
        );
        again.stop(&runtime);
    }
    Ok(())
}

fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    // No regression files: the tree has no place for them. A failure prints its shrunk input;
    // it becomes an explicit test below.
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..40)
}

fn run(make: impl Fn() -> Box<dyn Fixture>, default_cases: u32) {
    let result = runner(default_cases).run(&ops(), |ops| check(&*make(), &ops));
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn memory_backend_matches_the_model() {
    run(|| Box::new(Memory), 256);
}

#[test]
fn file_backend_strict_matches_the_model_across_restarts() {
    run(|| Box::new(Files::new(Durability::Strict)), 64);
}

#[test]
fn file_backend_relaxed_matches_the_model_across_restarts() {
    run(|| Box::new(Files::new(Durability::Relaxed)), 64);
}

#[test]
fn redis_backend_matches_the_model_across_restarts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = RedisServer::start(&dir.path().join("redis"));
    let cases = std::sync::atomic::AtomicUsize::new(0);
    run(
        || {
            let case = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::new(Redis {
                url: server.url(),
                prefix: format!("case-{case}:"),
            })
        },
        64,
    );
}

// ---- Regressions: sequences worth keeping (found by hand or by the property) ----

fn save(room: usize, shape: u8, expect: Expect) -> Op {
    Op::Save {
        room,
        shape,
        expect,
    }
}

fn rate(room: usize, media: u8, user: u8) -> Op {
    Op::Rate {
        room,
        media,
        user,
        like: true,
        timestamp: 1,
    }
}

#[test]
fn null_ratings_and_progress_are_replaced_in_place_and_survive_a_restart() {
    let ops = [
        save(1, 2, Expect::Current),
        rate(1, 0, 0),
        rate(1, 0, 0),
        save(2, 3, Expect::Absent),
        Op::Progress {
            room: 2,
            user: 0,
            progress: 3,
        },
        Op::Restart,
        rate(2, 1, 1),
    ];
    check(&Files::new(Durability::Strict), &ops).expect("the model holds");
}

#[test]
fn a_preexisting_rating_counts_and_delete_created_before_is_exclusive() {
    let ops = [
        save(0, 1, Expect::Fixed(0)),
        rate(0, 0, 0),              // u0 already rated m0 in the saved room
        rate(0, 9, 0),              // "m9": [] exists but is empty
        save(3, 4, Expect::Absent), // the same instant as room 0, with an offset
        save(4, 8, Expect::Absent),
        Op::DeleteCreatedBefore {
            instant: 0,
            plus: 0,
        },
        Op::DeleteCreatedBefore {
            instant: 1,
            plus: 1,
        },
        Op::Delete {
            room: 4,
            expect: Expect::Fixed(1),
        },
        Op::Restart,
    ];
    check(&Files::new(Durability::Relaxed), &ops).expect("the model holds");
    check(&Memory, &ops).expect("the model holds");
}
