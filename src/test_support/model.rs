//! The protocol model shared by the model-based property tests: `tests/it/model.rs` (every
//! backend, over real storage) and `src/backend/file/proptests.rs` (the file backend under power
//! loss). Random operations, and what each one means, written plainly: room name -> (revision,
//! JSON).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::room::change::{Mutation, Outcome, Refusal};
use crate::room::prepare::PreparedRoom;
use crate::room::{self, EpochMillis, Rating, Revision, RoomName, StoreError};

// ---- The operations ----

/// Room names: plain, hostile to a file layout, non-ASCII, and one long enough to be hashed.
pub fn room_names() -> [String; 5] {
    [
        "movie-night".into(),
        "a/b".into(),
        "..".into(),
        "🎬 night".into(),
        "x".repeat(251),
    ]
}

/// `createdAt` values: `T0` and `T0_OFFSET` are the same instant.
pub const CREATED: [&str; 4] = [
    "2025-10-25T20:00:00.000Z",
    "2025-10-25T22:00:00+02:00",
    "2025-10-25T20:00:00.001Z",
    "2024-01-01T00:00:00Z",
];

#[derive(Debug, Clone, Copy)]
pub enum Expect {
    Absent,
    /// The room's current revision (0 when absent): a save or delete that should succeed.
    Current,
    /// A fixed revision: often stale.
    Fixed(Revision),
}

#[derive(Debug, Clone)]
pub enum Op {
    Save {
        room: usize,
        shape: u8,
        expect: Expect,
    },
    Delete {
        room: usize,
        expect: Expect,
    },
    Rate {
        room: usize,
        media: u8,
        user: u8,
        like: bool,
        timestamp: u64,
    },
    Progress {
        room: usize,
        user: u8,
        progress: u64,
    },
    /// `deleteRooms`: the cut-off is one of the rooms' instants, plus 0 or 1 ms.
    DeleteCreatedBefore {
        instant: usize,
        plus: i64,
    },
    /// A clean stop and a start over the same storage.
    Restart,
    /// Power loss now; `seed` picks how much of each unsynced tail reached the disk.
    Crash {
        seed: u64,
    },
    /// The actor's periodic upkeep: relaxed syncs, background folds.
    Tick,
    /// `flush`: everything acknowledged is on stable storage.
    Flush,
    /// The next file sync fails with EIO (a journal sync, or a room file written by a fold).
    FailNextSync,
}

pub fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        2 => Just(Expect::Absent),
        2 => Just(Expect::Current),
        1 => (0u64..4).prop_map(Expect::Fixed),
    ]
}

/// A mutating operation (weights: saves 4, deletes 2, ratings 6, progress 3, `deleteRooms` 1).
pub fn mutation() -> impl Strategy<Value = Op> {
    let room = 0usize..5;
    prop_oneof![
        4 => (room.clone(), any::<u8>(), expect())
            .prop_map(|(room, shape, expect)| Op::Save { room, shape, expect }),
        2 => (room.clone(), expect()).prop_map(|(room, expect)| Op::Delete { room, expect }),
        6 => (room.clone(), 0u8..3, 0u8..3, any::<bool>(), 0u64..3).prop_map(
            |(room, media, user, like, timestamp)| Op::Rate { room, media, user, like, timestamp }
        ),
        3 => (room, 0u8..3, 0u64..4)
            .prop_map(|(room, user, progress)| Op::Progress { room, user, progress }),
        1 => (0usize..CREATED.len(), 0i64..2)
            .prop_map(|(instant, plus)| Op::DeleteCreatedBefore { instant, plus }),
    ]
}

/// A room of one of a few shapes: bare; with ratings and progress; with `null` ratings and an
/// unknown field; with a numeric Plex id, `null` progress and options.
pub fn room_json(name: &str, shape: u8) -> Value {
    let mut room = json!({
        "roomName": name, "sort": "random", "createdAt": CREATED[usize::from(shape / 4) % 4],
        "creatorPlexUserId": "1", "creatorPlexUsername": "john"
    });
    match shape % 4 {
        0 => {}
        1 => {
            room["ratings"] = json!({"m0": [["u0", "like", 1]], "m9": []});
            room["userProgress"] = json!({"u1": 2});
        }
        2 => {
            room["ratings"] = Value::Null;
            room["zeta"] = json!({"b": [1, true, null], "a": "z"});
        }
        _ => {
            room["creatorPlexUserId"] = json!(12345);
            room["userProgress"] = Value::Null;
            room["options"] = json!(["EndOnFirstMatch"]);
        }
    }
    room
}

// ---- The model ----

#[derive(Debug, Clone, PartialEq)]
pub struct ModelRoom {
    pub revision: Revision,
    pub created_at: EpochMillis,
    pub json: Value,
}

/// Room name -> (revision, JSON): the protocol's meaning of each operation, written plainly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    pub rooms: ModelRooms,
    /// States a multi-change step passed through before its last change (a torn write may
    /// leave one of them); filled by `step`, emptied by the caller.
    pub partial: Vec<ModelRooms>,
}

pub type ModelRooms = BTreeMap<String, ModelRoom>;

/// What `getRoom` returns for every room: (name, revision, compact JSON).
pub type View = Vec<(String, Revision, String)>;

pub fn view_of(rooms: &ModelRooms) -> View {
    let text = |v: &Value| serde_json::to_string(v).expect("encode");
    let rooms = rooms.iter();
    rooms
        .map(|(n, r)| (n.clone(), r.revision, text(&r.json)))
        .collect()
}

