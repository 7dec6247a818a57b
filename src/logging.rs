//! Logging: `tracing` to stderr, readable on a terminal and under journald.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp or colour, since the journal
//! adds its own timestamp. `RUST_LOG`, when set, overrides `logLevel` for finer filters.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber at `level` (`error` … `trace`).
pub fn init(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
