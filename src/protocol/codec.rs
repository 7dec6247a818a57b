//! Framing: bytes in, bounded lines out (PROTOCOL.md section 1).
//!
//! This module only cuts the byte stream at `\n`. It never parses JSON and never fails on
//! content: an over-long line becomes [`Frame::TooLarge`] and the rest of it is skipped without
//! being buffered, so one bad client line costs at most `max_line` bytes of memory and the
//! connection carries on. (tokio-util's `LinesCodec` would end the stream after such an error,
//! and insists on UTF-8, which we want reported as `bad_json` instead.)

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// One unit of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its `\n` or `\r\n`. May be empty.
    Line(BytesMut),
    /// A line longer than the limit; its bytes were discarded.
    TooLarge,
}

/// Room for at least this much is made before every read. Without it the read buffer's spare
/// room shrank to what the last line left, and a 5.5 KB `saveRoom` line took two reads (and a
/// new buffer) every time.
const READ_SPARE: usize = 16 * 1024;

/// Splits input into lines of at most `max_line` bytes (terminator not counted).
#[derive(Debug)]
pub struct LineCodec {
    max_line: usize,
    /// How far the buffer has been searched for `\n`, so a slow line is scanned once.
    scanned: usize,
    /// Inside an over-long line: drop bytes until its `\n`.
    discarding: bool,
}

impl LineCodec {
    pub fn new(max_line: usize) -> LineCodec {
        LineCodec {
            max_line,
            scanned: 0,
            discarding: false,
        }
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        loop {
            if self.discarding {
                match memchr(buf) {
                    Some(pos) => {
                        buf.advance(pos + 1);
                        self.discarding = false;
                        return Ok(Some(Frame::TooLarge));
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                }
            }
            // The line may end in `\r\n`, so allow one byte past the limit before judging.
            let limit = self.max_line.saturating_add(2).min(buf.len());
            match memchr(&buf[self.scanned..limit]) {
                Some(offset) => {
                    let end = self.scanned + offset;
                    self.scanned = 0;
                    let mut line = buf.split_to(end + 1);
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    if line.len() > self.max_line {
                        return Ok(Some(Frame::TooLarge));
                    }
                    return Ok(Some(Frame::Line(line)));
                }
                None if buf.len() > self.max_line.saturating_add(1) => {
                    // No terminator within the limit: this line is too large. Skip it up to
                    // its terminator, which may already be in the buffer or arrive later.
                    self.scanned = 0;
                    self.discarding = true;
                }
                None => {
                    self.scanned = limit;
                    // More must be read. The lines cut from this buffer are gone by now, so
                    // an empty buffer gets its whole allocation back instead of a new one.
                    if buf.capacity() - buf.len() < READ_SPARE {
                        buf.reserve(READ_SPARE);
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        // A last line without a terminator still counts as a request.
        if self.discarding {
            self.discarding = false;
            buf.clear();
            return Ok(Some(Frame::TooLarge));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        self.scanned = 0;
        if buf.len() > self.max_line {
            buf.clear();
            return Ok(Some(Frame::TooLarge));
        }
        let line = buf.split();
        Ok(Some(Frame::Line(line)))
    }
}

fn memchr(haystack: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', haystack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Feed byte by byte: framing must not depend on how reads are split.
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                out.push(frame);
            }
        }
        while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
            out.push(frame);
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(BytesMut::from(s))
    }

    #[test]
    fn a_read_always_has_room_for_a_whole_room_line() {
        let mut codec = LineCodec::new(1 << 20);
        let mut buf = BytesMut::with_capacity(8 * 1024);
        for _ in 0..3 {
            buf.extend_from_slice(&[b'x'; 5500]);
            buf.extend_from_slice(b"\n");
            let line = codec.decode(&mut buf).unwrap();
            assert!(matches!(line, Some(Frame::Line(ref l)) if l.len() == 5500));
            drop(line);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.capacity() - buf.len() >= READ_SPARE);
        }
    }

    #[test]
    fn splits_lines_and_strips_crlf() {
        let mut codec = LineCodec::new(16);
        let frames = decode_all(&mut codec, b"a\r\n\nbc\nlast");
        assert_eq!(frames, vec![line("a"), line(""), line("bc"), line("last")]);
    }

    #[test]
    fn lines_at_the_limit_pass_and_longer_ones_are_skipped() {
        let mut codec = LineCodec::new(4);
        let frames = decode_all(
            &mut codec,
            b"abcd\nabcd\r\nabcde\nok\nabcdefghijklmnop\r\nz\n",
        );
        assert_eq!(
            frames,
            vec![
                line("abcd"),
                line("abcd"),
                Frame::TooLarge,
                line("ok"),
                Frame::TooLarge,
                line("z")
            ]
        );
    }

    #[test]
    fn an_oversized_line_arriving_in_one_read_ends_at_its_terminator() {
        let mut codec = LineCodec::new(4);
        let mut buf = BytesMut::from(
            &b"abcdefgh
ok
"[..],
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::TooLarge));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("ok")));
    }

    #[test]
    fn an_oversized_line_is_not_buffered() {
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::new();
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'x'; 100]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.len() <= 100);
        }
        buf.extend_from_slice(b"\nnext\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::TooLarge));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("next")));
    }
}
