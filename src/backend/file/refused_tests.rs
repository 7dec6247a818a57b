//! A refused batch that could not be cut off must not come back (`journal_file` module docs).
//!
//! These drive the backend directly, one batch per call, so that a batch can hold several
//! changes and every call to the simulated disk comes in a known order. A power loss here
//! keeps every page ever written ([`SimFs::power_loss_keeping_failed`]): the worst case for a
//! refused batch, whose pages a failed sync or write may have put on the disk all the same.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::sim::SimFs;
use super::sweep::{rate, save};
use super::FileBackend;
use crate::backend::{Backend, StorageError};
use crate::config::Durability;
use crate::room::change::{Change, Mutation};
use crate::room::entry::{RoomMap, Snapshot};
use crate::store::apply;

fn dir() -> PathBuf {
    PathBuf::from("/sim/rooms")
}

/// What a client can see: name, revision, JSON.
type View = Vec<(String, u64, String)>;

fn view_of(rooms: &RoomMap) -> View {
    let mut view: View = rooms
        .values()
        .map(|e| {
            let text = String::from_utf8_lossy(e.encoded()).into_owned();
            (e.name.to_string(), e.revision, text)
        })
        .collect();
    view.sort();
    view
}

fn open(fs: &SimFs, durability: Durability) -> FileBackend {
    // No fold unless a test asks for one.
    FileBackend::with_fs(Arc::new(fs.clone()), dir(), durability)
        .with_fold_policy(u64::MAX, Duration::from_secs(3600))
        .inline()
}

/// The backend and the rooms it acknowledged, as the store's actor keeps them.
struct Daemon {
    backend: FileBackend,
    rooms: RoomMap,
}

impl Daemon {
    fn start(fs: &SimFs, durability: Durability) -> Daemon {
        let mut backend = open(fs, durability);
        let rooms = backend.load().expect("a start");
        Daemon { backend, rooms }
    }

    /// Commits `mutations` as one batch; on success they are acknowledged.
    fn write(&mut self, mutations: Vec<Mutation>) -> Result<(), StorageError> {
        let mut rooms = self.rooms.clone();
        let mut changes: Vec<Change> = Vec::new();
        for mutation in mutations {
            apply::apply(&mut rooms, mutation, 1, &mut changes).expect("the mutation applies");
        }
        let snapshot = Snapshot { rooms };
        self.backend.commit(&changes, &snapshot)?;
        self.rooms = snapshot.rooms;
        Ok(())
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            rooms: self.rooms.clone(),
        }
    }

    /// The upkeep tick.
    fn tick(&mut self) -> Result<(), StorageError> {
        let snapshot = self.snapshot();
        self.backend.maintain(&snapshot)
    }

    fn fold(&mut self) -> Result<(), StorageError> {
        let snapshot = self.snapshot();
        self.backend.fold(&snapshot)
    }
}

/// What a daemon starting on `fs` would serve.
fn recover(fs: &SimFs) -> View {
    let rooms = open(fs, Durability::Strict).load().expect("recovery");
    view_of(&rooms)
}

/// A power loss now, keeping every page ever written, must bring back what `daemon` served.
fn assert_survives(fs: &SimFs, daemon: &Daemon, when: &str) {
    let recovered = recover(&fs.power_loss_keeping_failed());
    let served = view_of(&daemon.rooms);
    let summary =
        |v: &View| -> Vec<(String, u64)> { v.iter().map(|(n, r, _)| (n.clone(), *r)).collect() };
    assert!(
        recovered == served,
        "{when}: a power loss recovered {:?}, the daemon served {:?}\nrecovered: {recovered:?}",
        summary(&recovered),
        summary(&served)
    );
}

/// Two rooms in their files (a fold), and a third only in the journal (which is then not
/// empty: a failed journal that held nothing is removed, and its directory entry with it).
fn prepared(durability: Durability) -> (SimFs, Daemon) {
    let fs = SimFs::default();
    let mut daemon = Daemon::start(&fs, durability);
    daemon
        .write(vec![save("r", 100), save("s", 100)])
        .expect("saved");
    daemon.fold().expect("folded");
    daemon.write(vec![save("x", 10)]).expect("saved");
    daemon.backend.sync(&daemon.snapshot()).expect("synced");
    (fs, daemon)
}

