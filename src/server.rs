//! The listener: accepts Unix-socket connections and runs one task per connection
//! ([`crate::connection`]).
//!
//! It owns the limits on who may connect and how many at once: a connection over
//! `maxConnections` gets one `busy` line and is closed, and with `allowedUids`/`allowedGids` a
//! peer (SO_PEERCRED) that is in neither list gets one error line and is closed, before any
//! request is read.
//!
//! Shutdown: when `shutdown` is cancelled the listener stops accepting and waits for every
//! connection to finish (each answers what it already started, see [`crate::connection`]). The
//! connections' store handles drop as they finish, which lets the actor stop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection;
use crate::protocol::{error_line, ErrorCode, ErrorReply};
use crate::service::Service;

/// Limits for the listener.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_connections: usize,
    /// Peers allowed to connect (SO_PEERCRED); empty lists allow anyone the socket mode allows.
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
}

/// Serves `listener` until `shutdown` is cancelled, then waits for every connection to finish.
pub async fn run(
    listener: UnixListener,
    service: Service,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let limits = Arc::new(limits);
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; existing clients go on.
                    tracing::error!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Some(refusal) = refuse_peer(&stream, &limits) {
            tracker.spawn(reject(stream, refusal));
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let busy = ErrorReply::new(
                ErrorCode::Busy,
                format!(
                    "the daemon serves at most {} connections; try again later",
                    limits.max_connections
                ),
            );
            tracker.spawn(reject(stream, busy));
            continue;
        };
        let service = service.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            service.connections.fetch_add(1, Ordering::Relaxed);
            connection::handle(stream, &service, &limits, shutdown).await;
            service.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    drop(service);
    tracker.close();
    tracker.wait().await;
}

/// Sends one error line and closes, for connections the daemon will not serve.
async fn reject(mut stream: UnixStream, error: ErrorReply) {
    let line = error_line(&None, &error);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&line).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

fn refuse_peer(stream: &UnixStream, limits: &Limits) -> Option<ErrorReply> {
    if limits.allowed_uids.is_empty() && limits.allowed_gids.is_empty() {
        return None;
    }
    let refused = |what: String| {
        tracing::warn!("refused a connection from {what}: not in allowedUids/allowedGids");
        Some(ErrorReply::new(
            ErrorCode::BadRequest,
            format!("access denied for {what}"),
        ))
    };
    match stream.peer_cred() {
        Ok(cred) => {
            let allowed = limits.allowed_uids.contains(&cred.uid())
                || limits.allowed_gids.contains(&cred.gid());
            if allowed {
                None
            } else {
                refused(format!("uid {} gid {}", cred.uid(), cred.gid()))
            }
        }
        Err(e) => refused(format!("an unknown peer ({e})")),
    }
}
