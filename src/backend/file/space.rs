//! Headroom on a filling disk: writes stop while the room files can still be written.
//!
//! A change costs its journal record, but the room it touches must later be written whole by
//! a fold (temp file, then rename), and the journals are deleted only after that. A disk
//! filled to the last byte by journal records therefore cannot fold, cannot free its journals,
//! and cannot stop cleanly: deleting rooms frees nothing, since their changes sit in the
//! journal. So the backend keeps what the next fold needs free: a commit that would leave less
//! than that (plus [`MARGIN`]) is refused with ENOSPC, before anything is written, except a
//! batch of deletions only (a deletion frees a file at the next fold, which runs at once). What
//! the fold needs is counted as rooms become dirty, from their size in memory, and so are the
//! inodes it needs: one per room that has no file yet, plus [`MARGIN_INODES`] for its
//! temporary file, `.index.next` and the next journal (issue 15: on a tmpfs with 40 inodes, 60
//! new rooms were acknowledged and the clean stop could not write `.index.next`).
//!
//! This is PostgreSQL's and Redis's choice (refuse writes, keep serving reads), made early
//! enough that the daemon can always write every room at a clean stop, rather than a ballast
//! file (CockroachDB's): a fixed ballast cannot cover a fold whose size grows with the rooms
//! changed since the last one.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::fs::{FreeSpace, Fs};
use crate::backend::StorageError;
use crate::room::change::Change;
use crate::room::entry::{RoomEntry, Snapshot};
use crate::room::RoomName;

/// Kept free beyond what the next fold needs: the index, the directory, rounding.
pub(super) const MARGIN: u64 = 1 << 20;
/// Inodes kept free beyond the new room files: a fold's temporary file, `.index.next`, a new
/// journal, and a few spare (a deletion needs nothing beyond these).
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
    /// Inodes the dirty rooms' new files will take (rooms that have no file yet).
    need_inodes: u64,
    /// What each dirty room was counted for: bytes, and whether its file is new.
    costs: HashMap<RoomName, (u64, bool)>,
    /// What the fold in progress writes: still needed until it is merged.
    folding: u64,
    folding_inodes: u64,
    /// Whether `need` counts the rooms start-up found dirty (counted at the first commit).
    counted: bool,
    /// Bytes that may still be written before the file system is asked again: asking costs a
    /// system call, which a relaxed-mode batch without an fsync would notice.
    spare: u64,
    /// Inodes that may still be taken before the file system is asked again.
    spare_inodes: u64,
}

impl Headroom {
    /// Refuses `changes` when the disk would be left with less free than the folds need.
    /// `has_file` tells whether a room already has a file (a new one costs an inode).
    pub fn check(
        &mut self,
        fs: &dyn Fs,
        dir: &Path,
        changes: &[Change],
        batch_bytes: u64,
        has_file: impl Fn(&RoomName) -> bool,
    ) -> Result<(), StorageError> {
        let deletions_only = changes.iter().all(|c| matches!(c, Change::Delete { .. }));
        // A batch costs its journal record now and about as much again at the next fold.
        let cost = batch_bytes.saturating_mul(3);
        if deletions_only {
            return Ok(());
        }
        let inodes = self.new_files(changes, has_file);
        if let (Some(left), Some(left_inodes)) = (
            self.spare.checked_sub(cost),
            self.spare_inodes.checked_sub(inodes),
        ) {
            self.spare = left;
            self.spare_inodes = left_inodes;
            return Ok(());
        }
        match self.full_with(fs, dir, batch_bytes, inodes) {
            None => Ok(()),
            Some(full) => Err(full),
        }
    }

    /// The error a write would get now, if the disk is too full for it.
    pub fn full(&mut self, fs: &dyn Fs, dir: &Path) -> Option<StorageError> {
        self.full_with(fs, dir, 0, 0)
    }

    /// How many rooms `changes` give a file they do not have yet and are not counted for.
    fn new_files(&self, changes: &[Change], has_file: impl Fn(&RoomName) -> bool) -> u64 {
        let mut names: Vec<&RoomName> = changes
            .iter()
            .filter(|c| matches!(c, Change::Put { .. }))
            .map(|c| c.room_name())
            .filter(|name| !has_file(name) && !self.costs.get(*name).is_some_and(|c| c.1))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len() as u64
    }

