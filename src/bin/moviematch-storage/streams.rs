//! The commands that move many rooms or events: `export`, `import`, `watch`, `migrate`.

use std::cell::Cell;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use moviematch_storaged::client::{Client, ClientError};
use moviematch_storaged::protocol::request::{Call, ListRooms, SaveRoom};
use moviematch_storaged::protocol::response::RoomList;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::progress::Progress;
use crate::{print_json, read_input, reader_gone, Failure};

/// `export`: every room from ONE `listRooms` answer (the daemon builds it from one immutable
/// snapshot, so the export is consistent; pages of `limit`/`after` would not be), printed one
/// compact room per line. The answer is read as one line and the rooms are borrowed from it as
/// raw JSON, so memory holds the answer once, not a parsed copy besides.
pub fn export(socket: &std::path::Path) -> Result<ExitCode, Failure> {
    let mut client = Client::connect(socket)?;
    let mut progress = Progress::new("exporting");
    progress.message("waiting for the daemon's snapshot");
    let line = client.call_raw(&Call::new(&ListRooms::<&str>::default()))?;
    let RoomList::<&RawValue> { rooms, .. } = serde_json::from_slice(&line).map_err(|error| {
        Failure::Client(ClientError::Protocol {
            socket: socket.to_owned(),
            reason: format!("listRooms answered without a \"rooms\" array: {error}"),
        })
    })?;
    let total = rooms.len();
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut written = || -> io::Result<()> {
        for (done, room) in rooms.iter().enumerate() {
            let text = room.get();
            // The daemon sends compact JSON; anything else is compacted so a room stays one
            // line, with its tokens (numbers) as they are.
            if text.contains('\n') {
                out.write_all(&crate::edit::reformat(text.as_bytes(), None))?;
            } else {
                out.write_all(text.as_bytes())?;
            }
            out.write_all(b"\n")?;
            progress.update(done + 1, total);
        }
        out.flush()
    };
    let result = written();
    progress.finish();
    match result {
        Err(error) if !reader_gone(&error) => Err(Failure::Output(error)),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// One line of an `import` file that passed the local checks.
struct ImportLine<'a> {
    number: usize,
    name: String,
    room: &'a RawValue,
}

/// `import`: two passes. First every line is read and checked (JSON, an object, a valid room),
/// so a bad line stops the import before anything is sent; then the rooms are pipelined to the
/// daemon, stopping at the first one it refuses.
pub fn import(socket: &std::path::Path, file: Option<&PathBuf>) -> Result<ExitCode, Failure> {
    let (source, bytes) = read_input(file)?;
    let lines = check_import_lines(&source, &bytes)?;
    let mut client = Client::connect(socket)?;

    let total = lines.len();
    let mut progress = Progress::new("importing");
    let stop = Cell::new(false);
    let sent = Cell::new(0usize);
    let mut answered = 0usize;
    let mut imported = 0usize;
    let mut last_imported: Option<&ImportLine> = None;
    let mut failures: Vec<(&ImportLine, ClientError)> = Vec::new();
    let requests = lines.iter().take_while(|_| !stop.get()).map(|line| {
        sent.set(sent.get() + 1);
        // The room's bytes go verbatim.
        Call::new(SaveRoom {
            room: line.room,
            expected_revision: None,
        })
    });
    let outcome = client.pipeline(requests, |response| {
        let line = &lines[answered];
        answered += 1;
        match response {
            Ok(_) => {
                imported += 1;
                last_imported = Some(line);
            }
            Err(error) => {
                // Whatever went wrong (a full disk, say) would most likely go wrong again.
                stop.set(true);
                failures.push((line, error));
            }
        }
        progress.update(answered, total);
    });
    progress.finish();

    if outcome.is_ok() && failures.is_empty() {
        print_json(&json!({"imported": imported}))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut message = String::from("import stopped: ");
    for (line, error) in &failures {
        message.push_str(&format!(
            "{source}: line {} (room {}): {error}; ",
            line.number,
            quoted(&line.name)
        ));
    }
    if let Err(error) = &outcome {
        message.push_str(&format!("{error}; "));
    }
    message.push_str(&format!("imported {imported} of {total} rooms"));
    match last_imported {
        Some(line) => message.push_str(&format!(
            ", the last one imported being {} (line {})",
            quoted(&line.name),
            line.number
        )),
        None => message.push_str(", none of them"),
    }
    if outcome.is_err() && answered < sent.get() {
        message.push_str(&format!(
            "; {} more were sent but not answered (they may or may not have been imported)",
            sent.get() - answered
        ));
    }
    if sent.get() < total {
        let first_unsent = lines[sent.get()].number;
        message.push_str(&format!("; lines from {first_unsent} on were not sent"));
    }
    let _ = print_json(&json!({
        "imported": imported,
        "lastImported": last_imported.map(|line| line.name.as_str()),
    }));
    Err(Failure::Import {
        message,
        connection: outcome.is_err(),
    })
}

fn quoted(name: &str) -> String {
    serde_json::to_string(name).unwrap_or_else(|_| name.to_owned())
}

/// The first pass of `import`: every non-blank line must be a valid room (the daemon's own
/// validation, so a line passing here is one the daemon accepts). Fails at the first bad line.
fn check_import_lines<'a>(source: &str, bytes: &'a [u8]) -> Result<Vec<ImportLine<'a>>, Failure> {
    let mut lines = Vec::new();
    let mut progress = Progress::new("checking");
    let total_bytes = bytes.len();
    let mut offset = 0usize;
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        offset += line.len() + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = |reason: String| Failure::Input {
            source: source.to_owned(),
            reason: format!("line {number}: {reason}; nothing was imported"),
        };
        let text =
            std::str::from_utf8(line).map_err(|error| bad(format!("not valid UTF-8 ({error})")))?;
        let room: &RawValue =
            serde_json::from_str(text).map_err(|error| bad(format!("not valid JSON ({error})")))?;
        let value: Value = serde_json::from_str(room.get())
            .map_err(|error| bad(format!("not valid JSON ({error})")))?;
        if !value.is_object() {
            return Err(bad("not a JSON object (one room per line)".to_owned()));
        }
        let valid = moviematch_storaged::room::validate(value)
            .map_err(|error| bad(format!("not a valid room: {error}")))?;
        lines.push(ImportLine {
            number,
            name: valid.name.as_str().to_owned(),
            room,
        });
        progress.update(offset.min(total_bytes), total_bytes);
    }
    progress.finish();
    Ok(lines)
}

