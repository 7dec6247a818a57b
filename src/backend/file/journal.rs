//! The on-disk formats the daemon keeps beside the room files: the journal and the index.
//!
//! Journal (`.journal-<generation>`): a sequence of records, each
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload: JSON [lsn, change]]`.
//! Records are only appended; a batch is appended in one write and synced once. Reading stops at
//! the first record that is incomplete or fails its checksum: that is where a crash cut an
//! unacknowledged batch short.
//!
//! Index (`.index`, and `.index.next` while a fold is in progress): JSON with, for every room,
//! its file, revision, last change time, the LSN of the last change its file holds, and the
//! length and CRC-32 of the file as the daemon wrote it (to tell the daemon's own writes from
//! edits by hand).

use serde::{Deserialize, Serialize};

use crate::room::change::Change;
use crate::room::{EpochMillis, Revision, RoomName};

/// A log sequence number: every change gets the next one, across restarts.
pub type Lsn = u64;

const HEADER: usize = 8;

/// Encodes one record onto `out`.
pub fn encode_record(out: &mut Vec<u8>, lsn: Lsn, change: &Change) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    match change {
        // A saved room is already compact JSON: splice it instead of re-encoding it.
        Change::Put {
            name,
            revision,
            at,
            room,
        } => {
            let name = serde_json::to_string(name.as_str()).unwrap_or_default();
            out.extend_from_slice(
                format!("[{lsn},{{\"t\":\"put\",\"name\":{name},\"revision\":{revision},\"at\":{at},\"room\":").as_bytes(),
            );
            out.extend_from_slice(room);
            out.extend_from_slice(b"}]");
        }
        // Writing plain data into a Vec cannot fail.
        _ => {
            let _ = serde_json::to_writer(&mut *out, &(lsn, change));
        }
    }
    let payload = &out[start + HEADER..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// The records of a journal, and where the valid part ends.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<(Lsn, Change)>,
    /// Bytes of whole, valid records; anything after is a torn tail.
    pub valid_len: usize,
}

/// Decodes every whole record of `bytes`, stopping at the first damaged one.
pub fn decode_records(bytes: &[u8]) -> Decoded {
    let mut decoded = Decoded::default();
    let mut rest = bytes;
    while rest.len() >= HEADER {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(HEADER..HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(record) = serde_json::from_slice::<(Lsn, Change)>(payload) else {
            break;
        };
        decoded.records.push(record);
        decoded.valid_len += HEADER + len;
        rest = &rest[HEADER + len..];
    }
    decoded
}

/// What the daemon knows of one room file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub name: RoomName,
    pub file: String,
    pub revision: Revision,
    pub updated_at: EpochMillis,
    /// The last change the file holds.
    pub lsn: Lsn,
    pub len: u64,
    pub crc: u32,
}

/// The index file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Format version, for future upgrades.
    pub format: u32,
    /// Every change up to this LSN is in the room files.
    pub lsn: Lsn,
    pub rooms: Vec<IndexEntry>,
}

pub const INDEX_FORMAT: u32 = 1;

/// One index entry as written: the fields of an [`IndexEntry`], borrowed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntryRef<'a> {
    pub name: &'a RoomName,
    pub file: &'a str,
    pub revision: Revision,
    pub updated_at: EpochMillis,
    pub lsn: Lsn,
    pub len: u64,
    pub crc: u32,
}

/// Writes an index an entry at a time: the same bytes as serializing an [`Index`], without a
/// copy of every room's name and file name (a fold of 100,000 rooms held 15 MB of them).
pub struct IndexWriter {
    out: Vec<u8>,
    entries: usize,
}

impl IndexWriter {
    /// An index of every change up to `lsn`, for about `rooms` rooms.
    pub fn new(lsn: Lsn, rooms: usize) -> IndexWriter {
        let mut out = Vec::with_capacity(64 + rooms * 128);
        out.extend_from_slice(b"{\"format\":");
        out.extend_from_slice(INDEX_FORMAT.to_string().as_bytes());
        out.extend_from_slice(b",\"lsn\":");
        out.extend_from_slice(lsn.to_string().as_bytes());
        out.extend_from_slice(b",\"rooms\":[");
        IndexWriter { out, entries: 0 }
    }

    pub fn push(&mut self, entry: &IndexEntryRef<'_>) {
        if self.entries > 0 {
            self.out.push(b',');
        }
        // Writing plain fields into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, entry);
        self.entries += 1;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"]}");
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_written_an_entry_at_a_time_is_the_index_serialized() {
        let entries: Vec<IndexEntry> = ["a", "caf\u{e9} \"2\"", "z"]
            .iter()
            .enumerate()
            .map(|(i, name)| IndexEntry {
                name: RoomName::new(name).unwrap(),
                file: format!("~{i}.json"),
                revision: i as u64 + 1,
                updated_at: 1_733_450_000_000 + i as i64,
                lsn: u64::MAX - i as u64,
                len: 5_000 + i as u64,
                crc: u32::MAX - i as u32,
            })
            .collect();
        for count in [0, 1, 3] {
            let index = Index {
                format: INDEX_FORMAT,
                lsn: 77,
                rooms: entries[..count].to_vec(),
            };
            let mut writer = IndexWriter::new(77, count);
            for e in &index.rooms {
                writer.push(&IndexEntryRef {
                    name: &e.name,
                    file: &e.file,
                    revision: e.revision,
                    updated_at: e.updated_at,
                    lsn: e.lsn,
                    len: e.len,
                    crc: e.crc,
                });
            }
            let written = writer.finish();
            assert_eq!(written, serde_json::to_vec(&index).unwrap());
            let read: Index = serde_json::from_slice(&written).unwrap();
            assert_eq!(read.rooms, index.rooms);
        }
    }

    fn change(n: u64) -> Change {
        Change::Progress {
            name: RoomName::new("a").unwrap(),
            revision: n,
            at: 1,
            user_name: "u".into(),
            progress: n,
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut_off() {
        let mut bytes = Vec::new();
        for n in 1..=3 {
            encode_record(&mut bytes, n, &change(n));
        }
        let whole = bytes.len();
        encode_record(&mut bytes, 4, &change(4));
        for cut in whole..bytes.len() {
            let decoded = decode_records(&bytes[..cut]);
            assert_eq!(decoded.records.len(), 3);
            assert_eq!(decoded.valid_len, whole);
        }
        let decoded = decode_records(&bytes);
        assert_eq!(decoded.records.len(), 4);
        assert_eq!(decoded.records[3], (4, change(4)));
    }

    #[test]
    fn a_put_record_decodes_to_the_same_room() {
        let put = Change::Put {
            name: RoomName::new("a \"b\"").unwrap(),
            revision: 3,
            at: 4,
            room: bytes::Bytes::from_static(br#"{"roomName":"a \"b\"","z":[1,{"y":null}]}"#),
        };
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 9, &put);
        assert_eq!(decode_records(&bytes).records, vec![(9, put)]);
    }

    #[test]
    fn a_flipped_bit_ends_the_valid_part() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 1, &change(1));
        let first = bytes.len();
        let put = Change::Put {
            name: RoomName::new("b").unwrap(),
            revision: 1,
            at: 2,
            room: bytes::Bytes::from_static(b"{}"),
        };
        encode_record(&mut bytes, 2, &put);
        let last = bytes.len() - 2;
        bytes[last] ^= 0x20;
        let decoded = decode_records(&bytes);
        assert_eq!(decoded.records.len(), 1);
        assert_eq!(decoded.valid_len, first);
    }
}
