//! The operations on the daemon rather than on rooms: `ping`, `stats`, `flush`, `fold`.

use serde::Serialize;

use super::{Args, Decode, Operation};
use crate::protocol::response::{self, Done, Pong};
use crate::protocol::ErrorReply;

/// `ping`: the daemon answers with its protocol version.
#[derive(Debug, Serialize)]
pub struct Ping;

impl Operation for Ping {
    const NAME: &'static str = "ping";
    type Reply = Pong;
}

/// `stats`: what the daemon is and how it is doing.
#[derive(Debug, Serialize)]
pub struct Stats;

impl Operation for Stats {
    const NAME: &'static str = "stats";
    type Reply = response::Stats;
}

/// `flush`: returns once every acknowledged change is on stable storage.
#[derive(Debug, Serialize)]
pub struct Flush;

impl Operation for Flush {
    const NAME: &'static str = "flush";
    type Reply = Done;
}

/// Not in PROTOCOL.md's table: brings every room file up to date (README "Backups and hand
/// edits"); other backends answer as for `flush`.
#[derive(Debug, Serialize)]
pub struct Fold;

impl Operation for Fold {
    const NAME: &'static str = "fold";
    type Reply = Done;
}

/// Operations without arguments.
macro_rules! no_arguments {
    ($($op:ident),*) => {
        $(impl Decode for $op {
            fn decode(_: &mut Args) -> Result<Self, ErrorReply> {
                Ok($op)
            }
        })*
    };
}

no_arguments!(Ping, Stats, Flush, Fold);
