//! `moviematch-storage migrate`: copies every room between two places (a file directory, a
//! Redis prefix) while no daemon uses them. Both ends are opened through the seam
//! ([`crate::rooms`]): nothing here asks which backend an end has.
//!
//! Each room keeps its JSON byte for byte, its revision and its last-changed time, so clients
//! holding an `expectedRevision` and `roomExpiry` see no difference. The copy is checked by
//! reading the target back and comparing every room with the source.
//!
//! Refusals, before anything is written: a storage directory another process holds (the
//! daemon's lock), a Redis prefix on which a daemon announced itself, and a target that already
//! holds rooms (unless `force`: then rooms of the same name are replaced, others kept).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::file::FileBackend;
use crate::backend::StorageError;
use crate::config::Durability;
use crate::protocol::request::ListQuery;
use crate::remote::RemoteStore;
use crate::room::entry::RoomEntry;
use crate::room::RoomName;
use crate::rooms::{OpenRooms, Place, Rooms};

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
    let copied = copy(source.rooms(), to, force, &mut progress).await;
    // Closed whatever happened, so that nothing is left running when the command exits.
    let closed = source.close().await;
    let total = copied?;
    closed?;
    Ok(Migrated { rooms: total })
}

/// Copies every room of `source` to `to` and checks the copy; returns how many rooms it copied.
async fn copy(
    source: &Rooms,
    to: &Endpoint,
    force: bool,
    progress: &mut impl FnMut(&str, usize, usize),
) -> Result<usize, MigrateError> {
    let rooms = read(source).await?;
    let target = open(to).await?;
    let copied = async {
        let existing = read(target.rooms()).await?;
        if !existing.is_empty() && !force {
            return Err(MigrateError(format!(
                "{} already holds {} room(s); migrate into an empty one, or pass --force to replace rooms of the same name",
                to.describe(),
                existing.len()
            )));
        }
        let moving: Vec<Arc<RoomEntry>> = rooms.values().cloned().collect();
        let total = moving.len();
        target
            .rooms()
            .restore(&moving, &mut |done| progress("copying", done, total))
            .await
            .map_err(MigrateError::from)
    }
    .await;
    // The target is closed (a file target: every room in its file, the lock released) before
    // the check, so the check reads what a daemon started on it would read.
    let closed = target.close().await;
    copied?;
    closed?;
    let written = open(to).await?;
    let checked = check(&rooms, written.rooms(), to, progress).await;
    let closed = written.close().await;
    checked?;
    closed?;
    Ok(rooms.len())
}

/// Compares every room of the source with its copy in `written`.
async fn check(
    rooms: &BTreeMap<RoomName, Arc<RoomEntry>>,
    written: &Rooms,
    to: &Endpoint,
    progress: &mut impl FnMut(&str, usize, usize),
) -> Result<(), MigrateError> {
    let total = rooms.len();
    let back = read(written).await?;
    let mut checked = 0;
    for (name, entry) in rooms {
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
    Ok(())
}

/// Opens one end where it lives: a storage directory (taking its lock: refused while a daemon
/// holds it), or a Redis prefix (refused while a daemon announced itself on it).
async fn open(endpoint: &Endpoint) -> Result<OpenRooms, MigrateError> {
    let place = match endpoint {
        Endpoint::File(dir) => Place::Local(Box::new(FileBackend::new(dir, Durability::Strict))),
        Endpoint::Redis { url, prefix } => Place::Redis(RemoteStore::open(url, prefix, false)?),
    };
    let opened = Rooms::start(place)?;
    // Fails early when Redis does not answer.
    opened.rooms().flush().await?;
    let daemons = opened.rooms().served_by().await?;
    if !daemons.is_empty() {
        return Err(MigrateError(format!(
            "{} is in use by {} running daemon(s) ({}); stop them first",
            endpoint.describe(),
            daemons.len(),
            daemons.join(", ")
        )));
    }
    Ok(opened)
}

/// Every room at one end, by name.
async fn read(rooms: &Rooms) -> Result<BTreeMap<RoomName, Arc<RoomEntry>>, MigrateError> {
    let listing = rooms.list(&ListQuery::default()).await?;
    Ok(listing
        .rooms
        .into_iter()
        .map(|entry| (entry.name.clone(), entry))
        .collect())
}
