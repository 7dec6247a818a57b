//! The daemon: configuration, logging, signals; everything else is in the library.

use std::process::ExitCode;

use moviematch_storaged::config::{Config, ConfigError};
use moviematch_storaged::daemon::Daemon;
use moviematch_storaged::systemd;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Per-thread heaps: see `moviematch_storaged::heap` for why, and for its settings.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before any thread starts and allocates.
    let heap_warnings = moviematch_storaged::heap::configure();
    let loaded = match Config::load(std::env::args_os(), &|key| std::env::var(key).ok()) {
        Ok(loaded) => loaded,
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("moviematch-storaged: {e}");
            return ExitCode::from(2);
        }
    };
    moviematch_storaged::logging::init(&loaded.config.log_level);
    if let Some(file) = &loaded.config_file {
        tracing::info!("configuration file: {}", file.display());
    }
    tracing::info!("{}", moviematch_storaged::heap::in_force());
    for warning in loaded.warnings.iter().chain(&heap_warnings) {
        tracing::warn!("{warning}");
    }
    moviematch_storaged::daemon::raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(loaded.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow_free::Result {
    // Signals first: one that arrives while the rooms load is handled once they are loaded,
    // instead of killing the process with its default action.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let passed = systemd::passed_listener()?;
    let daemon = tokio::task::spawn_blocking(move || Daemon::start(config, passed)).await??;
    let shutdown = CancellationToken::new();
    let rooms = daemon.rooms().clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break; }
                _ = hangup.recv() => rooms.reread().await,
            }
        }
        systemd::stopping();
        drop(rooms);
        stop.cancel();
    });
    daemon.serve(shutdown).await?;
    Ok(())
}

/// Errors at the top of the binary are only printed, so a boxed error is all we need.
mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
