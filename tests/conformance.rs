//! The backend conformance suite (STYLE.md point 4): one set of tests that every backend must
//! pass, driven through the store's own API (`store::start`, `mutate`, `snapshot`, `flush`,
//! `reload`), never the socket. A backend joins with one `conformance_suite!` line (see "The
//! backends" below). Tests whose contract needs persistence skip only their restart step when the
//! backend keeps nothing ([`Fixture::persistent`]).
//!
//! The last section checks what only the `file` backend promises (PROTOCOL.md section 5): after a
//! clean stop the room files alone hold every room, and hand edits raise the revision.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use moviematch_storaged::backend::file::{names, FileBackend};
use moviematch_storaged::backend::memory::MemoryBackend;
use moviematch_storaged::backend::Backend;
use moviematch_storaged::config::Durability;
use moviematch_storaged::room::Rating::{self, Dislike, Like};
use moviematch_storaged::room::{self, now_millis, EpochMillis, Revision, RoomName};
use moviematch_storaged::store::apply::{Mutation, Outcome, Refusal};
use moviematch_storaged::store::snapshot::{RoomEntry, Snapshot};
use moviematch_storaged::store::{self, ActorThread, StoreError, StoreHandle};
use serde_json::{json, Value};
use tempfile::TempDir;

// ---- Fixtures: how the suite opens a backend ----

/// Opens a backend for one test. `open` is called again once the previous store has stopped;
/// a persistent fixture must then hand out a backend over the same storage.
trait Fixture {
    fn open(&self) -> Box<dyn Backend>;
    /// Whether rooms survive a clean stop and a new `open`.
    fn persistent(&self) -> bool;
}

/// A backend that keeps nothing: every `open` starts empty.
struct Volatile<F>(F);

fn volatile<F: Fn() -> Box<dyn Backend>>(make: F) -> Volatile<F> {
    Volatile(make)
}

impl<F: Fn() -> Box<dyn Backend>> Fixture for Volatile<F> {
    fn open(&self) -> Box<dyn Backend> {
        (self.0)()
    }
    fn persistent(&self) -> bool {
        false
    }
}

/// A backend over a directory that does not exist yet (so the backend creates it), inside a
/// temporary directory that lives as long as the fixture.
struct InTempDir<F> {
    root: TempDir,
    make: F,
}

fn in_temp_dir<F: Fn(&Path) -> Box<dyn Backend>>(make: F) -> InTempDir<F> {
    let root = tempfile::tempdir().expect("create a temporary directory");
    InTempDir { root, make }
}

impl<F> InTempDir<F> {
    fn dir(&self) -> PathBuf {
        self.root.path().join("rooms")
    }
}

impl<F: Fn(&Path) -> Box<dyn Backend>> Fixture for InTempDir<F> {
    fn open(&self) -> Box<dyn Backend> {
        (self.make)(&self.dir())
    }
    fn persistent(&self) -> bool {
        true
    }
}

fn file_backend(durability: Durability) -> InTempDir<impl Fn(&Path) -> Box<dyn Backend>> {
    in_temp_dir(move |dir| Box::new(FileBackend::new(dir, durability)))
}

// ---- The backends: one line each ----

/// Expands to one `#[tokio::test]` per conformance test, each with a fresh fixture.
macro_rules! conformance_suite {
    (@tests $fixture:expr; $($test:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $test() {
            let fixture = $fixture;
            super::$test(&fixture).await;
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
            );
        }
    };
}

conformance_suite!(memory, volatile(|| Box::new(MemoryBackend)));
conformance_suite!(file_strict, file_backend(Durability::Strict));
conformance_suite!(file_relaxed, file_backend(Durability::Relaxed));

// ---- A running store, and the words the tests are written in ----

struct Running {
    store: StoreHandle,
    actor: ActorThread,
}

fn start(fixture: &impl Fixture) -> Running {
    let (store, actor) = store::start(fixture.open()).expect("the backend loads");
    Running { store, actor }
}

impl Running {
    async fn mutate(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        self.store.mutate(mutation).await
    }

    fn get(&self, name: &str) -> Option<Arc<RoomEntry>> {
        self.store.snapshot().get(name).cloned()
    }

    fn revision(&self, name: &str) -> Option<Revision> {
        self.get(name).map(|e| e.revision)
    }

