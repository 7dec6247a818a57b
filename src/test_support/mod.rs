//! Test-only code shared by the crate's own tests and the integration tests (`tests/it`):
//! compiled for `cargo test` and under the `test-support` feature, which the integration tests
//! turn on through the crate's dev-dependency on itself. A plain `cargo build` never compiles it.

pub mod model;
