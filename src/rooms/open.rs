//! Opening the rooms where they live, and closing them again in order.
//!
//! [`Place`] is the one choice of backend: made from the configuration ([`Place::configured`]),
//! by `migrate` for each of its ends, or by a test. [`Rooms::start`] opens it: loads the rooms
//! into a storage actor, or prepares the connections to Redis. [`OpenRooms::close`] is the clean
//! stop: it withdraws this daemon's announcement from Redis, or lets the actor drain its queue,
//! write and sync every room and end.

use std::time::Duration;

use super::{Kept, Rooms};
use crate::backend::file::FileBackend;
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, StorageError};
use crate::config::{Config, StorageType};
use crate::remote::RemoteStore;
use crate::store::{self, ActorThread};

/// Where the rooms live, chosen before they are opened.
pub enum Place {
    /// In this daemon, kept by a backend (`memory`, `file`) under a storage actor.
    Local(Box<dyn Backend>),
    /// In a Redis server, under a key prefix, shared with other daemons (`redis`).
    Redis(RemoteStore),
}

impl From<Box<dyn Backend>> for Place {
    fn from(backend: Box<dyn Backend>) -> Place {
        Place::Local(backend)
    }
}

impl Place {
    /// The place `config` names. A Redis place is subscribed to change events (for `watch`)
    /// and need not answer yet. Must run inside a tokio runtime.
    pub fn configured(config: &Config) -> Result<Place, StorageError> {
        Ok(match config.storage_type {
            StorageType::Memory => Place::Local(Box::new(MemoryBackend)),
            StorageType::File => {
                let backend = FileBackend::new(&config.storage_path, config.durability);
                Place::Local(Box::new(match test_fold_interval() {
                    Some(interval) => backend.with_fold_interval(interval),
                    None => backend,
                }))
            }
            StorageType::Redis => {
                let remote = RemoteStore::open(&config.redis_url, &config.redis_prefix, true)?;
                tracing::info!(
                    "Using redis storage at: {} (key prefix {:?})",
                    remote.url(),
                    remote.prefix()
                );
                Place::Redis(remote)
            }
        })
    }
}

/// Hidden, for tests only (not a setting): `STORAGED_TEST_FOLD_INTERVAL_MS` replaces the 60 s
/// for which rooms may stay dirty before a background fold, so that the fault-injection sweep
/// (tests/fault_sweep) can make a fold happen at the next upkeep tick and fail calls inside it.
const TEST_FOLD_INTERVAL_ENV: &str = "STORAGED_TEST_FOLD_INTERVAL_MS";

fn test_fold_interval() -> Option<Duration> {
    let text = std::env::var(TEST_FOLD_INTERVAL_ENV).ok()?;
    match text.trim().parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => {
            tracing::warn!(
                "ignoring {TEST_FOLD_INTERVAL_ENV}={text:?}: not a number of milliseconds"
            );
            None
        }
    }
}

/// Opened rooms and what must happen to close them; hand out [`OpenRooms::rooms`] clones and
/// [`OpenRooms::close`] once they are all dropped.
pub struct OpenRooms {
    rooms: Rooms,
    /// The storage actor's thread (local rooms only).
    actor: Option<ActorThread>,
}

impl Rooms {
    /// Opens the rooms `config` asks for: see [`Place::configured`] and [`Rooms::start`].
    pub fn open(config: &Config) -> Result<OpenRooms, StorageError> {
        Rooms::start(Place::configured(config)?)
    }

    /// Opens the rooms at `place`: loads them into a storage actor (which starts on a thread of
    /// its own), or takes the Redis store as it is. Must run inside a tokio runtime.
    pub fn start(place: Place) -> Result<OpenRooms, StorageError> {
        Ok(match place {
            Place::Local(backend) => {
                let (store, actor) = store::start(backend)?;
                OpenRooms {
                    rooms: Rooms {
                        kept: Kept::Local(store),
                    },
                    actor: Some(actor),
                }
            }
            Place::Redis(remote) => OpenRooms {
                rooms: Rooms {
                    kept: Kept::Remote(remote),
                },
                actor: None,
            },
        })
    }
}

impl OpenRooms {
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// The clean stop, once every clone of [`OpenRooms::rooms`] is dropped (it waits for the
    /// last one): Redis forgets this daemon's announcement; the storage actor drains its queue,
    /// writes and syncs every room ([`crate::backend::Backend::close`]) and ends.
    pub async fn close(self) -> Result<(), StorageError> {
        let OpenRooms { rooms, actor } = self;
        if let Kept::Remote(remote) = &rooms.kept {
            remote.close().await;
        }
        drop(rooms);
        let Some(actor) = actor else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || actor.join())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| {
                Err(StorageError::Unusable {
                    message: "the storage actor panicked; run the daemon again to recover from the journal".into(),
                })
            })
    }
}
