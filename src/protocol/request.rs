//! The requests of PROTOCOL.md section 3: one type per operation, shared by both sides.
//!
//! Each operation has its home here: a struct of its arguments, its [`Operation`] facts (the
//! `op` name, whether it changes rooms, what a success answers), how the daemon takes it from
//! a request line ([`Decode`]) and the [`Mutation`] it asks the store for. Clients build the
//! same structs and serialize them with [`Call`] (`{"op":…,…arguments}`), so the field names
//! are written once. Adding an operation is a struct, its two impls, and one line in
//! [`operations!`].
//!
//! Where the daemon keeps a checked form a client cannot build (a prepared room, an instant
//! parsed from RFC 3339 text), the struct takes that part as a type parameter whose default is
//! the daemon's form: a client sends `SaveRoom<&RawValue>` or `DeleteRooms<&str>`, and the
//! daemon stays the one judge of rooms and timestamps.

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::decode::Args;
pub use super::decode::{decode, Envelope, Rejected};
use super::response::{
    self, Deleted, DeletedCount, Done, Exists, FoundRoom, NewRevision, Pong, Rated, RoomList, Valid,
};
use super::ErrorReply;
use crate::room::{now_millis, EpochMillis, Rating, Revision, RoomName};
use crate::store::apply::Mutation;
use crate::store::prepare::PreparedRoom;

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

/// Implements [`Operation`] for an operation that changes nothing, generic ones included.
macro_rules! operation {
    ($op:ident $(<$param:ident>)?, $name:literal, $reply:ty) => {
        impl $(<$param>)? Operation for $op $(<$param>)? {
            const NAME: &'static str = $name;
            type Reply = $reply;
        }
    };
}

/// `saveRoom`: creates or replaces a whole room. `Room` is the daemon's checked
/// [`PreparedRoom`]; a client sends the room's JSON text as it is (`&RawValue`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SaveRoom<Room = Box<PreparedRoom>> {
    pub room: Room,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<Revision>,
}

impl<Room> Operation for SaveRoom<Room> {
    const NAME: &'static str = "saveRoom";
    const MUTATES: bool = true;
    type Reply = NewRevision;
}

impl Decode for SaveRoom {
    fn decode(args: &mut Args) -> Result<Self, ErrorReply> {
        Ok(SaveRoom {
            room: Box::new(args.room()?),
            expected_revision: args.opt_u64("expectedRevision")?,
        })
    }

    fn into_mutation(self) -> Result<Mutation, Self> {
        let SaveRoom {
            room,
            expected_revision,
        } = self;
        Ok(Mutation::Save {
            room,
            expected_revision,
        })
    }
}

/// `getRoom`: the room as saved, and its revision.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetRoom {
    pub room_name: RoomLookup,
}

operation!(GetRoom, "getRoom", FoundRoom);

impl Decode for GetRoom {
    fn decode(args: &mut Args) -> Result<Self, ErrorReply> {
        Ok(GetRoom {
            room_name: args.room_name()?,
        })
    }

    fn lookup(&self) -> Option<&RoomLookup> {
        Some(&self.room_name)
    }
}

/// `hasRoom`: whether the room exists.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HasRoom {
    pub room_name: RoomLookup,
}

operation!(HasRoom, "hasRoom", Exists);

impl Decode for HasRoom {
    fn decode(args: &mut Args) -> Result<Self, ErrorReply> {
        Ok(HasRoom {
            room_name: args.room_name()?,
        })
    }

    fn lookup(&self) -> Option<&RoomLookup> {
        Some(&self.room_name)
    }
}

/// `deleteRoom`: deleting a missing room is a success that deleted nothing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRoom {
    pub room_name: RoomLookup,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<Revision>,
}

impl Operation for DeleteRoom {
    const NAME: &'static str = "deleteRoom";
    const MUTATES: bool = true;
    type Reply = Deleted;
}

