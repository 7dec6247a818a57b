//! How the storage is doing, for `stats`, systemd's `STATUS=` and the log.
//!
//! The actor reports every commit, flush and upkeep outcome here. The log gets one line when
//! the storage starts failing, one reminder a minute while it goes on failing (with how many
//! operations failed since), and one line when it works again; the individual failures are
//! only logged at debug level, so a failing disk under load does not flood the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::StorageError;

/// How often a failing storage is mentioned again in the log.
const REMINDER: Duration = Duration::from_secs(60);

/// What `stats` shows of the storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageHealth {
    /// False from a failed commit, flush or upkeep until each that failed works again (see
    /// [`Health::worked`]).
    pub healthy: bool,
    /// Writes are being refused (the last write attempt failed, or start-up could not start a
    /// journal, and the storage has not worked since); reads are served all along.
    pub read_only: bool,
    /// The last storage error, kept after recovery.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct State {
    shown: StorageHealth,
    /// The last write (commit) failed.
    writes_failing: bool,
    /// ...and only because the disk was too full to take it: an upkeep tick that finds room
    /// again proves it would work now (it asks the same question).
    write_refused_for_space: bool,
    /// The last flush (sync of relaxed-mode changes) failed.
    sync_failing: bool,
    /// The last upkeep tick failed.
    upkeep_failing: bool,
    /// When the storage started failing.
    since: Option<Instant>,
    failures: u64,
    reminded: Instant,
}

/// Shared between the actor (which reports) and everything that shows it.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Mutex::new(State {
                shown: StorageHealth {
                    healthy: true,
                    ..StorageHealth::default()
                },
                writes_failing: false,
                write_refused_for_space: false,
                sync_failing: false,
                upkeep_failing: false,
                since: None,
                failures: 0,
                reminded: Instant::now(),
            }),
        }
    }
}

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A write (its writers were told `storage`): writes are refused until the storage works.
    Write,
    /// A flush: syncing relaxed-mode changes. Only a flush that works clears it (a flush
    /// after a failed one always syncs: the rooms are logged again until one works).
    Sync,
    /// Upkeep or a flush: writes may still work.
    Upkeep,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn get(&self) -> StorageHealth {
        self.lock().shown.clone()
    }

    /// The storage failed (`what`).
    pub fn failed(&self, what: Operation, error: &StorageError) {
        let mut state = self.lock();
        let message = error.to_string();
        state.failures += 1;
        match what {
            Operation::Write => {
                state.writes_failing = true;
                state.write_refused_for_space = matches!(error, StorageError::Full { .. });
                state.shown.read_only = true;
            }
            Operation::Sync => {
                state.sync_failing = true;
                state.shown.read_only = true;
            }
            Operation::Upkeep => state.upkeep_failing = true,
        }
        if state.shown.healthy {
            state.shown.healthy = false;
            state.since = Some(Instant::now());
            state.reminded = Instant::now();
            tracing::error!(
                "storage is failing: {message}; writes that fail are answered `storage`, reads go on, and the daemon retries by itself"
            );
        } else if state.reminded.elapsed() >= REMINDER {
            state.reminded = Instant::now();
            let since = state.since.map_or(Duration::ZERO, |s| s.elapsed());
            tracing::warn!(
                "storage still failing after {}s ({} failed operations): {message}",
                since.as_secs(),
                state.failures
            );
        } else {
            tracing::debug!("storage failure: {message}");
        }
        state.shown.last_error = Some(message);
    }

    /// Start-up could not prepare for writes (no journal): serving read-only.
    pub fn read_only_at_start(&self, error: &StorageError) {
        self.failed(Operation::Write, error);
        // The tick's new journal or free-space check is what the start could not do.
        self.lock().write_refused_for_space = true;
        // Only an upkeep tick that works proves the disk takes writes again: a deletion that
        // works (it may only remove a file) does not.
        self.lock().upkeep_failing = true;
    }

    /// `what` worked. Each kind of failure is cleared only by what proves it over: a failed
    /// write by a write that works (an upkeep tick may write nothing: issue 15, where a tick
    /// that only started a journal said "works again" every second while every commit
    /// failed), or by a tick when the write was only refused for want of space; a failed
    /// flush by a flush; a failed tick by a tick. So the state does not flip at every commit
    /// or tick while something keeps failing.
    pub fn worked(&self, what: Operation) {
        let mut state = self.lock();
        if state.shown.healthy {
            return;
        }
        match what {
            Operation::Write => state.writes_failing = false,
            Operation::Sync => state.sync_failing = false,
            Operation::Upkeep => {
                state.upkeep_failing = false;
                if state.write_refused_for_space {
                    state.writes_failing = false;
                }
            }
        }
        state.shown.read_only = state.writes_failing || state.sync_failing;
        if state.writes_failing || state.sync_failing || state.upkeep_failing {
            return;
        }
        let since = state.since.take().map_or(Duration::ZERO, |s| s.elapsed());
        tracing::info!(
            "storage works again after {:.1}s ({} failed operations); writes are accepted",
            since.as_secs_f64(),
            state.failures
        );
        state.failures = 0;
        state.shown.healthy = true;
        state.shown.read_only = false;
    }
}

#[cfg(test)]
mod tests {
    use super::{Health, Operation};
    use crate::backend::StorageError;

    fn error() -> StorageError {
        StorageError::io(
            "write",
            "/rooms/a.json",
            std::io::Error::from_raw_os_error(libc::EIO),
        )
    }

    #[test]
    fn commits_that_work_while_folds_fail_do_not_flip_the_state() {
        let health = Health::default();
        health.failed(Operation::Upkeep, &error());
        for _ in 0..3 {
            health.worked(Operation::Write);
            assert!(!health.get().healthy, "the upkeep still fails");
            assert!(!health.get().read_only, "writes work");
            health.failed(Operation::Upkeep, &error());
        }
        health.worked(Operation::Upkeep);
        let now = health.get();
        assert!(now.healthy && !now.read_only);
        assert!(now.last_error.is_some_and(|e| e.contains("/rooms/a.json")));
    }

    #[test]
    fn a_failed_write_is_read_only_until_a_write_works() {
        let health = Health::default();
        health.failed(Operation::Write, &error());
        assert!(health.get().read_only && !health.get().healthy);
        health.worked(Operation::Upkeep);
        assert!(
            health.get().read_only && !health.get().healthy,
            "a tick proves nothing of writes"
        );
        health.worked(Operation::Write);
        assert!(health.get().healthy && !health.get().read_only);
    }

    #[test]
    fn a_write_refused_for_space_is_cleared_by_a_tick_that_finds_room() {
        let health = Health::default();
        let full = StorageError::Full {
            dir: "/rooms".into(),
            free_bytes: 0,
            free_inodes: 0,
            need_bytes: 1,
        };
        health.failed(Operation::Write, &full);
        health.worked(Operation::Upkeep);
        assert!(health.get().healthy && !health.get().read_only);
    }

    #[test]
    fn a_failed_flush_is_only_cleared_by_a_flush() {
        let health = Health::default();
        health.failed(Operation::Sync, &error());
        health.worked(Operation::Write);
        health.worked(Operation::Upkeep);
        assert!(!health.get().healthy);
        health.worked(Operation::Sync);
        assert!(health.get().healthy);
    }
}
