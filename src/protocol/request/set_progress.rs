//! `setProgress`: how far a user got through a room's media.

use serde::Serialize;

use super::{Args, Decode, Operation, RoomLookup};
use crate::protocol::response::NewRevision;
use crate::protocol::ErrorReply;
use crate::room::change::Mutation;

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
