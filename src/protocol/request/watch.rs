//! `watch`: the connection becomes a stream of change events.

use serde::Serialize;

use super::{Args, Decode, Operation, RoomLookup};
use crate::protocol::response::Done;
use crate::protocol::ErrorReply;
use crate::room::RoomName;

/// `watch`: the connection then carries change events for these rooms (every room when
/// `None`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Watch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_names: Option<Vec<RoomLookup>>,
}

impl Operation for Watch {
    const NAME: &'static str = "watch";
    type Reply = Done;
}

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
