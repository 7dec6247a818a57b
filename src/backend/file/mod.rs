//! The `file` backend: one pretty JSON file per room, made fast and crash-safe by a journal.
//!
//! Layout of the storage directory (0700; every file 0600):
//! - `<room>.json`: the room object, exactly, pretty-printed (names: see [`names`]).
//! - `.journal-<generation>`: changes since the room files were last brought up to date.
//! - `.index`: per room, its revision and what the daemon last wrote to its file.
//! - `.index.next`: the next `.index`, present only while a fold is in progress.
//! - `.cache`: what start-up learned from each room file, so the next need not parse it
//!   ([`cache`]).
//! - `.lock`: held by the running daemon. `.tmp-*`: files being written. `.quarantine/`: files
//!   that were not valid rooms, moved aside.
//!
//! A commit appends the batch's changes to the journal and syncs it once (`strict`), or leaves
//! the sync to the next tick (`relaxed`). A *fold* ([`fold`]) brings the room files up to date.
//! Folds run inline at a clean stop, and in the background when the journal grows large, when
//! rooms have been dirty for a while, or at the first tick after a start that replayed a
//! journal. The backend first starts a new journal, hands the fold a snapshot, and goes on
//! committing; once the fold is done the journals it covers are deleted. So a swipe never waits for a room file to be rewritten, and after a clean stop the
//! room files alone hold every room's latest state.
//!
//! Recovery ([`load`]) reads the room files, recognises which ones the daemon wrote itself (by
//! length and CRC in `.index` or `.index.next`), then replays every journal record newer than the
//! room's file (each record has a global LSN; each file's index entry, the LSN it holds).
//! A failed journal write or sync is never retried on the same pages: the batch gets a `storage`
//! error, the journal is cut back to its last good length and closed, and the next commit starts
//! a new journal file. In relaxed mode, where the failed sync may have lost acknowledged changes,
//! the rooms changed since the last good sync are logged again, whole, in the new journal.
//! If the cut-back fails too, the refused batch's pages may still reach the disk and would be
//! replayed at the next start; so the next append (or upkeep tick, if no write comes first) logs
//! those rooms again, whole, as they were acknowledged (or as deleted), and syncs it even in
//! relaxed mode, and the next fold rewrites their files ([`journal_file`], [`folding`]). Only a
//! crash before the disk takes that write can bring the refused change back.

mod cache;
mod claims;
mod fold;
mod folding;
mod fs;
mod journal;
mod journal_file;
mod load;
pub mod names;
mod par;
mod prealloc;
#[cfg(test)]
mod proptests;
mod quarantine;
mod read;
#[cfg(test)]
mod refused_tests;
mod reload;
#[cfg(test)]
mod sim;
mod space;
mod start_edits;
#[cfg(test)]
mod sweep;
#[cfg(test)]
mod tests;
mod threads;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use self::folding::Folds;
use self::fs::FileStat;
pub use self::fs::{Fs, RealFs};
use self::journal::Lsn;
use self::journal_file::Journal;
use super::{Backend, Reloaded, StorageError};
use crate::config::Durability;
use crate::room::change::Change;
use crate::room::entry::{RoomMap, Snapshot};
use crate::room::{Revision, RoomName};

/// Fold when the journal holds this much (bounds replay time at start).
const FOLD_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// Fold at least this often while rooms are dirty, so room files stay reasonably fresh.
const FOLD_INTERVAL: Duration = Duration::from_secs(60);

/// At a clean stop, how long to wait before each new try of a fold that failed (a disk that
/// hiccuped may be back; a fold writes new files every time).
const CLOSE_RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

const INDEX: &str = ".index";
const INDEX_NEXT: &str = ".index.next";
const LOCK: &str = ".lock";
const QUARANTINE: &str = ".quarantine";
const JOURNAL_PREFIX: &str = ".journal-";
const TMP_PREFIX: &str = ".tmp-";

/// What the daemon last wrote to (or read from) one room file.
#[derive(Debug, Clone)]
struct FileRecord {
    file: String,
    len: u64,
    crc: u32,
    stat: Option<FileStat>,
    /// The last change the file holds.
    lsn: Lsn,
    /// The room's revision the file holds (for logs about hand edits).
    revision: Revision,
}

