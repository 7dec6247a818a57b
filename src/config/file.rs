//! Reads the YAML config file into its top-level keys and values, keeping every scalar as the text
//! that was written (YAML would turn an unquoted `0660` into the number 660 and `0o660` into 432).
//!
//! It knows nothing of which keys are settings: [`super`] decides that. It never fails on a value
//! it does not understand; only a file that cannot be read, is not YAML, or is not one mapping is
//! an error, reported as a message for [`super::ConfigError::File`].

use std::fmt;
use std::path::Path;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A top-level value of the config file, as written.
#[derive(Debug, PartialEq)]
pub(super) enum FileValue {
    /// `~`, `null` or nothing: the key counts as not set.
    Null,
    Scalar(String),
    /// A list of scalars.
    List(Vec<String>),
    /// A mapping, a list holding non-scalars, or an alias: only ever right for keys not ours.
    Nested,
}

impl fmt::Display for FileValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileValue::Null => f.write_str("null"),
            FileValue::Scalar(text) => f.write_str(text),
            FileValue::List(items) => write!(f, "[{}]", items.join(", ")),
            FileValue::Nested => f.write_str("{...}"),
        }
    }
}

#[derive(Debug)]
pub(super) struct FileEntry {
    pub key: String,
    pub value: FileValue,
    /// 1-based, for the error message.
    pub line: usize,
}

/// Collects the parser's events so they can be walked with ordinary control flow.
#[derive(Default)]
struct EventLog(Vec<(Event, Marker)>);

impl MarkedEventReceiver for EventLog {
    fn on_event(&mut self, event: Event, mark: Marker) {
        self.0.push((event, mark));
    }
}

/// The top-level entries of the file at `path`, in file order; `Err` is a message for the user.
pub(super) fn read(path: &Path) -> Result<Vec<FileEntry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut log = EventLog::default();
    Parser::new_from_str(&text)
        .load(&mut log, true)
        .map_err(|e| format!("not valid YAML: {e}"))?;
    parse_events(log.0)
}

fn is_null(text: &str, style: TScalarStyle, tagged: bool) -> bool {
    style == TScalarStyle::Plain && !tagged && matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Turns a stream of events into the top-level entries; an empty stream or a null document is an
/// empty file.
fn parse_events(events: Vec<(Event, Marker)>) -> Result<Vec<FileEntry>, String> {
    let mut events = events.into_iter();
    let mut entries: Vec<FileEntry> = Vec::new();
    let mut documents = 0;
    while let Some((event, _)) = events.next() {
        match event {
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err("holds more than one YAML document; expected one mapping".into());
                }
            }
            Event::MappingStart(..) => read_mapping(&mut events, &mut entries)?,
            Event::Scalar(text, style, _, tag) if is_null(&text, style, tag.is_some()) => {}
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            _ => return Err("expected a mapping of keys to values at the top level".to_owned()),
        }
    }
    Ok(entries)
}

/// Reads key/value pairs up to the end of the top-level mapping, whose start was just consumed.
fn read_mapping(
    events: &mut impl Iterator<Item = (Event, Marker)>,
    entries: &mut Vec<FileEntry>,
) -> Result<(), String> {
    while let Some((event, mark)) = events.next() {
        let key = match event {
            Event::MappingEnd => return Ok(()),
            Event::Scalar(key, ..) => key,
            _ => {
                return Err(format!(
                    "line {}: a key must be a plain string",
                    mark.line()
                ))
            }
        };
        let (first, _) = events.next().ok_or("ends in the middle of a mapping")?;
        let value = read_value(first, events);
        if entries.iter().any(|entry| entry.key == key) {
            return Err(format!("line {}: key {key:?} appears twice", mark.line()));
        }
        entries.push(FileEntry {
            key,
            value,
            line: mark.line(),
        });
    }
    Err("ends in the middle of a mapping".to_owned())
}

/// Reads the value that starts with `first`, consuming all of its events.
fn read_value(first: Event, events: &mut impl Iterator<Item = (Event, Marker)>) -> FileValue {
    match first {
        Event::Scalar(text, style, _, tag) if is_null(&text, style, tag.is_some()) => {
            FileValue::Null
        }
        Event::Scalar(text, ..) => FileValue::Scalar(text),
        Event::SequenceStart(..) => {
            let mut items = Some(Vec::new());
            while let Some((event, _)) = events.next() {
                match event {
                    Event::SequenceEnd => break,
                    Event::Scalar(text, ..) => {
                        if let Some(items) = &mut items {
                            items.push(text);
                        }
                    }
                    other => {
                        skip_node(&other, events);
                        items = None;
                    }
                }
            }
            items.map_or(FileValue::Nested, FileValue::List)
        }
        other => {
            skip_node(&other, events);
            FileValue::Nested
        }
    }
}

/// Consumes the rest of a node whose first event was `first` (nothing more for a scalar or alias).
fn skip_node(first: &Event, events: &mut impl Iterator<Item = (Event, Marker)>) {
    let mut depth = usize::from(matches!(
        first,
        Event::SequenceStart(..) | Event::MappingStart(..)
    ));
    while depth > 0 {
        match events.next() {
            Some((Event::SequenceStart(..) | Event::MappingStart(..), _)) => depth += 1,
            Some((Event::SequenceEnd | Event::MappingEnd, _)) => depth -= 1,
            Some(_) => {}
            None => break,
        }
    }
}
