//! The listener: accepts Unix-socket connections and runs one handler per connection.
//!
//! A connection has two halves. The reader cuts lines ([`LineCodec`]), decodes them, and starts
//! each request in arrival order ([`Service::begin`]: mutations are queued on the store at once,
//! so one client's pipelined writes share commits). The writer finishes them in the same order
//! and writes the responses, flushing when it has nothing more ready. A bounded queue between
//! the halves limits how far a client may pipeline ahead of its answers, in requests and in
//! bytes (`maxUnreadBytes`: every queued request or answer holds bytes of the connection's
//! budget until its answer is written to the socket; a client that does not read stops being
//! read). Rooms in answers are written from their stored bytes, never copied per connection. A
//! connection whose socket accepts nothing for `writeTimeoutMs` is closed, with a log line
//! naming the peer.
//!
//! Shutdown: when `shutdown` is cancelled the listener stops accepting; each reader stops reading
//! and answers lines it already holds with `shutting_down`; each writer finishes every request
//! already started. The handlers' store handles drop as they finish, which lets the actor stop.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::unix::UCred;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::codec::{Frame, LineCodec};
use crate::protocol::request::{self, Request};
use crate::protocol::{error_line, ErrorCode, ErrorReply, RequestId};
use crate::room::RoomName;
use crate::service::{Answer, Pending, Service};
use crate::watch;

pub mod socket;
use socket::{ReadHalf, WriteHalf};

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

async fn handle(
    stream: UnixStream,
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
    let (queue, pending) = mpsc::channel(PIPELINE_DEPTH);
    let budget = Budget::new(limits.max_unread_bytes);
    let writer = write_responses(write, service.clone(), pending, limits.write_timeout, peer);
    let reader = read_requests(read, service, limits, queue, &budget, &shutdown);
    let (watch_request, writer_result) = tokio::join!(reader, writer);
    if let (Some(watch), Ok(out)) = (watch_request, writer_result) {
        let watcher = watch::Watcher {
            peer,
            write_timeout: limits.write_timeout,
            queue_bytes: limits.watch_queue_bytes,
        };
        watch::stream_events(
            out,
            watch.input,
            &service.rooms,
            watch.id,
            watch.room_names,
            watcher,
            shutdown,
        )
        .await;
    }
}

/// A connection's `maxUnreadBytes`, as semaphore permits of one byte each.
struct Budget {
    bytes: Arc<Semaphore>,
    max: u32,
}

impl Budget {
    fn new(max: usize) -> Budget {
        let max = u32::try_from(max.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Budget {
            bytes: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// Waits until `cost` bytes (at most the whole budget, so one big request still passes
    /// alone) are free; they are given back when the returned permit drops.
    async fn take(&self, cost: usize) -> Option<OwnedSemaphorePermit> {
        let cost = u32::try_from(cost)
            .unwrap_or(u32::MAX)
            .clamp(1, self.max.max(1));
        self.bytes.clone().acquire_many_owned(cost).await.ok()
    }
}

/// A `watch` request that ended a connection's request phase, with the input to keep reading.
struct WatchRequest {
    id: RequestId,
    room_names: Option<Vec<RoomName>>,
    input: FramedRead<ReadHalf, LineCodec>,
}

/// Reads request lines and starts them in order, until the input ends or a `watch` arrives.
async fn read_requests(
    read: ReadHalf,
    service: &Service,
    limits: &Limits,
    queue: mpsc::Sender<Queued>,
    budget: &Budget,
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
                    answer_buffered_with_shutting_down(&mut frames, &queue, budget).await;
                    return None;
                }
                // The writer gave up on the client (write timeout): stop reading it.
                () = queue.closed() => return None,
                frame = frames.next() => frame,
            },
        };
        // What this request holds until its answer is written: its line, or its answer.
        let mut cost = match &frame {
            Some(Ok(Frame::Line(line))) => line.len(),
            _ => 0,
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
                Err(rejected) => {
                    let line = error_line(&rejected.id, &rejected.error);
                    cost = cost.max(line.len());
                    Pending::Ready(line)
                }
                Ok(envelope) => {
                    if let Request::Watch(watch) = envelope.request {
                        return Some(WatchRequest {
                            id: envelope.id,
                            room_names: watch.rooms(),
                            input: frames,
                        });
                    }
                    service.begin(envelope.id, envelope.request).await
                }
            },
        };
        let permit = tokio::select! {
            permit = budget.take(cost) => permit,
            () = queue.closed() => None,
        };
        let permit = permit?;
        if queue.send((pending, permit)).await.is_err() {
            return None;
        }
    }
}

/// A started request and the bytes of the connection's budget it holds.
type Queued = (Pending, OwnedSemaphorePermit);

/// After shutdown: lines already received but not started are answered `shutting_down`.
async fn answer_buffered_with_shutting_down(
    frames: &mut FramedRead<ReadHalf, LineCodec>,
    queue: &mpsc::Sender<Queued>,
    budget: &Budget,
) {
    let refusal = ErrorReply::new(
        ErrorCode::ShuttingDown,
        "the daemon is stopping and did not execute this request",
    );
    // Only what is already buffered or arrives within a moment: a stopping daemon does not
    // wait, and a client that keeps sending cannot hold the stop open (a ping every 10 ms
    // kept it from ever finishing when each line restarted the wait).
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, frames.next()).await {
        let id = match frame {
            Frame::Line(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Frame::Line(line) => request::decode(&line).map_or_else(|r| r.id, |e| e.id),
            Frame::TooLarge => None,
        };
        let line = error_line(&id, &refusal);
        let Some(permit) = budget.take(line.len()).await else {
            return;
        };
        if queue.send((Pending::Ready(line), permit)).await.is_err() {
            return;
        }
    }
}

/// Finishes pending requests in order and writes their responses. Returns the write half for a
/// `watch` that follows.
async fn write_responses(
    write: WriteHalf,
    service: Service,
    mut pending: mpsc::Receiver<Queued>,
    timeout: Duration,
    peer: Peer,
) -> Result<BufWriter<WriteHalf>, std::io::Error> {
    let mut out = BufWriter::with_capacity(64 * 1024, write);
    let result = async {
        while let Some((next, permit)) = pending.recv().await {
            let answer = service.finish(next).await;
            write_answer(&mut out, &answer, timeout).await?;
            drop(permit);
            if pending.is_empty() {
                write_timed(&mut out, &[], timeout).await?;
            }
        }
        write_timed(&mut out, &[], timeout).await
    }
    .await;
    if let Err(e) = &result {
        if e.kind() == std::io::ErrorKind::TimedOut {
            crate::logging::limited_warn(
                "write-timeout",
                format_args!(
                    "closed the connection of {peer}: it read nothing for {timeout:?} (writeTimeoutMs) while answers waited"
                ),
            );
        }
    }
    result.map(|()| out)
}

/// Writes an answer, a spliced one piece by piece from the rooms' own bytes.
async fn write_answer<W: AsyncWrite + Unpin>(
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
pub async fn write_timed<W: AsyncWrite + Unpin>(
    out: &mut W,
    mut bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "write timeout");
    if bytes.is_empty() {
        return tokio::time::timeout(timeout, out.flush())
            .await
            .map_err(|_| timed_out())?;
    }
    while !bytes.is_empty() {
        match tokio::time::timeout(timeout, out.write(bytes)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timed_out()),
        }
    }
    Ok(())
}
