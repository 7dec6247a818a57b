//! The daemon's heap: mimalloc, set so that memory the daemon frees goes back to the system.
//!
//! Why mimalloc: a request's bytes are allocated by a connection thread and freed by the
//! storage actor (and a room's by the actor, freed by a connection thread or the fold). glibc
//! malloc serves that from shared, locked arenas: at 50 clients the actor and the connection
//! threads spent half of their futex calls waiting for each other's malloc lock, and a strict
//! `addRating` at 50 clients ran at 65,000-69,000/s. mimalloc gives each thread its own heap
//! and takes frees from other threads without a lock: 114,000-137,000/s, with less CPU per
//! request (README, "Memory allocator", has the numbers and the memory rows).
//!
//! Two settings, each unless the operator set the matching variable to a value mimalloc takes
//! (it reads them itself, and the operator's value then wins; an empty one counts as unset, as
//! for every variable the daemon reads, and one mimalloc ignores is ignored here too, with a
//! warning). [`in_force`] says which apply, for the start-up log:
//! - `MIMALLOC_PURGE_DELAY=0`: a page that becomes free is given back at once. By default
//!   mimalloc waits 1 s and gives it back on the thread's next allocation, so a thread that
//!   goes idle after a burst (a connection worker, the fold) kept what it freed for good: 345
//!   MiB idle with 100,000 rooms, against 264 with this.
//! - no transparent huge pages (`MIMALLOC_ALLOW_THP=0`): with huge pages, as Debian's
//!   `madvise` default lets mimalloc ask for, a 2 MiB page counts whole in RSS while partly used;
//!   40-45 MiB more at every memory row, and 1.24x Redis at the peak of a fold.

/// mimalloc's option numbers (`mi_option_e` in `mimalloc.h` of the bundled mimalloc 3; the
/// sys crate names only some of them). A test checks each against its variable.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// The longest purge delay mimalloc counts correctly: it adds the delay to its clock, and a
/// sum past `i64::MAX` wraps to a moment already past, which gives pages back at once (an
/// outside probe: `MIMALLOC_PURGE_DELAY=9223372036854775807` behaved as 0). About 31,700 years.
const LONGEST_PURGE_DELAY: libc::c_long = 1_000_000_000_000_000;

/// The settings, as (variable, option, value): applied unless the variable is set.
const SETTINGS: [(&str, libmimalloc_sys::mi_option_t, libc::c_long); 2] = [
    ("MIMALLOC_PURGE_DELAY", PURGE_DELAY, 0),
    ("MIMALLOC_ALLOW_THP", ALLOW_THP, 0),
];

/// Applies the daemon's heap settings. Call it first thing in `main`. Returns the warnings to
/// log once logging is up: a variable mimalloc ignored, huge pages that could not be turned off.
pub fn configure() -> Vec<String> {
    let mut warnings = Vec::new();
    for (variable, option, value) in SETTINGS {
        match mimalloc_env(variable) {
            Some((_, set)) if set.is_empty() => {}
            Some((_, set)) if mimalloc_takes(&set) => continue,
            Some((name, set)) => warnings.push(format!(
                "{name}={:?} is not a value mimalloc takes (it ignores it); using {value}",
                String::from_utf8_lossy(&set)
            )),
            None => {}
        }
        // SAFETY: mi_option_set only stores an option's value.
        unsafe { libmimalloc_sys::mi_option_set(option, value) };
        if option == ALLOW_THP {
            warnings.extend(disable_huge_pages());
        }
    }
    // SAFETY: mi_option_get reads an option, mi_option_set stores one.
    let delay = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
    if delay > LONGEST_PURGE_DELAY {
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, LONGEST_PURGE_DELAY) };
        warnings.push(format!(
            "a purge delay of {delay} ms (MIMALLOC_PURGE_DELAY) is more than mimalloc can count \
             to, and would give pages back at once; using {LONGEST_PURGE_DELAY} ms"
        ));
    }
    warnings
}

/// The variable as mimalloc reads it (`_mi_prim_getenv`): the first entry of the environment
/// whose name matches ignoring case (`mimalloc_allow_thp` counts), its value cut to 64 bytes.
/// Returns the name as found, and the value.
fn mimalloc_env(variable: &str) -> Option<(String, Vec<u8>)> {
    use std::os::unix::ffi::OsStringExt;
    std::env::vars_os()
        .find(|(name, _)| {
            name.as_encoded_bytes()
                .eq_ignore_ascii_case(variable.as_bytes())
        })
        .map(|(name, value)| {
            let mut value = value.into_vec();
            value.truncate(64);
            (name.to_string_lossy().into_owned(), value)
        })
}