    /// The room as `getRoom` returns it, as bytes: key order and unknown fields count.
    #[track_caller]
    fn assert_room(&self, name: &str, expected: &Value) {
        let entry = self
            .get(name)
            .unwrap_or_else(|| panic!("room {name:?} exists"));
        let expected = serde_json::to_vec(expected).expect("encode");
        assert_eq!(
            String::from_utf8_lossy(&entry.encoded),
            String::from_utf8_lossy(&expected),
            "room {name:?}"
        );
    }

    /// The clean stop: drop the last handle, then join the actor, which closes the backend.
    async fn stop(self) {
        let Running { store, actor } = self;
        drop(store);
        let closed = tokio::task::spawn_blocking(move || actor.join());
        let closed = closed.await.expect("join task");
        closed
            .expect("the actor does not panic")
            .expect("the backend closes cleanly");
    }

    /// Stops cleanly; when the backend persists, starts again over the same storage.
    async fn restart(self, fixture: &impl Fixture) -> Option<Running> {
        self.stop().await;
        fixture.persistent().then(|| start(fixture))
    }
}

/// Everything a restart must keep, per room, in name order.
fn state(snapshot: &Snapshot) -> Vec<(String, String, Revision, EpochMillis, EpochMillis)> {
    let rooms = snapshot.rooms.values();
    rooms
        .map(|e| {
            let encoded = String::from_utf8_lossy(&e.encoded).into_owned();
            let name = e.name.as_str().to_owned();
            (name, encoded, e.revision, e.created_at, e.updated_at)
        })
        .collect()
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
    save_expecting(room, None)
}

