//! `.cache`: what start-up learned from each room file, so the next start need not parse it.
//!
//! Checking and minifying a room file is most of start-up (about 2 s for 100,000 files of
//! 5 KB on two cores). The cache keeps, for each room file, its length and CRC-32 and what
//! [`PreparedRoom::from_json`] made of it: the compact JSON (packed, when the room was, as
//! start-up keeps it: see [`LoadedRoom`]), the room's facts and its rating count. At the next start a room file whose length and CRC-32 match its entry takes the
//! entry instead of being parsed; any other file is parsed as usual. The room files stay the
//! truth: the cache is only ever used for the exact bytes it was made from, it can be deleted
//! at any time, and a damaged one is ignored from the first bad record on.
//!
//! It is written after a start that parsed any file (or found entries for files that changed
//! or went away), on a thread of its own, to a temporary file renamed into place; it is not
//! synced (a cache lost to a power cut only costs the next start its speed). It holds no room
//! the journal changed: those files are rewritten by the next fold anyway.
//!
//! Format: `MAGIC`, then records `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`,
//! each payload a JSON [`Header`] line, `\n`, then the room's compact JSON, or its packed form
//! ([`Packed::as_bytes`]) when the header says `packed`. Bump `MAGIC` when what `from_json`
//! makes of a file changes, or how it is stored (version 1 held no packed rooms, and a daemon
//! that knew only it must not take packed bytes for JSON).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::fs::{FileStat, Fs};
use super::par::par_map;
use super::{FileRecord, TMP_PREFIX};
use crate::room::entry::{LoadedRoom, RoomFacts, RoomMap, RoomText};
use crate::room::packed::Packed;
#[cfg(doc)]
use crate::room::prepare::PreparedRoom;
use crate::room::{EpochMillis, RoomName};

pub(super) const CACHE: &str = ".cache";
const MAGIC: &[u8] = b"moviematch-storaged room cache 2\n";
const RECORD_HEADER: usize = 8;
/// A stat this close to the time its file was read is not trusted: file times come from a
/// clock that ticks every few milliseconds...
const FINE_RACY_NS: i128 = 100_000_000;
/// ...or, where times are whole seconds, every 1 or 2 s.
const COARSE_RACY_NS: i128 = 3_000_000_000;

/// The time before which a file's last change must lie for its stat to prove later that the
/// file is unchanged. Taken from the file system's own clock (the times of a file created
/// now), so a clock that differs from the system's cannot fool it; call it before reading the
/// stats.
pub(super) fn trust_stats_before(fs: &dyn Fs, dir: &Path) -> i128 {
    let [_, probe] = temp_files(dir);
    let now = fs
        .open_append(&probe)
        .ok()
        .and_then(|file| {
            drop(file);
            fs.stat(&probe).ok().flatten()
        })
        .map(|s| s.mtime_ns.max(s.ctime_ns));
    let _ = fs.remove(&probe);
    match now {
        Some(now) if now % 1_000_000_000 != 0 => now - FINE_RACY_NS,
        Some(now) => now - COARSE_RACY_NS,
        None => {
            let system = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            system - COARSE_RACY_NS
        }
    }
}
/// How much is read at once.
const READ_CHUNK: usize = 16 << 20;
/// How much is written at once.
const CHUNK: usize = 1 << 20;

/// What the cache says of one file, besides its compact JSON.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header<'a> {
    #[serde(borrow)]
    file: std::borrow::Cow<'a, str>,
    len: u64,
    crc: u32,
    /// The file's stat when start-up read it, if that was safely after its last write.
    stat: Option<Stamp>,
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    rating_count: usize,
    created_at: EpochMillis,
    creator_plex_user_id: Option<String>,
    creator_plex_username: Option<String>,
    password: Option<String>,
    summary_head: String,
    /// The room's JSON follows packed ([`Packed::as_bytes`]).
    packed: bool,
}

/// A [`FileStat`] as the cache stores it.
#[derive(Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
struct Stamp {
    len: u64,
    mtime: i128,
    ctime: i128,
    ino: u64,
}

impl From<FileStat> for Stamp {
    fn from(s: FileStat) -> Stamp {
        Stamp {
            len: s.len,
            mtime: s.mtime_ns,
            ctime: s.ctime_ns,
            ino: s.ino,
        }
    }
}

