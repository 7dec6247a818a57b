//! SIGHUP: taking in what an operator changed in the storage directory, losing nothing.
//!
//! Each room file is compared with what the daemon last wrote or read there. A changed file is
//! a hand edit, and it is applied only if the file it edits held the room's latest state: the
//! room was not changed since its file was last written (it is not dirty: no change of it is
//! only in the journal). Otherwise applying it would silently undo acknowledged changes, so it
//! is refused: the edited file goes to `.quarantine/`, the room's file is written again with
//! the latest state, and a warning names the room, both revisions and where the edit went.
//! The same holds for a file that appears for a room that already exists: under the room's own
//! name (the daemon's or MovieMatch's) it is an edit; under an unrelated name (a copy) it never
//! replaces the room. A new file for a new room adds it; a removed file removes its room only
//! if it held the room's latest state (otherwise the room keeps its state and its file is
//! written again, with a warning naming both revisions).
//!
//! Never read: anything at a room file's name that is not a regular file (a FIFO would block
//! the reader). Its room keeps its state and the file is written again by the next fold.

use std::collections::{HashMap, HashSet};

use super::fs::EntryKind;
use super::read::read_file;
use super::{cache::Cache, fold, names, quarantine, FileBackend, FileRecord};
use crate::backend::{Reloaded, StorageError};
use crate::room::change::Change;
use crate::room::entry::Snapshot;
use crate::room::{now_millis, RoomName};

/// Compares every room file with what the daemon last wrote or read there; see the module docs.
pub(super) fn reload(b: &mut FileBackend, rooms: &Snapshot) -> Result<Reloaded, StorageError> {
    let entries =
        b.fs.read_dir(&b.dir)
            .map_err(|e| StorageError::io("list the storage directory", &b.dir, e))?;
    let by_file: HashMap<String, RoomName> = b
        .files
        .iter()
        .map(|(name, r)| (r.file.clone(), name.clone()))
        .collect();
    let mut changes = Vec::new();
    let mut seen = HashSet::new();
    let now = now_millis();
    for entry in entries {
        if !names::is_room_file(&entry.name) {
            continue;
        }
        let file = entry.name;
        let owner = by_file.get(&file).cloned();
        if entry.kind != EntryKind::File {
            if let Some(name) = owner {
                not_a_regular_file(b, &file, name, entry.kind);
                seen.insert(file);
            }
            continue;
        }
        seen.insert(file.clone());
        if let Some(record) = owner.as_ref().and_then(|n| b.files.get(n)) {
            if !fold::edited_by_hand(&*b.fs, &b.dir, record) {
                continue;
            }
        }
        let stat = b.fs.stat(&b.path(&file)).ok().flatten();
        let read = read_file(&*b.fs, &b.dir, &file, stat, &Cache::default());
        if let Some(e) = &read.unreadable {
            // The disk failed, not the file: keep the room as it is until the next SIGHUP.
            tracing::warn!(
                "cannot read room file {} ({e}); keeping the room as it was, send SIGHUP again",
                b.path(&file).display()
            );
            continue;
        }
        let room = match read.room {
            Ok(room) => room,
            Err(why) => {
                invalid(b, &file, owner, &why);
                continue;
            }
        };
        let name = room.name.clone();
        if let Some(owner) = owner.as_ref().filter(|o| **o != name) {
            // The edit renamed the room inside its file: neither room may be replaced by it.
            let why = format!(
                "it was the file of room {:?} but now holds room {:?}; to rename a room, save it under the new name and delete the old one",
                owner.as_str(),
                name.as_str()
            );
            if quarantine::quarantine(&*b.fs, &b.dir, &file, &why) {
                rewrite(b, owner);
            }
            continue;
        }
        if let Some(refusal) = refusal(b, rooms, &file, &name) {
            refuse(b, rooms, &file, &name, refusal);
            continue;
        }
        let revision = rooms.get(name.as_str()).map_or(0, |e| e.revision) + 1;
        tracing::info!(
            "reloaded room {:?} from {} (revision {revision})",
            name.as_str(),
            b.path(&file).display()
        );
        if let Err(e) = b.fs.make_private(&b.path(&file)) {
            tracing::warn!("cannot make {} 0600: {e}", b.path(&file).display());
        }
        if file != names::file_name(&name) {
            b.dirty.insert(name.clone());
        }
        let lsn = b.journal.next_lsn();
        let record = FileRecord {
            file,
            len: read.len,
            crc: read.crc,
            stat: b.fs.stat(&b.path(&read.file)).ok().flatten(),
            lsn,
            revision,
        };
        b.files_mut().insert(name.clone(), record);
        changes.push(Change::Put {
            name,
            revision,
            at: now,
            room: room.json(),
        });
    }
    let removed: Vec<RoomName> = b
        .files
        .iter()
        .filter(|(name, r)| !seen.contains(&r.file) && rooms.get(name.as_str()).is_some())
        .map(|(name, _)| name.clone())
        .collect();
    for name in removed {
        // Like an edit, a removal is honoured only if the file held the room's latest state:
        // removing a file that lagged its room would delete acknowledged changes with it.
        if b.dirty.contains(&name) {
            let (held, file) = b.files.get(&name).map_or_else(
                || (0, names::file_name(&name)),
                |r| (r.revision, r.file.clone()),
            );
            let latest = rooms.get(name.as_str()).map_or(0, |e| e.revision);
            tracing::warn!(
                "refused the removal of room {:?}'s file {}: the file held revision {held} but the room is at revision {latest} (its newer changes were not yet in the file), so deleting the room would lose acknowledged changes; the room keeps revision {latest}, written to its file again; to delete the room, `moviematch-storage fold` right before removing its file",
                name.as_str(),
                b.path(&file).display()
            );
            rewrite(b, &name);
            continue;
        }
        tracing::info!(
            "room file of {:?} was removed by hand; deleting the room",
            name.as_str()
        );
        b.files_mut().remove(&name);
        changes.push(Change::Delete { name });
    }
    if changes.is_empty() && b.folds.soon {
        // Nothing to commit, so fold now to write back the rooms whose files were set aside.
        b.folds.soon = false;
        b.start_fold(rooms, false, false)?;
    }
    Ok(Reloaded { changes })
}

