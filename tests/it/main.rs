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
mod model;
mod ops;
mod process;
mod redis;
mod socket_swap;
mod systemd;
mod upgrade;
mod watch;
