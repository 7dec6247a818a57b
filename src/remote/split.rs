//! A saved room turned from the whole form into the split form (see [`super::layout`]), the
//! first time `addRating` or `setProgress` reaches it after a save.
//!
//! Those scripts answer `whole` with the room's JSON instead of changing a room in the whole
//! form. The daemon splits that JSON ([`layout::parts`]) and a script puts the fields in place
//! of `room` only if `room` is still those bytes (another daemon may have saved, split or deleted
//! the room meanwhile); then the change is sent again. The split keeps the room's content, `rev`
//! and `w`, so it publishes nothing and every read cache stays right. Each step is one script,
//! so the change itself stays one atomic step whichever daemons race on the room.

use std::time::{Duration, Instant};

use super::layout;
use super::script::Script;
use super::RemoteStore;
use crate::room::prepare::PreparedRoom;
use crate::room::StoreError;
use crate::room::{quoted, RoomName};

/// How long a change keeps splitting the room and trying again before giving up (each retry
/// means another daemon saved the room again in between). It was 8 tries: a room saved in a
/// loop through another daemon refused 0.3% of swipes (found by an outside probe); a save takes
/// one round trip as a retry does, so within this time a swipe nearly always gets its turn.
const PATIENCE: Duration = super::RESPONSE_TIMEOUT;

script! {
    /// Put `fields` (the split form's content) in place of the field `room` if it still holds
    /// `whole`; answers `ok`, or `changed` when it does not. The pairs from `ARGV` index
    /// `members` on are not hash fields but the room's ratings as members of its set `rated`
    /// (`layout::rated`, each with an empty value), which the split fills, so that `addRating`
    /// need not decode the ratings to build it (`rate.rs`).
    SplitRoom<'a> {
        whole: &'a [u8],
        members: usize,
    }
    rest fields
    => "
if redis.call('HGET', room, 'room') ~= whole then return {'changed', '0'} end
-- The fields first: `HSET` is checked against `maxmemory`, and once a script has written,
-- Redis lets its later writes through (`HDEL` is not checked).
for i = fields, members - 1, 1000 do
  redis.call('HSET', room, unpack(ARGV, i, math.min(i + 999, members - 1)))
end
redis.call('HDEL', room, 'room')
redis.call('UNLINK', rated)
local batch = {}
for i = members, #ARGV, 2 do
  batch[#batch + 1] = unpack(ARGV, i, i)
  if #batch == 1000 then
    redis.call('SADD', rated, unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('SADD', rated, unpack(batch)) end
redis.call('HSET', room, 'U', '1')
return {'ok', '0'}
"
}

impl RemoteStore {
    /// Runs the script `script()` makes on room `name`, splitting the room first when it is in
    /// the whole form; returns the script's status and number.
    pub(super) async fn run_split<S: Script>(
        &self,
        name: &RoomName,
        script: impl Fn() -> S,
    ) -> Result<(String, u64), StoreError> {
        let deadline = Instant::now() + PATIENCE;
        let mut tries = 0;
        loop {
            let (status, value): (String, Vec<u8>) = self.invoke(name.as_str(), script()).await?;
            if status != "whole" {
                let number = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok());
                return Ok((status, number.unwrap_or(0)));
            }
            tries += 1;
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable {
                    message: format!(
                        "room {} at Redis {} was saved again {tries} times in {} s while this change waited; try again",
                        quoted(name.as_str()),
                        self.inner.url,
                        PATIENCE.as_secs()
                    ),
                    cause: None,
                });
            }
            self.split(name, &value).await?;
        }
    }

    /// Splits room `name`, whose `room` field held `whole`.
    async fn split(&self, name: &RoomName, whole: &[u8]) -> Result<(), StoreError> {
        let room = PreparedRoom::from_json(whole).map_err(|_| self.corrupt(name.as_str()))?;
        let mut fields = layout::parts(&room).fields;
        // ARGV: `whole`, `members`, then the pairs (Lua counts from 1).
        let members = 3 + 2 * fields.len();
        fields.extend(layout::rated(&room).into_iter().map(|m| (m, Vec::new())));
        let split = SplitRoom {
            whole,
            members,
            fields,
        };
        let _: (String, String) = self.invoke(name.as_str(), split).await?;
        Ok(())
    }
}