/// Why a valid room file that changed may not replace its room, if it may not.
enum Refusal {
    /// A file under an unrelated name holds a room that has a file of its own.
    Copy { own: String },
    /// The room changed since the file was written: the edit lacks those changes.
    Stale,
}

fn refusal(b: &FileBackend, rooms: &Snapshot, file: &str, name: &RoomName) -> Option<Refusal> {
    let record = b.files.get(name);
    if rooms.get(name.as_str()).is_none() && record.is_none() {
        return None; // a new room
    }
    let own_file = record.is_some_and(|r| r.file == file);
    if !own_file && names::claim(file, name) == names::Claim::Unrelated {
        let own = record.map_or_else(|| names::file_name(name), |r| r.file.clone());
        return Some(Refusal::Copy { own });
    }
    // Its file held the latest state only if it is the room's file and no change of the room
    // since is only in the journal.
    (!own_file || b.dirty.contains(name)).then_some(Refusal::Stale)
}

/// Sets the refused file aside and has the room's own file written again if it was that one.
fn refuse(b: &mut FileBackend, rooms: &Snapshot, file: &str, name: &RoomName, why: Refusal) {
    let latest = rooms.get(name.as_str()).map_or(0, |e| e.revision);
    let record = b.files.get(name);
    let reason = match &why {
        Refusal::Copy { own } => {
            format!("it holds room {:?}, whose own file is {own}", name.as_str())
        }
        Refusal::Stale => "it was edited while the room had changes not yet in it".to_owned(),
    };
    let Some(target) = quarantine::set_aside(&*b.fs, &b.dir, file, &reason) else {
        keep_beside(b, name);
        return;
    };
    let path = b.path(file);
    match why {
        Refusal::Copy { own } => tracing::warn!(
            "{} holds room {:?}, whose own file is {}: a copy under another name never replaces a room; moved it to {}",
            path.display(),
            name.as_str(),
            b.path(&own).display(),
            target.display()
        ),
        Refusal::Stale => {
            let held = match record.filter(|r| r.file == file) {
                Some(r) => format!("revision {}", r.revision),
                None => "no revision the daemon wrote".to_owned(),
            };
            let now = match latest {
                0 => "the room was deleted since".to_owned(),
                n => format!("the room is at revision {n} (its newer changes were not yet in the file)"),
            };
            tracing::warn!(
                "refused the hand edit of room {:?} in {}: the file held {held} but {now}, so applying it would lose acknowledged changes; moved the edit to {} and the room keeps revision {latest}, written to its file again; use `moviematch-storage edit`, or `moviematch-storage fold` right before editing",
                name.as_str(),
                path.display(),
                target.display()
            )
        }
    }
    if b.files.get(name).is_none_or(|r| r.file == file) {
        rewrite(b, name);
    }
}

/// The room keeps its state; its file is written again at once (the file is gone on purpose,
/// so it is not a removal to honour).
fn rewrite(b: &mut FileBackend, name: &RoomName) {
    b.files_mut().remove(name);
    b.dirty.insert(name.clone());
    b.folds.soon = true;
}

/// A changed file that is not a valid room: set aside, and its room (if any) written again.
fn invalid(b: &mut FileBackend, file: &str, owner: Option<RoomName>, why: &str) {
    let moved = quarantine::quarantine(&*b.fs, &b.dir, file, why);
    match owner {
        Some(name) if moved => rewrite(b, &name),
        Some(name) => keep_beside(b, &name),
        None => {}
    }
}

/// A refused file that could not be set aside stays in place and the room keeps its state.
/// Folds skip a file changed by hand (with a warning) and log the room again, whole, in the
/// journal, so neither the edit nor the room is lost, at a clean stop either.
fn keep_beside(b: &mut FileBackend, name: &RoomName) {
    b.dirty.insert(name.clone());
}

/// A FIFO, socket, device, symlink or directory where a room's file should be: never opened.
fn not_a_regular_file(b: &mut FileBackend, file: &str, name: RoomName, kind: EntryKind) {
    let path = b.path(file);
    if kind == EntryKind::Dir {
        tracing::warn!(
            "{} is not a regular file but a directory; room {:?} keeps its state in memory and in the journal, but its file cannot be written until that directory is moved away",
            path.display(),
            name.as_str()
        );
        return;
    }
    tracing::warn!(
        "{} is not a regular file (a FIFO, socket, device or symlink, which the daemon never reads or follows); room {:?} keeps its state, and its file is written again in its place",
        path.display(),
        name.as_str()
    );
    rewrite(b, &name);
}
