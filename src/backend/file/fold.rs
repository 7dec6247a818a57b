//! The fold: bringing room files up to date with the rooms in memory.
//!
//! A [`FoldJob`] owns everything it needs (a snapshot, the dirty rooms, what the daemon last
//! wrote to each file), so it can run on its own thread while the actor goes on appending to a
//! journal started just before it. Its steps, each safe to be cut short by a crash:
//! 1. write `.index.next`: the index as it will be, so files already replaced are recognised as
//!    the daemon's own rather than as hand edits (replacing, atomically, one a failed fold left:
//!    the backend has first written `.index` for the files that fold did replace);
//! 2. replace each dirty room's file atomically (temp file, fsync, rename), remove deleted ones;
//! 3. fsync the directory; 4. rename `.index.next` over `.index` and fsync the directory.
//!
//! The journals the fold covers are deleted by the backend afterwards, not here (see
//! [`super::FileBackend`]), because rooms skipped for a hand edit must be re-logged first.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::fs::Fs;
use super::journal::{Index, IndexEntry, Lsn, INDEX_FORMAT};
use super::{names, quarantine, FileRecord, INDEX, INDEX_NEXT, TMP_PREFIX};
use crate::backend::StorageError;
use crate::room::entry::Snapshot;
use crate::room::RoomName;

/// Makes temp file names unique within the process, across folds and threads.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The pretty texts a fold keeps from computing the index (which needs each new file's length
/// and CRC before any file is replaced) to writing the files. Past this, a text is made again
/// when its file is written: a fold of 100,000 rooms of 5 KB held 1 GB of them at once, and
/// glibc kept most of it after the fold (issue 18).
const KEEP_TEXTS_BYTES: usize = 8 << 20;

/// A fold that wrote this much gives the heap's free memory back afterwards (a trim of a large
/// heap takes milliseconds; small folds need none).
const RELEASE_AFTER_BYTES: u64 = 8 << 20;

/// Returns the heap's free pages to the OS, in every arena.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; no pointer is invalidated.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A room file to write: where, what the index will say of it, and its text if kept.
struct Write<'a> {
    name: &'a RoomName,
    target: String,
    len: u64,
    crc: u32,
    text: Option<Vec<u8>>,
}

/// One fold's inputs.
pub(super) struct FoldJob {
    pub fs: Arc<dyn Fs>,
    pub dir: PathBuf,
    pub rooms: Snapshot,
    pub dirty: BTreeSet<RoomName>,
    pub files: HashMap<RoomName, FileRecord>,
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
        // The job (its texts, its copy of the file index) is gone now. glibc keeps freed
        // memory in the arena of the thread that used it, and a fold's thread is new each
        // time: without this a fold of 100,000 rooms left RSS 1 GB higher for good (issue 18).
        let bytes = done.written.iter().map(|(_, r)| r.len).sum::<u64>();
        if bytes >= RELEASE_AFTER_BYTES {
            release_free_memory();
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
        let mut writes: Vec<Write> = Vec::new();
        let mut kept = 0;
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
                Some(entry) => {
                    let text = entry.pretty();
                    let (len, crc) = (text.len() as u64, crc32fast::hash(&text));
                    kept += text.capacity();
                    let text = (kept <= KEEP_TEXTS_BYTES).then_some(text);
                    writes.push(Write {
                        name,
                        target,
                        len,
                        crc,
                        text,
                    });
                }
                None => {
                    if let Some(record) = record.filter(|r| r.file == target) {
                        deletions.push((name, record.file.clone()));
                    }
                }
            }
        }

        self.remove_files(&deletions, done)?;

        // 1. The index as it will be.
        let written: HashMap<&RoomName, (&str, u64, u32)> = writes
            .iter()
            .map(|w| (w.name, (w.target.as_str(), w.len, w.crc)))
            .collect();
        let entries = self.rooms.rooms.values().filter_map(|entry| {
            let (file, len, crc, lsn) = match written.get(&entry.name) {
                Some(&(file, len, crc)) => (file.to_owned(), len, crc, self.lsn),
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
                lsn,
                len,
                crc,
            })
        });
        let index = Index {
            format: INDEX_FORMAT,
            lsn: self.lsn,
            rooms: entries.collect(),
        };
        let next_path = self.path(INDEX_NEXT);
        let index_bytes = serde_json::to_vec(&index).unwrap_or_default();
        // Replaced, never removed first: a `.index.next` left by a failed fold describes files
        // it replaced, and must do so until this one takes its place.
        write_atomically(
            &*self.fs,
            &self.dir,
            INDEX_NEXT,
            &index_bytes,
            &mut done.strays,
        )?;

        // 2. The room files.
        for Write {
            name,
            target,
            len,
            crc,
            text,
        } in writes
        {
            // Made again from the same immutable snapshot: the same bytes the index describes.
            let bytes = text
                .or_else(|| self.rooms.get(name.as_str()).map(|e| e.pretty()))
                .unwrap_or_default();
            debug_assert_eq!((bytes.len() as u64, crc32fast::hash(&bytes)), (len, crc));
            write_atomically(&*self.fs, &self.dir, &target, &bytes, &mut done.strays)?;
            drop(bytes);
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

/// Replaces `dir/target` with `bytes` so that a crash leaves the old or the new file, never a mix.
fn write_atomically(
    fs: &dyn Fs,
    dir: &Path,
    target: &str,
    bytes: &[u8],
    strays: &mut Vec<PathBuf>,
) -> Result<(), StorageError> {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_path = dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
    let written = fs
        .write_new_synced(&tmp_path, bytes)
        .map_err(|e| StorageError::io("write", dir.join(target), e))
        .and_then(|()| {
            fs.rename(&tmp_path, &dir.join(target))
                .map_err(|e| StorageError::io("rename a temporary file to", dir.join(target), e))
        });
    if written.is_err() {
        // Its pages failed to sync or it was never renamed: never used again.
        match fs.remove(&tmp_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => strays.push(tmp_path),
        }
    }
    written
}
