//! The requests of PROTOCOL.md section 3: one type per operation, shared by both sides.
//!
//! Each operation has its home in a file here (`add_rating.rs` for `addRating`; the four
//! without arguments share `daemon.rs`): a struct of its arguments, its [`Operation`] facts
//! (the `op` name, whether it changes rooms, what a success answers), how the daemon takes it
//! from a request line ([`Decode`]) and the [`Mutation`] it asks the store for. Clients build
//! the same structs and serialize them with [`Call`] (`{"op":…,…arguments}`), so the field
//! names are written once. Adding an operation is its file, its `mod` and `pub use` lines, and
//! one line in `operations!`.
//!
//! Where the daemon keeps a checked form a client cannot build (a prepared room, an instant
//! parsed from RFC 3339 text), the struct takes that part as a type parameter whose default is
//! the daemon's form: a client sends `SaveRoom<&RawValue>` or `DeleteRooms<&str>`, and the
//! daemon stays the one judge of rooms and timestamps.

use serde::{Serialize, Serializer};

pub use super::decode::{decode, Args, Envelope, Rejected};
use super::ErrorReply;
use crate::room::change::Mutation;
use crate::room::RoomName;

mod add_rating;
mod daemon;
mod delete_room;
mod delete_rooms;
mod get_room;
mod has_room;
mod list_rooms;
mod save_room;
mod set_progress;
#[cfg(test)]
mod tests;
mod verify_password;
mod watch;

pub use add_rating::AddRating;
pub use daemon::{Flush, Fold, Ping, Stats};
pub use delete_room::DeleteRoom;
pub use delete_rooms::DeleteRooms;
pub use get_room::GetRoom;
pub use has_room::HasRoom;
pub use list_rooms::{ListQuery, ListRooms};
pub use save_room::SaveRoom;
pub use set_progress::SetProgress;
pub use verify_password::VerifyPassword;
pub use watch::Watch;

/// What both sides know of an operation.
pub trait Operation {
    /// Its `op` on the wire.
    const NAME: &'static str;
    /// Whether it changes rooms, and so goes through the storage actor (with Redis: a script).
    const MUTATES: bool = false;
    /// What a success carries ([`super::response`]).
    type Reply: serde::de::DeserializeOwned;
}

/// The daemon's side of an operation.
pub trait Decode: Operation + Sized {
    /// Takes the operation's arguments, each checked, with a message naming the one that is
    /// not right. Arguments it leaves in `args` are refused as unknown.
    fn decode(args: &mut Args) -> Result<Self, ErrorReply>;

    /// The change it asks for; `Err(self)` when it asks for none (a read, or a lookup of a
    /// name no room can have, which is answered as a missing room).
    fn into_mutation(self) -> Result<Mutation, Self> {
        Err(self)
    }

    /// The room it looks up by name, if it does.
    fn lookup(&self) -> Option<&RoomLookup> {
        None
    }
}

/// The table of operations: a variant of [`Request`] per operation, each holding its type of
/// the same name, and the dispatch from the `op` name to that type's [`Decode`].
macro_rules! operations {
    ($($op:ident),* $(,)?) => {
        /// Every operation of PROTOCOL.md section 3, with checked arguments.
        #[derive(Debug)]
        pub enum Request {
            $($op($op),)*
        }

        impl Request {
            /// The operation named `op`, decoded from `args`; `None` for an unknown name.
            pub(super) fn decode(op: &str, args: &mut Args) -> Option<Result<Request, ErrorReply>> {
                $(if op == <$op>::NAME {
                    return Some(<$op>::decode(args).map(Request::$op));
                })*
                None
            }

            /// Its `op` name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Request::$op(_) => <$op>::NAME,)*
                }
            }

            /// True for operations that change rooms and so go through the storage actor.
            pub fn is_mutation(&self) -> bool {
                match self {
                    $(Request::$op(_) => <$op>::MUTATES,)*
                }
            }

            /// The change the request asks for; `Err(self)` when it is not one.
            // The error is the request handed back as it came, once per request: boxing it
            // would cost every read an allocation to save a move.
            #[allow(clippy::result_large_err)]
            pub fn into_mutation(self) -> Result<Mutation, Request> {
                match self {
                    $(Request::$op(op) => op.into_mutation().map_err(Request::$op),)*
                }
            }

            /// The room a lookup is about (`None` for `saveRoom` and the operations on no one
            /// room).
            pub fn lookup(&self) -> Option<&RoomLookup> {
                match self {
                    $(Request::$op(op) => op.lookup(),)*
                }
            }
        }
    };
}

operations!(
    SaveRoom,
    GetRoom,
    HasRoom,
    DeleteRoom,
    ListRooms,
    AddRating,
    SetProgress,
    VerifyPassword,
    DeleteRooms,
    Ping,
    Stats,
    Flush,
    Fold,
    Watch,
);

/// A request as a client sends it: `{"op": NAME, …arguments}`. Serialize it (e.g. with
/// [`crate::client::Client::call`]); [`crate::client::Client::request`] also reads the typed
/// reply.
/// `Op` is the operation or a reference to it.
#[derive(Serialize)]
pub struct Call<Op> {
    op: &'static str,
    #[serde(flatten)]
    args: Op,
}

impl<Op: Operation> Call<Op> {
    pub fn new(args: Op) -> Call<Op> {
        Call { op: Op::NAME, args }
    }
}

impl<Op: Operation> Operation for &Op {
    const NAME: &'static str = Op::NAME;
    const MUTATES: bool = Op::MUTATES;
    type Reply = Op::Reply;
}

/// The `roomName` of any operation but `saveRoom`: any string (PROTOCOL.md section 3, "Names
/// in lookups"). MovieMatch looks up names its users type, and its own storage answers `null`
/// or `false` for a name it could never store, so the daemon answers such a name as it answers
/// a missing room instead of refusing the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomLookup {
    /// A name a room can have (section 4); the room may or may not exist.
    Storable(RoomName),
    /// Empty, over 255 bytes, or with a control character (half a surrogate pair is masked
    /// as one): no room has it, or ever will.
    Unstorable(String),
}

impl RoomLookup {
    pub fn new(name: impl Into<String>) -> RoomLookup {
        let name = name.into();
        match RoomName::new(&name) {
            Ok(name) => RoomLookup::Storable(name),
            Err(_) => RoomLookup::Unstorable(name),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RoomLookup::Storable(name) => name.as_str(),
            RoomLookup::Unstorable(name) => name,
        }
    }

    /// The name as a room's, unless no room can have it.
    pub fn storable(&self) -> Option<&RoomName> {
        match self {
            RoomLookup::Storable(name) => Some(name),
            RoomLookup::Unstorable(_) => None,
        }
    }
}

impl Serialize for RoomLookup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