pub type Answer = Result<Outcome, StoreError>;

pub fn conflict(current: Revision) -> Answer {
    Err(StoreError::Refused(Refusal::Conflict { current }))
}

pub fn not_found(name: &str) -> Answer {
    let name = RoomName::new(name).expect("a valid name");
    Err(StoreError::Refused(Refusal::NotFound { name }))
}

impl Model {
    pub fn current(&self, name: &str) -> Revision {
        self.rooms.get(name).map_or(0, |r| r.revision)
    }

    pub fn expected(&self, name: &str, expect: Expect) -> Option<Revision> {
        match expect {
            Expect::Absent => None,
            Expect::Current => Some(self.current(name)),
            Expect::Fixed(revision) => Some(revision),
        }
    }

    /// The store's mutation for `op`, and the answer the protocol requires.
    pub fn step(&mut self, names: &[String], op: &Op) -> Option<(Mutation, Answer)> {
        let name_of = |room: usize| names[room].clone();
        Some(match *op {
            Op::Save {
                room,
                shape,
                expect,
            } => {
                let name = name_of(room);
                let json = room_json(&name, shape);
                let expected_revision = self.expected(&name, expect);
                let valid = room::validate(json.clone()).expect("a valid room");
                let mutation = Mutation::Save {
                    room: Box::new(PreparedRoom::new(valid)),
                    expected_revision,
                };
                let current = self.current(&name);
                if expected_revision.is_some_and(|e| e != current) {
                    return Some((mutation, conflict(current)));
                }
                let created_at = room::parse_timestamp(json["createdAt"].as_str()?)?;
                let revision = current + 1;
                self.rooms.insert(
                    name,
                    ModelRoom {
                        revision,
                        created_at,
                        json,
                    },
                );
                (mutation, Ok(Outcome::Saved { revision }))
            }
            Op::Delete { room, expect } => {
                let name = name_of(room);
                let expected_revision = self.expected(&name, expect);
                let mutation = Mutation::Delete {
                    name: RoomName::new(&name).ok()?,
                    expected_revision,
                };
                let current = self.current(&name);
                if expected_revision.is_some_and(|e| e != current) {
                    return Some((mutation, conflict(current)));
                }
                let deleted = self.rooms.remove(&name).is_some();
                (mutation, Ok(Outcome::Deleted { deleted }))
            }
            Op::Rate {
                room,
                media,
                user,
                like,
                timestamp,
            } => {
                let name = name_of(room);
                let (media, user) = (format!("m{media}"), format!("u{user}"));
                let rating = if like { Rating::Like } else { Rating::Dislike };
                let mutation = Mutation::AddRating {
                    name: RoomName::new(&name).ok()?,
                    media_id: media.clone(),
                    user_name: user.clone(),
                    rating,
                    timestamp,
                };
                let Some(r) = self.rooms.get_mut(&name) else {
                    return Some((mutation, not_found(&name)));
                };
                let rated = r.json["ratings"][&media]
                    .as_array()
                    .is_some_and(|entries| entries.iter().any(|e| e[0] == user.as_str()));
                if rated {
                    let revision = r.revision;
                    return Some((
                        mutation,
                        Ok(Outcome::Rated {
                            revision,
                            added: false,
                        }),
                    ));
                }
                // A missing or null `ratings` becomes an object (a missing one goes last).
                if !r.json["ratings"].is_object() {
                    r.json["ratings"] = json!({});
                }
                let entry = json!([user, rating.as_str(), timestamp]);
                match r.json["ratings"]
                    .get_mut(&media)
                    .and_then(Value::as_array_mut)
                {
                    Some(entries) => entries.push(entry),
                    None => r.json["ratings"][&media] = json!([entry]),
                }
                r.revision += 1;
                let revision = r.revision;
                (
                    mutation,
                    Ok(Outcome::Rated {
                        revision,
                        added: true,
                    }),
                )
            }
            Op::Progress {
                room,
                user,
                progress,
            } => {
                let name = name_of(room);
                let user = format!("u{user}");
                let mutation = Mutation::SetProgress {
                    name: RoomName::new(&name).ok()?,
                    user_name: user.clone(),
                    progress,
                };
                let Some(r) = self.rooms.get_mut(&name) else {
                    return Some((mutation, not_found(&name)));
                };
                if !r.json["userProgress"].is_object() {
                    r.json["userProgress"] = json!({});
                }
                r.json["userProgress"][&user] = json!(progress);
                r.revision += 1;
                let revision = r.revision;
                (mutation, Ok(Outcome::Progressed { revision }))
            }
            Op::DeleteCreatedBefore { instant, plus } => {
                let created_before = room::parse_timestamp(CREATED[instant])? + plus;
                let doomed: Vec<String> = self
                    .rooms
                    .iter()
                    .filter(|(_, r)| r.created_at < created_before)
                    .map(|(n, _)| n.clone())
                    .collect();
                // One change per room, in name order: a torn journal may keep some of them.
                for name in &doomed {
                    self.rooms.remove(name);
                    self.partial.push(self.rooms.clone());
                }
                self.partial.pop();
                let count = doomed.len() as u64;
                let mutation = Mutation::DeleteCreatedBefore { created_before };
                (mutation, Ok(Outcome::DeletedMany { count }))
            }
            Op::Restart | Op::Crash { .. } | Op::Tick | Op::Flush | Op::FailNextSync => {
                return None
            }
        })
    }

    pub fn view(&self) -> View {
        view_of(&self.rooms)
    }
}
