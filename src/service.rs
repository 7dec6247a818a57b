//! The meaning of each operation: a decoded request in, a response line out.
//!
//! Mutations are turned into [`Mutation`]s and queued on the store; everything else is answered
//! from the store's published snapshot without involving the actor. This module owns the
//! mapping from store results to protocol replies and never does I/O itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::config::PasswordHashing;
use crate::password;
use crate::protocol::request::{ListQuery, Request};
use crate::protocol::{error_line, ErrorCode, ErrorReply, RequestId, Response, PROTOCOL_VERSION};
use crate::room::now_millis;
use crate::store::apply::{Mutation, Outcome, Refusal};
use crate::store::snapshot::{RoomEntry, Snapshot};
use crate::store::{StoreError, StoreHandle};

/// Facts `stats` reports besides the rooms.
#[derive(Debug, Clone)]
pub struct Facts {
    pub durability: String,
    pub storage_path: Option<String>,
}

/// What every connection shares: the store and the daemon-wide settings and counters.
#[derive(Clone)]
pub struct Service {
    pub store: StoreHandle,
    pub password_hashing: PasswordHashing,
    pub connections: Arc<AtomicUsize>,
    pub started: Instant,
    pub facts: Arc<Facts>,
}

/// A request on its way to a response, in the connection's order.
pub enum Pending {
    /// The response is known already (e.g. a decoding error).
    Ready(Bytes),
    /// A mutation queued on the store; its answer arrives on `reply`.
    Mutation {
        id: RequestId,
        reply: oneshot::Receiver<Result<Outcome, StoreError>>,
    },
    /// Answered when its turn comes, so it sees every earlier write of its connection.
    Deferred { id: RequestId, request: Request },
}

impl Service {
    /// Starts a request: queues mutations at once (so pipelined writes share commits), defers
    /// everything else to [`Service::answer`].
    pub async fn begin(&self, id: RequestId, request: Request) -> Pending {
        let mutation = match request {
            Request::SaveRoom {
                room,
                expected_revision,
            } => {
                let room = match self.password_hashing {
                    PasswordHashing::Argon2 => match password::hash_prepared(*room).await {
                        Ok(room) => room,
                        Err(e) => return Pending::Ready(error_line(&id, &e)),
                    },
                    PasswordHashing::None => *room,
                };
                Mutation::Save {
                    room: Box::new(room),
                    expected_revision,
                }
            }
            Request::DeleteRoom {
                room_name,
                expected_revision,
            } => Mutation::Delete {
                name: room_name,
                expected_revision,
            },
            Request::AddRating {
                room_name,
                media_id,
                user_name,
                rating,
                timestamp,
            } => Mutation::AddRating {
                name: room_name,
                media_id,
                user_name,
                rating,
                timestamp: timestamp.unwrap_or_else(|| now_millis().max(0) as u64),
            },
            Request::SetProgress {
                room_name,
                user_name,
                progress,
            } => Mutation::SetProgress {
                name: room_name,
                user_name,
                progress,
            },
            Request::DeleteRooms { created_before } => {
                Mutation::DeleteCreatedBefore { created_before }
            }
            request => return Pending::Deferred { id, request },
        };
        Pending::Mutation {
            id,
            reply: self.store.submit(mutation).await,
        }
    }

    /// Produces the response line of a pending request, waiting for it if needed.
    pub async fn finish(&self, pending: Pending) -> Bytes {
        match pending {
            Pending::Ready(line) => line,
            Pending::Mutation { id, reply } => {
                let result = reply.await.unwrap_or(Err(StoreError::Stopped));
                match result {
                    Ok(outcome) => outcome_line(&id, outcome),
                    Err(e) => error_line(&id, &store_error(e)),
                }
            }
            Pending::Deferred { id, request } => self.answer(&id, request).await,
        }
    }

    /// Answers a request that does not change rooms.
    pub async fn answer(&self, id: &RequestId, request: Request) -> Bytes {
        let snapshot = self.store.snapshot();
        match request {
            Request::GetRoom { room_name } => match snapshot.get(room_name.as_str()) {
                Some(entry) => Response::ok_with_capacity(id, entry.encoded().len())
                    .raw("room", entry.encoded())
                    .u64("revision", entry.revision)
                    .finish(),
                None => Response::ok(id).raw("room", b"null").finish(),
            },
            Request::HasRoom { room_name } => Response::ok(id)
                .bool("exists", snapshot.get(room_name.as_str()).is_some())
                .finish(),
            Request::ListRooms(query) => list_rooms(id, &snapshot, &query),
            Request::VerifyPassword {
                room_name,
                password,
            } => match snapshot.get(room_name.as_str()) {
                Some(entry) => {
                    let valid = match entry.facts.password.as_deref() {
                        None => true,
                        Some(stored) => password::verify(stored, &password).await,
                    };
                    Response::ok(id).bool("valid", valid).finish()
                }
                None => error_line(id, &not_found(room_name.as_str())),
            },
            Request::Ping => Response::ok(id)
                .u64("protocol", u64::from(PROTOCOL_VERSION))
                .finish(),
            Request::Stats => self.stats(id, &snapshot),
            Request::Flush => match self.store.flush().await {
                Ok(()) => Response::ok(id).finish(),
                Err(e) => error_line(id, &store_error(e)),
            },
            Request::Watch { .. } => error_line(
                id,
                &ErrorReply::bad_request("watch: only allowed as a connection's last request"),
            ),
            // Mutations never reach here: `begin` queues them.
            other => error_line(
                id,
                &ErrorReply::bad_request(format!("internal: {other:?} is not a read")),
            ),
        }
    }

