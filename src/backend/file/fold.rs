//! The fold: bringing room files up to date with the rooms in memory.
//!
//! A [`FoldJob`] owns everything it needs (a snapshot, the dirty rooms, what the daemon last
//! wrote to each file), so it can run on its own thread while the actor goes on appending to a
//! journal started just before it. Its steps, each safe to be cut short by a crash:
//! 0. write each dirty room's new file, and the next index, under temporary names, and make
//!    them all durable with one sync ([`super::fs::WriteBatch`]: a sync per file cost a flush
//!    of the disk per room). A failed write or sync abandons every one of them (removed, never
//!    synced again): nothing has been renamed, so each room file is still its old version;
//! 1. rename the next index to `.index.next`: the index as it will be, so files already
//!    replaced are recognised as the daemon's own rather than as hand edits (replacing,
//!    atomically, one a failed fold left: the backend has first written `.index` for the files
//!    that fold did replace);
//! 2. rename each room's new file over its old one (atomic), remove deleted ones;
//! 3. fsync the directory; 4. rename `.index.next` over `.index` and fsync the directory.
//!
//! The journals the fold covers are deleted by the backend afterwards, not here (see
//! [`super::FileBackend`]), because rooms skipped for a hand edit must be re-logged first.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::fs::{Fs, WriteBatch};
use super::journal::{IndexEntryRef, IndexWriter, Lsn};
use super::{names, quarantine, FileRecord, INDEX, INDEX_NEXT, TMP_PREFIX};
use crate::backend::StorageError;
use crate::room::entry::Snapshot;
use crate::room::RoomName;

/// Makes temp file names unique within the process, across folds and threads.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fold that wrote this much gives the heap's free memory back afterwards (a trim of a large
/// heap takes milliseconds; small folds need none).
const RELEASE_AFTER_BYTES: u64 = 8 << 20;

/// One fold's inputs.
pub(super) struct FoldJob {
    pub fs: Arc<dyn Fs>,
    pub dir: PathBuf,
    pub rooms: Snapshot,
    pub dirty: BTreeSet<RoomName>,
    pub files: Arc<HashMap<RoomName, FileRecord>>,
    /// The last change `rooms` holds.
    pub lsn: Lsn,
    /// At a clean stop a hand-edited file is quarantined and overwritten instead of skipped.
    pub closing: bool,
    /// Temporary files an earlier fold could not remove: removed first.
    pub strays: Vec<PathBuf>,
}

/// What a fold did, for the backend to merge into its records.
pub(super) struct FoldDone {
    pub result: Result<(), StorageError>,
    /// Files written, with what they now hold.
    pub written: Vec<(RoomName, FileRecord)>,
    /// Rooms whose file was removed (the room no longer exists).
    pub removed: Vec<RoomName>,
    /// Rooms not written because their file was edited by hand; still dirty.
    pub skipped: Vec<RoomName>,
    /// The job's dirty set, to restore if the fold failed.
    pub dirty: BTreeSet<RoomName>,
    /// Temporary files this fold could not remove (the disk failed twice in a row).
    pub strays: Vec<PathBuf>,
}

impl FoldJob {
    pub fn run(self) -> FoldDone {
        let done = self.fold();
        // The job (its texts, the rooms it held) is gone now: give what it freed back before
        // the thread ends (with glibc's arenas, a fold of 100,000 rooms once left RSS 1 GB
        // higher for good; see `heap`).
        let bytes = done.written.iter().map(|(_, r)| r.len).sum::<u64>();
        if bytes >= RELEASE_AFTER_BYTES {
            crate::heap::give_back();
        }
        tracing::debug!(
            "fold wrote {} room file(s), {} KiB",
            done.written.len(),
            bytes >> 10
        );
        done
    }

