//! The rooms this daemon read lately, kept so that a read of an unchanged room does not carry
//! the whole room from Redis again and put it back together (measured: about three quarters of
//! the daemon's CPU for a `getRoom` of a 5 KB room, and most of Redis's).
//!
//! It never answers on its own: every read still asks Redis, with one `HMGET` of the version,
//! whether the room is still the version held here, and gets the room's hash when it is not
//! (`get.rs`). A version is the
//! room's `w` field (a token unique to each whole write: every `saveRoom` and `migrate` restore
//! writes a new one, and a delete removes it with the hash) and its `rev` (bumped inside the
//! same script by every other change). Daemons of an older version write no `w`, and their
//! changes replace the hash or bump `rev`, so they never leave a stale entry matching. Bounded
//! in bytes; entries past the bound are dropped in no particular order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::room::entry::RoomEntry;

/// At most this many bytes of rooms are held.
pub const CACHE_BYTES: usize = 64 << 20;

/// One room as last read, and the version (`w`) it was read at.
#[derive(Clone)]
pub struct Cached {
    pub written: Arc<[u8]>,
    pub entry: Arc<RoomEntry>,
}

#[derive(Default)]
pub struct ReadCache {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    rooms: HashMap<Box<str>, Cached>,
    bytes: usize,
}

fn cost(name: &str, cached: &Cached) -> usize {
    // The map's own overhead and the entry's fixed fields, roughly.
    const FIXED: usize = 256;
    FIXED
        + 2 * name.len()
        + cached.written.len()
        + cached.entry.encoded().len()
        + cached.entry.summary.len()
}

impl ReadCache {
    fn held(&self) -> MutexGuard<'_, Held> {
        // Nothing panics while holding it; were it poisoned, the map is still consistent.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Cached> {
        self.held().rooms.get(name).cloned()
    }

    /// Holds `entry`, read at version `written`, in place of what was held for its room.
    pub fn put(&self, written: &[u8], entry: Arc<RoomEntry>) {
        let name: Box<str> = entry.name.as_str().into();
        let cached = Cached {
            written: written.into(),
            entry,
        };
        let size = cost(&name, &cached);
        if size > CACHE_BYTES / 8 {
            // A room this big would push out many others for one reader.
            self.forget(&name);
            return;
        }
        let mut held = self.held();
        if let Some(old) = held.rooms.remove(&name) {
            held.bytes -= cost(&name, &old);
        }
        if held.bytes + size > CACHE_BYTES {
            // Make room for a while rather than one entry at a time.
            let mut dropped = Vec::new();
            let mut freed = 0;
            for (name, old) in &held.rooms {
                if held.bytes - freed + size <= CACHE_BYTES * 3 / 4 {
                    break;
                }
                freed += cost(name, old);
                dropped.push(name.clone());
            }
            for name in dropped {
                held.rooms.remove(&name);
            }
            held.bytes -= freed;
        }
        held.bytes += size;
        held.rooms.insert(name, cached);
    }

    pub fn forget(&self, name: &str) {
        let mut held = self.held();
        if let Some(old) = held.rooms.remove(name) {
            held.bytes -= cost(name, &old);
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> (usize, usize) {
        let held = self.held();
        (held.rooms.len(), held.bytes)
    }
}

/// Versions (`w`) for the whole writes of this daemon: a random prefix, so that no two daemons
/// (nor two runs of one) hand out the same, and a counter.
pub struct Versions {
    prefix: String,
    next: AtomicU64,
}

impl Versions {
    pub fn new() -> Versions {
        let mut random = [0u8; 12];
        let read = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random));
        if read.is_err() {
            // Without /dev/urandom, the time and the process make the prefix unique enough
            // between daemons and runs; the counter keeps it unique within one.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            random[..8].copy_from_slice(&(nanos as u64).to_le_bytes());
            random[8..].copy_from_slice(&std::process::id().to_le_bytes());
        }
        let prefix = random.iter().map(|b| format!("{b:02x}")).collect();
        Versions {
            prefix,
            next: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.prefix).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::prepare::PreparedRoom;

    fn entry(name: &str, padding: usize) -> Arc<RoomEntry> {
        let json = format!(
            r#"{{"roomName":"{name}","sort":"random","createdAt":"2025-10-25T20:00:00.000Z","creatorPlexUserId":"1","creatorPlexUsername":"{}"}}"#,
            "u".repeat(padding)
        );
        let room = PreparedRoom::from_json(json.as_bytes()).expect("valid room");
        Arc::new(RoomEntry::cold(
            room.name,
            room.facts,
            room.encoded,
            0,
            1,
            0,
        ))
    }

    #[test]
    fn held_bytes_stay_under_the_bound_and_are_accounted_exactly() {
        let cache = ReadCache::default();
        let big = CACHE_BYTES / 100;
        for i in 0..200 {
            cache.put(b"v", entry(&format!("r{i}"), big));
            let (_, bytes) = cache.bytes();
            assert!(bytes <= CACHE_BYTES, "{bytes} bytes held after {i} rooms");
        }
        let (rooms, bytes) = cache.bytes();
        // Dropping makes room for a while, not by emptying the cache.
        assert!(
            bytes >= CACHE_BYTES / 2,
            "{rooms} rooms of {bytes} bytes held"
        );
        // Replacing and forgetting keep the count exact.
        let names: Vec<Box<str>> = cache.held().rooms.keys().cloned().collect();
        for name in &names {
            cache.put(b"w", entry(name, big));
        }
        assert_eq!(cache.bytes(), (rooms, bytes));
        for name in &names {
            cache.forget(name);
        }
        assert_eq!(cache.bytes(), (0, 0));
    }

    #[test]
    fn versions_differ_within_and_between_daemons() {
        let (a, b) = (Versions::new(), Versions::new());
        let (a1, a2, b1) = (a.next(), a.next(), b.next());
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
    }
}
