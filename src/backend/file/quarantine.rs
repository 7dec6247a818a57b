//! `.quarantine/`: where files that cannot be served are set aside, never deleted.
//!
//! A file goes there when it is not a valid room, when another file holding the same room won
//! (see `claims`), or when a hand edit was refused because the room had changed since its file
//! was written. It keeps its name plus a timestamp suffix and is made 0600 (room files hold
//! passwords) before it moves. `.quarantine` itself is never followed: when it is a symlink or
//! not a directory, nothing is moved or chmod'ed there; the file stays where it is and an
//! error names the path (see [`super::fs::Fs::set_aside`]).

use std::path::{Path, PathBuf};

use super::fs::Fs;
use super::QUARANTINE;

/// `<file>.<stamp>`, or when that exceeds a file name's 255 bytes, `<stamp>-<start of file>`.
fn quarantine_name(file: &str, stamp: i64) -> String {
    let name = format!("{file}.{stamp}");
    if name.len() <= 255 {
        return name;
    }
    let mut keep = 255 - stamp.to_string().len() - 1;
    while !file.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{stamp}-{}", &file[..keep])
}

/// Moves `file` into `.quarantine/` and returns where it went. On failure it logs an error
/// naming the file, `why` it was to be moved, and what to do, and returns `None`: the file is
/// left where it is.
pub(super) fn set_aside(fs: &dyn Fs, dir: &Path, file: &str, why: &str) -> Option<PathBuf> {
    let quarantine = dir.join(QUARANTINE);
    let name = quarantine_name(file, crate::room::now_millis());
    match fs.set_aside(dir, QUARANTINE, file, &name) {
        Ok(()) => Some(quarantine.join(name)),
        Err(e) => {
            let hint = match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EEXIST) => format!(
                    "{} is a symlink or not a directory, and the daemon follows no symlink and writes nothing outside its storage directory; replace it with a directory (or remove it) and send SIGHUP",
                    quarantine.display()
                ),
                _ => format!("{e}"),
            };
            tracing::error!(
                "cannot move room file {} to {} ({why}): {hint}; the file stays where it is",
                dir.join(file).display(),
                quarantine.display()
            );
            None
        }
    }
}

/// Moves `file` into `.quarantine/` with a warning saying why; never deletes it. Returns
/// whether it moved (if not, an error was logged and the file is still in place).
pub(super) fn quarantine(fs: &dyn Fs, dir: &Path, file: &str, why: &str) -> bool {
    match set_aside(fs, dir, file, why) {
        Some(target) => {
            tracing::warn!(
                "moved room file {} to {} because {why}; fix it, move it back and send SIGHUP",
                dir.join(file).display(),
                target.display()
            );
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quarantine_names_fit_in_a_file_name() {
        assert_eq!(super::quarantine_name("a.json", 5), "a.json.5");
        let long = format!("{}.json", "é".repeat(125));
        let name = super::quarantine_name(&long, 1_764_000_000_000);
        assert!(
            name.len() <= 255 && name.starts_with("1764000000000-é"),
            "{name}"
        );
    }
}