/// `watch`: prints each event as one JSON line, flushed at once, until the daemon closes.
pub fn watch(socket: &std::path::Path, names: &[String]) -> Result<ExitCode, Failure> {
    let client = Client::connect(socket)?;
    let mut events = client.watch((!names.is_empty()).then_some(names))?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    // Each event is printed as the daemon sent it, so numbers (progress) stay as written.
    while let Some(line) = events.next_event_line()? {
        #[derive(Deserialize)]
        struct Kind {
            event: Option<String>,
        }
        let Ok(kind) = serde_json::from_slice::<Kind>(&line) else {
            return Err(Failure::Client(ClientError::Protocol {
                socket: socket.to_owned(),
                reason: "an event that is not a JSON object".to_owned(),
            }));
        };
        let printed = out
            .write_all(&crate::edit::reformat(&line, None))
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        match printed {
            Err(error) if reader_gone(&error) => return Ok(ExitCode::SUCCESS),
            Err(error) => return Err(Failure::Output(error)),
            Ok(()) => {}
        }
        if kind.event.as_deref() == Some("overflow") {
            return Err(Failure::Overflow);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn migrate(
    from: &str,
    to: &str,
    from_prefix: &str,
    to_prefix: &str,
    force: bool,
) -> Result<ExitCode, Failure> {
    use moviematch_storaged::migrate::{self, Endpoint};
    let bad = |reason: String| Failure::Input {
        source: "migrate".into(),
        reason,
    };
    let from = Endpoint::parse(from, from_prefix).map_err(bad)?;
    let to = Endpoint::parse(to, to_prefix).map_err(bad)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::Output)?;
    let mut bars: Vec<(&'static str, Progress)> = Vec::new();
    let migrated = runtime.block_on(migrate::migrate(&from, &to, force, |verb, done, total| {
        let verb: &'static str = if verb == "copying" {
            "copying"
        } else {
            "checking"
        };
        if bars.last().is_none_or(|(v, _)| *v != verb) {
            if let Some((_, bar)) = bars.last_mut() {
                bar.finish();
            }
            bars.push((verb, Progress::new(verb)));
        }
        if let Some((_, bar)) = bars.last_mut() {
            bar.update(done, total);
        }
    }));
    if let Some((_, bar)) = bars.last_mut() {
        bar.finish();
    }
    match migrated {
        Ok(done) => {
            print_json(&json!({ "migrated": done.rooms }))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("moviematch-storage: migrate: {e}");
            Ok(ExitCode::from(2))
        }
    }
}
