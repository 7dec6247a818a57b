//! A room's JSON kept compressed (LZ4): the form of an idle room (the compaction pass in
//! `cold.rs` decides which rooms, a `RoomEntry` holds it). A leaf: it knows bytes, not rooms.

use std::sync::Arc;

use bytes::Bytes;

use super::RoomName;

/// A room's compact JSON, LZ4-compressed, with its length in front (lz4_flex's block format).
#[derive(Debug, Clone)]
pub struct Packed(Arc<[u8]>);

impl Packed {
    /// `json` packed, or `None` when that would save less than a quarter of it (a room of
    /// random bytes is kept as it is: unpacking it would buy nothing).
    pub fn of(json: &[u8]) -> Option<Packed> {
        let packed = lz4_flex::compress_prepend_size(json);
        (packed.len() < json.len() - json.len() / 4).then(|| Packed(packed.into()))
    }

    /// What [`Packed::as_bytes`] gave, kept again (`.cache`, which checks it with a CRC).
    pub fn from_bytes(bytes: &[u8]) -> Packed {
        Packed(bytes.into())
    }

    /// The packed form itself: the JSON's length, then its LZ4 block.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON again. Only the compaction pass packs, so unpacking cannot fail unless memory was
    /// damaged; then the room reads as empty and the error names it.
    pub fn unpack(&self, name: &RoomName) -> Bytes {
        match lz4_flex::decompress_size_prepended(&self.0) {
            Ok(json) => Bytes::from(json.into_boxed_slice()),
            Err(e) => {
                tracing::error!(
                    "room {}: its compressed form in memory does not unpack ({e}); \
                     restart the daemon to read the room from storage again",
                    super::quoted(name.as_str())
                );
                Bytes::new()
            }
        }
    }

    /// The length of the JSON it holds (the 4-byte little-endian prefix).
    pub fn json_len(&self) -> usize {
        match self.0.get(..4) {
            Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
            _ => 0,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