impl Decode for DeleteRoom {
    fn decode(args: &mut Args) -> Result<Self, ErrorReply> {
        Ok(DeleteRoom {
            room_name: args.room_name()?,
            expected_revision: args.opt_u64("expectedRevision")?,
        })
    }

    fn into_mutation(self) -> Result<Mutation, Self> {
        match self.room_name {
            RoomLookup::Storable(name) => Ok(Mutation::Delete {
                name,
                expected_revision: self.expected_revision,
            }),
            RoomLookup::Unstorable(_) => Err(self),
        }
    }

    fn lookup(&self) -> Option<&RoomLookup> {
        Some(&self.room_name)
    }
}

/// `listRooms`: its filters and paging; every field is optional and they combine. `Instant` is
/// the daemon's [`EpochMillis`]; a client sends the RFC 3339 text (`&str`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRooms<Instant = EpochMillis> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creator_plex_user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creator_plex_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_before: Option<Instant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_after: Option<Instant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub summary: bool,
}

/// The name the store and the backends know `listRooms`'s filters by.
pub type ListQuery = ListRooms;

// Not derived: that would ask `Instant: Default`, which a `&str` is, an `EpochMillis` too, but
// the filters' default is "none of them" whatever the instant's type.
impl<Instant> Default for ListRooms<Instant> {
    fn default() -> Self {
        ListRooms {
            creator_plex_user_id: None,
            creator_plex_username: None,
            created_before: None,
            created_after: None,
            after: None,
            limit: None,
            summary: false,
        }
    }
}

operation!(ListRooms<Instant>, "listRooms", RoomList);

impl Decode for ListRooms {
    fn decode(args: &mut Args) -> Result<Self, ErrorReply> {
        let creator_plex_user_id = match args.take("creatorPlexUserId") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            Some(_) => {
                return Err(ErrorReply::bad_request(
                    "creatorPlexUserId: expected a string or an integer",
                ))
            }
        };
        let creator_plex_username = match args.take("creatorPlexUsername") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                return Err(ErrorReply::bad_request(
                    "creatorPlexUsername: expected a string",
                ))
            }
        };
        let limit = match args.opt_u64("limit") {
            Ok(Some(0)) | Err(_) => {
                return Err(ErrorReply::bad_request(
                    "limit: expected a positive integer",
                ))
            }
            Ok(limit) => limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let summary = match args.take("summary") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(ErrorReply::bad_request("summary: expected true or false")),
        };
        let after = match args.take("after") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(ErrorReply::bad_request("after: expected a string")),
        };
        Ok(ListRooms {
            creator_plex_user_id,
            creator_plex_username,
            created_before: args.opt_timestamp("createdBefore")?,
            created_after: args.opt_timestamp("createdAfter")?,
            after,
            limit,
            summary,
        })
    }
}

/// `addRating`: appends a user's rating of a media, once per user and media.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddRating {
    pub room_name: RoomLookup,
    pub media_id: String,
    pub user_name: String,
    #[serde(serialize_with = "rating_text")]
    pub rating: Rating,
    /// Epoch milliseconds; `None` means "now", resolved when the mutation is made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
}

fn rating_text<S: Serializer>(rating: &Rating, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(rating.as_str())
}

impl Operation for AddRating {
    const NAME: &'static str = "addRating";
    const MUTATES: bool = true;
    type Reply = Rated;
}

impl Decode for AddRating {
    fn decode(args: &mut Args) -> Result<Self, ErrorReply> {
        Ok(AddRating {
            room_name: args.room_name()?,
            media_id: args.string("mediaId")?,
            user_name: args.string("userName")?,
            rating: {
                let rating = args.string("rating")?;
                Rating::parse(&rating).ok_or_else(|| {
                    ErrorReply::bad_request("rating: expected \"like\" or \"dislike\"")
                })?
            },
            timestamp: args.opt_u64("timestamp")?,
        })
    }

