//! One connection, served by one loop: read what arrived, answer what is ready, write once.
//!
//! Each time the connection's task wakes it takes every complete request line already
//! received (pipelined requests arrive many to a read), starts them in arrival order
//! ([`Service::begin`]: mutations are queued on the store at once, so one client's pipelined
//! writes share commits), answers every request whose turn has come, and hands all the answers
//! to the socket in one write. A read whose connection has nothing earlier still waiting is
//! answered on the spot; one behind a mutation waits in the connection's queue for its turn, so
//! it sees that write, and a later mutation is started only once that read is answered, so it
//! does not see writes sent after it. The queue is bounded in requests ([`PIPELINE_DEPTH`]) and in bytes
//! (`maxUnreadBytes`: every queued request holds its size until its answer is written; past the
//! budget the connection is no longer read, though one request larger than the budget still
//! passes alone). While the socket accepts nothing the loop waits on it and reads nothing more;
//! a socket that accepts nothing for `writeTimeoutMs` closes the connection, with a log line
//! naming the peer.
//!
//! There is no second task and no channel per connection: a wake-up of the runtime serves every
//! request that is ready, which is what the daemon's CPU per request at many clients is made of.
//!
//! Shutdown: the loop stops reading, answers every request already started, then answers lines
//! already received (or arriving within 100 ms) with `shutting_down`.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::io::BufWriter;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::socket::{self, ReadHalf, WriteHalf};
use super::{watch, write_answer, write_timed, Limits, Peer};
use crate::protocol::codec::{Frame, LineCodec};
use crate::protocol::decode;
use crate::protocol::request::Request;
use crate::protocol::{error_line, ErrorCode, ErrorReply, RequestId};
use crate::room::RoomName;
use crate::service::{mutation_line, Pending, Service};

/// Requests a client may have waiting on one connection before the daemon stops reading it.
const PIPELINE_DEPTH: usize = 1024;

/// Bytes of answers gathered before they are handed to the socket.
const WRITE_BUFFER: usize = 64 * 1024;

/// How long a stopping daemon still answers arriving lines with `shutting_down`.
const STOP_GRACE: Duration = Duration::from_millis(100);

/// Serves one accepted connection until its client closes it, it fails, or the daemon stops.
pub async fn handle(
    stream: tokio::net::UnixStream,
    service: &Service,
    limits: &Limits,
    shutdown: CancellationToken,
) {
    let peer = Peer::of(&stream);
    let (read, write) = match socket::split(stream) {
        Ok(halves) => halves,
        Err(e) => {
            crate::logging::limited_warn(
                "connection-setup",
                format_args!("cannot serve a connection of {peer}: {e}; it was closed"),
            );
            return;
        }
    };
    let mut connection = Connection {
        service,
        limits,
        frames: FramedRead::new(read, LineCodec::new(limits.max_request_bytes)),
        out: BufWriter::with_capacity(WRITE_BUFFER, write),
        queue: VecDeque::new(),
        held: 0,
        deferred: 0,
    };
    match connection.serve(&shutdown).await {
        Ok(None) => {}
        Ok(Some(watch)) => {
            let watcher = watch::Watcher {
                peer,
                write_timeout: limits.write_timeout,
                queue_bytes: limits.watch_queue_bytes,
            };
            watch::stream_events(
                connection.out,
                connection.frames,
                &service.rooms,
                watch.id,
                watch.room_names,
                watcher,
                shutdown,
            )
            .await;
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            crate::logging::limited_warn(
                "write-timeout",
                format_args!(
                    "closed the connection of {peer}: it read nothing for {:?} (writeTimeoutMs) while answers waited",
                    limits.write_timeout
                ),
            );
        }
        // The client went away (a reset, a broken pipe): nothing to tell anyone.
        Err(_) => {}
    }
}

/// A `watch` request that ended a connection's request phase.
struct WatchStart {
    id: RequestId,
    room_names: Option<Vec<RoomName>>,
}

/// A started request waiting for its turn, and the bytes of the budget it holds.
struct Queued {
    pending: Pending,
    cost: usize,
}

