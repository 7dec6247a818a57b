//! Wiring a daemon together from its [`Config`], and taking it apart again in order.
//!
//! Start: open the backend and load every room (the store starts its actor), claim the socket
//! (refusing one a live daemon answers on, replacing a stale one), start the upkeep timers, serve.
//!
//! Shutdown order (SIGTERM/SIGINT), which happens by cancelling one token and dropping things:
//! 1. the listener stops accepting; connection readers stop reading and answer lines they already
//!    hold with `shutting_down`;
//! 2. every request already started is finished and answered;
//! 3. the timers stop and the last [`crate::store::StoreHandle`] is dropped, so the actor drains its queue,
//!    writes and fsyncs everything ([`crate::backend::Backend::close`]) and ends;
//! 4. the socket file is removed and the process exits 0 (non-zero if the final flush failed).

use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::unix::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::backend::file::FileBackend;
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, StorageError};
use crate::config::{Config, Durability, StorageType};
use crate::remote::RemoteStore;
use crate::room::change::Mutation;
use crate::rooms::Rooms;
use crate::server::{self, Limits};
use crate::service::{Facts, Service};
use crate::store;

mod bind;
pub use bind::bind_socket;

/// Why the daemon could not start or stop cleanly. Each names the path or setting concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("socket {} is in use by a running daemon (it accepted a connection); stop it or choose another socketPath", .0.display())]
    SocketInUse(PathBuf),
    #[error("{} exists and is not a socket; refusing to replace it (choose another socketPath)", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot {action} socket {}: {source}", path.display())]
    Socket {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The backend `config` asks for, when its rooms live in this daemon (`memory`, `file`).
pub fn open_backend(config: &Config) -> Option<Box<dyn Backend>> {
    match config.storage_type {
        StorageType::Memory => Some(Box::new(MemoryBackend)),
        StorageType::File => {
            let backend = FileBackend::new(&config.storage_path, config.durability);
            Some(Box::new(match test_fold_interval() {
                Some(interval) => backend.with_fold_interval(interval),
                None => backend,
            }))
        }
        StorageType::Redis => None,
    }
}

/// Hidden, for tests only (not a setting): `STORAGED_TEST_FOLD_INTERVAL_MS` replaces the 60 s
/// for which rooms may stay dirty before a background fold, so that the fault-injection sweep
/// (tests/fault_sweep) can make a fold happen at the next upkeep tick and fail calls inside it.
const TEST_FOLD_INTERVAL_ENV: &str = "STORAGED_TEST_FOLD_INTERVAL_MS";

fn test_fold_interval() -> Option<Duration> {
    let text = std::env::var(TEST_FOLD_INTERVAL_ENV).ok()?;
    match text.trim().parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => {
            tracing::warn!(
                "ignoring {TEST_FOLD_INTERVAL_ENV}={text:?}: not a number of milliseconds"
            );
            None
        }
    }
}

/// Opens the rooms `config` asks for: loads them into a storage actor, or prepares the
/// connections to Redis (which need not answer yet). Must run inside a tokio runtime.
pub fn open_rooms(config: &Config) -> Result<(Rooms, Option<store::ActorThread>), DaemonError> {
    match open_backend(config) {
        Some(backend) => {
            let (store, actor) = store::start(backend)?;
            Ok((Rooms::Local(store), Some(actor)))
        }
        None => {
            let remote = RemoteStore::open(&config.redis_url, &config.redis_prefix, true)?;
            tracing::info!(
                "Using redis storage at: {} (key prefix {:?})",
                remote.url(),
                remote.prefix()
            );
            Ok((Rooms::Remote(remote), None))
        }
    }
}

/// Raises the soft limit on open files to the hard limit and logs both: every connection is a
/// descriptor, and shells commonly start with a soft limit of 1024.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(
            "cannot read the open-file limit: {}",
            io::Error::last_os_error()
        );
        return;
    }
    let soft = limit.rlim_cur;
    if soft < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::warn!(
                "open files: soft limit {soft}, hard limit {}; could not raise the soft limit: {}",
                limit.rlim_max,
                io::Error::last_os_error()
            );
            return;
        }
        tracing::info!(
            "open files: raised the soft limit from {soft} to the hard limit {}",
            limit.rlim_max
        );
    } else {
        tracing::info!(
            "open files: soft limit {soft}, hard limit {}",
            limit.rlim_max
        );
    }
}