/// The `file` backend. See the module docs.
pub struct FileBackend {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    durability: Durability,
    /// Held (flock) for as long as the backend lives: one daemon per directory.
    lock: Option<fs::LockGuard>,
    /// What the daemon last wrote to each room's file. Shared with a running fold (which needs
    /// all of it for the index) instead of copied: 100,000 records are 17 MB.
    files: Arc<HashMap<RoomName, FileRecord>>,
    /// Rooms whose file does not hold their latest state.
    dirty: BTreeSet<RoomName>,
    /// The journal being appended to, and the older ones a fold has yet to cover.
    journal: Journal,
    /// When folds run, the one running, and the retries of one that failed.
    folds: Folds,
    /// Writing `.cache` after a start (see [`cache`]); joined at close.
    cache_writer: Option<JoinHandle<Option<()>>>,
    /// How many rooms the last start took from `.cache` instead of parsing their files.
    cache_hits: usize,
    /// Temporary files a failed fold could not remove; removed by the next fold or at close.
    strays: Vec<PathBuf>,
    /// `.index` must be written before the next commit: start-up found new or hand-edited
    /// files and could not write it (so that a crash cannot count one edit twice).
    index_owed: bool,
    /// Why start-up serves read-only (see [`Backend::start_warning`]).
    start_warning: Option<StorageError>,
    /// What the next fold needs free on the disk (see [`space`]).
    headroom: space::Headroom,
    /// A failed fold replaced or removed room files: `.index` no longer describes them, and
    /// the next fold's `.index.next` will describe their next state, not this one. `.index` is
    /// written before that fold starts, or a crash in between would take the daemon's own
    /// files for hand edits (and replay their changes a second time).
    index_behind: bool,
    /// Tests: folds, journal deletions and the cache writer run on the calling thread, so a
    /// simulated disk sees the same calls in the same order every run.
    inline: bool,
}

impl FileBackend {
    /// The file records, to change them (copied first only while a fold still holds them).
    fn files_mut(&mut self) -> &mut HashMap<RoomName, FileRecord> {
        Arc::make_mut(&mut self.files)
    }

    /// A backend for `dir` using the real file system. Nothing is touched until `load`.
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> FileBackend {
        FileBackend::with_fs(Arc::new(RealFs), dir, durability)
    }

    /// A backend over any [`Fs`] (tests use one that models power loss).
    pub fn with_fs(fs: Arc<dyn Fs>, dir: impl Into<PathBuf>, durability: Durability) -> Self {
        let dir = dir.into();
        FileBackend {
            durability,
            lock: None,
            files: Arc::default(),
            dirty: BTreeSet::new(),
            journal: Journal::new(fs.clone(), dir.clone()),
            folds: Folds::new(FOLD_JOURNAL_BYTES, FOLD_INTERVAL),
            cache_writer: None,
            cache_hits: 0,
            strays: Vec::new(),
            index_owed: false,
            headroom: space::Headroom::default(),
            start_warning: None,
            index_behind: false,
            inline: false,
            fs,
            dir,
        }
    }

    /// Runs every background job on the calling thread (see [`FileBackend::inline`]).
    #[cfg(test)]
    pub(crate) fn inline(mut self) -> Self {
        self.inline = true;
        self.journal.set_inline(true);
        self
    }

    /// Changes when background folds start (tests fold often to exercise every path).
    pub fn with_fold_policy(mut self, journal_bytes: u64, interval: Duration) -> Self {
        self.folds.journal_bytes = journal_bytes;
        self.folds.interval = interval;
        self
    }

