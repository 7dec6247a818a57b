//! The clients of a sweep case and what they were told: three writers on rooms of their own
//! (saveRoom, addRating, deleteRoom/saveRoom), a model of every acknowledged change, and the
//! checks of the daemon's answers, its rooms and its files against that model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{read_json_file, Conn};

/// Every room a case uses (the fault's path list names their files).
pub const ROOMS: &[&str] = &[
    "s0", "s1", "s2", "s3", "b0", "b1", "c0", "c1", "c2", "probe", "late",
];
const SAVED: &[&str] = &["s0", "s1", "s2", "s3"];
const RATED: &[&str] = &["b0", "b1"];
const CYCLED: &[&str] = &["c0", "c1", "c2"];

/// A room of about 1 KB; `v` tells versions apart.
pub fn room(name: &str, v: u64) -> Value {
    json!({
        "roomName": name,
        "sort": "rating",
        "createdAt": "2025-10-26T08:30:00.000Z",
        "creatorPlexUserId": "777",
        "creatorPlexUsername": "jane",
        "v": v,
        "padding": "x".repeat(1000),
    })
}

/// Each room's state as the clients were told it is: `None` when deleted. A change that got
/// `ok` is in; one that got an error is not.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub rooms: BTreeMap<String, Option<(Value, u64)>>,
}

impl Model {
    fn set(&mut self, name: &str, state: Option<(Value, u64)>) {
        self.rooms.insert(name.to_string(), state);
    }

    /// Saves every room of the workload through `c` (the seed of every case), twice, so that
    /// revisions are not what a start from the room files alone would give.
    pub fn seed(c: &mut Conn) -> Model {
        let mut model = Model::default();
        for name in SAVED.iter().chain(RATED).chain(CYCLED) {
            c.save(&room(name, 0));
            let body = room(name, 1);
            let rev = c.save(&body);
            model.set(name, Some((body, rev)));
        }
        model
    }
}

/// What happened to the requests of one case.
#[derive(Debug, Default)]
pub struct Tally {
    pub acked: usize,
    pub refused: usize,
    /// Broken promises of invariant 5 (an answer that is not `ok` nor a proper `storage` error).
    pub violations: Vec<String>,
}

/// The three writers, running until [`Writers::stop`].
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(Model, Tally)>>,
}

impl Writers {
    pub fn start(socket: &Path, storage: &Path, model: &Model) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [Kind::Save, Kind::Rate, Kind::Cycle]
            .into_iter()
            .map(|kind| {
                let (socket, storage, stop) =
                    (socket.to_path_buf(), storage.to_path_buf(), stop.clone());
                let mine = Model {
                    rooms: model
                        .rooms
                        .iter()
                        .filter(|(name, _)| kind.rooms().contains(&name.as_str()))
                        .map(|(n, s)| (n.clone(), s.clone()))
                        .collect(),
                };
                std::thread::spawn(move || write(kind, &socket, &storage, mine, &stop))
            })
            .collect();
        Writers { stop, threads }
    }

    /// Stops the writers; merges what they were told into `model`.
    pub fn stop(self, model: &mut Model, tally: &mut Tally) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            match thread.join() {
                Ok((mine, t)) => {
                    model.rooms.extend(mine.rooms);
                    tally.acked += t.acked;
                    tally.refused += t.refused;
                    tally.violations.extend(t.violations);
                }
                Err(_) => tally.violations.push("a writer thread panicked".into()),
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Save,
    Rate,
    Cycle,
}

impl Kind {
    fn rooms(self) -> &'static [&'static str] {
        match self {
            Kind::Save => SAVED,
            Kind::Rate => RATED,
            Kind::Cycle => CYCLED,
        }
    }
}

fn write(
    kind: Kind,
    socket: &Path,
    storage: &Path,
    mut mine: Model,
    stop: &AtomicBool,
) -> (Model, Tally) {
    let mut tally = Tally::default();
    let mut c = match Conn::connect(socket) {
        Ok(c) => c,
        Err(e) => {
            tally.violations.push(format!("cannot connect: {e}"));
            return (mine, tally);
        }
    };
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = kind.rooms()[n as usize % kind.rooms().len()];
        let current = mine.rooms.get(name).cloned().flatten();
        let req = match (kind, &current) {
            (Kind::Save, _) | (Kind::Cycle, None) => {
                json!({"op": "saveRoom", "room": room(name, n)})
            }
            (Kind::Rate, _) => {
                json!({"op": "addRating", "roomName": name, "mediaId": format!("m{n}"),
                "userName": "u", "rating": "like", "timestamp": n})
            }
            (Kind::Cycle, Some(_)) => json!({"op": "deleteRoom", "roomName": name}),
        };
        let resp = match c.try_send(&req).ok().and_then(|()| c.try_read_line()) {
            Some(line) => serde_json::from_str::<Value>(&line).unwrap_or(Value::Null),
            None => {
                tally.violations.push(format!("no answer to {}", req["op"]));
                break;
            }
        };
        if resp["ok"] != true {
            tally.refused += 1;
            if let Err(e) = check_refusal(&resp, storage) {
                tally.violations.push(e);
            }
            continue;
        }
        tally.acked += 1;
        let revision = resp["revision"].as_u64();
        let next = match (kind, current) {
            (Kind::Cycle, Some(_)) => None,
            (Kind::Rate, Some((mut body, rev))) => {
                if resp["added"] == true {
                    let ratings = body
                        .as_object_mut()
                        .map(|o| o.entry("ratings").or_insert_with(|| json!({})));
                    if let Some(Value::Object(ratings)) = ratings {
                        ratings.insert(format!("m{n}"), json!([["u", "like", n]]));
                    }
                }
                Some((body, revision.unwrap_or(rev)))
            }
            _ => Some((req["room"].clone(), revision.unwrap_or(0))),
        };
        mine.set(name, next);
    }
    (mine, tally)
}

