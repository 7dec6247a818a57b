//! The journal being appended to, and the older ones no fold has covered yet.
//!
//! [`Journal`] owns the journal file and its numbering (generations), appends and syncs, the
//! cut-off of a failed batch, rotation to a new file, and the deletion of journals a fold
//! covered. A failed write or sync is never retried on the same pages: the batch gets a
//! `storage` error, the file is cut back to its last good length and closed, and the next
//! append starts a new file. In relaxed mode, where the failed sync may have lost acknowledged
//! changes, the rooms changed since the last good sync are logged again, whole, in the new
//! journal ([`Journal::sync`]).
//!
//! A refused batch that could not be cut off (the truncate, which syncs the new length, failed
//! too) may still be on disk, and a start would replay it: a change its client was told failed
//! would come back. So its rooms are *refused rooms* until the disk works again: the next
//! append (of a commit, or of the upkeep tick's sync if no commit comes first) begins with a
//! whole-room record of each, holding its state as acknowledged (a `Delete` for a room that
//! does not exist), and is synced in both modes. Replay applies journals in order and records
//! in LSN order, and LSNs are never reused, so those records win over the refused ones. The
//! next fold also rewrites their files (with an LSN above the refused records), so that no
//! journal left behind can replay them onto an older file. Nothing of this runs while
//! nothing failed.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::fold::sync_dir;
use super::fs::{AppendFile, Fs};
use super::journal::{self, Lsn};
use super::threads;
use super::JOURNAL_PREFIX;
use crate::backend::StorageError;
use crate::room::change::Change;
use crate::room::entry::Snapshot;
use crate::room::RoomName;

/// See the module docs.
pub(super) struct Journal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// Tests: journals are deleted on the calling thread (see `FileBackend::inline`).
    inline: bool,
    /// `None` after a failed write or sync: the next append starts a new journal.
    file: Option<Box<dyn AppendFile>>,
    next_lsn: Lsn,
    /// The generation of the journal being appended to (or of the last one, when closed).
    generation: u64,
    /// The highest generation ever tried: a rotation that failed half-way may have left its
    /// file behind, so its number is never used again (that was the wedge of issue 15: every
    /// later commit failed with "File exists").
    spent_generation: u64,
    /// Generations of older journals still on disk, not yet covered by a fold.
    old: BTreeSet<u64>,
    /// The journal closed after an error held nothing and is gone: no fold need cover it.
    removed: bool,
    /// The records of the batch being appended, kept between batches so that a batch of
    /// whole rooms does not grow a new buffer every time.
    records: Vec<u8>,
    /// Relaxed mode: rooms changed since the journal was last synced.
    unsynced: BTreeSet<RoomName>,
    /// Relaxed mode: a journal holding unsynced changes was abandoned, so they must be logged
    /// again at the next sync.
    unsynced_lost: bool,
    /// Rooms of refused batches that may still be on disk (see the module docs): logged whole
    /// at the start of the next append, which clears this once it is synced.
    refused: BTreeSet<RoomName>,
    /// The same rooms, kept until a fold takes them ([`Journal::take_refold`]): their files
    /// must be rewritten with an LSN above the refused records.
    refold: BTreeSet<RoomName>,
    /// The last journal start-up found, and every room its journals hold a record of (even one
    /// its file already held): such a room cannot be deleted by removing its file alone.
    start_generation: u64,
    in_start_journals: HashSet<RoomName>,
    /// Deleting the journals the last fold covered; joined before the next deletion and at
    /// close. Unlinking a 64 MiB journal and syncing the directory took the actor milliseconds
    /// in which no commit could start; a crash before it is done only leaves journals that
    /// start-up skips (the room files hold their changes), as a crash before the unlink did.
    removing: Option<JoinHandle<Option<Vec<u64>>>>,
}

impl Journal {
    pub fn new(fs: Arc<dyn Fs>, dir: PathBuf) -> Journal {
        Journal {
            fs,
            dir,
            inline: false,
            file: None,
            next_lsn: 1,
            generation: 0,
            spent_generation: 0,
            old: BTreeSet::new(),
            removed: false,
            records: Vec::new(),
            unsynced: BTreeSet::new(),
            unsynced_lost: false,
            refused: BTreeSet::new(),
            refold: BTreeSet::new(),
            start_generation: 0,
            in_start_journals: HashSet::new(),
            removing: None,
        }
    }

    /// Deletes covered journals on the calling thread (tests).
    #[cfg(test)]
    pub fn set_inline(&mut self, inline: bool) {
        self.inline = inline;
    }

    /// What start-up found: the journals on disk (in order), the last LSN they or the index
    /// hold, and every room they hold a record of. Nothing is open until [`Journal::rotate`].
    pub fn found(&mut self, journals: Vec<u64>, last_lsn: Lsn, rooms: HashSet<RoomName>) {
        self.next_lsn = last_lsn + 1;
        self.generation = journals.last().copied().unwrap_or(0);
        self.start_generation = self.generation;
        self.old = journals.into_iter().collect();
        self.in_start_journals = rooms;
    }