fn save_expecting(room: &Value, expected_revision: Option<Revision>) -> Mutation {
    let room = room::validate(room.clone()).expect("a valid room");
    Mutation::Save {
        room: Box::new(room),
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
    let (name, user_name) = (name(room), user.into());
    Mutation::SetProgress {
        name,
        user_name,
        progress,
    }
}

fn delete(room: &str, expected_revision: Option<Revision>) -> Mutation {
    let name = name(room);
    Mutation::Delete {
        name,
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
    assert!(s.get("movie-night").is_none());
    assert_eq!(s.mutate(save(&sent)).await, saved(1));
    s.assert_room("movie-night", &sent);
    assert_eq!(s.revision("movie-night"), Some(1));
    if let Some(s) = s.restart(fx).await {
        s.assert_room("movie-night", &sent);
        assert_eq!(s.revision("movie-night"), Some(1));
        s.stop().await;
    }
}

async fn revisions_count_changes(fx: &impl Fixture) {
    let s = start(fx);
    assert_eq!(s.mutate(save(&room("r"))).await, saved(1));
    assert_eq!(s.mutate(save(&room("r"))).await, saved(2));
    assert_eq!(s.mutate(progress("r", "john", 5)).await, progressed(3));
    assert_eq!(s.mutate(progress("r", "john", 5)).await, progressed(4));
    assert_eq!(
        s.mutate(rate("r", "m1", "john", Like)).await,
        rated(5, true)
    );
    assert_eq!(
        s.mutate(rate("r", "m1", "john", Dislike)).await,
        rated(5, false)
    );
    assert_eq!(
        s.mutate(rate("r", "m1", "jane", Like)).await,
        rated(6, true)
    );
    assert_eq!(
        s.mutate(rate("r", "m2", "john", Like)).await,
        rated(7, true)
    );
    assert_eq!(s.revision("r"), Some(7));
    assert_eq!(s.mutate(delete("r", None)).await, deleted(true));
    assert_eq!(s.mutate(save(&room("r"))).await, saved(1), "recreated");
    assert_eq!(s.mutate(progress("r", "john", 1)).await, progressed(2));
    if let Some(s) = s.restart(fx).await {
        assert_eq!(s.revision("r"), Some(2));
        assert_eq!(
            s.mutate(rate("r", "m1", "john", Like)).await,
            rated(3, true)
        );
        s.stop().await;
    }
}

async fn expected_revision_guards_saves_and_deletes(fx: &impl Fixture) {
    let s = start(fx);
    assert_eq!(
        s.mutate(save_expecting(&room("r"), Some(1))).await,
        conflict(0)
    );
    assert!(s.get("r").is_none(), "a refused save creates nothing");
    assert_eq!(
        s.mutate(save_expecting(&room("r"), Some(0))).await,
        saved(1)
    );
    assert_eq!(
        s.mutate(save_expecting(&room("r"), Some(0))).await,
        conflict(1)
    );
    let mut changed = room("r");
    changed["sort"] = json!("rating");
    assert_eq!(
        s.mutate(save_expecting(&changed, Some(2))).await,
        conflict(1)
    );
    s.assert_room("r", &room("r"));
    assert_eq!(s.mutate(save_expecting(&changed, Some(1))).await, saved(2));
    s.assert_room("r", &changed);
    assert_eq!(s.mutate(rate("r", "m", "john", Like)).await, rated(3, true));
    assert_eq!(s.mutate(delete("r", Some(2))).await, conflict(3));
    assert_eq!(s.mutate(delete("r", Some(0))).await, conflict(3));
    assert_eq!(s.revision("r"), Some(3), "a refused delete deletes nothing");
    assert_eq!(s.mutate(delete("r", Some(3))).await, deleted(true));
    assert_eq!(s.mutate(delete("r", Some(1))).await, conflict(0));
    assert_eq!(s.mutate(delete("r", Some(0))).await, deleted(false));
    assert_eq!(
        s.mutate(save_expecting(&room("r"), Some(0))).await,
        saved(1)
    );
    if let Some(s) = s.restart(fx).await {
        assert_eq!(
            s.mutate(save_expecting(&room("r"), Some(0))).await,
            conflict(1)
        );
        assert_eq!(s.mutate(save_expecting(&changed, Some(1))).await, saved(2));
        s.stop().await;
    }
}

async fn operations_on_a_missing_room_are_not_found(fx: &impl Fixture) {
    let s = start(fx);
    assert_eq!(
        s.mutate(rate("ghost", "m", "john", Like)).await,
        not_found("ghost")
    );
    assert_eq!(
        s.mutate(progress("ghost", "john", 1)).await,
        not_found("ghost")
    );
    // Names are case-sensitive: "Ghost" is another room.
    assert_eq!(s.mutate(save(&room("Ghost"))).await, saved(1));
    assert_eq!(
        s.mutate(rate("ghost", "m", "john", Like)).await,
        not_found("ghost")
    );
    assert_eq!(
        s.mutate(progress("ghost", "john", 1)).await,
        not_found("ghost")
    );
    assert!(s.get("ghost").is_none());
    assert_eq!(s.store.snapshot().rooms.len(), 1);
    s.assert_room("Ghost", &room("Ghost"));
    s.stop().await;
}

async fn add_rating_creates_and_appends_once_per_user_and_media(fx: &impl Fixture) {
    let s = start(fx);
    let mut fresh = room("fresh");
    assert_eq!(s.mutate(save(&fresh)).await, saved(1));
    let movie = "plex://movie/5d776b59ad5437001f79c6f8";
    assert_eq!(
        s.mutate(rate("fresh", movie, "john", Like)).await,
        rated(2, true)
    );
    fresh["ratings"] = json!({ movie: [["john", "like", TS]] });
    s.assert_room("fresh", &fresh);
    assert_eq!(
        s.mutate(rate("fresh", movie, "john", Dislike)).await,
        rated(2, false)
    );
    s.assert_room("fresh", &fresh);
    assert_eq!(
        s.mutate(rate("fresh", movie, "jane", Dislike)).await,
        rated(3, true)
    );
    fresh["ratings"] = json!({ movie: [["john", "like", TS], ["jane", "dislike", TS]] });
    s.assert_room("fresh", &fresh);

    // Ratings saved with the room count as that user's rating; new ones are appended.
    let mut saved_with = room("saved-with");
    saved_with["ratings"] = json!({ "m": [["jane", "like", 1]] });
    saved_with["roomType"] = json!("later-field");
    assert_eq!(s.mutate(save(&saved_with)).await, saved(1));
    assert_eq!(
        s.mutate(rate("saved-with", "m", "jane", Dislike)).await,
        rated(1, false)
    );
    assert_eq!(
        s.mutate(rate("saved-with", "m", "john", Like)).await,
        rated(2, true)
    );
    assert_eq!(
        s.mutate(rate("saved-with", "n", "jane", Like)).await,
        rated(3, true)
    );
    saved_with["ratings"] = json!({
        "m": [["jane", "like", 1], ["john", "like", TS]], "n": [["jane", "like", TS]]
    });
    s.assert_room("saved-with", &saved_with);
    s.stop().await;
}

async fn set_progress_creates_and_overwrites(fx: &impl Fixture) {
    let s = start(fx);
    let mut r = room("r");
    assert_eq!(s.mutate(save(&r)).await, saved(1));
    assert_eq!(s.mutate(progress("r", "john", 5)).await, progressed(2));
    r["userProgress"] = json!({ "john": 5 });
    s.assert_room("r", &r);
    assert_eq!(s.mutate(progress("r", "jane", 0)).await, progressed(3));
    assert_eq!(s.mutate(progress("r", "john", 7)).await, progressed(4));
    r["userProgress"] = json!({ "john": 7, "jane": 0 });
    s.assert_room("r", &r);
    s.stop().await;
}

async fn delete_reports_whether_it_deleted(fx: &impl Fixture) {
    let s = start(fx);
    assert_eq!(s.mutate(save(&room("a"))).await, saved(1));
    assert_eq!(s.mutate(save(&room("b"))).await, saved(1));
    assert_eq!(s.mutate(delete("a", None)).await, deleted(true));
    assert!(s.get("a").is_none());
    assert_eq!(s.mutate(delete("a", None)).await, deleted(false));
    assert_eq!(s.mutate(delete("never", None)).await, deleted(false));
    assert_eq!(s.mutate(rate("a", "m", "john", Like)).await, not_found("a"));
    s.assert_room("b", &room("b"));
    if let Some(s) = s.restart(fx).await {
        assert!(s.get("a").is_none(), "a deletion survives a restart");
        s.assert_room("b", &room("b"));
        s.stop().await;
    }
}

async fn delete_created_before_is_exclusive(fx: &impl Fixture) {
    let created = |name: &str, at: &str| {
        let mut r = room(name);
        r["createdAt"] = json!(at);
        r
    };
    let s = start(fx);
    let instant = room::parse_timestamp(CREATED).expect("a timestamp");
    for r in [
        created("early", "2025-10-25T19:59:59.999Z"),
        created("exact", "2025-10-25T22:00:00+02:00"), // the same instant as CREATED
        created("late", "2025-10-25T20:00:00.001Z"),
    ] {
        assert_eq!(s.mutate(save(&r)).await, saved(1));
    }
    let before = |created_before| Mutation::DeleteCreatedBefore { created_before };
    assert_eq!(s.mutate(before(instant)).await, deleted_many(1));
    assert!(s.get("early").is_none());
    assert_eq!(s.mutate(before(instant)).await, deleted_many(0));
    assert_eq!(s.mutate(before(instant + 1)).await, deleted_many(1));
    assert!(s.get("exact").is_none());
    assert_eq!(s.revision("late"), Some(1));
    if let Some(s) = s.restart(fx).await {
        let names: Vec<_> = state(&s.store.snapshot())
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(names, ["late"]);
        s.stop().await;
    }
}

async fn expire_removes_rooms_idle_since(fx: &impl Fixture) {
    let s = start(fx);
    assert_eq!(s.mutate(save(&room("idle"))).await, saved(1));
    assert_eq!(s.mutate(save(&room("rated"))).await, saved(1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let idle_since = now_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.mutate(save(&room("fresh"))).await, saved(1));
    assert_eq!(
        s.mutate(rate("rated", "m", "john", Like)).await,
        rated(2, true)
    );
    let expire = |idle_since| Mutation::Expire { idle_since };
    assert_eq!(s.mutate(expire(idle_since)).await, deleted_many(1));
    assert!(s.get("idle").is_none());
    assert_eq!(s.mutate(expire(idle_since)).await, deleted_many(0));
    let last_change = s
        .store
        .snapshot()
        .rooms
        .values()
        .map(|e| e.updated_at)
        .max();
    let last_change = last_change.expect("two rooms");
    if let Some(s) = s.restart(fx).await {
        // A restart must not make rooms look recently used.
        assert_eq!(s.mutate(expire(idle_since)).await, deleted_many(0));
        assert_eq!(s.mutate(expire(last_change + 1)).await, deleted_many(2));
        s.stop().await;
    }
}

async fn concurrent_ratings_are_never_lost(fx: &impl Fixture) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 25;
    let s = start(fx);
    assert_eq!(s.mutate(save(&room("party"))).await, saved(1));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = s.store.clone();
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in 0..PER_TASK {
                    // Every task also races the others to rate one shared (media, user) pair.
                    let (media, user) = match i {
                        0 => ("contested".to_owned(), "everyone".to_owned()),
                        _ => (format!("m{i}"), format!("user{t}")),
                    };
                    match store.mutate(rate("party", &media, &user, Like)).await {
                        Ok(Outcome::Rated { revision, added }) => {
                            revisions.extend(added.then_some(revision))
                        }
                        other => panic!("rating {media} by {user}: {other:?}"),
                    }
                }
                revisions
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.extend(task.await.expect("a rating task"));
    }
    revisions.sort_unstable();
    let added = TASKS * (PER_TASK - 1) + 1;
    let expected: Vec<Revision> = (2..=1 + added as Revision).collect();
    assert_eq!(
        revisions, expected,
        "each added rating got its own revision"
    );
    assert_eq!(s.revision("party"), Some(1 + added as Revision));
    let doc = s.get("party").expect("the room").doc.clone();
    let ratings = doc["ratings"].as_object().expect("a ratings map");
    let count: usize = ratings
        .values()
        .map(|e| e.as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(count, added, "no rating lost or doubled");
    assert_eq!(ratings["contested"].as_array().map(Vec::len), Some(1));
    let before = state(&s.store.snapshot());
    if let Some(s) = s.restart(fx).await {
        assert_eq!(state(&s.store.snapshot()), before);
        s.stop().await;
    }
}

async fn everything_survives_a_restart(fx: &impl Fixture) {
    let s = start(fx);
    let mut a = room("a");
    a["roomType"] = json!({ "future": true });
    for r in [&a, &room("b"), &room("c"), &room("d")] {
        assert_eq!(s.mutate(save(r)).await, saved(1));
    }
    assert_eq!(s.mutate(rate("a", "m", "john", Like)).await, rated(2, true));
    assert_eq!(s.mutate(progress("a", "john", 4)).await, progressed(3));
    assert_eq!(
        s.mutate(rate("b", "m", "jane", Dislike)).await,
        rated(2, true)
    );
    assert_eq!(s.mutate(delete("c", None)).await, deleted(true));
    assert_eq!(s.mutate(delete("d", None)).await, deleted(true));
    assert_eq!(s.mutate(save(&room("d"))).await, saved(1));
    let before = state(&s.store.snapshot());
    assert_eq!(s.store.flush().await, Ok(()));
    assert_eq!(
        s.store.reload().await,
        Ok(0),
        "nothing was edited outside the store"
    );
    assert_eq!(state(&s.store.snapshot()), before);
    if let Some(s) = s.restart(fx).await {
        assert_eq!(state(&s.store.snapshot()), before);
        let s = s.restart(fx).await.expect("persistent");
        assert_eq!(
            state(&s.store.snapshot()),
            before,
            "a second restart changes nothing"
        );
        assert_eq!(
            s.mutate(rate("a", "m", "john", Like)).await,
            rated(3, false)
        );
        s.stop().await;
    }
}

/// Names that are valid rooms but hostile to a naive file layout. Each at most 255 bytes.
fn hostile_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "../x",
        "a/b",
        "..",
        ".",
        ".index",
        ".journal-1",
        "~=abc",
        "a%2Fb",
        "~a%2Fb",
        "x.json",
        "a\\b",
        " spaced ",
        "🎬 movie night 🍿",
        "Room",
        "room",
        "-",
    ]
    .map(String::from)
    .into();
    names.extend(["x".repeat(255), "a".repeat(250), "a".repeat(251)]);
    names.push(format!("{}abc", "🎬".repeat(63)));
    names.push(format!("{}/", "é".repeat(127)));
    assert!(names.iter().all(|n| n.len() <= 255));
    names
}

