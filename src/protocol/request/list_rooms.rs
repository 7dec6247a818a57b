//! `listRooms`: rooms sorted by name, filtered and paged.

use serde::Serialize;
use serde_json::Value;

use super::{Args, Decode, Operation};
use crate::protocol::response::RoomList;
use crate::protocol::ErrorReply;
use crate::room::EpochMillis;

/// `listRooms`: its filters and paging; every field is optional and they combine. `Instant` is
/// the daemon's [`EpochMillis`]; a client sends the RFC 3339 text (`&str`).
#[derive(Debug, Clone, Default, Serialize)]
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

impl<Instant> Operation for ListRooms<Instant> {
    const NAME: &'static str = "listRooms";
    type Reply = RoomList;
}

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
