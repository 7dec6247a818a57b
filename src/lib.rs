//! moviematch-storaged: a storage daemon that keeps MovieMatch rooms.
//!
//! A single storage actor owns the backend and applies every mutation in order, fed through a
//! bounded channel; a Unix-socket listener speaks newline-delimited JSON; on SIGTERM the daemon
//! finishes what it received, flushes and fsyncs, and exits. ARCHITECTURE.md tells the whole
//! story; this is the map.
//!
//! Module map (each module's own docs say what it owns and what it never does):
//!
//! - [`protocol`]: the wire contract, shared by the daemon and its clients: framing
//!   ([`protocol::codec`]), decoding a line ([`protocol::decode`], half surrogate pairs masked
//!   by `room::surrogate`), one type per operation ([`protocol::request`]), response lines
//!   and reply types ([`protocol::response`]), `watch` event lines ([`protocol::event`]), error codes.
//! - [`room`]: the room and its changes, below everything else: names, the section-4 rules in
//!   one table ([`room::validate`](mod@room::validate)) read by the validator and by the
//!   one-pass fast path ([`room::prepare`], over the [`room::scan`] scanner), the stored forms
//!   ([`room::body`], [`room::entry`]), mutations and changes ([`room::change`]), and the
//!   errors ([`room::error`]).
//! - [`service`]: what each operation means: requests in, response lines out (with the
//!   optional Argon2id hashing of room passwords, `service/password.rs`).
//! - [`store`]: the storage actor, its handle, and the pure functions that apply a mutation
//!   ([`store::apply`]).
//! - [`backend`]: the contract for keeping rooms across restarts, and its implementations:
//!   [`backend::memory`], [`backend::file`] (room files + journal).
//! - [`remote`]: rooms in a Redis server shared by several daemons (`storageType: redis`):
//!   the key layout, the Lua scripts that keep every mutation atomic, the event subscription.
//! - [`rooms`]: the seam. Where rooms live ([`rooms::Place`]) is chosen once, at open; above it
//!   everything (service, watch, daemon, migrate, tests) speaks to [`rooms::Rooms`] and never
//!   asks which backend it has.
//! - [`server`]: the Unix-socket listener and one handler per connection.
//! - [`server::watch`]: change events for `watch` connections (a connection mode of the server).
//! - [`daemon`]: wiring it all from a [`config::Config`], and the shutdown order.
//! - [`config`]: the daemon's settings, layered flags > environment > YAML file > defaults.
//! - [`migrate`]: copying every room between two places offline (`moviematch-storage migrate`).
//! - [`logging`]: tracing to stderr, journald-friendly.
//! - [`heap`]: the daemon's allocator (mimalloc) and its settings.
//! - [`systemd`]: readiness, watchdog and socket activation under systemd.
//! - [`client`]: a small blocking client that sends [`protocol::request`] types and reads
//!   [`protocol::response`] types (used by the CLI and tests).
//! - `test_support` (tests only, feature `test-support`): the protocol model the property tests
//!   share.

#[cfg(test)]
mod allocated;
pub mod backend;
pub mod client;
pub mod config;
pub mod daemon;
pub mod heap;
pub mod logging;
pub mod migrate;
pub mod protocol;
pub mod remote;
pub mod room;
pub mod rooms;
pub mod server;
pub mod service;
pub mod store;
pub mod systemd;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
