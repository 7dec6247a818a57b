//! The heap's shape: how many glibc malloc arenas the daemon may use.
//!
//! glibc gives each thread that allocates its own arena, up to eight per core, and memory freed
//! in one arena is reused only by threads of that arena. Rooms are allocated by the connection
//! tasks and the actor, on whichever thread they run, and freed by the actor or the fold, so
//! with many arenas the freed room texts sit in arenas that the next allocations do not use.
//! Two arenas (one per core on the machines the daemon targets) keep that reuse: with sixteen,
//! 100,000 idle rooms took 602 MiB instead of 441 and a fold's peak 776 MiB instead of 732,
//! while more arenas saved no CPU per mutation measurable on two shared cores; the numbers are
//! in the README ("Memory allocator").

/// Arenas when `MALLOC_ARENA_MAX` does not say otherwise.
const ARENAS: libc::c_int = 2;

/// Limits glibc to [`ARENAS`] arenas unless the operator set `MALLOC_ARENA_MAX` to a number of
/// arenas (glibc reads it itself, and an explicit setting wins). An empty value counts as unset;
/// `0` or anything that is not a number glibc ignores, so the limit applies then too, with a
/// warning. Call it first thing in `main`, before threads start: threads that already have an
/// arena keep it. Returns a warning to log once logging is up.
pub fn limit_malloc_arenas() -> Option<String> {
    // What the operator set that glibc ignores (empty counts as unset), for the warning.
    let ignored = match std::env::var_os("MALLOC_ARENA_MAX") {
        Some(value) if value.to_str().and_then(arenas_of).is_some() => return None,
        Some(value) if !value.is_empty() => Some(value),
        _ => None,
    };
    // SAFETY: mallopt only changes allocator parameters; no pointer is involved.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) } != 1 {
        return Some(format!(
            "could not limit malloc to {ARENAS} arenas; memory use may be higher \
             (set MALLOC_ARENA_MAX={ARENAS} in the environment instead)"
        ));
    }
    ignored.map(|value| {
        format!(
            "MALLOC_ARENA_MAX={value:?} is not a number of arenas (glibc ignores it); \
             using {ARENAS} arenas"
        )
    })
}

/// The arenas a `MALLOC_ARENA_MAX` value asks for, if glibc takes it as a limit: a positive
/// decimal number (`0` means glibc's own default).
fn arenas_of(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_positive_number_of_arenas_overrides_the_limit() {
        assert_eq!(arenas_of("4"), Some(4));
        assert_eq!(arenas_of("16"), Some(16));
        for ignored in [
            "",
            "0",
            "-3",
            "garbage",
            " 4",
            "4x",
            "99999999999999999999999",
        ] {
            assert_eq!(arenas_of(ignored), None, "{ignored:?}");
        }
    }

    /// Arenas in this process, counted from `malloc_info`'s XML (one `<heap nr=` per arena).
    fn arenas() -> usize {
        let mut buffer: *mut libc::c_char = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        // SAFETY: open_memstream writes the buffer pointer and size it is given; malloc_info
        // writes to the stream; after fclose the buffer holds `size` bytes that we own and free.
        unsafe {
            let stream = libc::open_memstream(&mut buffer, &mut size);
            assert!(!stream.is_null(), "open_memstream failed");
            assert_eq!(libc::malloc_info(0, stream), 0, "malloc_info failed");
            libc::fclose(stream);
            let text = std::slice::from_raw_parts(buffer as *const u8, size);
            let count = text.windows(9).filter(|w| w == b"<heap nr=").count();
            libc::free(buffer.cast());
            count
        }
    }

    /// Run in a process of its own (the test re-executes itself) so that no other test's
    /// threads have arenas already.
    #[test]
    fn many_allocating_threads_share_two_arenas() {
        const CHILD: &str = "MOVIEMATCH_HEAP_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let exe = std::env::current_exe().expect("the test binary's path");
            let status = std::process::Command::new(exe)
                .args([
                    "--exact",
                    "daemon::heap::tests::many_allocating_threads_share_two_arenas",
                    "--test-threads=1",
                ])
                .env(CHILD, "1")
                .env_remove("MALLOC_ARENA_MAX")
                .status()
                .expect("re-run the test binary");
            assert!(status.success(), "the test failed in its own process");
            return;
        }
        assert_eq!(limit_malloc_arenas(), None);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let room = vec![7u8; 5_500];
                    // All eight hold their allocation at once, as busy connection threads do.
                    barrier.wait();
                    std::hint::black_box(room).len()
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().expect("an allocating thread"), 5_500);
        }
        let arenas = arenas();
        assert!(
            arenas <= ARENAS as usize,
            "{arenas} malloc arenas after 8 threads allocated; expected at most {ARENAS}"
        );
    }
}
