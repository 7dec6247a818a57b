//! What a client encodes, the daemon decodes as the same operation.

use serde_json::value::RawValue;

use super::*;
use crate::room::{parse_timestamp, EpochMillis, Rating};

/// What the daemon decodes from the line a client sends for `op`.
fn sent<Op: Operation + Serialize>(op: Op) -> (String, Request) {
    let line = serde_json::to_string(&Call::new(op)).expect("encode");
    match decode(line.as_bytes()) {
        Ok(envelope) => (line, envelope.request),
        Err(rejected) => panic!("{line}: {:?}", rejected.error),
    }
}

/// Sends `op` and checks the daemon decodes it to `expected` under the same name.
fn round_trip<Op: Operation + Serialize>(op: Op, expected: Request) {
    let (line, decoded) = sent(op);
    assert_eq!(decoded.name(), Op::NAME, "{line}");
    assert_eq!(format!("{decoded:?}"), format!("{expected:?}"), "{line}");
}

fn millis(text: &str) -> EpochMillis {
    parse_timestamp(text).expect("a valid timestamp")
}

#[test]
fn what_a_client_encodes_the_daemon_decodes_as_the_same_operation() {
    let lookup = || RoomLookup::new("movie night");
    round_trip(
        GetRoom {
            room_name: lookup(),
        },
        Request::GetRoom(GetRoom {
            room_name: lookup(),
        }),
    );
    round_trip(
        HasRoom {
            room_name: RoomLookup::new(""),
        },
        Request::HasRoom(HasRoom {
            room_name: RoomLookup::Unstorable(String::new()),
        }),
    );
    round_trip(
        DeleteRoom {
            room_name: lookup(),
            expected_revision: Some(0),
        },
        Request::DeleteRoom(DeleteRoom {
            room_name: lookup(),
            expected_revision: Some(0),
        }),
    );
    let rating = || AddRating {
        room_name: lookup(),
        media_id: "plex://movie/1".to_owned(),
        user_name: "jane".to_owned(),
        rating: Rating::Dislike,
        timestamp: Some(1_729_890_000_000),
    };
    round_trip(rating(), Request::AddRating(rating()));
    let untimed = || AddRating {
        timestamp: None,
        ..rating()
    };
    round_trip(untimed(), Request::AddRating(untimed()));
    let progress = || SetProgress {
        room_name: lookup(),
        user_name: "jane".to_owned(),
        progress: 7,
    };
    round_trip(progress(), Request::SetProgress(progress()));
    let verify = || VerifyPassword {
        room_name: lookup(),
        password: "secret".to_owned(),
    };
    round_trip(verify(), Request::VerifyPassword(verify()));
    round_trip(
        DeleteRooms {
            created_before: "2025-01-01T00:00:00.000+02:00",
        },
        Request::DeleteRooms(DeleteRooms {
            created_before: millis("2025-01-01T00:00:00.000+02:00"),
        }),
    );
    round_trip(
        ListRooms {
            creator_plex_user_id: Some("13692262".to_owned()),
            creator_plex_username: Some("john_doe".to_owned()),
            created_before: Some("2025-12-01T00:00:00Z"),
            created_after: Some("2025-01-01T00:00:00Z"),
            after: Some("a room".to_owned()),
            limit: Some(10),
            summary: true,
        },
        Request::ListRooms(ListRooms {
            creator_plex_user_id: Some("13692262".to_owned()),
            creator_plex_username: Some("john_doe".to_owned()),
            created_before: Some(millis("2025-12-01T00:00:00Z")),
            created_after: Some(millis("2025-01-01T00:00:00Z")),
            after: Some("a room".to_owned()),
            limit: Some(10),
            summary: true,
        }),
    );
    round_trip(
        ListRooms::<&str>::default(),
        Request::ListRooms(ListQuery::default()),
    );
    round_trip(Ping, Request::Ping(Ping));
    round_trip(Stats, Request::Stats(Stats));
    round_trip(Flush, Request::Flush(Flush));
    round_trip(Fold, Request::Fold(Fold));
    let watch = || Watch {
        room_names: Some(vec![lookup(), RoomLookup::new("a\nb")]),
    };
    round_trip(watch(), Request::Watch(watch()));
    round_trip(
        Watch { room_names: None },
        Request::Watch(Watch { room_names: None }),
    );
}

#[test]
fn a_room_is_sent_as_written_and_decoded_into_its_prepared_form() {
    let text = r#"{"roomName":"movie night","sort":"random","createdAt":"2025-10-25T20:00:00.000Z","creatorPlexUserId":1,"creatorPlexUsername":"u","extra":[2.50,12345678901234567890123]}"#;
    let room: &RawValue = serde_json::from_str(text).expect("room JSON");
    let (line, request) = sent(SaveRoom {
        room,
        expected_revision: Some(3),
    });
    assert!(line.contains(text), "{line}");
    let Request::SaveRoom(save) = request else {
        panic!("{line}: {request:?}");
    };
    assert_eq!(save.room.name.as_str(), "movie night");
    assert_eq!(&save.room.encoded[..], text.as_bytes());
    assert_eq!(save.expected_revision, Some(3));
}

#[test]
fn operations_without_arguments_are_just_their_name() {
    for (line, expected) in [
        (serde_json::to_string(&Call::new(Ping)), r#"{"op":"ping"}"#),
        (serde_json::to_string(&Call::new(&Fold)), r#"{"op":"fold"}"#),
        (
            serde_json::to_string(&Call::new(Watch { room_names: None })),
            r#"{"op":"watch"}"#,
        ),
    ] {
        assert_eq!(line.expect("encode"), expected);
    }
}

#[test]
fn the_table_knows_which_operations_change_rooms() {
    let mutating = [
        SaveRoom::<()>::MUTATES,
        DeleteRoom::MUTATES,
        AddRating::MUTATES,
        SetProgress::MUTATES,
        DeleteRooms::<()>::MUTATES,
    ];
    assert!(mutating.iter().all(|&m| m));
    let reading = [
        GetRoom::MUTATES,
        HasRoom::MUTATES,
        ListRooms::<()>::MUTATES,
        VerifyPassword::MUTATES,
        Ping::MUTATES,
        Stats::MUTATES,
        Flush::MUTATES,
        Fold::MUTATES,
        Watch::MUTATES,
    ];
    assert!(reading.iter().all(|&m| !m));
    // A lookup of a name no room can have asks for no change, even a deleteRoom.
    let (_, request) = sent(DeleteRoom {
        room_name: RoomLookup::new(""),
        expected_revision: None,
    });
    assert!(request.is_mutation());
    assert!(request.into_mutation().is_err());
    let (_, request) = sent(SetProgress {
        room_name: RoomLookup::new("r"),
        user_name: "u".to_owned(),
        progress: 1,
    });
    assert!(matches!(
        request.into_mutation(),
        Ok(Mutation::SetProgress { progress: 1, .. })
    ));
}
