//! Logging: `tracing` to stderr, readable on a terminal and under journald.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp or colour, since the journal
//! adds its own timestamp. `RUST_LOG`, when set, overrides `logLevel` for finer filters. Lines
//! a client can cause over and over (refused peers, write timeouts, watcher disconnects) go
//! through [`limited`]: a few a second per kind, and a count of the rest.
//!
//! A line that cannot be written (its reader went away: a closed pipe, a log collector that
//! died) is dropped, and the daemon goes on (see [`LossyStderr`]).

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;

/// Standard error for log lines, dropping a line it cannot write. tracing's fmt layer reports
/// a failed write with `eprintln!`, which panics on that same broken stderr: the daemon logged
/// `SIGTERM: stopping` from the task that handles the signal, the task died, and the daemon no
/// longer stopped on SIGTERM (found by hand: `moviematch-storaged 2>&1 | head -1`; at start, the
/// second line's panic ended the daemon with 101).
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Installs the global subscriber at `level` (`error` … `trace`).
pub fn init(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_target(false);
    let installed = if under_journald {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(installed);
}

/// Lines of one kind logged per second at most; the rest are counted and the count is logged
/// later (a peer that reconnects in a loop must not fill the disk with one line per attempt).
const LINES_PER_SECOND: u32 = 5;

#[derive(Clone, Copy)]
pub enum Level {
    Warn,
    Info,
}

struct Kind {
    name: &'static str,
    window: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

static KINDS: std::sync::Mutex<Vec<Kind>> = std::sync::Mutex::new(Vec::new());

/// Logs `line` unless `kind` already logged [`LINES_PER_SECOND`] lines this second; a count
/// of the lines suppressed is logged with the next one that passes, or by [`flush_suppressed`].
pub fn limited(kind: &'static str, level: Level, line: std::fmt::Arguments<'_>) {
    let now = std::time::Instant::now();
    let (allowed, report) = {
        let mut kinds = KINDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = match kinds.iter().position(|k| k.name == kind) {
            Some(at) => at,
            None => {
                kinds.push(Kind {
                    name: kind,
                    window: now,
                    logged: 0,
                    suppressed: 0,
                });
                kinds.len() - 1
            }
        };
        let k = &mut kinds[at];
        let mut report = 0;
        if now.duration_since(k.window) >= std::time::Duration::from_secs(1) {
            report = std::mem::take(&mut k.suppressed);
            k.window = now;
            k.logged = 0;
        }
        let allowed = k.logged < LINES_PER_SECOND;
        match allowed {
            true => k.logged += 1,
            false => k.suppressed += 1,
        }
        (allowed, report)
    };
    if report > 0 {
        tracing::warn!(
            "{report} more {kind} line(s) were not logged (at most {LINES_PER_SECOND} a second)"
        );
    }
    if allowed {
        match level {
            Level::Warn => tracing::warn!("{line}"),
            Level::Info => tracing::info!("{line}"),
        }
    }
}

/// [`limited`] at warn level.
pub fn limited_warn(kind: &'static str, line: std::fmt::Arguments<'_>) {
    limited(kind, Level::Warn, line);
}

/// Logs the counts of suppressed lines whose second is over (called by the daemon's upkeep,
/// so a burst that stopped still says how many lines it lost).
pub fn flush_suppressed() {
    let now = std::time::Instant::now();
    let mut reports = Vec::new();
    {
        let mut kinds = KINDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in kinds.iter_mut() {
            if k.suppressed > 0 && now.duration_since(k.window) >= std::time::Duration::from_secs(1)
            {
                reports.push((k.name, std::mem::take(&mut k.suppressed)));
                k.window = now;
                k.logged = 0;
            }
        }
    }
    for (kind, count) in reports {
        tracing::warn!(
            "{count} more {kind} line(s) were not logged (at most {LINES_PER_SECOND} a second)"
        );
    }
}
