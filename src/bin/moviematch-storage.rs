//! `moviematch-storage`: the command-line client of a running moviematch-storaged
//! (PROTOCOL.md section 7).
//!
//! Thin on purpose: parse the arguments, build one request, send it with
//! [`moviematch_storaged::client::Client`], print the result. It knows the request field names
//! and nothing else about rooms: validation is the daemon's job.

use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use moviematch_storaged::client::{Client, ClientError};
use serde_json::{json, Value};

const EXIT_CODES: &str = "\
Output:
  The daemon's answer as JSON on stdout (without its \"ok\" field), pretty-printed on a terminal
  and on one line otherwise. `get` prints the room itself, or null when there is none.

Exit codes:
  0  success
  1  the answer is no: `get` found no room (prints null), `has` found none,
     `verify-password` rejected the password
  2  the daemon answered with an error, printed to stderr as `moviematch-storage: CODE: MESSAGE`
  3  the daemon could not be reached, or the connection broke
  4  bad arguments, or the input file could not be read or is not JSON";

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
    // Built before connecting, so that a bad input file never reaches the daemon.
    let request = request_for(&cli.command)?;
    let mut client = Client::connect(&cli.socket)?;
    let response = client.call(&request)?;
    let (result, found) = result_of(&cli.command, response);
    print_json(&result)?;
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The request for `command`. Options left out are `null` here and dropped below, so the daemon
/// sees only what was given.
fn request_for(command: &Command) -> Result<Value, Failure> {
    let request = match command {
        Command::Ping => json!({"op": "ping"}),
        Command::Stats => json!({"op": "stats"}),
        Command::Get { name, .. } => json!({"op": "getRoom", "roomName": name}),
        Command::Has { name } => json!({"op": "hasRoom", "roomName": name}),
        Command::List(filters) => json!({
            "op": "listRooms",
            "creatorPlexUserId": filters.creator_plex_user_id,
            "creatorPlexUsername": filters.creator_plex_username,
            "createdBefore": filters.created_before,
            "createdAfter": filters.created_after,
            "after": filters.after,
            "limit": filters.limit,
            "summary": filters.summary.then_some(true),
        }),
        Command::Save {
            file,
            expected_revision,
        } => json!({
            "op": "saveRoom",
            "room": read_room(file.as_ref())?,
            "expectedRevision": expected_revision,
        }),
        Command::Delete {
            name,
            expected_revision,
        } => json!({
            "op": "deleteRoom",
            "roomName": name,
            "expectedRevision": expected_revision,
        }),
        Command::Flush => json!({"op": "flush"}),
        Command::Rate {
            name,
            media,
            user,
            rating,
            timestamp,
        } => json!({
            "op": "addRating",
            "roomName": name,
            "mediaId": media,
            "userName": user,
            "rating": match rating {
                Rating::Like => "like",
                Rating::Dislike => "dislike",
            },
            "timestamp": timestamp,
        }),
        Command::Progress {
            name,
            user,
            progress,
        } => json!({
            "op": "setProgress",
            "roomName": name,
            "userName": user,
            "progress": progress,
        }),
        Command::VerifyPassword { name, password } => json!({
            "op": "verifyPassword",
            "roomName": name,
            "password": password,
        }),
        Command::DeleteRooms { created_before } => {
            json!({"op": "deleteRooms", "createdBefore": created_before})
        }
    };
    Ok(without_nulls(request))
}

fn without_nulls(request: Value) -> Value {
    match request {
        Value::Object(fields) => fields.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        other => other,
    }
}

/// Reads the room for `save` from `file`, or stdin for `-` or none.
fn read_room(file: Option<&PathBuf>) -> Result<Value, Failure> {
    let (source, bytes) = match file.filter(|path| path.as_os_str() != "-") {
        Some(path) => (path.display().to_string(), std::fs::read(path)),
        None => {
            let mut bytes = Vec::new();
            let read = io::stdin().lock().read_to_end(&mut bytes).map(|_| bytes);
            ("stdin".to_owned(), read)
        }
    };
    let bytes = bytes.map_err(|error| Failure::Input {
        source: source.clone(),
        reason: error.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|error| Failure::Input {
        source,
        reason: format!("not valid JSON: {error}"),
    })
}

/// What to print for a successful `response`, and whether the answer was yes (exit 0) rather
/// than no (exit 1, only for the commands whose help says so).
fn result_of(command: &Command, response: Value) -> (Value, bool) {
    let mut result = without_envelope(response);
    let is_true = |result: &Value, field: &str| result.get(field) == Some(&Value::Bool(true));
    match command {
        Command::Get { with_revision, .. } => {
            let found = result.get("room").is_some_and(|room| !room.is_null());
            if !with_revision {
                result = result
                    .get_mut("room")
                    .map(Value::take)
                    .unwrap_or(Value::Null);
            }
            (result, found)
        }
        Command::Has { .. } => {
            let found = is_true(&result, "exists");
            (result, found)
        }
        Command::VerifyPassword { .. } => {
            let found = is_true(&result, "valid");
            (result, found)
        }
        _ => (result, true),
    }
}

fn without_envelope(response: Value) -> Value {
    match response {
        // Rebuilt rather than removed in place, which could reorder the remaining fields.
        Value::Object(fields) => fields
            .into_iter()
            .filter(|(key, _)| key != "ok" && key != "id")
            .collect(),
        other => other,
    }
}

fn print_json(value: &Value) -> Result<(), Failure> {
    let stdout = io::stdout();
    let pretty = stdout.is_terminal();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = if pretty {
        serde_json::to_writer_pretty(&mut out, value)
    } else {
        serde_json::to_writer(&mut out, value)
    }
    .map_err(io::Error::from)
    .and_then(|()| out.write_all(b"\n"))
    .and_then(|()| out.flush());
    match written {
        // The reader went away (`| head`): nothing left to tell anyone.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(Failure::Output),
    }
}
