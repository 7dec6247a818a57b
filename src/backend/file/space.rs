//! Headroom on a filling disk: writes stop while the room files can still be written.
//!
//! A change costs its journal record, but the room it touches must later be written whole by
//! a fold (temp file, then rename), and the journals are deleted only after that. A disk
//! filled to the last byte by journal records therefore cannot fold, cannot free its journals,
//! and cannot stop cleanly: deleting rooms frees nothing, since their changes sit in the
//! journal. So the backend keeps what the next fold needs free: a commit that would leave less
//! than that (plus [`MARGIN`]) is refused with ENOSPC, before anything is written, except a
//! batch of deletions only (a deletion frees a file at the next fold, which runs at once). What
//! the fold needs is counted as rooms become dirty, from their size in memory.
//!
//! This is PostgreSQL's and Redis's choice (refuse writes, keep serving reads), made early
//! enough that the daemon can always write every room at a clean stop, rather than a ballast
//! file (CockroachDB's): a fixed ballast cannot cover a fold whose size grows with the rooms
//! changed since the last one.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::fs::{FreeSpace, Fs};
use crate::backend::StorageError;
use crate::room::RoomName;
use crate::store::apply::Change;
use crate::store::snapshot::{RoomEntry, Snapshot};

/// Kept free beyond what the next fold needs: the index, the directory, rounding.
pub(super) const MARGIN: u64 = 1 << 20;
/// Inodes kept free: a fold's temporary file, `.index.next`, a new journal.
pub(super) const MARGIN_INODES: u64 = 8;

/// What one room's file costs a fold, from its compact JSON: pretty-printing adds indentation
/// and newlines (measured under 1.5x for rooms with ratings), plus a block for rounding.
pub(super) fn file_cost(compact_len: usize) -> u64 {
    compact_len as u64 * 3 / 2 + 4096
}

/// What the next fold will need, kept up to date as rooms become dirty.
#[derive(Debug, Default)]
pub(super) struct Headroom {
    /// Bytes the dirty rooms' files will take.
    need: u64,
    /// What each dirty room was counted for.
    costs: HashMap<RoomName, u64>,
    /// What the fold in progress writes: still needed until it is merged.
    folding: u64,
    /// Whether `need` counts the rooms start-up found dirty (counted at the first commit).
    counted: bool,
}

impl Headroom {
    /// Refuses `changes` when the disk would be left with less free than the folds need.
    pub fn check(
        &self,
        fs: &dyn Fs,
        dir: &Path,
        changes: &[Change],
        batch_bytes: u64,
    ) -> Result<(), StorageError> {
        let deletions_only = changes.iter().all(|c| matches!(c, Change::Delete { .. }));
        if deletions_only {
            return Ok(());
        }
        match self.shortage(fs, dir, batch_bytes) {
            None => Ok(()),
            Some((free, need)) => Err(StorageError::Full {
                dir: dir.to_owned(),
                free_bytes: free.bytes,
                free_inodes: free.inodes,
                need_bytes: need,
            }),
        }
    }

    /// True when writing `extra` bytes would leave less free than the folds need.
    pub fn short(&self, fs: &dyn Fs, dir: &Path, extra: u64) -> bool {
        self.shortage(fs, dir, extra).is_some()
    }

    /// What is free and what is needed, when that is too little.
    fn shortage(&self, fs: &dyn Fs, dir: &Path, extra: u64) -> Option<(FreeSpace, u64)> {
        let free = fs.free_space(dir).ok().flatten()?;
        let need = self.need + self.folding + MARGIN + extra;
        (free.bytes < need || free.inodes < MARGIN_INODES).then_some((free, need))
    }

    /// Counts the rooms start-up left dirty, once.
    pub fn count_dirty(&mut self, dirty: &BTreeSet<RoomName>, rooms: &Snapshot) {
        if std::mem::replace(&mut self.counted, true) {
            return;
        }
        for name in dirty {
            if let Some(entry) = rooms.get(name.as_str()) {
                self.set(name, file_cost(size_of(entry)));
            }
        }
    }

    /// Counts what `changes` add to the next fold.
    pub fn charge(&mut self, changes: &[Change], rooms: &Snapshot) {
        for change in changes {
            let name = change.room_name();
            match change {
                // Removing a file costs no space.
                Change::Delete { .. } => self.set(name, 0),
                Change::Put { room, .. } => self.set(name, file_cost(room.len())),
                _ => {
                    let cost = match (self.costs.get(name), rooms.get(name.as_str())) {
                        // A rating or progress adds about a line to the pretty file.
                        (Some(&old), _) => old + 512,
                        (None, Some(entry)) => file_cost(size_of(entry)),
                        (None, None) => 0,
                    };
                    self.set(name, cost);
                }
            }
        }
    }

    fn set(&mut self, name: &RoomName, cost: u64) {
        let old = self.costs.insert(name.clone(), cost).unwrap_or(0);
        self.need = (self.need + cost).saturating_sub(old);
    }

    /// A fold starts with every dirty room.
    pub fn fold_started(&mut self) {
        self.folding += std::mem::take(&mut self.need);
        self.costs.clear();
    }

    /// A fold ended: its rooms are written (`ok`) or dirty again.
    pub fn fold_ended(&mut self, ok: bool) {
        let folded = std::mem::take(&mut self.folding);
        if !ok {
            self.need += folded;
        }
    }
}

/// A room's compact size, without encoding a hot room just for this.
fn size_of(entry: &RoomEntry) -> usize {
    if entry.is_hot() {
        entry.summary.len() + entry.rating_count * 128 + 1024
    } else {
        entry.encoded().len()
    }
}
