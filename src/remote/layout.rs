//! How a room is laid out in Redis: one hash per room, split so that scripts can change it
//! without parsing JSON.
//!
//! Key `<prefix>room:<roomName>` (the name's bytes, unencoded: Redis keys are binary-safe), a hash
//! in one of two forms. A `saveRoom` (and `migrate`) writes the *whole* form, a handful of fields:
//!
//! | field | value |
//! |---|---|
//! | `rev` | the revision |
//! | `at` | when the room last changed (epoch ms) |
//! | `w` | the version of the last whole write (see `cache.rs`) |
//! | `rc` | the number of rating entries |
//! | `room` | the room's compact JSON, exactly as `getRoom` returns it |
//!
//! The first `addRating` or `setProgress` after a save turns it into the *split* form (the
//! daemon splits the room and a script swaps the fields, if `room` is still what it split: see
//! `split.rs`), which those two then change a field at a time. A save costs Redis about as much as
//! a `SET` of the room, where writing the split form costs some 0.15 us per media; the split is
//! paid once per save, by the first swipe after it. The split form (the only one of earlier
//! releases, which still serves as it is):
//!
//! | field | value |
//! |---|---|
//! | `rev`, `at`, `w`, `rc` | as above |
//! | `doc` | the room's compact JSON with `ratings` / `userProgress` replaced by `0` |
//! | `R`, `P` | `1` when `ratings` / `userProgress` is an object, `null` when it was saved as `null`; absent when the room has no such key |
//! | `r:<mediaId>` | `<seq> <JSON array of that media's ratings>` (the first ones: see `a:`) |
//! | `a:<k>:<mediaId>` | ratings added to a media that had its `r:` field: `,<rating>,<rating>...`, 32 to a chunk `k` (0, 1, ...), appended to the `r:` array in order of `k` |
//! | `n:<mediaId>` | how many ratings the media's `a:` chunks hold |
//! | `U` | `1` while the set `<prefix>rated:<roomName>` holds every rating's `<bytes of mediaId>:<mediaId><userName>` (`rate.rs`) |
//! | `p:<userName>` | `<seq> <progress>` |
//! | `seq` | the last `<seq>` handed out: media and users come back in the order they were added |
//!
//! `addRating` appends to one chunk (or starts a media's `r:` field) and `setProgress` replaces
//! one `p:` field, so a swipe moves a few hundred bytes, atomically, in a script, however many
//! ratings the room and the media hold. `0` can never be a valid
//! `ratings` or `userProgress` (section 4 wants an object), so the placeholder is unambiguous and
//! keeps the key where the client put it: a room comes back byte for byte as the file and memory
//! backends return it (keys the client escaped needlessly, such as `"\u0061"`, come back plain).
//!
//! Besides the hashes: `<prefix>rated:<roomName>`, the set by which `addRating` knows in one step
//! whether a user rated a media (removed with the room's hash); `<prefix>rooms`, a sorted set of every name (score 0, so ordered by bytes:
//! `listRooms` pages with `ZRANGE BYLEX`); `<prefix>changed` and `<prefix>created`, sorted sets of
//! names by last change and by `createdAt` (epoch ms), for `roomExpiry` and `deleteRooms`; the
//! channel `<prefix>events` for `watch`; and `<prefix>daemon:<host>:<pid>`, short-lived keys by
//! which running daemons announce themselves (so `migrate` can refuse to run under them).

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::room::prepare::PreparedRoom;
use crate::room::{EpochMillis, Revision};

/// The placeholder that stands in `doc` for a structured `ratings` / `userProgress`.
const PLACEHOLDER: &str = "0";

/// The keys of one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn room(&self, name: &str) -> Vec<u8> {
        [self.prefix.as_bytes(), b"room:", name.as_bytes()].concat()
    }
    /// The set of `<bytes of mediaId>:<mediaId><userName>` of every rating of room `name`,
    /// complete while the room's hash has `U` = `1` (see `rate.rs`).
    pub fn rated(&self, name: &str) -> Vec<u8> {
        [self.prefix.as_bytes(), b"rated:", name.as_bytes()].concat()
    }
    pub fn index(&self) -> String {
        format!("{}rooms", self.prefix)
    }
    pub fn changed(&self) -> String {
        format!("{}changed", self.prefix)
    }
    pub fn created(&self) -> String {
        format!("{}created", self.prefix)
    }
    pub fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }
    pub fn daemon(&self, who: &str) -> String {
        format!("{}daemon:{who}", self.prefix)
    }
    pub fn daemons(&self) -> String {
        format!("{}daemon:*", self.prefix)
    }
}

