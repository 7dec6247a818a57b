//! A simulated file system that forgets, at a power loss, everything not yet synced.
//!
//! It keeps two views: what the running program sees, and what is durable. File contents become
//! durable by syncing the file; names (creations, renames, removals) by syncing the directory.
//! [`SimFs::power_loss`] returns a new file system holding only the durable view, with a random
//! part of each file's unsynced tail kept (writes can be torn anywhere), so recovery code is
//! tested against the worst the disk may do. [`SimFs::power_loss_keeping_failed`] models the
//! other worst case: every page ever written reaches the disk, even one whose write or sync
//! failed, or that a truncate cut off before it was durable.
//!
//! Faults: every call (each [`Fs`] method and each [`AppendFile`] method) takes the next number
//! of one counter, so a scripted workload that runs its I/O on one thread makes the same calls
//! in the same order every time, and a [`Fault`] can fail any of them by number: one call, a
//! burst, or every call from one on until [`SimFs::clear_fault`]. A failed call does what the
//! kernel may do at worst: a write is torn, a failed sync drops the unsynced tail, a new file
//! may be left behind empty.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::fs::{AppendFile, DirEntry, EntryKind, FileStat, Fs, LockGuard, WriteBatch};

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    synced: usize,
    version: u64,
    /// Bytes at offsets `data.len()..` the program no longer sees that a power loss may still
    /// find: pages of a failed sync (some may have reached the disk before the error), or cut
    /// off by a truncate that failed.
    ghost: Vec<u8>,
}

impl Inode {
    fn new(data: Vec<u8>, synced: usize, version: u64) -> Inode {
        Inode {
            data,
            synced,
            version,
            ghost: Vec::new(),
        }
    }

    /// Writes `bytes` at the end: they take the place of the ghost pages at those offsets.
    fn extend(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.ghost.drain(..bytes.len().min(self.ghost.len()));
    }

    /// After a failed sync: the program no longer sees the unsynced tail (Linux may drop the
    /// pages), but the disk may hold any part of it.
    fn drop_unsynced(&mut self) {
        let mut tail = self.data.split_off(self.synced);
        tail.append(&mut self.ghost);
        self.ghost = tail;
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    /// What the program sees: path -> inode.
    names: BTreeMap<PathBuf, usize>,
    /// What survives a power loss: path -> inode.
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: HashSet<PathBuf>,
    /// How many upcoming file syncs fail with EIO.
    failing_syncs: usize,
    /// How many upcoming whole-file writes (`write_new_synced`: folds) fail with EIO.
    failing_file_writes: usize,
    clock: u64,
    /// Calls made so far (see the module docs).
    calls: u64,
    /// Syncs of file data so far (each a flush of the disk on real hardware).
    syncs: u64,
    fault: Option<Fault>,
    /// Calls failing with EIO by name: how many more of each (see [`SimFs::fail_next`]).
    failing_calls: Vec<(&'static str, usize)>,
    /// Reads of these paths failing with EIO: how many more of each (see
    /// [`SimFs::fail_next_reads_of`]).
    failing_reads: Vec<(PathBuf, usize)>,
    /// Take a power-loss image just before this call (see [`SimFs::crash_at`]).
    crash_at: Option<u64>,
    crash_image: Option<SimFs>,
}

/// Which calls fail, and with which OS error (`libc::EIO`, `libc::ENOSPC`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The first failing call's number (0 is the first call after [`SimFs::set_fault`]).
    pub from: u64,
    /// How many calls fail from there; `None`: every one until the fault is cleared.
    pub count: Option<u64>,
    pub errno: i32,
}

/// See the module docs. Cheap to clone; clones share one disk.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl SimFs {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// Makes the next `n` file syncs fail with EIO (their data stays unsynced).
    pub fn fail_next_syncs(&self, n: usize) {
        self.with(|s| s.failing_syncs = n);
    }

    /// Makes the next `n` whole-file writes fail (what a fold does), leaving journal syncs alone.
    pub fn fail_next_file_writes(&self, n: usize) {
        self.with(|s| s.failing_file_writes = n);
    }

    /// Makes the next `n` calls named `op` (as `SIM_TRACE=1` prints them: `append`, `sync`,
    /// `truncate`, `remove`, ...) fail with EIO, whatever else comes in between.
    pub fn fail_next(&self, op: &'static str, n: usize) {
        self.with(|s| {
            s.failing_calls.retain(|(o, _)| *o != op);
            s.failing_calls.push((op, n));
        });
    }

