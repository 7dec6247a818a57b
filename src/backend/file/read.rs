//! Reading room files: one file's bytes, length, CRC and parsed room, or what `.cache` holds
//! for it when its stat or bytes are unchanged. Used at start (`load`, on every core) and on
//! SIGHUP (`reload`). A file someone else wrote (MovieMatch writes 0644) is made 0600 here.

use super::cache::Cache;
use super::fs::FileStat;
use super::par::par_map;
use super::FileBackend;
use crate::room::entry::LoadedRoom;
use crate::room::prepare::PreparedRoom;

/// A room file as read from disk.
pub(super) struct ReadFile {
    pub file: String,
    pub len: u64,
    pub crc: u32,
    pub stat: Option<FileStat>,
    /// The room, already encoded compactly and packed if that saves memory: the parsed tree
    /// and the text are dropped on the reading thread, so loading many rooms never holds many
    /// trees or texts at once.
    pub room: Result<LoadedRoom, String>,
    /// Whether `room` came from `.cache` rather than from parsing the file: `Some(true)` when
    /// the file's stat showed it unchanged, `Some(false)` when its content had to.
    pub cached: Option<bool>,
    /// Whether its mode was changed to 0600 (it was readable by others).
    pub made_private: bool,
    /// The read failed: the disk, not the file, is at fault, so the start fails rather than
    /// set the room aside (a passing I/O error must not take a room out of service).
    pub unreadable: Option<std::io::Error>,
}

/// Reads, checks and parses room files on every core (start-up time is mostly this), taking
/// what `cache` holds for a file with exactly the same stat or bytes instead of parsing it.
pub(super) fn read_files(
    b: &FileBackend,
    files: Vec<String>,
    stats: Vec<Option<FileStat>>,
    cache: &Cache,
) -> Vec<ReadFile> {
    let (fs, dir) = (&*b.fs, &b.dir);
    let files: Vec<(String, Option<FileStat>)> = files.into_iter().zip(stats).collect();
    par_map(&files, |(f, stat)| {
        Some(read_file(fs, dir, f, *stat, cache))
    })
}

/// Makes a room file the daemon did not write (MovieMatch writes 0644) 0600: it holds
/// passwords. True if its mode changed.
fn made_private(fs: &dyn super::Fs, path: &std::path::Path) -> bool {
    fs.make_private(path).unwrap_or_else(|e| {
        tracing::warn!("cannot make room file {} 0600: {e}", path.display());
        false
    })
}

/// Reads one room file whose `stat` was just taken.
pub(super) fn read_file(
    fs: &dyn super::Fs,
    dir: &std::path::Path,
    file: &str,
    stat: Option<FileStat>,
    cache: &Cache,
) -> ReadFile {
    let path = dir.join(file);
    if let Some((len, crc, room)) = stat.and_then(|s| cache.get_by_stat(file, s)) {
        return ReadFile {
            file: file.to_owned(),
            len,
            crc,
            stat,
            cached: Some(true),
            made_private: false,
            room: Ok(room),
            unreadable: None,
        };
    }
    let (bytes, read, unreadable) = match fs.read(&path) {
        Ok(bytes) => (bytes, Ok(()), None),
        Err(e) => (Vec::new(), Err(format!("it cannot be read ({e})")), Some(e)),
    };
    // A file the daemon did not write (MovieMatch writes 0644) holds passwords: make it 0600.
    // Files taken from the cache by their stat were read, so checked, at an earlier start.
    let made_private = read.is_ok() && made_private(fs, &path);
    let stat = if made_private {
        fs.stat(&path).ok().flatten()
    } else {
        stat
    };
    let (len, crc) = (bytes.len() as u64, crc32fast::hash(&bytes));
    let cached = read.is_ok().then(|| cache.get(file, len, crc)).flatten();
    ReadFile {
        file: file.to_owned(),
        len,
        crc,
        stat,
        cached: cached.is_some().then_some(false),
        made_private,
        unreadable,
        room: read.and_then(|()| match cached {
            Some(room) => Ok(room),
            None => PreparedRoom::from_json(&bytes)
                .map(PreparedRoom::loaded)
                .map_err(|e| format!("it is not a valid room ({e})")),
        }),
    }
}
