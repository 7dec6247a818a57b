//! `addRating`: a user's rating of a media, added once.

use serde::{Serialize, Serializer};

use super::{Args, Decode, Operation, RoomLookup};
use crate::protocol::response::Rated;
use crate::protocol::ErrorReply;
use crate::room::change::Mutation;
use crate::room::{now_millis, Rating};

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
