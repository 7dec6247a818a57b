//! When and how the backend folds: scheduling (journal size, dirty rooms' age, retries after a
//! failure), starting a [`FoldJob`] here or on its own thread, and taking in what it did. The
//! fold itself is in [`super::fold`].

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::fold::{FoldDone, FoldJob};
use super::journal_file::whole_room;
use super::{threads, FileBackend};
use crate::backend::StorageError;
use crate::room::change::Change;
use crate::room::entry::Snapshot;

/// A fold that failed is tried again at a tick after this long, doubling up to
/// [`FOLD_RETRY_MAX`] while it keeps failing: soon enough that the room files catch up once
/// the disk works, rarely enough that a lasting fault does not rewrite every dirty room each
/// second.
const FOLD_RETRY_FIRST: Duration = Duration::from_secs(1);
const FOLD_RETRY_MAX: Duration = Duration::from_secs(30);

/// A fold running on its own thread, and the journals it makes obsolete.
pub(super) struct BackgroundFold {
    thread: JoinHandle<Option<FoldDone>>,
    /// Journals older than this generation are covered once the fold succeeds.
    covers_before: u64,
}

/// A fold failed: tried again at `at`; until one works, every upkeep tick reports `error`.
pub(super) struct FoldRetry {
    error: String,
    at: Instant,
    wait: Duration,
}

/// When folds run, and the one running.
pub(super) struct Folds {
    pub running: Option<BackgroundFold>,
    pub last: Instant,
    /// After a failed fold: its error, when to try again, and the wait after that one.
    pub retry: Option<FoldRetry>,
    /// Set by a reload that quarantined a file: fold right after the reload's commit.
    pub soon: bool,
    /// Fold when the journal reaches this size...
    pub journal_bytes: u64,
    /// ...or when rooms have been dirty this long.
    pub interval: Duration,
}

impl Folds {
    pub fn new(journal_bytes: u64, interval: Duration) -> Folds {
        Folds {
            running: None,
            last: Instant::now(),
            retry: None,
            soon: false,
            journal_bytes,
            interval,
        }
    }

    /// A fold failed, none is running, and its next try is due.
    pub fn retry_due(&self) -> bool {
        self.running.is_none() && self.retry.as_ref().is_some_and(|r| Instant::now() >= r.at)
    }
}

impl FileBackend {
    /// Writes `.index` if start-up could not (see [`FileBackend::index_owed`]).
    pub(super) fn write_owed_index(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        if !self.index_owed {
            return Ok(());
        }
        self.write_index(rooms)?;
        self.index_owed = false;
        Ok(())
    }

    /// Writes `.index` for the room files as they are now (a fold with nothing to write).
    pub(super) fn write_index(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        let index_only = FoldJob {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            rooms: rooms.clone(),
            dirty: Default::default(),
            files: self.files.clone(),
            lsn: self.journal.next_lsn() - 1,
            closing: false,
            strays: std::mem::take(&mut self.strays),
        };
        let done = index_only.run();
        // Its temporary file, if the disk would not let it go, is removed by a later fold.
        self.strays.extend(done.strays);
        done.result
    }