/// A room as hash fields (all but `rev`, which the scripts own).
#[derive(Debug)]
pub struct Split {
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The whole form of a prepared (validated, compact) room: `written` is this write's version
/// (`w`), `at` its last change.
pub fn whole(room: &PreparedRoom, at: EpochMillis, written: &[u8]) -> Split {
    Split {
        fields: vec![
            (b"room".to_vec(), room.encoded.to_vec()),
            (b"rc".to_vec(), room.rating_count.to_string().into_bytes()),
            (b"at".to_vec(), at.to_string().into_bytes()),
            (b"w".to_vec(), written.to_vec()),
        ],
    }
}

/// The split form of a prepared room, as [`whole`] takes them.
pub fn split(room: &PreparedRoom, at: EpochMillis, written: &[u8]) -> Split {
    let mut split = parts(room);
    split
        .fields
        .push((b"at".to_vec(), at.to_string().into_bytes()));
    split.fields.push((b"w".to_vec(), written.to_vec()));
    split
}

/// The fields of the split form that hold the room's content (all but `rev`, `at` and `w`):
/// what a script puts in place of `room` when it splits a saved room.
///
/// A key repeated in the room or in its `ratings` / `userProgress` (which `JSON.stringify` never
/// writes) counts once, at its first place with its last value, as the other backends keep it
/// once a swipe re-encodes the room.
pub fn parts(room: &PreparedRoom) -> Split {
    let (top, mut repeated) = once_each(entries(room.encoded.as_ref()).unwrap_or_default());
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut doc = Vec::with_capacity(256);
    let mut seq = 0u64;
    doc.push(b'{');
    for (key, value) in &top {
        if doc.len() > 1 {
            doc.push(b',');
        }
        doc.extend_from_slice(quote(key).as_bytes());
        doc.push(b':');
        let (flag, prefix) = match key.as_ref() {
            "ratings" => (b"R", b"r:"),
            "userProgress" => (b"P", b"p:"),
            _ => {
                doc.extend_from_slice(value.get().as_bytes());
                continue;
            }
        };
        doc.extend_from_slice(PLACEHOLDER.as_bytes());
        if value.get() == "null" {
            fields.push((flag.to_vec(), b"null".to_vec()));
            continue;
        }
        fields.push((flag.to_vec(), b"1".to_vec()));
        let (items, inner_repeated) =
            once_each(entries(value.get().as_bytes()).unwrap_or_default());
        repeated |= inner_repeated;
        for (inner, item) in items {
            seq += 1;
            let field = [&prefix[..], inner.as_bytes()].concat();
            fields.push((field, format!("{seq} {}", item.get()).into_bytes()));
        }
    }
    doc.push(b'}');
    fields.push((b"doc".to_vec(), doc));
    fields.push((b"seq".to_vec(), seq.to_string().into_bytes()));
    // Counted again only when a repeated key dropped some (rarely: the count is the room's).
    let rating_count = if repeated {
        rated(room).len()
    } else {
        room.rating_count
    };
    fields.push((b"rc".to_vec(), rating_count.to_string().into_bytes()));
    Split { fields }
}

/// `members` with each key once, at its first place with its last value; and whether any key
/// was repeated.
fn once_each<'a>(members: Members<'a>) -> (Members<'a>, bool) {
    let mut at: std::collections::HashMap<Cow<'a, str>, usize> =
        std::collections::HashMap::with_capacity(members.len());
    let given = members.len();
    let mut out: Members<'a> = Vec::with_capacity(given);
    for (key, value) in members {
        match at.get(&key) {
            Some(&i) => out[i].1 = value,
            None => {
                at.insert(key.clone(), out.len());
                out.push((key, value));
            }
        }
    }
    let repeated = out.len() < given;
    (out, repeated)
}

