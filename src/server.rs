//! The listener: accepts Unix-socket connections and runs one handler per connection.
//!
//! A connection has two halves. The reader cuts lines ([`LineCodec`]), decodes them, and starts
//! each request in arrival order ([`Service::begin`]: mutations are queued on the store at once,
//! so one client's pipelined writes share commits). The writer finishes them in the same order
//! and writes the responses, flushing when it has nothing more ready. A bounded queue between
//! the halves limits how far a client may pipeline ahead of its answers.
//!
//! Shutdown: when `shutdown` is cancelled the listener stops accepting; each reader stops reading
//! and answers lines it already holds with `shutting_down`; each writer finishes every request
//! already started. The handlers' store handles drop as they finish, which lets the actor stop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::codec::{Frame, LineCodec};
use crate::protocol::request::{self, Request};
use crate::protocol::{error_line, ErrorCode, ErrorReply, RequestId};
use crate::room::RoomName;
use crate::service::{Pending, Service};
use crate::watch;

/// Requests a client may have in flight on one connection before the daemon stops reading.
const PIPELINE_DEPTH: usize = 1024;

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
        // A token of its own: checking or waiting on it (before each line) locks only this
        // connection's node of the token tree, not the one every connection shares.
        let shutdown = shutdown.child_token();
        tracker.spawn(async move {
            service.connections.fetch_add(1, Ordering::Relaxed);
            handle(stream, &service, &limits, shutdown).await;
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

async fn handle(
    stream: UnixStream,
    service: &Service,
    limits: &Limits,
    shutdown: CancellationToken,
) {
    let (read, write) = stream.into_split();
    let (queue, pending) = mpsc::channel(PIPELINE_DEPTH);
    let writer = write_responses(write, service.clone(), pending);
    let reader = read_requests(read, service, limits, queue, &shutdown);
    let (watch_request, writer_result) = tokio::join!(reader, writer);
    if let (Some(watch), Ok(out)) = (watch_request, writer_result) {
        watch::stream_events(
            out,
            watch.input,
            &service.rooms,
            watch.id,
            watch.room_names,
            shutdown,
        )
        .await;
    }
}

/// A `watch` request that ended a connection's request phase, with the input to keep reading.
struct WatchRequest {
    id: RequestId,
    room_names: Option<Vec<RoomName>>,
    input: FramedRead<OwnedReadHalf, LineCodec>,
}

/// Reads request lines and starts them in order, until the input ends or a `watch` arrives.
async fn read_requests(
    read: OwnedReadHalf,
    service: &Service,
    limits: &Limits,
    queue: mpsc::Sender<Pending>,
    shutdown: &CancellationToken,
) -> Option<WatchRequest> {
    let mut frames = FramedRead::new(read, LineCodec::new(limits.max_request_bytes));
    loop {
        // A line already received is taken at once (pipelined requests arrive many to a read);
        // only when one must be waited for does the wait also watch for shutdown.
        let ready = if shutdown.is_cancelled() {
            None
        } else {
            frames.next().now_or_never()
        };
        let frame = match ready {
            Some(frame) => frame,
            None => tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    answer_buffered_with_shutting_down(&mut frames, &queue).await;
                    return None;
                }
                frame = frames.next() => frame,
            },
        };
        let pending = match frame {
            None | Some(Err(_)) => return None,
            Some(Ok(Frame::Line(line))) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Some(Ok(Frame::TooLarge)) => Pending::Ready(error_line(
                &None,
                &ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!(
                        "the request line exceeds maxRequestBytes ({} bytes); it was skipped",
                        limits.max_request_bytes
                    ),
                ),
            )),
            Some(Ok(Frame::Line(line))) => match request::decode(&line) {
                Err(rejected) => Pending::Ready(error_line(&rejected.id, &rejected.error)),
                Ok(envelope) => {
                    if let Request::Watch { room_names } = envelope.request {
                        return Some(WatchRequest {
                            id: envelope.id,
                            room_names,
                            input: frames,
                        });
                    }
                    service.begin(envelope.id, envelope.request).await
                }
            },
        };
        if queue.send(pending).await.is_err() {
            return None;
        }
    }
}

/// After shutdown: lines already received but not started are answered `shutting_down`.
async fn answer_buffered_with_shutting_down(
    frames: &mut FramedRead<OwnedReadHalf, LineCodec>,
    queue: &mpsc::Sender<Pending>,
) {
    let refusal = ErrorReply::new(
        ErrorCode::ShuttingDown,
        "the daemon is stopping and did not execute this request",
    );
    // Only what is already buffered or arrives at once: a stopping daemon does not wait.
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout(Duration::from_millis(20), frames.next()).await
    {
        let id = match frame {
            Frame::Line(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Frame::Line(line) => request::decode(&line).map_or_else(|r| r.id, |e| e.id),
            Frame::TooLarge => None,
        };
        if queue
            .send(Pending::Ready(error_line(&id, &refusal)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Finishes pending requests in order and writes their responses. Returns the write half for a
/// `watch` that follows.
async fn write_responses(
    write: OwnedWriteHalf,
    service: Service,
    mut pending: mpsc::Receiver<Pending>,
) -> Result<BufWriter<OwnedWriteHalf>, std::io::Error> {
    let mut out = BufWriter::with_capacity(64 * 1024, write);
    while let Some(next) = pending.recv().await {
        let line: Bytes = service.finish(next).await;
        out.write_all(&line).await?;
        if pending.is_empty() {
            out.flush().await?;
        }
    }
    out.flush().await?;
    Ok(out)
}
