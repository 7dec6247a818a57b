//! The store: one actor that owns the rooms and the backend, and the handle everyone else holds.
//!
//! Writes go through [`StoreHandle::submit`] to the actor (`actor.rs`), which applies them one at a
//! time in arrival order ([`apply`]) and commits them to the backend in batches. Reads never queue
//! behind writes: [`StoreHandle::snapshot`] returns the latest published [`Snapshot`], which is
//! immutable and holds every room already encoded.
//!
//! Consistency: the actor publishes a batch's snapshot before it answers the batch's writers, so
//! once a client has its `ok`, every later read on any connection sees the change.

mod actor;
pub mod apply;
pub mod health;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc, oneshot};

use self::actor::{Actor, Command};
use crate::backend::{Backend, StorageError};
use crate::room::change::{Change, Mutation, Outcome};
use crate::room::cold::Compactor;
use crate::room::entry::{RoomEntry, Snapshot};
use crate::room::StoreError;

/// How many commands may wait for the actor; writers beyond this wait for room (backpressure).
const QUEUE_DEPTH: usize = 4096;

/// How many change events a watcher may fall behind before it is told `overflow`.
pub const EVENT_BUFFER: usize = 4096;

/// Counters the actor keeps for `stats` and for tests that check batching.
#[derive(Debug, Default)]
pub struct Counters {
    /// Batches committed (or attempted); fewer than changes means writers shared syncs.
    pub batches: AtomicU64,
    /// Changes committed.
    pub changes: AtomicU64,
    /// Commits that failed and were reported as `storage` errors.
    pub failed_commits: AtomicU64,
    /// Snapshots published; each change event carries the number of the one that holds it.
    pub published: AtomicU64,
    /// Rooms kept compressed when the last compaction pass ended (`room::cold`).
    pub packed_rooms: AtomicU64,
    /// How the storage is doing (`stats`: `storageHealthy`, `readOnly`, `lastStorageError`).
    pub health: health::Health,
}

/// A committed change and the number of the snapshot that first held it.
pub type Event = (u64, Arc<Change>);

/// A cheap, cloneable handle to the store. The actor stops when the last handle is dropped.
#[derive(Clone)]
pub struct StoreHandle {
    commands: mpsc::Sender<Command>,
    view: Arc<ArcSwap<Snapshot>>,
    counters: Arc<Counters>,
    events: broadcast::Sender<Event>,
    backend_name: &'static str,
}

/// The actor's thread; join it to learn whether the final close succeeded.
pub type ActorThread = std::thread::JoinHandle<Result<(), StorageError>>;

/// Loads the rooms from `backend` and starts the actor on its own thread.
pub fn start(backend: Box<dyn Backend>) -> Result<(StoreHandle, ActorThread), StorageError> {
    start_with(backend, Compactor::default())
}

/// [`start`], with rooms packed after `compactor`'s idle time (tests shorten it).
pub(crate) fn start_with(
    mut backend: Box<dyn Backend>,
    compactor: Compactor,
) -> Result<(StoreHandle, ActorThread), StorageError> {
    let rooms = backend.load()?;
    let counters = Arc::new(Counters::default());
    if let Some(e) = backend.start_warning() {
        counters.health.read_only_at_start(&e);
    }
    let view = Arc::new(ArcSwap::from_pointee(Snapshot { rooms }));
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let handle = StoreHandle {
        commands: tx,
        view: view.clone(),
        counters: counters.clone(),
        events: events.clone(),
        backend_name: backend.name(),
    };
    let actor = Actor {
        backend,
        view,
        commands: rx,
        counters,
        events,
        hot: std::collections::HashMap::new(),
        compactor,
    };
    let thread = std::thread::Builder::new()
        .name("storage-actor".into())
        .spawn(move || actor.run())
        .map_err(|e| StorageError::io("start the storage thread for", "the store", e))?;
    Ok((handle, thread))
}

impl StoreHandle {
    /// The latest published view of every room.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.view.load_full()
    }

    /// The latest published view, for a lookup that ends before the caller awaits anything:
    /// unlike [`Self::snapshot`] it leaves the snapshot's shared reference count alone, which
    /// every reader on every core (and the actor) would otherwise write to.
    pub fn peek(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.view.load()
    }

    /// Queues a mutation and returns where its answer will arrive. Queuing in call order is what
    /// keeps one connection's pipelined writes in order; awaiting the answer separately is what
    /// lets many of them share one commit.
    pub async fn submit(
        &self,
        mutation: Mutation,
    ) -> oneshot::Receiver<Result<Outcome, StoreError>> {
        let (reply, rx) = oneshot::channel();
        // If the actor is gone, `reply` is dropped with the command and the receiver reports it.
        let _ = self
            .commands
            .send(Command::Mutate { mutation, reply })
            .await;
        rx
    }

    /// Applies a mutation and waits for its answer.
    pub async fn mutate(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        self.submit(mutation)
            .await
            .await
            .unwrap_or(Err(StoreError::Stopped))
    }

    /// Returns once every acknowledged change is on stable storage.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Flush { reply }).await?;
        rx.await.unwrap_or(Err(StoreError::Stopped))
    }

    /// Returns once every room's file holds its latest state (see [`Backend::fold`]).
    pub async fn fold(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Fold { reply }).await?;
        rx.await.unwrap_or(Err(StoreError::Stopped))
    }

    /// Re-reads the backend's files; returns how many rooms changed.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Reload { reply }).await?;
        rx.await.unwrap_or(Err(StoreError::Stopped))
    }

    /// Takes `rooms` in as they are (JSON, revision, last change), replacing rooms of the same
    /// name, in one commit (`migrate`).
    pub async fn restore(&self, rooms: Vec<Arc<RoomEntry>>) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Restore { rooms, reply }).await?;
        rx.await.unwrap_or(Err(StoreError::Stopped))
    }

    /// Runs the actor's periodic upkeep; returns once the actor has done it (a liveness proof).
    pub async fn tick(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Tick { reply }).await?;
        rx.await.map_err(|_| StoreError::Stopped)
    }

    /// Every change committed from now on, in commit order, and the number of the latest
    /// published snapshot: events from snapshots up to it are older than the subscription
    /// (their writers may already have their answers) and should be skipped.
    pub fn subscribe(&self) -> (broadcast::Receiver<Event>, u64) {
        let events = self.events.subscribe();
        let since = self
            .counters
            .published
            .load(std::sync::atomic::Ordering::Acquire);
        (events, since)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    async fn send(&self, command: Command) -> Result<(), StoreError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| StoreError::Stopped)
    }
}

#[cfg(test)]
mod tests;
