//! Helper threads of the file backend (folds, the cache writer, journal deletion), or the
//! calling thread in tests, so that a simulated disk sees the same calls in the same order.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Runs `job` on a thread named `name`, or here (`Err` with its result) when no thread starts
/// or `inline`. The thread's result is `None` only if it was not the one to run the job, which
/// cannot happen.
pub(super) fn spawn<T: Send + 'static>(
    inline: bool,
    name: &str,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<Option<T>>, Option<T>> {
    if inline {
        return Err(Some(job()));
    }
    // Shared, so that the job is still here if the thread does not start.
    let slot = Arc::new(Mutex::new(Some(job)));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || take(&theirs).map(|job| job()));
    match spawned {
        Ok(thread) => Ok(thread),
        Err(e) => {
            tracing::debug!("no thread for {name} ({e}); running it here");
            Err(take(&slot).map(|job| job()))
        }
    }
}

fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}
