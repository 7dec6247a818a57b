//! The `file` backend: one pretty JSON file per room, made fast and crash-safe by a journal.
//!
//! Layout of the storage directory (0700; every file 0600):
//! - `<room>.json`: the room object, exactly, pretty-printed (names: see [`names`]).
//! - `.journal-<generation>`: changes since the room files were last brought up to date.
//! - `.index`: per room, its revision and what the daemon last wrote to its file.
//! - `.index.next`: the next `.index`, present only while a fold is in progress.
//! - `.lock`: held by the running daemon. `.tmp-*`: files being written. `.quarantine/`: files
//!   that were not valid rooms, moved aside.
//!
//! A commit appends the batch's changes to the journal and syncs it once (`strict`), or leaves
//! the sync to the next tick (`relaxed`). A *fold* brings the room files up to date: it writes
//! `.index.next`, replaces each changed room file atomically (temp file, fsync, rename), syncs the
//! directory, renames `.index.next` over `.index`, and starts a new, empty journal. Folds happen
//! at start, when the journal grows large or old, after a storage error, and at a clean stop, so
//! after a clean stop the room files alone hold every room's latest state.
//!
//! Recovery ([`load`]) reads the room files, recognises which ones the daemon wrote itself (by
//! length and CRC in `.index` or `.index.next`), then replays journal records newer than each
//! file. A failed journal write or sync is never retried on the same pages: the journal is
//! abandoned (cut back to its last good length) and the next commit starts a fresh one via a fold.

mod fs;
mod journal;
mod load;
pub mod names;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use self::fs::{AppendFile, FileStat};
pub use self::fs::{Fs, RealFs};
use self::journal::{Index, IndexEntry, Lsn, INDEX_FORMAT};
use super::{Backend, Reloaded, StorageError};
use crate::config::Durability;
use crate::room::RoomName;
use crate::store::apply::Change;
use crate::store::snapshot::{RoomMap, Snapshot};

/// Fold when the journal holds this much (bounds replay time at start).
const FOLD_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// Fold at least this often while rooms are dirty, so room files stay reasonably fresh.
const FOLD_INTERVAL: Duration = Duration::from_secs(60);

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
}

/// The `file` backend. See the module docs.
pub struct FileBackend {
    fs: Box<dyn Fs>,
    dir: PathBuf,
    durability: Durability,
    /// Held (flock) for as long as the backend lives: one daemon per directory.
    _lock: Option<std::fs::File>,
    files: HashMap<RoomName, FileRecord>,
    /// Rooms whose file does not hold their latest state.
    dirty: BTreeSet<RoomName>,
    next_lsn: Lsn,
    generation: u64,
    /// `None` after a failed write: the next commit folds and starts a new journal.
    journal: Option<Box<dyn AppendFile>>,
    unsynced: bool,
    last_fold: Instant,
    /// Set by a reload that quarantined a file: fold right after the reload's commit.
    fold_soon: bool,
    tmp_counter: u64,
}

impl FileBackend {
    /// A backend for `dir` using the real file system. Nothing is touched until `load`.
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> FileBackend {
        FileBackend::with_fs(Box::new(RealFs), dir, durability)
    }