    /// Makes the next `n` reads of `path` fail with EIO, whichever thread reads what in
    /// between (a start reads `.cache` on a thread of its own while it reads `.index`, so a
    /// call number does not name one of them).
    pub fn fail_next_reads_of(&self, path: &Path, n: usize) {
        self.with(|s| {
            s.failing_reads.retain(|(p, _)| p != path);
            s.failing_reads.push((path.to_owned(), n));
        });
    }

    /// Arms `fault`, numbering calls from 0 again.
    pub fn set_fault(&self, fault: Fault) {
        self.with(|s| {
            s.calls = 0;
            s.fault = Some(fault);
        });
    }

    /// Keeps the disk as a power loss just before call `n` (numbered as for faults) would
    /// leave it, for [`SimFs::take_crash_image`]; `seed` as for [`SimFs::power_loss`].
    pub fn crash_at(&self, n: u64) {
        self.with(|s| {
            s.crash_at = Some(n);
            s.crash_image = None;
        });
    }

    /// The image [`SimFs::crash_at`] asked for, once its call was reached.
    pub fn take_crash_image(&self) -> Option<SimFs> {
        self.with(|s| s.crash_image.take())
    }

    /// The disk works again.
    pub fn clear_fault(&self) {
        self.with(|s| s.fault = None);
    }

    /// Calls made since the last [`SimFs::set_fault`] (or since the start).
    pub fn calls(&self) -> u64 {
        self.with(|s| s.calls)
    }

    /// Syncs of file data so far: journal syncs, whole-file writes, [`WriteBatch`] syncs.
    pub fn syncs(&self) -> u64 {
        self.with(|s| s.syncs)
    }

    /// True once some call has failed because of the armed fault.
    pub fn fault_hit(&self) -> bool {
        self.with(|s| s.fault.is_some_and(|f| s.calls > f.from))
    }

    /// The disk as found after a power loss now. `seed` picks how much of each unsynced tail
    /// happened to reach the disk.
    pub fn power_loss(&self, seed: u64) -> SimFs {
        self.with(|s| s.power_loss(seed))
    }

    /// The disk as found after a power loss now, in the other worst case: every page ever
    /// written is there in full (also those of a failed write or sync, and those a truncate
    /// that failed should have cut off), under the names a directory sync made durable.
    pub fn power_loss_keeping_failed(&self) -> SimFs {
        self.with(|s| s.power_loss_keeping_failed())
    }

    /// Every file the program sees under `dir`, with its contents.
    pub fn files(&self, dir: &Path) -> Vec<(String, Vec<u8>)> {
        self.with(|s| {
            s.names
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir))
                .map(|(p, &i)| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    (name.unwrap_or_default(), s.inodes[i].data.clone())
                })
                .collect()
        })
    }
}

impl State {
    /// See [`SimFs::power_loss`].
    fn power_loss(&self, seed: u64) -> SimFs {
        let mut rng = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let inodes = self
            .inodes
            .iter()
            .map(|inode| {
                let unsynced = inode.data.len().saturating_sub(inode.synced);
                let kept = if unsynced == 0 {
                    0
                } else {
                    (next() as usize) % (unsynced + 1)
                };
                let len = (inode.synced + kept).min(inode.data.len());
                Inode::new(inode.data[..len].to_vec(), len, inode.version)
            })
            .collect();
        self.after_power_loss(inodes)
    }

    /// See [`SimFs::power_loss_keeping_failed`].
    fn power_loss_keeping_failed(&self) -> SimFs {
        let inodes = self
            .inodes
            .iter()
            .map(|inode| {
                let mut data = inode.data.clone();
                data.extend_from_slice(&inode.ghost);
                Inode::new(data.clone(), data.len(), inode.version)
            })
            .collect();
        self.after_power_loss(inodes)
    }

    /// A disk holding `inodes` under the durable names, and nothing else.
    fn after_power_loss(&self, inodes: Vec<Inode>) -> SimFs {
        let after = State {
            inodes,
            names: self.durable_names.clone(),
            durable_names: self.durable_names.clone(),
            dirs: self.dirs.clone(),
            failing_syncs: 0,
            failing_file_writes: 0,
            clock: self.clock,
            calls: 0,
            syncs: 0,
            fault: None,
            failing_calls: Vec::new(),
            failing_reads: Vec::new(),
            crash_at: None,
            crash_image: None,
        };
        SimFs {
            state: Arc::new(Mutex::new(after)),
        }
    }

