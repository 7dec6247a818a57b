//! `.quarantine/`: where files that cannot be served are set aside, never deleted.
//!
//! A file goes there when it is not a valid room, when another file holding the same room won
//! (see `claims`), or when a hand edit was refused because the room had changed since its file
//! was written. It keeps its name plus a timestamp suffix and is made 0600 (room files hold
//! passwords) before it moves. `.quarantine` itself is never followed: when it is a symlink or
//! not a directory (or cannot be used otherwise), nothing is moved or chmod'ed there; the file
//! is renamed in the storage directory to `.set-aside-<file>.<stamp>` instead (a dot-name the
//! daemon never reads), so its room's file can be written again and neither is lost, and an
//! error says where it went and what to fix.

use std::path::{Path, PathBuf};

use super::fs::Fs;
use super::QUARANTINE;

/// Where a file goes in the storage directory itself when `.quarantine` cannot be used: a
/// dot-name, so it is never taken for a room, a journal or anything an operator wrote.
pub(super) const SET_ASIDE_PREFIX: &str = ".set-aside-";

/// `<file>.<stamp>`, or when that exceeds a file name's 255 bytes, `<stamp>-<start of file>`.
fn quarantine_name(file: &str, stamp: i64) -> String {
    fitted_name(file, stamp, 255)
}

/// [`quarantine_name`] in at most `max` bytes.
fn fitted_name(file: &str, stamp: i64, max: usize) -> String {
    let name = format!("{file}.{stamp}");
    if name.len() <= max {
        return name;
    }
    let mut keep = max - stamp.to_string().len() - 1;
    while !file.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{stamp}-{}", &file[..keep])
}

/// Moves `file` into `.quarantine/` and returns where it went. When `.quarantine` cannot be
/// used, the file is renamed in the storage directory itself to `.set-aside-<file>.<stamp>`
/// (so the room's file can be written again and nothing is lost), with an ERROR saying where
/// it went and what to fix. Only if that fails too is the file left where it is (`None`).
pub(super) fn set_aside(fs: &dyn Fs, dir: &Path, file: &str, why: &str) -> Option<PathBuf> {
    let quarantine = dir.join(QUARANTINE);
    let stamp = crate::room::now_millis();
    let name = quarantine_name(file, stamp);
    match fs.set_aside(dir, QUARANTINE, file, &name) {
        Ok(()) => Some(quarantine.join(name)),
        Err(e) => {
            let beside = format!(
                "{SET_ASIDE_PREFIX}{}",
                fitted_name(file, stamp, 255 - SET_ASIDE_PREFIX.len())
            );
            let hint = match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EEXIST) => format!(
                    "{} is a symlink or not a directory, and the daemon follows no symlink and writes nothing outside its storage directory; replace it with a directory (or remove it)",
                    quarantine.display()
                ),
                _ => format!("{e}; fix {}", quarantine.display()),
            };
            if fs.set_aside_in_place(dir, file, &beside).is_ok() {
                tracing::error!(
                    "cannot move room file {} to {} ({why}): {hint}; set it aside as {} instead",
                    dir.join(file).display(),
                    quarantine.display(),
                    dir.join(&beside).display()
                );
                return Some(dir.join(beside));
            }
            tracing::error!(
                "cannot move room file {} to {} ({why}): {hint}, and send SIGHUP; it could not be set aside in the storage directory either, so the file stays where it is",
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