/// The members of the room's set `rated` (see `rate.rs`): `<bytes of mediaId>:<mediaId>
/// <userName>` for every rating, as the scripts build them from the same strings.
pub fn rated(room: &PreparedRoom) -> Vec<Vec<u8>> {
    let mut members = Vec::with_capacity(room.rating_count);
    let (top, _) = once_each(entries(room.encoded.as_ref()).unwrap_or_default());
    let Some((_, ratings)) = top.iter().find(|(key, _)| key == "ratings") else {
        return members;
    };
    let (lists, _) = once_each(entries(ratings.get().as_bytes()).unwrap_or_default());
    for (media, list) in lists {
        let list: Vec<serde_json::Value> = serde_json::from_str(list.get()).unwrap_or_default();
        for user in list.iter().filter_map(|rating| rating.get(0)?.as_str()) {
            let mut member = format!("{}:{media}", media.len()).into_bytes();
            member.extend_from_slice(user.as_bytes());
            members.push(member);
        }
    }
    members
}

/// A room read back from its hash.
#[derive(Debug)]
pub struct Joined {
    pub encoded: Bytes,
    pub revision: Revision,
    pub updated_at: EpochMillis,
    pub rating_count: usize,
    /// The version of the last whole write (`w`), if the hash has one.
    pub written: Option<Vec<u8>>,
}

/// Puts a room back together from `HGETALL` (either form); `None` if the hash is missing or not
/// one of ours.
pub fn join(hash: Vec<(Vec<u8>, Vec<u8>)>) -> Option<Joined> {
    let mut doc = None;
    let mut whole = None;
    let (mut revision, mut updated_at, mut rating_count) = (None, 0, 0);
    let (mut ratings_flag, mut progress_flag, mut written) = (None, None, None);
    let mut ratings: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut progress: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
    // Chunk fields `a:<k>:<mediaId>`, as (mediaId, k, ",entry,entry...").
    let mut chunks: Vec<(Vec<u8>, u64, Vec<u8>)> = Vec::new();
    for (field, value) in hash {
        match field.as_slice() {
            b"doc" => doc = Some(value),
            b"room" => whole = Some(value),
            b"rev" => revision = number(&value),
            b"at" => updated_at = number(&value).unwrap_or(0),
            b"rc" => rating_count = number(&value).unwrap_or(0),
            b"R" => ratings_flag = Some(value),
            b"P" => progress_flag = Some(value),
            b"w" => written = Some(value),
            _ => {
                let (list, key) = match field.split_at_checked(2) {
                    Some((b"r:", key)) => (&mut ratings, key),
                    Some((b"p:", key)) => (&mut progress, key),
                    Some((b"a:", rest)) => {
                        let colon = rest.iter().position(|&b| b == b':')?;
                        let k = number(&rest[..colon])?;
                        chunks.push((rest[colon + 1..].to_vec(), k, value));
                        continue;
                    }
                    _ => continue,
                };
                let split = value.iter().position(|&b| b == b' ')?;
                let seq = number(&value[..split])?;
                list.push((seq, key.to_vec(), value[split + 1..].to_vec()));
            }
        }
    }
    let revision = revision?;
    if !chunks.is_empty() {
        append_chunks(&mut ratings, chunks)?;
    }
    if let Some(whole) = whole {
        return Some(Joined {
            encoded: Bytes::from(whole),
            revision,
            updated_at,
            rating_count: usize::try_from(rating_count).unwrap_or(usize::MAX),
            written,
        });
    }
    let doc = doc?;
    let top = entries(&doc)?;
    let mut out = Vec::with_capacity(doc.len() + 64 * (ratings.len() + progress.len()));
    out.push(b'{');
    for (key, value) in &top {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(quote(key).as_bytes());
        out.push(b':');
        let structured = match (key.as_ref(), value.get()) {
            ("ratings", PLACEHOLDER) => Some((&ratings_flag, &mut ratings)),
            ("userProgress", PLACEHOLDER) => Some((&progress_flag, &mut progress)),
            _ => None,
        };
        match structured {
            Some((Some(flag), items)) if flag.as_slice() == b"1" => object(&mut out, items),
            Some(_) => out.extend_from_slice(b"null"),
            None => out.extend_from_slice(value.get().as_bytes()),
        }
    }
    out.push(b'}');
    Some(Joined {
        encoded: Bytes::from(out),
        revision,
        updated_at,
        rating_count: usize::try_from(rating_count).unwrap_or(usize::MAX),
        written,
    })
}

