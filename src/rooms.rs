//! The seam: where the rooms live is chosen once, when they are opened ([`Rooms::open`]), and
//! everything above (service, watch, daemon, migrate, the tests) speaks to them through
//! [`Rooms`] alone, never asking which backend it has.
//!
//! `memory` and `file` rooms live in this daemon: the storage actor ([`crate::store`]) applies
//! mutations and reads come from its published snapshot, without waiting. `redis` rooms live in
//! a Redis server shared with other daemons ([`crate::remote`]): every request goes there.
//! Whatever differs between the two is a method here with a meaning that holds for both:
//! whether a connection may queue writes ahead ([`Rooms::pipelines`]), the periodic upkeep and
//! the watchdog's question ([`Rooms::upkeep`], [`Rooms::answers_within`]), SIGHUP
//! ([`Rooms::reread`]), what `stats` and the start-up log say, the end of a `watch`
//! ([`Subscription`]), and the clean stop ([`OpenRooms::close`]).
//!
//! - `open.rs`: [`Place`] (where the rooms live) and opening and closing them;
//! - `running.rs`: what a running daemon asks of its rooms (upkeep, watchdog, SIGHUP, `stats`);
//! - `restore.rs`: what `migrate` asks of them (who serves them, taking rooms in as they are);
//! - `subscription.rs`: `watch` events, from the actor or from Redis.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::protocol::request::ListQuery;
use crate::remote::RemoteStore;
use crate::room::change::{Mutation, Outcome};
use crate::room::entry::RoomEntry;
use crate::room::StoreError;
use crate::store::StoreHandle;

mod open;
mod restore;
mod running;
mod subscription;

pub use open::{OpenRooms, Place};
pub use subscription::{Received, Subscription};

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    kept: Kept,
}

/// Who keeps the rooms; private, so that only this module knows.
#[derive(Clone)]
enum Kept {
    /// This daemon's storage actor (`memory`, `file`).
    Local(StoreHandle),
    /// Redis (`redis`).
    Remote(RemoteStore),
}

/// A page of `listRooms`, and whether more rooms match after it.
#[derive(Debug, Default)]
pub struct Listing {
    pub rooms: Vec<Arc<RoomEntry>>,
    pub more: bool,
}

impl Rooms {
    /// "memory", "file" or "redis", as `stats` reports it.
    pub fn backend_name(&self) -> &'static str {
        match &self.kept {
            Kept::Local(store) => store.backend_name(),
            Kept::Remote(_) => "redis",
        }
    }

    /// Whether a connection may queue its mutations at once ([`Rooms::submit`]) so that its
    /// pipelined writes share commits. Not with Redis: there a connection's requests run one
    /// after the other, which is what keeps them in order.
    pub fn pipelines(&self) -> bool {
        matches!(self.kept, Kept::Local(_))
    }

    /// Queues a mutation and returns where its answer arrives. Where the rooms do not
    /// [`pipeline`](Rooms::pipelines), the mutation is applied before this returns, so the
    /// answer is there at once and the connection's order holds all the same.
    pub async fn submit(
        &self,
        mutation: Mutation,
    ) -> oneshot::Receiver<Result<Outcome, StoreError>> {
        match &self.kept {
            Kept::Local(store) => store.submit(mutation).await,
            Kept::Remote(remote) => {
                let (reply, answer) = oneshot::channel();
                let _ = reply.send(remote.mutate(mutation).await);
                answer
            }
        }
    }

    /// Applies a mutation and waits for its answer.
    pub async fn mutate(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        match &self.kept {
            Kept::Local(store) => store.mutate(mutation).await,
            Kept::Remote(remote) => remote.mutate(mutation).await,
        }
    }

    /// The room as `getRoom` returns it.
    pub async fn get(&self, name: &str) -> Result<Option<Arc<RoomEntry>>, StoreError> {
        match &self.kept {
            Kept::Local(store) => Ok(store.peek().get(name).cloned()),
            Kept::Remote(remote) => remote.get(name).await,
        }
    }

    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        match &self.kept {
            Kept::Local(store) => Ok(store.peek().get(name).is_some()),
            Kept::Remote(remote) => remote.exists(name).await,
        }
    }

    /// How many rooms there are.
    pub async fn count(&self) -> Result<u64, StoreError> {
        match &self.kept {
            Kept::Local(store) => Ok(store.peek().rooms.len() as u64),
            Kept::Remote(remote) => remote.count().await,
        }
    }

    /// `listRooms`: the rooms matching `query`, in name order, at most `query.limit`.
    pub async fn list(&self, query: &ListQuery) -> Result<Listing, StoreError> {
        match &self.kept {
            Kept::Local(store) => Ok(list_local(&store.snapshot().rooms, query)),
            Kept::Remote(remote) => {
                let (rooms, more) = remote.list(query, |e| matches(query, e)).await?;
                Ok(Listing { rooms, more })
            }
        }
    }

    /// Returns once every acknowledged change is on stable storage (for Redis: once Redis
    /// answers; its durability is its own).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.kept {
            Kept::Local(store) => store.flush().await,
            Kept::Remote(remote) => remote.ping().await,
        }
    }

    /// Brings every room file up to date with the rooms (`file`); as `flush` elsewhere.
    pub async fn fold(&self) -> Result<(), StoreError> {
        match &self.kept {
            Kept::Local(store) => store.fold().await,
            Kept::Remote(remote) => remote.ping().await,
        }
    }

    /// Re-reads room files changed by hand and returns how many rooms changed; Redis has none.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        match &self.kept {
            Kept::Local(store) => store.reload().await,
            Kept::Remote(_) => Ok(0),
        }
    }
}

/// Whether `entry` passes the filters of `query` (all but `after` and `limit`).
pub fn matches(query: &ListQuery, entry: &RoomEntry) -> bool {
    query
        .creator_plex_user_id
        .as_ref()
        .is_none_or(|want| entry.facts.creator_plex_user_id.as_ref() == Some(want))
        && query
            .creator_plex_username
            .as_deref()
            .is_none_or(|want| entry.facts.creator_plex_username.as_deref() == Some(want))
        && query
            .created_before
            .is_none_or(|t| entry.facts.created_at < t)
        && query
            .created_after
            .is_none_or(|t| entry.facts.created_at > t)
}

fn list_local(rooms: &crate::room::entry::RoomMap, query: &ListQuery) -> Listing {
    use std::ops::Bound;
    let lower = match &query.after {
        Some(after) => Bound::Excluded(after.as_str()),
        None => Bound::Unbounded,
    };
    let limit = query.limit.unwrap_or(usize::MAX);
    let mut listing = Listing::default();
    for (_, entry) in rooms
        .range::<_, str>((lower, Bound::Unbounded))
        .filter(|(_, e)| matches(query, e))
    {
        if listing.rooms.len() == limit {
            listing.more = true;
            break;
        }
        listing.rooms.push(entry.clone());
    }
    listing
}
