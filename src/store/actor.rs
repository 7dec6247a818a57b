//! The storage actor: the one thread that owns the backend and applies every mutation in order.
//!
//! It takes commands from a bounded channel in batches: every command waiting when it wakes is
//! applied to a working copy of the rooms, the batch's changes are committed to the backend in one
//! go (so concurrent writers share one sync: group commit), and only then is the new snapshot
//! published and are the replies sent. A failed commit publishes nothing: every mutation of that
//! batch is answered with a `storage` error and memory keeps the last durable state.
//!
//! It runs on a plain thread because backends do blocking I/O. It ends when every
//! [`super::StoreHandle`] is gone, after a final [`Backend::close`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::apply;

use super::health::Operation;
use super::{Counters, Event};
use crate::backend::{Backend, StorageError};
use crate::room::change::{Change, Mutation, Outcome};
use crate::room::cold::Compactor;
use crate::room::entry::{RoomEntry, RoomMap, Snapshot};
use crate::room::StoreError;
use crate::room::{now_millis, RoomName};

/// The most commands applied in one batch; bounds the latency one batch can add.
const MAX_BATCH: usize = 1024;

/// How many rooms stay hot (kept as a changeable body). Beyond this, the rooms changed least
/// recently are cooled back to just their JSON, which bounds memory whatever the room count.
pub(super) const HOT_ROOMS: usize = 128;

pub(super) type MutationReply = oneshot::Sender<Result<Outcome, StoreError>>;

