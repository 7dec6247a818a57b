//! The `memory` backend: rooms live only in the actor's memory and vanish on exit.
//!
//! For development and tests. Every call succeeds at once; nothing touches the disk.

use super::{Backend, StorageError};
use crate::room::change::Change;
use crate::room::entry::{RoomMap, Snapshot};

/// Keeps nothing: the actor's in-memory rooms are the only copy.
#[derive(Debug, Default)]
pub struct MemoryBackend;

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn load(&mut self) -> Result<RoomMap, StorageError> {
        Ok(RoomMap::new())
    }

    fn commit(&mut self, _changes: &[Change], _rooms: &Snapshot) -> Result<(), StorageError> {
        Ok(())
    }

    fn sync(&mut self, _rooms: &Snapshot) -> Result<(), StorageError> {
        Ok(())
    }

    fn close(&mut self, _rooms: &Snapshot) -> Result<(), StorageError> {
        Ok(())
    }
}
