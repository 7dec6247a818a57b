//! The backend conformance suite (STYLE.md point 4): one set of tests that every backend must
//! pass, driven through [`Rooms`] (`mutate`, `get`, `list`, `flush`,
//! `reload`), never the socket. A backend joins with one `conformance_suite!` line (see "The
//! backends" below). Every test ends by restarting the store and checking that each room came
//! back exactly as it was; a backend that keeps nothing ([`Fixture::persistent`]) skips that step.
//!
//! The last section checks what only the `file` backend promises (PROTOCOL.md section 5): after a
//! clean stop the room files alone hold every room's latest state and the journal is folded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use moviematch_storaged::backend::file::{names, FileBackend};
use moviematch_storaged::backend::memory::MemoryBackend;
use moviematch_storaged::backend::Backend;
use moviematch_storaged::config::Durability;
use moviematch_storaged::protocol::request::ListQuery;
use moviematch_storaged::remote::RemoteStore;
use moviematch_storaged::room::change::{Mutation, Outcome, Refusal};
use moviematch_storaged::room::prepare::PreparedRoom;
use moviematch_storaged::room::Rating::{self, Dislike, Like};
use moviematch_storaged::room::StoreError;
use moviematch_storaged::room::{self, now_millis, EpochMillis, Revision, RoomName};
use moviematch_storaged::rooms::{OpenRooms, Place, Rooms};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::harness::redis::RedisServer;

// ---- Fixtures: how the suite opens a backend ----

/// Opens a backend for one test. `open` is called again once the previous store has stopped;
/// a persistent fixture must then hand out a backend over the same storage.
trait Fixture {
    fn open(&self) -> Place;
    /// Whether rooms survive a clean stop and a new `open`.
    fn persistent(&self) -> bool;
}

/// A backend that keeps nothing: every `open` starts empty.
struct Volatile<F>(F);

fn volatile<F: Fn() -> Box<dyn Backend>>(make: F) -> Volatile<F> {
    Volatile(make)
}

impl<F: Fn() -> Box<dyn Backend>> Fixture for Volatile<F> {
    fn open(&self) -> Place {
        (self.0)().into()
    }
    fn persistent(&self) -> bool {
        false
    }
}

/// A backend over a place unique to the test, `<temporary directory>/rooms`, which the backend
/// creates itself (a backend that keeps rooms elsewhere can use it as a key prefix).
struct Stored<F> {
    root: TempDir,
    make: F,
}

fn stored<F: Fn(&Path) -> Place>(make: F) -> Stored<F> {
    let root = tempfile::tempdir().expect("create a temporary directory");
    Stored { root, make }
}

fn stored_in<F: Fn(&Path) -> Place>(root: TempDir, make: F) -> Stored<F> {
    Stored { root, make }
}

impl<F> Stored<F> {
    fn dir(&self) -> PathBuf {
        self.root.path().join("rooms")
    }
}

impl<F: Fn(&Path) -> Place> Fixture for Stored<F> {
    fn open(&self) -> Place {
        (self.make)(&self.dir())
    }
    fn persistent(&self) -> bool {
        true
    }
}

fn file_backend(durability: Durability) -> Stored<impl Fn(&Path) -> Place> {
    stored(move |dir| Place::Local(Box::new(FileBackend::new(dir, durability))))
}

/// Redis: a private `redis-server` per test; the key prefix is the test's directory, so a
/// restart (a new store over the same server and prefix) finds the same rooms.
fn redis_backend() -> (RedisServer, Stored<impl Fn(&Path) -> Place>) {
    let root = tempfile::tempdir().expect("create a temporary directory");
    let server = RedisServer::start(&root.path().join("redis"));
    let url = server.url();
    let fixture = stored_in(root, move |dir| {
        let prefix = format!("{}:", dir.display());
        Place::Redis(RemoteStore::open(&url, &prefix, false).expect("a usable redisUrl"))
    });
    (server, fixture)
}

/// A fixture alone, or with a server it needs kept alive while the test runs.
trait WithFixture {
    type F: Fixture;
    fn fixture(&self) -> &Self::F;
}