    /// A backend over any [`Fs`] (tests use one that models power loss).
    pub fn with_fs(fs: Box<dyn Fs>, dir: impl Into<PathBuf>, durability: Durability) -> Self {
        FileBackend {
            fs,
            dir: dir.into(),
            durability,
            _lock: None,
            files: HashMap::new(),
            dirty: BTreeSet::new(),
            next_lsn: 1,
            generation: 0,
            journal: None,
            unsynced: false,
            last_fold: Instant::now(),
            fold_soon: false,
            tmp_counter: 0,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn journal_path(&self, generation: u64) -> PathBuf {
        self.path(&format!("{JOURNAL_PREFIX}{generation}"))
    }

    fn io(&self, action: &'static str, file: &str) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = self.path(file);
        move |e| StorageError::io(action, path, e)
    }

    /// Appends `changes` to the journal, syncing in strict mode.
    fn append(&mut self, changes: &[Change]) -> Result<(), StorageError> {
        let mut bytes = Vec::with_capacity(256 * changes.len());
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
        if result.is_ok() && self.durability == Durability::Strict {
            result = journal.sync().map_err(|e| ("fsync", e));
        }
        match result {
            Ok(()) => {
                self.unsynced = self.durability == Durability::Relaxed;
                Ok(())
            }
            Err((action, e)) => {
                self.abandon_journal(good_len);
                Err(StorageError::io(action, path, e))
            }
        }
    }

    /// Gives up on the current journal after a failed write or sync: its unsynced pages may be
    /// lost or may be stale, so they are never synced again. Cuts off the failed batch if the
    /// disk allows, then leaves the journal closed so the next commit folds into a new one.
    fn abandon_journal(&mut self, good_len: u64) {
        if let Some(mut journal) = self.journal.take() {
            if let Err(e) = journal.truncate(good_len) {
                tracing::warn!(
                    "could not cut the failed batch off {}: {e}; it will be ignored after the next fold",
                    self.journal_path(self.generation).display()
                );
            }
        }
        tracing::warn!(
            "journal {} abandoned after a storage error; the next change starts a new one",
            self.journal_path(self.generation).display()
        );
    }

    /// Syncs what relaxed mode has appended but not yet synced.
    fn sync_journal(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        if self.journal.is_none() {
            return self.fold(rooms, false);
        }
        if !self.unsynced {
            return Ok(());
        }
        let path = self.journal_path(self.generation);
        let synced = self.journal.as_mut().map_or(Ok(()), |j| j.sync());
        match synced {
            Ok(()) => {
                self.unsynced = false;
                Ok(())
            }
            Err(e) => {
                // The acknowledged changes are still in memory: write them out by a fold.
                tracing::error!(
                    "cannot fsync {}: {e}; writing the room files instead",
                    path.display()
                );
                self.journal = None;
                self.unsynced = false;
                self.fold(rooms, false)
            }
        }
    }

    /// Brings the room files up to date with `rooms` and starts a new journal (module docs).
    /// `closing`: a hand-edited room file is moved to `.quarantine/` and overwritten rather
    /// than left for a SIGHUP to load.
    fn fold(&mut self, rooms: &Snapshot, closing: bool) -> Result<(), StorageError> {
        let lsn = self.next_lsn - 1;
        let mut writes: Vec<(RoomName, String, Vec<u8>)> = Vec::new();
        let mut removals: Vec<String> = Vec::new();
        let mut kept_dirty: Vec<RoomName> = Vec::new();
        for name in &self.dirty {
            if let Some(record) = self.files.get(name) {
                if self.edited_by_hand(record) {
                    if !closing {
                        tracing::warn!(
                            "room file {} was changed by hand; send SIGHUP to load it (until then the daemon keeps its own version of room {name:?})",
                            self.path(&record.file).display()
                        );
                        kept_dirty.push(name.clone());
                        continue;
                    }
                    self.quarantine(&record.file, "it was changed by hand without a SIGHUP");
                }
            }
            let target = names::file_name(name);
            match rooms.get(name.as_str()) {
                Some(entry) => {
                    let mut bytes = serde_json::to_vec_pretty(&*entry.doc).unwrap_or_default();
                    bytes.push(b'\n');
                    if let Some(old) = self.files.get(name).filter(|r| r.file != target) {
                        removals.push(old.file.clone());
                    }
                    writes.push((name.clone(), target, bytes));
                }
                None => {
                    if let Some(record) = self.files.get(name) {
                        removals.push(record.file.clone());
                    }
                }
            }
        }

        // 1. The index as it will be once every file is written, so a crash mid-fold can tell
        //    the new files from hand edits.
        let written: HashMap<&RoomName, (u64, u32)> = writes
            .iter()
            .map(|(name, _, bytes)| (name, (bytes.len() as u64, crc32fast::hash(bytes))))
            .collect();
        let index = Index {
            format: INDEX_FORMAT,
            lsn,
            rooms: rooms
                .rooms
                .values()
                .filter_map(|entry| {
                    let (file, len, crc, entry_lsn) = match written.get(&entry.name) {
                        Some(&(len, crc)) => (names::file_name(&entry.name), len, crc, lsn),
                        None => {
                            let r = self.files.get(&entry.name)?;
                            (r.file.clone(), r.len, r.crc, r.lsn)
                        }
                    };
                    Some(IndexEntry {
                        name: entry.name.clone(),
                        file,
                        revision: entry.revision,
                        updated_at: entry.updated_at,
                        lsn: entry_lsn,
                        len,
                        crc,
                    })
                })
                .collect(),
        };
        let index_bytes = serde_json::to_vec(&index).unwrap_or_default();
        let next_path = self.path(INDEX_NEXT);
        if self.fs.stat(&next_path).ok().flatten().is_some() {
            self.fs
                .remove(&next_path)
                .map_err(self.io("remove", INDEX_NEXT))?;
        }
        self.fs
            .write_new_synced(&next_path, &index_bytes)
            .map_err(self.io("write", INDEX_NEXT))?;

        // 2. The room files, each replaced atomically.
        for (name, target, bytes) in &writes {
            self.write_atomically(target, bytes)?;
            let stat = self.fs.stat(&self.path(target)).ok().flatten();
            let (len, crc) = written[name];
            let record = FileRecord {
                file: target.clone(),
                len,
                crc,
                stat,
                lsn,
            };
            self.files.insert(name.clone(), record);
        }
        for file in &removals {
            match self.fs.remove(&self.path(file)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove", self.path(file), e)),
            }
        }
        self.files
            .retain(|name, _| rooms.get(name.as_str()).is_some());
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| StorageError::io("fsync directory", &self.dir, e))?;

        // 3. Commit the fold: the new index, then a new journal.
        self.fs
            .rename(&next_path, &self.path(INDEX))
            .map_err(self.io("rename .index.next to", INDEX))?;
        let old_generation = self.generation;
        self.generation += 1;
        let new_journal = self
            .fs
            .open_append(&self.journal_path(self.generation))
            .map_err(|e| StorageError::io("create", self.journal_path(self.generation), e))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| StorageError::io("fsync directory", &self.dir, e))?;
        self.journal = Some(new_journal);
        self.unsynced = false;
        self.dirty.clear();
        self.last_fold = Instant::now();
        let _ = self.fs.remove(&self.journal_path(old_generation));

        // Rooms skipped because of a hand edit live only in memory and the old journal, which
        // is gone: log their state again so a crash cannot lose it.
        if !kept_dirty.is_empty() {
            let changes: Vec<Change> = kept_dirty
                .iter()
                .filter_map(|name| rooms.get(name.as_str()))
                .map(|entry| Change::Put {
                    name: entry.name.clone(),
                    revision: entry.revision,
                    at: entry.updated_at,
                    room: entry.doc.clone(),
                })
                .collect();
            let strict = std::mem::replace(&mut self.durability, Durability::Strict);
            let result = self.append(&changes);
            self.durability = strict;
            result?;
            self.dirty.extend(kept_dirty);
        }
        Ok(())
    }

