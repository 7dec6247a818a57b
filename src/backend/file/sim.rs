//! A simulated file system that forgets, at a power loss, everything not yet synced.
//!
//! It keeps two views: what the running program sees, and what is durable. File contents become
//! durable by syncing the file; names (creations, renames, removals) by syncing the directory.
//! [`SimFs::power_loss`] returns a new file system holding only the durable view, with a random
//! part of each file's unsynced tail kept (writes can be torn anywhere), so recovery code is
//! tested against the worst the disk may do.
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
                Inode {
                    data: inode.data[..len].to_vec(),
                    synced: len,
                    version: inode.version,
                }
            })
            .collect();
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
                Err(io::Error::from_raw_os_error(f.errno))
            }
            _ => Ok(()),
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
                s.inodes.push(Inode {
                    data: bytes[..bytes.len() / 2].to_vec(),
                    synced: 0,
                    version,
                });
                s.names.insert(path.to_owned(), s.inodes.len() - 1);
                return Err(e);
            }
            let fails = s.sync_fails() || {
                let fail = s.failing_file_writes > 0;
                s.failing_file_writes = s.failing_file_writes.saturating_sub(1);
                fail
            };
            let synced = if fails { 0 } else { bytes.len() };
            s.inodes.push(Inode {
                data: bytes.to_vec(),
                synced,
                version,
            });
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
            s.inodes.push(Inode {
                data: Vec::new(),
                synced: 0,
                version,
            });
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
            s.inodes.push(Inode {
                data: written.to_vec(),
                synced: 0,
                version,
            });
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
                    let inode = &mut s.inodes[i];
                    inode.data.truncate(inode.synced);
                }
                return Err(injected
                    .err()
                    .unwrap_or_else(|| io::Error::from_raw_os_error(libc::EIO)));
            }
            for &i in &self.inodes {
                s.inodes[i].synced = s.inodes[i].data.len();
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
            inode.data.extend_from_slice(written);
            inode.version = version;
            injected
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.fs.with(|s| {
            let injected = s.call("sync");
            if injected.is_err() || s.sync_fails() {
                // Like Linux after a failed fsync: the dirty pages may be dropped; model the
                // worst case, the unsynced tail is gone for good.
                let inode = &mut s.inodes[self.inode];
                inode.data.truncate(inode.synced);
                return Err(injected
                    .err()
                    .unwrap_or_else(|| io::Error::from_raw_os_error(libc::EIO)));
            }
            let inode = &mut s.inodes[self.inode];
            inode.synced = inode.data.len();
            Ok(())
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.fs.with(|s| {
            s.call("truncate")?;
            let inode = &mut s.inodes[self.inode];
            inode.data.truncate(len as usize);
            inode.synced = inode.synced.min(inode.data.len());
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        self.fs.with(|s| s.inodes[self.inode].data.len() as u64)
    }
}