/// Strict: the batch's fsync fails, and so does the truncate that should cut it off. Its
/// records are whole on the disk; the next write (to another room) must undo them.
#[test]
fn a_refused_batch_whose_cut_off_failed_does_not_come_back_after_the_next_write() {
    let (fs, mut daemon) = prepared(Durability::Strict);
    fs.fail_next("sync", 1);
    fs.fail_next("truncate", 1);
    assert!(daemon.write(vec![rate("r", 0), save("new", 50)]).is_err());
    daemon
        .write(vec![rate("s", 1)])
        .expect("the disk works again");
    assert_survives(&fs, &daemon, "after the next write");
    // The next write to the same room: logged whole, not on top of the refused change.
    daemon.write(vec![rate("r", 2)]).expect("written");
    assert_survives(&fs, &daemon, "after a write to the refused room");
}

/// With no write after the refusal, the upkeep tick logs the rooms again.
#[test]
fn the_upkeep_tick_undoes_a_refused_batch_when_no_write_comes() {
    let (fs, mut daemon) = prepared(Durability::Strict);
    fs.fail_next("sync", 1);
    fs.fail_next("truncate", 1);
    assert!(daemon.write(vec![rate("r", 0)]).is_err());
    daemon.tick().expect("the disk works again");
    assert_survives(&fs, &daemon, "after the tick");
}

/// The write itself fails half-way: the first half of the batch (a whole record) is written.
fn a_torn_write_whose_cut_off_failed(durability: Durability) {
    let (fs, mut daemon) = prepared(durability);
    fs.fail_next("append", 1);
    fs.fail_next("truncate", 1);
    // A small record first and a large one after it: half the batch holds the first whole.
    assert!(daemon.write(vec![rate("r", 0), save("big", 4000)]).is_err());
    daemon
        .write(vec![rate("s", 1)])
        .expect("the disk works again");
    assert_survives(&fs, &daemon, "after the next write");
    // Relaxed too: the whole-room records are synced with the write that carries them, so
    // even a power loss that keeps the refused pages but only synced new ones is safe.
    for seed in 0..20 {
        let recovered = recover(&fs.power_loss(seed));
        assert!(
            !recovered
                .iter()
                .any(|(n, _, text)| n == "r" && text.contains("m0")),
            "seed {seed}: the refused rating came back"
        );
        assert!(!recovered.iter().any(|(n, _, _)| n == "big"));
    }
}

#[test]
fn a_torn_write_whose_cut_off_failed_does_not_come_back_strict() {
    a_torn_write_whose_cut_off_failed(Durability::Strict);
}

#[test]
fn a_torn_write_whose_cut_off_failed_does_not_come_back_relaxed() {
    a_torn_write_whose_cut_off_failed(Durability::Relaxed);
}

/// The second and third write fail the same way (the new journals' first writes), then one
/// works: every refused batch is undone.
fn three_refusals_in_a_row(durability: Durability) {
    let (fs, mut daemon) = prepared(durability);
    let batches = [
        vec![rate("r", 0), save("big0", 4000)],
        vec![rate("s", 1), save("big1", 4000)],
        vec![rate("r", 2), save("big2", 4000)],
    ];
    for batch in batches {
        match durability {
            Durability::Strict => fs.fail_next("sync", 1),
            Durability::Relaxed => fs.fail_next("append", 1),
        }
        fs.fail_next("truncate", 1);
        assert!(daemon.write(batch).is_err());
    }
    daemon
        .write(vec![save("t", 10)])
        .expect("the disk works again");
    assert_survives(&fs, &daemon, "after three refusals and a write");
    daemon.backend.sync(&daemon.snapshot()).expect("synced");
    assert_survives(&fs, &daemon, "after a flush");
}

#[test]
fn three_refusals_in_a_row_do_not_come_back_strict() {
    three_refusals_in_a_row(Durability::Strict);
}

#[test]
fn three_refusals_in_a_row_do_not_come_back_relaxed() {
    three_refusals_in_a_row(Durability::Relaxed);
}

