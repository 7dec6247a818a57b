//! One client for both peers: the daemon's NDJSON and Redis's RESP, over a Unix socket.
//!
//! Both go through the same buffered tokio stream and the same send/receive loop, so the
//! comparison measures the servers, not two different clients.

use std::io;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
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
    line: Vec<u8>,
}

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
            line: Vec::with_capacity(1024),
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
                self.line.clear();
                if self.reader.read_until(b'\n', &mut self.line).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let ok = self.line.windows(9).take(64).any(|w| w == b"\"ok\":true");
                if !ok {
                    return Err(io::Error::other(
                        String::from_utf8_lossy(&self.line).into_owned(),
                    ));
                }
                Ok(())
            }
            Proto::Resp => self.recv_resp().await,
        }
    }

    /// The next reply line, for callers that need its content (NDJSON only).
    pub async fn recv_line(&mut self) -> io::Result<Vec<u8>> {
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line).await?;
        Ok(self.line.clone())
    }

    async fn recv_resp(&mut self) -> io::Result<()> {
        let mut pending = 1usize;
        while pending > 0 {
            pending -= 1;
            self.line.clear();
            if self.reader.read_until(b'\n', &mut self.line).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let number = || {
                std::str::from_utf8(&self.line[1..self.line.len().saturating_sub(2)])
                    .ok()
                    .and_then(|n| n.parse::<i64>().ok())
                    .unwrap_or(-1)
            };
            match self.line.first() {
                Some(b'+' | b':') => {}
                Some(b'$') => {
                    let len = number();
                    if len >= 0 {
                        let mut skip = vec![0u8; len as usize + 2];
                        self.reader.read_exact(&mut skip).await?;
                    }
                }
                Some(b'*') => pending += number().max(0) as usize,
                _ => {
                    return Err(io::Error::other(
                        String::from_utf8_lossy(&self.line).into_owned(),
                    ))
                }
            }
        }
        Ok(())
    }
}