impl<F: Fixture> WithFixture for F {
    type F = F;
    fn fixture(&self) -> &F {
        self
    }
}

impl<F: Fixture> WithFixture for (RedisServer, F) {
    type F = F;
    fn fixture(&self) -> &F {
        &self.1
    }
}

// ---- The backends: one line each ----

/// Expands to one `#[tokio::test]` per conformance test, each with a fresh fixture.
macro_rules! conformance_suite {
    (@tests $fixture:expr; $($test:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $test() {
            let fixture = $fixture;
            super::$test(fixture.fixture()).await;
        }
    )+};
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;
            conformance_suite!(@tests $fixture;
                round_trip_keeps_the_room_exactly,
                revisions_count_changes,
                expected_revision_guards_saves_and_deletes,
                operations_on_a_missing_room_are_not_found,
                add_rating_creates_and_appends_once_per_user_and_media,
                set_progress_creates_and_overwrites,
                delete_reports_whether_it_deleted,
                delete_created_before_is_exclusive,
                expire_removes_rooms_idle_since,
                concurrent_ratings_are_never_lost,
                everything_survives_a_restart,
                hostile_names_round_trip,
                submitted_mutations_are_answered_in_order,
                restore_takes_rooms_in_as_they_are,
            );
        }
    };
}

conformance_suite!(memory, volatile(|| Box::new(MemoryBackend)));
conformance_suite!(file_strict, file_backend(Durability::Strict));
conformance_suite!(file_relaxed, file_backend(Durability::Relaxed));
conformance_suite!(redis, redis_backend());

// ---- A running store, and the words the tests are written in ----

/// `mutation => answer, ...`: applies each mutation in turn and checks its answer.
macro_rules! steps {
    ($running:expr; $($mutation:expr => $answer:expr),+ $(,)?) => {$({
        let mutation = $mutation;
        let step = format!("{mutation:?}");
        assert_eq!($running.rooms.mutate(mutation).await, $answer, "{step}");
    })+};
}

struct Running {
    rooms: Rooms,
    open: OpenRooms,
}

fn start(fixture: &impl Fixture) -> Running {
    let open = Rooms::start(fixture.open()).expect("the backend loads");
    let rooms = open.rooms().clone();
    Running { rooms, open }
}

/// What a restart must keep of a room: name, JSON, revision, created and last changed (ms).
type Kept = (String, String, Revision, EpochMillis, EpochMillis);

impl Running {
    async fn revision(&self, name: &str) -> Option<Revision> {
        let entry = self.rooms.get(name).await.expect("the store answers");
        entry.map(|e| e.revision)
    }

    /// Every room, in name order.
    async fn rooms(&self) -> Vec<Kept> {
        let every = ListQuery::default();
        let listing = self.rooms.list(&every).await.expect("the store answers");
        let kept = listing.rooms.iter().map(|e| {
            let encoded = String::from_utf8_lossy(e.encoded()).into_owned();
            let name = e.name.as_str().to_owned();
            (name, encoded, e.revision, e.facts.created_at, e.updated_at)
        });
        kept.collect()
    }

    /// The room as `getRoom` returns it, compared as text: key order and unknown fields count.
    async fn assert_room(&self, name: &str, expected: &Value) {
        let entry = self.rooms.get(name).await.expect("the store answers");
        let entry = entry.unwrap_or_else(|| panic!("no room {name:?}"));
        let expected = serde_json::to_string(expected).expect("encode");
        assert_eq!(String::from_utf8_lossy(entry.encoded()), expected);
    }

    /// The clean stop: drop the test's handle, then close the rooms (the backend closes).
    async fn stop(self) {
        let Running { rooms, open } = self;
        drop(rooms);
        open.close().await.expect("the backend closes cleanly");
    }

    /// Stops cleanly and, when the backend persists, starts again over the same storage and
    /// checks that every room came back exactly as it was (revision and times included).
    async fn restart(self, fixture: &impl Fixture) -> Option<Running> {
        let kept = self.rooms().await;
        self.stop().await;
        let s = fixture.persistent().then(|| start(fixture))?;
        assert_eq!(
            s.rooms().await,
            kept,
            "a restart keeps every room as it was"
        );
        Some(s)
    }

