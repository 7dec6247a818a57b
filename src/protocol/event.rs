//! The change events a `watch` connection carries (PROTOCOL.md section 3), and their one encoder.
//!
//! Local rooms' events (`watch.rs`, from the actor's changes) and Redis rooms' events (published
//! by the scripts of `remote/`, inside the change's own `EVAL`) are encoded here, so a watcher
//! gets the same bytes from either backend. The revision is the one part only the writer knows
//! at commit (a Redis script bumps it on the server): [`Event::around_revision`] gives the line
//! in two pieces to put the number between, and [`Event::line`] the whole line.

use bytes::Bytes;

use crate::room::change::Change;
use crate::room::Revision;

/// The line sent when a watcher fell behind (it then re-reads the rooms it cares about).
pub const OVERFLOW: &[u8] = b"{\"event\":\"overflow\"}\n";

/// One change, as a watcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// `saveRoom`.
    Saved { room_name: &'a str },
    /// `addRating`.
    Rated {
        room_name: &'a str,
        media_id: &'a str,
        user_name: &'a str,
        rating: &'a str,
        timestamp: u64,
    },
    /// `setProgress`.
    Progress {
        room_name: &'a str,
        user_name: &'a str,
        progress: u64,
    },
    /// `deleteRoom`, `deleteRooms`, expiry. Carries no revision.
    Deleted { room_name: &'a str },
}

/// An event's JSON object (no newline) split where its revision goes: `head`, the revision's
/// digits, `tail`. `deleted` has no revision: its `head` is the whole object, its `tail` empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AroundRevision {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Event<'_> {
    /// The event line (ending in `\n`) at `revision` (not written for `deleted`).
    pub fn line(&self, revision: Revision) -> Bytes {
        let AroundRevision { mut head, tail } = self.around_revision();
        if !matches!(self, Event::Deleted { .. }) {
            head.extend_from_slice(itoa::Buffer::new().format(revision).as_bytes());
        }
        head.extend_from_slice(&tail);
        head.push(b'\n');
        Bytes::from(head)
    }

    /// The event's object in two pieces, for a writer that learns the revision later.
    pub fn around_revision(&self) -> AroundRevision {
        let (event, room_name) = match *self {
            Event::Saved { room_name } => ("saved", room_name),
            Event::Rated { room_name, .. } => ("rated", room_name),
            Event::Progress { room_name, .. } => ("progress", room_name),
            Event::Deleted { room_name } => ("deleted", room_name),
        };
        let mut head = Vec::with_capacity(64 + room_name.len());
        head.extend_from_slice(b"{\"event\":\"");
        head.extend_from_slice(event.as_bytes());
        head.extend_from_slice(b"\",\"roomName\":");
        string(&mut head, room_name);
        let mut tail = Vec::new();
        match *self {
            Event::Deleted { .. } => {
                head.push(b'}');
                return AroundRevision { head, tail };
            }
            Event::Saved { .. } => {}
            Event::Rated {
                media_id,
                user_name,
                rating,
                timestamp,
                ..
            } => {
                tail.extend_from_slice(b",\"mediaId\":");
                string(&mut tail, media_id);
                tail.extend_from_slice(b",\"userName\":");
                string(&mut tail, user_name);
                tail.extend_from_slice(b",\"rating\":");
                string(&mut tail, rating);
                tail.extend_from_slice(b",\"timestamp\":");
                tail.extend_from_slice(itoa::Buffer::new().format(timestamp).as_bytes());
            }
            Event::Progress {
                user_name,
                progress,
                ..
            } => {
                tail.extend_from_slice(b",\"userName\":");
                string(&mut tail, user_name);
                tail.extend_from_slice(b",\"progress\":");
                tail.extend_from_slice(itoa::Buffer::new().format(progress).as_bytes());
            }
        }
        head.extend_from_slice(b",\"revision\":");
        tail.push(b'}');
        AroundRevision { head, tail }
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it (PROTOCOL.md's examples and every
/// other reply use the same escaping).
fn string(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail; the fallback keeps the line valid JSON if it ever did.
    if serde_json::to_writer(&mut *out, text).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// The event line for a change to a room this daemon keeps (Redis rooms' lines come encoded
/// from the scripts, by the same encoder).
pub fn event_line(change: &Change) -> Bytes {
    let (event, revision) = match change {
        Change::Put { name, revision, .. } => (
            Event::Saved {
                room_name: name.as_str(),
            },
            *revision,
        ),
        Change::Rate {
            name,
            revision,
            media_id,
            user_name,
            rating,
            timestamp,
            ..
        } => (
            Event::Rated {
                room_name: name.as_str(),
                media_id,
                user_name,
                rating,
                timestamp: *timestamp,
            },
            *revision,
        ),
        Change::Progress {
            name,
            revision,
            user_name,
            progress,
            ..
        } => (
            Event::Progress {
                room_name: name.as_str(),
                user_name,
                progress: *progress,
            },
            *revision,
        ),
        Change::Delete { name } => (
            Event::Deleted {
                room_name: name.as_str(),
            },
            0,
        ),
    };
    event.line(revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Names and values a client may send: quotes, escapes, control characters, non-ASCII.
    const AWKWARD: &str = "a\"b\\c\n\u{1}é😀/";

    fn parsed(line: &[u8]) -> serde_json::Value {
        assert_eq!(line.last(), Some(&b'\n'), "one line: {line:?}");
        serde_json::from_slice(line).expect("an event line is JSON")
    }

    #[test]
    fn lines_are_the_protocols_objects_in_its_key_order() {
        let cases = [
            (
                Event::Saved { room_name: AWKWARD },
                json!({"event": "saved", "roomName": AWKWARD, "revision": 7}),
            ),
            (
                Event::Rated {
                    room_name: "r",
                    media_id: AWKWARD,
                    user_name: "u\u{7f}",
                    rating: "like",
                    timestamp: u64::MAX,
                },
                json!({"event": "rated", "roomName": "r", "revision": 7, "mediaId": AWKWARD,
                       "userName": "u\u{7f}", "rating": "like", "timestamp": u64::MAX}),
            ),
            (
                Event::Progress {
                    room_name: "r",
                    user_name: AWKWARD,
                    progress: 0,
                },
                json!({"event": "progress", "roomName": "r", "revision": 7,
                       "userName": AWKWARD, "progress": 0}),
            ),
            (
                Event::Deleted { room_name: AWKWARD },
                json!({"event": "deleted", "roomName": AWKWARD}),
            ),
        ];
        for (event, expected) in cases {
            let line = event.line(7);
            // Byte for byte what serde_json writes for the object (keys in protocol order).
            let mut want = serde_json::to_vec(&expected).unwrap();
            want.push(b'\n');
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&want)
            );
            assert_eq!(parsed(&line), expected);
        }
    }

    #[test]
    fn the_two_pieces_make_the_line() {
        let event = Event::Rated {
            room_name: AWKWARD,
            media_id: "m",
            user_name: "u",
            rating: "dislike",
            timestamp: 12,
        };
        let AroundRevision { head, tail } = event.around_revision();
        let joined = [head, b"41".to_vec(), tail, b"\n".to_vec()].concat();
        assert_eq!(joined, event.line(41).to_vec());
        let deleted = Event::Deleted { room_name: "r" };
        let AroundRevision { head, tail } = deleted.around_revision();
        assert!(tail.is_empty());
        assert_eq!([head, b"\n".to_vec()].concat(), deleted.line(0).to_vec());
    }
}
