//! `deleteRoom`, `deleteRooms` and expiry through Redis: one room per script run, each checked
//! inside its script (another daemon may have saved it since it was chosen).

use redis::AsyncCommands;

use super::{room_name, RemoteStore};
use crate::protocol::event::Event;
use crate::room::change::{Outcome, Refusal};
use crate::room::StoreError;
use crate::room::{EpochMillis, Revision, RoomName};

script! {
    /// Delete room `name` unless `expected` (a revision, or '' for any) is not its revision;
    /// publishes `event`. Answers `1` when there was a room.
    Delete<'a> {
        name: &'a str,
        expected: String,
        channel: String,
        event: Vec<u8>,
    }
    => concat!("
local current = redis.call('HGET', room, 'rev') or '0'
if expected ~= '' and expected ~= current then return {'conflict', current} end
if current == '0' then return {'ok', '0'} end
",
        remove_room!(),
        "return {'ok', '1'}\n"
    )
}

script! {
    /// Delete room `name` if its score in `changed` or `created` (`by`) is still below `bound`
    /// (ms); publishes `event`. Answers `1` when it deleted the room.
    DeleteIfBelow<'a> {
        name: &'a str,
        by: &'static str,
        bound: EpochMillis,
        channel: String,
        event: Vec<u8>,
    }
    => concat!("
local scores = created
if by == 'changed' then scores = changed end
local score = redis.call('ZSCORE', scores, name)
if not score or tonumber(score) >= tonumber(bound) then return {'ok', '0'} end
",
        remove_room!(),
        "return {'ok', '1'}\n"
    )
}

/// Which time a bulk delete goes by.
#[derive(Clone, Copy)]
pub(super) enum By {
    /// The last change (`roomExpiry`).
    Changed,
    /// `createdAt` (`deleteRooms`).
    Created,
}

impl RemoteStore {
    pub(super) async fn delete(
        &self,
        name: &RoomName,
        expected_revision: Option<Revision>,
    ) -> Result<Outcome, StoreError> {
        let delete = Delete {
            name: name.as_str(),
            expected: expected_revision.map(|r| r.to_string()).unwrap_or_default(),
            channel: self.inner.keys.channel(),
            event: deleted_event(name),
        };
        let (status, value) = self.run(name, delete).await?;
        match status.as_str() {
            "ok" => Ok(Outcome::Deleted {
                deleted: value == 1,
            }),
            _ => Err(StoreError::Refused(Refusal::Conflict { current: value })),
        }
    }

    /// Deletes every room whose time in `by` is below `bound`.
    pub(super) async fn delete_below(&self, by: By, bound: EpochMillis) -> Result<u64, StoreError> {
        let (key, by_name) = match by {
            By::Changed => (self.inner.keys.changed(), "changed"),
            By::Created => (self.inner.keys.created(), "created"),
        };
        let mut c = self.connection();
        let mut count = 0;
        loop {
            let below = format!("({bound}");
            let names = self
                .page("ZRANGEBYSCORE", &key, b"-inf", below.as_bytes())
                .await?;
            if names.is_empty() {
                return Ok(count);
            }
            let mut deleted_here = 0;
            for raw in names {
                let Some(name) = room_name(&raw) else {
                    // Not a name a daemon would write; drop it from the set so it is not seen again.
                    let _: Result<i64, _> = c.zrem(&key, &raw).await;
                    continue;
                };
                let delete = DeleteIfBelow {
                    name: name.as_str(),
                    by: by_name,
                    bound,
                    channel: self.inner.keys.channel(),
                    event: deleted_event(&name),
                };
                let (_, deleted) = self.run(&name, delete).await?;
                deleted_here += deleted;
            }
            count += deleted_here;
            if deleted_here == 0 {
                // Every candidate was saved again meanwhile; what is left is not below `bound`.
                return Ok(count);
            }
        }
    }
}

fn deleted_event(name: &RoomName) -> Vec<u8> {
    Event::Deleted {
        room_name: name.as_str(),
    }
    .around_revision()
    .head
}
