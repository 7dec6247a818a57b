//! `edit NAME`: change a room by hand while the daemon runs, losing nothing (as `crontab -e`
//! and `kubectl edit` do).
//!
//! Fetch the room and its revision, write it pretty to a private temporary file, run
//! `$VISUAL`, else `$EDITOR`, else `vi` on it, and save what comes back with
//! `expectedRevision`: if anyone changed the room in the meantime (a rating, a save, a delete),
//! the daemon refuses and nothing is overwritten. Then, on a terminal, the user may edit again
//! on the latest version; otherwise the command exits 6 and says where the edited version is
//! kept. A file saved unchanged saves nothing. A file that is not valid JSON, renames the room,
//! or that the daemon finds invalid is offered for editing again on a terminal, and kept (exit
//! 4) otherwise.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use moviematch_storaged::client::{Client, ClientError};
use moviematch_storaged::protocol::request::{GetRoom, RoomLookup, SaveRoom};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::{print_json, Failure};

/// Exit code when the room changed while it was being edited and it was not edited again.
const EXIT_CONFLICT: u8 = 6;

/// A private temporary file holding the room being edited; removed when dropped unless kept.
struct EditFile {
    path: PathBuf,
    keep: bool,
}

impl EditFile {
    fn create(name: &str) -> Result<EditFile, Failure> {
        // The room's name, made safe for a file name, helps the user see what they edit.
        let tag: String = name
            .chars()
            .take(40)
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = std::env::temp_dir();
        for n in 0..100u32 {
            let path = dir.join(format!(
                "moviematch-edit-{}-{n}-{tag}.json",
                std::process::id()
            ));
            // 0600 and never through an existing file or symlink: the room holds its password.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(EditFile { path, keep: false }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(input_failure(&dir, e.to_string())),
            }
        }
        Err(input_failure(&dir, "no free temporary file name".into()))
    }

    fn write(&self, text: &[u8]) -> Result<(), Failure> {
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
            .map_err(|e| input_failure(&self.path, e.to_string()))?;
        file.write_all(text)
            .map_err(|e| input_failure(&self.path, e.to_string()))
    }

    fn read(&self) -> Result<Vec<u8>, Failure> {
        fs::read(&self.path).map_err(|e| input_failure(&self.path, e.to_string()))
    }
}

impl Drop for EditFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn input_failure(path: &Path, reason: String) -> Failure {
    Failure::Input {
        source: path.display().to_string(),
        reason,
    }
}

/// The editor to run: `$VISUAL`, else `$EDITOR`, else `vi`, as a shell command line (so
/// `code --wait` works).
fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned())
}

fn run_editor(editor: &str, file: &Path) -> Result<(), Failure> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file)
        .status()
        .map_err(|e| input_failure(file, format!("cannot run the editor `{editor}`: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(input_failure(
            file,
            format!("the editor `{editor}` failed ({status}); nothing was saved"),
        ))
    }
}

/// Asks a yes/no question on the terminal; `default` when the answer is empty.
fn ask(question: &str, default: bool) -> bool {
    eprint!("{question} [{}] ", if default { "Y/n" } else { "y/N" });
    let _ = io::stderr().flush();
    let mut answer = String::new();
    if io::stdin().lock().read_line(&mut answer).unwrap_or(0) == 0 {
        return false;
    }
    match answer.trim().to_ascii_lowercase().as_str() {
        "" => default,
        a => a.starts_with('y'),
    }
}

/// The room as pretty JSON (its text as the daemon holds it, only re-indented: numbers and
/// strings stay byte for byte) and its revision, or `None` when there is none.
fn fetch(client: &mut Client, name: &str) -> Result<Option<(Vec<u8>, u64)>, Failure> {
    let found = client.request(&GetRoom {
        room_name: RoomLookup::new(name),
    })?;
    Ok(match (found.room, found.revision) {
        (Some(room), Some(revision)) => {
            let mut text = reformat(room.get().as_bytes(), Some(2));
            text.push(b'\n');
            Some((text, revision))
        }
        _ => None,
    })
}

