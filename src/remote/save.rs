//! `saveRoom` through Redis, and `migrate`'s restore: the room written in its whole form
//! ([`super::layout::whole`]: a few fields, the room's JSON in one) in one script, replacing the
//! old hash whole.

use super::layout;
use super::RemoteStore;
use crate::protocol::event::Event;
use crate::room::change::{Outcome, Refusal};
use crate::room::prepare::PreparedRoom;
use crate::room::StoreError;
use crate::room::{EpochMillis, Revision};

script! {
    /// Create or replace room `name` unless `expected` (a revision, or '' for any) is not its
    /// revision; `now` is its last change, `created_at` its `createdAt` (both ms). Publishes
    /// `head .. revision .. tail`.
    Save<'a> {
        name: &'a str,
        expected: String,
        now: EpochMillis,
        created_at: EpochMillis,
        channel: String,
        head: Vec<u8>,
        tail: Vec<u8>,
    }
    rest fields
    => "
local current = redis.call('HGET', room, 'rev') or '0'
if expected ~= '' and expected ~= current then return {'conflict', current} end
-- The first write is one Redis checks against `maxmemory` (`ZADD`): once a script has written,
-- Redis lets its later writes through, and `UNLINK` is not checked (saves grew Redis past its
-- limit while swipes were refused: found by an outside probe).
redis.call('ZADD', index, 0, name)
-- UNLINK: a split hash of a big room is freed off Redis's main thread. The ratings go, and
-- with them the set of who rated what (`rate.rs`).
redis.call('UNLINK', room, rated)
redis.call('HSET', room, 'rev', current, unpack(ARGV, fields, #ARGV))
local rev = redis.call('HINCRBY', room, 'rev', 1)
redis.call('ZADD', changed, now, name)
redis.call('ZADD', created, created_at, name)
redis.call('PUBLISH', channel, head .. rev .. tail)
return {'ok', tostring(rev)}
"
}

script! {
    /// Write room `name` at `revision`, last changed at `updated_at`, created at `created_at`
    /// (`migrate`; publishes nothing).
    Restore<'a> {
        name: &'a str,
        revision: Revision,
        updated_at: EpochMillis,
        created_at: EpochMillis,
    }
    rest fields
    => "
-- First a write Redis checks against `maxmemory` (see `Save`).
redis.call('ZADD', index, 0, name)
redis.call('UNLINK', room, rated)
redis.call('HSET', room, 'rev', revision, unpack(ARGV, fields, #ARGV))
redis.call('ZADD', changed, updated_at, name)
redis.call('ZADD', created, created_at, name)
return {'ok', revision}
"
}

impl RemoteStore {
    pub(super) async fn save(
        &self,
        room: &PreparedRoom,
        expected_revision: Option<Revision>,
        now: EpochMillis,
    ) -> Result<Outcome, StoreError> {
        let name = &room.name;
        let event = Event::Saved {
            room_name: name.as_str(),
        }
        .around_revision();
        let save = Save {
            name: name.as_str(),
            expected: expected_revision.map(|r| r.to_string()).unwrap_or_default(),
            now,
            created_at: room.facts.created_at,
            channel: self.inner.keys.channel(),
            head: event.head,
            tail: event.tail,
            fields: layout::whole(room, now, &self.inner.versions.next()).fields,
        };
        let (status, value) = self.run(name, save).await?;
        match status.as_str() {
            "ok" => Ok(Outcome::Saved { revision: value }),
            _ => Err(StoreError::Refused(Refusal::Conflict { current: value })),
        }
    }

    /// Writes a room with a given revision and times, as `migrate` copies it.
    pub async fn restore(
        &self,
        room: &PreparedRoom,
        revision: Revision,
        updated_at: EpochMillis,
    ) -> Result<(), StoreError> {
        let restore = Restore {
            name: room.name.as_str(),
            revision,
            updated_at,
            created_at: room.facts.created_at,
            fields: layout::whole(room, updated_at, &self.inner.versions.next()).fields,
        };
        self.run(&room.name, restore).await.map(drop)
    }
}
