//! Hand edits found at start (made after a crash or a stop), checked against the journal.
//!
//! A room file whose bytes `.index` does not know is a hand edit. It edited the room's latest
//! state only if the journal holds no change of the room newer than what the file held. If it
//! does (a crash came before the fold that would have written them), taking the edit and then
//! replaying those changes would serve a revision the room already had with other contents.
//! So the rule SIGHUP applies holds at start too:
//! - no newer change: the edit is taken, at the room's latest revision + 1;
//! - newer changes, and the version the edit replaced is known (the `.cache` entry for the
//!   bytes `.index` recorded, or a whole-room change in the journal): the edit is refused and
//!   set aside, the room is rebuilt from that version and the journal, and its file is written
//!   again;
//! - newer changes, and that version is gone (the edited file is the only copy of the rest of
//!   the room): the journal's changes are applied on top of the edit, so none is lost, and the
//!   room gets a revision above all of them.
//!
//! A WARN names the room, both revisions and the path. The rebuilt room is logged again,
//! whole, in the new journal, so a crash before the next fold cannot lose or recount it.

use std::collections::HashMap;
use std::sync::Arc;

use super::cache::Cache;
use super::journal::IndexEntry;
use super::{quarantine, FileBackend};
use crate::room::change::Change;
use crate::room::entry::RoomMap;
use crate::room::{now_millis, EpochMillis, Revision, RoomName};
use crate::store::apply;

/// A room file edited by hand, as `.index` knew it before the edit.
pub(super) struct Edited {
    file: String,
    held: Revision,
    updated_at: EpochMillis,
    len: u64,
    crc: u32,
}

impl Edited {
    pub fn new(known: &IndexEntry) -> Self {
        Edited {
            file: known.file.clone(),
            held: known.revision,
            updated_at: known.updated_at,
            len: known.len,
            crc: known.crc,
        }
    }
}

/// The hand-edited rooms at start and the journal records replayed onto them.
#[derive(Default)]
pub(super) struct StartEdits {
    edited: HashMap<RoomName, Edited>,
    newer: HashMap<RoomName, Vec<Change>>,
}

impl StartEdits {
    pub fn edited(&mut self, name: RoomName, edited: Edited) {
        self.edited.insert(name, edited);
    }

    /// Notes a journal record replayed onto its room (only kept for edited rooms).
    pub fn replayed(&mut self, change: &Change) {
        if self.edited.is_empty() {
            return; // the usual start: no per-record cost
        }
        let name = change.room_name();
        if self.edited.contains_key(name) {
            self.newer
                .entry(name.clone())
                .or_default()
                .push(change.clone());
        }
    }

    /// Applies the rule of the module docs once the journals are replayed (and every room is
    /// cold). Returns the rooms to log again, whole, in the new journal.
    pub fn settle(
        mut self,
        b: &mut FileBackend,
        rooms: &mut RoomMap,
        cache: &Cache,
    ) -> Vec<Change> {
        let mut rejournal = Vec::new();
        for (name, edit) in self.edited {
            let path = b.path(&edit.file);
            if b.files.get(&name).is_none_or(|r| r.file != edit.file) {
                continue; // another file won the room (see `claims`)
            }
            let Some(records) = self.newer.remove(&name) else {
                tracing::info!(
                    "room file {} was edited by hand; room {:?} is now at revision {}",
                    path.display(),
                    name.as_str(),
                    edit.held + 1
                );
                continue;
            };
            let latest = records.iter().filter_map(revision).max().unwrap_or(0);
            let base = cache.get(&edit.file, edit.len, edit.crc);
            let whole = records.iter().any(|c| matches!(c, Change::Put { .. }));
            let moved = (base.is_some() || whole)
                .then(|| {
                    let why = "it was edited while the journal held newer changes of its room";
                    quarantine::set_aside(&*b.fs, &b.dir, &edit.file, why)
                })
                .flatten();
            if let Some(target) = moved {
                rooms.remove(name.as_str());
                if let Some(base) = base {
                    rooms.insert(
                        name.clone(),
                        Arc::new(base.entry(edit.held, edit.updated_at)),
                    );
                }
                for change in &records {
                    apply::replay(rooms, change);
                }
                if let Some(entry) = rooms.get(name.as_str()).filter(|e| e.is_hot()) {
                    let cold = entry.cooled();
                    rooms.insert(name.clone(), Arc::new(cold));
                }
                tracing::warn!(
                    "refused the hand edit of room {:?} in {}: the file held revision {} but the journal holds the room's changes up to revision {latest}, acknowledged before the daemon stopped, so applying it would lose them; moved the edit to {} and the room keeps revision {latest}, written to its file again; redo the edit on the new file, or use `moviematch-storage edit`",
                    name.as_str(),
                    path.display(),
                    edit.held,
                    target.display()
                );
                b.files_mut().remove(&name);
            } else {
                // The version the edit replaced is gone: keep the edit as the base, with the
                // journal's changes on top, at a revision no other content had.
                let Some(entry) = rooms.get(name.as_str()) else {
                    // The journal deleted the room after the file was written: the fold would
                    // remove the file, so keep the edit aside instead.
                    let why = "it was edited, but its room was deleted after the file was written";
                    if quarantine::quarantine(&*b.fs, &b.dir, &edit.file, why) {
                        b.files_mut().remove(&name);
                    }
                    continue;
                };
                let entry = entry.cooled_at(latest + 1, now_millis());
                rooms.insert(name.clone(), Arc::new(entry));
                tracing::warn!(
                    "room file {} was edited by hand, but it held revision {} and the journal holds room {:?}'s changes up to revision {latest}; the version the edit replaced is gone, so those changes were applied on top of the edit and the room is now at revision {}; check it",
                    path.display(),
                    edit.held,
                    name.as_str(),
                    latest + 1
                );
            }
            b.dirty.insert(name.clone());
            if let Some(entry) = rooms.get(name.as_str()) {
                rejournal.push(Change::Put {
                    name,
                    revision: entry.revision,
                    at: entry.updated_at,
                    room: entry.encoded().clone(),
                });
            }
        }
        rejournal
    }
}

fn revision(change: &Change) -> Option<Revision> {
    match change {
        Change::Put { revision, .. }
        | Change::Rate { revision, .. }
        | Change::Progress { revision, .. } => Some(*revision),
        Change::Delete { .. } => None,
    }
}
