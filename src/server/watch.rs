//! `watch`: a connection that carries change events instead of responses (PROTOCOL.md section 3).
//!
//! The actor broadcasts every committed change after answering its writer (with Redis: the
//! daemon's subscription relays what every daemon publishes, see [`crate::remote`]); a watcher
//! forwards the ones it asked for, in commit order (so per room, in revision order). The
//! broadcast buffer is bounded and never blocks the actor. Each watcher takes events off it as
//! they come, into a queue of its own bounded in bytes (`watchQueueBytes`), and writes that
//! queue to its socket meanwhile: so a watcher that does not read pins no broadcast slot (nor
//! the rooms a slot holds) for long. A watcher whose queue passes its bound, or that fell
//! behind the broadcast buffer, or whose daemon lost its Redis subscription, is sent
//! `overflow` where its socket takes it, and disconnected; one whose socket accepts nothing for
//! `writeTimeoutMs` is disconnected. Every end of a watch is logged with its reason.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

use super::socket::{ReadHalf, WriteHalf};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::{write_timed, Peer};
use crate::logging::{limited, Level};
use crate::protocol::codec::LineCodec;
use crate::protocol::event::OVERFLOW;
use crate::protocol::{error_line, RequestId, Response};
use crate::room::RoomName;
use crate::rooms::{Received, Rooms};
use crate::service::store_error;

/// Events are written to the socket in batches of whole lines up to this size.
const BATCH: usize = 64 * 1024;

/// The limits and the peer of one watcher.
#[derive(Clone, Copy)]
pub struct Watcher {
    pub peer: Peer,
    pub write_timeout: Duration,
    /// `watchQueueBytes`: event bytes the watcher may have waiting.
    pub queue_bytes: usize,
}

/// Why a watch ended.
enum End {
    ClientClosed,
    Shutdown,
    /// Events past `watchQueueBytes`; `sent`: whether the socket took the `overflow` line.
    QueueFull {
        bytes: usize,
        sent: bool,
    },
    /// Events missed (how many, when known); `sent` as above.
    Lagged {
        missed: Option<u64>,
        sent: bool,
    },
    WriteTimeout,
    WriteFailed(std::io::Error),
    Closed,
    Refused(String),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::ClientClosed => f.write_str("the client closed the connection"),
            End::Shutdown => f.write_str("the daemon is stopping"),
            End::QueueFull { bytes, sent } => write!(
                f,
                "overflow: {bytes} bytes of events waited for it (watchQueueBytes); {}",
                told(*sent)
            ),
            End::Lagged {
                missed: Some(missed),
                sent,
            } => write!(
                f,
                "overflow: it fell {missed} events behind; {}",
                told(*sent)
            ),
            End::Lagged { missed: None, sent } => write!(
                f,
                "overflow: events may have been missed (Redis subscription lost); {}",
                told(*sent)
            ),
            End::WriteTimeout => f.write_str(
                "write timeout: its socket accepted nothing for writeTimeoutMs; disconnected it",
            ),
            End::WriteFailed(e) => write!(f, "its socket failed: {e}"),
            End::Closed => f.write_str("the event source closed"),
            End::Refused(message) => write!(f, "refused: {message}"),
        }
    }
}

/// How a watch cut off for overflow ended, for its log line.
fn told(sent: bool) -> &'static str {
    if sent {
        "sent overflow and disconnected it"
    } else {
        "disconnected it without the overflow line (its socket took nothing more within 1 s)"
    }
}

/// Acknowledges the `watch` request, then forwards events until the client closes, falls
/// behind, or the daemon stops; logs why it ended.
pub async fn stream_events(
    mut out: BufWriter<WriteHalf>,
    input: FramedRead<ReadHalf, LineCodec>,
    rooms: &Rooms,
    id: RequestId,
    room_names: Option<Vec<RoomName>>,
    watcher: Watcher,
    shutdown: CancellationToken,
) {
    let end = watch(&mut out, input, rooms, id, room_names, watcher, shutdown).await;
    let (kind, level) = match end {
        End::ClientClosed | End::Shutdown | End::Closed => ("watcher-closed", Level::Info),
        _ => ("watcher-dropped", Level::Warn),
    };
    limited(
        kind,
        level,
        format_args!("a watch of {} ended: {end}", watcher.peer),
    );
}

