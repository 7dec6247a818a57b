//! The daemon's settings: where each one comes from, how it is parsed and checked, and the
//! one-line error that names a bad one.
//!
//! Every setting is one row of [`SETTINGS`]: its camelCase key in the YAML file, its environment
//! variable, its flag, its default and one parser from text. A value is taken from the first
//! source that has it (command-line flag, then environment, then the YAML file named by
//! `--config` or `STORAGE_CONFIG`, then the default) and parsed the same way whatever the source,
//! so the sources cannot drift apart. An empty environment variable counts as unset, as a
//! `STORAGE_TYPE=` line in a compose file usually means "not configured".
//!
//! The file is read by `config/file.rs`, which keeps each scalar's text as written rather than
//! YAML's guess at its type: an unquoted `socketMode: 0660` stays the octal digits `0660` (not decimal 660 or
//! 432), and `maxConnections: 100` means the same as `maxConnections: "100"`. Keys this module
//! does not know produce a warning, never an error, because MovieMatch's own `config.yaml` (with
//! `servers`, `port`, `plexToken`, ...) may be shared with the daemon.
//!
//! This module never touches the filesystem except to read the config file, never reads the
//! process environment itself (the caller passes a lookup, so tests don't mutate it), never
//! resolves paths (relative ones stay relative to the daemon's working directory, not to the
//! config file) and never logs: warnings are returned for the caller to log once logging is up.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, Command};

use file::{FileEntry, FileValue};

mod file;
#[cfg(test)]
mod tests;

/// Defines a setting with a fixed set of words, its `Display`, and the list help and errors show.
macro_rules! keyword_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value, in the order help and error messages list them.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The word that names this value in configuration and logs.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),+ }
            }

            /// Case-insensitive, so `STORAGE_TYPE=File` works; the error text lists the words.
            fn parse(text: &str) -> Result<Self, String> {
                let text = text.trim();
                Self::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str().eq_ignore_ascii_case(text))
                    .ok_or_else(|| one_of(Self::ALL.iter().map(|value| value.as_str())))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum! {
    /// Where rooms are kept (PROTOCOL.md section 5).
    StorageType {
        /// Nothing is persisted: development and tests.
        Memory => "memory",
        /// One JSON file per room in `storage_path`.
        File => "file",
        /// A Redis server, so several daemons can share one set of rooms.
        Redis => "redis",
    }
}

keyword_enum! {
    /// When `ok` is sent for a change, for the file backend.
    Durability {
        /// After the change is fsync'd.
        Strict => "strict",
        /// Once applied in memory; on disk within `flush_interval`.
        Relaxed => "relaxed",
    }
}

keyword_enum! {
    /// How room passwords are stored.
    PasswordHashing {
        /// As given: the original plain-text behaviour.
        None => "none",
        /// As Argon2id PHC strings, checked with `verifyPassword`.
        Argon2 => "argon2",
    }
}

/// The daemon's effective settings. See [`SETTINGS`] for each one's key, variable and flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub storage_type: StorageType,
    /// Directory of room files, relative to the working directory unless absolute.
    pub storage_path: PathBuf,
    pub socket_path: PathBuf,
    /// Permission bits of the socket file; group access by default so MovieMatch can run as
    /// another user in the daemon's group.
    pub socket_mode: u32,
    pub durability: Durability,
    /// How late a change may reach disk under relaxed durability.
    pub flush_interval: Duration,
    pub redis_url: String,
    /// Prepended to every Redis key, so one Redis server can hold other data too.
    pub redis_prefix: String,
    /// Longest request line, so one client cannot make the daemon buffer without bound.
    pub max_request_bytes: usize,
    /// Open connections (watchers included) before new ones get `busy`.
    pub max_connections: usize,
    /// Bytes of requests and answers one connection may hold before the daemon stops reading
    /// it, so a client that does not read cannot make the daemon buffer for it without bound.
    pub max_unread_bytes: usize,
    /// How long a connection's socket may accept nothing before the connection is closed.
    pub write_timeout: Duration,
    /// Bytes of events one watcher may have waiting before it gets `overflow`.
    pub watch_queue_bytes: usize,
    /// Rooms unchanged for this long are deleted; `None` keeps them forever.
    pub room_expiry: Option<Duration>,
    /// One of error, warn, info, debug, trace (lowercase), ready for an `EnvFilter`.
    pub log_level: String,
    pub password_hashing: PasswordHashing,
    /// Peer uids allowed to connect; empty means any uid that can open the socket.
    pub allowed_uids: Vec<u32>,
    /// Peer gids allowed to connect; empty means any gid.
    pub allowed_gids: Vec<u32>,
}

