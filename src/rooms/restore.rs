//! What `migrate` asks of the rooms at either end of a copy: who else serves them, and taking
//! rooms in exactly as they are elsewhere (JSON byte for byte, revision, last change).

use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::{Kept, Rooms};
use crate::room::entry::RoomEntry;
use crate::room::prepare::PreparedRoom;
use crate::room::StoreError;

/// How many rooms go to the local store per commit, and to Redis at once.
const CHUNK: usize = 1000;
const IN_FLIGHT: usize = 64;

impl Rooms {
    /// The daemons that announced they serve these rooms (on a Redis prefix). None for rooms
    /// in this process: a second user of a storage directory is refused when it opens (its lock).
    pub async fn served_by(&self) -> Result<Vec<String>, StoreError> {
        match &self.kept {
            Kept::Local(_) => Ok(Vec::new()),
            Kept::Remote(remote) => remote.daemons().await,
        }
    }

    /// Takes `rooms` in as they are, each replacing a room of the same name, and calls
    /// `progress(done)` as they go. Each room is stored as a save of it would be (with `file`:
    /// `CHUNK` rooms per commit).
    pub async fn restore(
        &self,
        rooms: &[Arc<RoomEntry>],
        progress: &mut dyn FnMut(usize),
    ) -> Result<(), StoreError> {
        let mut done = 0;
        match &self.kept {
            Kept::Local(store) => {
                for chunk in rooms.chunks(CHUNK) {
                    store.restore(chunk.to_vec()).await?;
                    done += chunk.len();
                    progress(done);
                }
            }
            Kept::Remote(remote) => {
                let mut writes = stream::iter(rooms.iter().map(|entry| async move {
                    // `Unavailable`: its message is shown whole, and it says what to do.
                    let prepared = PreparedRoom::from_json(entry.encoded()).map_err(|e| {
                        StoreError::Unavailable {
                            message: format!(
                                "room {:?} in the source is not valid ({e}); fix or remove it first",
                                entry.name.as_str()
                            ),
                            cause: None,
                        }
                    })?;
                    remote
                        .restore(&prepared, entry.revision, entry.updated_at)
                        .await
                }))
                .buffer_unordered(IN_FLIGHT);
                while writes.try_next().await?.is_some() {
                    done += 1;
                    progress(done);
                }
            }
        }
        Ok(())
    }
}
