//! `addRating` through Redis: the rating appended to its media's field, unless that user already
//! rated that media, in one script.

use super::RemoteStore;
use crate::protocol::event::Event;
use crate::room::change::{Outcome, Refusal};
use crate::room::StoreError;
use crate::room::{now_millis, RoomName};

script! {
    /// Append `entry` (the rating as JSON) to `media_id`'s ratings unless `user_name` already
    /// rated it; `now` is the change's time. Publishes `head .. revision .. tail`. Answers
    /// `same` with the revision when the user had rated it, `missing` without a room, `whole`
    /// with the room while it is in the whole form. Decodes only that media's ratings (with
    /// Redis's `cjson`), never the room.
    AddRating<'a> {
        name: &'a str,
        media_id: &'a str,
        user_name: &'a str,
        entry: String,
        now: i64,
        channel: String,
        head: Vec<u8>,
        tail: Vec<u8>,
    }
    => concat!("
local field = 'r:' .. media_id
",
        split_fields!("R"),
        "if cur then
  local space = string.find(cur, ' ', 1, true)
  local list = string.sub(cur, space + 1)
  for _, rated in ipairs(cjson.decode(list)) do
    if type(rated) == 'table' and rated[1] == user_name then
      return {'same', redis.call('HGET', room, 'rev')}
    end
  end
  if list == '[]' then
    list = '[' .. entry .. ']'
  else
    list = string.sub(list, 1, -2) .. ',' .. entry .. ']'
  end
  redis.call('HSET', room, field, string.sub(cur, 1, space) .. list)
else
  local seq = redis.call('HINCRBY', room, 'seq', 1)
  redis.call('HSET', room, field, seq .. ' [' .. entry .. ']')
end
",
        ensure_object!("R", "ratings"),
        "redis.call('HINCRBY', room, 'rc', 1)\n",
        changed_and_published!()
    )
}

impl RemoteStore {
    pub(super) async fn add_rating(
        &self,
        name: RoomName,
        media_id: &str,
        user_name: &str,
        rating: &str,
        timestamp: u64,
    ) -> Result<Outcome, StoreError> {
        let event = Event::Rated {
            room_name: name.as_str(),
            media_id,
            user_name,
            rating,
            timestamp,
        }
        .around_revision();
        let entry = serde_json::json!([user_name, rating, timestamp]).to_string();
        let channel = self.inner.keys.channel();
        let add = || AddRating {
            name: name.as_str(),
            media_id,
            user_name,
            entry: entry.clone(),
            now: now_millis(),
            channel: channel.clone(),
            head: event.head.clone(),
            tail: event.tail.clone(),
        };
        let (status, revision) = self.run_split(&name, add).await?;
        match status.as_str() {
            "ok" => Ok(Outcome::Rated {
                revision,
                added: true,
            }),
            "same" => Ok(Outcome::Rated {
                revision,
                added: false,
            }),
            _ => Err(StoreError::Refused(Refusal::NotFound { name })),
        }
    }
}
