//! The integration tests: one binary (compiled and linked once), one module per subject.
//!
//! `harness` is shared by all of them, split by job: child processes (`harness::process`), the
//! daemon (`harness::daemon`), `redis-server` (`harness::redis`), the NDJSON client
//! (`harness::client`), and rooms, files and temp dirs (`harness::fixtures`). The protocol model the property tests
//! share with the crate's own tests is the library's `test_support` module (feature
//! `test-support`, on for test builds).
//!
//! `fault_sweep` is the fault-injection sweep of the real binary: it needs strace and runs as a
//! step of its own (`bash .ci/fault-sweep`); `.ci/test` leaves it out with the filter
//! `not test(/^fault_sweep::/)`.

// First, so that its `for_each_backend!` is in scope in every module below.
#[macro_use]
mod harness;

mod cli;
mod cli_daemon;
mod cli_edit;
mod cli_numbers;
mod conformance;
mod connection;
mod crash;
mod fault_sweep;
mod faults;
mod file_storage;
mod framing;
mod hand_edits;
mod lookups;
mod memory;
mod model;
mod ops;
mod process;
mod redis;
mod redis_layout;
mod socket_swap;
mod systemd;
mod upgrade;
mod watch;

/// With `autotests = false`, a test file put directly in `tests/` (a new one, or one a merge
/// brought back) is never built or run, and a file in `tests/it/` without its `mod` line here
/// neither: both would pass by not existing.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    use std::path::Path;
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let entries = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| {
                e.expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let stray: Vec<String> = entries(&tests)
        .into_iter()
        .filter(|n| n != "it" && (n.ends_with(".rs") || tests.join(n).is_dir()))
        .collect();
    assert!(
        stray.is_empty(),
        "tests/{stray:?} would never run: move each to tests/it/ (git mv) and add its `mod` line \
         to tests/it/main.rs"
    );
    let main = std::fs::read_to_string(tests.join("it/main.rs")).expect("read tests/it/main.rs");
    let undeclared: Vec<String> = entries(&tests.join("it"))
        .into_iter()
        .map(|n| n.trim_end_matches(".rs").to_string())
        .filter(|m| m != "main" && !main.contains(&format!("mod {m};\n")))
        .collect();
    assert!(
        undeclared.is_empty(),
        "tests/it/{undeclared:?} would never run: add `mod NAME;` to tests/it/main.rs"
    );
}
