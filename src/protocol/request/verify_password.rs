//! `verifyPassword`: whether a password opens a room.

use serde::Serialize;

use super::{Args, Decode, Operation, RoomLookup};
use crate::protocol::response::Valid;
use crate::protocol::ErrorReply;

/// `verifyPassword`: whether `password` opens the room.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyPassword {
    pub room_name: RoomLookup,
    pub password: String,
}

impl Operation for VerifyPassword {
    const NAME: &'static str = "verifyPassword";
    type Reply = Valid;
}

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
