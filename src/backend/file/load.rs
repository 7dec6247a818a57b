//! Reading the storage directory at start: recovery (SIGHUP is `reload`).
//!
//! Start: lock the directory, clean temp files, read `.index` (and `.index.next` if a fold was
//! cut short), read every room file in parallel (or take it from `.cache` when its stat or bytes
//! are unchanged), quarantine what is not a valid room (and the losers when several files
//! hold one room: see `claims`), give each
//! room its revision (from the index when the file is the daemon's own write, +1 when it was
//! edited by hand, 1 when new), replay journal records newer than each file (a hand edit
//! that lacks some of them is refused or merged: see `start_edits`), write the index
//! if files were new or edited, and start a new journal. No room file is rewritten at start:
//! rooms the replay changed are folded in the background at the first tick, which then deletes
//! the old journals.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::cache::{self, Cache};
use super::claims::{self, Claimant};
use super::fs::EntryKind;
use super::journal::{self, Index, IndexEntry, Lsn};
use super::par::par_map;
use super::read::{read_files, ReadFile};
use super::start_edits::{Edited, StartEdits};
use super::{
    names, quarantine, FileBackend, FileRecord, INDEX, INDEX_NEXT, JOURNAL_PREFIX, LOCK,
    QUARANTINE, TMP_PREFIX,
};
use crate::backend::StorageError;
use crate::room::change::Change;
use crate::room::entry::{RoomEntry, RoomMap, Snapshot};
use crate::room::{now_millis, EpochMillis, Revision, RoomName};
use crate::store::apply;

pub(super) fn load(b: &mut FileBackend) -> Result<RoomMap, StorageError> {
    open_dir(b)?;
    tracing::info!("Using file storage at: {}", b.dir.display());
    // The cache is as large as every room together: read it while the index is parsed.
    let reading_cache = {
        let (fs, dir) = (b.fs.clone(), b.dir.clone());
        std::thread::Builder::new()
            .name("read-cache".into())
            .spawn(move || Cache::read(&*fs, &dir))
    };
    let index = read_index(b, INDEX)?;
    let next = read_index(b, INDEX_NEXT)?;
    let (room_files, journals) = list_files(b)?;
    let trust_before = cache::trust_stats_before(&*b.fs, &b.dir);
    // Each file's stat while the cache is still being read (a file is read only if its stat
    // does not match the cache's).
    let stats = {
        let (fs, dir) = (&*b.fs, &b.dir);
        par_map(&room_files, |file| {
            Some(fs.stat(&dir.join(file)).ok().flatten())
        })
    };
    let cache = match reading_cache {
        Ok(thread) => thread.join().unwrap_or_default(),
        Err(_) => Cache::read(&*b.fs, &b.dir),
    };
    let reads = read_files(b, room_files, stats, &cache);
    let mut start = claim_files(b, reads, &index, &next)?;
    start.settle_replaced(b);
    let last_lsn = index.iter().chain(&next).map(|i| i.lsn).max().unwrap_or(0);
    let (last_lsn, journaled) = replay_journals(b, &journals, &mut start, last_lsn)?;
    let rejournal = start.edits.settle(b, &mut start.rooms, &cache);
    b.journal.found(journals, last_lsn, journaled);
    let snapshot = Snapshot { rooms: start.rooms };
    open_journal(b, &snapshot, &rejournal);
    let indexed = index.as_ref().map_or(0, |i| i.rooms.len());
    if start.index_stale || start.index_matches != indexed {
        b.index_owed = true;
        if let Err(e) = b.write_owed_index(&snapshot) {
            b.start_warning = Some(e);
        }
    }
    if !b.dirty.is_empty() || b.journal.has_old() {
        b.fold_due();
    }
    let cache_hits = start.cache_hits;
    if start.cache_stale || cache_hits < start.file_count || cache_hits < cache.len() {
        b.write_cache(&snapshot.rooms, trust_before);
    }
    drop(cache);
    b.cache_hits = cache_hits;
    // Loading parsed every file on several threads, now gone: their freed memory goes back.
    crate::heap::give_back();
    tracing::info!(
        "loaded {} room(s) from {} ({cache_hits} of them as {} had them)",
        snapshot.rooms.len(),
        b.dir.display(),
        cache::CACHE
    );
    Ok(snapshot.rooms)
}

/// Creates the storage directory if needed (0700) and locks it: one daemon per directory.
fn open_dir(b: &mut FileBackend) -> Result<(), StorageError> {
    b.fs.create_private_dir(&b.dir).map_err(|e| {
        let existed = b.fs.stat(&b.dir).ok().flatten().is_some();
        dir_error(&b.dir, existed, e)
    })?;
    lock(b)
}