    fn path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("{JOURNAL_PREFIX}{generation}"))
    }

    /// The LSN the next change gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The generation being appended to: a fold started now covers every journal before it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a journal is open for the next append (not after an error).
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// The open journal's length.
    pub fn len(&self) -> u64 {
        self.file.as_ref().map_or(0, |j| j.len())
    }

    /// Whether older journals wait for a fold to cover them.
    pub fn has_old(&self) -> bool {
        !self.old.is_empty()
    }

    /// Relaxed mode: `names` were changed by an append that was not synced.
    pub fn unsynced(&mut self, names: impl IntoIterator<Item = RoomName>) {
        self.unsynced.extend(names);
    }

    /// Starts a new journal file. The old one stays until a fold covers it. On failure the
    /// current journal (if any) goes on as before, and the next try takes a new number.
    pub fn rotate(&mut self) -> Result<(), StorageError> {
        let mut generation = self.generation.max(self.spent_generation) + 1;
        let mut created = self.fs.create_journal(&self.path(generation));
        // A name someone else took (a file or symlink the daemon did not create): skip it,
        // never follow or delete it. Bounded, so a directory full of them still fails.
        for _ in 0..64 {
            match &created {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                _ => break,
            }
            tracing::warn!(
                "{} exists but the daemon did not create it; leaving it alone and using the next journal name (move it out of the storage directory)",
                self.path(generation).display()
            );
            generation += 1;
            created = self.fs.create_journal(&self.path(generation));
        }
        self.spent_generation = generation;
        let path = self.path(generation);
        // Only a file this call created may be removed below.
        let ours = !matches!(&created, Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists);
        let created = created.map_err(|e| StorageError::io("create the journal", &path, e));
        // The new file's directory entry must be durable before anything in it is acknowledged.
        let file = match created.and_then(|j| sync_dir(&*self.fs, &self.dir).map(|()| j)) {
            Ok(file) => file,
            Err(e) if !ours => return Err(e),
            Err(e) => {
                // Never used: remove it now, or let the next fold that covers it do so.
                match self.fs.remove(&path) {
                    Ok(()) => {}
                    Err(gone) if gone.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => {
                        self.old.insert(generation);
                    }
                }
                return Err(e);
            }
        };
        if self.generation > 0 && !std::mem::take(&mut self.removed) {
            self.old.insert(self.generation);
        }
        self.generation = generation;
        self.file = Some(file);
        Ok(())
    }

    /// At a clean stop whose rotation failed: the fold covers every journal, this one too.
    pub fn retire(&mut self) {
        self.file = None;
        if self.generation > 0 && !self.removed {
            self.old.insert(self.generation);
        }
    }

    /// Appends `changes` (starting a journal if needed), syncing them when `sync`. `rooms` is
    /// the state with `changes` applied: after a refused batch, its rooms are logged whole
    /// from it first (see the module docs).
    pub fn append(
        &mut self,
        changes: &[Change],
        sync: bool,
        rooms: &Snapshot,
    ) -> Result<(), StorageError> {
        if self.file.is_none() {
            self.rotate()?;
        }
        let mut bytes = std::mem::take(&mut self.records);
        bytes.clear();
        let repairing = !self.refused.is_empty();
        for name in &self.refused {
            journal::encode_record(&mut bytes, self.next_lsn, &whole_room(rooms, name));
            self.next_lsn += 1;
        }
        for change in changes {
            // A room logged whole above already holds this batch's changes to it: replaying
            // them on top would apply them twice.
            if repairing && self.refused.contains(change.room_name()) {
                continue;
            }
            journal::encode_record(&mut bytes, self.next_lsn, change);
            self.next_lsn += 1;
        }
        let path = self.path(self.generation);
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let good_len = file.len();
        let mut result = file.append(&bytes).map_err(|e| ("append to", e));
        // The refused records stay a danger until the whole-room ones are durable.
        if result.is_ok() && (sync || repairing) {
            result = file.sync().map_err(|e| ("fsync", e));
        }
        // Kept for the next batch, unless a rare huge batch made it big.
        if bytes.capacity() <= 8 << 20 {
            self.records = bytes;
        }
        match result {
            Ok(()) => {
                self.refused.clear();
                Ok(())
            }
            Err((action, e)) => {
                self.abandon(good_len, changes);
                Err(StorageError::io(action, path, e))
            }
        }
    }

    /// Gives up on the current journal after a failed write or sync: its unsynced pages may be
    /// lost or stale, so they are never synced again. Cuts the failed batch (`refused`) off if
    /// the disk allows; if not, its rooms are logged again (see the module docs). The next
    /// append starts a new journal.
    fn abandon(&mut self, good_len: u64, refused: &[Change]) {
        let path = self.path(self.generation);
        self.unsynced_lost |= !self.unsynced.is_empty();
        if let Some(mut file) = self.file.take() {
            if let Err(e) = file.truncate(good_len) {
                tracing::debug!("could not cut the failed batch off {}: {e}", path.display());
                for change in refused {
                    self.refused.insert(change.room_name().clone());
                    self.refold.insert(change.room_name().clone());
                }
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
            self.removed = true;
        }
    }

    /// Relaxed mode: syncs what was appended since the last sync. If that fails, the changes
    /// may be lost from the page cache, so the rooms they touched are logged again, whole.
    /// Both modes: logs the refused rooms again if no commit has yet (see the module docs).
    pub fn sync(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.sync_unsynced(rooms)?;
        if !self.refused.is_empty() {
            self.append(&[], true, rooms)?;
        }
        Ok(())
    }

    fn sync_unsynced(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        let path = self.path(self.generation);
        let synced = match self.file.as_mut() {
            Some(file) if !self.unsynced_lost => file.sync(),
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
            // Nothing refused: these changes were acknowledged, and are logged again below.
            self.abandon(self.len(), &[]);
            let again: Vec<Change> = self
                .unsynced
                .iter()
                .map(|name| whole_room(rooms, name))
                .collect();
            // Until this succeeds the changes are in no synced journal: a sync of a later
            // journal alone must not count as theirs (issue 15, found by the fault sweep).
            self.unsynced_lost = true;
            self.append(&again, true, rooms)?;
            self.unsynced_lost = false;
        }
        self.unsynced.clear();
        Ok(())
    }

    /// For deleting rooms by removing their files alone (a full disk): `None` while a journal
    /// started since the last start is on disk (it may hold records of any room); otherwise
    /// whether a journal still on disk, or the unsynced part of this one, holds a record of a
    /// room, which could bring it back at a start.
    pub fn records_of(&mut self) -> Option<impl Fn(&RoomName) -> bool + '_> {
        // A journal being removed still holds records of rooms that are not dirty.
        self.finish_removing();
        if self.old.is_empty() {
            self.in_start_journals = HashSet::new();
        }
        if self.old.iter().any(|&g| g > self.start_generation) {
            return None;
        }
        Some(|name: &RoomName| {
            self.in_start_journals.contains(name)
                || self.unsynced.contains(name)
                || self.refold.contains(name)
        })
    }

    /// For a fold that covers every journal on disk: the rooms whose files it must rewrite
    /// because a refused batch of theirs may still be in one (see the module docs).
    pub fn take_refold(&mut self) -> BTreeSet<RoomName> {
        std::mem::take(&mut self.refold)
    }

    /// Deletes journals older than `generation` (a fold has put their changes in the room
    /// files), on a thread of its own; see [`Journal::removing`].
    pub fn drop_covered(&mut self, generation: u64) {
        let covered: Vec<u64> = self.old.range(..generation).copied().collect();
        if covered.is_empty() {
            return;
        }
        let paths: Vec<PathBuf> = covered.iter().map(|g| self.path(*g)).collect();
        for g in &covered {
            self.old.remove(g);
        }
        self.finish_removing();
        let (fs, dir) = (self.fs.clone(), self.dir.clone());
        let paths: Vec<(u64, PathBuf)> = covered.into_iter().zip(paths).collect();
        match threads::spawn(self.inline, "journal-remove", move || {
            remove_journals(&*fs, &dir, &paths)
        }) {
            Ok(thread) => self.removing = Some(thread),
            Err(left) => self.old.extend(left.into_iter().flatten()),
        }
    }

    /// Waits for the last deletion of journals to be done.
    pub fn finish_removing(&mut self) {
        if let Some(thread) = self.removing.take() {
            // A journal that could not be removed is tried again after the next fold.
            if let Ok(Some(left)) = thread.join() {
                self.old.extend(left);
            }
        }
    }
}

