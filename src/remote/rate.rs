//! `addRating` through Redis: the rating appended to its media's field, unless that user already
//! rated that media (a set of who rated what beside the room's hash), in one script.

use super::RemoteStore;
use crate::protocol::event::Event;
use crate::room::change::{Outcome, Refusal};
use crate::room::StoreError;
use crate::room::{now_millis, RoomName};

script! {
    /// Append `entry` (the rating as JSON) to `media_id`'s ratings unless `user_name` already
    /// rated it; `now` is the change's time. Publishes `head .. revision .. tail`. Answers
    /// `same` with the revision when the user had rated it, `missing` without a room, `whole`
    /// with the room while it is in the whole form.
    ///
    /// Its cost does not grow with the ratings the media or the room hold (issue #18; the
    /// script used to decode the media's ratings with `cjson` and rewrite them on every swipe:
    /// 5.8 ms of Redis's one thread per rating at 8,000 ratings on one media, and moving a long
    /// string through Lua costs some 2 us per KB). "Already rated" is one `SADD` to the set
    /// `rated` of `<bytes of mediaId>:<mediaId><userName>`, complete while the hash has `U` =
    /// `1`: the split fills it (`split.rs`), and a room split by an earlier release, which has no
    /// `U`, gets it built here from its ratings first, once. The first rating of a media starts its `r:` field; later ones go to
    /// chunk fields of 32 entries (`layout.rs`), so an append reads at most 31 entries. A save,
    /// a restore and a deletion remove the set with the hash.
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
local field, count = 'r:' .. media_id, 'n:' .. media_id
-- What every swipe needs, in one read: the room's flag for `ratings` (`doc` is read only when
-- the flag says it may change), whether `rated` is complete, the revision, the rating count and
-- how many ratings the media's chunks hold.
local held = redis.call('HMGET', room, 'R', 'U', 'rev', 'rc', count)
local flag, complete, rev, rc, n = held[1], held[2], held[3], held[4], held[5]
",
        doc_unless_flagged!(),
        "if complete ~= '1' then
  -- A write Redis checks against `maxmemory` goes first: once a script has changed anything,
  -- Redis lets its later writes pass the limit, and `UNLINK` is not checked.
  redis.call('HSET', room, 'U', '0')
  redis.call('UNLINK', rated)
  local all = redis.call('HGETALL', room)
  for i = 1, #all, 2 do
    local kind, media, list = string.sub(all[i], 1, 2), false, false
    if kind == 'r:' then
      media = string.sub(all[i], 3)
      list = string.sub(all[i + 1], string.find(all[i + 1], ' ', 1, true) + 1)
    elseif kind == 'a:' then
      media = string.sub(all[i], string.find(all[i], ':', 3, true) + 1)
      list = '[' .. string.sub(all[i + 1], 2) .. ']'
    end
    if media then
      for _, one in ipairs(cjson.decode(list)) do
        if type(one) == 'table' and type(one[1]) == 'string' then
          redis.call('SADD', rated, #media .. ':' .. media .. one[1])
        end
      end
    end
  end
  redis.call('HSET', room, 'U', '1')
end
if redis.call('SADD', rated, #media_id .. ':' .. media_id .. user_name) == 0 then
  return {'same', rev or '0'}
end
local changes
-- A media has `n:` only once its `r:` field exists, so only a media without it is looked up.
if not n and redis.call('HEXISTS', room, field) == 0 then
  local seq = redis.call('HINCRBY', room, 'seq', 1)
  changes = {field, seq .. ' [' .. entry .. ']'}
else
  n = (tonumber(n) or 0) + 1
  -- Chunks of 32 entries: an append reads at most 31 others, whatever the media holds.
  local chunk = 'a:' .. math.floor((n - 1) / 32) .. ':' .. media_id
  changes = {chunk, (redis.call('HGET', room, chunk) or '') .. ',' .. entry, count,
    string.format('%d', n)}
end
changes[#changes + 1] = 'rc'
changes[#changes + 1] = string.format('%d', (tonumber(rc) or 0) + 1)
",
        ensure_object!("R", "ratings"),
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