impl Default for Config {
    /// The settings with nothing configured; the `default` column of [`SETTINGS`] says the same
    /// in words, and a test keeps the two in step.
    fn default() -> Self {
        Config {
            storage_type: StorageType::File,
            storage_path: PathBuf::from("./data/rooms"),
            socket_path: PathBuf::from("./data/storaged.sock"),
            socket_mode: 0o660,
            durability: Durability::Strict,
            flush_interval: Duration::from_millis(1000),
            redis_url: "redis://127.0.0.1:6379/0".to_owned(),
            redis_prefix: "moviematch:".to_owned(),
            max_request_bytes: 16 * 1024 * 1024,
            max_connections: 1024,
            max_unread_bytes: 4 * 1024 * 1024,
            write_timeout: Duration::from_millis(10_000),
            watch_queue_bytes: 1024 * 1024,
            room_expiry: None,
            log_level: "info".to_owned(),
            password_hashing: PasswordHashing::None,
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
        }
    }
}

/// What [`Config::load`] found.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Things worth logging that did not stop startup, such as unknown keys in the file.
    pub warnings: Vec<String>,
    /// The YAML file that was read, if any.
    pub config_file: Option<PathBuf>,
}

/// Why the daemon cannot start with this configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--help`, `--version` or a malformed command line; the binary calls `.exit()` on it.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The config file cannot be read, or is not YAML, or is not a mapping of keys to values.
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// One invalid value. `value` is shown quoted and escaped, so the message stays one line.
    #[error("invalid configuration: {key} = {value:?} (from {source_desc}): expected {expected}")]
    Invalid {
        key: &'static str,
        source_desc: String,
        value: String,
        expected: String,
    },
}

/// One setting: everything needed to find it in each source, document it, and parse it.
pub struct Setting {
    /// camelCase key in the YAML file; also names the setting in errors.
    pub key: &'static str,
    /// Environment variable; an empty value counts as unset.
    pub env: &'static str,
    /// Long flag, without the leading `--`.
    pub flag: &'static str,
    pub value_name: &'static str,
    /// The default as written in any source; [`Config::default`] must agree.
    pub default: &'static str,
    pub help: &'static str,
    /// Whether a YAML list is accepted (its items are joined with commas).
    list: bool,
    /// Parses the text and stores it; `Err` says what is allowed.
    apply: fn(&mut Config, &str) -> Result<(), String>,
}