    fn into_mutation(self) -> Result<Mutation, Self> {
        let AddRating {
            room_name: RoomLookup::Storable(name),
            media_id,
            user_name,
            rating,
            timestamp,
        } = self
        else {
            return Err(self);
        };
        Ok(Mutation::AddRating {
            name,
            media_id,
            user_name,
            rating,
            timestamp: timestamp.unwrap_or_else(|| now_millis().max(0) as u64),
        })
    }

    fn lookup(&self) -> Option<&RoomLookup> {
        Some(&self.room_name)
    }
}

/// `setProgress`: sets how far a user got through a room's media.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetProgress {
    pub room_name: RoomLookup,
    pub user_name: String,
    pub progress: u64,
}

impl Operation for SetProgress {
    const NAME: &'static str = "setProgress";
    const MUTATES: bool = true;
    type Reply = NewRevision;
}

impl Decode for SetProgress {
    fn decode(args: &mut Args) -> Result<Self, ErrorReply> {
        Ok(SetProgress {
            room_name: args.room_name()?,
            user_name: args.string("userName")?,
            progress: args
                .opt_u64("progress")?
                .ok_or_else(|| ErrorReply::bad_request("progress: required"))?,
        })
    }

    fn into_mutation(self) -> Result<Mutation, Self> {
        let SetProgress {
            room_name: RoomLookup::Storable(name),
            user_name,
            progress,
        } = self
        else {
            return Err(self);
        };
        Ok(Mutation::SetProgress {
            name,
            user_name,
            progress,
        })
    }

    fn lookup(&self) -> Option<&RoomLookup> {
        Some(&self.room_name)
    }
}

/// `verifyPassword`: whether `password` opens the room.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyPassword {
    pub room_name: RoomLookup,
    pub password: String,
}

operation!(VerifyPassword, "verifyPassword", Valid);

impl Decode for VerifyPassword {
    fn decode(args: &mut Args) -> Result<Self, ErrorReply> {
        Ok(VerifyPassword {
            room_name: args.room_name()?,
            password: args.string("password")?,
        })
    }

    fn lookup(&self) -> Option<&RoomLookup> {
        Some(&self.room_name)
    }
}

/// `deleteRooms`: every room created before an instant. `Instant` as in [`ListRooms`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRooms<Instant = EpochMillis> {
    pub created_before: Instant,
}

impl<Instant> Operation for DeleteRooms<Instant> {
    const NAME: &'static str = "deleteRooms";
    const MUTATES: bool = true;
    type Reply = DeletedCount;
}

impl Decode for DeleteRooms {
    fn decode(args: &mut Args) -> Result<Self, ErrorReply> {
        Ok(DeleteRooms {
            created_before: args
                .opt_timestamp("createdBefore")?
                .ok_or_else(|| ErrorReply::bad_request("createdBefore: required"))?,
        })
    }

    fn into_mutation(self) -> Result<Mutation, Self> {
        Ok(Mutation::DeleteCreatedBefore {
            created_before: self.created_before,
        })
    }
}

/// `ping`: the daemon answers with its protocol version.
#[derive(Debug, Serialize)]
pub struct Ping;

operation!(Ping, "ping", Pong);

/// `stats`: what the daemon is and how it is doing.
#[derive(Debug, Serialize)]
pub struct Stats;

operation!(Stats, "stats", response::Stats);

/// `flush`: returns once every acknowledged change is on stable storage.
#[derive(Debug, Serialize)]
pub struct Flush;

operation!(Flush, "flush", Done);

/// Not in PROTOCOL.md's table: brings every room file up to date (README "Backups and hand
/// edits"); other backends answer as for `flush`.
#[derive(Debug, Serialize)]
pub struct Fold;

operation!(Fold, "fold", Done);

/// Operations without arguments.
macro_rules! no_arguments {
    ($($op:ident),*) => {
        $(impl Decode for $op {
            fn decode(_: &mut Args) -> Result<Self, ErrorReply> {
                Ok($op)
            }
        })*
    };
}

