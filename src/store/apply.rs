//! What each mutation does to the rooms, as pure functions over a [`RoomMap`].
//!
//! The actor calls [`apply`] for every mutation, in order, on a working copy of the map; the
//! [`Change`]s it returns are what the backend makes durable and what replay re-applies after a
//! restart ([`replay`]), so a change means the same thing live and when recovered.

use std::sync::Arc;

use crate::room::body::{self, RoomBody};
use crate::room::change::{Change, Mutation, Outcome, Refusal};
use crate::room::entry::{RoomEntry, RoomMap};
use crate::room::prepare::PreparedRoom;
use crate::room::{EpochMillis, Revision, RoomName};

fn check_expected(rooms: &RoomMap, name: &str, expected: Option<Revision>) -> Result<(), Refusal> {
    let current = rooms.get(name).map_or(0, |e| e.revision);
    match expected {
        Some(expected) if expected != current => Err(Refusal::Conflict { current }),
        _ => Ok(()),
    }
}

/// Applies one mutation at time `now`, appending the resulting changes to `changes`.
pub fn apply(
    rooms: &mut RoomMap,
    mutation: Mutation,
    now: EpochMillis,
    changes: &mut Vec<Change>,
) -> Result<Outcome, Refusal> {
    match mutation {
        Mutation::Save {
            room,
            expected_revision,
        } => {
            check_expected(rooms, room.name.as_str(), expected_revision)?;
            let revision = rooms.get(room.name.as_str()).map_or(0, |e| e.revision) + 1;
            let PreparedRoom {
                name,
                facts,
                encoded,
                rating_count,
            } = *room;
            let entry = RoomEntry::cold(
                name.clone(),
                facts,
                encoded.clone(),
                rating_count,
                revision,
                now,
            );
            rooms.insert(name.clone(), Arc::new(entry));
            changes.push(Change::Put {
                name,
                revision,
                at: now,
                room: encoded,
            });
            Ok(Outcome::Saved { revision })
        }
        Mutation::Delete {
            name,
            expected_revision,
        } => {
            check_expected(rooms, name.as_str(), expected_revision)?;
            let deleted = rooms.remove(name.as_str()).is_some();
            if deleted {
                changes.push(Change::Delete { name });
            }
            Ok(Outcome::Deleted { deleted })
        }
        Mutation::AddRating {
            name,
            media_id,
            user_name,
            rating,
            timestamp,
        } => {
            let Some(entry) = rooms.get(name.as_str()) else {
                return Err(Refusal::NotFound { name });
            };
            if entry.body().has_rated(&media_id, &user_name) {
                return Ok(Outcome::Rated {
                    revision: entry.revision,
                    added: false,
                });
            }
            let revision = entry.revision + 1;
            let change = Change::Rate {
                name,
                revision,
                at: now,
                media_id,
                user_name,
                rating: rating.as_str().to_owned(),
                timestamp,
            };
            replay(rooms, &change);
            changes.push(change);
            Ok(Outcome::Rated {
                revision,
                added: true,
            })
        }
        Mutation::SetProgress {
            name,
            user_name,
            progress,
        } => {
            let Some(entry) = rooms.get(name.as_str()) else {
                return Err(Refusal::NotFound { name });
            };
            let revision = entry.revision + 1;
            let change = Change::Progress {
                name,
                revision,
                at: now,
                user_name,
                progress,
            };
            replay(rooms, &change);
            changes.push(change);
            Ok(Outcome::Progressed { revision })
        }
        Mutation::DeleteCreatedBefore { created_before } => Ok(Outcome::DeletedMany {
            count: remove_where(rooms, changes, |e| e.facts.created_at < created_before),
        }),
        Mutation::Expire { idle_since } => Ok(Outcome::DeletedMany {
            count: remove_where(rooms, changes, |e| e.updated_at < idle_since),
        }),
    }
}

fn remove_where(
    rooms: &mut RoomMap,
    changes: &mut Vec<Change>,
    doomed: impl Fn(&RoomEntry) -> bool,
) -> u64 {
    let names: Vec<RoomName> = rooms
        .values()
        .filter(|e| doomed(e))
        .map(|e| e.name.clone())
        .collect();
    for name in &names {
        rooms.remove(name);
        changes.push(Change::Delete { name: name.clone() });
    }
    names.len() as u64
}