    /// Ends a test: the restart check, then the clean stop.
    async fn finish(self, fixture: &impl Fixture) {
        if let Some(s) = self.restart(fixture).await {
            s.stop().await;
        }
    }
}

const CREATED: &str = "2025-10-25T20:00:00.000Z";
const TS: u64 = 1_729_890_000_000;

fn room(name: &str) -> Value {
    json!({
        "roomName": name, "sort": "random", "createdAt": CREATED,
        "creatorPlexUserId": "12345", "creatorPlexUsername": "john_doe"
    })
}

fn name(s: &str) -> RoomName {
    RoomName::new(s).expect("a valid room name")
}

fn save(room: &Value) -> Mutation {
    save_if(room, None)
}

/// `saveRoom` with `expectedRevision`.
fn save_if(room: &Value, expected_revision: Option<Revision>) -> Mutation {
    let room = Box::new(PreparedRoom::new(
        room::validate(room.clone()).expect("a valid room"),
    ));
    Mutation::Save {
        room,
        expected_revision,
    }
}

fn rate(room: &str, media: &str, user: &str, rating: Rating) -> Mutation {
    Mutation::AddRating {
        name: name(room),
        media_id: media.into(),
        user_name: user.into(),
        rating,
        timestamp: TS,
    }
}

fn progress(room: &str, user: &str, progress: u64) -> Mutation {
    Mutation::SetProgress {
        name: name(room),
        user_name: user.into(),
        progress,
    }
}

fn delete(room: &str) -> Mutation {
    delete_if(room, None)
}

/// `deleteRoom` with `expectedRevision`.
fn delete_if(room: &str, expected_revision: Option<Revision>) -> Mutation {
    Mutation::Delete {
        name: name(room),
        expected_revision,
    }
}

type Answer = Result<Outcome, StoreError>;

fn saved(revision: Revision) -> Answer {
    Ok(Outcome::Saved { revision })
}
fn rated(revision: Revision, added: bool) -> Answer {
    Ok(Outcome::Rated { revision, added })
}
fn progressed(revision: Revision) -> Answer {
    Ok(Outcome::Progressed { revision })
}
fn deleted(deleted: bool) -> Answer {
    Ok(Outcome::Deleted { deleted })
}
fn deleted_many(count: u64) -> Answer {
    Ok(Outcome::DeletedMany { count })
}
fn conflict(current: Revision) -> Answer {
    Err(StoreError::Refused(Refusal::Conflict { current }))
}
fn not_found(room: &str) -> Answer {
    Err(StoreError::Refused(Refusal::NotFound { name: name(room) }))
}

// ---- The conformance tests ----

async fn round_trip_keeps_the_room_exactly(fx: &impl Fixture) {
    // Unknown fields, a numeric Plex id, an offset timestamp and an unusual key order.
    let text = r#"{"zeta":{"b":1,"a":[true,null,1.5]},"sort":"rating","roomName":"movie-night",
        "creatorPlexUserId":13692262,"password":"secret","createdAt":"2025-10-25T22:00:00+02:00",
        "creatorPlexUsername":"john_doe","options":["EndOnFirstMatch"],
        "filters":[{"key":"genre","operator":"=","value":["Action","Comedy"]}],
        "ratings":{"plex://movie/1":[["jane","dislike",1729890000000]]},
        "userProgress":{"jane":3},"roomType":"party","big":12345678901234567890}"#;
    let sent: Value = serde_json::from_str(text).expect("valid JSON");
    let s = start(fx);
    assert_eq!(s.revision("movie-night").await, None);
    steps!(s; save(&sent) => saved(1));
    s.assert_room("movie-night", &sent).await;
    s.finish(fx).await;
}