/// A fold after the refusal covers the journal holding it; when that journal cannot be
/// removed, the one holding the whole-room records must stay too (and the room's file is
/// rewritten), so a start still ends with the acknowledged state. Also for a refused save of
/// a new room, which no room file can stand in for.
#[test]
fn a_fold_after_a_refused_batch_leaves_nothing_that_brings_it_back() {
    let (fs, mut daemon) = prepared(Durability::Strict);
    fs.fail_next("sync", 1);
    fs.fail_next("truncate", 1);
    assert!(daemon.write(vec![rate("r", 0), save("new", 50)]).is_err());
    daemon.tick().expect("the disk works again");
    // The fold's removal of the journal with the refused batch fails.
    fs.fail_next("remove", 1);
    daemon.fold().expect("folded");
    let kept = fs
        .files(&dir())
        .iter()
        .filter(|(name, bytes)| name.starts_with(".journal-") && !bytes.is_empty())
        .count();
    assert_eq!(
        kept, 2,
        "the refused batch's journal, and the later one, stay"
    );
    assert_survives(&fs, &daemon, "after the fold");
    // A later fold removes them; nothing comes back either.
    daemon.write(vec![rate("s", 3)]).expect("written");
    daemon.fold().expect("folded");
    assert_survives(&fs, &daemon, "after the next fold");
    let rooms = recover(&fs.power_loss_keeping_failed());
    assert!(!rooms.iter().any(|(n, _, _)| n == "new"));
}

/// Nothing failed: not a byte more is written, and no extra sync.
#[test]
fn nothing_is_logged_again_when_nothing_failed() {
    let (fs, mut daemon) = prepared(Durability::Relaxed);
    let syncs = fs.syncs();
    daemon.write(vec![rate("r", 0)]).expect("written");
    daemon.write(vec![rate("s", 1)]).expect("written");
    assert_eq!(fs.syncs(), syncs, "relaxed writes sync nothing");
    daemon.tick().expect("ticked");
    assert_eq!(fs.syncs(), syncs + 1, "one sync at the tick");
}

/// A clean stop while the disk still fails: the whole-room records cannot be written, and the
/// journal with the refused batch cannot be removed. The fold rewrites the refused room's file
/// with an LSN above the refused records, so the next start skips them.
#[test]
fn a_clean_stop_that_cannot_log_the_refused_rooms_again_rewrites_their_files() {
    let (fs, mut daemon) = prepared(Durability::Strict);
    fs.fail_next("sync", 1);
    fs.fail_next("truncate", 1);
    assert!(daemon.write(vec![rate("r", 0)]).is_err());
    // At the stop: the new journal's write fails and is not cut off either, then the removal
    // of both journals fails.
    fs.fail_next("append", 1);
    fs.fail_next("truncate", 1);
    fs.fail_next("remove", 2);
    let snapshot = daemon.snapshot();
    daemon
        .backend
        .close(&snapshot)
        .expect("the room files are written");
    assert!(
        fs.files(&dir())
            .iter()
            .any(|(name, bytes)| name.starts_with(".journal-") && !bytes.is_empty()),
        "the journal with the refused batch is still there"
    );
    assert_survives(&fs, &daemon, "after the clean stop");
}

/// Found by an outside probe (2026-12-06): a `fold` whose first step failed (the directory sync
/// of the journal it starts) was answered `storage` and then forgotten: no retry, and the
/// upkeep tick said the storage was healthy. Now the tick reports it until a retry works, and
/// the retry comes by itself.
#[test]
fn a_fold_that_fails_before_writing_is_reported_and_tried_again() {
    let fs = SimFs::default();
    let mut daemon = Daemon::start(&fs, Durability::Strict);
    daemon.write(vec![save("a", 10)]).expect("a write");
    fs.fail_next("sync_dir", 1);
    let failed = daemon.fold().expect_err("the fold fails");
    assert!(
        failed.to_string().contains("fsync the directory"),
        "{failed}"
    );
    let reported = daemon.tick().expect_err("the tick reports the failed fold");
    assert!(
        reported.to_string().contains("the last fold failed"),
        "{reported}"
    );
    // The first retry comes about 1 s later, at a tick.
    std::thread::sleep(Duration::from_millis(1_100));
    daemon
        .tick()
        .expect("the retry works and the tick is clean again");
    daemon.tick().expect("and stays clean");
    assert!(
        fs.files(&dir()).iter().any(|(name, _)| name == "a.json"),
        "the retry wrote the room file: {:?}",
        fs.files(&dir()).iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert_survives(&fs, &daemon, "after the retry");
}
