//! Rooms kept in a Redis server that several daemons share (`storageType: redis`).
//!
//! Unlike `memory` and `file`, this daemon does not hold the authoritative copy: every request
//! goes to Redis, reads as plain commands and mutations as scripts (`script.rs`), so an
//! operation means the same through every daemon and stays atomic across them. A daemon
//! answers with what Redis holds at that moment (a room it read before is reused only once
//! Redis said, in the same round trip, that it is still that version: `get.rs`, `cache.rs`), so
//! once any daemon has sent its `ok`, every later request through any daemon sees the change.
//!
//! Connections: one multiplexed connection (the `redis` crate's `ConnectionManager`), opened
//! lazily and re-opened by itself after Redis comes back, carries every command; a second one
//! holds the `watch` subscription (`events.rs`). While Redis is unreachable requests get `storage`
//! errors naming the URL and the daemon keeps serving; it may also start with Redis down.
//!
//! Durability is Redis's own (`appendonly`, `appendfsync`); `flush` checks that Redis answers.

// Module map: `layout` (keys and the room <-> hash split), `script` (how a mutation's Lua and
// its Rust caller are declared together), one file per mutation (`save`, `delete`, `rate`,
// `progress`) and `mutate` (which one a `Mutation` runs), `split` (a saved room made ready for swipes), `events` (the watch subscription);
// reads are below.
#[macro_use]
mod script;
mod cache;
mod delete;
mod events;
mod get;
pub mod layout;
mod mutate;
mod progress;
mod rate;
mod save;
mod split;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, Client, RedisError};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use self::cache::{ReadCache, Versions};
pub use self::events::RemoteEvent;
use self::layout::{Joined, Keys};
use crate::backend::StorageError;
use crate::protocol::request::ListQuery;
use crate::room::entry::RoomEntry;
use crate::room::prepare::PreparedRoom;
use crate::room::RoomName;
use crate::room::StoreError;
use crate::store::EVENT_BUFFER;

/// How the message of a change whose outcome is unknown begins; every other failed change is
/// "the change was not stored: ..." (`mutate.rs`).
pub(super) const MAY_HAVE_BEEN_STORED: &str = "the change may have been stored";

/// How long one command may take before the request gets a `storage` error.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many names `listRooms` fetches from the index at a time.
const PAGE: usize = 256;

/// How long a daemon's presence key lives without being renewed.
const PRESENCE_TTL: Duration = Duration::from_secs(15);

