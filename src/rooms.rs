//! The rooms as every operation sees them, whichever backend keeps them: [`Rooms`].
//!
//! `memory` and `file` rooms live in this daemon: the storage actor ([`crate::store`]) applies
//! mutations and reads come from its published snapshot, without waiting. `redis` rooms live in
//! a Redis server shared with other daemons ([`crate::remote`]): every request goes there. The
//! service speaks to both through this one type, and so does the backend conformance suite.

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::oneshot;

use crate::protocol::request::ListQuery;
use crate::remote::{RemoteEvent, RemoteStore};
use crate::room::change::{Mutation, Outcome};
use crate::room::entry::RoomEntry;
use crate::room::StoreError;
use crate::store::{Counters, Event, StoreHandle};
use crate::watch::event_line;

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub enum Rooms {
    /// Held by this daemon's storage actor (`memory`, `file`).
    Local(StoreHandle),
    /// Held by Redis (`redis`).
    Remote(RemoteStore),
}

/// A page of `listRooms`, and whether more rooms match after it.
#[derive(Debug, Default)]
pub struct Listing {
    pub rooms: Vec<Arc<RoomEntry>>,
    pub more: bool,
}

impl Rooms {
    /// "memory", "file" or "redis".
    pub fn backend_name(&self) -> &'static str {
        match self {
            Rooms::Local(store) => store.backend_name(),
            Rooms::Remote(_) => "redis",
        }
    }

    /// The local store's counters (commits, changes); none for Redis.
    pub fn counters(&self) -> Option<&Counters> {
        match self {
            Rooms::Local(store) => Some(store.counters()),
            Rooms::Remote(_) => None,
        }
    }

    /// Queues a mutation on the local actor and returns where its answer arrives, so that a
    /// connection's pipelined writes share commits; `None` for Redis, where a connection's
    /// requests run one after the other (see `Service::begin`).
    pub async fn submit(
        &self,
        mutation: Mutation,
    ) -> Option<oneshot::Receiver<Result<Outcome, StoreError>>> {
        match self {
            Rooms::Local(store) => Some(store.submit(mutation).await),
            Rooms::Remote(_) => None,
        }
    }

    /// Applies a mutation and waits for its answer.
    pub async fn mutate(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        match self {
            Rooms::Local(store) => store.mutate(mutation).await,
            Rooms::Remote(remote) => remote.mutate(mutation).await,
        }
    }

    /// The room as `getRoom` returns it.
    pub async fn get(&self, name: &str) -> Result<Option<Arc<RoomEntry>>, StoreError> {
        match self {
            Rooms::Local(store) => Ok(store.snapshot().get(name).cloned()),
            Rooms::Remote(remote) => remote.get(name).await,
        }
    }

    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        match self {
            Rooms::Local(store) => Ok(store.snapshot().get(name).is_some()),
            Rooms::Remote(remote) => remote.exists(name).await,
        }
    }

    /// How many rooms there are.
    pub async fn count(&self) -> Result<u64, StoreError> {
        match self {
            Rooms::Local(store) => Ok(store.snapshot().rooms.len() as u64),
            Rooms::Remote(remote) => remote.count().await,
        }
    }

    /// `listRooms`: the rooms matching `query`, in name order, at most `query.limit`.
    pub async fn list(&self, query: &ListQuery) -> Result<Listing, StoreError> {
        match self {
            Rooms::Local(store) => Ok(list_local(&store.snapshot().rooms, query)),
            Rooms::Remote(remote) => {
                let (rooms, more) = remote.list(query, |e| matches(query, e)).await?;
                Ok(Listing { rooms, more })
            }
        }
    }

    /// Returns once every acknowledged change is on stable storage (for Redis: once Redis
    /// answers; its durability is its own).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self {
            Rooms::Local(store) => store.flush().await,
            Rooms::Remote(remote) => remote.ping().await,
        }
    }

    /// Brings every room file up to date with the rooms (`file`); as `flush` elsewhere.
    pub async fn fold(&self) -> Result<(), StoreError> {
        match self {
            Rooms::Local(store) => store.fold().await,
            Rooms::Remote(remote) => remote.ping().await,
        }
    }

    /// Re-reads room files changed by hand (SIGHUP); Redis has none.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        match self {
            Rooms::Local(store) => store.reload().await,
            Rooms::Remote(_) => Ok(0),
        }
    }

    /// Every change acknowledged from now on, for `watch`.
    pub async fn subscribe(&self) -> Result<Subscription, StoreError> {
        match self {
            Rooms::Local(store) => {
                let (events, since) = store.subscribe();
                Ok(Subscription::Local { events, since })
            }
            Rooms::Remote(remote) => {
                let (events, fence) = remote.subscribe().await?;
                Ok(Subscription::Remote {
                    events,
                    fence: Some(fence),
                })
            }
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

/// A `watch` subscription on either kind of store.
pub enum Subscription {
    /// Changes committed by this daemon's actor; events from snapshots up to `since` are older
    /// than the subscription and skipped.
    Local {
        events: broadcast::Receiver<Event>,
        since: u64,
    },
    /// Changes published through Redis by every daemon; everything before the watcher's own
    /// `fence` is older than the subscription and skipped.
    Remote {
        events: broadcast::Receiver<RemoteEvent>,
        fence: Option<Arc<str>>,
    },
}

/// What a subscription yielded.
pub enum Received {
    /// An event line for the watcher.
    Line(bytes::Bytes),
    /// An event the watcher did not ask for (or older than it).
    Skipped,
    /// Events were missed (the watcher fell behind, or Redis dropped the subscription).
    Overflow { missed: Option<u64> },
    /// No more events will come.
    Closed,
}

impl Subscription {
    /// True when no event is waiting (the watcher flushes its socket then).
    pub fn is_empty(&self) -> bool {
        match self {
            Subscription::Local { events, .. } => events.is_empty(),
            Subscription::Remote { events, .. } => events.is_empty(),
        }
    }

    /// The next event, if `wanted` wants its room.
    pub async fn recv(&mut self, wanted: impl Fn(&str) -> bool) -> Received {
        match self {
            Subscription::Local { events, since } => match events.recv().await {
                Ok((published, change)) => {
                    if published <= *since || !wanted(change.room_name().as_str()) {
                        Received::Skipped
                    } else {
                        Received::Line(event_line(&change))
                    }
                }
                Err(RecvError::Lagged(missed)) => Received::Overflow {
                    missed: Some(missed),
                },
                Err(RecvError::Closed) => Received::Closed,
            },
            Subscription::Remote { events, fence } => match events.recv().await {
                Ok(RemoteEvent::Change { room, line }) => match fence.is_none() && wanted(&room) {
                    true => Received::Line(line),
                    false => Received::Skipped,
                },
                Ok(RemoteEvent::Fence(token)) => {
                    if fence.as_ref() == Some(&token) {
                        *fence = None;
                    }
                    Received::Skipped
                }
                Ok(RemoteEvent::Lost) => Received::Overflow { missed: None },
                Err(RecvError::Lagged(missed)) => Received::Overflow {
                    missed: Some(missed),
                },
                Err(RecvError::Closed) => Received::Closed,
            },
        }
    }
}
