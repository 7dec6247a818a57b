//! When several files hold one room at start: which one is served, so that upgrading and
//! downgrading between MovieMatch's own `FileStorage` and the daemon keeps the newest write.
//!
//! MovieMatch names a room's file differently from the daemon (see [`names::claim`]), so after
//! a downgrade and an upgrade, or a hand copy, two files can hold one room. The rules, in order:
//! 1. A file under the room's own name (the daemon's or MovieMatch's) beats one under an
//!    unrelated name: a copy (`x_y-copy.json`) never overrides the room's file.
//! 2. A *fresh* file, one `.index` does not record as it is now (written by MovieMatch or by
//!    hand since the daemon last wrote or read it), beats one the daemon already knew: the
//!    daemon's own file unchanged since it wrote it is older than any write it has not seen.
//! 3. Otherwise the file written last (mtime) wins; then the daemon's name; then byte order.
//!
//! Every loser goes to `.quarantine/` with a warning naming both files and why.

use std::path::Path;

use super::fs::{FileStat, Fs};
use super::{names, quarantine};
use crate::room::RoomName;

/// One file's claim to a room.
pub(super) struct Claimant<'a> {
    pub file: &'a str,
    pub claim: names::Claim,
    pub fresh: bool,
    pub mtime_ns: i128,
}

impl<'a> Claimant<'a> {
    pub fn new(file: &'a str, room: &RoomName, fresh: bool, stat: Option<FileStat>) -> Self {
        Claimant {
            file,
            claim: names::claim(file, room),
            fresh,
            mtime_ns: stat.map_or(0, |s| s.mtime_ns),
        }
    }

    fn own(&self) -> bool {
        self.claim != names::Claim::Unrelated
    }

    fn rank(&self) -> (bool, bool, i128, names::Claim, std::cmp::Reverse<&str>) {
        (
            self.own(),
            self.fresh,
            self.mtime_ns,
            self.claim,
            std::cmp::Reverse(self.file),
        )
    }
}

/// True when `a` should hold the room rather than `b`.
pub(super) fn prefer(a: &Claimant, b: &Claimant) -> bool {
    a.rank() > b.rank()
}

/// Why `winner` beat `loser`, for the warning.
fn why(winner: &Claimant, loser: &Claimant) -> &'static str {
    if winner.own() != loser.own() {
        "a copy under another name never replaces the room's own file"
    } else if winner.fresh != loser.fresh {
        "it was written after the daemon last wrote or read the other"
    } else if winner.mtime_ns != loser.mtime_ns {
        "it was written last"
    } else {
        "both were written at the same time; the daemon's own name wins"
    }
}

/// Moves the losing file to `.quarantine/` with a warning naming both files.
pub(super) fn set_aside_loser(
    fs: &dyn Fs,
    dir: &Path,
    room: &RoomName,
    winner: &Claimant,
    loser: &Claimant,
) {
    let reason = why(winner, loser);
    let context = format!("{} also holds room {:?}", winner.file, room.as_str());
    if let Some(target) = quarantine::set_aside(fs, dir, loser.file, &context) {
        tracing::warn!(
            "room {:?} is in both {} and {}; serving {} ({reason}) and moved {} to {}",
            room.as_str(),
            dir.join(winner.file).display(),
            dir.join(loser.file).display(),
            winner.file,
            loser.file,
            target.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, fresh: bool, mtime_ns: i128) -> Claimant<'_> {
        Claimant {
            file,
            claim: names::claim(file, &RoomName::new("x.y").unwrap()),
            fresh,
            mtime_ns,
        }
    }

    #[test]
    fn the_newest_write_of_the_rooms_own_files_wins() {
        let (daemon, movie_match, copy) = ("~x%2Ey.json", "x_y.json", "x_y-copy.json");
        // A copy never wins, however new.
        assert!(prefer(&at(movie_match, false, 1), &at(copy, true, 9)));
        assert!(prefer(&at(daemon, false, 1), &at(copy, true, 9)));
        // MovieMatch wrote again after the daemon's last write (a downgrade, then an upgrade).
        assert!(prefer(&at(movie_match, true, 1), &at(daemon, false, 9)));
        // A file left over from before the daemon took it over, newer one known too.
        assert!(prefer(&at(daemon, false, 9), &at(movie_match, false, 1)));
        // Both changed since: the last written.
        assert!(prefer(&at(daemon, true, 9), &at(movie_match, true, 1)));
        assert!(prefer(&at(daemon, true, 5), &at(movie_match, true, 5)));
    }
}