/// Every setting, in the order `--help` lists them.
#[rustfmt::skip]
pub static SETTINGS: &[Setting] = &[
    Setting {
        key: "storageType", env: "STORAGE_TYPE", flag: "storage-type", value_name: "TYPE",
        default: "file", list: false,
        help: "Where rooms are kept: memory, file or redis",
        apply: |c, t| set(&mut c.storage_type, StorageType::parse(t)),
    },
    Setting {
        key: "storagePath", env: "STORAGE_PATH", flag: "storage-path", value_name: "DIR",
        default: "./data/rooms", list: false,
        help: "Directory of room files (file storage)",
        apply: |c, t| set(&mut c.storage_path, non_empty_path(t)),
    },
    Setting {
        key: "socketPath", env: "STORAGE_SOCKET", flag: "socket", value_name: "PATH",
        default: "./data/storaged.sock", list: false,
        help: "Unix socket to listen on (unless systemd passes one)",
        apply: |c, t| set(&mut c.socket_path, non_empty_path(t)),
    },
    Setting {
        key: "socketMode", env: "STORAGE_SOCKET_MODE", flag: "socket-mode", value_name: "OCTAL",
        default: "0660", list: false,
        help: "Permission bits of the socket file, in octal",
        apply: |c, t| set(&mut c.socket_mode, socket_mode(t)),
    },
    Setting {
        key: "durability", env: "STORAGE_DURABILITY", flag: "durability", value_name: "MODE",
        default: "strict", list: false,
        help: "strict: reply after fsync; relaxed: reply at once, reach disk within the flush interval",
        apply: |c, t| set(&mut c.durability, Durability::parse(t)),
    },
    Setting {
        key: "flushIntervalMs", env: "STORAGE_FLUSH_INTERVAL_MS", flag: "flush-interval-ms",
        value_name: "MS", default: "1000", list: false,
        help: "Longest delay before a relaxed change is on disk, in milliseconds",
        apply: |c, t| set(&mut c.flush_interval, positive(t, "milliseconds").map(Duration::from_millis)),
    },
    Setting {
        key: "redisUrl", env: "REDIS_URL", flag: "redis-url", value_name: "URL",
        default: "redis://127.0.0.1:6379/0", list: false,
        help: "Redis server (redis storage): redis://, rediss:// or unix:// URL",
        apply: |c, t| set(&mut c.redis_url, redis_url(t)),
    },
    Setting {
        key: "redisPrefix", env: "REDIS_PREFIX", flag: "redis-prefix", value_name: "PREFIX",
        default: "moviematch:", list: false,
        help: "Prefix of every Redis key the daemon uses",
        apply: |c, t| set(&mut c.redis_prefix, Ok(t.to_owned())),
    },
    Setting {
        key: "maxRequestBytes", env: "STORAGE_MAX_REQUEST_BYTES", flag: "max-request-bytes",
        value_name: "BYTES", default: "16777216", list: false,
        help: "Longest request line; longer ones get too_large",
        apply: |c, t| set(&mut c.max_request_bytes, max_request_bytes(t)),
    },
    Setting {
        key: "maxConnections", env: "STORAGE_MAX_CONNECTIONS", flag: "max-connections",
        value_name: "N", default: "1024", list: false,
        help: "Open connections (watches included) before new ones get busy",
        apply: |c, t| set(&mut c.max_connections, positive(t, "connections").and_then(to_usize)),
    },
    Setting {
        key: "maxUnreadBytes", env: "STORAGE_MAX_UNREAD_BYTES", flag: "max-unread-bytes",
        value_name: "BYTES", default: "4194304", list: false,
        help: "Bytes of requests and answers one connection may hold before it is not read",
        apply: |c, t| set(&mut c.max_unread_bytes, positive(t, "bytes").and_then(to_usize)),
    },
    Setting {
        key: "writeTimeoutMs", env: "STORAGE_WRITE_TIMEOUT_MS", flag: "write-timeout-ms",
        value_name: "MS", default: "10000", list: false,
        help: "Close a connection whose socket accepts nothing for this long, in milliseconds",
        apply: |c, t| set(&mut c.write_timeout, positive(t, "milliseconds").map(Duration::from_millis)),
    },
    Setting {
        key: "watchQueueBytes", env: "STORAGE_WATCH_QUEUE_BYTES", flag: "watch-queue-bytes",
        value_name: "BYTES", default: "1048576", list: false,
        help: "Bytes of events one watcher may have waiting before it gets overflow",
        apply: |c, t| set(&mut c.watch_queue_bytes, positive(t, "bytes").and_then(to_usize)),
    },
    Setting {
        key: "roomExpiry", env: "STORAGE_ROOM_EXPIRY", flag: "room-expiry", value_name: "AGE",
        default: "off", list: false,
        help: "Delete rooms unchanged for this long: e.g. 30s, 5m, 12h, 7d, or off",
        apply: |c, t| set(&mut c.room_expiry, room_expiry(t)),
    },
    Setting {
        key: "logLevel", env: "STORAGE_LOG_LEVEL", flag: "log-level", value_name: "LEVEL",
        default: "info", list: false,
        help: "error, warn, info, debug or trace",
        apply: |c, t| set(&mut c.log_level, log_level(t)),
    },
    Setting {
        key: "passwordHashing", env: "STORAGE_PASSWORD_HASHING", flag: "password-hashing",
        value_name: "HASH", default: "none", list: false,
        help: "How saved room passwords are stored: none (plain text) or argon2",
        apply: |c, t| set(&mut c.password_hashing, PasswordHashing::parse(t)),
    },
    Setting {
        key: "allowedUids", env: "STORAGE_ALLOWED_UIDS", flag: "allowed-uids", value_name: "UIDS",
        default: "", list: true,
        help: "Comma-separated peer uids allowed to connect; empty allows any",
        apply: |c, t| set(&mut c.allowed_uids, id_list(t)),
    },
    Setting {
        key: "allowedGids", env: "STORAGE_ALLOWED_GIDS", flag: "allowed-gids", value_name: "GIDS",
        default: "", list: true,
        help: "Comma-separated peer gids allowed to connect; empty allows any",
        apply: |c, t| set(&mut c.allowed_gids, id_list(t)),
    },
];

