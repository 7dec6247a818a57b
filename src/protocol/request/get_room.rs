//! `getRoom`: one room as saved, and its revision.

use serde::Serialize;

use super::{Args, Decode, Operation, RoomLookup};
use crate::protocol::response::FoundRoom;
use crate::protocol::ErrorReply;

/// `getRoom`: the room as saved, and its revision.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetRoom {
    pub room_name: RoomLookup,
}

impl Operation for GetRoom {
    const NAME: &'static str = "getRoom";
    type Reply = FoundRoom;
}

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