async fn revisions_count_changes(fx: &impl Fixture) {
    let s = start(fx);
    steps!(s;
        save(&room("r")) => saved(1),
        save(&room("r")) => saved(2),
        progress("r", "john", 5) => progressed(3),
        progress("r", "john", 5) => progressed(4), // the same value is still a change
        rate("r", "m1", "john", Like) => rated(5, true),
        rate("r", "m1", "john", Dislike) => rated(5, false),
        rate("r", "m1", "jane", Like) => rated(6, true),
        rate("r", "m2", "john", Like) => rated(7, true),
        delete("r") => deleted(true),
        save(&room("r")) => saved(1), // a new room
        progress("r", "john", 1) => progressed(2),
    );
    if let Some(s) = s.restart(fx).await {
        steps!(s; rate("r", "m1", "john", Like) => rated(3, true));
        s.stop().await;
    }
}

async fn expected_revision_guards_saves_and_deletes(fx: &impl Fixture) {
    let mut changed = room("r");
    changed["sort"] = json!("rating");
    let s = start(fx);
    steps!(s;
        save_if(&room("r"), Some(1)) => conflict(0), // 0: the room does not exist
        save_if(&room("r"), Some(0)) => saved(1),
        save_if(&room("r"), Some(0)) => conflict(1),
        save_if(&changed, Some(2)) => conflict(1),
    );
    s.assert_room("r", &room("r")).await;
    steps!(s;
        save_if(&changed, Some(1)) => saved(2),
        rate("r", "m", "john", Like) => rated(3, true),
        delete_if("r", Some(2)) => conflict(3),
        delete_if("r", Some(0)) => conflict(3),
    );
    changed["ratings"] = json!({ "m": [["john", "like", TS]] });
    s.assert_room("r", &changed).await;
    steps!(s;
        delete_if("r", Some(3)) => deleted(true),
        delete_if("r", Some(1)) => conflict(0),
        delete_if("r", Some(0)) => deleted(false),
        save_if(&room("r"), Some(0)) => saved(1),
    );
    if let Some(s) = s.restart(fx).await {
        steps!(s;
            save_if(&room("r"), Some(0)) => conflict(1),
            save_if(&room("r"), Some(1)) => saved(2),
        );
        s.stop().await;
    }
}

async fn operations_on_a_missing_room_are_not_found(fx: &impl Fixture) {
    let s = start(fx);
    steps!(s;
        rate("ghost", "m", "john", Like) => not_found("ghost"),
        progress("ghost", "john", 1) => not_found("ghost"),
        save(&room("Ghost")) => saved(1), // names are case-sensitive: another room
        rate("ghost", "m", "john", Like) => not_found("ghost"),
        progress("ghost", "john", 1) => not_found("ghost"),
    );
    assert_eq!(s.rooms().await.len(), 1, "nothing was created");
    s.assert_room("Ghost", &room("Ghost")).await;
    s.finish(fx).await;
}

async fn add_rating_creates_and_appends_once_per_user_and_media(fx: &impl Fixture) {
    let movie = "plex://movie/5d776b59ad5437001f79c6f8";
    let mut fresh = room("fresh");
    let s = start(fx);
    steps!(s;
        save(&fresh) => saved(1),
        rate("fresh", movie, "john", Like) => rated(2, true),
        rate("fresh", movie, "john", Dislike) => rated(2, false),
        rate("fresh", movie, "jane", Dislike) => rated(3, true),
    );
    fresh["ratings"] = json!({ movie: [["john", "like", TS], ["jane", "dislike", TS]] });
    s.assert_room("fresh", &fresh).await;

    // Ratings saved with the room count as that user's rating; new ones are appended.
    let mut with = room("with");
    with["ratings"] = json!({ "m": [["jane", "like", 1]] });
    with["roomType"] = json!("a field from a newer MovieMatch");
    steps!(s;
        save(&with) => saved(1),
        rate("with", "m", "jane", Dislike) => rated(1, false),
        rate("with", "m", "john", Like) => rated(2, true),
        rate("with", "n", "jane", Like) => rated(3, true),
    );
    let entries = json!([["jane", "like", 1], ["john", "like", TS]]);
    with["ratings"] = json!({ "m": entries, "n": [["jane", "like", TS]] });
    s.assert_room("with", &with).await;
    s.finish(fx).await;
}