    fn fold(self) -> FoldDone {
        let mut done = FoldDone {
            result: Ok(()),
            written: Vec::new(),
            removed: Vec::new(),
            skipped: Vec::new(),
            dirty: BTreeSet::new(),
            strays: Vec::new(),
        };
        for path in &self.strays {
            match self.fs.remove(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => done.strays.push(path.clone()),
            }
        }
        done.result = self.write(&mut done);
        done.dirty = self.dirty;
        done
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn write(&self, done: &mut FoldDone) -> Result<(), StorageError> {
        let mut writes: Vec<(&RoomName, String)> = Vec::new();
        let mut removals: Vec<(&RoomName, String)> = Vec::new();
        // Files of deleted rooms: removed first, so that a full disk gets their space back
        // before new files are written (their rooms are gone whatever a crash leaves).
        let mut deletions: Vec<(&RoomName, String)> = Vec::new();
        for name in &self.dirty {
            let record = self.files.get(name);
            if let Some(record) = record.filter(|r| edited_by_hand(&*self.fs, &self.dir, r)) {
                if !self.closing {
                    tracing::warn!(
                        "room file {} was changed by hand; send SIGHUP to load it (until then the daemon keeps its own version of room {name:?})",
                        self.path(&record.file).display()
                    );
                    done.skipped.push(name.clone());
                    continue;
                }
                let moved = quarantine::quarantine(
                    &*self.fs,
                    &self.dir,
                    &record.file,
                    "it was changed by hand and no SIGHUP loaded it",
                );
                if !moved {
                    // Overwriting it would lose the edit: the room's state stays in the
                    // journal (re-logged for skipped rooms), the edit in its file.
                    done.skipped.push(name.clone());
                    continue;
                }
            }
            let target = names::file_name(name);
            if let Some(old) = record.filter(|r| r.file != target) {
                removals.push((name, old.file.clone()));
            }
            match self.rooms.get(name.as_str()) {
                Some(_) => writes.push((name, target)),
                None => {
                    if let Some(record) = record.filter(|r| r.file == target) {
                        deletions.push((name, record.file.clone()));
                    }
                }
            }
        }

        self.remove_files(&deletions, done)?;

        // Every new file is written first and all are synced at once (a sync per file cost a
        // flush of the disk per room), then each is renamed into place. A failed write or sync
        // abandons them all: nothing was renamed yet, so every room file is its old version.
        let mut batch = Batch {
            fs: &*self.fs,
            dir: &self.dir,
            files: self
                .fs
                .write_batch(&self.dir)
                .map_err(|e| StorageError::io("open the directory", &self.dir, e))?,
            temps: VecDeque::new(),
            strays: &mut done.strays,
        };
        // The rooms written, with their new file's length and CRC, in the order written (and
        // renamed): name order, as `dirty` is sorted. What a fold holds per room is kept small
        // (this, and its temporary file's number): it folds up to every room at once.
        let mut written: Vec<(&RoomName, u64, u32)> = Vec::with_capacity(writes.len());
        for (name, target) in writes {
            // One room's pretty form at a time: a fold of every room holds no copy of them all.
            let Some(entry) = self.rooms.get(name.as_str()) else {
                continue;
            };
            let bytes = entry.pretty();
            batch.write(target, &bytes)?;
            written.push((name, bytes.len() as u64, crc32fast::hash(&bytes)));
        }

        // 1. The index as it will be (`written` is searched by name: it is sorted).
        debug_assert!(written.windows(2).all(|w| w[0].0 < w[1].0));
        let mut index = IndexWriter::new(self.lsn, self.rooms.rooms.len());
        for entry in self.rooms.rooms.values() {
            let name = &entry.name;
            let new_file;
            let (file, len, crc, lsn) = match written.binary_search_by(|(n, ..)| (*n).cmp(name)) {
                Ok(at) => {
                    let (_, len, crc) = written[at];
                    new_file = names::file_name(name);
                    (new_file.as_str(), len, crc, self.lsn)
                }
                Err(_) => match self.files.get(name) {
                    Some(r) => (r.file.as_str(), r.len, r.crc, r.lsn),
                    None => continue,
                },
            };
            index.push(&IndexEntryRef {
                name,
                file,
                revision: entry.revision,
                updated_at: entry.updated_at,
                lsn,
                len,
                crc,
            });
        }
        let next_path = self.path(INDEX_NEXT);
        batch.write(INDEX_NEXT.to_owned(), &index.finish())?;
        batch.sync()?;
        // Replaced, never removed first: a `.index.next` left by a failed fold describes files
        // it replaced, and must do so until this one takes its place.
        batch.rename_last()?;

        // 2. The room files.
        for &(name, len, crc) in &written {
            let Some(target) = batch.rename_next()? else {
                break;
            };
            let record = FileRecord {
                stat: self.fs.stat(&self.path(&target)).ok().flatten(),
                file: target,
                len,
                crc,
                lsn: self.lsn,
                revision: self.rooms.get(name.as_str()).map_or(0, |e| e.revision),
            };
            done.written.push((name.clone(), record));
        }
        drop(batch);
        // A room's old file may be another room's new one (two rooms' files swapped by hand,
        // or a file renamed to another room's name): that file was just written, keep it.
        if !removals.is_empty() {
            let targets: std::collections::HashSet<String> = written
                .iter()
                .map(|(name, ..)| names::file_name(name))
                .collect();
            removals.retain(|(_, file)| !targets.contains(file));
        }
        self.remove_files(&removals, done)?;
        // 3 and 4.
        sync_dir(&*self.fs, &self.dir)?;
        self.fs
            .rename(&next_path, &self.path(INDEX))
            .map_err(|e| StorageError::io("rename .index.next to", self.path(INDEX), e))?;
        sync_dir(&*self.fs, &self.dir)
    }
}

impl FoldJob {
    /// Removes room files, noting those of rooms that no longer exist.
    fn remove_files(
        &self,
        files: &[(&RoomName, String)],
        done: &mut FoldDone,
    ) -> Result<(), StorageError> {
        for (name, file) in files {
            match self.fs.remove(&self.path(file)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove", self.path(file), e)),
            }
            if self.rooms.get(name.as_str()).is_none() {
                done.removed.push((*name).clone());
            }
        }
        Ok(())
    }
}

pub(super) fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
    fs.sync_dir(dir)
        .map_err(|e| StorageError::io("fsync the directory", dir, e))
}

