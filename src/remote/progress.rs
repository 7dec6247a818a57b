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
",
        split_fields!("P"),
        "if cur then
  local space = string.find(cur, ' ', 1, true)
  redis.call('HSET', room, field, string.sub(cur, 1, space) .. progress)
else
  local seq = redis.call('HINCRBY', room, 'seq', 1)
  redis.call('HSET', room, field, seq .. ' ' .. progress)
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