/// What a waiting connection woke up for.
enum Woke {
    Stop,
    Answered,
    Frame(Option<io::Result<Frame>>),
}

struct Connection<'a> {
    service: &'a Service,
    limits: &'a Limits,
    frames: FramedRead<ReadHalf, LineCodec>,
    out: BufWriter<WriteHalf>,
    /// Requests started but not answered, in arrival order; only ever non-empty while a
    /// mutation at its front waits for the store.
    queue: VecDeque<Queued>,
    /// Bytes of `maxUnreadBytes` the queue holds.
    held: usize,
    /// Reads in the queue, to be answered when their turn comes.
    deferred: usize,
}

impl Connection<'_> {
    /// Serves requests until the input ends (`None`), or a `watch` takes the connection over.
    async fn serve(&mut self, shutdown: &CancellationToken) -> io::Result<Option<WatchStart>> {
        // Waited on once per connection rather than once per wait.
        let stopped = shutdown.cancelled();
        tokio::pin!(stopped);
        loop {
            if shutdown.is_cancelled() {
                return self.stop().await;
            }
            // Every line already received, as far as the budget allows.
            while self.may_read() {
                let Some(frame) = self.frames.next().now_or_never() else {
                    break;
                };
                if let Some(end) = self.take(frame).await? {
                    return Ok(end);
                }
            }
            self.answer_ready().await?;
            if !self.out.buffer().is_empty() {
                write_timed(&mut self.out, &[], self.limits.write_timeout).await?;
            }
            let may_read = self.may_read();
            let front_waits = matches!(
                self.queue.front(),
                Some(Queued {
                    pending: Pending::Mutation { .. },
                    ..
                })
            );
            let woke = tokio::select! {
                biased;
                () = &mut stopped => Woke::Stop,
                () = front_reply(&mut self.queue), if front_waits => Woke::Answered,
                frame = self.frames.next(), if may_read => Woke::Frame(frame),
            };
            match woke {
                Woke::Stop => return self.stop().await,
                // Answered (and written) at the top of the loop, with whatever else is ready.
                Woke::Answered => {}
                Woke::Frame(frame) => {
                    if let Some(end) = self.take(frame).await? {
                        return Ok(end);
                    }
                }
            }
        }
    }

    /// Whether another request may be read: the queue is within its bounds (an empty queue
    /// always takes one, however large).
    fn may_read(&self) -> bool {
        self.queue.is_empty()
            || (self.queue.len() < PIPELINE_DEPTH && self.held < self.limits.max_unread_bytes)
    }

    /// Starts one received frame: answers it now if nothing earlier waits, else queues it.
    /// `Some` when the connection's request phase is over (input ended, or `watch`).
    async fn take(
        &mut self,
        frame: Option<io::Result<Frame>>,
    ) -> io::Result<Option<Option<WatchStart>>> {
        let line = match frame {
            // The client closed its side (or the socket failed): answer what was started.
            None | Some(Err(_)) => {
                self.finish_all().await?;
                return Ok(Some(None));
            }
            Some(Ok(Frame::TooLarge)) => {
                let line = error_line(
                    &None,
                    &ErrorReply::new(
                        ErrorCode::TooLarge,
                        format!(
                            "the request line exceeds maxRequestBytes ({} bytes); it was skipped",
                            self.limits.max_request_bytes
                        ),
                    ),
                );
                self.start(Pending::Ready(line), 0).await?;
                return Ok(None);
            }
            Some(Ok(Frame::Line(line))) => line,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let pending = match decode::decode(&line) {
            Err(rejected) => Pending::Ready(error_line(&rejected.id, &rejected.error)),
            Ok(envelope) => {
                if let Request::Watch(watch) = envelope.request {
                    self.finish_all().await?;
                    return Ok(Some(Some(WatchStart {
                        id: envelope.id,
                        room_names: watch.rooms(),
                    })));
                }
                // A read waiting for its turn must see the rooms as the writes before it left
                // them, not as a later write does: a mutation reaches the store only once
                // every read queued ahead of it has been answered (found by an outside probe:
                // save a, get, save b in one write got b).
                if envelope.request.is_mutation() {
                    while self.deferred > 0 {
                        self.answer_front().await?;
                    }
                }
                self.service.begin(envelope.id, envelope.request).await
            }
        };
        self.start(pending, line.len()).await?;
        Ok(None)
    }

    /// Answers a started request at once when nothing earlier waits (so it sees every earlier
    /// write of the connection), or queues it behind what does.
    async fn start(&mut self, pending: Pending, cost: usize) -> io::Result<()> {
        let cost = match &pending {
            Pending::Ready(line) => cost.max(line.len()),
            _ => cost,
        };
        if self.queue.is_empty() && !matches!(pending, Pending::Mutation { .. }) {
            let answer = self.service.finish(pending).await;
            return write_answer(&mut self.out, &answer, self.limits.write_timeout).await;
        }
        // What a request holds is capped by the budget, so one large request passes alone.
        let cost = cost.min(self.limits.max_unread_bytes);
        self.held += cost;
        self.deferred += usize::from(matches!(pending, Pending::Deferred { .. }));
        self.queue.push_back(Queued { pending, cost });
        Ok(())
    }

    /// Answers queued requests from the front for as long as their answers are ready.
    async fn answer_ready(&mut self) -> io::Result<()> {
        while let Some(front) = self.queue.front_mut() {
            if let Pending::Mutation { id, reply } = &mut front.pending {
                let result = match reply.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => break,
                    result => result.ok(),
                };
                front.pending = Pending::Ready(mutation_line(id, result));
            }
            self.answer_front().await?;
        }
        Ok(())
    }

    /// Answers every started request, in order, waiting for the store where needed.
    async fn finish_all(&mut self) -> io::Result<()> {
        while !self.queue.is_empty() {
            self.answer_front().await?;
        }
        write_timed(&mut self.out, &[], self.limits.write_timeout).await
    }

    async fn answer_front(&mut self) -> io::Result<()> {
        let Some(Queued { pending, cost }) = self.queue.pop_front() else {
            return Ok(());
        };
        self.deferred -= usize::from(matches!(pending, Pending::Deferred { .. }));
        let answer = self.service.finish(pending).await;
        let written = write_answer(&mut self.out, &answer, self.limits.write_timeout).await;
        self.held -= cost;
        written
    }

    /// The daemon is stopping: answers what was started, then what was received since, with
    /// `shutting_down`.
    async fn stop(&mut self) -> io::Result<Option<WatchStart>> {
        // Only what is already buffered or arrives within a moment: a stopping daemon does not
        // wait, and a client that keeps sending cannot hold the stop open (a ping every 10 ms
        // kept it from ever finishing when each line restarted the wait).
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        self.finish_all().await?;
        let refusal = ErrorReply::new(
            ErrorCode::ShuttingDown,
            "the daemon is stopping and did not execute this request",
        );
        let timeout = self.limits.write_timeout;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, self.frames.next()).await
        {
            let id = match frame {
                Frame::Line(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Frame::Line(line) => decode::decode(&line).map_or_else(|r| r.id, |e| e.id),
                Frame::TooLarge => None,
            };
            write_timed(&mut self.out, &error_line(&id, &refusal), timeout).await?;
        }
        write_timed(&mut self.out, &[], timeout).await?;
        Ok(None)
    }
}

/// Waits until the mutation at the queue's front has its answer, and puts the answer in its
/// place (written by [`Connection::answer_ready`] with whatever else is ready by then).
async fn front_reply(queue: &mut VecDeque<Queued>) {
    poll_fn(|cx| {
        let Some(front) = queue.front_mut() else {
            return Poll::Ready(());
        };
        if let Pending::Mutation { id, reply } = &mut front.pending {
            let result = ready!(Pin::new(reply).poll(cx)).ok();
            front.pending = Pending::Ready(mutation_line(id, result));
        }
        Poll::Ready(())
    })
    .await;
}