async fn set_progress_creates_and_overwrites(fx: &impl Fixture) {
    let mut r = room("r");
    let s = start(fx);
    steps!(s; save(&r) => saved(1), progress("r", "john", 5) => progressed(2));
    r["userProgress"] = json!({ "john": 5 });
    s.assert_room("r", &r).await;
    steps!(s;
        progress("r", "jane", 0) => progressed(3),
        progress("r", "john", 7) => progressed(4),
    );
    r["userProgress"] = json!({ "john": 7, "jane": 0 });
    s.assert_room("r", &r).await;
    s.finish(fx).await;
}

async fn delete_reports_whether_it_deleted(fx: &impl Fixture) {
    let s = start(fx);
    steps!(s;
        save(&room("a")) => saved(1),
        save(&room("b")) => saved(1),
        delete("a") => deleted(true),
        delete("a") => deleted(false),
        delete("never") => deleted(false),
        rate("a", "m", "john", Like) => not_found("a"),
    );
    assert_eq!(s.revision("a").await, None);
    s.assert_room("b", &room("b")).await;
    s.finish(fx).await;
}

async fn delete_created_before_is_exclusive(fx: &impl Fixture) {
    let created = |name: &str, at: &str| {
        let mut r = room(name);
        r["createdAt"] = json!(at);
        save(&r)
    };
    let instant = room::parse_timestamp(CREATED).expect("a timestamp");
    let before = |created_before| Mutation::DeleteCreatedBefore { created_before };
    let s = start(fx);
    steps!(s;
        created("early", "2025-10-25T19:59:59.999Z") => saved(1),
        created("exact", "2025-10-25T22:00:00+02:00") => saved(1), // the instant of CREATED
        created("late", "2025-10-25T20:00:00.001Z") => saved(1),
        before(instant) => deleted_many(1),
        before(instant) => deleted_many(0),
    );
    assert_eq!(s.revision("early").await, None);
    steps!(s; before(instant + 1) => deleted_many(1));
    assert_eq!(s.revision("exact").await, None);
    assert_eq!(s.revision("late").await, Some(1));
    s.finish(fx).await;
}

async fn expire_removes_rooms_idle_since(fx: &impl Fixture) {
    let expire = |idle_since| Mutation::Expire { idle_since };
    let s = start(fx);
    steps!(s; save(&room("idle")) => saved(1), save(&room("rated")) => saved(1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let idle_since = now_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    steps!(s;
        save(&room("fresh")) => saved(1),
        rate("rated", "m", "john", Like) => rated(2, true), // a rating is a use
        expire(idle_since) => deleted_many(1),
        expire(idle_since) => deleted_many(0),
    );
    assert_eq!(s.revision("idle").await, None);
    // The restart check compares when each room last changed: a restart must not make a room
    // look recently used (nor older than it is).
    if let Some(s) = s.restart(fx).await {
        steps!(s; expire(idle_since) => deleted_many(0));
        s.stop().await;
    }
}

async fn concurrent_ratings_are_never_lost(fx: &impl Fixture) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 25;
    let s = start(fx);
    steps!(s; save(&room("party")) => saved(1));
    // Task t rates m1..m24 as user t; every task also races the others to rate m0 as user 0.
    let rate_as = |t: usize| {
        let store = s.rooms.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..PER_TASK {
                let user = if i == 0 { 0 } else { t };
                let rating = rate("party", &format!("m{i}"), &format!("u{user}"), Like);
                answers.push(store.mutate(rating).await);
            }
            answers
        })
    };
    let tasks: Vec<_> = (0..TASKS).map(rate_as).collect();
    let mut revisions = Vec::new();
    for task in tasks {
        for answer in task.await.expect("a rating task") {
            let Ok(Outcome::Rated { revision, added }) = answer else {
                panic!("a rating failed: {answer:?}");
            };
            revisions.extend(added.then_some(revision));
        }
    }
    revisions.sort_unstable();
    let added = (TASKS * (PER_TASK - 1) + 1) as Revision;
    let expected: Vec<Revision> = (2..=1 + added).collect();
    assert_eq!(
        revisions, expected,
        "each added rating has its own revision"
    );
    assert_eq!(s.revision("party").await, Some(1 + added));
    let party = s.rooms.get("party").await.expect("read").expect("the room");
    let ratings = party.to_value()["ratings"].clone();
    let count = |e: &Value| e.as_array().map_or(0, Vec::len) as Revision;
    let counts = ratings
        .as_object()
        .expect("a ratings map")
        .values()
        .map(count);
    assert_eq!(counts.sum::<Revision>(), added, "no rating lost or doubled");
    assert_eq!(count(&ratings["m0"]), 1);
    s.finish(fx).await;
}