/// Whether mimalloc takes `value` for one of [`SETTINGS`] (its `mi_option_init`): empty (which
/// it reads as 1; [`configure`] counts it as unset), a yes/no word (`1 true yes on`,
/// `0 false no off`, any case), or a decimal number (`strtol`: leading blanks and a sign
/// allowed, nothing after the digits).
fn mimalloc_takes(value: &[u8]) -> bool {
    const WORDS: [&[u8]; 8] = [b"1", b"TRUE", b"YES", b"ON", b"0", b"FALSE", b"NO", b"OFF"];
    let upper = value.to_ascii_uppercase();
    if upper.is_empty() || WORDS.contains(&upper.as_slice()) {
        return true;
    }
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let number = &upper[upper.iter().position(|b| !blank(b)).unwrap_or(upper.len())..];
    let digits = number
        .strip_prefix(b"+")
        .or_else(|| number.strip_prefix(b"-"))
        .unwrap_or(number);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// The heap's settings as they apply, for the start-up log.
pub fn in_force() -> String {
    // SAFETY: mi_option_get only reads an option; PR_GET_THP_DISABLE only reads this process's
    // flag (1 when huge pages are off).
    let (delay, huge_pages_off) = unsafe {
        (
            libmimalloc_sys::mi_option_get(PURGE_DELAY),
            libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1,
        )
    };
    let purge = match delay {
        0 => "at once".to_owned(),
        d if d < 0 => "never (MIMALLOC_PURGE_DELAY is negative)".to_owned(),
        d => format!("after {d} ms"),
    };
    let huge = if huge_pages_off { "off" } else { "on" };
    format!("memory allocator: mimalloc; freed pages go back to the system {purge}; transparent huge pages {huge}")
}

/// Turns transparent huge pages off for this process, mappings made before `main` included
/// (mimalloc does the same when it reads `MIMALLOC_ALLOW_THP=0` at its start).
fn disable_huge_pages() -> Option<String> {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process's flag.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } == 0;
    (!done).then(|| {
        format!(
            "could not turn transparent huge pages off ({}); memory use may be 40 MiB or more higher",
            std::io::Error::last_os_error()
        )
    })
}

/// Gives the heap's free pages back to the system now, after work that freed a lot (a fold,
/// a compaction pass, loading rooms at start). Where mimalloc is not the allocator (the
/// library's tests) it has nothing to give.
pub fn give_back() {
    // SAFETY: mi_collect only releases free memory; no pointer is invalidated.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_mimalloc_takes_is_told_from_what_it_ignores() {
        for taken in [
            "", "0", "1", "10", "-1", "+5", " 7", "true", "Yes", "on", "OFF", "no", "False",
        ] {
            assert!(mimalloc_takes(taken.as_bytes()), "{taken:?}");
        }
        for ignored in [
            "garbage", "1x", "10ms", "-", " ", "1.5", "0x10", "7 ", "+-1",
        ] {
            assert!(!mimalloc_takes(ignored.as_bytes()), "{ignored:?}");
        }
        assert!(!mimalloc_takes(b"1\xff"));
    }

    /// Each option number is the option its variable sets: run in a process of its own (the
    /// test re-executes itself), since mimalloc reads its variables once.
    #[test]
    fn the_option_numbers_are_the_options_their_variables_set() {
        const CHILD: &str = "MOVIEMATCH_HEAP_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let exe = std::env::current_exe().expect("the test binary's path");
            let status = std::process::Command::new(exe)
                .args([
                    "--exact",
                    "heap::tests::the_option_numbers_are_the_options_their_variables_set",
                    "--test-threads=1",
                ])
                .env(CHILD, "1")
                .env("MIMALLOC_PURGE_DELAY", "1234")
                .env("MIMALLOC_ALLOW_THP", "2")
                .status()
                .expect("re-run the test binary");
            assert!(status.success(), "the test failed in its own process");
            return;
        }
        // SAFETY: mi_option_get only reads an option.
        let (purge_delay, allow_thp) = unsafe {
            (
                libmimalloc_sys::mi_option_get(PURGE_DELAY),
                libmimalloc_sys::mi_option_get(ALLOW_THP),
            )
        };
        assert_eq!(purge_delay, 1234, "option {PURGE_DELAY} is not purge_delay");
        assert_eq!(allow_thp, 2, "option {ALLOW_THP} is not allow_thp");
        // And an operator's setting wins over the daemon's.
        assert_eq!(configure(), Vec::<String>::new());
        // SAFETY: as above.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 1234);
    }
}
