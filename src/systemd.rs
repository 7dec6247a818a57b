//! Running under systemd: readiness and stop notifications, the watchdog, socket activation.
//!
//! Everything here is a no-op outside systemd (no `NOTIFY_SOCKET`, no `LISTEN_FDS` for this
//! process), so the daemon behaves the same when started by hand.

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use sd_notify::NotifyState;

/// The name a `.socket` unit may give the daemon's socket (`FileDescriptorName=storage`).
const SOCKET_NAME: &str = "storage";

/// The listening socket systemd passed (`LISTEN_FDS`/`LISTEN_PID` naming this process): the one
/// named `storage` if names are given, else the first. `None` when nothing was passed.
pub fn passed_listener() -> std::io::Result<Option<UnixListener>> {
    let named = sd_notify::listen_fds_with_names()
        .ok()
        .and_then(|mut fds| fds.find(|(_, name)| name == SOCKET_NAME).map(|(fd, _)| fd));
    let fd = match named {
        Some(fd) => fd,
        None => match sd_notify::listen_fds()?.next() {
            Some(fd) => fd,
            None => return Ok(None),
        },
    };
    // SAFETY: systemd hands this descriptor to this process (LISTEN_PID checked by listen_fds);
    // nothing else in the process owns it.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    // A descriptor that is not a listening Unix socket fails here, with a clear error.
    listener.local_addr().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("the socket passed by systemd (fd {fd}) is not a Unix socket: {e}"),
        )
    })?;
    Ok(Some(listener))
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Rooms are loaded and the socket accepts connections.
pub fn ready(rooms: usize) {
    let status = format!("serving {rooms} rooms");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// A new status line (`systemctl status` shows it), e.g. while the storage is failing.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Shutdown has begun.
pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: flushing rooms to storage"),
    ]);
}

/// How often to tell the watchdog we are alive (half its timeout), if systemd set one.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// One watchdog keep-alive.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}