/// Appends each media's chunk fields, in chunk order, to its `r:` list; `None` if a chunk has no
/// list to go with.
fn append_chunks(
    ratings: &mut [(u64, Vec<u8>, Vec<u8>)],
    mut chunks: Vec<(Vec<u8>, u64, Vec<u8>)>,
) -> Option<()> {
    chunks.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    ratings.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    for (media, _, entries) in chunks {
        let at = ratings.binary_search_by(|r| r.1.cmp(&media)).ok()?;
        let list = &mut ratings[at].2;
        // `list` is a JSON array; each chunk is `,entry,entry...`.
        if list.last() != Some(&b']') || entries.first() != Some(&b',') {
            return None;
        }
        list.pop();
        let empty = list.as_slice() == b"[";
        list.extend_from_slice(if empty { &entries[1..] } else { &entries });
        list.push(b']');
    }
    Some(())
}

/// Writes `{"key":value,...}` in the order the items were added.
fn object(out: &mut Vec<u8>, items: &mut [(u64, Vec<u8>, Vec<u8>)]) {
    items.sort_unstable_by_key(|(seq, _, _)| *seq);
    out.push(b'{');
    for (i, (_, key, value)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(quote(&String::from_utf8_lossy(key)).as_bytes());
        out.push(b':');
        out.extend_from_slice(value);
    }
    out.push(b'}');
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

fn number<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A JSON object's members, in order, values left as raw JSON.
type Members<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// A JSON object's members in order, values left as raw JSON.
fn entries(json: &[u8]) -> Option<Members<'_>> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some((key, value)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                members.push((key, value));
            }
            Ok(members)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let members = (&mut deserializer).deserialize_map(Members).ok()?;
    deserializer.end().ok()?;
    Some(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(json: &str) -> String {
        let room = PreparedRoom::from_json(json.as_bytes()).expect("valid room");
        let split = split(&room, 5, b"v1");
        let mut hash = split.fields;
        hash.push((b"rev".to_vec(), b"3".to_vec()));
        // Redis hands fields back in any order.
        hash.reverse();
        let joined = join(hash).expect("joins");
        assert_eq!((joined.revision, joined.updated_at), (3, 5));
        assert_eq!(joined.rating_count, room.rating_count);
        assert_eq!(joined.written.as_deref(), Some(&b"v1"[..]));
        String::from_utf8(joined.encoded.to_vec()).unwrap()
    }

    const HEAD: &str = r#""roomName":"r","sort":"random","createdAt":"2025-10-25T20:00:00.000Z","creatorPlexUserId":"1","creatorPlexUsername":"u""#;

    #[test]
    fn rooms_come_back_byte_for_byte() {
        for tail in [
            "",
            r#","ratings":{"m\"1":[["a","like",1],["b","dislike",2]],"m2":[]},"x":{"ratings":0}"#,
            r#","userProgress":{"a":3,"b":0},"ratings":{},"roomType":[1.5,null]"#,
            r#","ratings":null,"userProgress":null"#,
        ] {
            let json = format!("{{{HEAD}{tail}}}");
            assert_eq!(round_trip(&json), json);
        }
    }

    #[test]
    fn the_whole_form_is_a_few_fields_and_comes_back_as_saved() {
        let json = format!(
            r#"{{{HEAD},"ratings":{{"m1":[["a","like",1]],"m2":[["b","dislike",2]]}},"userProgress":{{"a":3}}}}"#
        );
        let room = PreparedRoom::from_json(json.as_bytes()).expect("valid room");
        let mut hash = whole(&room, 5, b"v1").fields;
        // However many media and users: the point of the form is that a save writes few fields.
        assert_eq!(hash.len(), 4);
        hash.push((b"rev".to_vec(), b"3".to_vec()));
        hash.reverse();
        let joined = join(hash).expect("joins");
        assert_eq!((joined.revision, joined.updated_at), (3, 5));
        assert_eq!(joined.rating_count, 2);
        assert_eq!(joined.written.as_deref(), Some(&b"v1"[..]));
        assert_eq!(String::from_utf8(joined.encoded.to_vec()).unwrap(), json);
    }

    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// Strings that JSON and Lua both find awkward: quotes, escapes, NUL, non-ASCII, spaces.
    fn awkward() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,8}",
            Just("\"q\" \\ \u{0} \u{2028} 🎬 r:x p:y 0".to_owned()),
            "\\PC{0,12}",
        ]
    }

    fn extra() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            Just(json!([])),
            Just(json!({})),
            Just(json!({"ratings": 0, "userProgress": [1, {"a": null}]})),
            awkward().prop_map(Value::from),
        ]
    }

    prop_compose! {
        fn any_room()(
            ratings in prop_oneof![
                Just(None),
                Just(Some(Value::Null)),
                proptest::collection::vec(
                    (awkward(), proptest::collection::vec((awkward(), any::<bool>(), any::<u32>()), 0..3)),
                    0..4,
                ).prop_map(|media| {
                    let mut map = serde_json::Map::new();
                    for (m, entries) in media {
                        let entries: Vec<Value> = entries
                            .into_iter()
                            .map(|(u, like, t)| json!([u, if like { "like" } else { "dislike" }, t]))
                            .collect();
                        map.insert(m, Value::from(entries));
                    }
                    Some(Value::Object(map))
                }),
            ],
            progress in prop_oneof![
                Just(None),
                Just(Some(Value::Null)),
                proptest::collection::btree_map(awkward(), any::<u64>(), 0..4)
                    .prop_map(|m| Some(json!(m))),
            ],
            extras in proptest::collection::vec((awkward(), extra()), 0..4),
            ratings_first in any::<bool>(),
        ) -> Value {
            let mut room = serde_json::Map::new();
            room.insert("roomName".into(), json!("r"));
            let structured = [("ratings", ratings), ("userProgress", progress)];
            let order: Vec<_> = if ratings_first {
                structured.into_iter().collect()
            } else {
                structured.into_iter().rev().collect()
            };
            for (key, value) in order {
                if let Some(value) = value {
                    room.insert(key.into(), value);
                }
            }
            for (key, value) in extras {
                if !room.contains_key(&key) && key != "ratings" && key != "userProgress" {
                    room.insert(key, value);
                }
            }
            for (key, value) in [
                ("sort", json!("random")),
                ("createdAt", json!("2025-10-25T20:00:00.000Z")),
                ("creatorPlexUserId", json!(7)),
                ("creatorPlexUsername", json!("u")),
            ] {
                room.insert(key.into(), value);
            }
            Value::Object(room)
        }
    }

    proptest! {
        /// Whatever a valid room holds, the hash gives back the same bytes the other backends
        /// serve (keys and strings as serde writes them, so the comparison is byte for byte).
        #[test]
        fn every_valid_room_round_trips(room in any_room()) {
            let json = serde_json::to_string(&room).unwrap();
            let prepared = PreparedRoom::from_json(json.as_bytes());
            prop_assume!(prepared.is_ok());
            let prepared = prepared.unwrap();
            let expected = String::from_utf8(prepared.encoded.to_vec()).unwrap();
            let mut hash = split(&prepared, 1, b"v").fields;
            hash.push((b"rev".to_vec(), b"1".to_vec()));
            hash.reverse();
            let joined = join(hash).expect("joins");
            prop_assert_eq!(String::from_utf8(joined.encoded.to_vec()).unwrap(), expected);
            prop_assert_eq!(joined.rating_count, prepared.rating_count);
        }
    }

    #[test]
    fn a_foreign_hash_is_not_a_room() {
        assert!(join(vec![(b"x".to_vec(), b"y".to_vec())]).is_none());
        assert!(join(vec![(b"doc".to_vec(), b"{}".to_vec())]).is_none());
    }
}