/// Valid JSON text with its whitespace changed only outside strings: indented by `indent`
/// spaces per level as `JSON.stringify(value, null, indent)` writes it, or all on one line.
pub fn reformat(json: &[u8], indent: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let newline = |out: &mut Vec<u8>, depth: usize| {
        if let Some(width) = indent {
            out.push(b'\n');
            out.extend(std::iter::repeat_n(b' ', depth * width));
        }
    };
    let mut bytes = json.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if in_string {
            out.push(b);
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                out.push(b);
                while bytes.next_if(|c| c.is_ascii_whitespace()).is_some() {}
                if let Some(close) = bytes.next_if(|&c| c == b'}' || c == b']') {
                    out.push(close); // `{}` and `[]` stay on one line
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => {
                out.push(b);
                if indent.is_some() {
                    out.push(b' ');
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => out.push(b),
        }
    }
    out
}

/// What became of one round of editing.
enum Round {
    Saved(u64),
    Unchanged,
    /// The text cannot be saved (the reason says why); edit it again or give up.
    Invalid(String),
    /// Someone changed the room meanwhile; it is now at this revision (0: deleted).
    Conflict(u64),
}

pub fn edit(socket: &Path, name: &str) -> Result<ExitCode, Failure> {
    let mut client = Client::connect(socket)?;
    let Some((room, mut revision)) = fetch(&mut client, name)? else {
        eprintln!("moviematch-storage: no room named {name:?}; create it with `save`");
        return Ok(ExitCode::from(1));
    };
    let interactive = io::stdin().is_terminal() && io::stderr().is_terminal();
    let editor = editor();
    let mut file = EditFile::create(name)?;
    let mut original = room;
    let mut text = original.clone();
    loop {
        file.write(&text)?;
        run_editor(&editor, &file.path)?;
        let edited = file.read()?;
        let round = save(&mut client, name, revision, &original, &edited)?;
        match round {
            Round::Saved(new) => {
                print_json(&json!({"revision": new}))?;
                return Ok(ExitCode::SUCCESS);
            }
            Round::Unchanged => {
                eprintln!("moviematch-storage: room {name:?} unchanged; nothing saved");
                print_json(&json!({"revision": revision}))?;
                return Ok(ExitCode::SUCCESS);
            }
            Round::Invalid(reason) => {
                eprintln!("moviematch-storage: {reason}");
                if interactive && ask("Edit it again?", true) {
                    text = edited;
                    continue;
                }
                file.keep = true;
                return Err(input_failure(
                    &file.path,
                    "your version is kept in this file; nothing was saved".into(),
                ));
            }
            Round::Conflict(now) => {
                let what = match now {
                    0 => "was deleted".to_owned(),
                    n => format!("is now at revision {n}"),
                };
                eprintln!(
                    "moviematch-storage: room {name:?} changed while you edited it (you edited revision {revision}; it {what}); your version was not saved and is kept in {}",
                    file.path.display()
                );
                file.keep = true;
                if now == 0 || !interactive || !ask("Edit again on the latest version?", false) {
                    if !interactive && now != 0 {
                        eprintln!(
                            "moviematch-storage: run `moviematch-storage edit {name}` again to redo your change on the latest version"
                        );
                    }
                    return Ok(ExitCode::from(EXIT_CONFLICT));
                }
                let Some((latest, latest_revision)) = fetch(&mut client, name)? else {
                    eprintln!("moviematch-storage: room {name:?} was deleted meanwhile");
                    return Ok(ExitCode::from(EXIT_CONFLICT));
                };
                // The kept version stays where it was announced; edit the latest in a new file.
                file = EditFile::create(name)?;
                revision = latest_revision;
                original = latest;
                text = original.clone();
            }
        }
    }
}

/// Saves `edited` if it differs from `original` and is a valid room of the same name.
fn save(
    client: &mut Client,
    name: &str,
    revision: u64,
    original: &[u8],
    edited: &[u8],
) -> Result<Round, Failure> {
    if edited == original {
        return Ok(Round::Unchanged);
    }
    let room: Value = match serde_json::from_slice(edited) {
        Ok(room) => room,
        Err(e) => return Ok(Round::Invalid(format!("not valid JSON: {e}"))),
    };
    // What is sent is the text as written (numbers byte for byte), on one line.
    let compact = reformat(edited, None);
    let Ok(raw) = serde_json::from_slice::<&RawValue>(&compact) else {
        return Ok(Round::Invalid("not valid JSON".to_owned()));
    };
    if reformat(original, None) == compact {
        return Ok(Round::Unchanged); // only whitespace changed
    }
    match room.get("roomName").and_then(Value::as_str) {
        Some(n) if n == name => {}
        other => {
            return Ok(Round::Invalid(format!(
                "roomName must stay {name:?} (it is {}); to rename a room, save it under the new name and delete the old one",
                other.map_or_else(|| "missing".to_owned(), |n| format!("{n:?}"))
            )))
        }
    }
    let request = SaveRoom {
        room: raw,
        expected_revision: Some(revision),
    };
    match client.request(&request) {
        Ok(saved) => Ok(Round::Saved(saved.revision)),
        Err(ClientError::Remote { code, revision, .. }) if code == "conflict" => {
            Ok(Round::Conflict(revision.unwrap_or(0)))
        }
        Err(ClientError::Remote { code, message, .. })
            if code == "invalid_room" || code == "too_large" =>
        {
            Ok(Round::Invalid(format!(
                "the daemon refused the room: {message}"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::reformat;

    #[test]
    fn reformat_changes_only_whitespace_outside_strings() {
        let compact = br#"{"a":12345678901234567890123,"b":[],"c":{},"d":[1,{"e":"x, {y}: \"z\" ]"}],"f":2.50}"#;
        let pretty = reformat(compact, Some(2));
        assert_eq!(
            String::from_utf8(pretty.clone()).unwrap(),
            "{\n  \"a\": 12345678901234567890123,\n  \"b\": [],\n  \"c\": {},\n  \"d\": [\n    1,\n    {\n      \"e\": \"x, {y}: \\\"z\\\" ]\"\n    }\n  ],\n  \"f\": 2.50\n}"
        );
        assert_eq!(reformat(&pretty, None), compact.to_vec());
    }
}
