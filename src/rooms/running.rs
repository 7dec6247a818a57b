//! What a running daemon asks of its rooms besides requests: the periodic upkeep, the
//! watchdog's question, SIGHUP, the start-up check, and what `stats` reports. Each answer is
//! chosen here, by who keeps the rooms, so the daemon never asks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Kept, Rooms};
use crate::config::{Config, Durability};
use crate::protocol::Response;
use crate::remote::RemoteStore;
use crate::room::StoreError;
use crate::store::health::StorageHealth;

impl Rooms {
    /// How often [`Rooms::upkeep`] should run: the flush interval in relaxed mode, else once
    /// a second; with Redis every 5 s, well within the presence key's lifetime.
    pub fn upkeep_period(&self, config: &Config) -> Duration {
        match (&self.kept, config.durability) {
            (Kept::Remote(_), _) => Duration::from_secs(5),
            (Kept::Local(_), Durability::Relaxed) => config.flush_interval,
            (Kept::Local(_), Durability::Strict) => Duration::from_secs(1),
        }
    }

    /// The periodic upkeep: the actor's relaxed-mode syncs and folds; with Redis, renewing this
    /// daemon's presence key (on `socket`), by which `migrate` knows a daemon uses the prefix.
    /// Fails only once the rooms are stopping.
    pub async fn upkeep(&self, socket: &str) -> Result<(), StoreError> {
        match &self.kept {
            Kept::Local(store) => store.tick().await,
            Kept::Remote(remote) => {
                remote.announce(socket).await;
                Ok(())
            }
        }
    }

    /// The health of the storage this daemon keeps itself (for systemd's STATUS= line); `None`
    /// with Redis, whose health is its own.
    pub fn health(&self) -> Option<StorageHealth> {
        match &self.kept {
            Kept::Local(store) => Some(store.counters().health.get()),
            Kept::Remote(_) => None,
        }
    }

    /// The watchdog's question: does the storage actor answer within `within`? A stuck actor
    /// says no, and systemd restarts the daemon. With Redis always yes: an unreachable Redis is
    /// not a reason to restart the daemon. Fails once the rooms are stopping.
    pub async fn answers_within(&self, within: Duration) -> Result<bool, StoreError> {
        match &self.kept {
            Kept::Local(store) => match tokio::time::timeout(within, store.tick()).await {
                Ok(ticked) => ticked.map(|()| true),
                Err(_) => Ok(false),
            },
            Kept::Remote(_) => Ok(true),
        }
    }

    /// SIGHUP: re-reads the room files changed by hand, and logs what happened.
    pub async fn reread(&self) {
        match (&self.kept, self.reload().await) {
            (Kept::Remote(_), Ok(_)) => {
                tracing::info!("SIGHUP: nothing to re-read: rooms live in Redis")
            }
            (_, Ok(changed)) => {
                tracing::info!("SIGHUP: re-read the room files; {changed} room(s) changed")
            }
            (_, Err(e)) => tracing::error!("SIGHUP: could not re-read the room files: {e}"),
        }
    }

    /// Logs what start-up should know of where the rooms live; with Redis: whether it answers,
    /// and whether its persistence keeps what the daemon acknowledges (README "Redis":
    /// durability is Redis's).
    pub async fn check_at_start(&self) {
        if let Kept::Remote(remote) = &self.kept {
            check_redis(remote).await;
        }
    }

    /// The settings `stats` reports, name and value, as configured.
    pub fn settings(&self, config: &Config) -> Vec<(&'static str, String)> {
        match &self.kept {
            Kept::Local(store) => {
                let mut settings = vec![("durability", config.durability.to_string())];
                if store.backend_name() == "file" {
                    settings.push(("storagePath", config.storage_path.display().to_string()));
                }
                settings
            }
            Kept::Remote(remote) => vec![
                ("redisUrl", remote.url().to_owned()),
                ("redisPrefix", remote.prefix().to_owned()),
            ],
        }
    }

    /// Adds to a `stats` response what only these rooms can tell: the actor's counters and the
    /// storage's health, or whether Redis's subscription is up and how Redis persists. `reachable`:
    /// whether the rooms just answered (Redis is asked only then, so `stats` stays quick
    /// during an outage).
    pub async fn stats(&self, mut response: Response, reachable: bool) -> Response {
        match &self.kept {
            Kept::Remote(remote) => {
                response = response.bool("watchSubscribed", remote.subscribed());
                let persistence = match reachable {
                    true => remote.persistence().await,
                    false => None,
                };
                match persistence {
                    Some(settings) => response.str("redisPersistence", &settings),
                    None => response.raw("redisPersistence", b"null"),
                }
            }
            Kept::Local(store) => {
                let counters = store.counters();
                let health = counters.health.get();
                response = response
                    .u64("commits", counters.batches.load(Ordering::Relaxed))
                    .u64("changes", counters.changes.load(Ordering::Relaxed))
                    .u64(
                        "failedCommits",
                        counters.failed_commits.load(Ordering::Relaxed),
                    )
                    .u64(
                        "compressedRooms",
                        counters.packed_rooms.load(Ordering::Relaxed),
                    )
                    .bool("storageHealthy", health.healthy)
                    .bool("readOnly", health.read_only);
                match &health.last_error {
                    Some(error) => response.str("lastStorageError", error),
                    None => response.raw("lastStorageError", b"null"),
                }
            }
        }
    }
}

async fn check_redis(remote: &RemoteStore) {
    if let Err(e) = remote.ping().await {
        tracing::warn!("{e}; serving anyway: requests get storage errors until Redis answers");
        return;
    }
    match remote.persistence().await {
        Some(settings) if settings.starts_with("appendonly yes") => {
            tracing::info!("Redis at {} persists with {settings}", remote.url());
        }
        Some(settings) => tracing::warn!(
            "Redis at {} runs with {settings}: acknowledged changes are lost if Redis stops or crashes; set appendonly yes (and appendfsync always or everysec) in redis.conf",
            remote.url()
        ),
        None => tracing::info!(
            "Redis at {} does not tell its persistence settings (CONFIG GET refused); durability is as configured there",
            remote.url()
        ),
    }
}
