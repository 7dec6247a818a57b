//! `saveRoom`: a whole room, created or replaced.

use serde::Serialize;

use super::{Args, Decode, Operation};
use crate::protocol::response::NewRevision;
use crate::protocol::ErrorReply;
use crate::room::change::Mutation;
use crate::room::prepare::PreparedRoom;
use crate::room::Revision;

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
