//! One client for both peers: the daemon's NDJSON and Redis's RESP, over a Unix socket.
//!
//! Both go through the same buffered tokio stream and the same send/receive loop, and both read
//! a reply the same lean way, as `redis-benchmark` does: copy its first line (at most 64 bytes
//! of it for NDJSON, the header for RESP), check that it is not an error, and skip the rest in
//! the read buffer without copying or parsing it. So the client spends about the same CPU per
//! reply on either protocol, and the comparison measures the servers. The bench prints the
//! client's CPU per request for both in every row, and checks this client against
//! `redis-benchmark` on the same Redis (`check.rs`).

use std::io;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Ndjson,
    Resp,
}

pub struct Conn {
    proto: Proto,
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    /// The start of the reply being read (what is checked); the rest is skipped.
    head: Vec<u8>,
    /// Bytes of replies read so far (to check that both peers answer alike).
    received: usize,
}

/// How much of an NDJSON reply is looked at: `"ok":true` comes first in every reply.
const NDJSON_HEAD: usize = 64;

/// A RESP command: `*N` then `$len arg` for each argument.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// An NDJSON request line.
pub fn ndjson(value: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).expect("encode request");
    out.push(b'\n');
    out
}

impl Conn {
    pub async fn connect(path: &Path, proto: Proto) -> io::Result<Conn> {
        let (read, write) = UnixStream::connect(path).await?.into_split();
        Ok(Conn {
            proto,
            reader: BufReader::with_capacity(256 * 1024, read),
            writer: BufWriter::with_capacity(256 * 1024, write),
            head: Vec::with_capacity(NDJSON_HEAD + 64),
            received: 0,
        })
    }

    pub async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.writer.write_all(request).await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.writer.flush().await
    }

    /// Reads one reply; an error reply is an `io::Error` (a benchmark must not count failures).
    pub async fn recv(&mut self) -> io::Result<()> {
        match self.proto {
            Proto::Ndjson => {
                self.read_line(NDJSON_HEAD).await?;
                if memchr::memmem::find(&self.head, b"\"ok\":true").is_none() {
                    return Err(io::Error::other(
                        String::from_utf8_lossy(&self.head).into_owned(),
                    ));
                }
                Ok(())
            }
            Proto::Resp => self.recv_resp().await,
        }
    }

    /// Reads one reply as [`Conn::recv`] does and returns its length in bytes.
    pub async fn recv_len(&mut self) -> io::Result<usize> {
        let before = self.received;
        self.recv().await?;
        Ok(self.received - before)
    }

    /// The next reply line whole, for callers that check its content (NDJSON only).
    pub async fn recv_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line)
    }

    /// Reads up to and including the next `\n`, keeping at most `keep` bytes of it in `head`.
    async fn read_line(&mut self, keep: usize) -> io::Result<()> {
        self.head.clear();
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let (used, done) = match memchr::memchr(b'\n', buf) {
                Some(end) => (end + 1, true),
                None => (buf.len(), false),
            };
            let room = keep.saturating_sub(self.head.len()).min(used);
            self.head.extend_from_slice(&buf[..room]);
            self.reader.consume(used);
            self.received += used;
            if done {
                return Ok(());
            }
        }
    }

    /// Skips `n` bytes of the reply without copying them.
    async fn skip(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let used = buf.len().min(n);
            self.reader.consume(used);
            self.received += used;
            n -= used;
        }
        Ok(())
    }

    /// The number after a RESP header's type byte (`$5120\r\n` -> 5120).
    fn header_number(&self) -> i64 {
        let digits = self.head.get(1..).unwrap_or_default();
        let digits = digits.strip_suffix(b"\r\n").unwrap_or(digits);
        let (negative, digits) = match digits.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, digits),
        };
        let n = digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d.wrapping_sub(b'0')));
        if negative {
            -n
        } else {
            n
        }
    }

    async fn recv_resp(&mut self) -> io::Result<()> {
        let mut pending = 1usize;
        while pending > 0 {
            pending -= 1;
            // A header line is short; an error line is kept whole enough to report.
            self.read_line(256).await?;
            match self.head.first() {
                Some(b'+' | b':') => {}
                Some(b'$') => {
                    let len = self.header_number();
                    if len >= 0 {
                        self.skip(len as usize + 2).await?;
                    }
                }
                Some(b'*') => pending += self.header_number().max(0) as usize,
                _ => {
                    return Err(io::Error::other(
                        String::from_utf8_lossy(&self.head).into_owned(),
                    ))
                }
            }
        }
        Ok(())
    }
}
