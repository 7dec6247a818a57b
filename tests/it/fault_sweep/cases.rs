//! Which cases the sweep runs: system call x errno x fault mode x phase x durability.
//!
//! The calls are those `strace -f -c` showed the daemon making on its storage directory during
//! writes, folds, start-up, SIGHUP and a clean stop (README, "Fault-injection sweep"). Each is
//! failed with EIO, and with ENOSPC, EDQUOT and EROFS where the kernel can return them, in the
//! phases where the daemon makes it.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Three clients writing (journal appends and syncs, rotations).
    Workload,
    /// The same, folding at every upkeep tick (room files, `.index`, journal deletion).
    Fold,
    /// Start-up on a directory with a journal to replay (strace attached before `exec`).
    Startup,
    /// SIGHUP (re-reading the directory) while the clients write.
    Sighup,
    /// A clean stop (SIGTERM): the final fold.
    Stop,
}

impl Phase {
    fn word(self) -> &'static str {
        match self {
            Phase::Workload => "workload",
            Phase::Fold => "fold",
            Phase::Startup => "startup",
            Phase::Sighup => "sighup",
            Phase::Stop => "stop",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Only the Nth call (of each thread) fails.
    Once(u32),
    /// Calls N to M fail.
    Burst(u32, u32),
    /// Every call from the Nth fails until strace detaches.
    Until(u32),
}

#[derive(Clone, Debug)]
pub struct Case {
    pub phase: Phase,
    /// strace's syscall set, e.g. `fsync,fdatasync`.
    pub syscalls: &'static str,
    pub errno: &'static str,
    pub mode: Mode,
    pub relaxed: bool,
}

impl Case {
    fn new(
        phase: Phase,
        syscalls: &'static str,
        errno: &'static str,
        mode: Mode,
        relaxed: bool,
    ) -> Case {
        Case {
            phase,
            syscalls,
            errno,
            mode,
            relaxed,
        }
    }

    pub fn name(&self) -> String {
        let mode = match self.mode {
            Mode::Once(n) => format!("once@{n}"),
            Mode::Burst(n, m) => format!("burst@{n}..{m}"),
            Mode::Until(n) => format!("until@{n}+"),
        };
        let durability = if self.relaxed { "relaxed" } else { "strict" };
        format!(
            "{}/{}/{}/{mode}/{durability}",
            self.phase.word(),
            self.syscalls,
            self.errno
        )
    }

    /// strace's `when=`.
    pub fn when(&self) -> String {
        match self.mode {
            Mode::Once(n) => n.to_string(),
            Mode::Burst(n, m) => format!("{n}..{m}"),
            Mode::Until(n) => format!("{n}+"),
        }
    }

