//! moviematch-storaged: a storage daemon that keeps MovieMatch rooms.
//!
//! Module map (each module's own docs say what it owns and what it never does):
//!
//! - [`config`]: the daemon's settings, layered flags > environment > YAML file > defaults.
//! - [`client`]: a small blocking client for the NDJSON protocol (used by the CLI and tests).
