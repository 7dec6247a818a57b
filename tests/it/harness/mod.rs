//! The harness every integration test shares, split by job:
//!
//! - [`process`]: child processes of a test: never left behind, never fed the developer's
//!   environment, waited on with a time limit;
//! - [`daemon`]: the real `moviematch-storaged` binary started in its own temp dir, stopped,
//!   signalled, restarted, its logs read;
//! - [`redis`]: a private `redis-server` per test, and the stores the library-level suites open;
//! - [`client`]: `Conn`, one NDJSON connection, and the checks on what it answers;
//! - [`fixtures`]: rooms, room file names, files and directories, temp dirs.
//!
//! Layout of a test's temp dir: `rooms/` (storagePath), `storaged.sock`, `daemon-N.stderr` /
//! `daemon-N.stdout` (one pair per run), `config.yaml` when a test writes one.

pub mod client;
pub mod daemon;
pub mod fixtures;
pub mod process;
pub mod redis;

pub use client::*;
pub use daemon::*;
pub use fixtures::*;
pub use process::*;

/// Runs each listed `fn name(backend: Backend)` once per backend, as `memory::name` and `file::name`.
#[allow(unused_macros)]
macro_rules! for_each_backend {
    ($($test:ident),* $(,)?) => {
        mod memory { $( #[test] fn $test() { super::$test(crate::harness::Backend::Memory) } )* }
        mod file { $( #[test] fn $test() { super::$test(crate::harness::Backend::File) } )* }
        mod redis { $( #[test] fn $test() { super::$test(crate::harness::Backend::Redis) } )* }
    };
}
