//! `protocol::codec::LineCodec` against a model of PROTOCOL.md section 1, fed in arbitrary chunks.
//!
//! Input: byte 0 picks `max_line` (1..=64), byte 1 seeds the chunk sizes, the rest is the stream.
//! The codec must produce exactly what the model does, whatever the chunking: lines split at
//! `\n`, one `\r` before the `\n` removed, a line longer than `max_line` (terminator not counted)
//! reported as `TooLarge`, a last unterminated line reported at EOF. It must never hold more than
//! `max_line + 1` bytes of an unfinished line (an over-long line is not buffered).
//!
//! Known bug (reported, fix pending in `LineCodec::decode_eof`): a last, unterminated line of
//! exactly `max_line + 1` bytes comes back as a `Line` instead of `TooLarge`.
//! `TOLERATE_EOF_OFF_BY_ONE` lets the smoke run pass meanwhile; set it to `false` with the fix.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use moviematch_storaged::protocol::codec::{Frame, LineCodec};
use tokio_util::codec::Decoder;

#[derive(Debug, PartialEq, Eq)]
enum Want {
    Line(Vec<u8>),
    TooLarge,
}

fn model(stream: &[u8], max_line: usize) -> Vec<Want> {
    let mut out = Vec::new();
    let mut pieces: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let last = pieces.pop().unwrap_or_default();
    for piece in pieces {
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        out.push(if line.len() > max_line {
            Want::TooLarge
        } else {
            Want::Line(line.to_vec())
        });
    }
    // The last line has no terminator, so nothing is stripped from it.
    if !last.is_empty() {
        out.push(if last.len() > max_line {
            Want::TooLarge
        } else {
            Want::Line(last.to_vec())
        });
    }
    out
}

/// See the module docs: remove with the fix in `decode_eof`.
const TOLERATE_EOF_OFF_BY_ONE: bool = false;

fn got(frame: Frame) -> Want {
    match frame {
        Frame::Line(line) => Want::Line(line.to_vec()),
        Frame::TooLarge => Want::TooLarge,
    }
}

fuzz_target!(|data: &[u8]| {
    let [max, seed, stream @ ..] = data else {
        return;
    };
    let max_line = usize::from(*max % 64) + 1;
    let mut codec = LineCodec::new(max_line);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut rng = u32::from(*seed) | 1;
    while !rest.is_empty() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = (rng as usize % (2 * max_line + 4)).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(frame) = codec.decode(&mut buf).expect("decode never fails") {
            frames.push(got(frame));
        }
        assert!(
            buf.len() <= max_line + 1,
            "{} bytes buffered with max_line {max_line}",
            buf.len()
        );
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decode_eof never fails") {
        frames.push(got(frame));
    }
    assert!(buf.is_empty(), "bytes left after EOF");
    let mut want = model(stream, max_line);
    if TOLERATE_EOF_OFF_BY_ONE && !stream.ends_with(b"\n") {
        if let (Some(Want::Line(line)), Some(Want::TooLarge)) = (frames.last(), want.last()) {
            if line.len() == max_line + 1 {
                *want.last_mut().expect("a last frame") = Want::Line(line.clone());
            }
        }
    }
    assert_eq!(frames, want, "max_line {max_line}");
});
