//! `getRoom` through Redis: the room's hash, put back together (`layout::join`), unless this
//! daemon holds the room's current version already (`cache.rs`), which Redis tells in the same
//! round trip.

use std::sync::Arc;

use redis::{AsyncCommands, FromRedisValue, Value};

use super::RemoteStore;
use crate::room::entry::RoomEntry;
use crate::room::StoreError;

script! {
    /// `0` while room `room` is still at version `written` and revision `revision`; otherwise
    /// its hash, as `HGETALL` answers (empty when there is no room). One script, so the answer
    /// is what Redis holds at that moment.
    GetUnlessSame<'a> {
        written: &'a [u8],
        revision: u64,
    }
    => "
local held = redis.call('HMGET', room, 'w', 'rev')
if held[1] == written and held[2] == revision then return 0 end
return redis.call('HGETALL', room)
"
}

type Hash = Vec<(Vec<u8>, Vec<u8>)>;

impl RemoteStore {
    /// The room, as `getRoom` returns it.
    pub async fn get(&self, name: &str) -> Result<Option<Arc<RoomEntry>>, StoreError> {
        let hash: Hash = match self.inner.cache.get(name) {
            None => {
                let mut c = self.connection();
                c.hgetall(self.inner.keys.room(name))
                    .await
                    .map_err(|e| self.failed(e))?
            }
            Some(cached) => {
                let unless = GetUnlessSame {
                    written: &cached.written,
                    revision: cached.entry.revision,
                };
                match self.invoke(name, unless).await? {
                    Value::Int(0) => return Ok(Some(cached.entry)),
                    answer => Hash::from_redis_value(answer).map_err(|_| self.corrupt(name))?,
                }
            }
        };
        if hash.is_empty() {
            self.inner.cache.forget(name);
            return Ok(None);
        }
        let (entry, written) = self.entry(name, hash)?;
        let entry = Arc::new(entry);
        match written {
            Some(written) => self.inner.cache.put(&written, entry.clone()),
            None => self.inner.cache.forget(name),
        }
        Ok(Some(entry))
    }
}