    /// Starts a fold of everything dirty, on this thread (`background: false`) or another.
    pub(super) fn start_fold(
        &mut self,
        rooms: &Snapshot,
        closing: bool,
        background: bool,
    ) -> Result<(), StorageError> {
        if let Err(e) = self.finish_fold(rooms, true) {
            // Nothing was lost (its rooms are dirty again and the journals stay): retry now.
            tracing::warn!("the previous fold failed ({e}); folding again");
        }
        // Every way this fails schedules a retry (`fold_failed`, here or in `merge_fold` and
        // `fold_lost`), which the upkeep tick reports until a fold works: a fold that failed
        // before writing anything (the new journal's directory sync, say) is no exception.
        if self.index_behind {
            if let Err(e) = self.write_index(rooms) {
                self.fold_failed(&e);
                return Err(e);
            }
            self.index_behind = false;
        }
        // Everything up to here goes into the room files; later changes into a new journal.
        let covers_before = match self.journal.rotate() {
            Ok(()) => self.journal.generation(),
            // At a clean stop nothing comes later: the fold covers every journal.
            Err(e) if closing => {
                tracing::warn!("{e}; folding every journal into the room files instead");
                self.journal.retire();
                u64::MAX
            }
            Err(e) => {
                self.fold_failed(&e);
                return Err(e);
            }
        };
        let mut dirty = std::mem::take(&mut self.dirty);
        // Rewritten with an LSN above the records of their refused batches, which may still
        // be in a journal this fold covers (one whose removal fails stays on disk).
        dirty.append(&mut self.journal.take_refold());
        let job = FoldJob {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            rooms: rooms.clone(),
            dirty,
            files: self.files.clone(),
            lsn: self.journal.next_lsn() - 1,
            closing,
            strays: std::mem::take(&mut self.strays),
        };
        self.headroom.fold_started();
        self.folds.last = Instant::now();
        if !background {
            return self.merge_fold(job.run(), covers_before, rooms);
        }
        match threads::spawn(self.inline, "fold", move || job.run()) {
            Ok(thread) => {
                self.folds.running = Some(BackgroundFold {
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
    pub(super) fn finish_fold(&mut self, rooms: &Snapshot, wait: bool) -> Result<(), StorageError> {
        let Some(fold) = self
            .folds
            .running
            .take_if(|f| wait || f.thread.is_finished())
        else {
            return Ok(());
        };
        match fold.thread.join() {
            Ok(Some(done)) => self.merge_fold(done, fold.covers_before, rooms),
            _ => Err(self.fold_lost(rooms)),
        }
    }

    /// A fold that panicked took its dirty set with it: every room is folded next time.
    pub(super) fn fold_lost(&mut self, rooms: &Snapshot) -> StorageError {
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
    pub(super) fn fold_failed(&mut self, error: &StorageError) {
        let wait = self
            .folds
            .retry
            .as_ref()
            .map_or(FOLD_RETRY_FIRST, |r| (r.wait * 2).min(FOLD_RETRY_MAX));
        tracing::debug!("fold failed ({error}); trying again in {wait:?}");
        self.folds.retry = Some(FoldRetry {
            error: error.to_string(),
            at: Instant::now() + wait,
            wait,
        });
    }

    /// The error every upkeep tick reports until a fold works again.
    pub(super) fn fold_retry_error(&self) -> Option<StorageError> {
        let retry = self.folds.retry.as_ref()?;
        Some(StorageError::Unusable {
            message: format!(
                "the room files under {} are not up to date: the last fold failed ({}); it is tried again by itself, and the journals keep every change meanwhile",
                self.dir.display(),
                retry.error
            ),
        })
    }

    pub(super) fn merge_fold(
        &mut self,
        done: FoldDone,
        covers_before: u64,
        rooms: &Snapshot,
    ) -> Result<(), StorageError> {
        // What the fold did write or remove is on disk even if it failed later: record it.
        let changed_files = !done.written.is_empty() || !done.removed.is_empty();
        for (name, record) in done.written {
            self.files_mut().insert(name, record);
        }
        for name in done.removed {
            self.files_mut().remove(&name);
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
        self.folds.retry = None;
        if !done.skipped.is_empty() {
            // Their latest state is only in the journals about to be deleted: log it again.
            let again: Vec<Change> = done.skipped.iter().map(|n| whole_room(rooms, n)).collect();
            self.dirty.extend(done.skipped);
            self.journal.append(&again, true, rooms)?;
        }
        self.journal.drop_covered(covers_before);
        Ok(())
    }

    /// Makes the next upkeep tick start a fold.
    pub(super) fn fold_due(&mut self) {
        self.folds.last = Instant::now()
            .checked_sub(self.folds.interval)
            .unwrap_or_else(Instant::now);
    }
}
