//! `watch` events from wherever the rooms live: the storage actor's broadcast of its commits,
//! or the daemon's subscription to what every daemon publishes through Redis. A watcher sees
//! event lines, skipped events and the end, the same for both.

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use super::{Kept, Rooms};
use crate::protocol::event::event_line;
use crate::remote::RemoteEvent;
use crate::room::StoreError;
use crate::store::Event;

/// A `watch` subscription: every change acknowledged after it was made.
pub struct Subscription {
    source: Source,
}

enum Source {
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

impl Rooms {
    /// Every change acknowledged from now on, for `watch`.
    pub async fn subscribe(&self) -> Result<Subscription, StoreError> {
        let source = match &self.kept {
            Kept::Local(store) => {
                let (events, since) = store.subscribe();
                Source::Local { events, since }
            }
            Kept::Remote(remote) => {
                let (events, fence) = remote.subscribe().await?;
                Source::Remote {
                    events,
                    fence: Some(fence),
                }
            }
        };
        Ok(Subscription { source })
    }
}

impl Subscription {
    /// True when no event is waiting (the watcher flushes its socket then).
    pub fn is_empty(&self) -> bool {
        match &self.source {
            Source::Local { events, .. } => events.is_empty(),
            Source::Remote { events, .. } => events.is_empty(),
        }
    }

    /// The next event, if `wanted` wants its room.
    pub async fn recv(&mut self, wanted: impl Fn(&str) -> bool) -> Received {
        match &mut self.source {
            Source::Local { events, since } => match events.recv().await {
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
            Source::Remote { events, fence } => match events.recv().await {
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
