//! The file operations the file backend is allowed to use, behind one small trait.
//!
//! Everything the backend does to the disk goes through [`Fs`], so a test implementation can
//! model what survives a power loss (only what was synced). [`RealFs`] is the one used in
//! production. Its rules: files are created 0600 whatever the umask, never through a symlink
//! (`O_NOFOLLOW`), and a new file is fully written and fsync'd before it is renamed into place.
//! Nothing is opened for reading unless it is a regular file (a FIFO in place of a room file
//! would block the reader forever), and nothing is chmod'ed through a path that could be a
//! symlink: modes are changed on an open descriptor.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::prealloc::PreallocatedFile;

/// What kind of directory entry, without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub kind: EntryKind,
}

/// Size, times and inode, to notice a file changed by hand without reading it. The change
/// time cannot be set by hand (`touch` sets only the others), so a file with the same stat has
/// not been written since, unless within the file system's clock tick of the last write: see
/// `cache` for how that case is told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub len: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
}

/// Free space on a file system, as an unprivileged process may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    pub bytes: u64,
    pub inodes: u64,
}

/// A file opened for appending, such as the journal.
pub trait AppendFile: Send {
    /// Appends all of `bytes` (not yet durable).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes and syncs that, to drop a batch that failed.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// The file's length as appended so far.
    fn len(&self) -> u64;
}

/// New files written together and made durable by one sync: a fold's temporary files. Syncing
/// each on its own cost a disk flush per room (100,000 dirty rooms took minutes to stop).
pub trait WriteBatch {
    /// Creates `path` (which must not exist) with mode 0600 and writes `bytes`, not yet durable.
    fn write_new(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Makes every file this batch wrote durable. After an error none of them may be used (or
    /// synced again): their pages may be lost or stale.
    fn sync(&mut self) -> io::Result<()>;
}

/// A batch that syncs each file as it is written ([`Fs::write_new_synced`]): for file systems
/// that cannot do better, and for tests that fail single whole-file writes.
pub struct OneByOne<'a>(pub &'a dyn Fs);

impl WriteBatch for OneByOne<'_> {
    fn write_new(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.0.write_new_synced(path, bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `&self` as `&dyn Fs`, for [`Fs`]'s provided methods.
pub trait AsFs {
    fn as_fs(&self) -> &dyn Fs;
}

impl<T: Fs> AsFs for T {
    fn as_fs(&self) -> &dyn Fs {
        self
    }
}

/// The file-system operations of the file backend.
pub trait Fs: AsFs + Send + Sync {
    /// Creates `dir` (and parents) if missing, and makes it 0700.
    fn create_private_dir(&self, dir: &Path) -> io::Result<()>;
    /// Entries of `dir`, except `.` and `..`, with names that are valid UTF-8 (others are
    /// reported as `Other` with a lossy name so they can be warned about).
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Reads a whole file, refusing symlinks.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens `path` to read it a part at a time (for files too large to hold twice).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.read(path)?)))
    }
    /// Size and mtime of `path`, not following symlinks; `None` when it does not exist.
    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>>;
    /// Creates `path` (which must not exist) with mode 0600, writes `bytes`, and syncs it.
    fn write_new_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Starts a [`WriteBatch`] of new files in `dir`.
    fn write_batch(&self, _dir: &Path) -> io::Result<Box<dyn WriteBatch + '_>> {
        Ok(Box::new(OneByOne(self.as_fs())))
    }
    /// Renames `from` to `to`, replacing `to` atomically. Durable after [`Fs::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable after [`Fs::sync_dir`].
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for appending, creating it with mode 0600 if needed.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Creates the journal `path` (which must not exist), mode 0600, for appending. The real
    /// file system keeps it zero-filled ahead of its end so that syncs write only data
    /// ([`super::prealloc`]); recovery reads zeros as the end of the journal.
    fn create_journal(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        self.open_append(path)
    }
    /// Free bytes and inodes on the file system holding `dir`; `None` when not known.
    fn free_space(&self, _dir: &Path) -> io::Result<Option<FreeSpace>> {
        Ok(None)
    }
    /// Takes an exclusive lock on `path` (created 0600 if needed), held while the returned
    /// guard lives; `Ok(None)` when another process holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>>;
    /// Moves `dir/file` into the subdirectory `dir/subdir` (created 0700 if missing) as
    /// `new_name`, after making it 0600. Follows no symlink: a `subdir` that is a symlink, or
    /// not a directory, is refused (`ELOOP`, `ENOTDIR`) and nothing is moved or chmod'ed.
    fn set_aside(&self, dir: &Path, subdir: &str, file: &str, new_name: &str) -> io::Result<()> {
        self.create_private_dir(&dir.join(subdir))?;
        self.rename(&dir.join(file), &dir.join(subdir).join(new_name))
    }
    /// Renames the regular file `dir/file` to `dir/new_name` after making it 0600, where
    /// `.quarantine` cannot be used. Follows no symlink: `file` must be a regular file.
    fn set_aside_in_place(&self, dir: &Path, file: &str, new_name: &str) -> io::Result<()> {
        self.rename(&dir.join(file), &dir.join(new_name))
    }
    /// Makes the regular file `path` 0600 if it is not (a room file someone else wrote, e.g.
    /// MovieMatch with 0644); `Ok(true)` when its mode changed.
    fn make_private(&self, _path: &Path) -> io::Result<bool> {
        Ok(false)
    }
}