async fn watch(
    out: &mut BufWriter<WriteHalf>,
    mut input: FramedRead<ReadHalf, LineCodec>,
    rooms: &Rooms,
    id: RequestId,
    room_names: Option<Vec<RoomName>>,
    watcher: Watcher,
    shutdown: CancellationToken,
) -> End {
    // Subscribe before acknowledging, so no change committed after the `ok` is missed.
    let (mut events, ack) = match rooms.subscribe().await {
        Ok(events) => (events, Response::ok(&id).finish()),
        Err(e) => {
            let error = store_error(e);
            let line = error_line(&id, &error);
            let _ = write_timed(out, &line, watcher.write_timeout).await;
            let _ = write_timed(out, &[], watcher.write_timeout).await;
            return End::Refused(error.message);
        }
    };
    let wanted: Option<HashSet<String>> =
        room_names.map(|names| names.into_iter().map(|n| n.as_str().to_owned()).collect());
    let wanted = |room: &str| wanted.as_ref().is_none_or(|w| w.contains(room));
    if let Err(e) = write_timed(out, &ack, watcher.write_timeout).await {
        return write_end(e);
    }
    if let Err(e) = write_timed(out, &[], watcher.write_timeout).await {
        return write_end(e);
    }
    // The buffer is empty now: events go to the socket directly, in batches of their own.
    let out = out.get_mut();
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    // Bytes waiting: in `queue`, and not yet written of `batch`.
    let mut waiting = 0usize;
    let mut batch = BytesMut::new();
    let mut written = 0usize;
    // One timer for the whole watch, moved as writes progress (not one per event).
    let stall = tokio::time::sleep_until(Instant::now());
    tokio::pin!(stall);
    loop {
        if written == batch.len() && !queue.is_empty() {
            batch.clear();
            written = 0;
            while let Some(line) = queue.pop_front() {
                batch.extend_from_slice(&line);
                if queue
                    .front()
                    .is_none_or(|next| batch.len() + next.len() > BATCH)
                {
                    break;
                }
            }
            stall.as_mut().reset(Instant::now() + watcher.write_timeout);
        }
        let busy = written < batch.len();
        let received = tokio::select! {
            () = shutdown.cancelled() => return End::Shutdown,
            // Lines sent after `watch` are ignored; the end of input ends the watch.
            line = input.next() => match line {
                Some(Ok(_)) => continue,
                _ => return End::ClientClosed,
            },
            received = events.recv(wanted) => received,
            result = out.write(&batch[written..]), if busy => {
                match result {
                    Ok(0) => return End::WriteFailed(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        written += n;
                        waiting -= n;
                        stall.as_mut().reset(Instant::now() + watcher.write_timeout);
                    }
                    Err(e) => return End::WriteFailed(e),
                }
                continue;
            }
            () = &mut stall, if busy => return End::WriteTimeout,
        };
        // Everything else already waiting is taken in the same turn (a burst of commits
        // arrives many events at a time), so the broadcast buffer is emptied quickly.
        let mut next = Some(received);
        let mut taken = 0;
        while let Some(received) = next.take() {
            match received {
                Received::Line(line) => {
                    waiting += line.len();
                    queue.push_back(line);
                    if waiting > watcher.queue_bytes {
                        let sent = overflow(out, &batch[written..], watcher).await;
                        return End::QueueFull {
                            bytes: waiting,
                            sent,
                        };
                    }
                }
                Received::Skipped => {}
                Received::Overflow { missed } => {
                    let sent = overflow(out, &batch[written..], watcher).await;
                    return End::Lagged { missed, sent };
                }
                Received::Closed => return End::Closed,
            }
            taken += 1;
            if taken < 1024 {
                next = events.recv(wanted).now_or_never();
            }
        }
    }
}

/// Sends `overflow` after the rest of the batch being written (whole lines), if the socket
/// takes it soon; the events still queued are dropped. True if it was sent.
async fn overflow(out: &mut WriteHalf, rest: &[u8], watcher: Watcher) -> bool {
    let soon = watcher.write_timeout.min(Duration::from_secs(1));
    let sent = tokio::time::timeout(soon, async {
        out.write_all(rest).await?;
        out.write_all(OVERFLOW).await
    })
    .await;
    matches!(sent, Ok(Ok(())))
}

fn write_end(e: std::io::Error) -> End {
    match e.kind() {
        std::io::ErrorKind::TimedOut => End::WriteTimeout,
        _ => End::WriteFailed(e),
    }
}
