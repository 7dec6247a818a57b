//! Fixtures: valid rooms, the file name a room gets, room files written and read by hand,
//! directory listings and modes, temp dirs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// A temp dir of its own (`mm-*`), shared by a daemon and its siblings.
pub fn new_tmp() -> Arc<TempDir> {
    Arc::new(
        tempfile::Builder::new()
            .prefix("mm-")
            .tempdir()
            .expect("create temp dir"),
    )
}

/// A temp dir anyone may write into (0777), as `/tmp` or `/run` is for a socket.
pub fn world_writable_tempdir() -> TempDir {
    let dir = tempfile::tempdir().expect("create temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    dir
}

/// A valid room with every documented field (the example of PROTOCOL.md section 4).
pub fn room(name: &str) -> Value {
    json!({
        "roomName": name,
        "password": "secret",
        "sort": "random",
        "createdAt": "2025-10-25T20:00:00.000Z",
        "creatorPlexUserId": "12345",
        "creatorPlexUsername": "john_doe",
        "options": ["EndOnFirstMatch"],
        "filters": [{ "key": "genre", "operator": "=", "value": ["Action", "Comedy"] }],
        "ratings": { "movie-123": [["john_doe", "like", 1729890000000u64]] },
        "userProgress": { "john_doe": 5 }
    })
}

/// `room` with `fields` set (a `null` value removes the field).
pub fn with(mut room: Value, fields: Value) -> Value {
    let obj = room.as_object_mut().expect("room is an object");
    for (k, v) in fields.as_object().expect("fields is an object") {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    room
}

/// A valid room with only the required fields.
pub fn bare_room(name: &str) -> Value {
    json!({
        "roomName": name,
        "sort": "rating",
        "createdAt": "2025-10-26T08:30:00.000Z",
        "creatorPlexUserId": "777",
        "creatorPlexUsername": "jane"
    })
}

/// The file name of a room in storagePath: `<name>.json` for plain names, else `~` + percent
/// encoding + `.json` when that fits in 255 bytes, else `~=` + hex SHA-256 + `.json`.
pub fn room_file_name(name: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !name.is_empty() && name.len() <= 250 && name.bytes().all(plain) {
        return format!("{name}.json");
    }
    let mut enc = String::from("~");
    for b in name.bytes() {
        if plain(b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    enc.push_str(".json");
    if enc.len() <= 255 {
        enc
    } else {
        format!("~={:x}.json", Sha256::digest(name.as_bytes()))
    }
}

pub fn read_json_file(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Writes a room file by hand, pretty-printed, as a user editing the directory would.
pub fn write_room_file(path: &Path, room: &Value) {
    fs::write(path, serde_json::to_string_pretty(room).unwrap() + "\n").unwrap();
}

/// Entry names of a directory, sorted (empty if it does not exist).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Room files in storagePath: every entry not starting with `.`.
pub fn room_files(storage: &Path) -> Vec<String> {
    dir_entries(storage)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Every path under `dir`, recursively, symlinks not followed.
pub fn all_paths_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(all_paths_under(&p));
        }
        out.push(p);
    }
    out
}

pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
