//! The meaning of each operation: a decoded request in, a response line out.
//!
//! Mutations are turned into [`Mutation`]s and queued on the store; everything else is answered
//! from the store's published snapshot without involving the actor (with Redis, both go to
//! Redis: see [`crate::rooms`]). This module owns the mapping from store results to protocol
//! replies and never does I/O itself.

mod password;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::config::PasswordHashing;

use crate::protocol::request::{
    DeleteRoom, GetRoom, HasRoom, ListQuery, Request, RoomLookup, VerifyPassword,
};
use crate::protocol::{error_line, ErrorCode, ErrorReply, RequestId, Response, PROTOCOL_VERSION};
use crate::room::change::{Mutation, Outcome, Refusal};
use crate::room::entry::RoomEntry;
use crate::room::StoreError;
use crate::rooms::{Listing, Rooms};

/// Facts `stats` reports besides the rooms: name and value, as configured.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub settings: Vec<(&'static str, String)>,
}

/// What every connection shares: the store and the daemon-wide settings and counters.
#[derive(Clone)]
pub struct Service {
    pub rooms: Rooms,
    pub password_hashing: PasswordHashing,
    pub connections: Arc<AtomicUsize>,
    pub started: Instant,
    pub facts: Arc<Facts>,
}

/// A response: one line, or one spliced from rooms' stored JSON as the connection writes it,
/// so that a client that does not read holds no copy of the rooms (README "Limits").
pub enum Answer {
    Line(Bytes),
    Spliced(Spliced),
}

/// `head`, then each room's JSON (its summary if `summary`) separated by commas, then `tail`.
pub struct Spliced {
    pub head: Bytes,
    pub rooms: Vec<Arc<RoomEntry>>,
    pub summary: bool,
    pub tail: Bytes,
}

impl From<Bytes> for Answer {
    fn from(line: Bytes) -> Answer {
        Answer::Line(line)
    }
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
    /// everything else to [`Service::answer`]. Where the rooms do not pipeline (Redis: see
    /// [`Rooms::pipelines`]) every request is deferred: a connection's requests then run one
    /// after the other, which keeps them in order.
    pub async fn begin(&self, id: RequestId, request: Request) -> Pending {
        if !request.is_mutation() || !self.rooms.pipelines() {
            return Pending::Deferred { id, request };
        }
        let mutation = match self.mutation(request).await {
            Ok(mutation) => mutation,
            Err(Ok(request)) => return Pending::Deferred { id, request },
            Err(Err(reply)) => return Pending::Ready(error_line(&id, &reply)),
        };
        Pending::Mutation {
            id,
            reply: self.rooms.submit(mutation).await,
        }
    }

    /// The mutation a request asks for; `Err(Ok(request))` when it is not one, `Err(Err(_))`
    /// when it cannot be prepared (password hashing failed).
    async fn mutation(&self, request: Request) -> Result<Mutation, Result<Request, ErrorReply>> {
        let request = match request {
            Request::SaveRoom(mut save)
                if matches!(self.password_hashing, PasswordHashing::Argon2) =>
            {
                save.room = Box::new(password::hash_prepared(*save.room).await.map_err(Err)?);
                Request::SaveRoom(save)
            }
            request => request,
        };
        request.into_mutation().map_err(Ok)
    }

    /// Produces the response of a pending request, waiting for it if needed.
    pub async fn finish(&self, pending: Pending) -> Answer {
        match pending {
            Pending::Ready(line) => line.into(),
            Pending::Mutation { id, reply } => mutation_line(&id, reply.await.ok()).into(),
            Pending::Deferred { id, request } => self.answer(&id, request).await,
        }
    }

    /// Answers a request in its turn: a read, or (with Redis) a mutation.
    pub async fn answer(&self, id: &RequestId, request: Request) -> Answer {
        let request = match self.mutation(request).await {
            Ok(mutation) => {
                return match self.rooms.mutate(mutation).await {
                    Ok(outcome) => outcome_line(id, outcome),
                    Err(e) => error_line(id, &store_error(e)),
                }
                .into()
            }
            Err(Ok(request)) => request,
            Err(Err(reply)) => return error_line(id, &reply).into(),
        };
        match self.read(id, request).await {
            Ok(answer) => answer,
            Err(e) => error_line(id, &store_error(e)).into(),
        }
    }

    async fn read(&self, id: &RequestId, request: Request) -> Result<Answer, StoreError> {
        if let Some(line) = missing_room_answer(id, &request) {
            return Ok(line.into());
        }
        let line = match request {
            Request::GetRoom(GetRoom { room_name }) => {
                match self.rooms.get(room_name.as_str()).await? {
                    Some(entry) => {
                        return Ok(Answer::Spliced(Spliced {
                            head: Response::ok(id).key_only("room"),
                            tail: Response::tail().u64("revision", entry.revision).finish(),
                            rooms: vec![entry],
                            summary: false,
                        }));
                    }
                    None => Response::ok(id).raw("room", b"null").finish(),
                }
            }
            Request::HasRoom(HasRoom { room_name }) => Response::ok(id)
                .bool("exists", self.rooms.exists(room_name.as_str()).await?)
                .finish(),
            Request::ListRooms(query) => {
                return Ok(list_rooms(id, self.rooms.list(&query).await?, &query))
            }
            Request::VerifyPassword(VerifyPassword {
                room_name,
                password,
            }) => match self.rooms.get(room_name.as_str()).await? {
                Some(entry) => {
                    let valid = match entry.facts.password.as_deref() {
                        None => true,
                        Some(stored) => password::verify(stored, &password).await,
                    };
                    Response::ok(id).bool("valid", valid).finish()
                }
                None => error_line(id, &not_found(room_name.as_str())),
            },
            Request::Ping(_) => Response::ok(id)
                .u64("protocol", u64::from(PROTOCOL_VERSION))
                .finish(),
            Request::Stats(_) => self.stats(id).await,
            Request::Flush(_) => {
                self.rooms.flush().await?;
                Response::ok(id).finish()
            }
            Request::Fold(_) => {
                self.rooms.fold().await?;
                Response::ok(id).finish()
            }
            Request::Watch(_) => error_line(
                id,
                &ErrorReply::bad_request("watch: only allowed as a connection's last request"),
            ),
            // Mutations never reach here: `answer` applies them.
            other => error_line(
                id,
                &ErrorReply::bad_request(format!("internal: {} is not a read", other.name())),
            ),
        };
        Ok(line.into())
    }