/// A started daemon: serve it with [`Daemon::serve`].
pub struct Daemon {
    config: Config,
    rooms: Rooms,
    /// The storage actor's thread (none with Redis).
    actor: Option<store::ActorThread>,
    listener: UnixListener,
    /// The socket file this process created and must remove (none with socket activation).
    socket_file: Option<PathBuf>,
}

impl Daemon {
    /// Loads the rooms and claims the socket. `listener` is a socket passed by systemd, if any.
    pub fn start(config: Config, listener: Option<UnixListener>) -> Result<Daemon, DaemonError> {
        let (listener, socket_file) = match listener {
            Some(listener) => (listener, None),
            None => {
                // Check the socket before loading, so a second daemon fails fast and touches
                // nothing; the storage lock is the real guard against two daemons.
                let listener = bind_socket(&config.socket_path, config.socket_mode)?;
                (listener, Some(config.socket_path.clone()))
            }
        };
        let (rooms, actor) = match open_rooms(&config) {
            Ok(started) => started,
            Err(e) => {
                if let Some(path) = &socket_file {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        };
        Ok(Daemon {
            config,
            rooms,
            actor,
            listener,
            socket_file,
        })
    }

    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// Serves until `shutdown` is cancelled, then stops in the documented order.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), DaemonError> {
        let Daemon {
            config,
            rooms,
            actor,
            listener,
            socket_file,
        } = self;
        let socket_error = |action| {
            let path = socket_file
                .clone()
                .unwrap_or_else(|| "the socket passed by systemd".into());
            move |source| DaemonError::Socket {
                action,
                path,
                source,
            }
        };
        listener
            .set_nonblocking(true)
            .map_err(socket_error("configure"))?;
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(socket_error("serve"))?;
        let service = Service {
            rooms: rooms.clone(),
            password_hashing: config.password_hashing,
            connections: Arc::new(AtomicUsize::new(0)),
            started: Instant::now(),
            facts: Arc::new(facts(&config, &rooms)),
        };
        let timers = CancellationToken::new();
        let socket_name = socket_file.as_deref().map_or_else(
            || "the socket passed by systemd".into(),
            |p| p.display().to_string(),
        );
        let upkeep = tokio::spawn(run_upkeep(
            rooms.clone(),
            upkeep_period(&config),
            socket_name,
            timers.clone(),
        ));
        let expiry = config
            .room_expiry
            .map(|after| tokio::spawn(run_expiry(rooms.clone(), after, timers.clone())));
        let watchdog = crate::systemd::watchdog_interval()
            .map(|every| tokio::spawn(run_watchdog(rooms.clone(), every, timers.clone())));
        if let Rooms::Remote(remote) = &rooms {
            check_redis(remote).await;
        }
        crate::systemd::ready(rooms.count().await.unwrap_or(0) as usize);
        tracing::info!(
            "serving on {}",
            socket_file.as_deref().map_or_else(
                || "the socket passed by systemd".into(),
                |p| p.display().to_string()
            )
        );
        let limits = Limits {
            max_request_bytes: config.max_request_bytes,
            max_connections: config.max_connections,
            allowed_uids: config.allowed_uids.clone(),
            allowed_gids: config.allowed_gids.clone(),
            max_unread_bytes: config.max_unread_bytes,
            write_timeout: config.write_timeout,
            watch_queue_bytes: config.watch_queue_bytes,
        };
        server::run(listener, service, limits, shutdown).await;
        if let Some(path) = &socket_file {
            let _ = std::fs::remove_file(path);
        }
        timers.cancel();
        let _ = upkeep.await;
        for task in expiry.into_iter().chain(watchdog) {
            let _ = task.await;
        }
        if let Rooms::Remote(remote) = &rooms {
            remote.close().await;
        }
        drop(rooms);
        let Some(actor) = actor else {
            tracing::info!("stopped cleanly");
            return Ok(());
        };
        // Every handle is gone now: the actor drains, flushes and ends.
        let closed = tokio::task::spawn_blocking(move || actor.join())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| {
                Err(StorageError::Unusable {
                    message: "the storage actor panicked; run the daemon again to recover from the journal".into(),
                })
            });
        closed?;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// Logs what start-up should know of Redis: whether it answers, and whether its persistence
/// keeps what the daemon acknowledges (README "Redis": durability is Redis's).
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

/// What `stats` reports of the configuration.
fn facts(config: &Config, rooms: &Rooms) -> Facts {
    let mut settings = Vec::new();
    match rooms {
        Rooms::Local(_) => {
            settings.push(("durability", config.durability.to_string()));
            if config.storage_type == StorageType::File {
                settings.push(("storagePath", config.storage_path.display().to_string()));
            }
        }
        Rooms::Remote(remote) => {
            settings.push(("redisUrl", remote.url().to_owned()));
            settings.push(("redisPrefix", remote.prefix().to_owned()));
        }
    }
    Facts { settings }
}

/// How often the upkeep runs: the flush interval in relaxed mode, else once a second.
fn upkeep_period(config: &Config) -> Duration {
    match (config.storage_type, config.durability) {
        (StorageType::Redis, _) => Duration::from_secs(5),
        (_, Durability::Relaxed) => config.flush_interval,
        (_, Durability::Strict) => Duration::from_secs(1),
    }
}

/// The actor's periodic upkeep (relaxed flushes, folds); with Redis, renewing this daemon's
/// presence key, by which `migrate` knows a daemon is using the prefix.
async fn run_upkeep(rooms: Rooms, period: Duration, socket: String, stop: CancellationToken) {
    // What systemd's STATUS= line last said of the storage: healthy, read-only or failing.
    let mut shown = (true, false);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                crate::logging::flush_suppressed();
                match &rooms {
                    Rooms::Local(store) => {
                        if store.tick().await.is_err() {
                            return;
                        }
                        shown = show_health(store, shown);
                    }
                    Rooms::Remote(remote) => remote.announce(&socket).await,
                }
            }
        }
    }
}

