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

mod cache;
mod claims;
mod fold;
mod fs;
mod journal;
mod load;
pub mod names;
mod prealloc;
#[cfg(test)]
mod proptests;
mod quarantine;
mod read;
mod reload;
#[cfg(test)]
mod sim;
mod space;
mod start_edits;
#[cfg(test)]
mod sweep;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::fold::{FoldDone, FoldJob};
use self::fs::{AppendFile, FileStat};
pub use self::fs::{Fs, RealFs};
use self::journal::Lsn;
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

/// A fold that failed is tried again at a tick after this long, doubling up to
/// [`FOLD_RETRY_MAX`] while it keeps failing: soon enough that the room files catch up once
/// the disk works, rarely enough that a lasting fault does not rewrite every dirty room each
/// second.
const FOLD_RETRY_FIRST: Duration = Duration::from_secs(1);
const FOLD_RETRY_MAX: Duration = Duration::from_secs(30);

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

/// A fold running on its own thread, and the journals it makes obsolete.
struct BackgroundFold {
    thread: JoinHandle<Option<FoldDone>>,
    /// Journals older than this generation are covered once the fold succeeds.
    covers_before: u64,
}

/// A fold failed: tried again at `at`; until one works, every upkeep tick reports `error`.
struct FoldRetry {
    error: String,
    at: Instant,
    wait: Duration,
}

/// The `file` backend. See the module docs.
pub struct FileBackend {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    durability: Durability,
    /// Held (flock) for as long as the backend lives: one daemon per directory.
    lock: Option<fs::LockGuard>,
    files: HashMap<RoomName, FileRecord>,
    /// Rooms whose file does not hold their latest state.
    dirty: BTreeSet<RoomName>,
    /// Relaxed mode: rooms changed since the journal was last synced.
    unsynced: BTreeSet<RoomName>,
    /// Relaxed mode: a journal holding unsynced changes was abandoned, so they must be logged
    /// again at the next sync.
    unsynced_lost: bool,
    next_lsn: Lsn,
    /// The generation of the journal being appended to (or of the last one, when closed).
    generation: u64,
    /// The highest generation ever tried: a rotation that failed half-way may have left its
    /// file behind, so its number is never used again (that was the wedge of issue 15: every
    /// later commit failed with "File exists").
    spent_generation: u64,
    /// Generations of older journals still on disk, not yet covered by a fold.
    old_journals: BTreeSet<u64>,
    /// The last journal start-up found, and every room its journals hold a record of (even one
    /// its file already held): such a room cannot be deleted by removing its file alone.
    start_generation: u64,
    in_start_journals: std::collections::HashSet<RoomName>,
    /// `None` after a failed write or sync: the next commit starts a new journal.
    journal: Option<Box<dyn AppendFile>>,
    /// The journal closed after an error held nothing and is gone: no fold need cover it.
    journal_removed: bool,
    /// The records of the batch being appended, kept between batches so that a batch of
    /// whole rooms does not grow a new buffer every time.
    records: Vec<u8>,
    folding: Option<BackgroundFold>,
    last_fold: Instant,
    /// After a failed fold: its error, when to try again, and the wait after that one.
    fold_retry: Option<FoldRetry>,
    /// Set by a reload that quarantined a file: fold right after the reload's commit.
    fold_soon: bool,
    /// Fold when the journal reaches this size...
    fold_journal_bytes: u64,
    /// ...or when rooms have been dirty this long.
    fold_interval: Duration,
    /// Writing `.cache` after a start (see [`cache`]); joined at close.
    cache_writer: Option<JoinHandle<Option<()>>>,
    /// Deleting the journals the last fold covered; joined before the next deletion and at
    /// close. Unlinking a 64 MiB journal and syncing the directory took the actor milliseconds
    /// in which no commit could start; a crash before it is done only leaves journals that
    /// start-up skips (the room files hold their changes), as a crash before the unlink did.
    removing: Option<JoinHandle<Option<Vec<u64>>>>,
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
    /// A backend for `dir` using the real file system. Nothing is touched until `load`.
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> FileBackend {
        FileBackend::with_fs(Arc::new(RealFs), dir, durability)
    }