/// Lists the storage directory: the room files and the journals' generations (each sorted),
/// removing the temporary files a crash left and warning of what is not the daemon's.
fn list_files(b: &FileBackend) -> Result<(Vec<String>, Vec<u64>), StorageError> {
    let entries =
        b.fs.read_dir(&b.dir)
            .map_err(|e| StorageError::io("list the storage directory", &b.dir, e))?;
    let mut room_files = Vec::new();
    let mut journals: Vec<u64> = Vec::new();
    for entry in entries {
        let name = entry.name;
        match entry.kind {
            EntryKind::File if name.starts_with(TMP_PREFIX) => {
                tracing::info!(
                    "removing temporary file {} left by a crash",
                    b.path(&name).display()
                );
                let _ = b.fs.remove(&b.path(&name));
            }
            EntryKind::File if names::is_room_file(&name) => room_files.push(name),
            EntryKind::File => {
                if let Some(generation) = name.strip_prefix(JOURNAL_PREFIX) {
                    match generation.parse() {
                        Ok(g) => journals.push(g),
                        Err(_) => {
                            tracing::warn!("ignoring unknown file {}", b.path(&name).display())
                        }
                    }
                }
            }
            EntryKind::Symlink if name.starts_with('.') => tracing::warn!(
                "not following symlink {} in the storage directory: the daemon's own files and \
                 directories must not be symlinks; replace it with a real one",
                b.path(&name).display()
            ),
            EntryKind::Symlink => tracing::warn!(
                "not following symlink {} in the storage directory; put the room file itself there",
                b.path(&name).display()
            ),
            EntryKind::Dir if name == QUARANTINE => {}
            _ if name.starts_with('.') => {}
            _ => tracing::warn!("ignoring {} (not a room file)", b.path(&name).display()),
        }
    }
    room_files.sort();
    journals.sort_unstable();
    Ok((room_files, journals))
}

/// What start-up has learned so far, from one phase to the next.
struct Start {
    rooms: RoomMap,
    /// Each room's base: the last change its file holds.
    base_lsn: HashMap<RoomName, Lsn>,
    /// Rooms whose file (so far) is fresh: new, or changed since the daemon last saw it.
    fresh: HashSet<RoomName>,
    /// Rooms for which a file the daemon knew lost to another: its revision and LSN.
    replaced: HashMap<RoomName, (Revision, Lsn)>,
    edits: StartEdits,
    /// Whether `.index` must be written before serving: it is missing or damaged, a fold was
    /// cut short, or a file is new, edited, gone or set aside. Otherwise it is already true.
    index_stale: bool,
    index_matches: usize,
    cache_hits: usize,
    /// A room found by content, not stat: cached again with its stat.
    cache_stale: bool,
    file_count: usize,
}