/// Names the YAML file, below the `--config` flag.
const CONFIG_ENV: &str = "STORAGE_CONFIG";

impl Config {
    /// Parses `args` (`args[0]` is the program name) with clap, reads the YAML file if `--config` is
    /// given (env `STORAGE_CONFIG` also names it; the flag wins), looks up environment variables
    /// through `env` (so tests pass a closure instead of touching the process environment), and
    /// merges: flag > environment > file > default.
    pub fn load<I, T>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = command().try_get_matches_from(args)?;
        let lookup = |name: &str| env(name).filter(|value| !value.is_empty());
        let config_file = matches
            .get_one::<PathBuf>("config")
            .cloned()
            .or_else(|| lookup(CONFIG_ENV).map(PathBuf::from));
        let file_name = config_file
            .as_deref()
            .map_or(String::new(), |p| p.display().to_string());
        let mut file = match &config_file {
            Some(path) => file::read(path).map_err(|message| ConfigError::File {
                path: path.clone(),
                message,
            })?,
            None => Vec::new(),
        };

        let mut config = Config::default();
        for setting in SETTINGS {
            // Taken out whichever source wins, so that only keys not ours are left to warn about.
            let in_file = file.iter().position(|entry| entry.key == setting.key);
            let in_file = in_file.map(|at| file.remove(at));
            let (text, source_desc) = if let Some(text) = matches.get_one::<String>(setting.key) {
                (text.clone(), format!("flag --{}", setting.flag))
            } else if let Some(text) = lookup(setting.env) {
                (text, format!("environment variable {}", setting.env))
            } else if let Some(entry) = in_file {
                match file_text(setting, entry, &file_name)? {
                    Some(found) => found,
                    None => continue,
                }
            } else {
                continue;
            };
            (setting.apply)(&mut config, &text).map_err(|expected| ConfigError::Invalid {
                key: setting.key,
                source_desc,
                // A Redis URL may carry a password: never repeat it.
                value: match setting.key {
                    "redisUrl" => crate::remote::redact(&text),
                    _ => text,
                },
                expected,
            })?;
        }

        // Whatever is left in the file was not a setting of ours.
        let warnings = file
            .iter()
            .map(|entry| unknown_key_warning(&file_name, &entry.key))
            .collect();
        Ok(Loaded {
            config,
            warnings,
            config_file,
        })
    }
}

/// The clap command: one flag per row of [`SETTINGS`] plus `--config`, all read as text so that
/// flags go through the same parsers as the other sources.
pub fn command() -> Command {
    let settings = SETTINGS.iter().map(|setting| {
        let default = if setting.default.is_empty() {
            "empty"
        } else {
            setting.default
        };
        Arg::new(setting.key)
            .long(setting.flag)
            .value_name(setting.value_name)
            .help(format!(
                "{}\n[env: {}] [default: {default}]",
                setting.help, setting.env
            ))
    });
    Command::new("moviematch-storaged")
        // Fixed rather than taken from argv[0], so help reads the same through symlinks and tests.
        .bin_name("moviematch-storaged")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Keeps MovieMatch rooms and serves them over a Unix socket (NDJSON protocol)")
        .after_help(
            "Each setting comes from, highest first: its flag, its environment variable, the YAML \
             file named by --config (camelCase keys such as storageType), its default. Unknown \
             keys in the file are ignored with a warning, so MovieMatch's config.yaml can hold \
             these settings too.",
        )
        // A wrapper script may add a flag the caller already gave: the last one wins.
        .args_override_self(true)
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help(format!(
                    "YAML file with settings (camelCase keys)\n[env: {CONFIG_ENV}] [default: none]"
                )),
        )
        .args(settings)
}

/// The text of a setting found in the file and where it came from; `None` for a YAML null.
fn file_text(
    setting: &Setting,
    entry: FileEntry,
    file_name: &str,
) -> Result<Option<(String, String)>, ConfigError> {
    let source_desc = format!("config file {file_name} line {}", entry.line);
    match entry.value {
        FileValue::Null => Ok(None),
        FileValue::Scalar(text) => Ok(Some((text, source_desc))),
        FileValue::List(items) if setting.list => Ok(Some((items.join(","), source_desc))),
        other => Err(ConfigError::Invalid {
            key: setting.key,
            source_desc,
            value: other.to_string(),
            expected: "a single value".to_owned(),
        }),
    }
}