/// Deletes journals a fold covered, then syncs the directory: not needed for correctness
/// (replay skips what the files hold), but a power loss right after a clean stop should not
/// bring old journals back. Returns the generations it could not remove.
fn remove_journals(fs: &dyn Fs, dir: &Path, paths: &[(u64, PathBuf)]) -> Vec<u64> {
    let mut left = Vec::new();
    // Oldest first, and none after one that stays: a newer journal may hold what undoes an
    // older one's records at a start (a room deleted since, a refused batch's rooms logged
    // again), so it must not go while the older one is still there.
    for (i, (generation, path)) in paths.iter().enumerate() {
        match fs.remove(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(
                    "cannot remove {} ({e}); trying again after the next fold",
                    path.display()
                );
                left.push(*generation);
                left.extend(paths[i + 1..].iter().map(|(g, _)| *g));
                break;
            }
        }
    }
    if let Err(e) = sync_dir(fs, dir) {
        tracing::warn!("{e}");
    }
    left
}

/// A `Put` of a room's whole current state (or a `Delete` if it is gone).
pub(super) fn whole_room(rooms: &Snapshot, name: &RoomName) -> Change {
    match rooms.get(name.as_str()) {
        Some(entry) => Change::Put {
            name: entry.name.clone(),
            revision: entry.revision,
            at: entry.updated_at,
            room: entry.json(),
        },
        None => Change::Delete { name: name.clone() },
    }
}