async fn everything_survives_a_restart(fx: &impl Fixture) {
    let mut a = room("a");
    a["roomType"] = json!({ "future": true });
    let s = start(fx);
    steps!(s;
        save(&a) => saved(1),
        save(&room("b")) => saved(1),
        save(&room("c")) => saved(1),
        save(&room("d")) => saved(1),
        rate("a", "m", "john", Like) => rated(2, true),
        progress("a", "john", 4) => progressed(3),
        rate("b", "m", "jane", Dislike) => rated(2, true),
        delete("c") => deleted(true),
        delete("d") => deleted(true),
        save(&room("d")) => saved(1),
    );
    let kept = s.rooms().await;
    assert_eq!(s.rooms.flush().await, Ok(()));
    let reloaded = s.rooms.reload().await;
    assert_eq!(reloaded, Ok(0), "nothing was edited outside the store");
    assert_eq!(s.rooms().await, kept);
    if let Some(s) = s.restart(fx).await {
        let s = s.restart(fx).await.expect("persistent"); // a second restart changes nothing
        steps!(s;
            rate("a", "m", "john", Like) => rated(3, false),
            progress("a", "john", 5) => progressed(4),
        );
        s.stop().await;
    }
}

/// Valid room names that are hostile to a naive file layout, each at most 255 bytes.
fn hostile_names() -> Vec<String> {
    let odd = "../x|a/b|..|.|.index|.journal-1|~=abc|a%2Fb|~a%2Fb|x.json|a\\b| spaced |Room|room|-";
    let mut names: Vec<String> = odd.split('|').map(String::from).collect();
    names.extend(["x".repeat(255), "a".repeat(250), "a".repeat(251)]);
    names.push("🎬 movie night 🍿".to_owned());
    names.push(format!("{}abc", "🎬".repeat(63)));
    names.push(format!("{}/", "é".repeat(127)));
    assert!(names.iter().all(|n| n.len() <= 255));
    names
}

async fn hostile_names_round_trip(fx: &impl Fixture) {
    let names = hostile_names();
    let s = start(fx);
    for n in &names {
        steps!(s;
            save(&room(n)) => saved(1),
            rate(n, "m", n, Like) => rated(2, true),
            progress(n, n, 1) => progressed(3),
        );
    }
    steps!(s; delete("../x") => deleted(true));
    let mut expected = room("");
    for n in &names[1..] {
        expected["roomName"] = json!(n);
        expected["ratings"] = json!({ "m": [[n, "like", TS]] });
        expected["userProgress"] = json!({ n.as_str(): 1 });
        s.assert_room(n, &expected).await;
    }
    assert_eq!(s.rooms().await.len(), names.len() - 1);
    if let Some(s) = s.restart(fx).await {
        steps!(s; rate("a/b", "m", "a/b", Like) => rated(3, false));
        s.stop().await;
    }
}

/// `submit` queues a mutation where the rooms pipeline, and applies it at once where they do
/// not: either way the answers come in submission order, each as `mutate` would give it.
async fn submitted_mutations_are_answered_in_order(fx: &impl Fixture) {
    let s = start(fx);
    let first = s.rooms.submit(save(&room("a"))).await;
    let second = s.rooms.submit(rate("a", "m", "john", Like)).await;
    let third = s.rooms.submit(delete_if("a", Some(1))).await;
    assert_eq!(first.await.expect("an answer"), saved(1));
    assert_eq!(second.await.expect("an answer"), rated(2, true));
    assert_eq!(third.await.expect("an answer"), conflict(2));
    s.finish(fx).await;
}