fn unknown_key_warning(path: &str, key: &str) -> String {
    // A key that differs only in case is almost certainly a typo of ours, not MovieMatch's.
    match SETTINGS
        .iter()
        .find(|setting| setting.key.eq_ignore_ascii_case(key))
    {
        Some(setting) => format!(
            "config file {path}: unknown key {key:?} ignored (did you mean {:?}?)",
            setting.key
        ),
        None => format!("config file {path}: unknown key {key:?} ignored"),
    }
}

// ---- Parsers: text in, value or "what is allowed" out. Shared by every source. ----

fn set<T>(field: &mut T, value: Result<T, String>) -> Result<(), String> {
    *field = value?;
    Ok(())
}

fn one_of<'a>(words: impl Iterator<Item = &'a str>) -> String {
    format!("one of {}", words.collect::<Vec<_>>().join(", "))
}

fn non_empty_path(text: &str) -> Result<PathBuf, String> {
    // Kept as given, spaces included: a path is the one value where whitespace can be meant.
    if text.is_empty() {
        return Err("a non-empty path".to_owned());
    }
    Ok(PathBuf::from(text))
}

/// Digits only (no sign, no `_`, no spaces), so `-1` and `+1` are refused rather than guessed at.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn positive(text: &str, unit: &str) -> Result<u64, String> {
    digits(text.trim())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("a positive whole number of {unit}"))
}

fn to_usize(n: u64) -> Result<usize, String> {
    usize::try_from(n).map_err(|_| format!("a number no larger than {}", usize::MAX))
}

/// The smallest `maxRequestBytes`: below this even a new, nearly empty room would not fit in a
/// request, so a smaller limit can only be a mistake (a missing "K" or "M").
const MIN_REQUEST_BYTES: u64 = 1024;

fn max_request_bytes(text: &str) -> Result<usize, String> {
    match digits(text.trim()) {
        Some(n) if n >= MIN_REQUEST_BYTES => to_usize(n),
        _ => Err(format!(
            "a whole number of bytes, at least {MIN_REQUEST_BYTES} (a smaller limit would refuse \
             even a new, empty room)"
        )),
    }
}

fn socket_mode(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let octal = text
        .strip_prefix("0o")
        .or_else(|| text.strip_prefix("0O"))
        .unwrap_or(text);
    let valid = !octal.is_empty() && octal.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(octal, 8) {
        Ok(mode) if valid && mode <= 0o777 => Ok(mode),
        _ => {
            Err("octal permission digits no larger than 0777, such as \"0660\" or \"0o600\"".into())
        }
    }
}

fn redis_url(text: &str) -> Result<String, String> {
    use redis::IntoConnectionInfo;
    let text = text.trim();
    let expected = "a URL such as redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH";
    let schemes = ["redis://", "rediss://", "unix://"];
    if !schemes.iter().any(|scheme| text.starts_with(*scheme)) {
        return Err(expected.to_owned());
    }
    // The redis crate's own parser, so that what passes here also connects the same way.
    match text.into_connection_info() {
        Ok(_) => Ok(text.to_owned()),
        Err(e) => Err(format!(
            "{expected} ({})",
            crate::remote::redact(&e.to_string())
        )),
    }
}

fn room_expiry(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let expected =
        || "a positive whole number followed by s, m, h or d (like 30s, 12h, 7d), or off";
    // A non-ASCII last character cannot be split off as one byte, and is no unit anyway.
    let (number, unit) = text
        .split_at_checked(text.len().saturating_sub(1))
        .unwrap_or(("", ""));
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(expected().to_owned()),
    };
    digits(number)
        .filter(|&n| n > 0)
        .and_then(|n| n.checked_mul(seconds_per_unit))
        .map(|seconds| Some(Duration::from_secs(seconds)))
        .ok_or_else(|| expected().to_owned())
}

fn log_level(text: &str) -> Result<String, String> {
    let level = text.trim().to_ascii_lowercase();
    match level.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" => Ok(level),
        // MovieMatch's own logLevel (Deno's names) may sit in a shared config.yaml.
        "warning" => Ok("warn".to_owned()),
        "critical" => Ok("error".to_owned()),
        _ => Err(one_of(
            ["error", "warn", "info", "debug", "trace"].into_iter(),
        )),
    }
}

fn id_list(text: &str) -> Result<Vec<u32>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|id| digits(id.trim()).and_then(|id| u32::try_from(id).ok()))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| "comma-separated numeric ids (like 1000,1001), or empty for any".to_owned())
}
