//! `setProgress` through Redis: one user's progress field replaced, in one script.

use super::RemoteStore;
use crate::protocol::event::Event;
use crate::room::change::{Outcome, Refusal};
use crate::room::StoreError;
use crate::room::{now_millis, RoomName};

script! {
    /// Set `user_name`'s progress to `progress`; `now` is the change's time. Publishes
    /// `head .. revision .. tail`. Answers `missing` without a room, `whole` with the room while
    /// it is in the whole form.
    ///
    /// Like `addRating`, its cost does not grow with the room: `doc` (the room's JSON without its
    /// ratings and progress) is read only while the flag `P` says `userProgress` may need its
    /// placeholder, once per room. It used to be read on every call, moving the room through
    /// Lua: 12 us of Redis's one thread per call on a 5 KB room, 126 us on a 100 KB room,
    /// against 5 us for either now (`redis-benchmark`, 50 clients, 2026-12-06).
    SetProgress<'a> {
        name: &'a str,
        user_name: &'a str,
        progress: u64,
        now: i64,
        channel: String,
        head: Vec<u8>,
        tail: Vec<u8>,
    }
    => concat!("
local field = 'p:' .. user_name
-- The room's flag for `userProgress`, its revision and the user's field, in one read; `doc` is
-- read only when the flag says it may change.
local held = redis.call('HMGET', room, 'P', 'rev', field)
local flag, rev, cur = held[1], held[2], held[3]
",
        doc_unless_flagged!(),
        "local changes
if cur then
  local space = string.find(cur, ' ', 1, true)
  changes = {field, string.sub(cur, 1, space) .. progress}
else
  local seq = redis.call('HINCRBY', room, 'seq', 1)
  changes = {field, seq .. ' ' .. progress}
end
",
        ensure_object!("P", "userProgress"),
        changed_and_published!()
    )
}

impl RemoteStore {
    pub(super) async fn set_progress(
        &self,
        name: RoomName,
        user_name: &str,
        progress: u64,
    ) -> Result<Outcome, StoreError> {
        let event = Event::Progress {
            room_name: name.as_str(),
            user_name,
            progress,
        }
        .around_revision();
        let channel = self.inner.keys.channel();
        let set = || SetProgress {
            name: name.as_str(),
            user_name,
            progress,
            now: now_millis(),
            channel: channel.clone(),
            head: event.head.clone(),
            tail: event.tail.clone(),
        };
        let (status, revision) = self.run_split(&name, set).await?;
        match status.as_str() {
            "ok" => Ok(Outcome::Progressed { revision }),
            _ => Err(StoreError::Refused(Refusal::NotFound { name })),
        }
    }
}