/// Claims each room file for its room: gives it its revision from the index (or +1 for a hand
/// edit, 1 for a new file), quarantines what is not a valid room, and decides between several
/// files holding one room (see `claims`).
fn claim_files(
    b: &mut FileBackend,
    reads: Vec<ReadFile>,
    index: &Option<Index>,
    next: &Option<Index>,
) -> Result<Start, StorageError> {
    let (known, known_next) = (by_file(index), by_file(next));
    let mut start = Start {
        rooms: RoomMap::new(),
        base_lsn: HashMap::with_capacity(reads.len()),
        fresh: HashSet::new(),
        replaced: HashMap::new(),
        edits: StartEdits::default(),
        index_stale: index.is_none() || next.is_some(),
        index_matches: 0,
        cache_hits: 0,
        cache_stale: false,
        file_count: reads.len(),
    };
    b.files_mut().reserve(reads.len());
    // What the index says of each file, and the room's entry, on every core.
    let revisions = revisions_by_room(index, next);
    let known = Known {
        index: &known,
        next: &known_next,
        revisions: &revisions,
        now: now_millis(),
    };
    let decided = par_map(&reads, |read| Some(known.room(read)));
    let private = reads.iter().filter(|r| r.made_private).count();
    if private > 0 {
        tracing::info!(
            "made {private} room file(s) in {} private (0600): they were readable by others, and room files hold passwords",
            b.dir.display()
        );
    }
    let s = &mut start;
    for (mut read, room) in reads.into_iter().zip(decided) {
        match read.unreadable.take() {
            Some(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Some(e) => {
                return Err(StorageError::io(
                    "read the room file",
                    b.path(&read.file),
                    e,
                ))
            }
            None => {}
        }
        s.cache_hits += usize::from(read.cached.is_some());
        s.cache_stale |= read.cached == Some(false);
        let (entry, lsn, origin) = match room {
            Ok(room) => room,
            Err(why) => {
                quarantine::quarantine(&*b.fs, &b.dir, &read.file, &why);
                s.index_stale = true;
                continue;
            }
        };
        let name = entry.name.clone();
        let canonical = names::file_name(&name);
        let is_fresh = matches!(origin, Origin::New | Origin::EditedByHand);
        if let Some(other) = b.files.get(&name) {
            s.index_stale = true;
            // Two files hold one room: the newest write wins (see `claims`).
            let this = Claimant::new(&read.file, &name, is_fresh, read.stat);
            let that = Claimant::new(&other.file, &name, s.fresh.contains(&name), other.stat);
            let (loser_known, revision, loser_lsn) = if claims::prefer(&this, &that) {
                claims::set_aside_loser(&*b.fs, &b.dir, &name, &this, &that);
                (!that.fresh, other.revision, other.lsn)
            } else {
                claims::set_aside_loser(&*b.fs, &b.dir, &name, &that, &this);
                if !this.fresh {
                    note_replaced(&mut s.replaced, &name, (entry.revision, lsn));
                }
                continue;
            };
            if loser_known {
                note_replaced(&mut s.replaced, &name, (revision, loser_lsn));
            }
        }
        if is_fresh {
            s.fresh.insert(name.clone());
        } else {
            s.fresh.remove(&name);
        }
        match origin {
            Origin::NextIndex => {}
            Origin::Index => s.index_matches += 1,
            Origin::EditedByHand => {
                s.index_stale = true;
                // Taken or refused once the journal shows what changed since (`start_edits`).
                if let Some(e) = known.index.get(read.file.as_str()) {
                    s.edits.edited(name.clone(), Edited::new(e));
                }
            }
            Origin::New => s.index_stale = true,
        }
        if read.file != canonical {
            b.dirty.insert(name.clone());
        }
        let revision = entry.revision;
        s.rooms.insert(name.clone(), entry);
        s.base_lsn.insert(name.clone(), lsn);
        let record = FileRecord {
            file: read.file,
            len: read.len,
            crc: read.crc,
            stat: read.stat,
            lsn,
            revision,
        };
        b.files_mut().insert(name, record);
    }
    Ok(start)
}

impl Start {
    /// A fresh file that won over a version the daemon knew replaces it: its revision goes
    /// above that one, and journal records that version already held are not replayed.
    fn settle_replaced(&mut self, b: &mut FileBackend) {
        for (name, (revision, lsn)) in std::mem::take(&mut self.replaced) {
            let Some(record) = b
                .files_mut()
                .get_mut(&name)
                .filter(|_| self.fresh.contains(&name))
            else {
                continue;
            };
            let Some(entry) = self
                .rooms
                .get(name.as_str())
                .filter(|e| e.revision <= revision)
            else {
                continue;
            };
            let entry = entry.cooled_at(revision + 1, entry.updated_at);
            record.revision = revision + 1;
            record.lsn = record.lsn.max(lsn);
            self.base_lsn.insert(name.clone(), record.lsn);
            self.rooms.insert(name, Arc::new(entry));
        }
    }
}

/// Replays what the journals hold beyond each room's file. Returns the last LSN seen (at
/// least `last_lsn`) and every room the journals hold a record of.
fn replay_journals(
    b: &mut FileBackend,
    journals: &[u64],
    start: &mut Start,
    mut last_lsn: Lsn,
) -> Result<(Lsn, HashSet<RoomName>), StorageError> {
    let mut journaled = HashSet::new();
    let rooms = &mut start.rooms;
    for &generation in journals {
        let path = b.path(&format!("{JOURNAL_PREFIX}{generation}"));
        let bytes =
            b.fs.read(&path)
                .map_err(|e| StorageError::io("read the journal", &path, e))?;
        let decoded = journal::decode_records(&bytes);
        // Zeros after the last record are space the journal was given ahead of time.
        let tail = &bytes[decoded.valid_len..];
        if let Some(last) = tail.iter().rposition(|&b| b != 0) {
            tracing::warn!(
                "journal {} ends with {} bytes of an unfinished write (a crash before it was acknowledged); ignoring them",
                path.display(),
                last + 1
            );
        }
        let mut replayed = 0usize;
        // A chunk at a time: its rooms are parsed, changed and encoded again before the next
        // chunk's are parsed, so the next parse reuses the memory the last one freed instead of
        // faulting in fresh pages (which cost more than the parsing itself).
        for chunk in decoded.records.chunks(REPLAY_CHUNK) {
            let warmed = warm_up(rooms, chunk, &start.base_lsn);
            for (lsn, change) in chunk {
                last_lsn = last_lsn.max(*lsn);
                let name = change.room_name();
                if !journaled.contains(name) {
                    journaled.insert(name.clone());
                }
                if *lsn <= start.base_lsn.get(name).copied().unwrap_or(0) {
                    continue;
                }
                b.dirty.insert(name.clone());
                start.edits.replayed(change);
                apply::replay(rooms, change);
                replayed += 1;
            }
            in_parallel(rooms, warmed, RoomEntry::cooled);
        }
        if replayed > 0 {
            tracing::info!("replayed {replayed} change(s) from {}", path.display());
        }
    }
    // Each chunk cooled its rooms; a room a `Put` made hot would still be: cool every one, so
    // memory is as for rooms that were never changed.
    let hot: Vec<RoomName> = rooms
        .values()
        .filter(|e| e.is_hot())
        .map(|e| e.name.clone())
        .collect();
    in_parallel(rooms, hot, RoomEntry::cooled);
    Ok((last_lsn, journaled))
}

/// Starts the journal new changes go to, logging `rejournal` (hand edits taken in) first. A
/// disk that takes no writes (full, failing) still serves what it holds: read-only, until a
/// commit finds it writable again.
///
/// Serve at once: the room files of rooms the replay changed, whose changes are safe in the
/// old journals, are rewritten by a background fold at the first tick, which then deletes
/// those journals.
fn open_journal(b: &mut FileBackend, snapshot: &Snapshot, rejournal: &[Change]) {
    if let Err(e) = b.journal.rotate() {
        b.start_warning = Some(e);
    } else if !rejournal.is_empty() {
        if let Err(e) = b.journal.append(rejournal, true, snapshot) {
            b.start_warning = Some(e);
        }
    }
    // A disk filled from outside while the daemon was stopped: read-only from the start.
    let files = &b.files;
    b.headroom
        .count_dirty(&b.dirty, snapshot, |n| files.contains_key(n));
    if let Some(full) = b.headroom.full(&*b.fs, &b.dir) {
        b.start_warning.get_or_insert(full);
    }
}

/// The entries of `index` by file name.
fn by_file(index: &Option<Index>) -> HashMap<&str, &IndexEntry> {
    index
        .iter()
        .flat_map(|i| i.rooms.iter())
        .map(|e| (e.file.as_str(), e))
        .collect()
}

/// The highest revision `.index` (or `.index.next`) records for each room, whatever its file.
fn revisions_by_room<'a>(
    index: &'a Option<Index>,
    next: &'a Option<Index>,
) -> HashMap<&'a RoomName, Revision> {
    let mut revisions = HashMap::new();
    for e in index.iter().chain(next).flat_map(|i| i.rooms.iter()) {
        let revision = revisions.entry(&e.name).or_insert(e.revision);
        *revision = (*revision).max(e.revision);
    }
    revisions
}