/// Makes `rooms` reflect `change`. Used live by [`apply`] and by backends replaying their log,
/// so both paths produce the same room.
pub fn replay(rooms: &mut RoomMap, change: &Change) {
    match change {
        Change::Put {
            name,
            revision,
            at,
            room,
        } => {
            // Only at recovery: the live path inserts the prepared room directly. Prepared from
            // its text, so its numbers stay as written.
            let entry = match PreparedRoom::from_json(room) {
                Ok(prepared) => RoomEntry::cold(
                    name.clone(),
                    prepared.facts,
                    prepared.encoded,
                    prepared.rating_count,
                    *revision,
                    *at,
                ),
                Err(_) => {
                    let doc = body::parse(room).unwrap_or_default();
                    RoomEntry::from_doc(name.clone(), &doc, *revision, *at)
                }
            };
            rooms.insert(name.clone(), Arc::new(entry));
        }
        Change::Rate {
            name,
            revision,
            at,
            media_id,
            user_name,
            rating,
            timestamp,
        } => edit(rooms, name, *revision, *at, |body| {
            body.add_rating(media_id, user_name, rating, *timestamp)
        }),
        Change::Progress {
            name,
            revision,
            at,
            user_name,
            progress,
        } => edit(rooms, name, *revision, *at, |body| {
            body.set_progress(user_name, *progress)
        }),
        Change::Delete { name } => {
            rooms.remove(name);
        }
    }
}

/// Changes an existing room's body. The body's persistent parts are shared with the previous
/// version, which readers of older snapshots may still hold.
///
/// The entry is taken out of the map before the change: an entry an earlier mutation of the same
/// batch made is then held by nothing else, nor is its body, and `make_mut` changes that body in
/// place. Looked up in place, the map would still hold the body, and every rating of a batch
/// would copy the chunks of the room's lists it touches (the first of a batch still does: the
/// published snapshot holds that version).
fn edit(
    rooms: &mut RoomMap,
    name: &RoomName,
    revision: Revision,
    at: EpochMillis,
    f: impl FnOnce(&mut RoomBody),
) {
    let Some(entry) = rooms.remove(name.as_str()) else {
        return;
    };
    let facts = entry.facts.clone();
    let mut body = entry.body();
    drop(entry);
    f(Arc::make_mut(&mut body));
    let updated = RoomEntry::hot(name.clone(), facts, body, revision, at);
    rooms.insert(name.clone(), Arc::new(updated));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{validate, Rating};
    use serde_json::json;

    fn room(name: &str) -> Box<PreparedRoom> {
        Box::new(PreparedRoom::new(
            validate(json!({
                "roomName": name, "sort": "random", "createdAt": "2025-10-25T20:00:00Z",
                "creatorPlexUserId": "1", "creatorPlexUsername": "john"
            }))
            .unwrap(),
        ))
    }

    fn rate(name: &str, user: &str) -> Mutation {
        Mutation::AddRating {
            name: RoomName::new(name).unwrap(),
            media_id: "m".into(),
            user_name: user.into(),
            rating: Rating::Like,
            timestamp: 5,
        }
    }

    #[test]
    fn revisions_count_changes_and_replay_rebuilds_the_same_rooms() {
        let mut rooms = RoomMap::new();
        let mut changes = Vec::new();
        let save = |r| Mutation::Save {
            room: r,
            expected_revision: Some(0),
        };
        assert_eq!(
            apply(&mut rooms, save(room("a")), 1, &mut changes),
            Ok(Outcome::Saved { revision: 1 })
        );
        assert_eq!(
            apply(&mut rooms, save(room("a")), 1, &mut changes),
            Err(Refusal::Conflict { current: 1 })
        );
        let added = |revision, added| Ok(Outcome::Rated { revision, added });
        assert_eq!(
            apply(&mut rooms, rate("a", "john"), 2, &mut changes),
            added(2, true)
        );
        assert_eq!(
            apply(&mut rooms, rate("a", "john"), 3, &mut changes),
            added(2, false)
        );
        assert_eq!(
            apply(&mut rooms, rate("b", "john"), 3, &mut changes),
            Err(Refusal::NotFound {
                name: RoomName::new("b").unwrap()
            })
        );
        assert_eq!(changes.len(), 2);

        let mut replayed = RoomMap::new();
        for change in &changes {
            replay(&mut replayed, change);
        }
        let (live, again) = (&rooms["a"], &replayed["a"]);
        assert_eq!(live.encoded(), again.encoded());
        assert_eq!(
            (live.revision, live.updated_at),
            (again.revision, again.updated_at)
        );
        assert_eq!(
            live.to_value()["ratings"]["m"],
            json!([["john", "like", 5]])
        );
    }
}