/// A handle to the rooms in one Redis server under one prefix. Cheap to clone.
#[derive(Clone)]
pub struct RemoteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL without its password, for messages.
    url: String,
    keys: Keys,
    connection: ConnectionManager,
    /// Rooms read lately, each used only once Redis says it is still current (`cache.rs`).
    cache: ReadCache,
    versions: Versions,
    events: broadcast::Sender<RemoteEvent>,
    subscribed: Arc<AtomicBool>,
    stop: CancellationToken,
    presence: String,
    /// When a command last got an answer, in ms since `opened` (see
    /// [`RemoteStore::before_change`]).
    answered: AtomicU64,
    opened: Instant,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `url` with any password replaced by `***`, fit for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let rest = match rest.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or("");
            format!("{user}:***@{host}")
        }
        _ => rest.to_owned(),
    };
    // unix:// URLs carry the password as a query parameter.
    let rest = match rest.split_once("pass=") {
        Some((head, tail)) => {
            let end = tail.find('&').map_or("", |i| &tail[i..]);
            format!("{head}pass=***{end}")
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

impl RemoteStore {
    /// Prepares the connections to `url` without waiting for Redis: the daemon may start while
    /// Redis is down. `subscribe` also starts the `watch` subscription (a daemon does; `migrate`
    /// does not). Must be called inside a tokio runtime.
    pub fn open(url: &str, prefix: &str, subscribe: bool) -> Result<RemoteStore, StorageError> {
        let shown = redact(url);
        install_tls_provider();
        let client = Client::open(url).map_err(|e| StorageError::Unusable {
            message: format!("redisUrl {shown} is not usable: {e}"),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|e| {
                StorageError::Unusable {
                    message: format!("cannot prepare a connection to Redis at {shown}: {e}"),
                }
            })?;
        let keys = Keys {
            prefix: prefix.to_owned(),
        };
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let subscribed = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        if subscribe {
            tokio::spawn(events::run(
                client.clone(),
                connection.clone(),
                keys.channel(),
                shown.clone(),
                events.clone(),
                subscribed.clone(),
                stop.clone(),
            ));
        }
        let presence = keys.daemon(&format!("{}:{}", hostname(), std::process::id()));
        Ok(RemoteStore {
            inner: Arc::new(Inner {
                url: shown,
                keys,
                connection,
                cache: ReadCache::default(),
                versions: Versions::new(),
                events,
                subscribed,
                stop,
                presence,
                answered: AtomicU64::new(0),
                opened: Instant::now(),
            }),
        })
    }

    /// Whether this daemon's subscription to change events is up (`stats`).
    pub fn subscribed(&self) -> bool {
        self.inner.subscribed.load(Ordering::Acquire)
    }

    /// The URL, without its password.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn prefix(&self) -> &str {
        &self.inner.keys.prefix
    }

    fn connection(&self) -> ConnectionManager {
        self.inner.connection.clone()
    }

    /// Runs a read, and once more if the connection was lost (closed, or a reply cut off
    /// mid-way: [`lost_connection`]): Redis may close
    /// the connection for commands on its own (its `timeout` setting, `CLIENT KILL`, a restart),
    /// which the connection learns only from the next command, and the manager then connects
    /// anew. A read may be sent twice; a change may not (its answer says it may have been
    /// stored), since Redis may have run it before the connection went (found by an outside
    /// probe: the first request after `CLIENT KILL TYPE normal` failed).
    async fn read<T: ::redis::FromRedisValue>(
        &self,
        command: &::redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut c = self.connection();
        let answer = match command.query_async(&mut c).await {
            Err(e) if lost_connection(&e) => {
                let mut c = self.connection();
                command.query_async(&mut c).await
            }
            answer => answer,
        };
        if answer.is_ok() {
            self.answered();
        }
        answer.map_err(|e| self.failed(e))
    }

    /// Notes that a command got its answer.
    pub(super) fn answered(&self) {
        let now = self.inner.opened.elapsed().as_millis() as u64;
        // Stored at most once a millisecond: every request passes here.
        if self.inner.answered.load(Ordering::Relaxed) != now {
            self.inner.answered.store(now, Ordering::Relaxed);
        }
    }

    /// Before a change on a connection idle for a second or more: a `PING`, so that a connection
    /// Redis closed meanwhile (its `timeout`, `CLIENT KILL`) fails on the ping and is replaced,
    /// rather than failing the change with an answer that must say it may have been stored
    /// (found by an outside probe: with `timeout 2`, 5 of 12 first changes after 3-8 s idle).
    pub(super) async fn before_change(&self) {
        let now = self.inner.opened.elapsed().as_millis() as u64;
        let idle = now.saturating_sub(self.inner.answered.load(Ordering::Relaxed));
        if idle >= 1000 {
            let _ = self.ping().await;
        }
    }

    /// A change sent to Redis failed (see [`MAY_HAVE_BEEN_STORED`]). Unless Redis refused it, or was not reached at all, the
    /// script may have run all the same (Redis busy past the 5 s wait, a connection dropped
    /// before the answer): the message says so rather than that nothing changed.
    fn failed_change(&self, e: RedisError) -> StoreError {
        let unknown = !e.is_connection_refusal()
            && (e.is_timeout() || e.is_connection_dropped() || e.is_io_error());
        if !unknown {
            return self.failed(e);
        }
        let what = if e.is_timeout() {
            "did not answer within 5 s"
        } else {
            "dropped the connection before answering"
        };
        StoreError::Unavailable {
            message: format!(
                "{MAY_HAVE_BEEN_STORED}: Redis at {} {what}, and may still apply it; \
                 read the room to see (an addRating or setProgress can simply be sent again)",
                self.inner.url
            ),
            cause: Some(e.to_string()),
        }
    }

    fn failed(&self, e: RedisError) -> StoreError {
        let reachable = !(e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error());
        let message = if e.kind() == ::redis::ErrorKind::AuthenticationFailed {
            format!(
                "Redis at {} refused the password; check the password in redisUrl",
                self.inner.url
            )
        } else if reachable {
            format!("Redis at {} refused the command", self.inner.url)
        } else {
            format!(
                "Redis at {} is unreachable; check that redis-server runs there",
                self.inner.url
            )
        };
        StoreError::Unavailable {
            message,
            cause: Some(e.to_string()),
        }
    }

    fn corrupt(&self, name: &str) -> StoreError {
        StoreError::Unavailable {
            message: format!(
                "the Redis hash {}room:{name} at {} is not a room this daemon wrote; inspect or delete it",
                self.inner.keys.prefix, self.inner.url
            ),
            cause: None,
        }
    }

    /// Checks that Redis answers (start-up log, `flush`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read::<String>(&::redis::cmd("PING")).await.map(drop)
    }

    /// The room in `hash`, and the version of its last whole write (`w`) if it has one.
    fn entry(
        &self,
        name: &str,
        hash: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(RoomEntry, Option<Vec<u8>>), StoreError> {
        let Joined {
            encoded,
            revision,
            updated_at,
            rating_count,
            written,
        } = layout::join(hash).ok_or_else(|| self.corrupt(name))?;
        let prepared = PreparedRoom::from_json(&encoded).map_err(|_| self.corrupt(name))?;
        let entry = RoomEntry::cold(
            prepared.name,
            prepared.facts,
            encoded,
            rating_count,
            revision,
            updated_at,
        );
        Ok((entry, written))
    }

    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        self.read(::redis::cmd("EXISTS").arg(self.inner.keys.room(name)))
            .await
    }

    pub async fn count(&self) -> Result<u64, StoreError> {
        self.read(::redis::cmd("ZCARD").arg(self.inner.keys.index()))
            .await
    }

    /// `listRooms`: walks the name index a page at a time and fetches each page's rooms in one
    /// pipeline, until `limit` matching rooms are found (so a page of a big set stays cheap).
    pub async fn list(
        &self,
        query: &ListQuery,
        matches: impl Fn(&RoomEntry) -> bool,
    ) -> Result<(Vec<Arc<RoomEntry>>, bool), StoreError> {
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut after = query.after.clone().map(String::into_bytes);
        let mut selected = Vec::new();
        let mut c = self.connection();
        loop {
            let min = match &after {
                Some(name) => [b"(".as_slice(), name].concat(),
                None => b"-".to_vec(),
            };
            let index = self.inner.keys.index();
            let names = self.page("ZRANGEBYLEX", &index, &min, b"+").await?;
            let Some(last) = names.last() else {
                return Ok((selected, false));
            };
            after = Some(last.clone());
            let mut pipe = ::redis::pipe();
            for name in &names {
                pipe.hgetall([self.inner.keys.prefix.as_bytes(), b"room:", name].concat());
            }
            // A read: sent again once on a dropped connection, as `read` does.
            let hashes: Vec<Vec<(Vec<u8>, Vec<u8>)>> = match pipe.query_async(&mut c).await {
                Err(e) if lost_connection(&e) => {
                    c = self.connection();
                    pipe.query_async(&mut c).await
                }
                answer => answer,
            }
            .map_err(|e| self.failed(e))?;
            for (name, hash) in names.iter().zip(hashes) {
                // Deleted between the two commands.
                if hash.is_empty() {
                    continue;
                }
                let name = String::from_utf8_lossy(name);
                let entry = match self.entry(&name, hash) {
                    Ok((entry, _)) => entry,
                    Err(e) => {
                        // One damaged hash must not hide every other room.
                        tracing::warn!("listRooms: skipping {name:?}: {e}");
                        continue;
                    }
                };
                if !matches(&entry) {
                    continue;
                }
                if selected.len() == limit {
                    return Ok((selected, true));
                }
                selected.push(Arc::new(entry));
            }
        }
    }

    /// Redis's persistence settings, as `appendonly yes, appendfsync everysec`; `None` when
    /// Redis does not say (unreachable, or `CONFIG` disabled as on some managed services).
    pub async fn persistence(&self) -> Option<String> {
        let appendonly = self.config_get("appendonly").await?;
        let appendfsync = self.config_get("appendfsync").await?;
        Some(format!(
            "appendonly {appendonly}, appendfsync {appendfsync}"
        ))
    }

    async fn config_get(&self, name: &str) -> Option<String> {
        let mut c = self.connection();
        let pair: Vec<String> = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut c)
            .await
            .ok()?;
        pair.into_iter().nth(1)
    }

    /// One page (at most [`PAGE`] members) of a sorted set, by `ZRANGEBYLEX` or `ZRANGEBYSCORE`
    /// from `min` to `max`.
    async fn page(
        &self,
        command: &str,
        key: &str,
        min: &[u8],
        max: &[u8],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(
            ::redis::cmd(command)
                .arg(key)
                .arg(min)
                .arg(max)
                .arg("LIMIT")
                .arg(0)
                .arg(PAGE),
        )
        .await
    }

    /// Every change published by any daemon from now on, or an error while the subscription to
    /// Redis is down (a watch could not promise to see every change).
    ///
    /// A change's event can reach this daemon's subscription after its writer got `ok` (the
    /// script's reply and the published message travel on different connections). So the
    /// watcher publishes a fence of its own and skips everything before it: Redis delivers
    /// messages in publication order, so every change acknowledged before this call returns
    /// comes before the fence, and every later one after it.
    pub async fn subscribe(
        &self,
    ) -> Result<(broadcast::Receiver<RemoteEvent>, Arc<str>), StoreError> {
        let receiver = self.inner.events.subscribe();
        if !self.inner.subscribed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable {
                message: format!(
                    "not subscribed to change events at Redis {} right now; try again shortly",
                    self.inner.url
                ),
                cause: None,
            });
        }
        static FENCES: AtomicU64 = AtomicU64::new(0);
        let token: Arc<str> = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            FENCES.fetch_add(1, Ordering::Relaxed)
        )
        .into();
        let mut c = self.connection();
        let _: i64 = c
            .publish(self.inner.keys.channel(), events::fence_message(&token))
            .await
            .map_err(|e| self.failed(e))?;
        Ok((receiver, token))
    }

    /// Announces this daemon (renewed by the daemon's upkeep), so `migrate` refuses to run.
    ///
    /// A renewal is a `PEXPIRE`, which a full Redis (`maxmemory`, `noeviction`) still takes;
    /// only a missing key is written with `SET`. With `SET` alone the announcement lapsed on a
    /// full Redis, and `migrate` took the prefix for unused (found by an outside probe).
    pub async fn announce(&self, socket: &str) {
        let mut c = self.connection();
        let ttl = PRESENCE_TTL.as_millis() as u64;
        let renewed: Result<i64, _> = ::redis::cmd("PEXPIRE")
            .arg(&self.inner.presence)
            .arg(ttl)
            .query_async(&mut c)
            .await;
        if matches!(renewed, Ok(1)) {
            return;
        }
        let _: Result<(), _> = ::redis::cmd("SET")
            .arg(&self.inner.presence)
            .arg(socket)
            .arg("PX")
            .arg(ttl)
            .query_async(&mut c)
            .await;
    }

    /// Withdraws the announcement and stops the subscription (the clean stop).
    pub async fn close(&self) {
        self.inner.stop.cancel();
        let mut c = self.connection();
        let _: Result<i64, _> = tokio::time::timeout(RESPONSE_TIMEOUT, c.del(&self.inner.presence))
            .await
            .unwrap_or(Ok(0));
    }

    /// The daemons that announced themselves on this prefix (for `migrate`).
    pub async fn daemons(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.connection();
        let mut found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.inner.keys.daemons())
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(|e| self.failed(e))?;
            found.extend(keys);
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }
}

/// Whether a read that failed with `e` may simply be sent again on a new connection: the
/// connection went (a closed socket, or a reply cut off mid-way), not Redis's answer and not a
/// timeout.
fn lost_connection(e: &RedisError) -> bool {
    !e.is_timeout()
        && (e.is_connection_dropped() || e.is_io_error() || e.kind() == ::redis::ErrorKind::Parse)
}

fn room_name(raw: &[u8]) -> Option<RoomName> {
    RoomName::new(std::str::from_utf8(raw).ok()?).ok()
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    if ok && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_owned()
    }
}

/// rustls needs one process-wide crypto provider for `rediss://`; the first call installs ring.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("redis://:s3cret@db:6379/0"),
            "redis://:***@db:6379/0"
        );
        assert_eq!(redact("rediss://user:pw@db/1"), "rediss://user:***@db/1");
        assert_eq!(redact("unix:///run/redis.sock"), "unix:///run/redis.sock");
        assert_eq!(
            redact("unix:///run/r.sock?db=1&pass=pw&x=y"),
            "unix:///run/r.sock?db=1&pass=***&x=y"
        );
        assert_eq!(redact("redis://user@db"), "redis://user@db");
        assert_eq!(redact("redis://db:6379"), "redis://db:6379");
    }
}
