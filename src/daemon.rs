//! Wiring a daemon together from its [`Config`], and taking it apart again in order.
//!
//! Start: claim the socket (refusing one a live daemon answers on, replacing a stale one), open
//! the rooms where the configuration says they live ([`Rooms::open`]: the one place that knows),
//! start the upkeep timers, serve. Nothing here asks which backend keeps the rooms.
//!
//! Shutdown order (SIGTERM/SIGINT), which happens by cancelling one token and dropping things:
//! 1. the listener stops accepting; connections stop reading new requests;
//! 2. every request already started is finished and answered, then lines already received with
//!    `shutting_down`;
//! 3. the timers stop, the last [`Rooms`] handle is dropped and the rooms close
//!    ([`OpenRooms::close`]): the storage actor drains its queue, writes and fsyncs everything
//!    ([`crate::backend::Backend::close`]) and ends; with Redis, the announcement is withdrawn;
//! 4. the socket file is removed and the process exits 0 (non-zero if the final flush failed).

use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::unix::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::backend::StorageError;
use crate::config::Config;
use crate::room::change::Mutation;
use crate::rooms::{OpenRooms, Rooms};
use crate::server::{self, Limits};
use crate::service::{Facts, Service};
use crate::store::health::StorageHealth;

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
    rooms: OpenRooms,
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
        let rooms = match Rooms::open(&config) {
            Ok(rooms) => rooms,
            Err(e) => {
                if let Some(path) = &socket_file {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e.into());
            }
        };
        Ok(Daemon {
            config,
            rooms,
            listener,
            socket_file,
        })
    }

    pub fn rooms(&self) -> &Rooms {
        self.rooms.rooms()
    }

    /// Serves until `shutdown` is cancelled, then stops in the documented order.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), DaemonError> {
        let Daemon {
            config,
            rooms: open,
            listener,
            socket_file,
        } = self;
        let rooms = open.rooms().clone();
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
            facts: Arc::new(Facts {
                settings: rooms.settings(&config),
            }),
        };
        let timers = CancellationToken::new();
        let socket_name = socket_file.as_deref().map_or_else(
            || "the socket passed by systemd".into(),
            |p| p.display().to_string(),
        );
        let upkeep = tokio::spawn(run_upkeep(
            rooms.clone(),
            rooms.upkeep_period(&config),
            socket_name,
            timers.clone(),
        ));
        let expiry = config
            .room_expiry
            .map(|after| tokio::spawn(run_expiry(rooms.clone(), after, timers.clone())));
        let watchdog = crate::systemd::watchdog_interval()
            .map(|every| tokio::spawn(run_watchdog(rooms.clone(), every, timers.clone())));
        rooms.check_at_start().await;
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
        drop(rooms);
        // Every other handle is gone now: the rooms close (the actor drains, flushes and ends).
        open.close().await?;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// The rooms' periodic upkeep ([`Rooms::upkeep`]), and systemd's STATUS= line when the health
/// of the storage this daemon keeps changes.
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
                if rooms.upkeep(&socket).await.is_err() {
                    return;
                }
                if let Some(health) = rooms.health() {
                    shown = show_health(&rooms, health, shown).await;
                }
            }
        }
    }
}

/// Updates systemd's STATUS= line when the storage's health changed since `shown`.
async fn show_health(rooms: &Rooms, health: StorageHealth, shown: (bool, bool)) -> (bool, bool) {
    let now = (health.healthy, health.read_only);
    if now == shown {
        return shown;
    }
    let rooms = rooms.count().await.unwrap_or(0);
    let error = health.last_error.as_deref().unwrap_or("unknown error");
    let status = match now {
        (true, _) => format!("serving {rooms} rooms"),
        (false, true) => format!("serving {rooms} rooms read-only: writes refused: {error}"),
        (false, false) => format!("serving {rooms} rooms; storage upkeep failing: {error}"),
    };
    crate::systemd::status(&status);
    now
}

/// Tells systemd's watchdog the daemon is alive, but only when the rooms answer in time
/// ([`Rooms::answers_within`]): a stuck storage actor stops the keep-alives, and systemd
/// restarts the daemon.
async fn run_watchdog(rooms: Rooms, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => match rooms.answers_within(every).await {
                Ok(true) => crate::systemd::watchdog(),
                Ok(false) => tracing::error!("the storage actor did not answer within {every:?}; not telling the watchdog we are alive"),
                Err(_) => return,
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