    fn inode_of(&self, path: &Path) -> io::Result<usize> {
        self.names.get(path).copied().ok_or_else(not_found)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Numbers this call and fails it if the armed fault covers it.
    fn call(&mut self, op: &str) -> io::Result<()> {
        let n = self.calls;
        self.calls += 1;
        if self.crash_at == Some(n) {
            self.crash_image = Some(self.power_loss(n));
        }
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("sim call {n}: {op}");
        }
        match self.fault {
            Some(f) if n >= f.from && f.count.is_none_or(|count| n < f.from + count) => {
                return Err(io::Error::from_raw_os_error(f.errno));
            }
            _ => {}
        }
        match self
            .failing_calls
            .iter_mut()
            .find(|(o, left)| *o == op && *left > 0)
        {
            Some((_, left)) => {
                *left -= 1;
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            None => Ok(()),
        }
    }

    fn sync_fails(&mut self) -> bool {
        self.syncs += 1;
        if self.failing_syncs > 0 {
            self.failing_syncs -= 1;
            return true;
        }
        false
    }
}

impl Fs for SimFs {
    fn create_private_dir(&self, dir: &Path) -> io::Result<()> {
        self.with(|s| {
            s.call("create_private_dir")?;
            s.dirs.insert(dir.to_owned());
            Ok(())
        })
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.with(|s| {
            s.call("read_dir")?;
            let mut entries: Vec<DirEntry> = s
                .names
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .map(|p| DirEntry {
                    name: p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    kind: EntryKind::File,
                })
                .collect();
            entries.extend(s.dirs.iter().filter(|p| p.parent() == Some(dir)).map(|p| {
                DirEntry {
                    name: p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    kind: EntryKind::Dir,
                }
            }));
            Ok(entries)
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.with(|s| {
            s.call("read")?;
            if let Some((_, left)) = s
                .failing_reads
                .iter_mut()
                .find(|(p, left)| p == path && *left > 0)
            {
                *left -= 1;
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            Ok(s.inodes[s.inode_of(path)?].data.clone())
        })
    }

    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        self.with(|s| {
            s.call("stat")?;
            Ok(s.names.get(path).map(|&i| FileStat {
                len: s.inodes[i].data.len() as u64,
                mtime_ns: i128::from(s.inodes[i].version),
                ctime_ns: i128::from(s.inodes[i].version),
                ino: i as u64,
            }))
        })
    }

    fn write_new_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.with(|s| {
            let injected = s.call("write_new_synced");
            if s.names.contains_key(path) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            let version = s.tick();
            if let Err(e) = injected {
                // Created, and then the write or the sync failed: an unsynced part is left.
                s.inodes
                    .push(Inode::new(bytes[..bytes.len() / 2].to_vec(), 0, version));
                s.names.insert(path.to_owned(), s.inodes.len() - 1);
                return Err(e);
            }
            let fails = s.sync_fails() || {
                let fail = s.failing_file_writes > 0;
                s.failing_file_writes = s.failing_file_writes.saturating_sub(1);
                fail
            };
            let synced = if fails { 0 } else { bytes.len() };
            s.inodes.push(Inode::new(bytes.to_vec(), synced, version));
            s.names.insert(path.to_owned(), s.inodes.len() - 1);
            if fails {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            Ok(())
        })
    }

    fn write_batch(&self, _dir: &Path) -> io::Result<Box<dyn WriteBatch + '_>> {
        Ok(Box::new(SimBatch {
            fs: self.clone(),
            inodes: Vec::new(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.with(|s| {
            s.call("rename")?;
            let inode = s.names.remove(from).ok_or_else(not_found)?;
            s.names.insert(to.to_owned(), inode);
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.with(|s| {
            s.call("remove")?;
            s.names.remove(path).map(|_| ()).ok_or_else(not_found)
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.with(|s| {
            s.call("sync_dir")?;
            s.durable_names.retain(|p, _| p.parent() != Some(dir));
            let entries: Vec<(PathBuf, usize)> = s
                .names
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir))
                .map(|(p, &i)| (p.clone(), i))
                .collect();
            s.durable_names.extend(entries);
            Ok(())
        })
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let inode = self.with(|s| -> io::Result<usize> {
            s.call("open_append")?;
            if let Some(&i) = s.names.get(path) {
                return Ok(i);
            }
            let version = s.tick();
            s.inodes.push(Inode::new(Vec::new(), 0, version));
            s.names.insert(path.to_owned(), s.inodes.len() - 1);
            Ok(s.inodes.len() - 1)
        })?;
        Ok(Box::new(SimAppendFile {
            fs: self.clone(),
            inode,
        }))
    }

    fn create_journal(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        if self.with(|s| s.names.contains_key(path)) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        self.open_append(path)
    }

    fn try_lock(&self, _path: &Path) -> io::Result<Option<LockGuard>> {
        self.with(|s| s.call("try_lock"))?;
        Ok(Some(Box::new(())))
    }
}

/// New files left unsynced until the batch's one sync (see [`WriteBatch`]).
struct SimBatch {
    fs: SimFs,
    inodes: Vec<usize>,
}

impl WriteBatch for SimBatch {
    fn write_new(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.fs.with(|s| {
            let injected = s.call("batch write_new");
            if s.names.contains_key(path) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            let fails = injected.is_err() || {
                let fail = s.failing_file_writes > 0;
                s.failing_file_writes = s.failing_file_writes.saturating_sub(1);
                fail
            };
            // Created, and then the write failed: a part is left.
            let written = if fails {
                &bytes[..bytes.len() / 2]
            } else {
                bytes
            };
            let version = s.tick();
            s.inodes.push(Inode::new(written.to_vec(), 0, version));
            s.names.insert(path.to_owned(), s.inodes.len() - 1);
            match injected {
                Err(e) => Err(e),
                Ok(()) if fails => Err(io::Error::from_raw_os_error(libc::EIO)),
                Ok(()) => {
                    self.inodes.push(s.inodes.len() - 1);
                    Ok(())
                }
            }
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.fs.with(|s| {
            let injected = s.call("batch sync");
            if injected.is_err() || s.sync_fails() {
                // As for a journal: the unsynced pages may be dropped (and a power loss may
                // still keep any part of what reached the disk before the error).
                for &i in &self.inodes {
                    s.inodes[i].drop_unsynced();
                }
                return Err(injected
                    .err()
                    .unwrap_or_else(|| io::Error::from_raw_os_error(libc::EIO)));
            }
            for &i in &self.inodes {
                let inode = &mut s.inodes[i];
                inode.synced = inode.data.len();
                inode.ghost.clear();
            }
            Ok(())
        })
    }
}

struct SimAppendFile {
    fs: SimFs,
    inode: usize,
}

impl AppendFile for SimAppendFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.fs.with(|s| {
            let injected = s.call("append");
            let version = s.tick();
            let inode = &mut s.inodes[self.inode];
            // A failed write may still have written a part.
            let written = if injected.is_ok() {
                bytes
            } else {
                &bytes[..bytes.len() / 2]
            };
            inode.extend(written);
            inode.version = version;
            injected
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.fs.with(|s| {
            let injected = s.call("sync");
            if injected.is_err() || s.sync_fails() {
                // Like Linux after a failed fsync: the dirty pages may be dropped, so the
                // program never sees them again; some may have reached the disk all the same.
                s.inodes[self.inode].drop_unsynced();
                return Err(injected
                    .err()
                    .unwrap_or_else(|| io::Error::from_raw_os_error(libc::EIO)));
            }
            let inode = &mut s.inodes[self.inode];
            inode.synced = inode.data.len();
            // The file's length is durable too: what a truncate cut off is gone.
            inode.ghost.clear();
            Ok(())
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.fs.with(|s| {
            // A failed truncate changes nothing the disk is known to hold: what it should have
            // cut off (the program's view and the ghost pages) may all be found after a
            // power loss.
            s.call("truncate")?;
            let inode = &mut s.inodes[self.inode];
            inode.data.truncate(len as usize);
            inode.synced = inode.synced.min(inode.data.len());
            // `AppendFile::truncate` syncs the new length.
            inode.ghost.clear();
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        self.fs.with(|s| s.inodes[self.inode].data.len() as u64)
    }
}
