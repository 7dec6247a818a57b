//! Where rooms are kept between restarts: the contract every backend implements.
//!
//! The storage actor holds every room in memory and is the only caller of a backend. A backend
//! loads the rooms once at start, then makes each batch of [`Change`]s durable, in order. It never
//! decides what a change means (that is `store::apply`) and never talks to clients.
//!
//! Durability promise, per call: [`Backend::commit`] returns `Ok` only once the batch is as
//! durable as the configured mode promises (`strict`: on stable storage; `relaxed`: handed to the
//! OS, synced by the next [`Backend::sync`]). On `Err`, nothing of the batch may be treated as
//! stored: the actor drops it from memory and reports a `storage` error.

pub mod file;
pub mod memory;

use std::path::PathBuf;

use crate::room::change::Change;
use crate::room::entry::{RoomMap, Snapshot};

/// A backend failure, naming what it was doing and where, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage directory {} is in use by another moviematch-storaged (lock {} is held); stop that daemon or choose another storagePath", dir.display(), lock.display())]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("{message}")]
    Unusable { message: String },
    #[error("the disk holding {} is nearly full ({free_bytes} bytes and {free_inodes} inodes free; {need_bytes} bytes are kept free so that every room file can be written): delete rooms or free space, and writes resume by themselves", dir.display())]
    Full {
        dir: PathBuf,
        free_bytes: u64,
        free_inodes: u64,
        need_bytes: u64,
    },
}

impl StorageError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// True when the disk (or its inodes, or a quota) is full.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            StorageError::Full { .. } => true,
            _ => false,
        }
    }

    /// The underlying OS error's text, for the protocol's `cause` field.
    pub fn cause(&self) -> Option<String> {
        match self {
            StorageError::Io { source, .. } => Some(source.to_string()),
            StorageError::Full { .. } => {
                Some(std::io::Error::from_raw_os_error(libc::ENOSPC).to_string())
            }
            _ => None,
        }
    }
}

/// What a backend found when asked to re-read its files (SIGHUP).
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Changes to apply so memory matches the files: `Put`s for edited or new files, `Delete`s
    /// for removed ones. The actor applies and commits them like any other change.
    pub changes: Vec<Change>,
}

/// The contract between the storage actor and a backend.
pub trait Backend: Send {
    /// A short name for logs and `stats` ("memory", "file").
    fn name(&self) -> &'static str;

    /// Reads every stored room. Called once, before anything else.
    fn load(&mut self) -> Result<RoomMap, StorageError>;

    /// Makes `changes` durable (see the module docs). `rooms` is the state after them.
    fn commit(&mut self, changes: &[Change], rooms: &Snapshot) -> Result<(), StorageError>;

    /// Puts everything committed so far on stable storage.
    fn sync(&mut self, rooms: &Snapshot) -> Result<(), StorageError>;

    /// Background upkeep when the actor is idle (e.g. folding a log into room files).
    fn maintain(&mut self, _rooms: &Snapshot) -> Result<(), StorageError> {
        Ok(())
    }

    /// Brings the backing files up to date with `rooms` now, so that an operator can edit
    /// them by hand (for `file`: every room file then holds its room's latest state, except
    /// files already changed by hand, which are left alone with a warning). Implies `sync`.
    fn fold(&mut self, rooms: &Snapshot) -> Result<(), StorageError> {
        self.sync(rooms)
    }

    /// Whether a job of the backend still holds an older version of the rooms (a fold on its
    /// own thread). Every room replaced meanwhile stays in memory until the job ends, so the
    /// actor's compaction pass waits: packing 100,000 rooms during a fold of them would hold
    /// each room's text and its packed form at once.
    fn holds_rooms(&self) -> bool {
        false
    }

    /// Re-reads the backing files after an operator edited them (SIGHUP).
    fn reload(&mut self, _rooms: &Snapshot) -> Result<Reloaded, StorageError> {
        Ok(Reloaded::default())
    }

    /// The clean stop: leave storage complete and self-describing (for `file`, every room file
    /// holds its room's latest state).
    fn close(&mut self, rooms: &Snapshot) -> Result<(), StorageError>;

    /// Why `load` could serve the rooms only read-only (the disk took no writes), if it did.
    fn start_warning(&mut self) -> Option<StorageError> {
        None
    }
}