async fn hostile_names_round_trip(fx: &impl Fixture) {
    let names = hostile_names();
    let s = start(fx);
    for n in &names {
        assert_eq!(s.mutate(save(&room(n))).await, saved(1), "{n:?}");
        assert_eq!(
            s.mutate(rate(n, "m", n, Like)).await,
            rated(2, true),
            "{n:?}"
        );
        assert_eq!(s.mutate(progress(n, n, 1)).await, progressed(3), "{n:?}");
    }
    assert_eq!(s.mutate(delete("../x", None)).await, deleted(true));
    let mut expected = room("");
    for n in &names[1..] {
        expected["roomName"] = json!(n);
        expected["ratings"] = json!({ "m": [[n, "like", TS]] });
        expected["userProgress"] = json!({ n.as_str(): 1 });
        s.assert_room(n, &expected);
    }
    assert_eq!(s.store.snapshot().rooms.len(), names.len() - 1);
    let before = state(&s.store.snapshot());
    if let Some(s) = s.restart(fx).await {
        assert_eq!(state(&s.store.snapshot()), before);
        assert_eq!(
            s.mutate(rate("a/b", "m", "a/b", Like)).await,
            rated(3, false)
        );
        s.stop().await;
    }
}

// ---- The file backend's own promises ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_strict_clean_stop_leaves_every_room_in_its_file() {
    clean_stop_leaves_every_room_in_its_file(Durability::Strict).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_relaxed_clean_stop_leaves_every_room_in_its_file() {
    clean_stop_leaves_every_room_in_its_file(Durability::Relaxed).await;
}