    /// A backend over any [`Fs`] (tests use one that models power loss).
    pub fn with_fs(fs: Arc<dyn Fs>, dir: impl Into<PathBuf>, durability: Durability) -> Self {
        FileBackend {
            fs,
            dir: dir.into(),
            durability,
            lock: None,
            files: HashMap::new(),
            dirty: BTreeSet::new(),
            unsynced: BTreeSet::new(),
            unsynced_lost: false,
            next_lsn: 1,
            generation: 0,
            spent_generation: 0,
            old_journals: BTreeSet::new(),
            start_generation: 0,
            in_start_journals: Default::default(),
            journal: None,
            journal_removed: false,
            records: Vec::new(),
            folding: None,
            last_fold: Instant::now(),
            fold_soon: false,
            fold_retry: None,
            fold_journal_bytes: FOLD_JOURNAL_BYTES,
            fold_interval: FOLD_INTERVAL,
            cache_writer: None,
            removing: None,
            cache_hits: 0,
            strays: Vec::new(),
            index_owed: false,
            headroom: space::Headroom::default(),
            start_warning: None,
            index_behind: false,
            inline: false,
        }
    }

    /// Runs every background job on the calling thread (see [`FileBackend::inline`]).
    #[cfg(test)]
    pub(crate) fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// Runs `job` on a thread named `name`, or here (`Err` with its result) when no thread
    /// starts or the backend is `inline`. The thread's result is `None` only if it was not the
    /// one to run the job, which cannot happen.
    fn spawn<T: Send + 'static>(
        &self,
        name: &str,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<Option<T>>, Option<T>> {
        if self.inline {
            return Err(Some(job()));
        }
        // Shared, so that the job is still here if the thread does not start.
        let slot = Arc::new(std::sync::Mutex::new(Some(job)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || take(&theirs).map(|job| job()));
        match spawned {
            Ok(thread) => Ok(thread),
            Err(e) => {
                tracing::debug!("no thread for {name} ({e}); running it here");
                Err(take(&slot).map(|job| job()))
            }
        }
    }

    /// Changes when background folds start (tests fold often to exercise every path).
    pub fn with_fold_policy(mut self, journal_bytes: u64, interval: Duration) -> Self {
        self.fold_journal_bytes = journal_bytes;
        self.fold_interval = interval;
        self
    }

    /// Changes only how long rooms may stay dirty before a background fold (the fault sweep
    /// folds every upkeep tick, so that faults land inside folds).
    pub fn with_fold_interval(mut self, interval: Duration) -> Self {
        self.fold_interval = interval;
        self
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn journal_path(&self, generation: u64) -> PathBuf {
        self.path(&format!("{JOURNAL_PREFIX}{generation}"))
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
        let spawned = self.spawn("write-cache", move || {
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
        });
        self.cache_writer = spawned.ok();
    }

    /// Starts a new journal file. The old one stays until a fold covers it. On failure the
    /// current journal (if any) goes on as before, and the next try takes a new number.
    fn rotate(&mut self) -> Result<(), StorageError> {
        let mut generation = self.generation.max(self.spent_generation) + 1;
        let mut created = self.fs.create_journal(&self.journal_path(generation));
        // A name someone else took (a file or symlink the daemon did not create): skip it,
        // never follow or delete it. Bounded, so a directory full of them still fails.
        for _ in 0..64 {
            match &created {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                _ => break,
            }
            tracing::warn!(
                "{} exists but the daemon did not create it; leaving it alone and using the next journal name (move it out of the storage directory)",
                self.journal_path(generation).display()
            );
            generation += 1;
            created = self.fs.create_journal(&self.journal_path(generation));
        }
        self.spent_generation = generation;
        let path = self.journal_path(generation);
        // Only a file this call created may be removed below.
        let ours = !matches!(&created, Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists);
        let created = created.map_err(|e| StorageError::io("create the journal", &path, e));
        // The new file's directory entry must be durable before anything in it is acknowledged.
        let journal = match created.and_then(|j| fold::sync_dir(&*self.fs, &self.dir).map(|()| j)) {
            Ok(journal) => journal,
            Err(e) if !ours => return Err(e),
            Err(e) => {
                // Never used: remove it now, or let the next fold that covers it do so.
                match self.fs.remove(&path) {
                    Ok(()) => {}
                    Err(gone) if gone.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => {
                        self.old_journals.insert(generation);
                    }
                }
                return Err(e);
            }
        };
        if self.generation > 0 && !std::mem::take(&mut self.journal_removed) {
            self.old_journals.insert(self.generation);
        }
        self.generation = generation;
        self.journal = Some(journal);
        Ok(())
    }

    /// Writes `.index` if start-up could not (see [`FileBackend::index_owed`]).
    fn write_owed_index(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        if !self.index_owed {
            return Ok(());
        }
        self.write_index(rooms)?;
        self.index_owed = false;
        Ok(())
    }

    /// Writes `.index` for the room files as they are now (a fold with nothing to write).
    fn write_index(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        let index_only = FoldJob {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            rooms: rooms.clone(),
            dirty: Default::default(),
            files: self.files.clone(),
            lsn: self.next_lsn - 1,
            closing: false,
            strays: std::mem::take(&mut self.strays),
        };
        let done = index_only.run();
        // Its temporary file, if the disk would not let it go, is removed by a later fold.
        self.strays.extend(done.strays);
        done.result
    }

    /// Appends `changes` to the journal (starting one if needed), syncing them when `sync`.
    fn append(&mut self, changes: &[Change], sync: bool) -> Result<(), StorageError> {
        if self.journal.is_none() {
            self.rotate()?;
        }
        let mut bytes = std::mem::take(&mut self.records);
        bytes.clear();
        for change in changes {
            journal::encode_record(&mut bytes, self.next_lsn, change);
            self.next_lsn += 1;
        }
        let path = self.journal_path(self.generation);
        let Some(journal) = self.journal.as_mut() else {
            return Ok(());
        };
        let good_len = journal.len();
        let mut result = journal.append(&bytes).map_err(|e| ("append to", e));
        if result.is_ok() && sync {
            result = journal.sync().map_err(|e| ("fsync", e));
        }
        // Kept for the next batch, unless a rare huge batch made it big.
        if bytes.capacity() <= 8 << 20 {
            self.records = bytes;
        }
        result.map_err(|(action, e)| {
            self.abandon_journal(good_len);
            StorageError::io(action, path, e)
        })
    }

    /// Gives up on the current journal after a failed write or sync: its unsynced pages may be
    /// lost or stale, so they are never synced again. Cuts the failed batch off if the disk
    /// allows; the next commit starts a new journal.
    fn abandon_journal(&mut self, good_len: u64) {
        let path = self.journal_path(self.generation);
        self.unsynced_lost |= !self.unsynced.is_empty();
        if let Some(mut journal) = self.journal.take() {
            if let Err(e) = journal.truncate(good_len) {
                tracing::debug!("could not cut the failed batch off {}: {e}", path.display());
            }
        }
        // Debug only: `store::health` logs when the storage starts and stops failing, and a
        // failing disk under load would make this a line per commit.
        tracing::debug!(
            "journal {} closed after a storage error; the next change starts a new one",
            path.display()
        );
        // A journal that holds nothing goes now, or a lasting fault leaves one per failed
        // commit (1632 of them in 20 s, issue 15) until a fold can cover them.
        if good_len == 0 && self.fs.remove(&path).is_ok() {
            self.journal_removed = true;
        }
    }

    /// Relaxed mode: syncs what was appended since the last sync. If that fails, the changes
    /// may be lost from the page cache, so the rooms they touched are logged again, whole.
    fn sync_journal(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        let path = self.journal_path(self.generation);
        let synced = match self.journal.as_mut() {
            Some(journal) if !self.unsynced_lost => journal.sync(),
            _ => Err(std::io::Error::other(
                "the journal was closed after an error",
            )),
        };
        if let Err(e) = synced {
            // Debug only: the error goes to `store::health`, which logs the state's changes.
            tracing::debug!(
                "cannot fsync {}: {e}; logging the changed rooms again",
                path.display()
            );
            let len = self.journal.as_ref().map_or(0, |j| j.len());
            self.abandon_journal(len);
            let again: Vec<Change> = self
                .unsynced
                .iter()
                .map(|name| whole_room(rooms, name))
                .collect();
            // Until this succeeds the changes are in no synced journal: a sync of a later
            // journal alone must not count as theirs (issue 15, found by the fault sweep).
            self.unsynced_lost = true;
            self.append(&again, true)?;
            self.unsynced_lost = false;
        }
        self.unsynced.clear();
        Ok(())
    }

    /// Starts a fold of everything dirty, on this thread (`background: false`) or another.
    fn start_fold(
        &mut self,
        rooms: &Snapshot,
        closing: bool,
        background: bool,
    ) -> Result<(), StorageError> {
        if let Err(e) = self.finish_fold(rooms, true) {
            // Nothing was lost (its rooms are dirty again and the journals stay): retry now.
            tracing::warn!("the previous fold failed ({e}); folding again");
        }
        if self.index_behind {
            self.write_index(rooms)?;
            self.index_behind = false;
        }
        // Everything up to here goes into the room files; later changes into a new journal.
        let covers_before = match self.rotate() {
            Ok(()) => self.generation,
            // At a clean stop nothing comes later: the fold covers every journal.
            Err(e) if closing => {
                tracing::warn!("{e}; folding every journal into the room files instead");
                self.journal = None;
                if self.generation > 0 && !self.journal_removed {
                    self.old_journals.insert(self.generation);
                }
                u64::MAX
            }
            Err(e) => return Err(e),
        };
        let job = FoldJob {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            rooms: rooms.clone(),
            dirty: std::mem::take(&mut self.dirty),
            files: self.files.clone(),
            lsn: self.next_lsn - 1,
            closing,
            strays: std::mem::take(&mut self.strays),
        };
        self.headroom.fold_started();
        self.last_fold = Instant::now();
        if !background {
            return self.merge_fold(job.run(), covers_before, rooms);
        }
        match self.spawn("fold", move || job.run()) {
            Ok(thread) => {
                self.folding = Some(BackgroundFold {
                    thread,
                    covers_before,
                });
                Ok(())
            }
            Err(Some(done)) => self.merge_fold(done, covers_before, rooms),
            Err(None) => Err(self.fold_lost(rooms)),
        }
    }

    /// Takes in the result of a background fold if it has ended (or, with `wait`, once it has).
    fn finish_fold(&mut self, rooms: &Snapshot, wait: bool) -> Result<(), StorageError> {
        let Some(fold) = self.folding.take_if(|f| wait || f.thread.is_finished()) else {
            return Ok(());
        };
        match fold.thread.join() {
            Ok(Some(done)) => self.merge_fold(done, fold.covers_before, rooms),
            _ => Err(self.fold_lost(rooms)),
        }
    }

    /// A fold that panicked took its dirty set with it: every room is folded next time.
    fn fold_lost(&mut self, rooms: &Snapshot) -> StorageError {
        self.headroom.fold_ended(false);
        self.dirty.extend(self.files.keys().cloned());
        self.dirty
            .extend(rooms.rooms.values().map(|e| e.name.clone()));
        let lost = StorageError::Unusable {
            message: format!(
                "a fold of {} panicked; the journal still holds every change",
                self.dir.display()
            ),
        };
        self.fold_failed(&lost);
        lost
    }

    /// Schedules the next try of a fold that failed (see [`FOLD_RETRY_FIRST`]).
    fn fold_failed(&mut self, error: &StorageError) {
        let wait = self
            .fold_retry
            .as_ref()
            .map_or(FOLD_RETRY_FIRST, |r| (r.wait * 2).min(FOLD_RETRY_MAX));
        tracing::debug!("fold failed ({error}); trying again in {wait:?}");
        self.fold_retry = Some(FoldRetry {
            error: error.to_string(),
            at: Instant::now() + wait,
            wait,
        });
    }

    /// The error every upkeep tick reports until a fold works again.
    fn fold_retry_error(&self) -> Option<StorageError> {
        let retry = self.fold_retry.as_ref()?;
        Some(StorageError::Unusable {
            message: format!(
                "the room files under {} are not up to date: the last fold failed ({}); it is tried again by itself, and the journals keep every change meanwhile",
                self.dir.display(),
                retry.error
            ),
        })
    }

    fn merge_fold(
        &mut self,
        done: FoldDone,
        covers_before: u64,
        rooms: &Snapshot,
    ) -> Result<(), StorageError> {
        // What the fold did write or remove is on disk even if it failed later: record it.
        let changed_files = !done.written.is_empty() || !done.removed.is_empty();
        for (name, record) in done.written {
            self.files.insert(name, record);
        }
        for name in done.removed {
            self.files.remove(&name);
        }
        self.strays.extend(done.strays);
        self.headroom.fold_ended(done.result.is_ok());
        if let Err(e) = done.result {
            // Nothing is lost: the journals stay until a later fold succeeds.
            self.index_behind |= changed_files;
            self.dirty.extend(done.dirty);
            self.fold_failed(&e);
            return Err(e);
        }
        self.fold_retry = None;
        if !done.skipped.is_empty() {
            // Their latest state is only in the journals about to be deleted: log it again.
            let again: Vec<Change> = done.skipped.iter().map(|n| whole_room(rooms, n)).collect();
            self.dirty.extend(done.skipped);
            self.append(&again, true)?;
        }
        self.drop_journals(covers_before);
        Ok(())
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
        // A journal being removed still holds records of rooms that are not dirty.
        self.finish_removing();
        if self.old_journals.is_empty() {
            self.in_start_journals = Default::default();
        }
        let whole_story = |name: &RoomName| {
            !self.in_start_journals.contains(name)
                && !self.dirty.contains(name)
                && !self.unsynced.contains(name)
                && self
                    .files
                    .get(name)
                    .is_some_and(|r| !fold::edited_by_hand(&*self.fs, &self.dir, r))
        };
        let applies = self.folding.is_none()
            && self
                .old_journals
                .iter()
                .all(|&g| g <= self.start_generation)
            && changes
                .iter()
                .all(|c| matches!(c, Change::Delete { name } if whole_story(name)));
        if !applies {
            return Ok(false);
        }
        for change in changes {
            let name = change.room_name();
            let Some(record) = self.files.remove(name) else {
                continue;
            };
            let path = self.path(&record.file);
            match self.fs.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.files.insert(name.clone(), record);
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

    /// Makes the next upkeep tick start a fold.
    fn fold_due(&mut self) {
        self.last_fold = Instant::now()
            .checked_sub(self.fold_interval)
            .unwrap_or_else(Instant::now);
    }

    /// Deletes journals older than `generation` (a fold has put their changes in the room
    /// files), on a thread of its own; see [`FileBackend::removing`].
    fn drop_journals(&mut self, generation: u64) {
        let covered: Vec<u64> = self.old_journals.range(..generation).copied().collect();
        if covered.is_empty() {
            return;
        }
        let paths: Vec<PathBuf> = covered.iter().map(|g| self.journal_path(*g)).collect();
        for g in &covered {
            self.old_journals.remove(g);
        }
        self.finish_removing();
        let (fs, dir) = (self.fs.clone(), self.dir.clone());
        let paths: Vec<(u64, PathBuf)> = covered.into_iter().zip(paths).collect();
        match self.spawn("journal-remove", move || {
            remove_journals(&*fs, &dir, &paths)
        }) {
            Ok(thread) => self.removing = Some(thread),
            Err(left) => self.old_journals.extend(left.into_iter().flatten()),
        }
    }

    /// Waits for the last deletion of journals to be done.
    fn finish_removing(&mut self) {
        if let Some(thread) = self.removing.take() {
            // A journal that could not be removed is tried again after the next fold.
            if let Ok(Some(left)) = thread.join() {
                self.old_journals.extend(left);
            }
        }
    }
}

/// Deletes journals a fold covered, then syncs the directory: not needed for correctness
/// (replay skips what the files hold), but a power loss right after a clean stop should not
/// bring old journals back. Returns the generations it could not remove.
fn remove_journals(fs: &dyn Fs, dir: &Path, paths: &[(u64, PathBuf)]) -> Vec<u64> {
    let mut left = Vec::new();
    for (generation, path) in paths {
        match fs.remove(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(
                    "cannot remove {} ({e}); trying again after the next fold",
                    path.display()
                );
                left.push(*generation);
            }
        }
    }
    if let Err(e) = fold::sync_dir(fs, dir) {
        tracing::warn!("{e}");
    }
    left
}

fn take<T>(slot: &std::sync::Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// About what `change` takes in the journal.
fn record_size(change: &Change) -> u64 {
    match change {
        Change::Put { room, .. } => room.len() as u64 + 256,
        _ => 256,
    }
}

/// A `Put` of a room's whole current state (or a `Delete` if it is gone).
fn whole_room(rooms: &Snapshot, name: &RoomName) -> Change {
    match rooms.get(name.as_str()) {
        Some(entry) => Change::Put {
            name: entry.name.clone(),
            revision: entry.revision,
            at: entry.updated_at,
            room: entry.encoded().clone(),
        },
        None => Change::Delete { name: name.clone() },
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
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
        if let Err(e) = checked.and_then(|()| self.append(changes, strict)) {
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
        let names = changes.iter().map(|c| c.room_name().clone());
        if strict {
            self.dirty.extend(names);
        } else {
            let names: Vec<RoomName> = names.collect();
            self.dirty.extend(names.iter().cloned());
            self.unsynced.extend(names);
        }
        if std::mem::take(&mut self.fold_soon) {
            // The changes are stored: a failure here only delays the fold to the next tick.
            let folded = self
                .sync_journal(rooms)
                .and_then(|()| self.start_fold(rooms, false, false));
            if let Err(e) = folded {
                tracing::warn!("{e}; folding again at the next tick");
                self.fold_due();
            }
        }
        Ok(())
    }

    fn sync(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.sync_journal(rooms)
    }

    fn maintain(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.sync_journal(rooms)?;
        self.finish_fold(rooms, false)?;
        // After an error (or a start on a disk that took no writes): a journal for the next
        // commit, which also tells whether the disk takes writes again.
        if self.journal.is_none() {
            self.write_owed_index(rooms)?;
            self.rotate()?;
        }
        let files = &self.files;
        self.headroom
            .count_dirty(&self.dirty, rooms, |n| files.contains_key(n));
        if let Some(full) = self.headroom.full(&*self.fs, &self.dir) {
            // Deleted rooms' files and covered journals go at the next fold.
            self.fold_due();
            return Err(full);
        }
        if self
            .fold_retry
            .as_ref()
            .is_some_and(|r| Instant::now() >= r.at)
            && self.folding.is_none()
        {
            if let Err(e) = self.start_fold(rooms, false, true) {
                self.fold_failed(&e);
            }
        }
        if let Some(failed) = self.fold_retry_error() {
            return Err(failed);
        }
        if self.folding.is_some() {
            return Ok(());
        }
        let journal_len = self.journal.as_ref().map_or(0, |j| j.len());
        let behind = !self.dirty.is_empty() || !self.old_journals.is_empty();
        let stale = behind && self.last_fold.elapsed() >= self.fold_interval;
        if journal_len >= self.fold_journal_bytes || stale {
            self.start_fold(rooms, false, true)?;
        }
        Ok(())
    }

    fn fold(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.sync_journal(rooms)?;
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
        if let Err(e) = self.sync_journal(rooms) {
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
        self.finish_removing();
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
