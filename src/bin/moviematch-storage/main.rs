//! `moviematch-storage`: the command-line client of a running moviematch-storaged
//! (PROTOCOL.md section 7).
//!
//! Thin on purpose: parse the arguments, build one request from the daemon's own request types
//! ([`moviematch_storaged::protocol::request`]), send it with
//! [`moviematch_storaged::client::Client`], print the result. It knows nothing about rooms:
//! validation is the daemon's job. `migrate` is the exception: it
//! contacts no daemon and runs [`moviematch_storaged::migrate`] itself.

use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod edit;
mod progress;
mod streams;

use streams::{export, import, migrate, watch};

use clap::{Args, Parser, Subcommand, ValueEnum};
use moviematch_storaged::client::{Client, ClientError};
use moviematch_storaged::protocol::request::{self, Call, Operation, RoomLookup};
use moviematch_storaged::room;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

const EXIT_CODES: &str = "\
Output:
  The daemon's answer as JSON on stdout (without its \"ok\" field), pretty-printed on a terminal
  and on one line otherwise. `get` prints the room itself, or null when there is none.
  `export` prints one room per line, `watch` one event per line, `import` {\"imported\":N},
  `migrate` {\"migrated\":N}.

Exit codes:
  0  success
  1  the answer is no: `get` found no room (prints null), `has` found none,
     `verify-password` rejected the password
  2  the daemon answered with an error, printed to stderr as `moviematch-storage: CODE: MESSAGE`;
     or `migrate` refused or failed (the message says why; a failed copy leaves the source as
     it was)
  3  the daemon could not be reached, or the connection broke
  4  bad arguments, or the input file could not be read or is not JSON (for `import`: a line
     that is not a valid room; nothing was imported)
  5  `watch` fell behind and the daemon dropped it (after printing {\"event\":\"overflow\"}):
     re-read the rooms you care about and watch again
  6  `edit`: the room changed or was deleted while you edited it, so your version was not
     saved (it is kept in the file named on stderr); run `edit` again";

#[derive(Parser)]
#[command(
    name = "moviematch-storage",
    version,
    about = "Talk to a running moviematch-storaged daemon",
    after_help = EXIT_CODES
)]
struct Cli {
    /// The daemon's Unix socket
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        // After each command's own options in its help.
        display_order = 100,
        env = "STORAGE_SOCKET",
        default_value = "./data/storaged.sock"
    )]
    socket: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the daemon answers
    Ping,
    /// Show the daemon's version, backend, room count and more
    Stats,
    /// Print a room, or null (exit 1) when there is none
    Get {
        name: String,
        /// Print {"room":...,"revision":N} instead, for a later `save --expected-revision N`
        #[arg(long)]
        with_revision: bool,
    },
    /// Print {"exists":true|false}; exit 1 when the room does not exist
    Has { name: String },
    /// List rooms sorted by name
    List(ListFilters),
    /// Create or replace a room from a JSON object in FILE (stdin when FILE is - or absent)
    Save {
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
        /// Save only if the room's revision is still N (0: only if the room does not exist)
        #[arg(long, value_name = "N")]
        expected_revision: Option<u64>,
    },
    /// Delete a room (deleting a missing room succeeds with {"deleted":false})
    Delete {
        name: String,
        /// Delete only if the room's revision is still N
        #[arg(long, value_name = "N")]
        expected_revision: Option<u64>,
    },
    /// Return once every acknowledged change is on stable storage
    Flush,
    /// Write every room's latest state into its file now (file backend), before editing
    /// room files by hand; then edit, then send the daemon SIGHUP
    Fold,
    /// Edit a room in $VISUAL or $EDITOR (default vi) and save it, unless it changed meanwhile
    ///
    /// Fetches the room, opens it as pretty JSON in a private temporary file, and saves what
    /// you write back only if nobody changed the room in the meantime (expectedRevision); if
    /// somebody did, offers to edit again on the latest version (without a terminal: exit 6,
    /// your version kept in the file named on stderr). Unchanged: nothing is saved. Prints
    /// {"revision":N}; exit 1 when the room does not exist, 4 when your version is not a valid
    /// room (kept in the file named).
    Edit { name: String },
    /// Record a user's rating of a media in a room
    ///
    /// A user rates a media once: a second rating is ignored and prints {"added":false}.
    Rate {
        name: String,
        media: String,
        user: String,
        rating: Rating,
        /// When the rating was made, in milliseconds since the epoch (default: now)
        #[arg(long, value_name = "MS")]
        timestamp: Option<u64>,
    },
    /// Set how far a user got through a room's media
    Progress {
        name: String,
        user: String,
        progress: u64,
    },
    /// Check a room's password: prints {"valid":true|false}, exit 1 when it is wrong
    ///
    /// Note that other local users can see command-line arguments.
    VerifyPassword { name: String, password: String },
    /// Delete every room created before a time
    DeleteRooms {
        /// An RFC 3339 timestamp, e.g. 2025-01-01T00:00:00Z
        #[arg(long, value_name = "TIMESTAMP")]
        created_before: String,
    },
    /// Print every room as one JSON line, sorted by name: one consistent snapshot
    ///
    /// All rooms come from one `listRooms` answer, so the export is the state of one instant
    /// even while others write. Shows progress on stderr when it is a terminal.
    Export,
    /// Save the rooms of an export: one room per line of FILE (stdin when FILE is - or absent)
    ///
    /// Reads what `export` writes: one room object per line; blank lines are ignored. Every line is checked first: if one is not a valid room, its line number is reported
    /// (exit 4) and nothing is imported. Prints {"imported":N}. If the daemon refuses a room,
    /// the import stops there: the error names the line, and how many rooms (and which last)
    /// were imported before it (exit 2, or 3 when the connection broke).
    Import {
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
    },
    /// Print change events as JSON lines as they happen, until the daemon closes the connection
    ///
    /// Events: saved, rated, progress, deleted (see PROTOCOL.md). Exits 0 when the daemon ends
    /// the watch (it stops), 3 when the connection breaks, 5 after {"event":"overflow"} (this
    /// watcher fell behind and missed events: re-read the rooms and watch again).
    Watch {
        /// Only these rooms (default: every room)
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Copy every room between backends while no daemon uses them (no daemon is contacted)
    ///
    /// Rooms keep their JSON byte for byte, their revisions and their last-changed times; the
    /// copy is read back and compared with the source before this reports success. Refuses a
    /// storage directory a daemon holds, a Redis prefix a daemon announced itself on, and a
    /// target that already holds rooms (unless --force). Prints {"migrated":N}; shows progress
    /// on stderr when it is a terminal.
    Migrate {
        /// Where the rooms are: file:DIR, or redis://HOST:PORT/DB, rediss://..., unix://PATH
        #[arg(long, value_name = "URL")]
        from: String,
        /// Where they go, in the same forms
        #[arg(long, value_name = "URL")]
        to: String,
        /// Key prefix in a Redis source
        #[arg(long, value_name = "PREFIX", default_value = "moviematch:")]
        from_prefix: String,
        /// Key prefix in a Redis target
        #[arg(long, value_name = "PREFIX", default_value = "moviematch:")]
        to_prefix: String,
        /// Copy into a target that already holds rooms, replacing those of the same name
        #[arg(long)]
        force: bool,
    },
}

/// The `listRooms` filters; all of them combine.
#[derive(Args)]
struct ListFilters {
    /// Only rooms created by this Plex user id
    #[arg(long, value_name = "ID")]
    creator_plex_user_id: Option<String>,
    /// Only rooms created by this Plex username
    #[arg(long, value_name = "NAME")]
    creator_plex_username: Option<String>,
    /// Only rooms created strictly before this RFC 3339 timestamp
    #[arg(long, value_name = "TIMESTAMP")]
    created_before: Option<String>,
    /// Only rooms created strictly after this RFC 3339 timestamp
    #[arg(long, value_name = "TIMESTAMP")]
    created_after: Option<String>,
    /// Only rooms whose name sorts strictly after NAME (pass the previous page's "next")
    #[arg(long, value_name = "NAME")]
    after: Option<String>,
    /// At most N rooms; "next" is then the name to pass to --after for the next page
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Only each room's name, sort, creation, creator, hasPassword, ratingCount and revision
    #[arg(long)]
    summary: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Rating {
    Like,
    Dislike,
}

/// Why the command failed, each with its own exit code.
enum Failure {
    Client(ClientError),
    /// The room file of `save` could not be read or parsed; nothing was sent.
    Input {
        source: String,
        reason: String,
    },
    Output(io::Error),
    /// `import` stopped part-way; the message says what was imported. Exits 2, or 3 when the
    /// connection broke.
    Import {
        message: String,
        connection: bool,
    },
    /// `watch` was dropped by the daemon for falling behind.
    Overflow,
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        Failure::Client(error)
    }
}

impl Failure {
    fn report(&self) -> ExitCode {
        match self {
            Failure::Client(error) if error.daemon_seems_down() => {
                eprintln!(
                    "moviematch-storage: {error}; start moviematch-storaged, or point --socket \
                     or STORAGE_SOCKET at the socket it listens on"
                );
                ExitCode::from(3)
            }
            Failure::Client(error @ (ClientError::Connect { .. } | ClientError::Io { .. })) => {
                eprintln!("moviematch-storage: {error}");
                ExitCode::from(3)
            }
            Failure::Client(error) => {
                eprintln!("moviematch-storage: {error}");
                ExitCode::from(2)
            }
            Failure::Input { source, reason } => {
                eprintln!("moviematch-storage: {source}: {reason}");
                ExitCode::from(4)
            }
            Failure::Output(error) => {
                eprintln!("moviematch-storage: cannot write the result: {error}");
                ExitCode::from(4)
            }
            Failure::Import {
                message,
                connection,
            } => {
                eprintln!("moviematch-storage: {message}");
                ExitCode::from(if *connection { 3 } else { 2 })
            }
            Failure::Overflow => {
                eprintln!(
                    "moviematch-storage: the watch fell behind and the daemon dropped it, so \
                     events were missed; re-read the rooms you care about (get, list or export) \
                     and watch again"
                );
                ExitCode::from(5)
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // clap uses 2 for usage errors, which here means a daemon-side error.
            return if error.exit_code() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            };
        }
    };
    run(cli).unwrap_or_else(|failure| failure.report())
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match &cli.command {
        Command::Export => return export(&cli.socket),
        Command::Import { file } => return import(&cli.socket, file.as_ref()),
        Command::Watch { names } => return watch(&cli.socket, names),
        Command::Edit { name } => return edit::edit(&cli.socket, name),
        Command::Migrate {
            from,
            to,
            from_prefix,
            to_prefix,
            force,
        } => return migrate(from, to, from_prefix, to_prefix, *force),
        _ => {}
    }
    // Built before connecting, so that a bad input file never reaches the daemon.
    let request = request_for(&cli.command)?;
    let mut client = Client::connect(&cli.socket)?;
    // The answer is printed from its text, never from a parsed copy: a room's numbers are
    // printed as the daemon holds them (`12345678901234567890123`, `2.50`, `-0` stay so).
    let line = client.call_raw(&*request)?;
    let fields: Fields = serde_json::from_slice(&line).map_err(|error| {
        Failure::Client(ClientError::Protocol {
            socket: cli.socket.clone(),
            reason: format!("an answer that is not a JSON object: {error}"),
        })
    })?;
    let (result, found) = result_of(&cli.command, &fields);
    print_text(result.as_bytes())?;
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The request for `command`, as the line to send.
fn request_for(command: &Command) -> Result<Box<RawValue>, Failure> {
    match command {
        Command::Ping => encoded(&request::Ping),
        Command::Stats => encoded(&request::Stats),
        Command::Get { name, .. } => encoded(&request::GetRoom {
            room_name: RoomLookup::new(name),
        }),
        Command::Has { name } => encoded(&request::HasRoom {
            room_name: RoomLookup::new(name),
        }),
        // Timestamps go as typed: the daemon judges them, and names a bad one.
        Command::List(filters) => encoded(&request::ListRooms::<&str> {
            creator_plex_user_id: filters.creator_plex_user_id.clone(),
            creator_plex_username: filters.creator_plex_username.clone(),
            created_before: filters.created_before.as_deref(),
            created_after: filters.created_after.as_deref(),
            after: filters.after.clone(),
            limit: filters
                .limit
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            summary: filters.summary,
        }),
        Command::Save {
            file,
            expected_revision,
        } => encoded(&request::SaveRoom {
            room: read_room(file.as_ref())?,
            expected_revision: *expected_revision,
        }),
        Command::Delete {
            name,
            expected_revision,
        } => encoded(&request::DeleteRoom {
            room_name: RoomLookup::new(name),
            expected_revision: *expected_revision,
        }),
        Command::Flush => encoded(&request::Flush),
        Command::Fold => encoded(&request::Fold),
        Command::Rate {
            name,
            media,
            user,
            rating,
            timestamp,
        } => encoded(&request::AddRating {
            room_name: RoomLookup::new(name),
            media_id: media.clone(),
            user_name: user.clone(),
            rating: match rating {
                Rating::Like => room::Rating::Like,
                Rating::Dislike => room::Rating::Dislike,
            },
            timestamp: *timestamp,
        }),
        Command::Progress {
            name,
            user,
            progress,
        } => encoded(&request::SetProgress {
            room_name: RoomLookup::new(name),
            user_name: user.clone(),
            progress: *progress,
        }),
        Command::VerifyPassword { name, password } => encoded(&request::VerifyPassword {
            room_name: RoomLookup::new(name),
            password: password.clone(),
        }),
        Command::DeleteRooms { created_before } => encoded(&request::DeleteRooms {
            created_before: created_before.as_str(),
        }),
        Command::Export
        | Command::Import { .. }
        | Command::Watch { .. }
        | Command::Edit { .. }
        | Command::Migrate { .. } => {
            unreachable!("streaming commands are run by their own functions")
        }
    }
}

/// `op` as a request line's JSON.
fn encoded<Op: Operation + Serialize>(op: &Op) -> Result<Box<RawValue>, Failure> {
    serde_json::value::to_raw_value(&Call::new(op))
        .map_err(|error| Failure::Output(io::Error::other(error)))
}

/// Reads the room for `save` from `file`, or stdin for `-` or none: its text as written, on
/// one line, so that every number reaches the daemon byte for byte.
fn read_room(file: Option<&PathBuf>) -> Result<Box<RawValue>, Failure> {
    let (source, bytes) = read_input(file)?;
    let invalid = |reason: String| Failure::Input {
        source: source.clone(),
        reason,
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
        .map_err(|error| invalid(format!("not valid JSON: {error}")))?;
    let compact = String::from_utf8(edit::reformat(&bytes, None))
        .map_err(|error| invalid(format!("not valid UTF-8: {error}")))?;
    RawValue::from_string(compact).map_err(|error| invalid(format!("not valid JSON: {error}")))
}

/// The whole of `file`, or of stdin for `-` or none, with the name to report it by.
fn read_input(file: Option<&PathBuf>) -> Result<(String, Vec<u8>), Failure> {
    let (source, bytes) = match file.filter(|path| path.as_os_str() != "-") {
        Some(path) => (path.display().to_string(), std::fs::read(path)),
        None => {
            let mut bytes = Vec::new();
            let read = io::stdin().lock().read_to_end(&mut bytes).map(|_| bytes);
            ("stdin".to_owned(), read)
        }
    };
    match bytes {
        Ok(bytes) => Ok((source, bytes)),
        Err(error) => Err(Failure::Input {
            source,
            reason: error.to_string(),
        }),
    }
}

/// The fields of an answer in the order the daemon sent them, each value as its text.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Fields<'a>, M::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push(field);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The answer without `ok` and `id`, as JSON text.
    fn without_envelope(&self) -> String {
        let mut text = String::from("{");
        for (key, value) in self.0.iter().filter(|(k, _)| k != "ok" && k != "id") {
            if text.len() > 1 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(key).unwrap_or_default());
            text.push(':');
            text.push_str(value.get());
        }
        text.push('}');
        text
    }
}

/// What to print for a successful answer, and whether the answer was yes (exit 0) rather than
/// no (exit 1, only for the commands whose help says so).
fn result_of(command: &Command, answer: &Fields) -> (String, bool) {
    let is_true = |field: &str| answer.get(field).is_some_and(|v| v.get() == "true");
    match command {
        Command::Get { with_revision, .. } => {
            let room = answer.get("room").map_or("null", RawValue::get);
            let found = room != "null";
            if *with_revision {
                (answer.without_envelope(), found)
            } else {
                (room.to_owned(), found)
            }
        }
        Command::Has { .. } => (answer.without_envelope(), is_true("exists")),
        Command::VerifyPassword { .. } => (answer.without_envelope(), is_true("valid")),
        _ => (answer.without_envelope(), true),
    }
}

fn print_json(value: &Value) -> Result<(), Failure> {
    print_text(value.to_string().as_bytes())
}

/// Prints JSON text: indented on a terminal, on one line otherwise, with every token (numbers,
/// strings) exactly as in `text`.
fn print_text(text: &[u8]) -> Result<(), Failure> {
    let stdout = io::stdout();
    let indent = stdout.is_terminal().then_some(2);
    let mut out = io::BufWriter::new(stdout.lock());
    let written = out
        .write_all(&edit::reformat(text, indent))
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        // The reader went away (`| head`): nothing left to tell anyone.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(Failure::Output),
    }
}

/// Whether a write failed because the reader went away (`| head`): nothing left to tell anyone.
fn reader_gone(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::BrokenPipe
}