/// Where a room file's revision comes from.
enum Origin {
    /// The daemon wrote the file in a fold that was cut short (`.index.next`).
    NextIndex,
    /// The daemon wrote the file (`.index`).
    Index,
    /// `.index` knows the file, but not these bytes: the revision goes up by one.
    EditedByHand,
    /// A file the index does not know (or one from the original storage layer).
    New,
}

/// The index entries by file name, to give each room file read at start its revision.
struct Known<'a> {
    index: &'a HashMap<&'a str, &'a IndexEntry>,
    next: &'a HashMap<&'a str, &'a IndexEntry>,
    /// Each room's revision as the index records it, by room.
    revisions: &'a HashMap<&'a RoomName, Revision>,
    now: EpochMillis,
}

impl Known<'_> {
    /// The room `read` holds as an entry, the last change its file holds, and where its
    /// revision came from; or why the file is not a room.
    fn room(&self, read: &ReadFile) -> Result<(Arc<RoomEntry>, Lsn, Origin), String> {
        let room = read.room.as_ref().map_err(Clone::clone)?;
        let name = &room.name;
        let ours = |e: &&&IndexEntry| e.name == *name && e.len == read.len && e.crc == read.crc;
        let (revision, updated_at, lsn, origin) =
            if let Some(e) = self.next.get(read.file.as_str()).filter(ours) {
                (e.revision, e.updated_at, e.lsn, Origin::NextIndex)
            } else if let Some(e) = self.index.get(read.file.as_str()).filter(ours) {
                (e.revision, e.updated_at, e.lsn, Origin::Index)
            } else if let Some(e) = self
                .index
                .get(read.file.as_str())
                .filter(|e| e.name == *name)
            {
                (e.revision + 1, self.now, e.lsn, Origin::EditedByHand)
            } else {
                // A file the index does not know holds a room it knows (a room file renamed,
                // or swapped with another room's): above the known revision, never reusing one.
                let known = self.revisions.get(name).copied().unwrap_or(0);
                (known + 1, self.now, 0, Origin::New)
            };
        Ok((Arc::new(room.entry(revision, updated_at)), lsn, origin))
    }
}