    /// How long the fault stays attached (a fold happens at least once a second).
    pub fn window(&self) -> Duration {
        match (self.phase, self.mode) {
            (Phase::Fold, _) => Duration::from_millis(1500),
            (_, Mode::Until(_)) => Duration::from_millis(800),
            _ => Duration::from_millis(600),
        }
    }
}

/// Every file-system call the daemon makes on its storage directory, the errors it is failed
/// with, and the phases in which it happens.
pub const CALLS: &[(&str, &[&str], &[Phase])] = {
    use Phase::*;
    &[
        (
            "openat",
            &["EIO", "ENOSPC", "EDQUOT", "EROFS"],
            &[Workload, Fold, Startup, Sighup, Stop],
        ),
        (
            "write",
            &["EIO", "ENOSPC", "EDQUOT"],
            &[Fold, Startup, Stop],
        ),
        (
            "pwrite64",
            &["EIO", "ENOSPC", "EDQUOT"],
            &[Workload, Fold, Sighup, Stop],
        ),
        (
            "fdatasync",
            &["EIO", "ENOSPC"],
            &[Workload, Fold, Startup, Sighup, Stop],
        ),
        (
            "fsync",
            &["EIO", "ENOSPC"],
            &[Workload, Fold, Startup, Stop],
        ),
        // A fold's new room files are made durable together, by one syncfs.
        ("syncfs", &["EIO", "ENOSPC"], &[Fold, Stop]),
        (
            "rename",
            &["EIO", "ENOSPC", "EROFS"],
            &[Fold, Startup, Stop],
        ),
        ("unlink", &["EIO", "EROFS"], &[Fold, Startup, Stop]),
        ("mkdir", &["EIO", "ENOSPC", "EROFS"], &[Startup]),
        ("ftruncate", &["EIO", "EROFS"], &[Workload, Stop]),
        ("fchmod", &["EIO", "EROFS"], &[Fold, Startup, Stop]),
        ("flock", &["EIO"], &[Startup]),
        ("getdents64", &["EIO"], &[Startup, Sighup]),
        ("statx", &["EIO"], &[Fold, Startup, Sighup]),
        ("read", &["EIO"], &[Startup, Sighup]),
        ("fstatfs", &["EIO"], &[Workload]),
        ("close", &["EIO"], &[Fold, Stop]),
    ]
};

const MODES: &[Mode] = &[
    Mode::Once(1),
    Mode::Once(3),
    Mode::Burst(1, 6),
    Mode::Until(1),
];

/// Every call x errno x mode x phase, strict; and relaxed where durability changes what the
/// backend does (commits, folds, the final fold).
pub fn full() -> Vec<Case> {
    let mut cases = Vec::new();
    for &(syscalls, errnos, phases) in CALLS {
        for &errno in errnos {
            for &phase in phases {
                for &mode in MODES {
                    for relaxed in [false, true] {
                        let durability_matters =
                            matches!(phase, Phase::Workload | Phase::Fold | Phase::Stop);
                        if relaxed && !durability_matters {
                            continue;
                        }
                        cases.push(Case::new(phase, syscalls, errno, mode, relaxed));
                    }
                }
            }
        }
    }
    cases
}

/// About a minute's worth for CI: every call with each of its errors until the fault ends, in
/// the first phase where it happens, and a burst in the last; plus the disk-full and read-only
/// errors of the write path and both durability modes.
pub fn short() -> Vec<Case> {
    let mut cases = Vec::new();
    for &(syscalls, errnos, phases) in CALLS {
        for &errno in errnos {
            let (first, last) = (phases[0], phases[phases.len() - 1]);
            cases.push(Case::new(first, syscalls, errno, Mode::Until(1), false));
            cases.push(Case::new(last, syscalls, errno, Mode::Burst(1, 6), false));
        }
    }
    let more = [
        (
            Phase::Workload,
            "fsync,fdatasync",
            "EIO",
            Mode::Burst(1, 8),
            false,
        ),
        (Phase::Workload, "pwrite64", "ENOSPC", Mode::Until(1), true),
        (Phase::Workload, "fdatasync", "EIO", Mode::Once(2), true),
        (Phase::Fold, "rename", "ENOSPC", Mode::Burst(1, 6), false),
        (Phase::Fold, "fdatasync", "EIO", Mode::Until(1), true),
        (Phase::Fold, "unlink", "EROFS", Mode::Until(1), false),
        (Phase::Stop, "fdatasync", "EIO", Mode::Once(1), false),
        (Phase::Stop, "syncfs", "EIO", Mode::Once(1), false),
        (Phase::Fold, "syncfs", "EIO", Mode::Until(1), true),
        (Phase::Stop, "rename", "EIO", Mode::Until(1), true),
        (Phase::Sighup, "getdents64", "EIO", Mode::Until(1), false),
        (Phase::Startup, "openat", "ENOSPC", Mode::Until(1), false),
    ];
    cases.extend(
        more.into_iter()
            .map(|(phase, syscalls, errno, mode, relaxed)| {
                Case::new(phase, syscalls, errno, mode, relaxed)
            }),
    );
    cases
}
