//! The listener: accepts Unix-socket connections and runs one handler per connection.
//!
//! A connection is served by one loop ([`connection`]): it reads what arrived, starts the
//! requests in order, answers those whose turn has come and writes the answers in one go.
//! Rooms in answers are written from their stored bytes, never copied per connection. A
//! connection whose socket accepts nothing for `writeTimeoutMs` is closed, with a log line
//! naming the peer.
//!
//! Shutdown: when `shutdown` is cancelled the listener stops accepting; each connection stops
//! reading, finishes every request already started and answers lines it already holds with
//! `shutting_down`. The handlers' store handles drop as they finish, which lets the actor stop.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::unix::UCred;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::{error_line, ErrorCode, ErrorReply};
use crate::service::{Answer, Service};

mod connection;
pub mod socket;
pub mod watch;

/// Limits for the listener.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_connections: usize,
    /// Peers allowed to connect (SO_PEERCRED); empty lists allow anyone the socket mode allows.
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    /// Bytes of requests and answers one connection may hold before it is no longer read.
    pub max_unread_bytes: usize,
    /// How long a socket may accept nothing before its connection is closed.
    pub write_timeout: Duration,
    /// Bytes of events one watcher may have waiting before it is sent `overflow`.
    pub watch_queue_bytes: usize,
}

/// Who is on the other end of a connection, for log lines.
#[derive(Clone, Copy)]
pub struct Peer(Option<UCred>);

impl Peer {
    pub fn of(stream: &UnixStream) -> Peer {
        Peer(stream.peer_cred().ok())
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(cred) => match cred.pid() {
                Some(pid) => write!(f, "pid {pid} uid {}", cred.uid()),
                None => write!(f, "uid {}", cred.uid()),
            },
            None => f.write_str("an unknown peer"),
        }
    }
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
    // A descriptor kept in reserve: when the process runs out, closing it lets one waiting
    // client be accepted and told `busy` instead of waiting in the backlog for nothing.
    let mut reserve = std::fs::File::open("/dev/null").ok();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    let out_of_descriptors =
                        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    crate::logging::limited(
                        "accept-failed",
                        crate::logging::Level::Warn,
                        format_args!(
                            "cannot accept a connection: {e}{}",
                            if out_of_descriptors {
                                "; answering busy (raise LimitNOFILE / ulimit -n, or lower maxConnections)"
                            } else {
                                ""
                            }
                        ),
                    );
                    if out_of_descriptors {
                        refuse_one_with_reserve(&listener, &mut reserve, &limits).await;
                    }
                    // Back off instead of spinning; existing clients go on.
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
        // A token of its own: checking or waiting on it (before each line) locks only this
        // connection's node of the token tree, not the one every connection shares.
        let shutdown = shutdown.child_token();
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

/// Out of descriptors: gives up the reserve descriptor to accept the connections waiting (up
/// to 128), tells each `busy` without waiting (the line fits an empty socket buffer) and
/// closes it, then takes the reserve again.
async fn refuse_one_with_reserve(
    listener: &UnixListener,
    reserve: &mut Option<std::fs::File>,
    limits: &Limits,
) {
    if reserve.take().is_none() {
        return;
    }
    let busy = error_line(
        &None,
        &ErrorReply::new(
            ErrorCode::Busy,
            format!(
                "the daemon is out of file descriptors ({} connections allowed by maxConnections); try again later",
                limits.max_connections
            ),
        ),
    );
    for _ in 0..128 {
        let Some(Ok((stream, _))) = listener.accept().now_or_never() else {
            break;
        };
        let _ = stream.try_write(&busy);
    }
    *reserve = std::fs::File::open("/dev/null").ok();
}

/// Sends one error line and closes, for connections the daemon will not serve.
///
/// After the line it closes only its writing side and reads what the client sends for a moment
/// (discarding it, at most 64 KiB): a client that writes its request before reading (socat) then
/// gets the line instead of a broken pipe.
async fn reject(mut stream: UnixStream, error: ErrorReply) {
    use tokio::io::AsyncReadExt;
    let line = error_line(&None, &error);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&line).await;
        let _ = stream.shutdown().await;
        let mut discard = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut discard).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

fn refuse_peer(stream: &UnixStream, limits: &Limits) -> Option<ErrorReply> {
    if limits.allowed_uids.is_empty() && limits.allowed_gids.is_empty() {
        return None;
    }
    let refused = |what: String| {
        crate::logging::limited_warn(
            "refused-peer",
            format_args!("refused a connection from {what}: not in allowedUids/allowedGids"),
        );
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

/// Writes an answer, a spliced one piece by piece from the rooms' own bytes.
pub(crate) async fn write_answer<W: AsyncWrite + Unpin>(
    out: &mut W,
    answer: &Answer,
    timeout: Duration,
) -> std::io::Result<()> {
    match answer {
        Answer::Line(line) => write_timed(out, line, timeout).await,
        Answer::Spliced(spliced) => {
            write_timed(out, &spliced.head, timeout).await?;
            for (i, room) in spliced.rooms.iter().enumerate() {
                if i > 0 {
                    write_timed(out, b",", timeout).await?;
                }
                let json = match spliced.summary {
                    true => &room.summary,
                    false => room.encoded(),
                };
                write_timed(out, json, timeout).await?;
            }
            write_timed(out, &spliced.tail, timeout).await
        }
    }
}

/// Writes all of `bytes` (nothing and a flush when empty), failing with `TimedOut` when the
/// socket accepts nothing for `timeout`: a slow reader that keeps reading is never cut off.
///
/// Most writes land in a buffer or a socket with room and finish on their first poll; only one
/// that has to wait starts the clock (reading it and arming a timer per write cost more than
/// the write).
pub async fn write_timed<W: AsyncWrite + Unpin>(
    out: &mut W,
    mut bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "write timeout");
    if bytes.is_empty() {
        if let Some(flushed) = out.flush().now_or_never() {
            return flushed;
        }
        return tokio::time::timeout(timeout, out.flush())
            .await
            .map_err(|_| timed_out())?;
    }
    while !bytes.is_empty() {
        let written = match out.write(bytes).now_or_never() {
            Some(written) => written,
            None => tokio::time::timeout(timeout, out.write(bytes))
                .await
                .map_err(|_| timed_out())?,
        };
        match written {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