    /// True if the file no longer holds what the daemon last wrote or read there.
    fn edited_by_hand(&self, record: &FileRecord) -> bool {
        let path = self.path(&record.file);
        match self.fs.stat(&path) {
            Ok(stat) if stat == record.stat => false,
            Ok(None) => false,
            // The stat moved (touched, or a same-size rewrite): decide by content.
            _ => match self.fs.read(&path) {
                Ok(bytes) => {
                    bytes.len() as u64 != record.len || crc32fast::hash(&bytes) != record.crc
                }
                Err(_) => false,
            },
        }
    }

    fn write_atomically(&mut self, target: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.tmp_counter += 1;
        let tmp = format!("{TMP_PREFIX}{}-{}", std::process::id(), self.tmp_counter);
        let tmp_path = self.path(&tmp);
        if let Err(e) = self.fs.write_new_synced(&tmp_path, bytes) {
            let _ = self.fs.remove(&tmp_path);
            return Err(StorageError::io("write", self.path(target), e));
        }
        self.fs
            .rename(&tmp_path, &self.path(target))
            .map_err(self.io("rename a temporary file to", target))
    }

    /// Moves `file` into `.quarantine/`, with a warning saying why; never deletes it.
    fn quarantine(&self, file: &str, why: &str) {
        let dir = self.dir.join(QUARANTINE);
        let stamp = crate::room::now_millis();
        let target = dir.join(format!("{file}.{stamp}"));
        let moved = self
            .fs
            .create_private_dir(&dir)
            .and_then(|()| self.fs.rename(&self.path(file), &target));
        match moved {
            Ok(()) => tracing::warn!(
                "moved room file {} to {} because {why}; fix it and move it back, then send SIGHUP",
                self.path(file).display(),
                target.display()
            ),
            Err(e) => tracing::error!(
                "room file {} is unusable ({why}) and could not be moved to {}: {e}",
                self.path(file).display(),
                dir.display()
            ),
        }
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
        self.dirty
            .extend(changes.iter().map(|c| c.room_name().clone()));
        if self.journal.is_none() {
            // After a storage error: the fold writes every dirty room, this batch included.
            self.next_lsn += changes.len() as u64;
            return self.fold(rooms, false);
        }
        self.append(changes)?;
        if std::mem::take(&mut self.fold_soon) {
            self.fold(rooms, false)?;
        }
        Ok(())
    }

    fn sync(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.sync_journal(rooms)
    }

    fn maintain(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.sync_journal(rooms)?;
        let journal_len = self.journal.as_ref().map_or(0, |j| j.len());
        let stale = !self.dirty.is_empty() && self.last_fold.elapsed() >= FOLD_INTERVAL;
        if journal_len >= FOLD_JOURNAL_BYTES || stale {
            self.fold(rooms, false)?;
        }
        Ok(())
    }

    fn reload(&mut self, rooms: &Snapshot) -> Result<Reloaded, StorageError> {
        load::reload(self, rooms)
    }

    fn close(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.sync_journal(rooms)?;
        self.fold(rooms, true)?;
        tracing::info!(
            "every room is in its file under {} ({} rooms)",
            self.dir.display(),
            rooms.rooms.len()
        );
        Ok(())
    }
}