    /// Changes only how long rooms may stay dirty before a background fold (the fault sweep
    /// folds every upkeep tick, so that faults land inside folds).
    pub fn with_fold_interval(mut self, interval: Duration) -> Self {
        self.folds.interval = interval;
        self
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Writes `.cache` on a thread of its own from the rooms as start-up read them: every room
    /// whose file holds its state (not one the journal changed).
    /// Stats are recorded for files last changed before `trust_before` (see
    /// [`cache::trust_stats_before`]).
    fn write_cache(&mut self, rooms: &RoomMap, trust_before: i128) {
        let files: Vec<(RoomName, FileRecord)> = self
            .files
            .iter()
            .filter(|(name, _)| !self.dirty.contains(*name))
            .map(|(name, record)| (name.clone(), record.clone()))
            .collect();
        let (fs, dir, rooms) = (self.fs.clone(), self.dir.clone(), rooms.clone());
        let spawned = threads::spawn(self.inline, "write-cache", move || {
            match cache::write(&*fs, &dir, &rooms, &files, trust_before) {
                Ok(count) => tracing::debug!(
                    "wrote {} ({count} rooms) for the next start",
                    dir.join(cache::CACHE).display()
                ),
                Err(e) => tracing::warn!(
                    "could not write {} ({e}); the next start will parse every room file, which is slower but loses nothing",
                    dir.join(cache::CACHE).display()
                ),
            }
            // These may be the last references to rooms the compaction pass has packed since
            // (a slow disk can make this write outlast the pass): give their memory back.
            drop(rooms);
            crate::heap::give_back();
        });
        self.cache_writer = spawned.ok();
    }

    /// A batch of deletions the disk had no room to journal (it was filled from outside):
    /// deletes the rooms by removing their files, when a file holds each room's whole story
    /// (the room is not dirty, and no journal left from before the last fold holds a record of
    /// it, so no record could bring it back at a start). Removing a file needs no space. `Ok(false)` when that
    /// does not apply; on an error, the rooms whose file may be gone are written again from
    /// memory by the next fold.
    fn unlink_deleted(
        &mut self,
        changes: &[Change],
        rooms: &Snapshot,
    ) -> Result<bool, StorageError> {
        if self.folds.running.is_some() {
            return Ok(false);
        }
        let (dirty, files, fs, dir) = (&self.dirty, &self.files, &*self.fs, &self.dir);
        let applies = self.journal.records_of().is_some_and(|journaled| {
            // The room's file holds its whole story: removing it deletes the room for good.
            let whole_story = |name: &RoomName| {
                !journaled(name)
                    && !dirty.contains(name)
                    && files
                        .get(name)
                        .is_some_and(|r| !fold::edited_by_hand(fs, dir, r))
            };
            changes
                .iter()
                .all(|c| matches!(c, Change::Delete { name } if whole_story(name)))
        });
        if !applies {
            return Ok(false);
        }
        for change in changes {
            let name = change.room_name();
            let Some(record) = self.files_mut().remove(name) else {
                continue;
            };
            let path = self.path(&record.file);
            match self.fs.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.files_mut().insert(name.clone(), record);
                    return Err(StorageError::io("remove the deleted room's file", &path, e));
                }
            }
            // Until the removal is durable the room must get its file back if this fails.
            self.dirty.insert(name.clone());
        }
        fold::sync_dir(&*self.fs, &self.dir)?;
        for change in changes {
            self.dirty.remove(change.room_name());
        }
        let files = &self.files;
        self.headroom
            .charge(changes, rooms, |n| files.contains_key(n));
        Ok(true)
    }
}