    /// Asks the file system; notes how much may be written before asking again.
    fn full_with(
        &mut self,
        fs: &dyn Fs,
        dir: &Path,
        extra: u64,
        extra_inodes: u64,
    ) -> Option<StorageError> {
        let Some((free, need)) = self.shortage(fs, dir, extra, extra_inodes) else {
            // Half of what is left beyond the need: others may be filling the disk too, and
            // the upkeep tick asks again every second.
            (self.spare, self.spare_inodes) = match fs.free_space(dir) {
                Ok(Some(free)) => (
                    free.bytes.saturating_sub(self.needed(extra)) / 2,
                    free.inodes.saturating_sub(self.needed_inodes(extra_inodes)) / 2,
                ),
                _ => (u64::MAX, u64::MAX),
            };
            return None;
        };
        self.spare = 0;
        self.spare_inodes = 0;
        Some(StorageError::Full {
            dir: dir.to_owned(),
            free_bytes: free.bytes,
            free_inodes: free.inodes,
            need_bytes: need,
        })
    }

    fn needed(&self, extra: u64) -> u64 {
        self.need + self.folding + MARGIN + extra
    }

    fn needed_inodes(&self, extra: u64) -> u64 {
        self.need_inodes + self.folding_inodes + MARGIN_INODES + extra
    }

    /// What is free and what is needed, when that is too little.
    fn shortage(
        &self,
        fs: &dyn Fs,
        dir: &Path,
        extra: u64,
        extra_inodes: u64,
    ) -> Option<(FreeSpace, u64)> {
        let free = fs.free_space(dir).ok().flatten()?;
        let need = self.needed(extra);
        let short = free.bytes < need || free.inodes < self.needed_inodes(extra_inodes);
        short.then_some((free, need))
    }

    /// Counts the rooms start-up left dirty, once.
    pub fn count_dirty(
        &mut self,
        dirty: &BTreeSet<RoomName>,
        rooms: &Snapshot,
        has_file: impl Fn(&RoomName) -> bool,
    ) {
        if std::mem::replace(&mut self.counted, true) {
            return;
        }
        for name in dirty {
            if let Some(entry) = rooms.get(name.as_str()) {
                self.set(name, (file_cost(size_of(entry)), !has_file(name)));
            }
        }
    }

    /// Counts what `changes` add to the next fold.
    pub fn charge(
        &mut self,
        changes: &[Change],
        rooms: &Snapshot,
        has_file: impl Fn(&RoomName) -> bool,
    ) {
        for change in changes {
            let name = change.room_name();
            let counted_new = self.costs.get(name).is_some_and(|c| c.1);
            let new = counted_new || !has_file(name);
            match change {
                // Removing a file costs no space and no inode.
                Change::Delete { .. } => self.set(name, (0, false)),
                Change::Put { room, .. } => self.set(name, (file_cost(room.len()), new)),
                _ => {
                    let cost = match (self.costs.get(name), rooms.get(name.as_str())) {
                        // A rating or progress adds about a line to the pretty file.
                        (Some(&(old, _)), _) => (old + 512, new),
                        (None, Some(entry)) => (file_cost(size_of(entry)), new),
                        (None, None) => (0, false),
                    };
                    self.set(name, cost);
                }
            }
        }
    }

    fn set(&mut self, name: &RoomName, cost: (u64, bool)) {
        // Most changes are to a room already counted: no copy of its name for those.
        let (old, old_new) = match self.costs.get_mut(name) {
            Some(counted) => std::mem::replace(counted, cost),
            None => self.costs.insert(name.clone(), cost).unwrap_or((0, false)),
        };
        self.need = (self.need + cost.0).saturating_sub(old);
        self.need_inodes =
            (self.need_inodes + u64::from(cost.1)).saturating_sub(u64::from(old_new));
    }

    /// A fold starts with every dirty room.
    pub fn fold_started(&mut self) {
        self.folding += std::mem::take(&mut self.need);
        self.folding_inodes += std::mem::take(&mut self.need_inodes);
        self.costs.clear();
    }

    /// A fold ended: its rooms are written (`ok`) or dirty again.
    pub fn fold_ended(&mut self, ok: bool) {
        let folded = std::mem::take(&mut self.folding);
        let folded_inodes = std::mem::take(&mut self.folding_inodes);
        if !ok {
            self.need += folded;
            self.need_inodes += folded_inodes;
        }
    }
}

/// A room's compact size, without encoding a hot room just for this.
fn size_of(entry: &RoomEntry) -> usize {
    if entry.is_hot() {
        entry.summary.len() + entry.rating_count * 128 + 1024
    } else {
        // Without unpacking a compressed room (room/cold.rs).
        entry.json_len()
    }
}