/// `restore` (what `migrate` writes with) puts rooms in exactly as they were: JSON, revision,
/// created and last-changed times, replacing a room of the same name; later changes continue
/// from the restored revision, and a restart keeps them.
async fn restore_takes_rooms_in_as_they_are(fx: &impl Fixture) {
    let s = start(fx);
    steps!(s;
        save(&room("a")) => saved(1),
        rate("a", "m", "john", Like) => rated(2, true),
        save(&room("b")) => saved(1),
        progress("b", "jane", 7) => progressed(2),
        progress("b", "jane", 8) => progressed(3),
    );
    let every = ListQuery::default();
    let captured = s.rooms.list(&every).await.expect("the store answers").rooms;
    let kept = s.rooms().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    steps!(s;
        rate("a", "m2", "john", Dislike) => rated(3, true),
        delete("b") => deleted(true),
        save(&room("c")) => saved(1),
    );
    let mut calls = Vec::new();
    let restored = s
        .rooms
        .restore(&captured, &mut |done| calls.push(done))
        .await;
    assert_eq!(restored, Ok(()));
    assert_eq!(
        calls.last(),
        Some(&captured.len()),
        "progress reaches every room"
    );
    let now = s.rooms().await;
    assert_eq!(
        &now[..2],
        &kept[..],
        "a and b are back exactly as they were"
    );
    assert_eq!(now.len(), 3, "c, not among the restored rooms, is kept");
    steps!(s;
        rate("a", "m", "john", Like) => rated(2, false),
        rate("a", "m2", "john", Dislike) => rated(3, true),
        progress("b", "jane", 9) => progressed(4),
    );
    s.finish(fx).await;
}

// ---- The file backend's own promise: after a clean stop, the room files are the rooms ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_strict_clean_stop_leaves_every_room_in_its_file() {
    clean_stop_leaves_every_room_in_its_file(Durability::Strict).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_relaxed_clean_stop_leaves_every_room_in_its_file() {
    clean_stop_leaves_every_room_in_its_file(Durability::Relaxed).await;
}

async fn clean_stop_leaves_every_room_in_its_file(durability: Durability) {
    let fx = file_backend(durability);
    let s = start(&fx);
    for n in ["movie-night", "a/b", "gone", &"x".repeat(255)] {
        steps!(s; save(&room(n)) => saved(1), rate(n, "m", "u", Like) => rated(2, true));
    }
    steps!(s;
        progress("movie-night", "john", 9) => progressed(3),
        delete("gone") => deleted(true),
    );
    let every = ListQuery::default();
    let latest = s.rooms.list(&every).await.expect("the store answers").rooms;
    s.stop().await;

    let dir = fx.dir();
    let plain = dir.join("movie-night.json");
    assert!(plain.is_file(), "a plain name is its own file name");
    for entry in &latest {
        let path = dir.join(names::file_name(&entry.name));
        let shown = path.display();
        let text = std::fs::read_to_string(&path).expect("the room file");
        assert!(text.starts_with("{\n"), "{shown} is pretty-printed");
        let on_disk: Value = serde_json::from_str(&text).expect("a room file is JSON");
        let on_disk = serde_json::to_string(&on_disk).expect("encode");
        let latest = String::from_utf8_lossy(entry.encoded());
        assert_eq!(on_disk, latest, "{shown} holds the latest state");
    }
    let mut room_files = 0;
    for entry in std::fs::read_dir(&dir).expect("list the storage directory") {
        let entry = entry.expect("a directory entry");
        let file = entry.file_name().to_string_lossy().into_owned();
        let len = entry.metadata().expect("stat").len();
        room_files += usize::from(!file.starts_with('.'));
        let leftover = file.starts_with(".tmp-") || file == ".index.next";
        assert!(!leftover, "{file} is left over");
        if file.starts_with(".journal-") {
            assert_eq!(len, 0, "{file}: the journal is folded into the room files");
        }
    }
    let per_room = latest.len();
    assert_eq!(room_files, per_room, "one file per room, none for \"gone\"");
}