/// How many journal records are replayed between two rounds of parsing and encoding rooms.
const REPLAY_CHUNK: usize = 512;

/// Turns the cold rooms that `records` will edit into hot ones, parsing them on every core:
/// replaying a rating into a cold room would otherwise parse it on this one thread. Returns
/// their names, to encode them again once the records are applied.
fn warm_up(
    rooms: &mut RoomMap,
    records: &[(Lsn, Change)],
    base_lsn: &HashMap<RoomName, Lsn>,
) -> Vec<RoomName> {
    let names: Vec<RoomName> = records
        .iter()
        .filter(|(lsn, c)| {
            matches!(c, Change::Rate { .. } | Change::Progress { .. })
                && *lsn > base_lsn.get(c.room_name()).copied().unwrap_or(0)
        })
        .map(|(_, c)| c.room_name().clone())
        .collect();
    in_parallel(rooms, names.clone(), |e| {
        let body = e.body();
        RoomEntry::hot(
            e.name.clone(),
            e.facts.clone(),
            body,
            e.revision,
            e.updated_at,
        )
    });
    names
}

/// Replaces each named room (that exists) with `f` of it, spread over every core.
fn in_parallel(
    rooms: &mut RoomMap,
    mut names: Vec<RoomName>,
    f: impl Fn(&RoomEntry) -> RoomEntry + Sync,
) {
    names.sort_unstable();
    names.dedup();
    let shared = &*rooms;
    let changed = par_map(&names, |n| shared.get(n.as_str()).map(|e| f(e)));
    for entry in changed {
        rooms.insert(entry.name.clone(), Arc::new(entry));
    }
}

/// Why the storage directory cannot be used, and what to do: an existing directory is not
/// "cannot create".
fn dir_error(dir: &std::path::Path, existed: bool, e: std::io::Error) -> StorageError {
    if !existed {
        return StorageError::io("create the storage directory", dir, e);
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let message = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EROFS) => format!(
            "cannot write to the storage directory {}: {e}; give the daemon's user (uid {uid}) write access to it (e.g. chown it to that user), or choose another storagePath",
            dir.display()
        ),
        _ => format!(
            "cannot make the storage directory {} private (mode 0700): {e}; it must belong to the daemon's user (uid {uid}): chown it to that user, or choose another storagePath",
            dir.display()
        ),
    };
    StorageError::Unusable { message }
}

fn lock(b: &mut FileBackend) -> Result<(), StorageError> {
    let path = b.path(LOCK);
    match b.fs.try_lock(&path) {
        Ok(Some(guard)) => {
            b.lock = Some(guard);
            Ok(())
        }
        Ok(None) => Err(StorageError::Locked {
            dir: b.dir.clone(),
            lock: path,
        }),
        Err(e) => Err(StorageError::io("lock", path, e)),
    }
}

/// A damaged index is left out (revisions restart from the room files); one that cannot be
/// read fails the start: a passing I/O error must not reset every revision (issue 15 sweep).
fn read_index(b: &FileBackend, file: &str) -> Result<Option<Index>, StorageError> {
    let path = b.path(file);
    let bytes = match b.fs.read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read the index", path, e)),
    };
    Ok(match serde_json::from_slice(&bytes) {
        Ok(index) => Some(index),
        Err(e) => {
            if file == INDEX {
                tracing::warn!(
                    "{} is damaged ({e}); revisions restart from the room files",
                    path.display()
                );
            }
            None
        }
    })
}

/// Notes that a version of `name` the daemon knew (at `known`: revision, LSN) lost to another
/// file; the largest is kept.
fn note_replaced(
    replaced: &mut HashMap<RoomName, (Revision, Lsn)>,
    name: &RoomName,
    known: (Revision, Lsn),
) {
    let noted = replaced.entry(name.clone()).or_insert(known);
    *noted = (noted.0.max(known.0), noted.1.max(known.1));
}
