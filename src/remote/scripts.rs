//! The Lua scripts that make every mutation one atomic step on the Redis server, whichever
//! daemon sends it (see [`super::layout`] for the keys and fields they touch).
//!
//! Each script checks, changes, bumps the revision, keeps the sorted sets in step and publishes
//! the `watch` event, all inside one `EVAL`: two daemons changing one room at the same moment
//! are serialized by Redis, and the events of one room are published in revision order. No
//! script parses a room; `addRating` decodes only the one media's ratings (with Redis's `cjson`)
//! to see whether the user already rated it. Every script answers `{status, value}` as strings.
//!
//! Common arguments: KEYS = room hash, `rooms`, `changed`, `created` (the same four for every
//! script, so a script can never touch a key it was not given).

use redis::Script;

/// Save (create or replace). ARGV: name, expected revision or '', now, createdAt (ms), channel,
/// event head (the event up to its revision), then field/value pairs.
pub const SAVE: &str = r#"
local current = redis.call('HGET', KEYS[1], 'rev') or '0'
if ARGV[2] ~= '' and ARGV[2] ~= current then return {'conflict', current} end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rev', current)
for i = 7, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[6] .. rev .. '}')
return {'ok', tostring(rev)}
"#;

/// Restore a room with a given revision (`migrate`; publishes nothing). ARGV: name, revision,
/// last changed (ms), createdAt (ms), then field/value pairs.
pub const RESTORE: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rev', ARGV[2])
for i = 5, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
return {'ok', ARGV[2]}
"#;

/// The Lua that removes room ARGV[1] everywhere and publishes the event line ARGV[$event] on
/// channel ARGV[$channel] (a macro, so that `concat!` can put it into the scripts below).
macro_rules! remove_room {
    ($channel:literal, $event:literal) => {
        concat!(
            "redis.call('DEL', KEYS[1])\n",
            "redis.call('ZREM', KEYS[2], ARGV[1])\n",
            "redis.call('ZREM', KEYS[3], ARGV[1])\n",
            "redis.call('ZREM', KEYS[4], ARGV[1])\n",
            "redis.call('PUBLISH', ARGV[",
            $channel,
            "], ARGV[",
            $event,
            "])\n",
        )
    };
}

/// Delete one room. ARGV: name, expected revision or '', channel, event line.
pub const DELETE: &str = concat!(
    r#"
local current = redis.call('HGET', KEYS[1], 'rev') or '0'
if ARGV[2] ~= '' and ARGV[2] ~= current then return {'conflict', current} end
if current == '0' then return {'ok', '0'} end
"#,
    remove_room!(3, 4),
    "return {'ok', '1'}\n"
);

/// Delete one room if its score in KEYS[ARGV[2]] (`changed` or `created`) is still below
/// ARGV[3]: the candidate was chosen outside the script, and another daemon may have saved it
/// since. ARGV: name, 3 or 4, bound (ms), channel, event line.
pub const DELETE_IF_BELOW: &str = concat!(
    r#"
local score = redis.call('ZSCORE', KEYS[tonumber(ARGV[2])], ARGV[1])
if not score or tonumber(score) >= tonumber(ARGV[3]) then return {'ok', '0'} end
"#,
    remove_room!(4, 5),
    "return {'ok', '1'}\n"
);

/// The Lua that makes sure the room has a `$key` object, flagged by field `$flag`: a room without
/// the key gets its placeholder appended to `doc` (a new key goes last, as in the other
/// backends); one saved with `null` already has the placeholder in place.
macro_rules! ensure_object {
    ($flag:literal, $key:literal) => {
        concat!(
            "local flag = redis.call('HGET', KEYS[1], '",
            $flag,
            "')\n",
            "if not flag then\n",
            "  local doc = redis.call('HGET', KEYS[1], 'doc')\n",
            "  redis.call('HSET', KEYS[1], 'doc', string.sub(doc, 1, -2) .. ',\"",
            $key,
            "\":0}')\n",
            "end\n",
            "if flag ~= '1' then redis.call('HSET', KEYS[1], '",
            $flag,
            "', '1') end\n",
        )
    };
}

/// The Lua that ends a change of room ARGV[1]: notes the time ARGV[$now] as its last change,
/// bumps its revision, and publishes ARGV[$head] .. revision .. ARGV[$tail] on channel
/// ARGV[$channel]; answers `{'ok', revision}`.
macro_rules! changed_and_published {
    ($now:literal, $channel:literal, $head:literal, $tail:literal) => {
        concat!(
            "redis.call('HSET', KEYS[1], 'at', ARGV[",
            $now,
            "])\n",
            "local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)\n",
            "redis.call('ZADD', KEYS[3], ARGV[",
            $now,
            "], ARGV[1])\n",
            "redis.call('PUBLISH', ARGV[",
            $channel,
            "], ARGV[",
            $head,
            "] .. rev .. ARGV[",
            $tail,
            "])\n",
            "return {'ok', tostring(rev)}\n",
        )
    };
}

/// Append a rating unless that user already rated that media. ARGV: name, mediaId, userName,
/// the entry as JSON, now, channel, event head, event tail.
pub const ADD_RATING: &str = concat!(
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', '0'} end
local field = 'r:' .. ARGV[2]
local cur = redis.call('HGET', KEYS[1], field)
if cur then
  local space = string.find(cur, ' ', 1, true)
  local list = string.sub(cur, space + 1)
  for _, entry in ipairs(cjson.decode(list)) do
    if type(entry) == 'table' and entry[1] == ARGV[3] then
      return {'same', redis.call('HGET', KEYS[1], 'rev')}
    end
  end
  if list == '[]' then
    list = '[' .. ARGV[4] .. ']'
  else
    list = string.sub(list, 1, -2) .. ',' .. ARGV[4] .. ']'
  end
  redis.call('HSET', KEYS[1], field, string.sub(cur, 1, space) .. list)
else
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[1], field, seq .. ' [' .. ARGV[4] .. ']')
end
"#,
    ensure_object!("R", "ratings"),
    "redis.call('HINCRBY', KEYS[1], 'rc', 1)\n",
    changed_and_published!("5", "6", "7", "8")
);

/// Set a user's progress. ARGV: name, userName, progress, now, channel, event head, event tail.
pub const SET_PROGRESS: &str = concat!(
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', '0'} end
local field = 'p:' .. ARGV[2]
local cur = redis.call('HGET', KEYS[1], field)
if cur then
  local space = string.find(cur, ' ', 1, true)
  redis.call('HSET', KEYS[1], field, string.sub(cur, 1, space) .. ARGV[3])
else
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[1], field, seq .. ' ' .. ARGV[3])
end
"#,
    ensure_object!("P", "userProgress"),
    changed_and_published!("4", "5", "6", "7")
);

/// The scripts, hashed once; `invoke_async` sends `EVALSHA` and falls back to `EVAL` after a
/// Redis restart emptied the script cache.
pub struct Scripts {
    pub save: Script,
    pub restore: Script,
    pub delete: Script,
    pub delete_if_below: Script,
    pub add_rating: Script,
    pub set_progress: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            save: Script::new(SAVE),
            restore: Script::new(RESTORE),
            delete: Script::new(DELETE),
            delete_if_below: Script::new(DELETE_IF_BELOW),
            add_rating: Script::new(ADD_RATING),
            set_progress: Script::new(SET_PROGRESS),
        }
    }
}