/// About what `change` takes in the journal.
fn record_size(change: &Change) -> u64 {
    match change {
        Change::Put { room, .. } => room.len() as u64 + 256,
        _ => 256,
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn holds_rooms(&self) -> bool {
        self.folds.running.is_some()
    }

    fn load(&mut self) -> Result<RoomMap, StorageError> {
        load::load(self)
    }

    fn commit(&mut self, changes: &[Change], rooms: &Snapshot) -> Result<(), StorageError> {
        let strict = self.durability == Durability::Strict;
        self.write_owed_index(rooms)?;
        let files = &self.files;
        self.headroom
            .count_dirty(&self.dirty, rooms, |n| files.contains_key(n));
        let batch_bytes = changes.iter().map(record_size).sum();
        let checked = self
            .headroom
            .check(&*self.fs, &self.dir, changes, batch_bytes, |n| {
                files.contains_key(n)
            });
        if let Err(e) = checked.and_then(|()| self.journal.append(changes, strict, rooms)) {
            if e.is_out_of_space() && self.unlink_deleted(changes, rooms)? {
                tracing::debug!("{e}; removed the deleted rooms' files instead of journaling");
                return Ok(());
            }
            if e.is_out_of_space() {
                // Deletions free space only once a fold removes their files and the journals.
                self.fold_due();
            }
            return Err(e);
        }
        let files = &self.files;
        self.headroom
            .charge(changes, rooms, |n| files.contains_key(n));
        // A batch may hold many changes to few rooms (a busy room's ratings): a name is copied
        // only into a set that does not hold it yet.
        for change in changes {
            let name = change.room_name();
            if !self.dirty.contains(name) {
                self.dirty.insert(name.clone());
            }
        }
        if !strict {
            let mut names: Vec<&RoomName> = changes.iter().map(Change::room_name).collect();
            names.sort_unstable();
            names.dedup();
            self.journal.unsynced(names.into_iter().cloned());
        }
        if std::mem::take(&mut self.folds.soon) {
            // The changes are stored: a failure here only delays the fold to the next tick.
            let folded = self
                .journal
                .sync(rooms)
                .and_then(|()| self.start_fold(rooms, false, false));
            if let Err(e) = folded {
                tracing::warn!("{e}; folding again at the next tick");
                self.fold_due();
            }
        }
        Ok(())
    }

    fn sync(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.journal.sync(rooms)
    }

    fn maintain(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.journal.sync(rooms)?;
        self.finish_fold(rooms, false)?;
        // After an error (or a start on a disk that took no writes): a journal for the next
        // commit, which also tells whether the disk takes writes again.
        if !self.journal.is_open() {
            self.write_owed_index(rooms)?;
            self.journal.rotate()?;
        }
        let files = &self.files;
        self.headroom
            .count_dirty(&self.dirty, rooms, |n| files.contains_key(n));
        if let Some(full) = self.headroom.full(&*self.fs, &self.dir) {
            // Deleted rooms' files and covered journals go at the next fold.
            self.fold_due();
            return Err(full);
        }
        if self.folds.retry_due() {
            // A failure schedules the next try itself (`start_fold`).
            let _ = self.start_fold(rooms, false, true);
        }
        if let Some(failed) = self.fold_retry_error() {
            return Err(failed);
        }
        if self.folds.running.is_some() {
            return Ok(());
        }
        let journal_len = self.journal.len();
        let behind = !self.dirty.is_empty() || self.journal.has_old();
        let stale = behind && self.folds.last.elapsed() >= self.folds.interval;
        if journal_len >= self.folds.journal_bytes || stale {
            self.start_fold(rooms, false, true)?;
        }
        Ok(())
    }

    fn fold(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.journal.sync(rooms)?;
        self.start_fold(rooms, false, false)
    }

    fn reload(&mut self, rooms: &Snapshot) -> Result<Reloaded, StorageError> {
        self.finish_fold(rooms, true)?;
        reload::reload(self, rooms)
    }

    fn start_warning(&mut self) -> Option<StorageError> {
        self.start_warning.take()
    }

    fn close(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        if let Some(writer) = self.cache_writer.take() {
            let _ = writer.join();
        }
        // An error here, even an earlier one, loses nothing: the fold below writes every
        // changed room from memory, with new files.
        if let Err(e) = self.journal.sync(rooms) {
            tracing::warn!("{e}; writing the room files from memory instead");
        }
        let mut folded = self.start_fold(rooms, true, false);
        for wait in CLOSE_RETRIES {
            let Err(e) = &folded else { break };
            tracing::warn!(
                "could not write every room file under {} ({e}); trying again in {wait:?}",
                self.dir.display()
            );
            std::thread::sleep(wait);
            folded = self.start_fold(rooms, true, false);
        }
        self.journal.finish_removing();
        for path in self.strays.drain(..).chain(cache::temp_files(&self.dir)) {
            let _ = self.fs.remove(&path);
        }
        folded?;
        tracing::info!(
            "every room is in its file under {} ({} rooms)",
            self.dir.display(),
            rooms.rooms.len()
        );
        Ok(())
    }
}