/// True if the file no longer holds what the daemon last wrote or read there.
pub(super) fn edited_by_hand(fs: &dyn Fs, dir: &Path, record: &FileRecord) -> bool {
    let path = dir.join(&record.file);
    match fs.stat(&path) {
        Ok(stat) if stat == record.stat => false,
        // Removed by hand: that is an edit too (SIGHUP deletes the room).
        Ok(None) => true,
        // The stat moved (touched, or rewritten): decide by content.
        _ => match fs.read(&path) {
            Ok(bytes) => bytes.len() as u64 != record.len || crc32fast::hash(&bytes) != record.crc,
            Err(_) => false,
        },
    }
}

/// A temporary file's number, and the file it is to replace.
type Temp = (u64, String);

/// A fold's new files: written under temporary names, synced together, then renamed into place
/// in the order written. Dropped before every one is renamed (an error), it removes the rest:
/// their pages failed to sync or were never renamed, so they are never used again.
struct Batch<'a> {
    fs: &'a dyn Fs,
    dir: &'a Path,
    files: Box<dyn WriteBatch + 'a>,
    /// Temporary files not yet renamed (by number: see [`Batch::temp_path`]), each with its
    /// target, in the order written.
    temps: VecDeque<Temp>,
    /// Where the temporary files that cannot be removed go (the next fold removes them).
    strays: &'a mut Vec<PathBuf>,
}

impl Batch<'_> {
    /// Writes what is to replace `target` in the directory, under a temporary name.
    fn write(&mut self, target: String, bytes: &[u8]) -> Result<(), StorageError> {
        let dir = self.dir;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_path = Batch::temp_path(dir, n);
        let written = self
            .files
            .write_new(&tmp_path, bytes)
            .map_err(|e| StorageError::io("write", dir.join(&target), e));
        // Listed even if the write failed: it may have created the file.
        self.temps.push_back((n, target));
        written
    }

    /// The temporary file numbered `n` (its path is made again when needed, not kept).
    fn temp_path(dir: &Path, n: u64) -> PathBuf {
        dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()))
    }

    /// Makes every file written durable.
    fn sync(&mut self) -> Result<(), StorageError> {
        let dir = self.dir;
        self.files
            .sync()
            .map_err(|e| StorageError::io("fsync the new room files in", dir, e))
    }

    /// Renames the first file written (not yet renamed) into place; `None` when all are.
    fn rename_next(&mut self) -> Result<Option<String>, StorageError> {
        let Some(temp) = self.temps.pop_front() else {
            return Ok(None);
        };
        self.rename(temp, VecDeque::push_front)
    }

    /// Renames the last file written into place (the index, which goes before the rooms).
    fn rename_last(&mut self) -> Result<Option<String>, StorageError> {
        let Some(temp) = self.temps.pop_back() else {
            return Ok(None);
        };
        self.rename(temp, VecDeque::push_back)
    }

    /// Renames `temp` to its target; on an error puts it back with `back`, to be removed.
    fn rename(
        &mut self,
        (n, target): Temp,
        back: fn(&mut VecDeque<Temp>, Temp),
    ) -> Result<Option<String>, StorageError> {
        let dir = self.dir;
        if let Err(e) = self
            .fs
            .rename(&Batch::temp_path(dir, n), &dir.join(&target))
        {
            back(&mut self.temps, (n, target.clone()));
            let action = "rename a temporary file to";
            return Err(StorageError::io(action, dir.join(target), e));
        }
        Ok(Some(target))
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for (n, _) in self.temps.drain(..) {
            let path = Batch::temp_path(self.dir, n);
            match self.fs.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => self.strays.push(path),
            }
        }
    }
}