/// One file's entry, decoded.
struct Entry {
    len: u64,
    crc: u32,
    stat: Option<Stamp>,
    room: LoadedRoom,
}

/// A cache as read at start, by file name.
#[derive(Default)]
pub(super) struct Cache {
    entries: HashMap<String, Entry>,
}

impl Cache {
    /// Reads `dir/.cache`; an empty cache when there is none or it is not one of ours.
    pub fn read(fs: &dyn Fs, dir: &Path) -> Cache {
        let path = dir.join(CACHE);
        match read_entries(fs, &path) {
            Ok(entries) => Cache { entries },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Cache::default(),
            Err(e) => {
                tracing::warn!("not using {} ({e}); its rooms are parsed", path.display());
                Cache::default()
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The room in `file`, if the cache has it and the file's stat shows it has not been
    /// written since: no need to read it.
    pub fn get_by_stat(&self, file: &str, stat: FileStat) -> Option<(u64, u32, LoadedRoom)> {
        let entry = self.entries.get(file)?;
        (entry.stat? == Stamp::from(stat)).then(|| (entry.len, entry.crc, entry.room.clone()))
    }

    /// The room `file` holds, if the cache has it for exactly these bytes (length and CRC-32).
    pub fn get(&self, file: &str, len: u64, crc: u32) -> Option<LoadedRoom> {
        let entry = self.entries.get(file)?;
        ((entry.len, entry.crc) == (len, crc)).then(|| entry.room.clone())
    }
}

/// Every entry of the cache at `path` up to the first damaged one. It is read a part at a time
/// (it is about as large as every room together), each part's records decoded on every core.
fn read_entries(fs: &dyn Fs, path: &Path) -> std::io::Result<HashMap<String, Entry>> {
    let mut reader = fs.open_read(path)?;
    let mut buffer = Vec::with_capacity(READ_CHUNK + 64 * 1024);
    let mut entries = HashMap::new();
    let mut started = false;
    loop {
        let got = (&mut reader)
            .take(READ_CHUNK as u64)
            .read_to_end(&mut buffer)?;
        let mut at = 0;
        if !started {
            if !buffer.starts_with(MAGIC) {
                return Err(std::io::Error::other("not a cache of this version"));
            }
            (at, started) = (MAGIC.len(), true);
        }
        let mut records = Vec::new();
        while let Some(head) = buffer.get(at..at + RECORD_HEADER) {
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let range = at + RECORD_HEADER..at + RECORD_HEADER + len;
            if range.end > buffer.len() {
                break;
            }
            at = range.end;
            records.push((range, crc));
        }
        let decoded = par_map(&records, |(range, crc)| {
            let payload = &buffer[range.clone()];
            Some(
                (crc32fast::hash(payload) == *crc)
                    .then(|| decode(payload))
                    .flatten(),
            )
        });
        for entry in decoded {
            let Some((file, entry)) = entry else {
                return damaged(path, entries);
            };
            entries.insert(file, entry);
        }
        buffer.drain(..at);
        if got < READ_CHUNK {
            break;
        }
    }
    if !buffer.is_empty() {
        return damaged(path, entries);
    }
    Ok(entries)
}

fn damaged(
    path: &Path,
    entries: HashMap<String, Entry>,
) -> std::io::Result<HashMap<String, Entry>> {
    tracing::warn!(
        "{} is damaged after {} entries; the other rooms are parsed",
        path.display(),
        entries.len()
    );
    Ok(entries)
}

fn decode(payload: &[u8]) -> Option<(String, Entry)> {
    let end = memchr::memchr(b'\n', payload)?;
    let header: Header = serde_json::from_slice(&payload[..end]).ok()?;
    let text = &payload[end + 1..];
    let room = LoadedRoom {
        name: RoomName::new(&header.name).ok()?,
        facts: Arc::new(RoomFacts {
            created_at: header.created_at,
            creator_plex_user_id: header.creator_plex_user_id,
            creator_plex_username: header.creator_plex_username,
            password: header.password,
            summary_head: header.summary_head,
        }),
        // An allocation of its own, so the cache file's read buffer is freed after start-up.
        text: if header.packed {
            RoomText::Packed(Packed::from_bytes(text))
        } else {
            RoomText::Json(Bytes::copy_from_slice(text))
        },
        rating_count: header.rating_count,
    };
    let entry = Entry {
        len: header.len,
        crc: header.crc,
        stat: header.stat,
        room,
    };
    Some((header.file.into_owned(), entry))
}

/// Writes a new cache of `rooms` (each with its file as start-up read it) in place of the old.
pub(super) fn write(
    fs: &dyn Fs,
    dir: &Path,
    rooms: &RoomMap,
    files: &[(RoomName, FileRecord)],
    trust_before: i128,
) -> std::io::Result<usize> {
    let [tmp, _] = temp_files(dir);
    let result = write_to(fs, &tmp, rooms, files, trust_before)
        .and_then(|count| fs.rename(&tmp, &dir.join(CACHE)).map(|()| count));
    if result.is_err() {
        let _ = fs.remove(&tmp);
    }
    result
}

/// The temporary files this module may leave behind when the disk fails (removed at close).
pub(super) fn temp_files(dir: &Path) -> [PathBuf; 2] {
    let pid = std::process::id();
    [
        dir.join(format!("{TMP_PREFIX}cache-{pid}")),
        dir.join(format!("{TMP_PREFIX}clock-{pid}")),
    ]
}

fn write_to(
    fs: &dyn Fs,
    tmp: &Path,
    rooms: &RoomMap,
    files: &[(RoomName, FileRecord)],
    trust_before: i128,
) -> std::io::Result<usize> {
    let _ = fs.remove(tmp);
    let mut out = fs.open_append(tmp)?;
    let mut buffer = Vec::with_capacity(CHUNK + 64 * 1024);
    buffer.extend_from_slice(MAGIC);
    let mut count = 0;
    for (name, record) in files {
        let Some(entry) = rooms.get(name.as_str()) else {
            continue;
        };
        let facts = &entry.facts;
        let text = entry.text();
        let header = Header {
            file: record.file.as_str().into(),
            len: record.len,
            crc: record.crc,
            // A file written within a clock tick of being read could be written again with
            // the same stat: only a stat from well before the read proves it unchanged.
            stat: record
                .stat
                .filter(|s| s.mtime_ns.max(s.ctime_ns) < trust_before)
                .map(Stamp::from),
            name: name.as_str().into(),
            rating_count: entry.rating_count,
            created_at: facts.created_at,
            creator_plex_user_id: facts.creator_plex_user_id.clone(),
            creator_plex_username: facts.creator_plex_username.clone(),
            password: facts.password.clone(),
            summary_head: facts.summary_head.clone(),
            packed: matches!(text, RoomText::Packed(_)),
        };
        let start = buffer.len();
        buffer.extend_from_slice(&[0; RECORD_HEADER]);
        serde_json::to_writer(&mut buffer, &header).map_err(std::io::Error::other)?;
        buffer.push(b'\n');
        buffer.extend_from_slice(match &text {
            RoomText::Json(json) => json,
            RoomText::Packed(packed) => packed.as_bytes(),
        });
        let payload = &buffer[start + RECORD_HEADER..];
        let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
        let crc = crc32fast::hash(payload);
        buffer[start..start + 4].copy_from_slice(&len.to_le_bytes());
        buffer[start + 4..start + RECORD_HEADER].copy_from_slice(&crc.to_le_bytes());
        count += 1;
        if buffer.len() >= CHUNK {
            out.append(&buffer)?;
            buffer.clear();
        }
    }
    out.append(&buffer)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::CACHE;
    use crate::backend::file::fs::Fs;
    use crate::backend::file::sim::SimFs;
    use crate::backend::file::{names, FileBackend};
    use crate::backend::Backend;
    use crate::config::Durability;
    use crate::room::entry::Snapshot;
    use crate::room::RoomName;

    fn dir() -> PathBuf {
        PathBuf::from("/sim/rooms")
    }

    /// Room files as a person or the original storage layer writes them: pretty, with escapes,
    /// numbers in several spellings and fields the daemon does not know.
    fn room_file(i: usize) -> Vec<u8> {
        format!(
            r#"{{
  "roomName": "caf\u00e9 {i}",
  "password": {password},
  "sort": "rating",
  "createdAt": "2025-10-25T20:00:00Z",
  "creatorPlexUserId": {i},
  "creatorPlexUsername": "jo\"hn",
  "ratings": {{ "m1": [["ann", "like", 1000]], "m2": [["bob", "dislike", 1730000000000]] }},
  "userProgress": {{ "ann": 2 }},
  "extra": [1.0, -0, 1e3, 2.50, "\u2028"]
}}
"#,
            password = if i.is_multiple_of(2) {
                "\"pw\""
            } else {
                "null"
            }
        )
        .into_bytes()
    }

    fn file_of(i: usize) -> String {
        names::file_name(&RoomName::new(&format!("café {i}")).unwrap())
    }

    fn put_rooms(fs: &SimFs, count: usize) {
        fs.create_private_dir(&dir()).unwrap();
        for i in 0..count {
            fs.write_new_synced(&dir().join(file_of(i)), &room_file(i))
                .unwrap();
        }
    }

    /// Starts a backend on `fs`, returning what it serves and how many rooms came from the
    /// cache; stops it cleanly (which waits for the cache to be written).
    fn start(fs: &SimFs) -> (Vec<(String, Vec<u8>, String)>, usize) {
        let mut backend = FileBackend::with_fs(Arc::new(fs.clone()), dir(), Durability::Strict);
        let rooms = backend.load().unwrap();
        let served = rooms
            .values()
            .map(|e| {
                let facts = &e.facts;
                let facts = format!(
                    "{} {:?} {:?} {:?} {} {}",
                    facts.created_at,
                    facts.creator_plex_user_id,
                    facts.creator_plex_username,
                    facts.password,
                    facts.summary_head,
                    e.rating_count
                );
                (e.name.as_str().to_owned(), e.encoded().to_vec(), facts)
            })
            .collect();
        let hits = backend.cache_hits;
        backend.close(&Snapshot { rooms }).unwrap();
        (served, hits)
    }

    #[test]
    fn a_second_start_takes_every_room_from_the_cache_exactly_as_parsing_would() {
        let fs = SimFs::default();
        put_rooms(&fs, 20);
        let (parsed, hits) = start(&fs);
        assert_eq!((parsed.len(), hits), (20, 0));
        assert!(
            fs.read(&dir().join(CACHE)).is_ok(),
            "the first start writes the cache"
        );
        let (cached, hits) = start(&fs);
        assert_eq!(hits, 20);
        assert_eq!(cached, parsed);
        // And a start without the cache parses the same again.
        fs.remove(&dir().join(CACHE)).unwrap();
        let (reparsed, hits) = start(&fs);
        assert_eq!((reparsed, hits), (parsed, 0));
    }

    /// A room of `ratings` ratings, pretty-printed as a person would write it.
    fn rated_room_file(name: &str, ratings: usize) -> Vec<u8> {
        let ratings: Vec<String> = (0..ratings)
            .map(|m| {
                format!(
                    "\"plex://movie/5d776825880197001ec9{m:04x}\": [[\"ann\", \"like\", {}]]",
                    1_729_890_000_000u64 + m as u64
                )
            })
            .collect();
        format!(
            "{{\n  \"roomName\": \"{name}\",\n  \"sort\": \"rating\",\n  \"createdAt\": \"2025-10-25T20:00:00Z\",\n  \"creatorPlexUserId\": 7,\n  \"creatorPlexUsername\": \"ann\",\n  \"ratings\": {{\n    {}\n  }}\n}}\n",
            ratings.join(",\n    ")
        )
        .into_bytes()
    }

    #[test]
    fn rooms_read_at_start_are_kept_packed_from_the_file_and_from_the_cache() {
        let fs = SimFs::default();
        fs.create_private_dir(&dir()).unwrap();
        let rooms = [("big", 200), ("tiny", 0)];
        for (name, ratings) in rooms {
            let file = names::file_name(&RoomName::new(name).unwrap());
            fs.write_new_synced(&dir().join(file), &rated_room_file(name, ratings))
                .unwrap();
        }
        // Parsed, then from the cache: the big room is packed as it is read (so its text is
        // never held), the tiny one, which would not pack by a quarter, stays as it is; either
        // reads back as the file's compact JSON.
        for expected_hits in [0, 2] {
            let mut backend = FileBackend::with_fs(Arc::new(fs.clone()), dir(), Durability::Strict);
            let loaded = backend.load().unwrap();
            assert_eq!(backend.cache_hits, expected_hits);
            for (name, ratings) in rooms {
                let entry = loaded.get(name).unwrap();
                assert_eq!(entry.is_packed(), ratings > 0, "{name}");
                let file: serde_json::Value =
                    serde_json::from_slice(&rated_room_file(name, ratings)).unwrap();
                assert_eq!(entry.encoded().to_vec(), serde_json::to_vec(&file).unwrap());
            }
            backend.close(&Snapshot { rooms: loaded }).unwrap();
        }
        // The cache holds the big room packed: smaller than its JSON.
        let json = serde_json::to_vec(
            &serde_json::from_slice::<serde_json::Value>(&rated_room_file("big", 200)).unwrap(),
        )
        .unwrap();
        let cache = fs.read(&dir().join(CACHE)).unwrap();
        assert!(cache.len() < json.len() / 2, "{} bytes", cache.len());
    }

    #[test]
    fn a_file_edited_after_the_cache_was_written_is_parsed_again() {
        let fs = SimFs::default();
        put_rooms(&fs, 3);
        start(&fs);
        // The same length, other bytes: only the content can tell.
        let path = dir().join(file_of(1));
        let edited = String::from_utf8(room_file(1))
            .unwrap()
            .replace("2.50", "7.50");
        fs.remove(&path).unwrap();
        fs.write_new_synced(&path, edited.as_bytes()).unwrap();
        let (served, hits) = start(&fs);
        assert_eq!(hits, 2);
        let room = served.iter().find(|(name, ..)| name == "café 1").unwrap();
        assert!(String::from_utf8_lossy(&room.1).contains("7.50"));
        // That start wrote the cache again, so the next takes every room from it.
        assert_eq!(start(&fs).1, 3);
    }

    #[test]
    fn a_damaged_cache_is_used_only_up_to_its_first_bad_record() {
        let fs = SimFs::default();
        put_rooms(&fs, 10);
        let (parsed, _) = start(&fs);
        let path = dir().join(CACHE);
        let mut bytes = fs.read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        fs.remove(&path).unwrap();
        fs.write_new_synced(&path, &bytes).unwrap();
        let (served, hits) = start(&fs);
        assert!(hits > 0 && hits < 10, "{hits} rooms from the cache");
        assert_eq!(served, parsed);
        // Garbage, or a cache of another version, is not used at all.
        fs.remove(&path).unwrap();
        fs.write_new_synced(&path, b"not a cache").unwrap();
        let (served, hits) = start(&fs);
        assert_eq!((served, hits), (parsed, 0));
    }

    #[test]
    fn a_stat_taken_within_a_clock_tick_of_the_last_write_is_not_trusted() {
        use crate::backend::file::fs::FileStat;
        use crate::backend::file::FileRecord;
        use crate::room::entry::{RoomEntry, RoomMap};
        use crate::room::prepare::PreparedRoom;

        let fs = SimFs::default();
        fs.create_private_dir(&dir()).unwrap();
        let trust_before: i128 = 1_800_000_000 * 1_000_000_000;
        let mut rooms = RoomMap::new();
        let mut files = Vec::new();
        // Written an hour before start-up read it, and a millisecond before.
        for (i, written) in [
            (0, trust_before - 3_600_000_000_000),
            (1, trust_before + 1_000_000),
        ] {
            let bytes = room_file(i);
            let room = PreparedRoom::from_json(&bytes).unwrap();
            let stat = FileStat {
                len: bytes.len() as u64,
                mtime_ns: written,
                ctime_ns: written,
                ino: i as u64,
            };
            files.push((
                room.name.clone(),
                FileRecord {
                    file: file_of(i),
                    len: bytes.len() as u64,
                    crc: crc32fast::hash(&bytes),
                    stat: Some(stat),
                    lsn: 0,
                    revision: 1,
                },
            ));
            let entry = RoomEntry::cold(
                room.name.clone(),
                room.facts,
                room.encoded,
                room.rating_count,
                1,
                0,
            );
            rooms.insert(room.name, Arc::new(entry));
        }
        assert_eq!(
            super::write(&fs, &dir(), &rooms, &files, trust_before).unwrap(),
            2
        );
        let cache = super::Cache::read(&fs, &dir());
        let (old, racy) = (&files[0].1, &files[1].1);
        assert!(cache.get_by_stat(&old.file, old.stat.unwrap()).is_some());
        // The racy file could have been written again since, with the same stat: it must be
        // read, and is taken from the cache only if its bytes are the same.
        assert!(cache.get_by_stat(&racy.file, racy.stat.unwrap()).is_none());
        assert!(cache.get(&racy.file, racy.len, racy.crc).is_some());
        assert!(cache.get(&racy.file, racy.len, racy.crc ^ 1).is_none());
    }
}