fn mode(path: &Path) -> u32 {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o777
}

async fn clean_stop_leaves_every_room_in_its_file(durability: Durability) {
    let fx = file_backend(durability);
    let s = start(&fx);
    for n in ["movie-night", "a/b", "gone", &"x".repeat(255)] {
        assert_eq!(s.mutate(save(&room(n))).await, saved(1));
        assert_eq!(s.mutate(rate(n, "m", "john", Like)).await, rated(2, true));
    }
    assert_eq!(
        s.mutate(progress("movie-night", "john", 9)).await,
        progressed(3)
    );
    assert_eq!(s.mutate(delete("gone", None)).await, deleted(true));
    let snapshot = s.store.snapshot();
    s.stop().await;

    let dir = fx.dir();
    assert_eq!(mode(&dir), 0o700, "the storage directory is private");
    assert!(
        dir.join("movie-night.json").is_file(),
        "a plain name keeps its file name"
    );
    for entry in snapshot.rooms.values() {
        let path = dir.join(names::file_name(&entry.name));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            bytes.starts_with(b"{\n"),
            "{} is pretty-printed",
            path.display()
        );
        let on_disk: Value = serde_json::from_slice(&bytes).expect("a room file is JSON");
        let on_disk = serde_json::to_vec(&on_disk).expect("encode");
        assert_eq!(
            String::from_utf8_lossy(&on_disk),
            String::from_utf8_lossy(&entry.encoded),
            "{} holds the room's latest state",
            path.display()
        );
        assert_eq!(mode(&path), 0o600, "{} holds a password", path.display());
    }
    let files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .expect("list the storage directory")
        .map(|e| e.expect("a directory entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().map_or(0, |m| m.len()),
            )
        })
        .collect();
    let room_files = files.iter().filter(|(f, _)| !f.starts_with('.')).count();
    assert_eq!(
        room_files,
        snapshot.rooms.len(),
        "one file per room; none for \"gone\""
    );
    for (file, len) in &files {
        assert!(
            !file.starts_with(".tmp-") && file != ".index.next",
            "{file} left behind"
        );
        if file.starts_with(".journal-") {
            assert_eq!(
                *len, 0,
                "{file}: the journal was folded into the room files"
            );
        }
    }
}

/// PROTOCOL.md section 5: a room file changed by hand gets its revision raised by one when the
/// daemon next loads it, at start or on reload (SIGHUP).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_hand_edits_raise_the_revision() {
    let fx = file_backend(Durability::Strict);
    let path = fx.dir().join("r.json");
    let s = start(&fx);
    assert_eq!(s.mutate(save(&room("r"))).await, saved(1));
    assert_eq!(s.mutate(rate("r", "m", "john", Like)).await, rated(2, true));
    s.stop().await;

    let mut edited = room("r");
    edited["sort"] = json!("rating");
    std::fs::write(&path, serde_json::to_vec_pretty(&edited).expect("encode")).expect("edit");
    let s = start(&fx);
    assert_eq!(s.revision("r"), Some(3), "edited while stopped");
    s.assert_room("r", &edited);

    edited["password"] = json!("new");
    std::fs::write(&path, serde_json::to_vec_pretty(&edited).expect("encode")).expect("edit");
    assert_eq!(s.store.reload().await, Ok(1));
    assert_eq!(s.revision("r"), Some(4), "edited while running");
    s.assert_room("r", &edited);
    s.stop().await;
}
