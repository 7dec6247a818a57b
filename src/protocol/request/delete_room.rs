//! `deleteRoom`: one room deleted, if it is at the expected revision.

use serde::Serialize;

use super::{Args, Decode, Operation, RoomLookup};
use crate::protocol::response::Deleted;
use crate::protocol::ErrorReply;
use crate::room::change::Mutation;
use crate::room::Revision;

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