pub(super) enum Command {
    Mutate {
        mutation: Mutation,
        reply: MutationReply,
    },
    /// Reply once everything acknowledged so far is on stable storage.
    Flush {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Bring every room's file up to date, so an operator may edit it by hand.
    Fold {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Re-read the backend's files (SIGHUP); replies with the number of rooms that changed.
    Reload {
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Take rooms in as they are (`migrate`); see [`Actor::restore`].
    Restore {
        rooms: Vec<Arc<RoomEntry>>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Periodic upkeep: sync in relaxed mode, fold logs. Replies so a watchdog can tell the
    /// actor is alive and not stuck.
    Tick { reply: oneshot::Sender<()> },
}

pub(super) struct Actor {
    pub backend: Box<dyn Backend>,
    pub view: Arc<ArcSwap<Snapshot>>,
    pub commands: mpsc::Receiver<Command>,
    pub counters: Arc<Counters>,
    pub events: broadcast::Sender<Event>,
    /// Hot rooms and when each last changed (the time of its last batch).
    pub hot: HashMap<RoomName, Instant>,
    /// Keeps idle rooms compressed, a slice of the rooms per tick.
    pub compactor: Compactor,
}

/// Puts room `name` back to its JSON if it is hot (it keeps its revision and bytes).
fn cool(rooms: &mut RoomMap, name: RoomName) {
    if let Some(entry) = rooms.get(name.as_str()).filter(|e| e.is_hot()) {
        let cooled = Arc::new(entry.cooled());
        rooms.insert(name, cooled);
    }
}

/// Mutations of one batch waiting for their commit.
#[derive(Default)]
struct Pending {
    changes: Vec<Change>,
    replies: Vec<(MutationReply, Result<Outcome, StoreError>)>,
}

impl Actor {
    /// Runs until every handle is dropped, then closes the backend.
    pub fn run(mut self) -> Result<(), StorageError> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = self.commands.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.run_batch(&mut batch);
        }
        tracing::info!("storage actor stopping: writing every room to storage");
        let snapshot = self.view.load_full();
        self.backend.close(&snapshot)
    }

    fn run_batch(&mut self, batch: &mut Vec<Command>) {
        let mut rooms = self.view.load().rooms.clone();
        let mut pending = Pending::default();
        let now = now_millis();
        for command in batch.drain(..) {
            match command {
                Command::Mutate { mutation, reply } => {
                    let result = apply::apply(&mut rooms, mutation, now, &mut pending.changes)
                        .map_err(StoreError::Refused);
                    pending.replies.push((reply, result));
                }
                Command::Flush { reply } => {
                    rooms = self.commit(rooms, &mut pending);
                    let synced = self.backend.sync(&self.view.load());
                    match &synced {
                        Ok(()) => self.counters.health.worked(Operation::Sync),
                        Err(e) => self.counters.health.failed(Operation::Sync, e),
                    }
                    let _ = reply.send(synced.map_err(storage_error));
                }
                Command::Fold { reply } => {
                    rooms = self.commit(rooms, &mut pending);
                    let result = self.backend.fold(&self.view.load()).map_err(storage_error);
                    let _ = reply.send(result);
                }
                Command::Reload { reply } => {
                    self.commit(rooms, &mut pending);
                    let _ = reply.send(self.reload());
                    rooms = self.view.load().rooms.clone();
                }
                Command::Restore {
                    rooms: entries,
                    reply,
                } => {
                    self.commit(rooms, &mut pending);
                    let _ = reply.send(self.restore(entries));
                    rooms = self.view.load().rooms.clone();
                }
                Command::Tick { reply } => {
                    rooms = self.commit(rooms, &mut pending);
                    match self.backend.maintain(&self.view.load()) {
                        Ok(()) => self.counters.health.worked(Operation::Upkeep),
                        Err(e) => self.counters.health.failed(Operation::Upkeep, &e),
                    }
                    // Nothing is pending here, so `rooms` is what readers see. While a fold
                    // holds an older version, rooms are neither packed nor unpacked.
                    let cooled = self.cool_idle(&mut rooms);
                    let compacted = !self.backend.holds_rooms() && self.compactor.tick(&mut rooms);
                    if cooled || compacted {
                        self.publish(Snapshot {
                            rooms: rooms.clone(),
                        });
                    }
                    let packed = self.compactor.packed_rooms();
                    self.counters.packed_rooms.store(packed, Ordering::Relaxed);
                    let _ = reply.send(());
                }
            }
        }
        self.commit(rooms, &mut pending);
    }

    /// Commits what `pending` holds, publishes `rooms` if that worked, answers every writer, and
    /// returns the rooms to keep working on (the published ones).
    fn commit(&mut self, rooms: RoomMap, pending: &mut Pending) -> RoomMap {
        if pending.replies.is_empty() {
            return rooms;
        }
        let changes = std::mem::take(&mut pending.changes);
        let snapshot = Snapshot { rooms };
        let committed = if changes.is_empty() {
            Ok(())
        } else {
            self.backend.commit(&changes, &snapshot)
        };
        let replies = std::mem::take(&mut pending.replies);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        match committed {
            Ok(()) => {
                if !changes.is_empty() {
                    self.counters.health.worked(Operation::Write);
                }
                self.counters
                    .changes
                    .fetch_add(changes.len() as u64, Ordering::Relaxed);
                let mut snapshot = snapshot;
                self.cool_down(&mut snapshot.rooms, &changes);
                let rooms = snapshot.rooms.clone();
                let published = self.publish(snapshot);
                for (reply, result) in replies {
                    let _ = reply.send(result);
                }
                // Watchers hear of a change only after its writer has its answer.
                self.announce(published, changes);
                rooms
            }
            Err(e) => {
                self.counters.failed_commits.fetch_add(1, Ordering::Relaxed);
                // Logged once per failing spell (see `health`), not once per batch.
                tracing::debug!(
                    "could not store {} change(s); they were not applied",
                    changes.len()
                );
                self.counters.health.failed(Operation::Write, &e);
                let error = storage_error(e);
                for (reply, _) in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                self.view.load().rooms.clone()
            }
        }
    }

    /// Sends `changes`, first held by snapshot `published`, to the watchers. With none (the
    /// usual case) nothing is sent: a send would lock the channel and allocate per change. A
    /// watcher subscribing after the check reads a published number at least `published`
    /// (`StoreHandle::subscribe`), so it would skip these changes anyway.
    fn announce(&self, published: u64, changes: Vec<Change>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        for change in changes {
            let _ = self.events.send((published, Arc::new(change)));
        }
    }

    /// Makes `snapshot` the one readers see, and returns its sequence number.
    fn publish(&mut self, snapshot: Snapshot) -> u64 {
        self.view.store(Arc::new(snapshot));
        self.counters.published.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Notes which rooms `changes` made hot and cools the least recently changed ones when
    /// there are more than [`HOT_ROOMS`].
    fn cool_down(&mut self, rooms: &mut RoomMap, changes: &[Change]) {
        let now = Instant::now();
        for change in changes {
            match change {
                Change::Rate { name, .. } | Change::Progress { name, .. } => {
                    // A batch changes a busy room many times: its name is copied once.
                    match self.hot.get_mut(name) {
                        Some(changed) => *changed = now,
                        None => {
                            self.hot.insert(name.clone(), now);
                        }
                    }
                }
                Change::Put { name, .. } | Change::Delete { name } => {
                    self.hot.remove(name);
                }
            }
        }
        if self.hot.len() <= HOT_ROOMS {
            return;
        }
        let mut by_age: Vec<(Instant, RoomName)> = self.hot.drain().map(|(n, t)| (t, n)).collect();
        by_age.sort_unstable();
        let keep = by_age.split_off(by_age.len() - HOT_ROOMS / 2);
        for (_, name) in by_age {
            cool(rooms, name);
        }
        self.hot.extend(keep.into_iter().map(|(t, n)| (n, t)));
    }

    /// Cools the hot rooms nobody changed for as long as an idle room waits to be packed, so
    /// that the compaction pass packs them too (the last rooms of an evening of swipes would
    /// otherwise stay hot, and unpacked, until other rooms took their place). True if any was.
    fn cool_idle(&mut self, rooms: &mut RoomMap) -> bool {
        let idle = self.compactor.idle();
        let before = self.hot.len();
        self.hot.retain(|name, changed| {
            let keep = changed.elapsed() < idle;
            if !keep {
                cool(rooms, name.clone());
            }
            keep
        });
        self.hot.len() != before
    }

    /// Puts `entries` in as they are, each replacing a room of the same name, in one commit of
    /// one [`Change::Put`] per room (what a save of that room at that revision would log).
    fn restore(&mut self, entries: Vec<Arc<RoomEntry>>) -> Result<(), StoreError> {
        let mut rooms = self.view.load().rooms.clone();
        let mut changes = Vec::with_capacity(entries.len());
        for entry in entries {
            changes.push(Change::Put {
                name: entry.name.clone(),
                revision: entry.revision,
                at: entry.updated_at,
                room: entry.encoded().clone(),
            });
            // A room put in whole is cold, as after a save.
            self.hot.remove(&entry.name);
            rooms.insert(entry.name.clone(), entry);
        }
        let snapshot = Snapshot { rooms };
        self.backend
            .commit(&changes, &snapshot)
            .map_err(storage_error)?;
        let published = self.publish(snapshot);
        self.announce(published, changes);
        Ok(())
    }

    fn reload(&mut self) -> Result<usize, StoreError> {
        let current = self.view.load_full();
        let reloaded = self.backend.reload(&current).map_err(storage_error)?;
        if reloaded.changes.is_empty() {
            return Ok(0);
        }
        let mut rooms = current.rooms.clone();
        for change in &reloaded.changes {
            apply::replay(&mut rooms, change);
        }
        let snapshot = Snapshot { rooms };
        self.backend
            .commit(&reloaded.changes, &snapshot)
            .map_err(storage_error)?;
        let published = self.publish(snapshot);
        let count = reloaded.changes.len();
        self.announce(published, reloaded.changes);
        Ok(count)
    }
}

fn storage_error(e: StorageError) -> StoreError {
    StoreError::Storage {
        message: e.to_string(),
        cause: e.cause(),
    }
}
