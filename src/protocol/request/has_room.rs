//! `hasRoom`: whether a room exists.

use serde::Serialize;

use super::{Args, Decode, Operation, RoomLookup};
use crate::protocol::response::Exists;
use crate::protocol::ErrorReply;

/// `hasRoom`: whether the room exists.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HasRoom {
    pub room_name: RoomLookup,
}

impl Operation for HasRoom {
    const NAME: &'static str = "hasRoom";
    type Reply = Exists;
}

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