    fn stats(&self, id: &RequestId, snapshot: &Snapshot) -> Bytes {
        let counters = self.store.counters();
        let mut response = Response::ok(id)
            .str("version", env!("CARGO_PKG_VERSION"))
            .str("backend", self.store.backend_name())
            .u64("rooms", snapshot.rooms.len() as u64)
            .u64("uptimeSeconds", self.started.elapsed().as_secs())
            .u64(
                "connections",
                self.connections.load(Ordering::Relaxed) as u64,
            )
            .u64("protocol", u64::from(PROTOCOL_VERSION))
            .str("durability", &self.facts.durability)
            .u64("commits", counters.batches.load(Ordering::Relaxed))
            .u64("changes", counters.changes.load(Ordering::Relaxed))
            .u64(
                "failedCommits",
                counters.failed_commits.load(Ordering::Relaxed),
            );
        if let Some(path) = &self.facts.storage_path {
            response = response.str("storagePath", path);
        }
        response.finish()
    }
}

fn list_rooms(id: &RequestId, snapshot: &Snapshot, query: &ListQuery) -> Bytes {
    use std::ops::Bound;
    let lower = match &query.after {
        Some(after) => Bound::Excluded(after.as_str()),
        None => Bound::Unbounded,
    };
    let matches = |entry: &RoomEntry| {
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
    };
    let limit = query.limit.unwrap_or(usize::MAX);
    let mut selected: Vec<&RoomEntry> = Vec::new();
    let mut more = false;
    for (_, entry) in snapshot
        .rooms
        .range::<_, str>((lower, Bound::Unbounded))
        .filter(|(_, e)| matches(e))
    {
        if selected.len() == limit {
            more = true;
            break;
        }
        selected.push(entry);
    }
    let next = if more {
        selected.last().map(|e| e.name.as_str())
    } else {
        None
    };
    let bytes: usize = selected.iter().map(|e| e.encoded().len() + 1).sum();
    let items = selected.iter().map(|e| {
        if query.summary {
            &e.summary[..]
        } else {
            &e.encoded()[..]
        }
    });
    let response = Response::ok_with_capacity(id, bytes).raw_array("rooms", items);
    match next {
        Some(name) => response.str("next", name),
        None => response.raw("next", b"null"),
    }
    .finish()
}

fn outcome_line(id: &RequestId, outcome: Outcome) -> Bytes {
    match outcome {
        Outcome::Saved { revision } | Outcome::Progressed { revision } => {
            Response::ok(id).u64("revision", revision).finish()
        }
        Outcome::Deleted { deleted } => Response::ok(id).bool("deleted", deleted).finish(),
        Outcome::Rated { revision, added } => Response::ok(id)
            .u64("revision", revision)
            .bool("added", added)
            .finish(),
        Outcome::DeletedMany { count } => Response::ok(id).u64("deleted", count).finish(),
    }
}

fn not_found(name: &str) -> ErrorReply {
    let quoted = serde_json::to_string(name).unwrap_or_default();
    ErrorReply::new(ErrorCode::NotFound, format!("room {quoted} does not exist"))
}

/// The protocol's view of a store failure.
pub fn store_error(e: StoreError) -> ErrorReply {
    match e {
        StoreError::Refused(Refusal::Conflict { current }) => {
            let mut reply = ErrorReply::new(
                ErrorCode::Conflict,
                format!("expectedRevision does not match: the room is at revision {current}"),
            );
            reply.revision = Some(current);
            reply
        }
        StoreError::Refused(Refusal::NotFound { name }) => not_found(name.as_str()),
        StoreError::Storage { message, cause } => {
            let mut reply = ErrorReply::new(
                ErrorCode::Storage,
                format!("the change was not stored: {message}"),
            );
            reply.cause = cause;
            reply
        }
        StoreError::Stopped => ErrorReply::new(
            ErrorCode::ShuttingDown,
            "the daemon is stopping; the request was not executed",
        ),
    }
}