no_arguments!(Ping, Stats, Flush, Fold);

/// `watch`: the connection then carries change events for these rooms (every room when
/// `None`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Watch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_names: Option<Vec<RoomLookup>>,
}

operation!(Watch, "watch", Done);

impl Decode for Watch {
    fn decode(args: &mut Args) -> Result<Self, ErrorReply> {
        Ok(Watch {
            room_names: args.room_names()?,
        })
    }
}

impl Watch {
    /// The rooms to watch: a name no room can have is dropped, as it would match no event. All
    /// of them dropped leaves an empty list, which watches nothing.
    pub fn rooms(self) -> Option<Vec<RoomName>> {
        self.room_names.map(|names| {
            names
                .into_iter()
                .filter_map(|name| match name {
                    RoomLookup::Storable(name) => Some(name),
                    RoomLookup::Unstorable(_) => None,
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::room::parse_timestamp;

    /// What the daemon decodes from the line a client sends for `op`.
    fn sent<Op: Operation + Serialize>(op: Op) -> (String, Request) {
        let line = serde_json::to_string(&Call::new(op)).expect("encode");
        match decode(line.as_bytes()) {
            Ok(envelope) => (line, envelope.request),
            Err(rejected) => panic!("{line}: {:?}", rejected.error),
        }
    }

    /// Sends `op` and checks the daemon decodes it to `expected` under the same name.
    fn round_trip<Op: Operation + Serialize>(op: Op, expected: Request) {
        let (line, decoded) = sent(op);
        assert_eq!(decoded.name(), Op::NAME, "{line}");
        assert_eq!(format!("{decoded:?}"), format!("{expected:?}"), "{line}");
    }

    fn millis(text: &str) -> EpochMillis {
        parse_timestamp(text).expect("a valid timestamp")
    }

    #[test]
    fn what_a_client_encodes_the_daemon_decodes_as_the_same_operation() {
        let lookup = || RoomLookup::new("movie night");
        round_trip(
            GetRoom {
                room_name: lookup(),
            },
            Request::GetRoom(GetRoom {
                room_name: lookup(),
            }),
        );
        round_trip(
            HasRoom {
                room_name: RoomLookup::new(""),
            },
            Request::HasRoom(HasRoom {
                room_name: RoomLookup::Unstorable(String::new()),
            }),
        );
        round_trip(
            DeleteRoom {
                room_name: lookup(),
                expected_revision: Some(0),
            },
            Request::DeleteRoom(DeleteRoom {
                room_name: lookup(),
                expected_revision: Some(0),
            }),
        );
        let rating = || AddRating {
            room_name: lookup(),
            media_id: "plex://movie/1".to_owned(),
            user_name: "jane".to_owned(),
            rating: Rating::Dislike,
            timestamp: Some(1_729_890_000_000),
        };
        round_trip(rating(), Request::AddRating(rating()));
        let untimed = || AddRating {
            timestamp: None,
            ..rating()
        };
        round_trip(untimed(), Request::AddRating(untimed()));
        let progress = || SetProgress {
            room_name: lookup(),
            user_name: "jane".to_owned(),
            progress: 7,
        };
        round_trip(progress(), Request::SetProgress(progress()));
        let verify = || VerifyPassword {
            room_name: lookup(),
            password: "secret".to_owned(),
        };
        round_trip(verify(), Request::VerifyPassword(verify()));
        round_trip(
            DeleteRooms {
                created_before: "2025-01-01T00:00:00.000+02:00",
            },
            Request::DeleteRooms(DeleteRooms {
                created_before: millis("2025-01-01T00:00:00.000+02:00"),
            }),
        );
        round_trip(
            ListRooms {
                creator_plex_user_id: Some("13692262".to_owned()),
                creator_plex_username: Some("john_doe".to_owned()),
                created_before: Some("2025-12-01T00:00:00Z"),
                created_after: Some("2025-01-01T00:00:00Z"),
                after: Some("a room".to_owned()),
                limit: Some(10),
                summary: true,
            },
            Request::ListRooms(ListRooms {
                creator_plex_user_id: Some("13692262".to_owned()),
                creator_plex_username: Some("john_doe".to_owned()),
                created_before: Some(millis("2025-12-01T00:00:00Z")),
                created_after: Some(millis("2025-01-01T00:00:00Z")),
                after: Some("a room".to_owned()),
                limit: Some(10),
                summary: true,
            }),
        );
        round_trip(
            ListRooms::<&str>::default(),
            Request::ListRooms(ListQuery::default()),
        );
        round_trip(Ping, Request::Ping(Ping));
        round_trip(Stats, Request::Stats(Stats));
        round_trip(Flush, Request::Flush(Flush));
        round_trip(Fold, Request::Fold(Fold));
        let watch = || Watch {
            room_names: Some(vec![lookup(), RoomLookup::new("a\nb")]),
        };
        round_trip(watch(), Request::Watch(watch()));
        round_trip(
            Watch { room_names: None },
            Request::Watch(Watch { room_names: None }),
        );
    }

    #[test]
    fn a_room_is_sent_as_written_and_decoded_into_its_prepared_form() {
        let text = r#"{"roomName":"movie night","sort":"random","createdAt":"2025-10-25T20:00:00.000Z","creatorPlexUserId":1,"creatorPlexUsername":"u","extra":[2.50,12345678901234567890123]}"#;
        let room: &RawValue = serde_json::from_str(text).expect("room JSON");
        let (line, request) = sent(SaveRoom {
            room,
            expected_revision: Some(3),
        });
        assert!(line.contains(text), "{line}");
        let Request::SaveRoom(save) = request else {
            panic!("{line}: {request:?}");
        };
        assert_eq!(save.room.name.as_str(), "movie night");
        assert_eq!(&save.room.encoded[..], text.as_bytes());
        assert_eq!(save.expected_revision, Some(3));
    }

    #[test]
    fn operations_without_arguments_are_just_their_name() {
        for (line, expected) in [
            (serde_json::to_string(&Call::new(Ping)), r#"{"op":"ping"}"#),
            (serde_json::to_string(&Call::new(&Fold)), r#"{"op":"fold"}"#),
            (
                serde_json::to_string(&Call::new(Watch { room_names: None })),
                r#"{"op":"watch"}"#,
            ),
        ] {
            assert_eq!(line.expect("encode"), expected);
        }
    }

    #[test]
    fn the_table_knows_which_operations_change_rooms() {
        let mutating = [
            SaveRoom::<()>::MUTATES,
            DeleteRoom::MUTATES,
            AddRating::MUTATES,
            SetProgress::MUTATES,
            DeleteRooms::<()>::MUTATES,
        ];
        assert!(mutating.iter().all(|&m| m));
        let reading = [
            GetRoom::MUTATES,
            HasRoom::MUTATES,
            ListRooms::<()>::MUTATES,
            VerifyPassword::MUTATES,
            Ping::MUTATES,
            Stats::MUTATES,
            Flush::MUTATES,
            Fold::MUTATES,
            Watch::MUTATES,
        ];
        assert!(reading.iter().all(|&m| !m));
        // A lookup of a name no room can have asks for no change, even a deleteRoom.
        let (_, request) = sent(DeleteRoom {
            room_name: RoomLookup::new(""),
            expected_revision: None,
        });
        assert!(request.is_mutation());
        assert!(request.into_mutation().is_err());
        let (_, request) = sent(SetProgress {
            room_name: RoomLookup::new("r"),
            user_name: "u".to_owned(),
            progress: 1,
        });
        assert!(matches!(
            request.into_mutation(),
            Ok(Mutation::SetProgress { progress: 1, .. })
        ));
    }
}