/// Invariant 5: a refusal is a `storage` error whose text names a file in the storage
/// directory and the OS error.
pub fn check_refusal(resp: &Value, storage: &Path) -> Result<(), String> {
    let error = &resp["error"];
    let text = format!(
        "{} {}",
        error["message"].as_str().unwrap_or_default(),
        error["cause"].as_str().unwrap_or_default()
    );
    if error["code"] != "storage"
        || !text.contains(&storage.display().to_string())
        || !text.contains("(os error ")
    {
        return Err(format!(
            "a refusal that is not a storage error naming the file and the OS error: {resp}"
        ));
    }
    Ok(())
}

/// Invariant 2: a saveRoom and a flush succeed within `within`; returns how long it took.
pub fn heal(
    socket: &Path,
    storage: &Path,
    model: &mut Model,
    within: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    let mut v = 0;
    while start.elapsed() < within {
        v += 1;
        let mut c =
            Conn::connect(socket).map_err(|e| format!("cannot connect after the fault: {e}"))?;
        let body = room("probe", v);
        let saved = c.call(json!({"op": "saveRoom", "room": body}));
        if saved["ok"] == true {
            model.set(
                "probe",
                Some((body, saved["revision"].as_u64().unwrap_or(0))),
            );
            let flushed = c.call(json!({"op": "flush"}));
            if flushed["ok"] == true {
                return Ok(start.elapsed());
            }
            last = flushed.to_string();
        } else {
            check_refusal(&saved, storage)?;
            last = saved.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "writes still fail {within:?} after the fault ended: {last}"
    ))
}

/// Invariants 1 and 3: the daemon serves exactly what the clients were told.
pub fn check_rooms(c: &mut Conn, model: &Model) -> Result<(), String> {
    for (name, want) in &model.rooms {
        let resp = c.call(json!({"op": "getRoom", "roomName": name}));
        let got = (!resp["room"].is_null())
            .then(|| (resp["room"].clone(), resp["revision"].as_u64().unwrap_or(0)));
        if got.as_ref().map(|(r, rev)| (r, *rev)) != want.as_ref().map(|(r, rev)| (r, *rev)) {
            return Err(format!(
                "room {name}: the clients were told {}, the daemon serves {}",
                describe(want),
                describe(&got)
            ) + &differences(want, &got));
        }
    }
    Ok(())
}

/// Invariant 4: after a clean stop every room is in its file and no temporary file is left.
pub fn check_files(storage: &Path, model: &Model) -> Result<(), String> {
    let left = super::harness::temp_files(storage);
    if !left.is_empty() {
        return Err(format!("temporary files left after a clean stop: {left:?}"));
    }
    for (name, want) in &model.rooms {
        let path: PathBuf = storage.join(format!("{name}.json"));
        match (want, path.exists()) {
            (None, false) => {}
            (None, true) => {
                return Err(format!(
                    "{} exists but the room was deleted",
                    path.display()
                ))
            }
            (Some(_), false) => {
                return Err(format!("{} is missing after a clean stop", path.display()))
            }
            (Some((body, _)), true) => {
                if &read_json_file(&path) != body {
                    return Err(format!(
                        "{} does not hold the room's last acknowledged state",
                        path.display()
                    ));
                }
            }
        }
    }
    Ok(())
}

fn describe(state: &Option<(Value, u64)>) -> String {
    match state {
        None => "absent".into(),
        Some((body, rev)) => format!(
            "revision {rev} (v {}, {} ratings)",
            body["v"],
            body["ratings"].as_object().map_or(0, |r| r.len())
        ),
    }
}

/// Which top-level fields, and which ratings, differ.
fn differences(a: &Option<(Value, u64)>, b: &Option<(Value, u64)>) -> String {
    let (Some((a, _)), Some((b, _))) = (a, b) else {
        return String::new();
    };
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return String::new();
    };
    let mut out = String::new();
    for key in a.keys().chain(b.keys()) {
        if a.get(key) != b.get(key) && key != "ratings" {
            out += &format!("; field {key}: {:?} vs {:?}", a.get(key), b.get(key));
        }
    }
    let ratings = |o: &serde_json::Map<String, Value>| {
        o.get("ratings")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (ra, rb) = (ratings(a), ratings(b));
    let only_a: Vec<&String> = ra.keys().filter(|k| !rb.contains_key(*k)).take(5).collect();
    let only_b: Vec<&String> = rb.keys().filter(|k| !ra.contains_key(*k)).take(5).collect();
    let changed: Vec<&String> = ra
        .keys()
        .filter(|k| rb.get(*k).is_some_and(|v| Some(v) != ra.get(*k)))
        .take(5)
        .collect();
    if !only_a.is_empty() || !only_b.is_empty() || !changed.is_empty() {
        out += &format!(
            "; ratings only told: {only_a:?}, only served: {only_b:?}, changed: {changed:?}"
        );
    }
    out
}