/// Updates systemd's STATUS= line when the storage's health changed since `shown`.
fn show_health(store: &crate::store::StoreHandle, shown: (bool, bool)) -> (bool, bool) {
    let health = store.counters().health.get();
    let now = (health.healthy, health.read_only);
    if now == shown {
        return shown;
    }
    let rooms = store.snapshot().rooms.len();
    let error = health.last_error.as_deref().unwrap_or("unknown error");
    let status = match now {
        (true, _) => format!("serving {rooms} rooms"),
        (false, true) => format!("serving {rooms} rooms read-only: writes refused: {error}"),
        (false, false) => format!("serving {rooms} rooms; storage upkeep failing: {error}"),
    };
    crate::systemd::status(&status);
    now
}

/// Tells systemd's watchdog the daemon is alive, but only after the storage actor has answered:
/// a stuck actor stops the keep-alives, and systemd restarts the daemon. With Redis there is no
/// actor; an unreachable Redis is not a reason to restart the daemon.
async fn run_watchdog(rooms: Rooms, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => match &rooms {
                Rooms::Remote(_) => crate::systemd::watchdog(),
                Rooms::Local(store) => match tokio::time::timeout(every, store.tick()).await {
                    Ok(Ok(())) => crate::systemd::watchdog(),
                    Ok(Err(_)) => return,
                    Err(_) => tracing::error!("the storage actor did not answer within {every:?}; not telling the watchdog we are alive"),
                },
            },
        }
    }
}

async fn run_expiry(rooms: Rooms, after: Duration, stop: CancellationToken) {
    // Check often enough that a room outlives its expiry by at most about a tenth of it.
    let period = (after / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                let idle_since = crate::room::now_millis().saturating_sub(after_ms);
                match rooms.mutate(Mutation::Expire { idle_since }).await {
                    Ok(crate::room::change::Outcome::DeletedMany { count }) if count > 0 => {
                        tracing::info!("roomExpiry: deleted {count} room(s) unchanged for {after:?}");
                    }
                    Ok(_) => {}
                    Err(crate::room::StoreError::Stopped) => return,
                    Err(e) => tracing::warn!("roomExpiry: could not delete expired rooms: {e}"),
                }
            }
        }
    }
}
