//! Claiming the socket path: a stale socket is replaced, a live daemon's socket or a
//! non-socket never is, and the socket is never reachable with a wider mode than asked, nor is
//! any file but its own touched, even when another user can write its directory.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::DaemonError;

/// Binds `path`, replacing a stale socket file but never a live daemon's socket or a non-socket.
pub fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, DaemonError> {
    let socket_error = |action| {
        move |source| DaemonError::Socket {
            action,
            path: path.to_owned(),
            source,
        }
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(DaemonError::NotASocket(path.to_owned()))
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(DaemonError::SocketInUse(path.to_owned()));
            }
            tracing::info!("replacing stale socket file {}", path.display());
            std::fs::remove_file(path).map_err(socket_error("remove stale"))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(socket_error("inspect")(e)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(socket_error("create the directory of"))?;
    }
    bind_privately(path, mode).map_err(|(action, source)| DaemonError::Socket {
        action,
        path: path.to_owned(),
        source,
    })
}

/// Binds `path` so that it is never connectable with a wider mode than `mode`: `bind` creates
/// the socket file with the mode the umask leaves, so the socket is bound in a fresh directory
/// only this user can enter, given `mode` there, and only then linked into place (a hard link:
/// it fails rather than replace a socket another daemon linked there meanwhile). A umask set
/// around `bind` would do the same but is process-wide, and other threads create files.
///
/// Whoever may write the socket's directory may rename the fresh directory away and put a
/// symlink in its place at any moment, so after `mkdirat` nothing is done by a path through that
/// directory: the private directory is opened once (`O_NOFOLLOW`), checked to be the directory
/// this user just made, and every later step goes through its descriptor or the parent's.
fn bind_privately(path: &Path, mode: u32) -> Result<UnixListener, (&'static str, io::Error)> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A path no socket address can hold stays an error, as `bind` in place would report it.
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err((
            "bind",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the path is longer than the {MAX_SOCKET_PATH} bytes a Unix socket address holds"),
            ),
        ));
    }
    let Some(name) = path.file_name() else {
        return Err((
            "bind",
            io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        ));
    };
    let name = cstring(name.as_bytes()).map_err(|e| ("bind", e))?;
    let parent_dir = open_dir(
        libc::AT_FDCWD,
        &cstring(parent.as_os_str().as_bytes()).map_err(|e| ("open the directory of", e))?,
    )
    .map_err(|e| ("open the directory of", e))?;
    // A name nobody else holds: `mkdir` fails on anything that exists (a leftover of a crash,
    // or something another user put there in a shared directory), and then the next is tried.
    let mut attempt = 0;
    let private_name = loop {
        let candidate = cstring(format!(".sb{}-{attempt}", std::process::id()).as_bytes())
            .map_err(|e| ("create a private directory next to", e))?;
        // SAFETY: both arguments are valid for the call.
        if unsafe { libc::mkdirat(parent_dir.as_raw_fd(), candidate.as_ptr(), 0o700) } == 0 {
            break candidate;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::AlreadyExists if attempt < 100 => attempt += 1,
            _ => return Err(("create a private directory next to", e)),
        }
    };
    let private = match open_private(&parent_dir, &private_name) {
        Ok(dir) => dir,
        Err(e) => {
            // What is there now is not ours (or not a directory); it is left alone.
            return Err(("open the private directory just made next to", e));
        }
    };
    let inside = PathBuf::from(format!("/proc/self/fd/{}/s", private.as_raw_fd()));
    let bound = (|| {
        let listener = UnixListener::bind(&inside).map_err(|e| ("bind", e))?;
        // SAFETY: valid descriptor and C string; the name is inside a directory only we enter.
        if unsafe { libc::fchmodat(private.as_raw_fd(), c"s".as_ptr(), mode, 0) } != 0 {
            return Err(("set the mode of", io::Error::last_os_error()));
        }
        // SAFETY: valid descriptors and C strings; flags 0 does not follow a symlink at "s".
        let linked = unsafe {
            libc::linkat(
                private.as_raw_fd(),
                c"s".as_ptr(),
                parent_dir.as_raw_fd(),
                name.as_ptr(),
                0,
            )
        };
        if linked != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.kind() {
                io::ErrorKind::AlreadyExists => ("link (another process created it meanwhile)", e),
                _ => ("link into place", e),
            });
        }
        Ok(listener)
    })();
    // SAFETY: valid descriptor and C string.
    unsafe { libc::unlinkat(private.as_raw_fd(), c"s".as_ptr(), 0) };
    remove_private(&parent_dir, &private_name, &private);
    bound
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path holds a NUL byte"))
}

fn open_dir(at: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: valid descriptor (or AT_FDCWD) and C string.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory just made under `name` without following a symlink, and accepts it only
/// if it is a directory owned by this user that nobody else can enter.
fn open_private(parent: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid descriptor and C string.
    let replaced = || {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "it was replaced by something this user did not make (another user can write the socket's directory: give the socket a directory only this user can write)",
        )
    };
    let fd = unsafe { libc::openat(parent.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            // A symlink (O_NOFOLLOW) or a non-directory now holds the name.
            Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::ENOENT) => replaced(),
            _ => e,
        });
    }
    // SAFETY: openat just returned this descriptor, owned by nobody else.
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta = fstat(dir.as_raw_fd())?;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.st_mode & libc::S_IFMT != libc::S_IFDIR || meta.st_uid != euid {
        return Err(replaced());
    }
    // The mode `mkdirat` gave is 0700 masked by the umask; this user must be able to use it.
    // SAFETY: valid descriptor.
    if meta.st_mode & 0o7777 != 0o700 && unsafe { libc::fchmod(dir.as_raw_fd(), 0o700) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(dir)
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and a stat to write.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Removes the private directory, but only if the name still holds the one `dir` is open on:
/// someone may have renamed it away and put their own there.
fn remove_private(parent: &OwnedFd, name: &CStr, dir: &OwnedFd) {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut now: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and stat.
    let looked = unsafe {
        libc::fstatat(
            parent.as_raw_fd(),
            name.as_ptr(),
            &mut now,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    let ours = fstat(dir.as_raw_fd());
    match ours {
        Ok(ours) if looked == 0 && ours.st_dev == now.st_dev && ours.st_ino == now.st_ino => {
            // SAFETY: valid descriptor and C string.
            unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
        }
        _ => tracing::warn!(
            "the private directory {} next to the socket was moved away by someone else; it is left where it is",
            name.to_string_lossy()
        ),
    }
}

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
