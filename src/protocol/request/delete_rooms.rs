//! `deleteRooms`: every room created before an instant.

use serde::Serialize;

use super::{Args, Decode, Operation};
use crate::protocol::response::DeletedCount;
use crate::protocol::ErrorReply;
use crate::room::change::Mutation;
use crate::room::EpochMillis;

/// `deleteRooms`: every room created before an instant. `Instant` as in [`super::ListRooms`].
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
