//! One client connection, served by one task: lines in, responses out, in order.
//!
//! The task reads request lines ([`LineCodec`]), decodes them and starts each one in arrival
//! order ([`Service::begin`]: a mutation is queued on the store at once, so one client's
//! pipelined writes share commits). Started requests wait in a bounded queue; whenever the one at
//! its head is answered, its response is written, and the output is flushed once nothing more is
//! ready. One task, not a reader and a writer joined by a channel, because the hand-off between
//! two tasks cost more than anything else a small request does.
//!
//! A `watch` ends the request phase: everything before it is answered, then the connection is
//! handed to [`watch::stream_events`]. On shutdown, lines already received but not started are
//! answered `shutting_down`, every started request is finished, and the connection closes.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::oneshot::error::TryRecvError;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::protocol::codec::{Frame, LineCodec};
use crate::protocol::request::{self, Request};
use crate::protocol::{error_line, ErrorCode, ErrorReply, RequestId};
use crate::room::RoomName;
use crate::server::Limits;
use crate::service::{mutation_line, Pending, Service};
use crate::store::StoreError;
use crate::watch;

/// Requests a client may have started and not yet been answered; beyond this the connection
/// stops reading until answers go out (backpressure instead of unbounded memory).
const PIPELINE_DEPTH: usize = 1024;

/// What woke the connection up.
enum Next {
    Stop,
    Input(Option<io::Result<Frame>>),
    Answered,
}

/// A `watch` request that ended the request phase.
struct WatchStart {
    id: RequestId,
    room_names: Option<Vec<RoomName>>,
}

struct Connection<'a> {
    frames: FramedRead<OwnedReadHalf, LineCodec>,
    out: BufWriter<OwnedWriteHalf>,
    started: VecDeque<Pending>,
    service: &'a Service,
    limits: &'a Limits,
}

/// Serves one connection until the client closes it, the daemon stops, or it becomes a watch.
pub async fn handle(
    stream: UnixStream,
    service: &Service,
    limits: &Limits,
    shutdown: CancellationToken,
) {
    let (read, write) = stream.into_split();
    let mut connection = Connection {
        frames: FramedRead::new(read, LineCodec::new(limits.max_request_bytes)),
        out: BufWriter::with_capacity(64 * 1024, write),
        started: VecDeque::new(),
        service,
        limits,
    };
    if let Ok(Some(start)) = connection.serve(&shutdown).await {
        let Connection { frames, out, .. } = connection;
        watch::stream_events(
            out,
            frames,
            &service.store,
            start.id,
            start.room_names,
            shutdown,
        )
        .await;
    }
}

impl Connection<'_> {
    async fn serve(&mut self, shutdown: &CancellationToken) -> io::Result<Option<WatchStart>> {
        loop {
            self.write_answered().await?;
            self.out.flush().await?;
            let reading = self.started.len() < PIPELINE_DEPTH;
            let next = {
                let Connection {
                    frames, started, ..
                } = self;
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => Next::Stop,
                    frame = frames.next(), if reading => Next::Input(frame),
                    () = head_answered(started) => Next::Answered,
                }
            };
            match next {
                Next::Stop => {
                    self.refuse_buffered().await;
                    self.finish_all().await?;
                    return Ok(None);
                }
                Next::Input(None | Some(Err(_))) => {
                    self.finish_all().await?;
                    return Ok(None);
                }
                Next::Input(Some(Ok(frame))) => {
                    if let Some(start) = self.start(frame).await {
                        self.finish_all().await?;
                        return Ok(Some(start));
                    }
                }
                Next::Answered => {}
            }
        }
    }

    /// Decodes a frame and starts the request, unless it is a `watch`.
    async fn start(&mut self, frame: Frame) -> Option<WatchStart> {
        let pending = match frame {
            Frame::Line(line) if line.iter().all(u8::is_ascii_whitespace) => return None,
            Frame::TooLarge => Pending::Ready(error_line(
                &None,
                &ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!(
                        "the request line exceeds maxRequestBytes ({} bytes); it was skipped",
                        self.limits.max_request_bytes
                    ),
                ),
            )),
            Frame::Line(line) => match request::decode(&line) {
                Err(rejected) => Pending::Ready(error_line(&rejected.id, &rejected.error)),
                Ok(envelope) => {
                    if let Request::Watch { room_names } = envelope.request {
                        return Some(WatchStart {
                            id: envelope.id,
                            room_names,
                        });
                    }
                    self.service.begin(envelope.id, envelope.request).await
                }
            },
        };
        self.started.push_back(pending);
        None
    }

    /// Writes the answers at the head of the queue that are ready, in order. Reads at the head
    /// are answered now, so they see every write started before them on this connection.
    async fn write_answered(&mut self) -> io::Result<()> {
        while let Some(head) = self.started.front_mut() {
            let line = match head {
                Pending::Ready(_) | Pending::Deferred { .. } => {
                    let Some(head) = self.started.pop_front() else {
                        break;
                    };
                    self.service.finish(head).await
                }
                Pending::Mutation { id, reply } => match reply.try_recv() {
                    Ok(result) => {
                        let line = mutation_line(id, result);
                        self.started.pop_front();
                        line
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        let line = mutation_line(id, Err(StoreError::Stopped));
                        self.started.pop_front();
                        line
                    }
                },
            };
            self.out.write_all(&line).await?;
        }
        Ok(())
    }

    /// Finishes every started request, in order, and flushes.
    async fn finish_all(&mut self) -> io::Result<()> {
        while let Some(head) = self.started.pop_front() {
            let line = self.service.finish(head).await;
            self.out.write_all(&line).await?;
        }
        self.out.flush().await
    }

    /// After shutdown: lines already received but not started are answered `shutting_down`.
    async fn refuse_buffered(&mut self) {
        let refusal = ErrorReply::new(
            ErrorCode::ShuttingDown,
            "the daemon is stopping and did not execute this request",
        );
        // Only what is already buffered or arrives at once: a stopping daemon does not wait.
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_millis(20), self.frames.next()).await
        {
            let id = match frame {
                Frame::Line(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Frame::Line(line) => request::decode(&line).map_or_else(|r| r.id, |e| e.id),
                Frame::TooLarge => None,
            };
            self.started
                .push_back(Pending::Ready(error_line(&id, &refusal)));
        }
    }
}

/// Completes when the mutation at the head of the queue has its answer (never, if the head is
/// not a mutation waiting for one), turning the head into its ready response line. Cancel-safe:
/// a receiver gives up its value only when it completes.
async fn head_answered(started: &mut VecDeque<Pending>) {
    let Some(head) = started.front_mut() else {
        return std::future::pending().await;
    };
    let Pending::Mutation { id, reply } = head else {
        return std::future::pending().await;
    };
    let result = reply.await.unwrap_or(Err(StoreError::Stopped));
    let line = mutation_line(id, result);
    *head = Pending::Ready(line);
}
