//! `moviematch-storage migrate`: copies every room between backends while no daemon uses them.
//!
//! Each room keeps its JSON byte for byte, its revision and its last-changed time, so clients
//! holding an `expectedRevision` and `roomExpiry` see no difference. The copy is checked by
//! reading the target back and comparing every room with the source.
//!
//! Refusals, before anything is written: a storage directory another process holds (the
//! daemon's lock), a Redis prefix on which a daemon announced itself, and a target that already
//! holds rooms (unless `force`: then rooms of the same name are replaced, others kept).

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::backend::file::FileBackend;
use crate::backend::{Backend, StorageError};
use crate::config::Durability;
use crate::protocol::request::ListQuery;
use crate::remote::RemoteStore;
use crate::room::change::Change;
use crate::room::entry::{RoomEntry, RoomMap, Snapshot};
use crate::room::prepare::PreparedRoom;

/// How many rooms are written to Redis at once, and to the file journal per commit.
const IN_FLIGHT: usize = 64;
const CHUNK: usize = 1000;

/// One end of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `file:DIR`: room files in a storage directory.
    File(PathBuf),
    /// `redis://...`, `rediss://...`, `unix://...`, with the key prefix to use.
    Redis { url: String, prefix: String },
}

impl Endpoint {
    /// Parses `file:DIR` or a Redis URL (keys under `prefix`).
    pub fn parse(text: &str, prefix: &str) -> Result<Endpoint, String> {
        if let Some(dir) = text.strip_prefix("file:") {
            let dir = dir.strip_prefix("//").unwrap_or(dir);
            if dir.is_empty() {
                return Err(format!(
                    "{text}: file: needs a directory, e.g. file:./data/rooms"
                ));
            }
            return Ok(Endpoint::File(PathBuf::from(dir)));
        }
        if ["redis://", "rediss://", "unix://"]
            .iter()
            .any(|s| text.starts_with(s))
        {
            return Ok(Endpoint::Redis {
                url: text.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        Err(format!(
            "{text}: expected file:DIR or a redis://, rediss:// or unix:// URL"
        ))
    }

    fn describe(&self) -> String {
        match self {
            Endpoint::File(dir) => format!("file:{}", dir.display()),
            Endpoint::Redis { url, prefix } => {
                format!("{} (prefix {prefix:?})", crate::remote::redact(url))
            }
        }
    }
}

/// Why a migration did not run or did not finish; the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MigrateError(String);

impl From<StorageError> for MigrateError {
    fn from(e: StorageError) -> MigrateError {
        MigrateError(e.to_string())
    }
}

impl From<crate::room::StoreError> for MigrateError {
    fn from(e: crate::room::StoreError) -> MigrateError {
        MigrateError(e.to_string())
    }
}

/// What a finished migration did.
#[derive(Debug, PartialEq, Eq)]
pub struct Migrated {
    pub rooms: usize,
}

/// Copies every room from `from` to `to`, calling `progress(done, total)` as it goes.
pub async fn migrate(
    from: &Endpoint,
    to: &Endpoint,
    force: bool,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<Migrated, MigrateError> {
    if from == to {
        return Err(MigrateError(format!(
            "--from and --to are both {}",
            from.describe()
        )));
    }
    if let Endpoint::File(dir) = from {
        if !dir.is_dir() {
            return Err(MigrateError(format!(
                "{} is not a directory; nothing to migrate",
                from.describe()
            )));
        }
    }
    let source = open(from).await?;
    let target = open(to).await?;
    let rooms = source.read().await?;
    let existing = target.read().await?;
    if !existing.is_empty() && !force {
        return Err(MigrateError(format!(
            "{} already holds {} room(s); migrate into an empty one, or pass --force to replace rooms of the same name",
            to.describe(),
            existing.len()
        )));
    }
    let total = rooms.len();
    let moving: Vec<Arc<RoomEntry>> = rooms.values().cloned().collect();
    target
        .write(&existing, &moving, &mut |done| {
            progress("copying", done, total)
        })
        .await?;
    // A file target is closed (every room in its file, the lock released) before the check,
    // so the check reads what a daemon started on it would read.
    target.close().await?;
    drop(target);
    let written = open(to).await?;
    let back = written.read().await?;
    let mut checked = 0;
    for (name, entry) in &rooms {
        let copy = back.get(name).ok_or_else(|| {
            MigrateError(format!(
                "room {:?} is missing from {} after the copy; the source is unchanged",
                name.as_str(),
                to.describe()
            ))
        })?;
        if copy.encoded() != entry.encoded() || copy.revision != entry.revision {
            return Err(MigrateError(format!(
                "room {:?} differs in {} after the copy; the source is unchanged",
                name.as_str(),
                to.describe()
            )));
        }
        checked += 1;
        progress("checking", checked, total);
    }
    written.close().await?;
    source.close().await?;
    Ok(Migrated { rooms: total })
}

/// An opened end: a file backend (holding its directory's lock) or a Redis store.
enum Opened {
    File {
        backend: Box<tokio::sync::Mutex<FileBackend>>,
        rooms: tokio::sync::Mutex<RoomMap>,
    },
    Redis(RemoteStore),
}

async fn open(endpoint: &Endpoint) -> Result<Opened, MigrateError> {
    match endpoint {
        Endpoint::File(dir) => {
            let mut backend = FileBackend::new(dir, Durability::Strict);
            // Takes the directory's lock: refuses a directory a daemon holds.
            let rooms = backend.load()?;
            Ok(Opened::File {
                backend: Box::new(tokio::sync::Mutex::new(backend)),
                rooms: tokio::sync::Mutex::new(rooms),
            })
        }
        Endpoint::Redis { url, prefix } => {
            let store = RemoteStore::open(url, prefix, false)?;
            store.ping().await?;
            let daemons = store.daemons().await?;
            if !daemons.is_empty() {
                return Err(MigrateError(format!(
                    "{} is in use by {} running daemon(s) ({}); stop them first",
                    endpoint.describe(),
                    daemons.len(),
                    daemons.join(", ")
                )));
            }
            Ok(Opened::Redis(store))
        }
    }
}

impl Opened {
    async fn read(&self) -> Result<RoomMap, MigrateError> {
        match self {
            Opened::File { rooms, .. } => Ok(rooms.lock().await.clone()),
            Opened::Redis(store) => {
                let listing = store.list(&ListQuery::default(), |_| true).await?;
                Ok(listing
                    .0
                    .into_iter()
                    .map(|entry| (entry.name.clone(), entry))
                    .collect())
            }
        }
    }

    async fn write(
        &self,
        existing: &RoomMap,
        moving: &[Arc<RoomEntry>],
        progress: &mut dyn FnMut(usize),
    ) -> Result<(), MigrateError> {
        match self {
            Opened::File { backend, rooms } => {
                let mut backend = backend.lock().await;
                let mut all = existing.clone();
                let mut done = 0;
                for chunk in moving.chunks(CHUNK) {
                    let mut changes = Vec::with_capacity(chunk.len());
                    for entry in chunk {
                        all.insert(entry.name.clone(), entry.clone());
                        changes.push(Change::Put {
                            name: entry.name.clone(),
                            revision: entry.revision,
                            at: entry.updated_at,
                            room: entry.encoded().clone(),
                        });
                    }
                    let snapshot = Snapshot { rooms: all.clone() };
                    backend.commit(&changes, &snapshot)?;
                    done += chunk.len();
                    progress(done);
                }
                *rooms.lock().await = all;
                Ok(())
            }
            Opened::Redis(store) => {
                let mut done = 0;
                let mut writes = stream::iter(moving.iter().map(|entry| async move {
                    let prepared = PreparedRoom::from_json(entry.encoded()).map_err(|e| {
                        MigrateError(format!(
                            "room {:?} in the source is not valid ({e}); fix or remove it first",
                            entry.name.as_str()
                        ))
                    })?;
                    store
                        .restore(&prepared, entry.revision, entry.updated_at)
                        .await?;
                    Ok::<_, MigrateError>(())
                }))
                .buffer_unordered(IN_FLIGHT);
                while writes.try_next().await?.is_some() {
                    done += 1;
                    progress(done);
                }
                Ok(())
            }
        }
    }

    /// Leaves the end clean: a file directory with every room in its file and the lock gone.
    async fn close(&self) -> Result<(), MigrateError> {
        match self {
            Opened::File { backend, rooms } => {
                let snapshot = Snapshot {
                    rooms: rooms.lock().await.clone(),
                };
                let mut backend = backend.lock().await;
                backend.close(&snapshot)?;
                Ok(())
            }
            Opened::Redis(store) => {
                store.close().await;
                Ok(())
            }
        }
    }
}