/// Keeps a lock taken by [`Fs::try_lock`] until dropped.
pub type LockGuard = Box<dyn std::any::Any + Send>;

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

const PRIVATE_FILE: u32 = 0o600;
const PRIVATE_DIR: u32 = 0o700;

impl Fs for RealFs {
    fn create_private_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR))
            // Another user's directory: whether it can be written at all matters first.
            .map_err(|e| writable(dir).err().unwrap_or(e))
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            let kind = if file_type.is_symlink() {
                EntryKind::Symlink
            } else if file_type.is_file() {
                EntryKind::File
            } else if file_type.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::Other
            };
            match entry.file_name().into_string() {
                Ok(name) => entries.push(DirEntry { name, kind }),
                Err(raw) => entries.push(DirEntry {
                    name: raw.to_string_lossy().into_owned(),
                    kind: EntryKind::Other,
                }),
            }
        }
        Ok(entries)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut file = open_regular(path)?;
        let mut bytes = Vec::with_capacity(file.metadata().map_or(0, |m| m.len() as usize));
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(open_regular(path)?))
    }

    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) => Ok(Some(FileStat {
                len: meta.len(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
                ino: meta.ino(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_new_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = create_private(path, true)?;
        file.write_all(bytes)?;
        file.sync_data()
    }

    fn write_batch(&self, dir: &Path) -> io::Result<Box<dyn WriteBatch + '_>> {
        if !syncfs_reports_errors() {
            return Ok(Box::new(OneByOne(self)));
        }
        // Opened before anything is written: syncfs reports the write-back errors of the file
        // system since this descriptor was opened.
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)?;
        Ok(Box::new(SyncfsBatch { dir }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = create_private(path, false)?;
        let len = file.metadata()?.len();
        Ok(Box::new(RealAppendFile {
            file,
            len,
            path: path.to_owned(),
        }))
    }

    fn create_journal(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        // Exclusive, so not O_APPEND: appends are positioned writes below the zero-filled part.
        let file = create_private(path, true)?;
        Ok(Box::new(PreallocatedFile::new(file, 0, path.to_owned())))
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        RealFs::lock_file(path)
    }

    fn set_aside(&self, dir: &Path, subdir: &str, file: &str, new_name: &str) -> io::Result<()> {
        let sub = dir.join(subdir);
        match std::fs::DirBuilder::new().mode(PRIVATE_DIR).create(&sub) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        // Opened without following a symlink, then used only through its descriptor: if `sub`
        // is swapped for a symlink after this, nothing moves or changes outside `dir`.
        let sub_dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&sub)?;
        sub_dir.set_permissions(std::fs::Permissions::from_mode(PRIVATE_DIR))?;
        let from = dir.join(file);
        open_regular(&from)?.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))?;
        let from_c = c_path(&from)?;
        let to_c = c_path(Path::new(new_name))?;
        // SAFETY: both strings are NUL-terminated and live across the call; the descriptor is
        // open.
        let renamed = unsafe {
            libc::renameat(
                libc::AT_FDCWD,
                from_c.as_ptr(),
                sub_dir.as_raw_fd(),
                to_c.as_ptr(),
            )
        };
        if renamed != 0 {
            return Err(io::Error::last_os_error());
        }
        sub_dir.sync_all()
    }

    fn set_aside_in_place(&self, dir: &Path, file: &str, new_name: &str) -> io::Result<()> {
        // Both names are taken relative to the directory's descriptor, and `file` is checked
        // to be a regular file (opened without following a symlink) before it is chmod'ed.
        let dir_fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)?;
        open_regular(&dir.join(file))?
            .set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))?;
        let (from_c, to_c) = (c_path(Path::new(file))?, c_path(Path::new(new_name))?);
        // SAFETY: both strings are NUL-terminated and live across the call; the descriptor is
        // open.
        let renamed = unsafe {
            libc::renameat(
                dir_fd.as_raw_fd(),
                from_c.as_ptr(),
                dir_fd.as_raw_fd(),
                to_c.as_ptr(),
            )
        };
        if renamed != 0 {
            return Err(io::Error::last_os_error());
        }
        dir_fd.sync_all()
    }

    fn make_private(&self, path: &Path) -> io::Result<bool> {
        let file = open_regular(path)?;
        if file.metadata()?.mode() & 0o7777 == PRIVATE_FILE {
            return Ok(false);
        }
        file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))?;
        Ok(true)
    }

    fn free_space(&self, dir: &Path) -> io::Result<Option<FreeSpace>> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: statvfs reads a NUL-terminated path and fills the struct it is given.
        if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statvfs succeeded, so it filled the struct.
        let stat = unsafe { stat.assume_init() };
        // A file system without inode counts (btrfs) reports 0 of 0: not a shortage.
        let inodes = if stat.f_files == 0 {
            u64::MAX
        } else {
            stat.f_favail
        };
        Ok(Some(FreeSpace {
            bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
            inodes,
        }))
    }
}