    async fn stats(&self, id: &RequestId) -> Bytes {
        let mut response = Response::ok(id)
            .str("version", env!("CARGO_PKG_VERSION"))
            .str("backend", self.rooms.backend_name());
        let counted = self.rooms.count().await;
        let reachable = counted.is_ok();
        response = match counted {
            Ok(count) => response.u64("rooms", count),
            // `stats` is how an operator looks at a daemon whose Redis is down: still answer.
            Err(e) => response
                .raw("rooms", b"null")
                .str("storageError", &store_error(e).message),
        };
        response = response
            .u64("uptimeSeconds", self.started.elapsed().as_secs())
            .u64(
                "connections",
                self.connections.load(Ordering::Relaxed) as u64,
            )
            .u64("protocol", u64::from(PROTOCOL_VERSION));
        for (name, value) in &self.facts.settings {
            response = response.str(name, value);
        }
        response = self.rooms.stats(response, reachable).await;
        response.finish()
    }
}

fn list_rooms(id: &RequestId, listing: Listing, query: &ListQuery) -> Answer {
    let next = if listing.more {
        listing.rooms.last().map(|e| e.name.clone())
    } else {
        None
    };
    let mut head = BytesMut::from(&Response::ok(id).key_only("rooms")[..]);
    head.extend_from_slice(b"[");
    let tail = Response::tail();
    let tail = match next {
        Some(name) => tail.str("next", name.as_str()),
        None => tail.raw("next", b"null"),
    };
    let mut closing = BytesMut::from(&b"]"[..]);
    closing.extend_from_slice(&tail.finish());
    Answer::Spliced(Spliced {
        head: head.freeze(),
        rooms: listing.rooms,
        summary: query.summary,
        tail: closing.freeze(),
    })
}

/// The answer to a mutation the store has answered (`None`: the store stopped without answering).
pub fn mutation_line(id: &RequestId, result: Option<Result<Outcome, StoreError>>) -> Bytes {
    match result.unwrap_or(Err(StoreError::Stopped)) {
        Ok(outcome) => outcome_line(id, outcome),
        Err(e) => error_line(id, &store_error(e)),
    }
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

/// The answer to a lookup of a name no room can have (PROTOCOL.md section 3, "Names in
/// lookups"): exactly what a missing room gets, known without asking the store, so it holds
/// alike on every backend and even while Redis is unreachable. `None` for other requests.
fn missing_room_answer(id: &RequestId, request: &Request) -> Option<Bytes> {
    let unstorable = |lookup: &RoomLookup| lookup.storable().is_none();
    Some(match request {
        Request::GetRoom(GetRoom { room_name }) if unstorable(room_name) => {
            Response::ok(id).raw("room", b"null").finish()
        }
        Request::HasRoom(HasRoom { room_name }) if unstorable(room_name) => {
            Response::ok(id).bool("exists", false).finish()
        }
        // As `apply` does for a missing room: its current revision is 0.
        Request::DeleteRoom(DeleteRoom {
            room_name,
            expected_revision,
        }) if unstorable(room_name) => match expected_revision {
            Some(expected) if *expected != 0 => error_line(
                id,
                &store_error(StoreError::Refused(Refusal::Conflict { current: 0 })),
            ),
            _ => Response::ok(id).bool("deleted", false).finish(),
        },
        Request::AddRating(_) | Request::SetProgress(_) | Request::VerifyPassword(_) => {
            match request.lookup() {
                Some(room_name) if unstorable(room_name) => {
                    error_line(id, &not_found(room_name.as_str()))
                }
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// Also for names no room can have (a lone surrogate, a control character).
fn not_found(name: &str) -> ErrorReply {
    ErrorReply::new(ErrorCode::NotFound, crate::room::error::no_such_room(name))
}

/// The protocol's view of a store failure: its code, message, cause and revision.
pub fn store_error(e: StoreError) -> ErrorReply {
    let code = match &e {
        StoreError::Refused(Refusal::Conflict { .. }) => ErrorCode::Conflict,
        StoreError::Refused(Refusal::NotFound { .. }) => ErrorCode::NotFound,
        StoreError::Storage { .. } | StoreError::Unavailable { .. } => ErrorCode::Storage,
        StoreError::Stopped => ErrorCode::ShuttingDown,
    };
    // A storage failure's cause travels in its own field, so the message leaves it out.
    let message = match &e {
        StoreError::Storage { message, .. } => format!("the change was not stored: {message}"),
        StoreError::Unavailable { message, .. } => message.clone(),
        StoreError::Refused(_) | StoreError::Stopped => e.to_string(),
    };
    let mut reply = ErrorReply::new(code, message);
    reply.cause = e.cause().map(str::to_owned);
    if let StoreError::Refused(Refusal::Conflict { current }) = e {
        reply.revision = Some(current);
    }
    reply
}
