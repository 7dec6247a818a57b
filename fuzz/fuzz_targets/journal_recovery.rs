//! Journal recovery through the public API: a `FileBackend` loads a storage directory whose only
//! content is one journal built from the input, and must never panic or fail.
//!
//! Even first byte, *structured*: the rest of the input is a little program that writes valid
//! records (every kind of change, over four rooms) and then damages the journal the way a crash
//! or a bad disk does: the tail cut anywhere, one byte changed anywhere, or a torn record
//! appended. Recovery must return exactly the rooms that replaying the records *before* the
//! first damaged one gives: a prefix of the valid records, never more, never less.
//!
//! Odd first byte, *raw*: the rest is the journal's bytes as they are. Recovery must succeed,
//! and a second start over what the first one left must succeed too.
//!
//! `journal::decode_records` is private; with a `#[doc(hidden)]` re-export this could call it
//! directly, without a directory per run (see fuzz/README.md).
#![no_main]

use std::path::Path;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use moviematch_storaged::backend::file::FileBackend;
use moviematch_storaged::backend::Backend;
use moviematch_storaged::config::Durability;
use moviematch_storaged::room::change::Change;
use moviematch_storaged::room::entry::RoomMap;
use moviematch_storaged::room::RoomName;
use moviematch_storaged::store::apply;
use serde_json::{json, Value};

const NAMES: [&str; 4] = ["movie-night", "a/b", "..", "🎬 x"];

fn encode(out: &mut Vec<u8>, lsn: u64, change: &Change) {
    let payload = serde_json::to_vec(&(lsn, change)).expect("a change encodes");
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

fn room(name: &str, extra: u8) -> Bytes {
    let mut room = json!({
        "roomName": name, "sort": "random", "createdAt": "2025-10-25T20:00:00.000Z",
        "creatorPlexUserId": "1", "creatorPlexUsername": "john"
    });
    if extra % 3 == 1 {
        room["ratings"] = json!({"m0": [["jane", "dislike", 1]]});
    }
    if extra % 3 == 2 {
        room["userProgress"] = json!({"jane": extra});
    }
    Bytes::from(serde_json::to_vec(&room).expect("encode"))
}

/// Valid records from the program, and the byte offset where each one ends.
fn records(program: &mut impl Iterator<Item = u8>) -> (Vec<u8>, Vec<(usize, Change)>) {
    let mut bytes = Vec::new();
    let mut written = Vec::new();
    let mut revision = [0u64; 4];
    for lsn in 1..=24u64 {
        let Some(op) = program.next() else { break };
        if op == 0xff {
            break;
        }
        let arg = program.next().unwrap_or(0);
        let r = usize::from(op >> 4) % NAMES.len();
        let name = RoomName::new(NAMES[r]).expect("a valid name");
        revision[r] += 1;
        let (rev, at) = (revision[r], 1_000 + lsn as i64);
        let change = match op % 4 {
            0 => Change::Put {
                name,
                revision: rev,
                at,
                room: room(NAMES[r], arg),
            },
            1 => Change::Rate {
                name,
                revision: rev,
                at,
                media_id: format!("m{}", arg % 4),
                user_name: format!("u{}", arg >> 6),
                rating: if arg & 8 == 0 { "like" } else { "dislike" }.into(),
                timestamp: u64::from(arg),
            },
            2 => Change::Progress {
                name,
                revision: rev,
                at,
                user_name: format!("u{}", arg % 3),
                progress: u64::from(arg),
            },
            _ => {
                revision[r] = 0;
                Change::Delete { name }
            }
        };
        encode(&mut bytes, lsn, &change);
        written.push((bytes.len(), change));
    }
    (bytes, written)
}

type Rooms = Vec<(String, u64, Value)>;

fn rooms_of(map: &RoomMap) -> Rooms {
    map.values()
        .map(|e| (e.name.to_string(), e.revision, e.to_value()))
        .collect()
}

fn load(dir: &Path) -> Rooms {
    let mut backend = FileBackend::new(dir, Durability::Strict);
    let rooms = backend
        .load()
        .expect("recovery never fails on a damaged journal");
    let snapshot = moviematch_storaged::room::entry::Snapshot {
        rooms: rooms.clone(),
    };
    backend.close(&snapshot).expect("a clean stop");
    rooms_of(&rooms)
}

fn scratch() -> tempfile::TempDir {
    // tmpfs when there is one: recovery fsyncs, and a fuzzer runs it thousands of times.
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("mm-fuzz-").to_owned();
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("a temporary directory")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tmp = scratch();
    let dir = tmp.path().join("rooms");
    std::fs::create_dir(&dir).expect("mkdir");
    let journal = dir.join(".journal-1");
    if mode % 2 == 1 {
        std::fs::write(&journal, rest).expect("write the journal");
        // Not compared: a CRC-valid record whose body is not a room (which the daemon never
        // writes) is quarantined at the second start.
        load(&dir);
        load(&dir);
        return;
    }
    let mut program = rest.iter().copied();
    let (mut bytes, written) = records(&mut program);
    let pos = |program: &mut std::vec::IntoIter<u8>, len: usize| {
        let hi = usize::from(program.next().unwrap_or(0));
        let lo = usize::from(program.next().unwrap_or(0));
        (hi << 8 | lo) % (len + 1)
    };
    let mut program: std::vec::IntoIter<u8> = program.collect::<Vec<_>>().into_iter();
    // The byte offset from which nothing may be applied.
    let damaged_from = match program.next().unwrap_or(0) % 4 {
        0 => bytes.len(),
        1 => {
            let cut = pos(&mut program, bytes.len());
            bytes.truncate(cut);
            cut
        }
        2 if !bytes.is_empty() => {
            let at = pos(&mut program, bytes.len() - 1);
            bytes[at] ^= program.next().unwrap_or(0).max(1);
            at
        }
        _ => {
            // A torn record: its header promises more bytes than follow.
            let tail: Vec<u8> = program.collect();
            let end = bytes.len();
            bytes.extend_from_slice(&(tail.len() as u32 + 1).to_le_bytes());
            bytes.extend_from_slice(&[0x5a; 4]);
            bytes.extend_from_slice(&tail);
            end
        }
    };
    std::fs::write(&journal, &bytes).expect("write the journal");
    let mut expected = RoomMap::new();
    for (end, change) in &written {
        if *end > damaged_from {
            break;
        }
        apply::replay(&mut expected, change);
    }
    let expected = rooms_of(&expected);
    assert_eq!(
        load(&dir),
        expected,
        "recovery applies exactly the undamaged prefix"
    );
    assert_eq!(load(&dir), expected, "a second start finds the same rooms");
});