/// Opens `path` for reading if it is a regular file: not through a symlink, and without
/// blocking when it is a FIFO (which is then refused, as are sockets and devices).
fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// `Ok` if this process may create and remove entries in `dir`.
fn writable(dir: &Path) -> io::Result<()> {
    let path = c_path(dir)?;
    // SAFETY: a NUL-terminated path that lives across the call.
    match unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

impl RealFs {
    fn lock_file(path: &Path) -> io::Result<Option<LockGuard>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PRIVATE_FILE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A [`WriteBatch`] made durable by one `syncfs` of the directory's file system: one flush of
/// the disk for every file, where an fdatasync each flushed it once per file.
struct SyncfsBatch {
    dir: File,
}

impl WriteBatch for SyncfsBatch {
    fn write_new(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        // No write-back is started per file (sync_file_range took a fifth of a stop with
        // 100,000 rooms, in small writes): the syncfs writes them all, merged.
        create_private(path, true)?.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        // SAFETY: the descriptor is open.
        if unsafe { libc::syncfs(self.dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Whether this kernel's syncfs reports write-back errors (Linux 5.8 and later); before that it
/// succeeded whatever happened, so files are then synced one by one.
fn syncfs_reports_errors() -> bool {
    static REPORTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REPORTS.get_or_init(|| {
        let mut name = std::mem::MaybeUninit::<libc::utsname>::zeroed();
        // SAFETY: uname fills the struct it is given.
        if unsafe { libc::uname(name.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: uname succeeded, so the struct is filled (its strings NUL-terminated).
        let name = unsafe { name.assume_init() };
        // SAFETY: `release` is a NUL-terminated string inside `name`.
        let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
        kernel_at_least(&release.to_string_lossy(), (5, 8))
    })
}

/// Whether a kernel release such as `6.1.0-18-amd64` is at least `major.minor`.
fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// Opens `path` for writing with mode 0600 (set explicitly: the umask may have removed bits).
fn create_private(path: &Path, exclusive: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .mode(PRIVATE_FILE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if exclusive {
        options.create_new(true);
    } else {
        options.create(true).append(true);
    }
    let file = options.open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))?;
    Ok(file)
}

struct RealAppendFile {
    file: File,
    len: u64,
    path: PathBuf,
}

impl AppendFile for RealAppendFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        self.file.sync_all()
    }

    fn len(&self) -> u64 {
        self.len
    }
}

/// The journal on the real file system ([`super::prealloc`]).
impl AppendFile for PreallocatedFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        PreallocatedFile::append(self, bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        PreallocatedFile::sync(self)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        PreallocatedFile::truncate(self, len)
    }

    fn len(&self) -> u64 {
        PreallocatedFile::len(self)
    }
}

impl std::fmt::Debug for RealAppendFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppendFile({})", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::kernel_at_least;

    #[test]
    fn syncfs_is_trusted_from_linux_5_8_on() {
        assert!(kernel_at_least("5.8.0", (5, 8)));
        assert!(kernel_at_least("6.1.0-18-amd64", (5, 8)));
        assert!(kernel_at_least("5.10", (5, 8)));
        assert!(!kernel_at_least("5.7.19-arch1-1", (5, 8)));
        assert!(!kernel_at_least("4.19.0", (5, 8)));
        assert!(!kernel_at_least("", (5, 8)));
    }
}
