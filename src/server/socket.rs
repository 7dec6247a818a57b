//! A connection's socket, watched by the runtime for readability only.
//!
//! tokio's `UnixStream` asks epoll for readable and writable events at once. Every time a
//! client then reads an answer, the kernel's write-space callback marks the daemon's socket
//! writable and wakes a worker parked in `epoll_wait`, although no writer was waiting: one
//! wake-up per answer for nothing (and the callback's CPU is spent in the client). Like Redis,
//! which watches writability only while output is pending, the writer here writes straight to
//! the socket; only when it is full does it register a duplicate of the descriptor for
//! writability, and drops that registration once a write goes through.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

/// Splits an accepted connection into the halves the reader and the writer own.
pub fn split(stream: UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    // `into_std` takes the stream out of tokio's registration and leaves it non-blocking.
    // SAFETY (of the registration): the `AsyncFd` owns the stream, so the descriptor stays open
    // and the same for its whole life.
    let stream = Arc::new(unsafe {
        AsyncFd::register_with_interest(stream.into_std()?, Interest::READABLE)
    }?);
    Ok((
        ReadHalf(stream.clone()),
        WriteHalf {
            stream,
            writable: None,
        },
    ))
}

/// The reading side: the runtime wakes it when requests arrive.
pub struct ReadHalf(Arc<AsyncFd<StdStream>>);

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let read = guard.try_io(|stream| {
                // Into the buffer's uninitialised tail directly: the codec's buffer is many
                // KiB, and zeroing it before every read would cost more than the read.
                // SAFETY: `read(2)` writes at most `unfilled.len()` bytes into the slice, and
                // only the `n` bytes it reports are marked initialised.
                let unfilled = unsafe { buf.unfilled_mut() };
                let n = unsafe {
                    libc::read(
                        stream.as_raw_fd(),
                        unfilled.as_mut_ptr().cast(),
                        unfilled.len(),
                    )
                };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            });
            match read {
                Ok(Ok(n)) => {
                    // A read that did not fill the buffer took everything the socket held: the
                    // next read would only fail with EAGAIN (one wasted system call per request
                    // at one request a wake). Forgetting the readiness makes the next poll wait
                    // for epoll instead; data that arrived meanwhile has already set it again.
                    if n > 0 && n < buf.remaining() {
                        guard.clear_ready();
                    }
                    // SAFETY: `read(2)` initialised these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: the guard cleared the readiness; wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

/// The writing side: writes without the runtime, and waits on it only when the socket is full.
pub struct WriteHalf {
    stream: Arc<AsyncFd<StdStream>>,
    /// A duplicate descriptor registered for writability while a write waits for room.
    writable: Option<AsyncFd<OwnedFd>>,
}

impl WriteHalf {
    fn write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut stream: &StdStream = self.stream.get_ref();
        loop {
            match stream.write(bytes) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => return result,
            }
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Some(writable) = &self.writable {
                let mut guard = ready!(writable.poll_write_ready(cx))?;
                let Ok(result) = guard.try_io(|_| self.write_now(bytes)) else {
                    // Still full: the guard cleared the readiness; wait for the next edge.
                    continue;
                };
                drop(guard);
                // Room again: stop watching, so the client's reads wake nobody.
                self.writable = None;
                return Poll::Ready(result);
            }
            match self.write_now(bytes) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Registered after the failed write: epoll reports a socket that became
                    // writable in between at once, so no wake-up is lost.
                    let duplicate = self.stream.get_ref().as_fd().try_clone_to_owned()?;
                    // SAFETY: the `AsyncFd` owns the duplicate, which stays open while registered.
                    let writable =
                        unsafe { AsyncFd::register_with_interest(duplicate, Interest::WRITABLE) }?;
                    self.writable = Some(writable);
                }
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here (the caller's `BufWriter` is).
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.get_ref().shutdown(std::net::Shutdown::Write))
    }
}
