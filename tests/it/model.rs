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

use moviematch_storaged::backend::file::FileBackend;
use moviematch_storaged::backend::memory::MemoryBackend;
use moviematch_storaged::config::Durability;
use moviematch_storaged::protocol::request::ListQuery;
use moviematch_storaged::remote::RemoteStore;
use moviematch_storaged::room::Revision;
use moviematch_storaged::rooms::{OpenRooms, Place, Rooms};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::harness::redis::RedisServer;

// ---- The operations and the model (shared with the file backend's power-loss test) ----

// The power-loss operations (Crash, Tick, Flush, FailNextSync) are the file backend's own.
use moviematch_storaged::test_support::model::*;

/// The model's mutations, and clean restarts.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![16 => mutation(), 1 => Just(Op::Restart)]
}

// ---- Running the store ----

/// How to open the backend under test, again and again over the same storage.
trait Fixture {
    fn open(&self) -> Place;
    fn persistent(&self) -> bool;
}

struct Memory;

impl Fixture for Memory {
    fn open(&self) -> Place {
        Place::Local(Box::new(MemoryBackend))
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
    fn open(&self) -> Place {
        Place::Local(Box::new(FileBackend::new(self.dir(), self.durability)))
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
    fn open(&self) -> Place {
        Place::Redis(RemoteStore::open(&self.url, &self.prefix, false).expect("a usable URL"))
    }
    fn persistent(&self) -> bool {
        true
    }
}

struct Running {
    rooms: Rooms,
    open: OpenRooms,
}

impl Running {
    fn start(fixture: &dyn Fixture, runtime: &tokio::runtime::Runtime) -> Running {
        let _inside = runtime.enter();
        let open = Rooms::start(fixture.open()).expect("the backend loads");
        let rooms = open.rooms().clone();
        Running { rooms, open }
    }

    /// The clean stop: drop the test's handle; the rooms close (the backend closes).
    fn stop(self, runtime: &tokio::runtime::Runtime) {
        drop(self.rooms);
        let closed = runtime.block_on(self.open.close());
        closed.expect("the backend closes cleanly");
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
                assert!(
                    matches!(op, Op::Restart),
                    "only restarts are generated here"
                );
                running.stop(&runtime);
                if !fixture.persistent() {
                    model = Model::default();
                }
                running = Running::start(fixture, &runtime);
            }
        }
        // Torn states only matter under power loss (the file backend's own test).
        model.partial.clear();
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
